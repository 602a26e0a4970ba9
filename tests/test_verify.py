"""reconcile verify on every remote kind: equal -> 0; a remote file altered or
deleted -> 1 listing it; --hash catches a same-size, same-mtime change."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


def cli(dest, *args, check=None):
    return reconcile(*args, *dest.cli_args, env=dest.env, check=check)


def remote_root(dest) -> Path:
    """the folder behind a local or sftp destination (the sshd runs here)."""
    return Path(dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path))


def s3_client_and_key(dest, path: str):
    import boto3

    parts = urlsplit(dest.url)
    client = boto3.client("s3", endpoint_url=dest.options.s3.endpoint, **_creds(dest))
    prefix = parts.path.strip("/")
    return client, parts.netloc, f"{prefix}/{path}" if prefix else path


def _creds(dest) -> dict:
    e = dest.env
    return {"aws_access_key_id": e["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": e["AWS_SECRET_ACCESS_KEY"],
            "region_name": e["AWS_DEFAULT_REGION"]}


def put_remote(dest, path: str, data: bytes) -> None:
    if dest.kind == "s3":
        client, bucket, key = s3_client_and_key(dest, path)
        client.put_object(Bucket=bucket, Key=key, Body=data)
    else:
        (remote_root(dest) / path).write_bytes(data)


def delete_remote(dest, path: str) -> None:
    if dest.kind == "s3":
        client, bucket, key = s3_client_and_key(dest, path)
        client.delete_object(Bucket=bucket, Key=key)
    else:
        (remote_root(dest) / path).unlink()


@pytest.fixture
def mirrored(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(12):
        write(src / "album" / f"p{i}.jpg", os.urandom(100 + i), T0 + i * 10**9)
    write(src / "notes.txt", b"hello world", T0)
    (src / "empty").mkdir()
    cli(dest, "apply", src, dest.url, "--state-dir", state, check=0)
    return src, state


def test_equal_then_altered_and_deleted(dest, mirrored):
    src, state = mirrored
    before = sorted((p.name, p.stat().st_mtime_ns) for p in state.rglob("*"))
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, check=0)
    assert p.stdout == "" and p.stderr.startswith("verify: equal; 13 files compared")

    put_remote(dest, "notes.txt", b"hello world, changed")
    delete_remote(dest, "album/p3.jpg")
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, check=1)
    assert "size     notes.txt  (source 11 bytes, remote 20 bytes)" in p.stdout
    assert "missing  album/p3.jpg" in p.stdout
    assert "2 differences" in p.stderr

    doc = json.loads(cli(dest, "verify", src, dest.url, "--state-dir", state, "--json", check=1).stdout)
    assert {(d["what"], d["path"]) for d in doc["differences"]} == {("size", "notes.txt"),
                                                                   ("missing", "album/p3.jpg")}
    assert doc["equal"] is False
    # read-only: the pair's state is as it was
    assert sorted((p.name, p.stat().st_mtime_ns) for p in state.rglob("*")) == before


def test_extra_remote_file_counts_only_with_delete(dest, mirrored):
    src, state = mirrored
    put_remote(dest, "album/stray.jpg", b"not on the source")
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, check=0)
    assert "extra    album/stray.jpg  (kept" in p.stdout
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, "--delete", check=1)
    assert "extra    album/stray.jpg  (on the remote" in p.stdout


def test_remote_trash_is_not_part_of_the_mirror(dest, mirrored):
    src, state = mirrored
    write(src / "notes.txt", b"hello world, edited", T0 + 5 * 10**9)
    (src / "album" / "p1.jpg").unlink()
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--delete", "--backup-dir", "keep", check=0)
    # the old versions sit in keep/<run>/ and in no source folder
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, "--delete", check=0)
    assert "keep" not in p.stdout and p.stderr.startswith("verify: equal; 12 files compared")


def test_mtime_difference(dest, mirrored):
    src, state = mirrored
    os.utime(src / "notes.txt", ns=(T0, T0 + 3600 * 10**9))
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, check=1)
    assert "mtime    notes.txt" in p.stdout


def test_verify_by_mapping_name(dest, mirrored, tmp_path):
    src, state = mirrored
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mapping.m]\nsource = "{src}"\ndest = "{dest.url}"\nstate_dir = "{state}"\n')
    p = cli(dest, "verify", "m", "--config", cfg, "--hash", check=0)
    assert p.stderr.startswith("verify: equal; 13 files compared, 13 read back"), p.stderr
    (src / "album" / "p1.jpg").unlink()
    p = cli(dest, "verify", "m", "--config", cfg, "--delete", check=1)
    assert p.stdout.startswith("[m]") and "album/p1.jpg" in p.stdout, p.stdout


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_hash_catches_same_size_same_mtime_change(kind, request, tmp_path):
    dest = request.getfixturevalue(f"{kind}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a" / "doc.txt", b"original content", T0)
    write(src / "b.txt", b"untouched", T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state, check=0)
    target = remote_root(dest) / "a" / "doc.txt"
    st = target.stat()
    target.write_bytes(b"ORIGINAL CONTENT")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, check=0)  # size and mtime agree
    assert p.stderr.startswith("verify: equal; 2 files compared"), p.stderr
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, "--hash", check=1)
    assert "content  a/doc.txt" in p.stdout and "2 read back" in p.stderr
    doc = json.loads(cli(dest, "verify", src, dest.url, "--state-dir", state, "--hash", "--json", check=1).stdout)
    assert doc["differences"] == [{"path": "a/doc.txt", "what": "content",
                                   "detail": "same size and mtime, different content (xxh3)"}]


def test_hash_equal_on_every_remote(dest, mirrored):
    src, state = mirrored
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, "--hash", check=0)
    assert "13 read back" in p.stderr


def test_missing_root_lists_everything(dest, tmp_path):
    write(tmp_path / "src" / "x.txt", b"x", T0)
    url = dest.url + "/never-made" if dest.kind != "local" else str(tmp_path / "nothing-here")
    p = cli(dest, "verify", tmp_path / "src", url, "--state-dir", tmp_path / "st", check=1)
    assert "missing  x.txt" in p.stdout


def test_verify_writes_no_state_at_all(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.txt", b"a", T0)
    write(dst / "a.txt", b"a", T0)
    not_a_folder = tmp_path / "xdg-is-a-file"
    not_a_folder.write_text("")
    p = reconcile("verify", src, dst, env={"XDG_STATE_HOME": str(not_a_folder)}, check=0)
    assert p.stderr.startswith("verify: equal")
    xdg = tmp_path / "xdg"
    reconcile("verify", src, dst, env={"XDG_STATE_HOME": str(xdg)}, check=0)
    assert not xdg.exists()


def test_verify_all_names_each_mapping(tmp_path):
    cfg = tmp_path / "c.toml"
    text = ""
    for name in ("photos", "docs"):
        write(tmp_path / name / "src" / "a.txt", b"a", T0)
        write(tmp_path / name / "dst" / "a.txt", b"a" if name == "photos" else b"changed", T0)
        text += f'[mapping.{name}]\nsource = "{tmp_path / name / "src"}"\ndest = "{tmp_path / name / "dst"}"\n'
    cfg.write_text(text)
    p = reconcile("verify", "--all", "--config", cfg, check=1)
    assert p.stdout.index("[photos]") < p.stdout.index("[docs]") < p.stdout.index("size     a.txt")
    docs = [json.loads(line) for line in reconcile("verify", "--all", "--config", cfg, "--json",
                                                   check=1).stdout.splitlines()]
    assert [(d["mapping"], d["equal"]) for d in docs] == [("photos", True), ("docs", False)]


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_verify_audits_a_mirror_made_with_links(kind, request, tmp_path):
    dest = request.getfixturevalue(f"{kind}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "real" / "f.txt", b"payload", T0)
    os.symlink("real/f.txt", src / "link")
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--links", "store", check=0)
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, "--links", "store", "--delete", check=0)
    assert p.stderr.startswith("verify: equal")
    os.unlink(src / "link")
    os.symlink("real", src / "link")
    p = cli(dest, "verify", src, dest.url, "--state-dir", state, "--links", "store", check=1)
    assert "target   link  (source points to 'real', the remote to 'real/f.txt')" in p.stdout
    # follow: the file behind the link is compared like any other
    state2 = tmp_path / "state2"
    other = f"{dest.url}-follow" if kind == "local" else dest.url.rstrip("/") + "-follow"
    cli(dest, "apply", src, other, "--state-dir", state2, "--links", "follow", check=0)
    p = cli(dest, "verify", src, other, "--state-dir", state2, "--links", "follow", check=0)
    assert "2 files compared" in p.stderr

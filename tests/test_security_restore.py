"""Issue 24.2 and 24.7: restore never writes through a symlink in the target
(a folder or a planted temp name), never resumes onto a file that is not its
own, and a private file stays private (local and SFTP sources)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reconcile.entry import FILE, Entry
from reconcile.restore_model import temp_name
from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


@pytest.fixture(params=["local", "sftp"])
def source(request, tmp_path):
    """a remote holding sub/file.txt and top.txt, to restore from"""
    dest = request.getfixturevalue(f"{request.param}_dest")
    root = Path(dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path))
    write(root / "sub" / "file.txt", b"from the backup", T0)
    write(root / "top.txt", b"top", T0)
    return dest


def _restore(dest, out: Path, *args):
    return reconcile("restore", dest.url, out, "--json", *args, *dest.cli_args, env=dest.env)


def test_restore_never_writes_through_a_symlinked_folder(source, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "sub")  # target/sub -> /elsewhere
    p = _restore(source, out)
    assert p.returncode == 1, p.stderr  # the file is reported failed, the rest restored
    assert list(outside.iterdir()) == []
    assert (out / "top.txt").read_bytes() == b"top"
    assert (out / "sub").is_symlink()
    failed = json.loads(p.stdout)["blocked"]
    assert {b["path"] for b in failed} == {"sub", "sub/file.txt"}  # the folder and the file in it
    assert all("symlink" in b["error"] for b in failed)


def test_a_symlink_planted_at_the_temp_name_is_never_followed(source, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    write(outside / "victim", b"someone's file", T0)
    e = Entry("sub/file.txt", FILE, len(b"from the backup"), T0)
    os.symlink(outside / "victim", out / "sub" / temp_name("sub/file.txt", e))  # appended to as a "resume"?
    os.symlink(outside / "new", out / temp_name("top.txt", Entry("top.txt", FILE, 3, T0)))  # created outside?
    p = _restore(source, out)
    assert p.returncode == 0, p.stderr
    assert (outside / "victim").read_bytes() == b"someone's file"
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (out / "sub" / "file.txt").read_bytes() == b"from the backup"
    assert (out / "top.txt").read_bytes() == b"top"


def test_a_planted_file_at_the_temp_name_is_not_resumed(source, tmp_path):
    """a file someone else left (another owner, or a hard link) is no partial of ours"""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    e = Entry("sub/file.txt", FILE, len(b"from the backup"), T0)
    planted = out / "sub" / temp_name("sub/file.txt", e)
    planted.write_bytes(b"EVIL")  # a 4-byte "partial": the restore would fetch the rest after it
    os.chown(planted, 65534, 65534)
    linked = tmp_path / "precious"
    linked.write_bytes(b"to")
    os.link(linked, out / temp_name("top.txt", Entry("top.txt", FILE, 3, T0)))
    p = _restore(source, out)
    assert p.returncode == 0, p.stderr
    assert (out / "sub" / "file.txt").read_bytes() == b"from the backup"
    assert (out / "top.txt").read_bytes() == b"top"
    assert linked.read_bytes() == b"to"  # never appended to through its other name
    ops = {o["path"]: o for o in json.loads(p.stdout)["operations"]}
    assert "resume_from" not in ops["sub/file.txt"] and "resume_from" not in ops["top.txt"]


def test_restore_keeps_a_private_file_private(source, tmp_path):
    root = Path(source.url if source.kind == "local" else unquote(urlsplit(source.url).path))
    os.chmod(root / "sub" / "file.txt", 0o600)
    os.chmod(root / "top.txt", 0o640)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        p = _restore(source, out)
    finally:
        os.umask(old)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(os.stat(out / "sub" / "file.txt").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "top.txt").st_mode) == 0o640


def test_restore_temp_names_cannot_be_guessed(source, tmp_path):
    """a fixed stem (a rerun finds its partial) and a random part: two runs of
    the same version use two names, and the partial is still resumed"""
    e = Entry("sub/file.txt", FILE, len(b"from the backup"), T0)
    names = {temp_name("sub/file.txt", e) for _ in range(20)}
    assert len(names) == 20
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    partial = out / "sub" / names.pop()
    partial.write_bytes(b"from the")  # what a killed run of ours left
    p = _restore(source, out)
    assert p.returncode == 0, p.stderr
    ops = {o["path"]: o for o in json.loads(p.stdout)["operations"]}
    assert ops["sub/file.txt"]["resume_from"] == len(b"from the")
    assert (out / "sub" / "file.txt").read_bytes() == b"from the backup"
    assert sorted(os.listdir(out / "sub")) == ["file.txt"]

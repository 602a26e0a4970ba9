"""Security rows of issue 7: private state files, secrets that never show, and
hostile remote listings that cannot make us act outside the destination root
or on anything local."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reconcile.entry import FILE, Entry
from reconcile.remotes.local import LocalRemote
from tests.cli import reconcile
from tests.mirror import SilentReporter, tree, write

T0 = 1_600_000_000_000_000_000


def _all_text(*paths: Path) -> bytes:
    out = b""
    for p in paths:
        if p.is_dir():
            for f in p.rglob("*"):
                if f.is_file():
                    out += f.read_bytes()
        elif p.exists():
            out += p.read_bytes()
    return out


def _assert_private(state: Path) -> None:
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    seen = 0
    for p in state.rglob("*"):
        mode = stat.S_IMODE(p.lstat().st_mode)
        if p.is_dir():
            assert mode == 0o700, p
        else:
            assert mode == 0o600, (p, oct(mode))
            seen += 1
    assert seen


# --- state files -------------------------------------------------------------

def test_state_files_are_0600_including_the_journal(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for i in range(3):
        write(src / f"f{i}", b"x", T0)
    os.umask(0o022)
    reconcile("apply", src, dst, "--state-dir", state, "--backup-dir", ".trash", check=0)
    write(src / "f0", b"changed", T0 + 10**12)
    # a journal as a killed run leaves it
    from reconcile import journal
    from reconcile.plan import Op

    j = journal.Journal(str(state / "journal.msgpack"))
    j.start({"plan_id": "t", "source": str(src), "dest": str(dst)}, [Op("mkdir", "d")])
    j.close()
    assert {"snapshot.msgpack", "journal.msgpack", "lock", "last-run.json"} <= set(os.listdir(state))
    _assert_private(state)
    reconcile("apply", src, dst, "--state-dir", state, "--backup-dir", ".trash", check=0)
    _assert_private(state)


def test_s3_state_records_are_private(s3_dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a", b"1", T0)
    reconcile("apply", src, s3_dest.url, "--state-dir", state, *s3_dest.cli_args, env=s3_dest.env, check=0)
    assert any(p.is_file() for p in (state / "remote").rglob("*"))
    _assert_private(state)


# --- secrets -----------------------------------------------------------------

def _outputs_of(p: subprocess.CompletedProcess, *more: Path) -> bytes:
    return p.stdout.encode() + p.stderr.encode() + _all_text(*more)


def test_sftp_password_never_shows(sshd_server, tmp_path):
    from tests.servers_sftp import sftp_url

    if sshd_server.password_user is None:
        pytest.skip("useradd/chpasswd missing: no password user on the test sshd")
    root = Path("/tmp") / f"reconcile-pw-{os.getpid()}"
    root.mkdir(exist_ok=True)
    subprocess.run(["chown", sshd_server.password_user, str(root)], check=True)
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    url = sftp_url(sshd_server, root, user=sshd_server.password_user)
    src, state, log = tmp_path / "src", tmp_path / "state", tmp_path / "run.log"
    write(src / "a", b"1", T0)
    secret = sshd_server.password
    env = {"RECONCILE_SFTP_PASSWORD": secret, "HOME": str(tmp_path)}  # no agent, no default keys
    common = ("--state-dir", state, "--known-hosts", kh, "--log-file", log)
    ok = reconcile("apply", src, url, *common, "--json", "-v", env=env, check=0)
    bad = reconcile("apply", src, url, *common, "-v", env={**env, "RECONCILE_SFTP_PASSWORD": secret + "-wrong"},
                    check=2)
    status = reconcile("status", src, url, "--state-dir", state, "--json", check=0)
    for p in (ok, bad, status):
        out = _outputs_of(p, state, log)
        assert secret.encode() not in out
    assert b"-wrong" not in _outputs_of(bad, log)
    subprocess.run(["rm", "-rf", str(root)])


def test_password_in_an_sftp_url_is_refused_without_echoing_it(tmp_path):
    src = tmp_path / "src"
    write(src / "a", b"1", T0)
    secret = "hunter2-very-secret"
    for cmd in ("plan", "apply", "status"):
        p = reconcile(cmd, src, f"sftp://me:{secret}@127.0.0.1:1/x", "--state-dir", tmp_path / "state",
                      "--log-file", tmp_path / "log")
        assert secret not in p.stdout + p.stderr, cmd
        assert secret.encode() not in _all_text(tmp_path / "state", tmp_path / "log")
    p = reconcile("apply", src, f"sftp://me:{secret}@127.0.0.1:1/x", "--state-dir", tmp_path / "state", check=2)
    assert "RECONCILE_SFTP_PASSWORD" in p.stderr


def test_key_passphrase_never_shows(sshd_server, sftp_dest, tmp_path):
    key = tmp_path / "enc_key"
    secret = "passphrase-" + os.urandom(6).hex()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", secret, "-f", str(key)], check=True)
    sshd_server.authorize(str(key) + ".pub")
    src, state, log = tmp_path / "src", tmp_path / "state", tmp_path / "run.log"
    write(src / "a", b"1", T0)
    kh = sftp_dest.options.sftp.known_hosts
    env = {"RECONCILE_SSH_KEY_PASSPHRASE": secret, "HOME": str(tmp_path), "SSH_AUTH_SOCK": ""}
    ok = reconcile("apply", src, sftp_dest.url, "--state-dir", state, "--ssh-key", key, "--known-hosts", kh,
                   "--log-file", log, "--log-format", "json", "-v", env=env, check=0)
    bad = reconcile("apply", src, sftp_dest.url, "--state-dir", state, "--ssh-key", key, "--known-hosts", kh,
                    "--log-file", log, "-v", env={**env, "RECONCILE_SSH_KEY_PASSPHRASE": secret + "-wrong"})
    assert bad.returncode == 2, bad.stderr
    for p in (ok, bad):
        assert secret.encode() not in _outputs_of(p, state, log)


def test_aws_secret_never_shows(s3_dest, tmp_path):
    src, state, log = tmp_path / "src", tmp_path / "state", tmp_path / "run.log"
    write(src / "a", b"1", T0)
    secret = s3_dest.env["AWS_SECRET_ACCESS_KEY"]
    args = (*s3_dest.cli_args, "--state-dir", state, "--log-file", log, "-v")
    runs = [reconcile("apply", src, s3_dest.url, *args, "--json", env=s3_dest.env, check=0),
            reconcile("plan", src, s3_dest.url, *args, "--json", env=s3_dest.env, check=0),
            reconcile("status", src, s3_dest.url, "--state-dir", state, "--json", env=s3_dest.env, check=0),
            # an endpoint that refuses: the error path, with a distinctive secret
            reconcile("apply", src, "s3://nobucket-here/x", "--s3-endpoint", "http://127.0.0.1:1",
                      "--retry-for", "1s", "--state-dir", tmp_path / "st2", "-v",
                      env={**s3_dest.env, "AWS_SECRET_ACCESS_KEY": "zz-distinct-secret-zz"})]
    for p in runs[:3]:
        assert secret.encode() not in _outputs_of(p, state, log)
    assert runs[3].returncode != 0
    assert b"zz-distinct-secret-zz" not in _outputs_of(runs[3], tmp_path / "st2")


# --- hostile listings ----------------------------------------------------------

HOSTILE_KEYS = ["mirror/../evil", "mirror//x", "mirror/a/../../b", "mirror/./dot", "mirror/a/./c",
                "mirror/.."]


def test_hostile_s3_keys_are_never_acted_on(s3_dest, seaweed, tmp_path):
    client = seaweed.client()
    bucket = urlsplit(s3_dest.url).netloc
    sentinels = {"evil": b"outside the prefix", "b": b"outside too", "mirror-other/keep": b"neighbour"}
    for k, v in sentinels.items():
        client.put_object(Bucket=bucket, Key=k, Body=v)
    stored = []
    for k in HOSTILE_KEYS:
        try:
            client.put_object(Bucket=bucket, Key=k, Body=b"hostile " + k.encode())
            stored.append(k)
        except Exception:  # SeaweedFS refuses some ('..' parts): AWS stores them
            pass
    assert stored
    from reconcile.entry import is_safe_path

    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    unsafe = {k for k in listed if k.startswith("mirror/") and not is_safe_path(k[len("mirror/"):])}
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "real", b"mine", T0)
    write(src / "a" / "f", b"inside a", T0)
    env, extra = s3_dest.env, s3_dest.cli_args
    reconcile("plan", src, s3_dest.url, "--state-dir", state, "--delete", "--max-delete", "100", *extra,
              env=env, check=0)
    reconcile("apply", src, s3_dest.url, "--state-dir", state, "--delete", "--max-delete", "100", *extra,
              env=env, check=0)
    out = tmp_path / "restored"
    reconcile("restore", s3_dest.url, out, *extra, env=env)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    for k, v in sentinels.items():
        assert client.get_object(Bucket=bucket, Key=k)["Body"].read() == v, k
    # keys the store kept verbatim with '..', '.' or empty parts are not ours to delete or move
    # (SeaweedFS cleans some names on the way in: those are ordinary keys under the prefix)
    assert unsafe <= keys, (stored, listed)
    # nothing written locally outside the restore target, nothing odd inside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored", "src", "state"]
    assert tree(src) == {"real": tree(src)["real"], "a": ("d",), "a/f": tree(src)["a/f"]}
    assert set(tree(out)) <= {"real", "a", "a/f"}


def test_remote_symlink_out_of_the_root_is_never_written_through(dest, tmp_path):
    """a folder on the remote that is really a symlink to elsewhere on the server"""
    if dest.kind == "s3":
        pytest.skip("S3 has no symlinks")
    root = Path(dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path))
    outside = tmp_path / "outside"
    write(outside / "victim", b"not yours", T0)
    os.symlink(outside, root / "d")
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "d" / "victim", b"overwrite?", T0 + 10**12)
    write(src / "d" / "new", b"written through?", T0)
    write(src / "keep", b"1", T0)
    reconcile("apply", src, dest.url, "--state-dir", state, "--delete", "--max-delete", "10", *dest.cli_args,
              env=dest.env, check=0)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"not yours"
    assert not (root / "d").is_symlink() and tree(root) == tree(src)


def test_backslash_and_dot_names_on_the_remote_stay_inside(dest, tmp_path):
    if dest.kind == "s3":
        pytest.skip("covered by test_hostile_s3_keys_are_never_acted_on")
    root = Path(dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path))
    names = ["..\\evil", "a\\..\\..\\b", "\\abs", "..."]
    for n in names:
        (root / n).write_bytes(n.encode())
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "keep", b"1", T0)
    before_parent = set(os.listdir(root.parent))
    out = tmp_path / "restored"
    reconcile("restore", dest.url, out, *dest.cli_args, env=dest.env, check=0)
    assert sorted(os.listdir(out)) == sorted(names)  # literal names, inside the target
    for n in names:
        assert (out / n).read_bytes() == n.encode()
    reconcile("apply", src, dest.url, "--state-dir", state, "--delete", "--max-delete", "10", *dest.cli_args,
              env=dest.env, check=0)
    assert sorted(os.listdir(root)) == ["keep"]  # inside the root: deleted by --delete as usual
    assert set(os.listdir(root.parent)) == before_parent | {"restored", "state"}  # nothing made outside


class HostileRemote(LocalRemote):
    """a server whose listing lies: names that climb out of the root, absolute
    names, empty parts. What a compromised SFTP server or bucket could send."""

    LIES = ["../evil", "/etc/passwd-copy", "a/../../b", "x//y", "./dot", "..", "a/.."]

    def list(self):
        yield from super().list()
        for p in self.LIES:
            yield Entry(p, FILE, 3, T0)


@pytest.mark.parametrize("mode", ["plan", "apply"])
def test_hostile_listing_names_are_ignored_by_the_engine(tmp_path, monkeypatch, mode):
    from reconcile.engine import Run, RunOptions
    from reconcile.engine import run as engine_run

    top = tmp_path / "top"
    write(top / "evil", b"outside", T0)
    write(top / "b", b"outside", T0)
    root = top / "root"
    write(root / "a" / "f", b"remote", T0)
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a" / "g", b"local", T0)
    write(src / "a" / "f", b"remote", T0)
    monkeypatch.setattr(engine_run, "open_remote", lambda url, opts: HostileRemote(url, opts))
    before_top = tree(top)
    rep = SilentReporter()
    r = Run(str(src), str(root), RunOptions(state_dir=str(state), delete=True, max_delete=100), rep)
    try:
        result = getattr(r, mode)()
    finally:
        r.close()
    touched = {o.path for o in result.plan.ops} | {o.to for o in result.plan.ops if o.to}
    assert not touched & set(HostileRemote.LIES)
    assert sum("unsafe name" in w for w in rep.warnings) == len(HostileRemote.LIES)
    after = tree(top)
    for p in ("evil", "b"):
        assert after[p] == before_top[p]
    assert tree(src)["a/g"][1] == b"local"

"""Issue 24.3 and 24.7 on a real sshd: SFTP upload temp names cannot be
guessed, are created exclusively (a planted symlink is never written
through) and private (0600) while written; a sent file gets the source's
mode masked by the umask, or exactly with --perms."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from reconcile.apply import SmallUpload
from reconcile.entry import FILE, TEMP_MARK, Entry, encode_path
from reconcile.errors import ReconcileError
from reconcile.remotes.sftp import remote as remote_mod, upload as upload_mod
from reconcile.remotes.sftp import SftpRemote
from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


@pytest.fixture
def remote(sftp_dest, monkeypatch, tmp_path):
    monkeypatch.setenv("RECONCILE_SSH_CONFIG", str(tmp_path / "no-ssh-config"))
    r = SftpRemote.from_url(sftp_dest.url, sftp_dest.options)
    yield r
    r.close()


def _local(tmp_path: Path, name: str, data: bytes, mode: int = 0o644) -> tuple[str, Entry]:
    p = tmp_path / "src" / name
    write(p, data, T0)
    os.chmod(p, mode)
    return str(p), Entry(name, FILE, len(data), T0, mode=os.stat(p).st_mode)


def _old_temp_name(path: str, e: Entry) -> str:
    """the name the upload used before issue 24: anyone who could stat the source could compute it"""
    tag = hashlib.sha256(encode_path(f"{path}\0{e.size}\0{e.mtime_ns}")).hexdigest()[:16]
    return f"{TEMP_MARK}{tag}-{path.rsplit('/', 1)[-1]}"


@pytest.mark.parametrize("how", ["upload", "upload_many"])
def test_a_symlink_planted_at_the_predictable_temp_name_is_not_written_through(remote, sftp_dest, tmp_path, how):
    root = tmp_path / "sftp-root"
    victim = tmp_path / "victim"
    victim.write_bytes(b"private, 0600")
    os.chmod(victim, 0o600)
    local, e = _local(tmp_path, "f", b"the upload" * 100)
    os.symlink(victim, root / _old_temp_name("f", e))
    if how == "upload":
        remote.upload(local, "f", e)
    else:
        errors = []
        remote.upload_many([SmallUpload(0, local, "f", e)], lambda item, err: errors.append(err))
        assert errors == [None]
    assert victim.read_bytes() == b"private, 0600"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (root / "f").read_bytes() == b"the upload" * 100


@pytest.mark.parametrize("how", ["upload", "upload_many"])
def test_the_temp_file_is_opened_exclusively(remote, tmp_path, monkeypatch, how):
    """even a name someone guessed right: the open fails, nothing is written through"""
    root = tmp_path / "sftp-root"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    monkeypatch.setattr(remote_mod.secrets, "token_hex", lambda n: "ab" * n)
    local, e = _local(tmp_path, "g", b"payload")
    os.symlink(victim, root / f"{TEMP_MARK}{'ab' * 8}-g")
    if how == "upload":
        with pytest.raises(ReconcileError):
            remote.upload(local, "g", e)
    else:
        errors = []
        try:
            remote.upload_many([SmallUpload(0, local, "g", e)], lambda item, err: errors.append(err))
        except ReconcileError as exc:  # the slow path's open failed too: retried under a new name
            errors.append(exc)
        assert errors and errors[0] is not None
    assert victim.read_bytes() == b"keep me"
    assert not (root / "g").exists()


def test_two_uploads_of_one_version_use_different_temp_names(remote, tmp_path, monkeypatch):
    seen = []
    real = upload_mod._create_exclusive
    monkeypatch.setattr(upload_mod, "_create_exclusive", lambda sftp, path: seen.append(path) or real(sftp, path))
    local, e = _local(tmp_path, "h", b"x" * 1000)
    remote.upload(local, "h", e)
    remote.upload(local, "h", e)
    assert len(seen) == 2 and seen[0] != seen[1]


def test_the_temp_file_is_private_while_written(remote, tmp_path, monkeypatch):
    root = tmp_path / "sftp-root"
    modes = []
    real = SftpRemote._send_range

    def spy(self, conn, handle, fd, pos, end, *a, **kw):
        modes.extend(stat.S_IMODE(p.stat().st_mode) for p in root.iterdir() if p.name.startswith(TEMP_MARK))
        return real(self, conn, handle, fd, pos, end, *a, **kw)

    monkeypatch.setattr(SftpRemote, "_send_range", spy)
    old = os.umask(0o022)
    try:
        local, e = _local(tmp_path, "p", os.urandom(300_000), mode=0o666)
        remote.upload(local, "p", e)
    finally:
        os.umask(old)
    assert modes == [0o600]


@pytest.mark.parametrize("perms", [False, True])
def test_sent_files_keep_their_privacy(linkable, tmp_path, perms):
    """a 0600 file arrives 0600 (it used to arrive 0644); others get the
    source's bits masked by the umask, or exactly with --perms"""
    dest = linkable
    root = Path(dest.root)
    src, state = tmp_path / "src", tmp_path / "state"
    modes = {"private": 0o600, "shared": 0o666, "script": 0o750, "big": 0o600}
    for name, mode in modes.items():
        write(src / name, os.urandom(3 << 20) if name == "big" else b"data", T0)
        os.chmod(src / name, mode)
    old = os.umask(0o022)
    try:
        reconcile("apply", src, dest.url, "--state-dir", state, *(["--perms"] if perms else []),
                  *dest.cli_args, env=dest.env, check=0)
    finally:
        os.umask(old)
    got = {n: stat.S_IMODE(os.stat(root / n).st_mode) for n in modes}
    want = modes if perms else {n: m & ~0o022 for n, m in modes.items()}
    assert got == want


@pytest.fixture(params=["local", "sftp"])
def linkable(request, tmp_path):
    dest = request.getfixturevalue(f"{request.param}_dest")
    dest.root = dest.url if dest.kind == "local" else str(tmp_path / "sftp-root")
    return dest

"""Issue 24, gaps found by the audit: the other download path (verify
--hash) bounded by the listed size, the state folder trusted by restore
only when it is ours, and the newer state files (block records, the probe
record, watch.json) private."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.mirror import write

T0 = 1_600_000_000_000_000_000


def _root_of(dest) -> Path:
    return Path(dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path))


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_verify_hash_reads_no_more_than_the_listed_size(request, tmp_path, monkeypatch, kind):
    """a server whose listing says 10 bytes while the file holds 5 MB: verify
    --hash reads nothing of it (it used to copy all 5 MB to a temp file)"""
    from reconcile import verify as verify_mod
    from reconcile.remotes import open_remote

    dest = request.getfixturevalue(f"{kind}_dest")
    root, src = _root_of(dest), tmp_path / "src"
    write(src / "big", b"0123456789", T0)
    write(root / "big", os.urandom(5 << 20), T0)
    monkeypatch.setenv("RECONCILE_SSH_CONFIG", str(tmp_path / "none"))
    copied = []

    def lying(url, opts):
        remote = open_remote(url, dest.options)
        real_list, real_download = remote.list, remote.download

        def listed():
            for e in real_list():
                if e.path == "big":
                    e.size = 10
                yield e

        def download(path, local_path, *a, **kw):
            try:
                return real_download(path, local_path, *a, **kw)
            finally:
                copied.append(os.path.getsize(local_path))
        remote.list, remote.download = listed, download
        return remote

    monkeypatch.setattr(verify_mod, "open_remote", lying)
    result = verify_mod.verify(str(src), dest.url, dest.options, [], True, False, str(tmp_path / "state"))
    assert copied and max(copied) == 0
    assert any("not the 10 listed" in w for w in result.warnings), result.warnings


@pytest.mark.parametrize("how", ["world-writable", "symlink", "found"])
def test_restore_trusts_a_state_folder_only_when_it_is_ours(tmp_path, how):
    """restore reads the pair's snapshot (the hashes a fetched file must have)
    and its trash record (names it leaves out): a state folder others can
    write is refused as apply refuses it (it used to be read as it was)"""
    from tests.cli import reconcile

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a", b"1", T0)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    if how == "found":  # the pair's own state folder, which restore finds by itself
        reconcile("apply", src, dst, env=env, check=0)
        [state] = (tmp_path / "xdg" / "reconcile").iterdir()
        given = []
    else:
        reconcile("apply", src, dst, "--state-dir", state, check=0)
        given = ["--state-dir", state]
    if how == "symlink":
        os.symlink(state, tmp_path / "link")
        given = ["--state-dir", tmp_path / "link"]
    else:
        os.chmod(state, 0o777)
    p = reconcile("restore", dst, tmp_path / "out", *given, env=env, check=2)
    assert "state folder" in p.stderr and "Traceback" not in p.stderr
    assert ("symlink" if how == "symlink" else "chmod 700") in p.stderr
    assert not (tmp_path / "out").exists()
    if how != "symlink":
        os.chmod(state, 0o700)
        reconcile("restore", dst, tmp_path / "out", *given, env=env, check=0)
        assert (tmp_path / "out" / "a").read_bytes() == b"1"


def test_the_newer_state_files_are_private(sftp_dest, tmp_path):
    """after an SFTP run with a file large enough for a block record: the
    probe record, destination.json and blocks/ are 0600 and 0700 as the rest
    (watch.json: tests/test_watch.py)"""
    import stat

    from reconcile.blockmap import DELTA_MIN
    from tests.cli import reconcile

    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "large", b"\0" * DELTA_MIN, T0)
    old = os.umask(0o022)
    try:
        reconcile("apply", src, sftp_dest.url, "--state-dir", state, *sftp_dest.cli_args, env=sftp_dest.env,
                  check=0)
    finally:
        os.umask(old)
    names = {str(p.relative_to(state)) for p in state.rglob("*")}
    assert {"remote/blocks", "remote/dest-probe.json", "destination.json", "snapshot.msgpack"} <= names, names
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for p in state.rglob("*"):
        assert stat.S_IMODE(p.lstat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def test_the_local_probe_file_is_never_written_through_a_symlink(tmp_path, monkeypatch):
    """the probe of a local destination's disk makes its file in the
    destination itself: a symlink planted at its name (guessed here) is never
    followed, as for every other temp file (it used to be opened CREAT|TRUNC,
    truncating the link's target, then have its times set through the link)"""
    import uuid

    from reconcile.entry import TEMP_MARK
    from reconcile.remotes import fsprobe

    root, victim = tmp_path / "dest", tmp_path / "victim"
    root.mkdir()
    victim.write_bytes(b"someone's file")
    os.utime(victim, ns=(T0, T0))
    fixed = uuid.UUID(int=0xABCDEF01 << 96)
    monkeypatch.setattr(fsprobe.uuid, "uuid4", lambda: fixed)
    for label in ("probe", "case-Ab"):
        os.symlink(victim, root / f"{TEMP_MARK}{label}-{fixed.hex[:8]}")
    fsprobe.probe(str(root))
    assert victim.read_bytes() == b"someone's file" and victim.stat().st_mtime_ns == T0


@pytest.mark.parametrize("how", ["delete", "delete_many"])
def test_sftp_deletes_refuse_a_folder_swapped_for_a_symlink(sftp_dest, tmp_path, how):
    """issue 24.4 on SFTP (no openat there): a server account swaps a folder
    the listing saw for a symlink to elsewhere before the delete of a name it
    chose; the delete is refused instead of removing elsewhere/NAME (as
    moves already were). The old code removed the file outside."""
    from reconcile.errors import Permanent
    from reconcile.remotes import open_remote

    root, outside = _root_of(sftp_dest), tmp_path / "outside"
    write(root / "a" / "b" / "victim", b"planted in the destination", T0)
    write(root / "top", b"mine", T0)
    write(outside / "b" / "victim", b"someone's file, outside", T0)
    remote = open_remote(sftp_dest.url, sftp_dest.options)
    try:
        (root / "a").rename(tmp_path / "a.moved")  # after the listing, before the delete
        os.symlink(outside, root / "a")
        with pytest.raises(Permanent, match="symlink"):
            if how == "delete":
                remote.delete("a/b/victim")
            else:
                remote.delete_many(["top", "a/b/victim"])
        remote.delete("top")  # nothing above it: deleted as before
    finally:
        remote.close()
    assert (outside / "b" / "victim").read_bytes() == b"someone's file, outside"
    assert not (root / "top").exists()


def test_verify_reads_nothing_a_hostile_listing_names(tmp_path, monkeypatch):
    """verify --hash against a listing holding '..', absolute names, NUL and
    over-long names: no crash, each shown (escaped) as extra, none read"""
    from reconcile import verify as verify_mod
    from reconcile.entry import FILE, Entry
    from reconcile.remotes.local import LocalRemote

    lies = ["../evil", "/etc/passwd", "a\x00b", "x" * 5000, "a/../../b", "e\x1b[2Jz"]
    read = []

    class Hostile(LocalRemote):
        def list(self):
            yield from super().list()
            for p in lies:
                yield Entry(p, FILE, 3, T0)

        def download(self, path, *a, **kw):
            read.append(path)
            return super().download(path, *a, **kw)

    src, root = tmp_path / "src", tmp_path / "top" / "root"
    write(src / "f", b"same", T0)
    write(root / "f", b"same", T0)
    write(tmp_path / "top" / "evil", b"outside", T0)
    monkeypatch.setattr(verify_mod, "open_remote", lambda url, opts: Hostile(url, opts))
    result = verify_mod.verify(str(src), str(root), Hostile(str(root)).options, [], True, False,
                               str(tmp_path / "state"))
    assert read == ["f"]
    shown = " ".join(d.path for d in result.extra_kept)
    assert "\x00" not in shown and "\x1b" not in shown and "a\\x00b" in shown, shown
    assert len(result.extra_kept) == len(lies)


def test_a_very_deep_destination_tree_is_tidied_without_a_recursion_error(tmp_path):
    """issue 24.8 on a local destination: 1,100 folders deep (someone who can
    write the destination, or a runaway script), and our temp files at the top
    and at the bottom. The tidy-up after a run walked it with os.walk, which
    recurses: 'internal error: RecursionError' on every run."""
    from reconcile.entry import TEMP_MARK
    from tests.cli import reconcile

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a", b"1", T0)
    dst.mkdir()
    try:
        fd = os.open(dst, os.O_RDONLY)
        for _ in range(1100):
            os.mkdir("d", dir_fd=fd)
            fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        os.close(os.open(f"{TEMP_MARK}0123456789ab-deep", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
        os.close(fd)
        (dst / f"{TEMP_MARK}0123456789ab-top").write_bytes(b"left by a killed run")
        p = reconcile("apply", src, dst, "--state-dir", state, check=0)
        assert "RecursionError" not in p.stderr
        assert not list(dst.glob(f"{TEMP_MARK}*"))
        deepest = os.path.join(dst, *["d"] * 1100)
        assert os.listdir(deepest) == []
        assert (dst / "a").read_bytes() == b"1"
    finally:
        # pytest removes old tmp folders with shutil.rmtree, which recurses too: a later session
        # would end in the same RecursionError. rm -rf does not recurse on the stack
        subprocess.run(["rm", "-rf", "--", str(dst)], check=True)


@pytest.mark.parametrize("cmd", ["verify", "watch"])
def test_verify_and_watch_refuse_a_state_folder_others_can_write(tmp_path, cmd):
    """the commands tests/test_security_state.py does not run: exit 2 with the fix, nothing sent"""
    from tests.cli import reconcile

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a", b"1", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    write(src / "b", b"2", T0)
    os.chmod(state, 0o777)
    p = reconcile(cmd, src, dst, "--state-dir", state, check=2, timeout=60)
    assert f"chmod 700 {state}" in p.stderr
    assert not (dst / "b").exists()


def test_an_sftp_temp_file_swapped_for_a_symlink_gets_no_mode_or_time(sftp_dest, tmp_path, monkeypatch):
    """issue 24.3/24.7: an account that can write the destination sees our temp
    file (its name is random, but listed) and replaces it, once written, with a
    symlink whose length equals the file's size. The finish set the times and
    the mode through the path, so through the link: a 0600 file outside became
    0777 (--perms) with the source's mtime. Now the temp must still be a
    regular file, else the upload fails and nothing outside changes."""
    from reconcile.entry import FILE, Entry
    from reconcile.errors import ReconcileError
    from reconcile.remotes.sftp import SftpRemote

    root = _root_of(sftp_dest)
    victim = tmp_path / "victim"
    victim.write_bytes(b"private")
    os.chmod(victim, 0o600)
    os.utime(victim, ns=(T0, T0))
    local = tmp_path / "src" / "f"
    write(local, b"x" * 300, T0 + 10**12)
    os.chmod(local, 0o777)
    target = str(victim)
    target = target[:1] + "/" * (300 - len(target)) + target[1:]  # the same file, 300 bytes long as a link
    real = SftpRemote._send_file

    def then_swap(self, fd, size, tmp_rel, *a, **kw):
        out = real(self, fd, size, tmp_rel, *a, **kw)
        os.unlink(root / tmp_rel)
        os.symlink(target, root / tmp_rel)
        return out

    monkeypatch.setattr(SftpRemote, "_send_file", then_swap)
    monkeypatch.setenv("RECONCILE_SSH_CONFIG", str(tmp_path / "none"))
    sftp_dest.options.extra["perms"] = True
    remote = SftpRemote.from_url(sftp_dest.url, sftp_dest.options)
    try:
        with pytest.raises(ReconcileError, match="replaced"):
            remote.upload(str(local), "f", Entry("f", FILE, 300, T0 + 10**12, mode=os.stat(local).st_mode))
    finally:
        remote.close()
    s = victim.stat()
    assert (s.st_mode & 0o777, s.st_mtime_ns, victim.read_bytes()) == (0o600, T0, b"private")


def test_a_restore_from_s3_keeps_the_mode_perms_stored(s3_dest, tmp_path):
    """issue 24.7 where S3 applies (coverage, it held already): a 0600 file
    sent with --perms carries its mode in the object's metadata and restore
    (which HEADs each object) gives it back. Without --perms S3 keeps no mode
    and a restored file gets the umask's default, as rclone gives it."""
    import stat

    from tests.cli import reconcile

    src, state, out = tmp_path / "src", tmp_path / "state", tmp_path / "out"
    write(src / "private", b"secret", T0)
    write(src / "script", b"#!/bin/sh", T0)
    os.chmod(src / "private", 0o600)
    os.chmod(src / "script", 0o750)
    reconcile("apply", src, s3_dest.url, "--state-dir", state, "--perms", *s3_dest.cli_args, env=s3_dest.env,
              check=0)
    old = os.umask(0o022)
    try:
        reconcile("restore", s3_dest.url, out, *s3_dest.cli_args, env=s3_dest.env, check=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out / "private").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "script").st_mode) == 0o750


@pytest.mark.parametrize("shape", ["objects-a-list", "record-an-int", "fields-of-the-wrong-type"])
def test_an_s3_record_of_the_wrong_shape_is_ignored(s3_dest, tmp_path, shape):
    """issue 24.5's 'set aside, never crash' for the S3 remote's record in the
    state folder (valid msgpack, wrong shape): the run lists the bucket instead"""
    import msgpack

    from tests.cli import reconcile

    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a", b"1", T0)
    run = ("apply", src, s3_dest.url, "--state-dir", state, *s3_dest.cli_args)
    reconcile(*run, env=s3_dest.env, check=0)
    [path] = [p for p in (state / "remote").rglob("*.msgpack") if "record" in p.name]
    data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    from reconcile.remotes.s3.record import _well_formed
    assert data["objects"] and all(_well_formed(v) for v in data["objects"].values())  # what we save passes
    if shape == "objects-a-list":
        data["objects"] = [1, 2]
    elif shape == "record-an-int":
        data["objects"] = {k: 5 for k in data["objects"]}
    else:
        data["objects"] = {k: [v[0], v[1], "not a time", 7, "rw"] for k, v in data["objects"].items()}
    path.write_bytes(msgpack.packb(data, use_bin_type=True))
    write(src / "a", b"2", T0 + 10**12)
    p = reconcile(*run, env=s3_dest.env, check=0)
    assert "internal error" not in p.stderr
    p = reconcile("verify", src, s3_dest.url, "--state-dir", state, *s3_dest.cli_args, env=s3_dest.env, check=0)


def test_range_writers_never_write_into_a_file_swapped_in_for_the_temp(sftp_dest, tmp_path, monkeypatch):
    """issue 24.3: a large file goes as ranges, each writer on its own
    connection reopening the temp file by its name. An account that can
    write the destination (inotify shows it the new temp at once) swaps it for
    a symlink to a file the login can write, before the writers open it: they
    wrote the source's bytes into that file. Now each writer checks that what
    it opened is the file we made (its marked access time) before writing."""
    from reconcile.entry import FILE, Entry
    from reconcile.errors import ReconcileError
    from reconcile.remotes.sftp import SftpRemote, upload as upload_mod

    root = _root_of(sftp_dest)
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 100)
    os.chmod(victim, 0o600)
    local = tmp_path / "src" / "big"
    write(local, os.urandom(4 << 20), T0)
    monkeypatch.setattr(upload_mod, "RANGE_MIN", 1 << 20)
    real = SftpRemote._open_temp

    def then_swap(self, sftp, tmp_rel, truncate):
        f = real(self, sftp, tmp_rel, truncate)
        real_close = f.close

        def close():
            real_close()
            if truncate and not (root / tmp_rel).is_symlink():  # the first close: the writers open it next
                os.unlink(root / tmp_rel)
                os.symlink(victim, root / tmp_rel)
        f.close = close
        return f

    monkeypatch.setattr(SftpRemote, "_open_temp", then_swap)
    monkeypatch.setenv("RECONCILE_SSH_CONFIG", str(tmp_path / "none"))
    sftp_dest.options.transfers = 4
    remote = SftpRemote.from_url(sftp_dest.url, sftp_dest.options)
    try:
        with pytest.raises(ReconcileError):
            remote.upload(str(local), "big", Entry("big", FILE, 4 << 20, T0))
    finally:
        remote.close()
    assert victim.read_bytes() == b"v" * 100

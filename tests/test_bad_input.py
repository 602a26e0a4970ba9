"""The bad-input catalogue of issue 7: one test per kind of hostile or odd
input, each a row of docs/reliability.md (input, what the user sees, exit
code, what is kept). Most run the real command line against a local folder;
rows about a remote run against the real sshd or SeaweedFS.

Tests run as root, which reads everything: unreadable-file rows drop to
nobody (see run_as_nobody) or they would prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgpack
import pytest

from reconcile.diff import merge
from reconcile.engine import Run, RunOptions
from reconcile.entry import FILE, Entry, entry_key
from reconcile.excludes import Excludes
from reconcile.plan import make_plan
from reconcile.remotes.base import Capabilities
from tests.cli import reconcile
from tests.mirror import SilentReporter, tree, wait_until_locked, write
from tests.state_owner import take_state_back

T0 = 1_600_000_000_000_000_000
REPO = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def pair(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    dst.mkdir()
    return src, dst, state


def apply(src, dst, state, *extra, check=0):
    return reconcile("apply", src, dst, "--state-dir", state, *extra, check=check)


def plan_ops(src, dst, state, *extra):
    return json.loads(reconcile("plan", src, dst, "--state-dir", state, "--json", *extra, check=0).stdout)["operations"]


def bwrite(path: bytes, data: bytes, mtime_ns: int = T0) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def can_mount() -> bool:
    probe = tempfile.mkdtemp(prefix="reconcile-mount-probe-")
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", probe], check=True)
        return ok
    finally:
        os.rmdir(probe)


MOUNT = os.geteuid() == 0 and shutil.which("mount") is not None and can_mount()
needs_mount = pytest.mark.skipif(not MOUNT, reason="mount -t tmpfs is not possible here (needs root)")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(path, size, ro=False) on a small tmpfs; all unmounted afterwards."""
    mounted = []

    def mount(path: Path, size: str = "1m", ro: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (",ro" if ro else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for p in reversed(mounted):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


# --- names -------------------------------------------------------------------

def test_non_utf8_names_round_trip_on_a_folder(pair):
    src, dst, state = pair
    bwrite(os.path.join(os.fsencode(src), b"caf\xe9", b"\xff\xfe.bin"), b"latin-1 and junk bytes")
    apply(src, dst, state)
    assert tree(dst) == tree(src)
    assert plan_ops(src, dst, state) == []


def test_non_utf8_names_are_reported_and_skipped_on_s3(s3_dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    bwrite(os.path.join(os.fsencode(src), b"caf\xe9.txt"), b"x")
    write(src / "ok.txt", b"fine", T0)
    p = reconcile("apply", src, s3_dest.url, "--state-dir", state, *s3_dest.cli_args, env=s3_dest.env)
    assert p.returncode == 3, p.stderr  # partial: that one file failed, the rest was sent
    assert "not valid UTF-8" in p.stderr and "caf\\xe9.txt" in p.stderr
    from reconcile.remotes import open_remote
    r = open_remote(s3_dest.url, s3_dest.options)
    try:
        assert [e.path for e in r.list()] == ["ok.txt"]
    finally:
        r.close()


@pytest.mark.parametrize("remote", ["local", "sftp"])
def test_newline_backslash_colon_and_spaces_in_names(remote, request, tmp_path):
    dest = request.getfixturevalue(f"{remote}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    names = ["new\nline", "back\\slash", "co:lon", " lead", "trail ", " both ", "tab\there", "dir \\:\n/x"]
    for i, n in enumerate(names):
        write(src / n, n.encode(), T0 + i * 10**9)
    p = reconcile("apply", src, dest.url, "--state-dir", state, *dest.cli_args, check=0)
    assert "\n" not in p.stderr.strip()  # the summary line stays one line
    root = Path(dest.url if remote == "local" else unquote(urlsplit(dest.url).path))
    assert tree(root) == tree(src)
    plan = json.loads(reconcile("plan", src, dest.url, "--state-dir", state, "--json", *dest.cli_args,
                                check=0).stdout)
    assert plan["operations"] == []


@pytest.fixture
def short_pair():
    """roots with short absolute paths: the kernel caps a whole path at 4096 bytes."""
    top = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    (top / "s").mkdir()
    (top / "d").mkdir()
    yield top / "s", top / "d", top / "st"
    shutil.rmtree(top)


def test_255_byte_names_and_4000_byte_paths(short_pair):
    src, dst, state = short_pair
    long_name = "n" * 251 + ".bin"  # 255 bytes: the most a Linux name may hold
    write(src / long_name, b"long name", T0)
    write(src / ("é" * 127 + "x"), b"255 bytes of UTF-8", T0)  # 2 bytes per é
    rel = "/".join(["p" * 199] * 20)[:3995] + "/leaf"  # 4,000 bytes
    assert len(rel) == 4000
    write(src / rel, b"4000-byte path", T0)
    apply(src, dst, state)
    assert tree(dst) == tree(src)
    assert plan_ops(src, dst, state) == []


def test_path_too_long_for_the_destination_fails_alone(tmp_path):
    """the destination root's own length counts against the kernel's 4096-byte
    cap (and the temp name adds 28): that file fails, the rest is sent."""
    src, state = tmp_path / "s", tmp_path / "st"
    dst = tmp_path / ("deep-root-" + "r" * 200) / ("r" * 200)
    dst.mkdir(parents=True)
    rel = "/".join(["p" * 199] * 20)[:3990] + "/leaf"
    write(src / rel, b"too long there", T0)
    write(src / "fine", b"1", T0)
    p = apply(src, dst, state, check=3)
    assert "File name too long" in p.stderr and "partial: 1 done, 0 skipped, 1 failed" in p.stderr
    assert (dst / "fine").read_bytes() == b"1"
    apply(src, dst, state, "--delete", check=3)  # still refused, still nothing deleted
    assert (dst / "fine").read_bytes() == b"1"


def test_very_deep_tree_300_levels(pair):
    src, dst, state = pair
    rel = "/".join(["d"] * 300)
    write(src / rel / "bottom", b"deep", T0)
    apply(src, dst, state)
    assert (dst / rel / "bottom").read_bytes() == b"deep"
    assert tree(dst) == tree(src)
    (src / "d").rename(src / "e")  # one directory move, not 300 levels resent
    ops = plan_ops(src, dst, state, "--delete")
    assert ops == [{"op": "move", "kind": "dir", "from": "d", "to": "e", "files": 1}]
    apply(src, dst, state, "--delete")
    assert tree(dst) == tree(src)


def test_nfc_and_nfd_spellings_are_two_files(pair):
    src, dst, state = pair
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    write(src / nfc, b"composed", T0)
    write(src / nfd, b"decomposed", T0)
    apply(src, dst, state)
    assert sorted(os.listdir(dst)) == sorted([nfc, nfd])
    assert (dst / nfc).read_bytes() == b"composed" and (dst / nfd).read_bytes() == b"decomposed"
    (src / nfc).unlink()  # delete one spelling: the other stays
    apply(src, dst, state, "--delete")
    assert os.listdir(dst) == [nfd] and (dst / nfd).read_bytes() == b"decomposed"


# --- case-insensitive destinations (pure planner: Linux folders are case-sensitive)

CI = Capabilities(case_insensitive=True)


def _entry(path, inode, size=5, mtime=T0):
    return Entry(path, FILE, size, mtime, inode, 1, 0o644)


def _plan(cur, prev, rem, caps=CI):
    key = entry_key
    changes = merge(sorted(cur, key=key), sorted(prev, key=key), sorted(rem, key=key), Excludes(),
                    caps.mtime_precision_ns)
    return make_plan(changes, caps, delete=True)


def test_case_only_rename_with_a_snapshot_is_one_move():
    prev = [_entry("Photo.JPG", 7)]
    rem = [Entry("Photo.JPG", FILE, 5, T0)]
    plan = _plan([_entry("photo.jpg", 7)], prev, rem)
    assert [o.to_json() for o in plan.ops] == [
        {"op": "move", "kind": "file", "from": "Photo.JPG", "to": "photo.jpg", "files": 1}]


def test_case_only_rename_without_a_snapshot_never_deletes_the_upload():
    rem = [Entry("Photo.JPG", FILE, 5, T0)]
    plan = _plan([_entry("photo.jpg", 7)], [], rem)
    written: set[str] = set()
    for op in plan.ops:
        if op.op == "delete":
            assert op.path.casefold() not in written, f"deletes {op.path} after writing the same name"
        elif op.op == "upload":
            written.add(op.path.casefold())
        elif op.op == "move":
            written.add((op.to or "").casefold())


# --- file kinds --------------------------------------------------------------

def test_hard_links_are_sent_as_separate_files(pair):
    src, dst, state = pair
    write(src / "a", b"shared inode", T0)
    os.link(src / "a", src / "b")
    apply(src, dst, state)
    assert (dst / "a").read_bytes() == (dst / "b").read_bytes() == b"shared inode"
    (src / "a").unlink()  # one name gone: the other link's remote copy stays
    apply(src, dst, state, "--delete", "--max-delete", "1")
    assert tree(dst) == tree(src) and (dst / "b").read_bytes() == b"shared inode"


def test_symlink_loops_are_not_followed(pair):
    src, dst, state = pair
    write(src / "d" / "f", b"1", T0)
    os.symlink("..", src / "d" / "up")  # a loop back to the root
    os.symlink("self", src / "self")  # a link to itself
    p = apply(src, dst, state, "--links", "follow")
    assert "symlinks not followed" in p.stderr
    assert "a loop" in p.stderr and "dangling" in p.stderr
    assert tree(dst) == {"d": ("d",), "d/f": tree(src)["d/f"]}


def test_fifos_sockets_and_device_files_are_skipped(pair):
    src, dst, state = pair
    write(src / "real", b"1", T0)
    os.mkfifo(src / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    os.mknod(src / "null-dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    try:
        p = apply(src, dst, state)
    finally:
        sock.close()
    assert "3 special files skipped" in p.stderr
    for name in ("fifo", "sock", "null-dev"):
        assert f"skipped special file {name}" in p.stderr
    assert set(os.listdir(dst)) == {"real"}


def test_sparse_and_zero_byte_files(pair):
    src, dst, state = pair
    with open(src / "sparse", "wb") as f:
        f.seek(30_000_000)
        f.write(b"end")
        f.seek(5_000_000)
        f.write(b"middle")
    (src / "empty").write_bytes(b"")
    (src / "d").mkdir()
    (src / "d" / "zero").write_bytes(b"")
    apply(src, dst, state)
    assert tree(dst) == tree(src)
    assert os.path.getsize(dst / "sparse") == 30_000_003 and os.path.getsize(dst / "empty") == 0


# --- unreadable input (as nobody: root reads everything) -------------------

def run_as_nobody(src, dst, state):
    """the real command line, dropped to nobody once its modules are imported."""
    code = f"""
import contextlib, io, os, sys
import reconcile.cli
from tests.state_owner import give_state_to_nobody
args = [{str(src)!r}, {str(dst)!r}, "--state-dir", {str(state)!r}, "--delete"]
# a plan as root first imports every module the CLI loads lazily
# (our interpreter's site-packages may be closed to nobody); it changes nothing
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        reconcile.cli.app(["plan", *args])
    except SystemExit:
        pass
give_state_to_nobody({str(state)!r})
os.setgroups([]); os.setgid(65534); os.setuid(65534)
reconcile.cli.app(["apply", *args])
"""
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    finally:
        take_state_back(state)


@pytest.fixture
def open_tmp():
    """a temp dir nobody can enter (pytest's tmp_path is closed to nobody)."""
    d = Path(tempfile.mkdtemp(prefix="reconcile-nobody-"))
    os.chmod(d, 0o777)
    yield d
    for root, dirs, _ in os.walk(d):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o700)
    shutil.rmtree(d)


def _open_up(root: Path) -> None:
    for dirpath, dirs, files in os.walk(root):
        os.chmod(dirpath, 0o777)
        for n in files:
            os.chmod(os.path.join(dirpath, n), 0o666)


def test_unreadable_file_is_skipped_and_its_remote_copy_kept(open_tmp):
    src, dst, state = open_tmp / "src", open_tmp / "dst", open_tmp / "state"
    write(src / "open.txt", b"1", T0)
    write(src / "secret.txt", b"old", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    _open_up(open_tmp)
    write(src / "secret.txt", b"new version", T0 + 10**12)
    os.chmod(src / "secret.txt", 0o000)
    p = run_as_nobody(src, dst, state)
    assert p.returncode == 3, p.stderr  # partial: a file not backed up is never a success (issue 18)
    assert "Traceback" not in p.stderr
    assert "skipped secret.txt: Permission denied; its remote copy is left as it is" in p.stderr
    assert (dst / "secret.txt").read_bytes() == b"old"  # kept, not deleted, not half-sent
    os.chmod(src / "secret.txt", 0o644)
    reconcile("apply", src, dst, "--state-dir", state, "--delete", check=0)
    assert tree(dst) == tree(src)


def test_unreadable_directory_is_never_deleted_on_the_remote(open_tmp):
    src, dst, state = open_tmp / "src", open_tmp / "dst", open_tmp / "state"
    write(src / "open" / "a", b"1", T0)
    for i in range(5):
        write(src / "locked" / f"f{i}", b"keep me", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    _open_up(open_tmp)
    os.chmod(src / "locked", 0o000)
    for _ in range(2):  # and again: a second run must not take it for deleted either
        p = run_as_nobody(src, dst, state)
        assert p.returncode == 3, p.stderr  # partial (issue 18)
        assert "cannot read locked: Permission denied; its remote copy is left alone" in p.stderr
        assert sorted(os.listdir(dst / "locked")) == [f"f{i}" for i in range(5)]
    os.chmod(src / "locked", 0o755)


# --- files that change under us ------------------------------------------------

def _run_with_hook(src, dst, state, before_execute=None, reporter=None):
    r = Run(str(src), str(dst), RunOptions(state_dir=str(state), delete=True), reporter or SilentReporter())
    if before_execute is not None:
        original = r._execute

        def execute(plan, tag):
            before_execute()
            return original(plan, tag)

        r._execute = execute
    try:
        return r.apply()
    finally:
        r.close()


CHANGES = {
    "modified": lambda p: write(p, b"X" * 1000, T0 + 5 * 10**12),  # same size, new content and mtime
    "grown": lambda p: write(p, b"Y" * 5000, T0 + 5 * 10**12),
    "truncated": lambda p: write(p, b"Z" * 10, T0 + 5 * 10**12),
    "deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_file_changed_between_plan_and_apply(pair, change):
    src, dst, state = pair
    write(src / "f", b"o" * 1000, T0)
    write(src / "other", b"1", T0)
    apply(src, dst, state)
    write(src / "f", b"v2" * 500, T0 + 10**12)  # planned as changed...
    res = _run_with_hook(src, dst, state, lambda: CHANGES[change](src / "f"))  # ...then changed again
    results = {res.plan.ops[i].path: r for i, r in res.outcome.results.items()}
    assert results["f"][0] == "skipped"
    assert (dst / "f").read_bytes() == b"o" * 1000  # the old copy stays whole
    apply(src, dst, state, "--delete", "--max-delete", "1")
    assert tree(dst) == tree(src)


class _ChangeWhileSending(SilentReporter):
    def __init__(self, path: Path, change) -> None:
        super().__init__()
        self.path, self.change, self.done = path, change, False

    def sent(self, n: int) -> None:
        if not self.done:
            self.done = True
            self.change(self.path)


BIG = 24 << 20  # several chunks on every remote


def _in_place(p: Path, data: bytes) -> None:
    with open(p, "r+b") as f:  # rewritten in place, as an editor or a database would
        f.write(data)
    os.utime(p, ns=(T0 + 9 * 10**12,) * 2)


WHILE_SENDING = {
    "modified": lambda p: _in_place(p, b"M" * BIG),
    "grown": lambda p: open(p, "ab").write(b"G" * (1 << 20)),
    "truncated": lambda p: os.truncate(p, BIG // 3),
    "deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize("change", sorted(WHILE_SENDING))
def test_file_changed_while_being_uploaded(pair, change):
    """the remote's real name never holds a mix of two versions."""
    src, dst, state = pair
    old = b"o" * BIG
    write(src / "f", old, T0)
    write(src / "other", b"1", T0)
    apply(src, dst, state)
    new = os.urandom(BIG)
    write(src / "f", new, T0 + 10**12)
    reporter = _ChangeWhileSending(src / "f", WHILE_SENDING[change])
    _run_with_hook(src, dst, state, reporter=reporter)
    assert reporter.done
    got = (dst / "f").read_bytes()
    assert got in (old, new), f"the remote holds a torn copy ({len(got)} bytes)"
    assert not [n for n in os.listdir(dst) if ".reconcile-tmp-" in n]
    apply(src, dst, state, "--delete", "--max-delete", "1")
    assert tree(dst) == tree(src)


# --- refused sources and destinations --------------------------------------------

@needs_mount
def test_empty_mount_point_source_is_refused(pair, tmp_path, tmpfs):
    src, dst, state = pair
    write(src / "photo.jpg", b"precious", T0)
    apply(src, dst, state)
    shutil.rmtree(src)
    tmpfs(src)  # the disk is "mounted" but empty, as an unplugged one looks
    p = apply(src, dst, state, "--delete", check=4)
    assert "is empty but the remote holds 1 files" in p.stderr and "--allow-empty-source" in p.stderr
    assert (dst / "photo.jpg").read_bytes() == b"precious"


def test_unmounted_source_folder_missing_is_refused(pair, tmp_path):
    _, dst, state = pair
    write(dst / "photo.jpg", b"precious", T0)
    p = apply(tmp_path / "media" / "usb", dst, state, "--delete", check=4)
    assert "does not exist (not mounted?)" in p.stderr
    assert (dst / "photo.jpg").read_bytes() == b"precious"


def test_dest_that_is_a_file_exits_2(pair, tmp_path):
    src, _, state = pair
    write(src / "x", b"1", T0)
    (tmp_path / "afile").write_bytes(b"do not touch")
    p = apply(src, tmp_path / "afile", state, check=2)
    assert "is a file, not a folder" in p.stderr
    assert (tmp_path / "afile").read_bytes() == b"do not touch"


@pytest.mark.parametrize("layout", ["dest-inside-source", "source-inside-dest", "dest-is-source",
                                    "dest-inside-source-via-symlink"])
def test_overlapping_source_and_dest_are_refused(tmp_path, layout):
    top = tmp_path / "top"
    write(top / "a" / "f", b"1", T0)
    write(top / "b" / "g", b"2", T0)
    before = tree(top)
    src, dst = {
        "dest-inside-source": (top, top / "a" / "backup"),
        "source-inside-dest": (top / "a", top),
        "dest-is-source": (top / "a", top / "a"),
        "dest-inside-source-via-symlink": (top / "a", tmp_path / "link" / "inner"),
    }[layout]
    os.symlink(top / "a", tmp_path / "link")
    p = reconcile("apply", src, dst, "--state-dir", tmp_path / "state", "--delete", check=2)
    assert "overlap" in p.stderr
    assert tree(top) == before


# --- a full remote, an unwritable state folder, two runs at once -------------

@needs_mount
def test_sftp_remote_full_exits_3_and_keeps_the_journal(sftp_dest, tmp_path, tmpfs):
    from reconcile import journal

    root = Path(unquote(urlsplit(sftp_dest.url).path))
    tmpfs(root, "400k")
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(4):
        write(src / f"f{i}", os.urandom(150_000), T0 + i * 10**9)
    args = ("apply", src, sftp_dest.url, "--state-dir", state, "--retry-for", "2s", *sftp_dest.cli_args)
    p = reconcile(*args, check=3)
    assert "partial:" in p.stderr and "the next run resumes" in p.stderr
    pending = journal.load(str(state / "journal.msgpack"))
    assert pending is not None and len(pending.remaining) >= 1
    status = json.loads(reconcile("status", src, sftp_dest.url, "--state-dir", state, "--json", check=0).stdout)
    assert status["pending_operations"] == len(pending.remaining)
    sent = {n for n in os.listdir(root) if ".reconcile-tmp-" not in n}
    for n in sent:  # what made it is whole
        assert (root / n).read_bytes() == (src / n).read_bytes()
    subprocess.run(["mount", "-o", "remount,size=4m", str(root)], check=True)  # space again
    reconcile(*args, check=0)
    assert tree(root) == tree(src)


@needs_mount
def test_state_folder_full_keeps_the_previous_snapshot(pair, tmp_path, tmpfs):
    src, dst, state = pair
    for i in range(200):
        write(src / f"f{i}", b"x" * i, T0)
    apply(src, dst, state)
    saved = {n: (state / n).read_bytes() for n in ("snapshot.msgpack",)}
    keep = tmp_path / "keep"
    shutil.copytree(state, keep)
    tmpfs(state, "64k")
    shutil.copytree(keep, state, dirs_exist_ok=True)
    st = os.statvfs(state)
    (state / "ballast").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 4096))
    write(src / "new", b"n", T0)
    p = apply(src, dst, state, check=None)
    assert p.returncode != 0
    assert (state / "snapshot.msgpack").read_bytes() == saved["snapshot.msgpack"]
    assert not [n for n in os.listdir(state) if n.endswith(".tmp")], os.listdir(state)
    (state / "ballast").unlink()
    apply(src, dst, state)
    assert tree(dst) == tree(src)


@needs_mount
@pytest.mark.parametrize("how", ["full", "read-only"])
def test_state_folder_unwritable_says_so_plainly(pair, tmp_path, tmpfs, how):
    src, dst, state = pair
    write(src / "x", b"1", T0)
    apply(src, dst, state)
    keep = tmp_path / "keep"
    shutil.copytree(state, keep)
    tmpfs(state, "64k")
    shutil.copytree(keep, state, dirs_exist_ok=True)
    if how == "full":
        st = os.statvfs(state)
        (state / "ballast").write_bytes(b"\0" * (st.f_bavail * st.f_frsize))
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
    write(src / "y", b"2", T0)
    p = apply(src, dst, state, check=None)
    assert p.returncode in (1, 2)
    assert "internal error" not in p.stderr
    assert str(state) in p.stderr


def test_two_runs_at_once_exit_5(pair):
    src, dst, state = pair
    write(src / "big", os.urandom(3_000_000), T0)
    slow = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", str(src), str(dst), "--state-dir",
                             str(state), "--bwlimit", "200K", "-q"], stderr=subprocess.PIPE)
    try:
        wait_until_locked(state)
        p = apply(src, dst, state, check=5)
        assert f"another reconcile run (pid {slow.pid})" in p.stderr
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    apply(src, dst, state)  # the dead run's lock is taken over
    assert tree(dst) == tree(src)


# --- damaged state -----------------------------------------------------------

def _mirror_then(pair, n=6):
    src, dst, state = pair
    for i in range(n):
        write(src / f"f{i}", b"data %d" % i, T0)
    apply(src, dst, state)
    return src, dst, state


def test_corrupt_snapshot_is_ignored_and_deletes_nothing(pair):
    src, dst, state = _mirror_then(pair)
    snap = state / "snapshot.msgpack"
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    p = apply(src, dst, state, "--delete")
    assert "ignoring the previous snapshot" in p.stderr and "nothing is deleted because of it" in p.stderr
    assert tree(dst) == tree(src)


def test_truncated_snapshot_is_ignored(pair):
    src, dst, state = _mirror_then(pair)
    snap = state / "snapshot.msgpack"
    snap.write_bytes(snap.read_bytes()[:10])
    p = apply(src, dst, state, "--delete")
    assert "ignoring the previous snapshot" in p.stderr
    assert tree(dst) == tree(src)


def _killed_journal(src, dst, state):
    """a journal as a killed run leaves it: plan written, nothing done."""
    from reconcile import journal
    from reconcile.plan import Op

    j = journal.Journal(str(state / "journal.msgpack"))
    ops = [Op("delete", "f0", reason="deleted"), Op("move", "f1", to="f1-moved", reason="moved")]
    j.start({"plan_id": "t", "source": str(src), "dest": str(dst)}, ops)
    j.close()
    return state / "journal.msgpack"


def test_corrupt_journal_is_set_aside_and_deletes_nothing(pair):
    src, dst, state = _mirror_then(pair)
    jpath = _killed_journal(src, dst, state)
    data = bytearray(jpath.read_bytes())
    jpath.write_bytes(b"\xc1" + bytes(data[1:]))  # 0xc1 is never valid msgpack
    status = json.loads(reconcile("status", src, dst, "--state-dir", state, "--json", check=0).stdout)
    assert status["pending_operations"] is None and "journal_error" in status
    p = apply(src, dst, state)
    assert "ignoring an unreadable journal" in p.stderr
    assert (state / "journal.msgpack.corrupt").exists()  # kept for a post-mortem
    assert tree(dst) == tree(src)  # f0 not deleted, f1 not moved


def test_torn_journal_tail_still_resumes(pair):
    src, dst, state = _mirror_then(pair)
    (src / "f0").unlink()
    (src / "f1").rename(src / "f1-moved")
    jpath = _killed_journal(src, dst, state)
    with open(jpath, "ab") as f:
        f.write(msgpack.packb({"i": 0, "r": "done"})[:-1])  # the kill tore the last record
    p = apply(src, dst, state, "--max-delete", "5")
    assert "resuming an unfinished run: 2 operations left" in p.stderr
    assert tree(dst) == tree(src)


def test_journal_from_an_older_format_version_is_ignored_safely(pair):
    src, dst, state = _mirror_then(pair)
    jpath = state / "journal.msgpack"
    old = msgpack.packb({"version": 0, "started": 0}) + msgpack.packb([{"op": "delete", "path": "f2"}])
    jpath.write_bytes(old)
    p = apply(src, dst, state)
    assert "unknown journal format version" in p.stderr
    assert tree(dst) == tree(src)  # its delete of f2 was not carried out


@pytest.mark.parametrize("remote", ["sftp", "s3"])
def test_file_rewritten_while_being_uploaded_to_a_server(remote, request, tmp_path):
    from tests.test_engine_remotes import remote_tree

    dest = request.getfixturevalue(f"{remote}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    old = b"o" * BIG
    write(src / "f", old, T0)
    write(src / "other", b"1", T0)
    opts = dest.options
    r = Run(str(src), dest.url, RunOptions(state_dir=str(state), remote=opts), SilentReporter())
    try:
        r.apply()
    finally:
        r.close()
    new = os.urandom(BIG)
    write(src / "f", new, T0 + 10**12)
    reporter = _ChangeWhileSending(src / "f", WHILE_SENDING["modified"])
    opts.state_dir = None
    r = Run(str(src), dest.url, RunOptions(state_dir=str(state), remote=opts), reporter)
    try:
        r.apply()
    finally:
        r.close()
    assert reporter.done
    got = remote_tree(dest, tmp_path)["f"][1]
    assert got in (old, new), f"the remote holds a torn copy ({len(got)} bytes)"
    reconcile("apply", src, dest.url, "--state-dir", state, *dest.cli_args, env=dest.env, check=0)
    assert remote_tree(dest, tmp_path)["f"][1] == (src / "f").read_bytes()


def test_sftp_server_that_hangs_up_shows_one_line_not_a_traceback(sshd_server, sftp_proxy, tmp_path):
    from tests.servers_sftp import sftp_url

    root = tmp_path / "root"
    root.mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts", sftp_proxy.port)
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a", b"1", T0)
    sftp_proxy.refuse(True)  # the server is down: every connection closes at once
    url = sftp_url(sshd_server, root, port=sftp_proxy.port)
    p = subprocess.run([sys.executable, "-m", "reconcile", "apply", str(src), url, "--state-dir", str(state),
                        "--ssh-key", sshd_server.user_key, "--known-hosts", kh, "--retry-for", "1s"],
                       capture_output=True, text=True)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "paramiko" not in p.stderr, p.stderr
    assert list(root.iterdir()) == []


def test_journal_append_failing_mid_run_is_an_error_not_a_dead_thread(pair, monkeypatch):
    import errno
    import threading

    from reconcile import journal

    src, dst, state = pair
    for i in range(20):
        write(src / f"f{i:02}", b"x" * i, T0)
    escaped = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))

    def full(self, i, result="done"):
        raise OSError(errno.ENOSPC, "No space left on device", str(state / "journal.msgpack"))

    monkeypatch.setattr(journal.Journal, "done", full)
    r = Run(str(src), str(dst), RunOptions(state_dir=str(state)), SilentReporter())
    try:
        try:
            res = r.apply()
            complete = res.outcome.complete
        except OSError:
            complete = False  # reported as an error: acceptable
    finally:
        r.close()
    assert escaped == [], escaped
    if complete:
        assert tree(dst) == tree(src), "reported complete, but not every upload ran"


@pytest.mark.parametrize("bad", ["keep/trash", "..", "/", "../outside"])
def test_backup_dir_must_be_one_top_level_name(pair, bad):
    src, dst, state = pair
    write(src / "a.txt", b"new", T0)
    write(dst / "keep" / "old.txt", b"old", T0)
    p = apply(src, dst, state, "--delete", "--backup-dir", bad, check=2)
    assert "must be one folder name at the top of the destination" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert tree(dst, with_mtime=False) == {"keep": ("d",), "keep/old.txt": ("f", b"old")}


def test_a_negation_under_an_excluded_folder_never_deletes_the_remote_copy(pair):
    """gitignore: 'logs/' then '!logs/keep.txt' keeps the whole folder out; the
    remote's logs/keep.txt is excluded too, so --delete leaves it alone."""
    src, dst, state = pair
    for root in (src, dst):
        write(root / "logs" / "keep.txt", b"keep", T0)
        write(root / "logs" / "x.log", b"x", T0)
    write(src / "a.log", b"a", T0)
    write(src / "b.keep.log", b"b", T0)
    flags = ("--delete", "--exclude", "logs/", "--exclude", "!logs/keep.txt", "--exclude", "*.log",
             "--exclude", "!b.keep.log")
    ops = plan_ops(src, dst, state, *flags)
    assert ops == [{"op": "upload", "path": "b.keep.log", "size": 1, "reason": "new"}]
    apply(src, dst, state, *flags)
    assert (dst / "logs" / "keep.txt").read_bytes() == b"keep"

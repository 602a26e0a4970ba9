"""The portable twins of the POSIX-only fast paths (reconcile/portable.py).

Windows has no fork, pread, dir_fd, O_NOFOLLOW, sendfile or fcntl; macOS
takes the no-fork paths too. The twins run here in three ways: unit tests
below with one capability switched off; a command-line run with those calls
deleted from the os module (what Windows looks like to our code); and the
whole second pass of scripts/test (RECONCILE_PORTABLE=1), whose own check is
test_the_portable_pass_runs_the_twins.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from reconcile import forked, hashing, portable, safepath
from reconcile.entry import FILE, Entry
from reconcile.remotes import open_remote
from tests.mirror import run, tree, write

T0 = 1_600_000_000_000_000_000


@pytest.fixture
def no_pread(monkeypatch):
    monkeypatch.setattr(portable, "PREAD", False)


def test_pread_twin_reads_at_offset_and_keeps_the_file_offset(no_pread, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(bytes(range(256)) * 64)
    fd = os.open(p, os.O_RDONLY | portable.BINARY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        before = portable.used["pread"]
        assert portable.pread(fd, 4, 300) == bytes([44, 45, 46, 47])
        assert portable.used["pread"] == before + 1
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7
        buf = bytearray(10)
        assert portable.pread_into(fd, buf, 256 * 64 - 3) == 3  # short at the end
        assert bytes(buf[:3]) == bytes([253, 254, 255])
        assert portable.pread_into(fd, buf, 256 * 64) == 0
    finally:
        os.close(fd)
    fd = os.open(p, os.O_RDWR | portable.BINARY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        assert portable.pwrite(fd, b"xyz", 1000) == 3
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
    finally:
        os.close(fd)
    assert p.read_bytes()[998:1004] == bytes([230, 231]) + b"xyz" + bytes([235])


def test_pread_twin_is_right_from_many_threads_on_one_file(no_pread, tmp_path):
    data = os.urandom(1 << 20)
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY | portable.BINARY)
    wrong = []

    def reader(k: int) -> None:
        for i in range(200):
            off = (k * 7919 + i * 4099) % (len(data) - 512)
            if portable.pread(fd, 512, off) != data[off:off + 512]:
                wrong.append(off)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(fd)
    assert wrong == []


def test_hashing_gives_the_same_digest_with_the_twins(monkeypatch, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(3 * hashing.BUFFER + 5))
    st = p.stat()
    fast = hashing.hash_file(str(p), st.st_size, st.st_mtime_ns)
    monkeypatch.setattr(portable, "PREAD", False)
    monkeypatch.setattr(portable, "MAP_PRIVATE", False)
    monkeypatch.setattr(hashing, "_local", threading.local())  # a fresh buffer, from the twin
    assert hashing.hash_file(str(p), st.st_size, st.st_mtime_ns) == fast


def test_a_posix_only_function_without_fork_is_a_clear_bug(monkeypatch):
    monkeypatch.setattr(portable, "FORK", False)
    assert not forked.available() and not forked.quiet()
    with pytest.raises(RuntimeError, match="needs fork"):
        forked._start(lambda: iter(()), None)
    # and the listing is made here instead
    assert list(forked.rows(lambda: iter([[(b"a",)], [(b"b",)]]))) == [(b"a",), (b"b",)]


@pytest.fixture
def no_dir_fd(monkeypatch):
    monkeypatch.setattr(safepath, "DIR_FD", False)
    monkeypatch.setattr(safepath, "NOFOLLOW", 0)


def test_checked_dirs_refuse_a_symlinked_folder(no_dir_fd, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, root / "a" / "b")
    with pytest.raises(safepath.SymlinkInPath):
        safepath.open_parent(str(root), "a/b/c.txt", create=True)
    with pytest.raises(safepath.SymlinkInPath):
        safepath.open_dir(str(root), "a/b", create=True)
    assert list(outside.iterdir()) == []
    with safepath.open_parent(str(root), "a/new/c.txt", create=True) as p:
        assert p.fd is None and p.target == os.path.join(str(root), "a", "new", "c.txt")
    (root / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        safepath.open_parent(str(root), "file/c.txt")
    with pytest.raises(FileNotFoundError):
        safepath.open_parent(str(tmp_path / "missing"), "c.txt")


def test_checked_dirs_catch_a_folder_swapped_for_a_link_before_use(no_dir_fd, monkeypatch, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()

    def swap(rel: str) -> None:
        if rel == "a":
            os.rmdir(root / "a")
            os.symlink(outside, root / "a")

    monkeypatch.setattr(safepath, "before_open", swap)
    with pytest.raises(safepath.SymlinkInPath):
        safepath.open_parent(str(root), "a/c.txt", create=True)


def test_open_file_twin_refuses_a_link_and_a_file_swapped_while_opening(no_dir_fd, monkeypatch, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_bytes(b"secret")
    os.symlink(tmp_path / "secret", root / "link")
    with safepath.open_parent(str(root), "link") as p, pytest.raises(OSError) as caught:
        safepath.open_file(p, p.name, os.O_RDONLY)
    assert caught.value.errno == errno.ELOOP

    (root / "plain").write_bytes(b"plain")
    real_lstat = os.lstat

    def lstat_then_swap(path, *args, **kwargs):
        s = real_lstat(path, *args, **kwargs)
        if str(path).endswith("plain"):
            os.unlink(path)
            os.symlink(tmp_path / "secret", path)
        return s

    monkeypatch.setattr(safepath.os, "lstat", lstat_then_swap)
    with safepath.open_parent(str(root), "plain") as p, pytest.raises(OSError, match="replaced"):
        safepath.open_file(p, p.name, os.O_RDONLY)


def test_junctions_and_symlinks_are_links_other_reparse_points_are_not():
    folder = 0o040755
    assert safepath.is_link(os.stat_result((0o120777,) + (0,) * 9))
    junction = SimpleNamespace(st_mode=folder, st_reparse_tag=safepath.IO_REPARSE_TAG_MOUNT_POINT)
    win_link = SimpleNamespace(st_mode=folder, st_reparse_tag=safepath.IO_REPARSE_TAG_SYMLINK)
    onedrive = SimpleNamespace(st_mode=folder, st_reparse_tag=0x9000001A)  # IO_REPARSE_TAG_CLOUD_1
    assert safepath.is_link(junction) and safepath.is_link(win_link)
    assert not safepath.is_link(onedrive)
    assert not safepath.is_link(SimpleNamespace(st_mode=folder))


def test_every_file_of_the_portable_pass_exists():
    """scripts/test names the files of its second pass: a renamed one would
    fail only at the end of a CI run"""
    script = (Path(__file__).parent.parent / "scripts" / "test").read_text()
    second = script[script.index("RECONCILE_PORTABLE=1 exec"):]
    files = re.findall(r"tests/\w+\.py", second)
    assert "tests/test_portable.py" in files and "tests/test_conformance.py" in files
    assert [f for f in files if not (Path(__file__).parent.parent / f).is_file()] == []


# What Windows looks like to the capability probes: the calls they check for
# are not there at all. (Code under a sys.platform test keeps its Linux branch
# here; test_portable_calls.py checks those branches are guarded.)
WITHOUT_POSIX_CALLS = """
import mmap, os, runpy, sys
for name in ("fork", "pread", "preadv", "pwrite", "pwritev", "sendfile", "O_NOFOLLOW", "O_DIRECTORY",
             "sched_getaffinity", "sysconf"):
    if hasattr(os, name):
        delattr(os, name)
os.supports_dir_fd = set()
for name in ("MAP_PRIVATE", "MAP_ANONYMOUS"):
    if hasattr(mmap, name):
        delattr(mmap, name)
try:
    import fcntl
    del fcntl.fcntl  # flock stays: the run lock's Windows twin (msvcrt.locking) cannot run here
except ImportError:
    pass  # Windows
sys.argv[0] = "reconcile"
runpy.run_module("reconcile", run_name="__main__", alter_sys=True)
"""


def run_without_posix_calls(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-c", WITHOUT_POSIX_CALLS, *args], capture_output=True, text=True,
                       env=full_env, errors="replace")
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.mark.parametrize("kind", ["local", "sftp", "s3"])
def test_the_command_line_mirrors_with_the_posix_calls_deleted(kind, request, tmp_path):
    dest = request.getfixturevalue(f"{kind}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(40):
        write(src / f"d{i % 4}" / f"f{i}.bin", os.urandom(100 + 1000 * i), T0 + i * 10**9)
    args = [str(src), dest.url, "--state-dir", str(state), *dest.cli_args]
    p = run_without_posix_calls("apply", *args, env=dest.env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = open_remote(dest.url, dest.options)
    try:
        listed = {e.path: e.size for e in r.list() if e.kind == FILE}
    finally:
        r.close()
    assert listed == {path: len(v[1]) for path, v in tree(src).items() if v[0] == "f"}
    os.rename(src / "d0" / "f0.bin", src / "d1" / "moved.bin")
    p = run_without_posix_calls("apply", *args, env=dest.env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert run_without_posix_calls("plan", *args, env=dest.env).returncode == 0


@pytest.mark.skipif(not portable.SIMULATED, reason="checks the second pass of scripts/test "
                    "(RECONCILE_PORTABLE=1), which runs it")
def test_the_portable_pass_runs_the_twins(monkeypatch, s3_dest, sftp_dest, local_dest, tmp_path):
    assert not (portable.FORK or portable.PREAD or portable.DIR_FD or portable.NOFOLLOW
                or portable.SENDFILE or portable.PROC or portable.MAP_PRIVATE)
    assert not forked.available()
    forks = []
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or pytest.fail("forked in the portable pass"))
    monkeypatch.setattr(hashing, "_local", threading.local())  # buffers made in this test
    portable.used.clear()
    src = tmp_path / "src"
    for i in range(30):
        write(src / f"d{i % 3}" / f"f{i}.bin", os.urandom(2000 + i), T0)
    write(src / "big.bin", os.urandom(5 << 20), T0)  # sent in ranges over SFTP
    want = {path: v[1] for path, v in tree(src).items() if v[0] == "f"}
    twins = {"local": ("checked_dirs", "open_file", "copy_loop"), "sftp": ("pread",), "s3": ("pread",)}
    for dest in (local_dest, sftp_dest, s3_dest):
        portable.used.clear()
        run(src, dest.url, tmp_path / f"state-{dest.kind}", options=dest.options)
        r = open_remote(dest.url, dest.options)
        try:
            assert {e.path: e.size for e in r.list() if e.kind == FILE} == {p: len(d) for p, d in want.items()}
            r.download("d0/f0.bin", str(tmp_path / "back.bin"))
            assert (tmp_path / "back.bin").read_bytes() == want["d0/f0.bin"]
        finally:
            r.close()
        for twin in twins[dest.kind] + ("read_buffer",) * (dest.kind == "local"):
            assert portable.used[twin] > 0, (dest.kind, twin, dict(portable.used))
    assert forks == []

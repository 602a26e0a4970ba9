"""A forked listing child can never hang a run (docs/testing.md, "Found": a
forked SFTP lister hung once on a lock another thread held at the fork).

A fork copies only the forking thread; a lock another thread holds at that
moment stays held in the child forever. forked.rows forks only while no
other thread runs (threads parked at its gate excepted) and lists in this
process otherwise; a child that sends nothing for forked.SILENCE is killed
and the listing is done here instead. The SFTP cases run in a subprocess
against the real sshd, so a hang fails the test (the subprocess timeout is a
guard, not a measure) instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconcile import forked
from reconcile.entry import FILE
from reconcile.errors import Transient
from reconcile.remotes.local import LocalRemote
from reconcile.spool import walk_while_waiting
from reconcile.walk import walk_rows
from tests.servers_sftp import sftp_url
from tests.test_sftp_listing import count_forks, wait_until_quiet

needs_fork = pytest.mark.skipif(not forked.available(), reason="the forked listing is Linux-only, two cores")
T0 = 1_600_000_000_000_000_000
HANG_GUARD = 120  # seconds; only a hung listing comes near it

# Runs in a fresh interpreter: another thread holds a lock the listing's own
# path takes (here: the connect, through a wrapper that takes it first) from
# before the listing starts until the fork is done, or a while. A child
# forked meanwhile inherits the lock held, by a thread it does not have.
SCRIPT = r"""
import json, logging, os, sys, threading
from reconcile import forked
from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.sftp import SftpRemote, listing

listing.FORK_LIST_FROM = 0  # a child lists whatever the tree's size
url, key, kh, net_only = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "net-only"
held = threading.Lock()
took, forked_now = threading.Event(), threading.Event()
real_connect, real_fork = SftpRemote._connect, os.fork
forks, warnings = [], []

def connect(self):
    with held:
        pass
    return real_connect(self)

def fork():
    pid = real_fork()
    if pid:
        forks.append(pid)
        forked_now.set()
    return pid

def holder():
    with held:
        took.set()
        forked_now.wait(3)  # a child forked now keeps the lock held forever

class Warnings(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

SftpRemote._connect = connect
forked.os.fork = fork
logging.getLogger("reconcile.forked").addHandler(Warnings())
if net_only:  # as if the check before the fork missed the thread: the parent's net must catch it
    forked._alone = lambda: True
    forked.SILENCE = 3.0
threading.Thread(target=holder, daemon=True).start()
took.wait()
remote = SftpRemote.from_url(url, RemoteOptions(sftp=SftpOptions(key=key, known_hosts=kh)))
rows = [r[0].decode() for r in remote.list_rows()]
remote.close()
left = []
for pid in forks:  # every child reaped: none left hung
    try:
        os.kill(pid, 0)
        left.append(pid)
    except ProcessLookupError:
        pass
print(json.dumps({"rows": rows, "forks": len(forks), "left": left, "warnings": warnings}))
"""


def run_listing(sshd_server, tmp_path: Path, net_only: bool) -> dict:
    root = tmp_path / "sftp-root"
    (root / "d").mkdir(parents=True)
    for name in ("a", "d/b", "d/c"):
        (root / name).write_bytes(b"x")
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    env = {**os.environ, "RECONCILE_SSH_CONFIG": str(tmp_path / "no-ssh-config")}
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, sftp_url(sshd_server, root), sshd_server.user_key,
                             kh, "net-only" if net_only else "whole"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).parent.parent, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung child too
        proc.communicate()
        pytest.fail("the listing hung: a child forked with the lock held never finished")
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.splitlines()[-1])
    assert out["rows"] == ["a", "d/", "d/b", "d/c"]
    assert out["left"] == []
    return out


@needs_fork
def test_with_another_thread_running_the_sftp_listing_runs_here(sshd_server, tmp_path):
    out = run_listing(sshd_server, tmp_path, net_only=False)
    assert out["forks"] == 0  # another thread ran: no child, the listing in this process
    assert out["warnings"] == []


@needs_fork
def test_a_child_stuck_on_a_lock_held_at_the_fork_is_killed_and_the_listing_done_here(sshd_server, tmp_path):
    out = run_listing(sshd_server, tmp_path, net_only=True)
    assert out["forks"] == 1  # forked with the lock held: the child hung on it
    assert any("sent nothing" in w and "listing here instead" in w for w in out["warnings"])


def row(name: bytes) -> tuple:
    return (name, FILE, 1, T0, 1, 1, 0o644, None, None, None)


@needs_fork
def test_a_child_that_goes_silent_after_its_first_rows_is_killed_and_transient(monkeypatch):
    monkeypatch.setattr(forked, "SILENCE", 1.0)

    def produce():
        yield [row(str(os.getpid()).encode())] * forked.BATCH
        time.sleep(3600)
        yield []

    it = forked.rows(produce, here=lambda: pytest.fail("rows already handed out: no listing here"))
    pid = int(next(it)[0])
    with pytest.raises(Transient, match="no progress"):
        list(it)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped


@needs_fork
def test_a_child_waiting_on_a_slow_server_says_it_is_alive(monkeypatch):
    monkeypatch.setattr(forked, "SILENCE", 2.0)
    monkeypatch.setattr(forked, "HEARTBEAT", 0.1)

    def produce():
        end = time.monotonic() + 3 * forked.SILENCE
        while time.monotonic() < end:  # a server sorting a big tree: nothing to send yet
            forked.alive()
            time.sleep(0.05)
        yield [row(b"late")]

    assert list(forked.rows(produce, here=lambda: pytest.fail("a live child was taken for stuck"))) == [row(b"late")]


@needs_fork
def test_the_walk_ahead_thread_parks_so_the_listing_still_forks(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for d in (src, dst):
        (d / "sub").mkdir(parents=True)
        for i in range(3000):  # several chunks of the walk-ahead
            (d / "sub" / f"f{i:04d}").write_bytes(b"x")
    wait_until_quiet()
    forks = count_forks(monkeypatch)
    from reconcile.excludes import Excludes
    from reconcile.walk import WalkReport

    walked, listed = walk_while_waiting(walk_rows(str(src), Excludes([]), WalkReport(), "skip"),
                                        LocalRemote(str(dst)).list_rows(), None)
    assert [r[0] for r in listed] == [r[0] for r in walked]
    assert len(forks) == 1  # the walk-ahead thread ran, parked at the gate: still forked


@needs_fork
def test_with_another_thread_running_no_upload_child_is_forked(sftp_dest, tmp_path, monkeypatch):
    import threading

    from reconcile import apply
    from tests.mirror import run, tree
    from tests.test_sftp_batch import make_src
    from tests.test_upload_child import pids_uploading

    monkeypatch.setattr(apply, "FORK_SMALL_FROM", 20)
    src, state, root = tmp_path / "src-tree", tmp_path / "state", tmp_path / "sftp-root"
    make_src(src, 200, seed=21)
    pids = pids_uploading(monkeypatch, tmp_path)
    done = threading.Event()
    other = threading.Thread(target=done.wait, daemon=True)  # may hold any lock at a fork
    other.start()
    try:
        result = run(src, sftp_dest.url, state, options=sftp_dest.options)
    finally:
        done.set()
        other.join()
    assert result.outcome.complete
    assert set(pids.read_text().split()) == {str(os.getpid())}  # all sent from here: no child
    assert tree(root) == tree(src)


@needs_fork
def test_a_child_busy_on_one_huge_folder_is_not_taken_for_stuck(monkeypatch):
    monkeypatch.setattr(forked, "SILENCE", 1.0)

    def produce():
        end = time.monotonic() + 3 * forked.SILENCE
        n = 0
        while time.monotonic() < end:  # working (as on a slow disk), nothing to send yet
            n += 1
        yield [row(b"busy")]

    assert list(forked.rows(produce, here=lambda: pytest.fail("a busy child was taken for stuck"))) == [row(b"busy")]

"""reconcile watch on real destinations (local folder, sshd, SeaweedFS):
changes arrive as they happen, through the same runs as apply."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kill import start_stalled
from tests.servers_sftp import TcpProxy, sftp_url
from tests.watching import FAST, Watcher, tree_files, wait_dest


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "first.txt").write_bytes(b"there before the watch")
    return root


def test_changes_arrive_and_a_folder_rename_is_one_move(src, dest, tmp_path):
    """small file, folder rename (one move, from the snapshot's inodes),
    mkdir -p + copy, a burst of files, a delete: each reaches the remote"""
    album = src / "album"
    album.mkdir()
    for i in range(20):
        (album / f"p{i}.jpg").write_bytes(b"photo %d" % i)
    w = Watcher(src, dest, tmp_path / "state", tmp_path / "watch.log", ["--delete"])
    try:
        wait_dest(dest, tree_files(src), w)  # the start-up run

        (src / "new.txt").write_bytes(b"saved at 10:01")
        wait_dest(dest, tree_files(src), w)

        before = w.text()
        album.rename(src / "album-2024")
        wait_dest(dest, tree_files(src), w)
        after = w.wait_log(lambda t: "ok: " in t[len(before):])[len(before):]  # the run's summary
        assert "done: move dir album/ -> album-2024" in after and "ok: 1 done" in after, after
        assert "upload" not in after, after

        staged = tmp_path / "staged"
        for d in range(5):
            (staged / f"d{d}" / "deeper").mkdir(parents=True)
            for i in range(40):
                (staged / f"d{d}" / "deeper" / f"f{i}").write_bytes(b"x" * (i + d))
        shutil.copytree(staged, src / "a" / "b" / "c")  # mkdir -p, then the files at once
        (src / "first.txt").unlink()
        wait_dest(dest, tree_files(src), w)
    finally:
        assert w.stop() == 0
    state = json.loads((tmp_path / "state" / "watch.json").read_text())
    assert state["state"] == "stopped" and state["last_run"]["result"] == "ok"
    assert oct((tmp_path / "state" / "watch.json").stat().st_mode & 0o777) == "0o600"


def test_excluded_changes_start_no_run_and_are_not_sent(src, local_dest, tmp_path):
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log",
                ["--exclude", "*.tmp", "--exclude", "cache/"])
    try:
        wait_dest(local_dest, tree_files(src), w)
        runs = w.runs()
        (src / "cache").mkdir()
        (src / "cache" / "blob").write_bytes(b"c")
        (src / "draft.tmp").write_bytes(b"d")
        time.sleep(2)  # well past the quiet period: a run the excluded changes started would be in the log
        (src / "kept.txt").write_bytes(b"k")
        wait_dest(local_dest, {"first.txt": b"there before the watch", "kept.txt": b"k"}, w)
        w.wait_log(lambda t: sum(1 for x in t.splitlines() if x.startswith("ok: ")) >= runs + 1)
        assert w.runs() == runs + 1, w.text()
    finally:
        w.stop()


def test_a_file_written_slowly_is_sent_once_complete(src, local_dest, tmp_path):
    # --max-wait well above the writing time: the open file, not the hard maximum, holds the run
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--max-wait", "60s"])
    try:
        wait_dest(local_dest, tree_files(src), w)
        with open(src / "slow.bin", "wb") as f:
            for i in range(10):  # about 5 s, with pauses longer than the quiet period
                f.write(bytes([i]) * 1000)
                f.flush()
                time.sleep(0.5 if i % 3 else 0.8)
        wait_dest(local_dest, tree_files(src), w)
        w.wait_log(lambda t: "slow.bin" in t)
    finally:
        w.stop()
    uploads = [line for line in w.text().splitlines() if line.startswith("done: upload") and "slow.bin" in line]
    assert len(uploads) == 1, w.text()


def test_killed_during_a_triggered_run_loses_nothing(src, dest, tmp_path):
    """SIGKILL while the run the events started is half way; a new watch
    resumes the journal and its start-up run catches up"""
    state = tmp_path / "state"
    w = Watcher(src, dest, state, tmp_path / "watch.log")
    wait_dest(dest, tree_files(src), w)
    assert w.stop() == 0

    marker = tmp_path / "stall"
    stalled = start_stalled([sys.executable, "-m", "reconcile", "watch", str(src), dest.url, *dest.cli_args,
                             "--state-dir", str(state), *FAST], "op:2", state, marker, env=dest.env)
    try:
        for i in range(30):
            (src / f"n{i}.txt").write_bytes(b"new %d" % i)
        stalled.wait()
        stalled.kill()
    finally:
        if stalled.child.poll() is None:
            stalled.child.kill()
    (src / "after-kill.txt").write_bytes(b"written while nothing watched")
    w = Watcher(src, dest, state, tmp_path / "watch2.log")
    try:
        wait_dest(dest, tree_files(src), w)
        w.wait_log(lambda t: "resuming an unfinished run" in t)
    finally:
        w.stop()


def test_sigterm_during_a_run_stops_it_and_the_next_start_finishes(src, local_dest, tmp_path):
    state = tmp_path / "state"
    w = Watcher(src, local_dest, state, tmp_path / "watch.log", ["--bwlimit", "2M"])
    try:
        wait_dest(local_dest, tree_files(src), w)
        (src / "big.bin").write_bytes(os.urandom(40 << 20))  # 20 s at 2M/s
        w.wait_log(lambda t: t.count("ok: ") >= 1 and os.path.exists(state / "journal.msgpack"))
    finally:
        rc = w.stop(idle=False)
    assert rc == 130
    assert "big.bin" not in os.listdir(local_dest.url)  # never a partial file under its real name
    w = Watcher(src, local_dest, state, tmp_path / "watch2.log")
    try:
        wait_dest(local_dest, tree_files(src), w)
    finally:
        assert w.stop() == 0


def test_remote_down_then_back(src, sshd_server, tmp_path):
    """the link drops: the watch keeps the changes, retries without spinning,
    and one run catches up when the server answers again"""
    from tests.conftest import Dest

    proxy = TcpProxy(sshd_server.port)
    try:
        root = tmp_path / "sftp-root"
        root.mkdir()
        kh = sshd_server.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
        dest = Dest("sftp", sftp_url(sshd_server, root, port=proxy.port), None,
                    cli_args=["--ssh-key", sshd_server.user_key, "--known-hosts", kh, "--retry-for", "2s"])
        w = Watcher(src, dest, tmp_path / "state", tmp_path / "watch.log")
        try:
            wait_dest(dest, tree_files(src), w)
            proxy.refuse(True)
            proxy.drop_all()
            for i in range(10):
                (src / f"offline{i}.txt").write_bytes(b"while the NAS slept %d" % i)
            w.wait_log(lambda t: "retrying" in t or "error" in t.lower() or "partial:" in t)
            w.wait_log(lambda t: "run ended" in (tmp_path / "state" / "watch.json").read_text())
            proxy.refuse(False)
            wait_dest(dest, tree_files(src), w)
        finally:
            assert w.stop() == 0
    finally:
        proxy.close()


def test_a_triggered_run_walks_only_what_changed_until_the_full_rescan(src, local_dest, tmp_path):
    """a file changed where no event reports it (through a hard link from
    outside the source) is not seen by the runs events start, which walk only
    the changed paths; the periodic full rescan finds it and the copy is exact"""
    (src / "a").mkdir()
    inside = src / "a" / "linked.txt"
    inside.write_bytes(b"old")
    outside = tmp_path / "elsewhere.txt"
    os.link(inside, outside)
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--full-rescan", "40s"])
    try:
        wait_dest(local_dest, tree_files(src), w)
        outside.write_bytes(b"changed without an event in the source")
        (src / "b.txt").write_bytes(b"an event")
        wait_dest(local_dest, {"b.txt": b"an event"}, w, exact=False)
        if "full rescan" not in w.text():  # a slow machine may have reached it already
            assert (Path(local_dest.url) / "a" / "linked.txt").read_bytes() == b"old", w.text()
        wait_dest(local_dest, tree_files(src), w, timeout=180)  # the full rescan: 30 to 50 s in
        assert "full rescan" in w.text()
    finally:
        w.stop()


def test_the_watchdog_watcher_works_too(src, local_dest, tmp_path):
    """macOS and Windows use watchdog: on Linux it runs through its inotify observer"""
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", env={"RECONCILE_WATCHER": "watchdog"})
    try:
        wait_dest(local_dest, tree_files(src), w)
        (src / "d" / "e").mkdir(parents=True)
        (src / "d" / "e" / "f.txt").write_bytes(b"f")
        (src / "g.txt").write_bytes(b"g")
        wait_dest(local_dest, tree_files(src), w)
    finally:
        assert w.stop() == 0
    state = json.loads((tmp_path / "state" / "watch.json").read_text())
    assert state["watcher"] == "PortableWatcher"


def _sysctl(name: str, value: int | None = None) -> int:
    path = Path("/proc/sys/fs/inotify") / name
    old = int(path.read_text())
    if value is not None:
        path.write_text(str(value))
    return old


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering fs.inotify.max_queued_events needs root (CI runs as root)")
def test_queue_overflow_loses_nothing(src, local_dest, tmp_path):
    """with the kernel's event queue lowered to 64, 20,000 new files overflow
    it: the watcher hears IN_Q_OVERFLOW, rescans everything, all arrive"""
    old = _sysctl("max_queued_events", 64)  # read when the watcher starts its inotify instance
    try:
        w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--max-wait", "3s"])
        wait_dest(local_dest, tree_files(src), w)  # it watches (with the low limit) before the first run
    finally:
        _sysctl("max_queued_events", old)  # the machine is shared: restore at once
    try:
        for d in range(20):
            folder = src / f"batch{d}"
            folder.mkdir()
            for i in range(1000):
                (folder / f"f{i}").write_bytes(b"%d/%d" % (d, i))
        wait_dest(local_dest, tree_files(src), w, timeout=300)
        assert "event queue overflowed" in w.text()
    finally:
        w.stop()


def test_folders_that_cannot_be_watched_are_rescanned(src, local_dest, tmp_path):
    """out of inotify watches (the limit lowered to 4 in a user namespace of
    the watcher's own, so the machine's limit is untouched): the folders
    without a watch are named, rescanned on the timer, and nothing is lost"""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    for d in range(12):
        (src / f"folder{d}").mkdir()
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--rescan-unwatched", "2s"],
                wrap=["unshare", "-U", "-r", "sh", "-c", 'echo 4 > /proc/sys/user/max_inotify_watches && exec "$@"',
                      "sh"])
    try:
        wait_dest(local_dest, tree_files(src), w)
        for d in range(12):
            (src / f"folder{d}" / "new.txt").write_bytes(b"in folder %d" % d)
        wait_dest(local_dest, tree_files(src), w)
        assert "cannot watch folder" in w.text() and "max_user_watches" in w.text()
    finally:
        w.stop()
    state = json.loads((tmp_path / "state" / "watch.json").read_text())
    assert "max_user_watches" in state["last_error"]


def test_watch_all_mirrors_every_mapping(tmp_path):
    """one process watches each mapping of the config file; each run is logged under its name"""

    cfg = tmp_path / "config.toml"
    pairs = {}
    text = ""
    for name in ("photos", "docs"):
        s, d = tmp_path / f"{name}-src", tmp_path / f"{name}-dst"
        s.mkdir()
        (s / "old.txt").write_bytes(name.encode())
        pairs[name] = (s, d)
        text += f'[mapping.{name}]\nsource = "{s}"\ndest = "{d}"\nstate_dir = "{tmp_path / name}-state"\n'
    cfg.write_text(text)
    log, err = tmp_path / "watch.log", tmp_path / "stderr"
    with open(err, "wb") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "reconcile", "watch", "--all", "--config", str(cfg),
                                 "--quiet-for", "0.3s", "--log-file", str(log)],
                                stdout=subprocess.DEVNULL, stderr=errf)
    try:
        for name, (s, d) in pairs.items():
            (s / "sub").mkdir()
            (s / "sub" / "new.txt").write_bytes(b"new in " + name.encode())
        deadline = time.monotonic() + 120
        while any(tree_files(s) != (tree_files(d) if d.exists() else {}) for s, d in pairs.values()):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"watch did not stop on SIGTERM:\n{err.read_text()}") from None
    text = log.read_text()
    assert "apply photos" in text and "apply docs" in text, text


def test_a_source_missing_at_start_is_watched_once_it_appears(tmp_path, local_dest):
    """an unmounted disk: the start-up run refuses (nothing deleted), the
    watcher keeps trying, and once the folder is there its changes arrive"""
    src = tmp_path / "not-mounted-yet"
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--rescan-unwatched", "1s"])
    try:
        w.wait_log(lambda t: "does not exist" in t)
        src.mkdir()
        (src / "first.txt").write_bytes(b"1")
        wait_dest(local_dest, tree_files(src), w)
        w.wait_log(lambda t: "ok: " in t)
        (src / "second.txt").write_bytes(b"2")  # seen through the watch on the new folder
        wait_dest(local_dest, tree_files(src), w)
    finally:
        w.stop(idle=False)


def test_the_watchdog_watcher_waits_for_a_missing_source(tmp_path, local_dest):
    """the watcher of macOS and Windows (watchdog) on a source not mounted
    yet: it said 'internal error: RuntimeError: cannot join thread before it
    is started' and exited; now it waits, and once the folder is there its
    changes arrive, a new folder's too"""
    src = tmp_path / "not-mounted-yet"
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log", ["--rescan-unwatched", "1s"],
                env={"RECONCILE_WATCHER": "watchdog"})
    try:
        w.wait_log(lambda t: "does not exist" in t)
        src.mkdir()
        (src / "first.txt").write_bytes(b"1")
        wait_dest(local_dest, tree_files(src), w)
        (src / "sub").mkdir()
        (src / "sub" / "second.txt").write_bytes(b"2")
        wait_dest(local_dest, tree_files(src), w)
    finally:
        w.stop(idle=False)
    assert "internal error" not in w.text() and "full rescan" not in w.text(), w.text()

"""reconcile watch on a source that is a mount point (a USB disk): when the
disk is unmounted and the bare mount-point folder is left, the pair pauses
with an error in the log and status, and nothing is deleted; once a disk is
mounted there again the watch resumes with a whole rescan. Real mounts
(tmpfs; the tests run as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from reconcile.engine import Run, RunOptions
from reconcile.errors import SafetyRefusal
from reconcile.report import ApplyReporter
from tests.storage import read_dest
from tests.watching import Watcher, tree_files, wait_dest


def _mount(kind: str, what: str, where) -> None:
    args = ["-t", "tmpfs", "-o", "size=8m", "tmpfs"] if kind == "tmpfs" else ["--bind", what]
    subprocess.run(["mount", *args, str(where)], check=True)


@pytest.fixture
def folders(tmp_path):
    made = [tmp_path / "disk", tmp_path / "disk-again"]
    for m in made:
        m.mkdir()
    yield made
    for m in made:
        while os.path.ismount(m):
            subprocess.run(["umount", "-l", str(m)], check=False)


def test_an_unmounted_source_pauses_the_watch_and_deletes_nothing(folders, local_dest, tmp_path):
    mount_point, again = folders
    # the bare folder holds files of its own, as a mount point written to while its disk was away can;
    # with --max-delete 100 no other guard stops a run from mirroring them over the disk's files
    for i in range(12):
        (mount_point / f"stray{i}.txt").write_bytes(b"under the mount point")
    _mount("tmpfs", "", mount_point)
    disk = {f"photo{i}.jpg": b"photo %d" % i for i in range(10)}
    for name, data in disk.items():
        (mount_point / name).write_bytes(data)
    state = tmp_path / "state"
    w = Watcher(mount_point, local_dest, state, tmp_path / "watch.log", ["--delete", "--max-delete", "100"])
    try:
        wait_dest(local_dest, disk, w)
        w.wait_idle()
        subprocess.run(["umount", str(mount_point)], check=True)
        (mount_point / "stray0.txt").write_bytes(b"written while the disk was away")
        w.wait_log(lambda t: "no longer on the disk" in t)
        time.sleep(3)  # a run that mirrored the bare folder would have deleted by now
        assert read_dest(local_dest).files == disk, w.text()
        doc = json.loads((state / "watch.json").read_text())
        assert doc["state"] == "off-disk" and "no longer on the disk" in doc["last_error"], doc
        status = subprocess.run([sys.executable, "-m", "reconcile", "status", str(mount_point), local_dest.url,
                                 "--state-dir", str(state)], capture_output=True, text=True)
        assert "paused: the source's disk is not mounted" in status.stdout, status.stdout + status.stderr

        # a disk back at the mount point, under a new device number (plugged in again), its content whole
        _mount("tmpfs", "", again)
        for name, data in disk.items():
            (again / name).write_bytes(data)
        (again / "new.jpg").write_bytes(b"taken while it was away")
        _mount("bind", str(again), mount_point)
        wait_dest(local_dest, {**disk, "new.jpg": b"taken while it was away"}, w)
        w.wait_log(lambda t: "back on its disk" in t)
        (mount_point / "after.jpg").write_bytes(b"watched again")  # the new watches see it
        wait_dest(local_dest, tree_files(mount_point), w)
    finally:
        w.stop(idle=False)
    assert "stray" not in w.text().split("back on its disk")[0].split("no longer on the disk")[-1]


def test_a_run_refuses_a_source_on_another_device(tmp_path):
    """the engine's own check, for a run the watcher started just before the
    disk went away: after the plan, before anything is carried out"""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / "a.txt").write_bytes(b"a")
    (dest / "old.txt").write_bytes(b"old")
    opts = RunOptions(delete=True, max_delete=10, state_dir=str(tmp_path / "state"),
                      source_dev=os.stat(src).st_dev + 1)
    run = Run(str(src), str(dest), opts, ApplyReporter(quiet=True))
    try:
        with pytest.raises(SafetyRefusal, match="no longer on the disk"):
            run.apply()
    finally:
        run.close()
    assert sorted(os.listdir(dest)) == ["old.txt"]

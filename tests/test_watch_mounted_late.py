"""reconcile watch started before its source's disk is mounted (a service
started at boot, the USB disk automounted later): the start-up run finds the
bare mount-point folder and is refused (empty source, the remote holds
files); once the disk is mounted on that folder, the retry must take the
disk as the source, not pause the pair as 'no longer on the disk it was on'
for good. Real mounts (tmpfs; the tests run as root)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.cli import reconcile
from tests.watching import Watcher, wait_dest


@pytest.fixture
def mount_point(tmp_path):
    folder = tmp_path / "USBDISK"
    folder.mkdir()
    yield folder
    while os.path.ismount(folder):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _mount_disk(folder, files: dict[str, bytes]) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], check=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_a_disk_mounted_after_the_watch_started_is_watched_not_paused(mount_point, local_dest, tmp_path):
    state = tmp_path / "state"
    disk = {f"photo{i}.jpg": b"photo %d" % i for i in range(6)}
    _mount_disk(mount_point, disk)
    reconcile("apply", mount_point, local_dest.url, "--state-dir", state, check=0)  # an earlier backup
    subprocess.run(["umount", str(mount_point)], check=True)  # the machine restarts without the disk

    w = Watcher(mount_point, local_dest, state, tmp_path / "watch.log", ["--delete"])
    try:
        w.wait_log(lambda t: "is empty but the remote holds" in t)  # the start-up run, refused
        _mount_disk(mount_point, {**disk, "new.jpg": b"taken since"})  # automounted a little later
        wait_dest(local_dest, {**disk, "new.jpg": b"taken since"}, w, timeout=60)
        (mount_point / "after.jpg").write_bytes(b"watched")  # the disk's own folder is watched now
        wait_dest(local_dest, {**disk, "new.jpg": b"taken since", "after.jpg": b"watched"}, w, timeout=60)
    finally:
        w.stop(idle=False)
    assert "no longer on the disk" not in w.text(), w.text()

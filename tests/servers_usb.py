"""Real USB-disk file systems for the tests: exFAT and NTFS images on loop
devices, mounted through FUSE (exfat-fuse, ntfs-3g), as
docs/design-notes.md "Real destinations and real links" describes.

Each image is made and mounted once per session and unmounted and detached
at the end, even when tests fail. A machine that cannot mount them (no
/dev/fuse, not root, tools missing) skips these tests with the reason; under
CI=true that is a failure instead: CI must run them (scripts/test installs
exfatprogs, exfat-fuse and ntfs-3g).

FAT32 is not here: this kernel has no vfat driver and Debian's fusefat does
not mount, so the FAT32-only cases (2 s times, the 4 GiB limit) cannot run
on a real FAT32 disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from reconcile.remotes.base import RemoteOptions

IMAGE_SIZE = "512M"
TOOLS = {
    "exfat": (["mkfs.exfat"], "mount.exfat-fuse", "exfatprogs and exfat-fuse"),
    "ntfs": (["mkfs.ntfs", "-F", "-Q"], "ntfs-3g", "ntfs-3g"),
    # not a USB disk: a NAS or Linux disk whose file system shares blocks (reflink), kernel-mounted
    "xfs": (["mkfs.xfs", "-q", "-m", "reflink=1"], "mount", "xfsprogs"),
}


@dataclass
class UsbDisk:
    fs: str  # exfat | ntfs | xfs
    image: Path
    device: str
    mount: Path

    def fresh_folder(self) -> Path:
        """an empty folder of its own on the disk, for one test."""
        p = self.mount / f"t-{uuid.uuid4().hex[:10]}"
        p.mkdir()
        return p

    def remount(self) -> None:
        """unmount and mount again: what the disk really keeps, not what FUSE holds in memory."""
        unmount(self.mount)
        _mount(self.fs, self.device, self.mount)


def cannot_mount(reason: str) -> None:
    message = f"USB-disk file systems cannot be mounted here: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run these tests: run scripts/test as root on a machine with FUSE)")
    pytest.skip(message)


def _check_machine(fs: str) -> None:
    mkfs, mounter, packages = TOOLS[fs]
    if os.geteuid() != 0:
        cannot_mount("loop devices and mounts need root")
    if fs != "xfs" and not os.path.exists("/dev/fuse"):
        cannot_mount("/dev/fuse is missing (no FUSE in this kernel or container)")
    for tool in (mkfs[0], mounter, "losetup"):
        if not shutil.which(tool):
            cannot_mount(f"{tool} is not installed (apt-get install {packages})")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def _mount(fs: str, device: str, mount: Path) -> None:
    _run([TOOLS[fs][1], device, str(mount)])
    deadline = time.monotonic() + 10
    while not os.path.ismount(mount):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{device} did not appear mounted on {mount}")
        time.sleep(0.05)


def unmount(mount: Path) -> None:
    """unmount, retried while the mount is busy for a moment, lazily at last"""
    for _ in range(50):
        if not os.path.ismount(mount):
            return
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)  # busy for a moment after the last file closed
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def usb_disk(fs: str, base: Path) -> Iterator[UsbDisk]:
    _check_machine(fs)
    mkfs = TOOLS[fs][0]
    image, mount = base / f"{fs}.img", base / f"{fs}-mnt"
    mount.mkdir()
    _run(["truncate", "-s", IMAGE_SIZE, str(image)])
    _run(mkfs + [str(image)])
    attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if attached.returncode != 0:
        cannot_mount(f"losetup -f --show failed: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    try:
        try:
            _mount(fs, device, mount)
        except RuntimeError as exc:
            cannot_mount(str(exc))
        yield UsbDisk(fs, image, device, mount)
    finally:
        unmount(mount)
        subprocess.run(["losetup", "-d", device], capture_output=True)
        image.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def exfat_disk(tmp_path_factory) -> Iterator[UsbDisk]:
    yield from usb_disk("exfat", tmp_path_factory.mktemp("exfat"))


@pytest.fixture(scope="session")
def xfs_disk(tmp_path_factory) -> Iterator[UsbDisk]:
    yield from usb_disk("xfs", tmp_path_factory.mktemp("xfs"))


@pytest.fixture(scope="session")
def ntfs_disk(tmp_path_factory) -> Iterator[UsbDisk]:
    yield from usb_disk("ntfs", tmp_path_factory.mktemp("ntfs"))


def _dest(disk: UsbDisk, tmp_path: Path):
    from tests.conftest import Dest

    return Dest(disk.fs, str(disk.fresh_folder()), RemoteOptions(state_dir=str(tmp_path / "rstate")))


@pytest.fixture
def exfat_dest(exfat_disk, tmp_path):
    return _dest(exfat_disk, tmp_path)


@pytest.fixture
def ntfs_dest(ntfs_disk, tmp_path):
    return _dest(ntfs_disk, tmp_path)

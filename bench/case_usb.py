"""A folder on a USB stick: no-change plan of 10,000 files onto an exFAT disk
image mounted through FUSE (exfat-fuse, as a Linux desktop mounts a stick),
next to rsync -a --delete --modify-window=1 -n on the same data.

The source times carry nanoseconds, which exFAT does not keep: the case
shows the probe's precision at work (0 files planned) as well as the time.
Needs root, /dev/fuse and exfatprogs + exfat-fuse (scripts/test installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from typing import Iterator

from bench.common import ROOT, Case, Check, alternate, log, reconcile_cmd, rmtree, run_timed
from bench.data import make_tree

NS = 123_456_789  # added to every source mtime: exFAT keeps whole seconds


@contextlib.contextmanager
def exfat_mount(base: str, size: str = "1G") -> Iterator[str]:
    """an exFAT image on a loop device, mounted through FUSE; unmounted and
    detached afterwards whatever happens."""
    for tool in ("mkfs.exfat", "mount.exfat-fuse", "losetup"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is missing: apt-get install exfatprogs exfat-fuse")
    image, mount = f"{base}/exfat.img", f"{base}/mnt"
    rmtree(base)
    os.makedirs(mount)
    subprocess.run(["truncate", "-s", size, image], check=True)
    subprocess.run(["mkfs.exfat", image], check=True, capture_output=True)
    device = subprocess.run(["losetup", "-f", "--show", image], check=True, capture_output=True,
                            text=True).stdout.strip()
    try:
        subprocess.run(["mount.exfat-fuse", device, mount], check=True, capture_output=True)
        yield mount
    finally:
        for _ in range(50):
            if not os.path.ismount(mount) or subprocess.run(["umount", mount]).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(["losetup", "-d", device])
        rmtree(base)


def with_nanoseconds(root: str) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            t = os.stat(p).st_mtime_ns // 1_000_000_000 * 1_000_000_000 + NS
            os.utime(p, ns=(t, t))


def case_nochange(n: int, runs: int) -> Case:
    src = make_tree(f"{ROOT}/usb/src-{n}", n, 1, 64, 2000 + n)
    with_nanoseconds(src)
    state = f"{ROOT}/state/usb-{n}"
    case = Case("usb", f"no-change plan, {n:,} files onto exFAT (FUSE)")
    with exfat_mount(f"{ROOT}/usb/disk") as mount:
        dst = f"{mount}/Pictures"
        rmtree(state)
        log(f"usb {n:,}: first apply onto the exFAT image (untimed)")
        first = run_timed([*reconcile_cmd(), "apply", src, dst, "--delete", "--state-dir", state, "-q"])
        case.notes.append(f"untimed first `apply` onto the image: {first.seconds:.1f} s")
        ours_argv = [*reconcile_cmd(), "plan", src, dst, "--delete", "--state-dir", state, "--json"]
        rsync_argv = ["rsync", "-a", "--delete", "--modify-window=1", "-n", "--out-format=%n", src + "/", dst + "/"]
        planned = run_timed(ours_argv)
        import json

        ops = len(json.loads(planned.stdout)["operations"])
        rsync_listed = [ln for ln in run_timed(rsync_argv).stdout.splitlines() if ln and not ln.endswith("/")]
        log(f"usb {n:,}: timing")
        ours, rsync, start = alternate([("reconcile plan", ours_argv),
                                        ("rsync -n --modify-window=1", rsync_argv),
                                        ("reconcile plan --help (start-up only)", [*reconcile_cmd(), "plan", "--help"])],
                                       max(runs, 5))
        for s in (ours, rsync, start):
            case.add(s)
        case.ratio(ours, rsync, 1.0, "time vs `rsync -a --delete --modify-window=1 -n`")
        case.notes.append(f"of reconcile's {ours.median:.2f} s, {start.median:.2f} s is the interpreter and "
                          "imports alone (`plan --help`); the rest is the source walk and the disk's listing "
                          "(an lstat per file through FUSE) merged")
        case.checks.append(Check("files planned (reconcile)", str(ops), "0", ops == 0))
        case.checks.append(Check("files listed (rsync)", str(len(rsync_listed)), "—", None))
    return case


def run(n: int, runs: int) -> list[Case]:
    return [case_nochange(n, runs)]

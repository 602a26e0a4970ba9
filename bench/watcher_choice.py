"""The measurements behind reconcile watch's choice of watcher on Linux
(README "Watch"): its own inotify reader against watchdog's inotify observer.

    python -m bench.watcher_choice [FOLDERS]      # default 20,000

For each: how long watches on FOLDERS folders take to set up and the memory
they add, how soon an event reaches the program; then, with the watch limit
lowered to 14 in a user namespace of the child's own (the machine's limit is
untouched), whether files in folders made after the limit ran out are reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = r'''
import os, sys, time
kind, root = sys.argv[1], sys.argv[2]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
got, lost = [], []
def take(changes):
    for c in changes:
        (lost if c.lost else got).append(c.path)
    return changes
if kind == "reconcile":
    from reconcile.watch.inotify import InotifyWatcher
else:
    from watchdog.observers import Observer
    from watchdog.events import FileSystemEventHandler
    class H(FileSystemEventHandler):
        def dispatch(self, e): got.append(os.path.relpath(e.src_path, root))
base, t = rss(), time.perf_counter()
if kind == "reconcile":
    w = InotifyWatcher(root, lambda p, d: False)
    lost = w.watch_tree("")
else:
    o = Observer(); o.schedule(H(), root, recursive=True); o.start()
print(f"setup {time.perf_counter() - t:.2f} s, +{rss() - base:.1f} MB", flush=True)
def drain(wait):
    end = time.monotonic() + wait
    while time.monotonic() < end:
        if kind == "reconcile":
            take(w.read(0.05))
        else:
            time.sleep(0.05)
if sys.argv[3] == "latency":
    lat = []
    for i in range(20):
        got.clear()
        t0 = time.perf_counter()
        open(os.path.join(root, "a000", "b0", f"new{i}"), "w").close()
        while not got:
            if kind == "reconcile":
                take(w.read(1.0))
            else:
                time.sleep(0.0002)
        lat.append(time.perf_counter() - t0)
    print(f"event p50 {sorted(lat)[10] * 1000:.2f} ms")
else:
    for i in range(3):
        os.makedirs(os.path.join(root, f"new{i}"))
    drain(0.5)
    got.clear()
    for i in range(3):
        open(os.path.join(root, f"new{i}", "file"), "w").close()
    drain(1.0)
    told = [g for g in got if g.startswith("new")]
    print(f"files made in the 3 new folders reported: {sorted(set(told)) or 'none'}; folders reported as "
          f"unwatched: {sorted(set(lost)) or 'none'}")
'''


def main(argv: list[str]) -> int:
    folders = int(argv[0]) if argv else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        big, small = os.path.join(tmp, "big"), os.path.join(tmp, "small")
        for i in range(folders):
            os.makedirs(os.path.join(big, f"a{i // 1000:03d}", f"b{i}"))
        for i in range(12):
            os.makedirs(os.path.join(small, f"f{i}"))
        for kind in ("reconcile", "watchdog"):
            r = subprocess.run([sys.executable, "-c", CHILD, kind, big, "latency"], capture_output=True, text=True)
            print(f"{kind}: {folders:,} folders: " + r.stdout.replace("\n", "; ").strip("; "))
            for i in range(3):
                shutil.rmtree(os.path.join(small, f"new{i}"), ignore_errors=True)
            r = subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                                'echo 14 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh",
                                sys.executable, "-c", CHILD, kind, small, "limit"], capture_output=True, text=True)
            print(f"{kind}: out of watches: " + (r.stdout.strip().splitlines() or ["?"])[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

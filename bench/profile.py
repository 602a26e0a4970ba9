"""Where time goes: py-spy samples of a reconcile run, folded into tables."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field

from bench.common import ROOT, log, run_timed

FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass
class Profile:
    title: str
    command: str
    seconds: float
    samples: int = 0
    self_top: list[tuple[str, float]] = field(default_factory=list)
    incl_top: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], capture_output=True)
        found = shutil.which("py-spy")
    return found


def record(title: str, argv: list[str], env: dict | None = None, before=None) -> Profile:
    """run argv under py-spy (all threads and child processes, such as the
    forked listing; native off, 250 Hz) and fold it."""
    spy = py_spy()
    prof = Profile(title, " ".join(argv), 0.0)
    if spy is None:
        prof.error = "py-spy could not be installed"
        return prof
    if before:
        before()
    out = f"{ROOT}/profile-{len(title)}.txt"
    log(f"profiling: {title}")
    try:
        r = run_timed([spy, "record", "--subprocesses", "-r", "250", "-f", "raw", "-o", out, "--", *argv], env)
    except Exception as exc:  # py-spy may lack ptrace rights
        prof.error = str(exc).splitlines()[0][:200]
        return prof
    prof.seconds = r.seconds
    _fold(prof, out)
    return prof


def _short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("/reconcile/", "site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/reconcile/":
                path = "reconcile/" + path
            break
    return f"{m.group('fn')} ({path})"


def _fold(prof: Profile, path: str) -> None:
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in open(path, errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";") if f.strip() and not f.startswith("process ")]
        if frames:
            self_c[frames[-1]] += n
        for f in set(frames):
            incl_c[f] += n
    prof.samples = total
    if total:
        prof.self_top = [(k, 100 * v / total) for k, v in self_c.most_common(12)]
        ours = Counter({k: v for k, v in incl_c.items() if "(reconcile/" in k or k.startswith("<module> (importlib")})
        prof.incl_top = [(k, 100 * v / total) for k, v in ours.most_common(14)]

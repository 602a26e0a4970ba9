"""Run the real command line as a child process, as cron would."""

from __future__ import annotations

import os
import subprocess
import sys


def reconcile(*args, env: dict | None = None, check: int | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-m", "reconcile", *map(str, args)], capture_output=True,
                       text=True, env=full_env, errors="replace", **kw)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    return p

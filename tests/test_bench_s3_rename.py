"""The S3 rename case of the bench times every tool on the same path to the
server: reconcile straight to SeaweedFS, as aws-cli and rclone are, and its
requests counted on the wire in one more, untimed round (a proxy in the bench's
own process took CPU from the timed reconcile runs only)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_s3_rename_times_reconcile_straight_to_the_server_and_still_counts_its_bytes(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "RECONCILE_BENCH_ROOT": str(tmp_path / "bench")}
    p = subprocess.run([sys.executable, "-m", "bench", "--size", "small", "--only", "s3-rename", "--output", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = out.read_text()
    ours = re.search(r"^- reconcile apply: `.*--s3-endpoint (http://\S+) ", report, re.M)
    aws = re.search(r"^- aws s3 sync --delete: `.*--endpoint-url (http://\S+) ", report, re.M)
    assert ours and aws, report
    assert ours[1] == aws[1]  # the same server port, no proxy in between
    counted = re.search(r"counted on the wire \(requests only\) \| ([0-9,]+) ", report)
    assert counted and int(counted[1].replace(",", "")) > 0, report
    assert "| file bytes uploaded, as reconcile reports them | 0 | 0 | pass |" in report

"""tests/ci_strict.py: under CI=true a missing tool fails, a capability skip stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = '''
import pytest

def test_needs_a_server():
    pytest.skip("openssh-server is not installed (/usr/sbin/sshd missing)")

def test_a_capability():
    pytest.skip("S3 has no symlinks")

@pytest.mark.xfail(reason="a known bug")
def test_known_bug():
    assert False
'''


@pytest.mark.parametrize("ci, counts", [("true", "1 failed, 1 skipped, 1 xfailed"),
                                        ("", "2 skipped, 1 xfailed")])
def test_missing_tool_fails_only_under_ci(tmp_path, ci, counts):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.ci_strict", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert counts in p.stdout, p.stdout + p.stderr
    if ci:
        assert "a missing tool or server fails the run instead of skipping" in p.stdout

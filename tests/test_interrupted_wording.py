"""Ctrl-C ends every command with exit 130 and one line; only the commands
that keep a journal (apply, restore) say that the next run resumes
(tests/test_qa_pass3.py and tests/test_new_user.py check apply's line)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reconcile import jobs
from reconcile.cli import app


def _interrupt(*_args, **_kw):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, patched", [("verify", "verify_jobs"), ("status", "status_jobs")])
def test_a_read_only_command_interrupted_says_nothing_of_resuming(tmp_path, monkeypatch, command, patched):
    monkeypatch.setattr(jobs, patched, _interrupt)
    (tmp_path / "src").mkdir()
    got = CliRunner().invoke(app, [command, str(tmp_path / "src"), str(tmp_path / "dst")])
    assert got.exit_code == 130
    assert got.stderr.strip().splitlines() == ["reconcile: interrupted"]


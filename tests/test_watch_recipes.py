"""The watch recipes in cron/: each parses and restarts the watcher; the
systemd service's command runs here for real; `reconcile status` shows the
watcher's state."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.test_cron import CRON, TASK_NS, exec_start, reconcile_bin_dir, scheduled_env, unit_file


def test_systemd_watch_service_verifies_and_restarts(tmp_path):
    service = unit_file("reconcile-watch@.service")
    assert "Restart=always" in service and "Type=simple" in service
    assert exec_start(service).split()[1:4] == ["watch", "-q", "%i"]
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    exe = os.path.join(reconcile_bin_dir(), "reconcile")
    (tmp_path / "reconcile-watch@.service").write_text(service.replace("%h/.local/bin/reconcile", exe))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", "./reconcile-watch@photos.service"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0 and "reconcile-watch@" not in p.stderr, p.stderr


def test_systemd_watch_command_runs_and_status_shows_it(tmp_path):
    """ExecStart with %i and %h filled in as systemd would: it mirrors a new
    file, status shows the watcher, SIGTERM (systemctl stop) ends it with 0"""
    env, src, dst = scheduled_env(tmp_path, "photos")
    argv = exec_start(unit_file("reconcile-watch@.service")).replace("%h", env["HOME"]).replace("%i", "photos").split()
    argv[0] = os.path.join(reconcile_bin_dir(), "reconcile")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        (src / "new.txt").write_bytes(b"new")
        deadline = time.monotonic() + 120
        while not (dst / "new.txt").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert (dst / "new.txt").read_bytes() == b"new"
        st = reconcile("status", "photos", "--json", env=env, check=0)
        watch = json.loads(st.stdout)["watch"]
        assert watch["alive"] and watch["pid"] == proc.pid and watch["last_run"]["result"] == "ok"
        text = reconcile("status", "photos", env=env, check=0).stdout
        assert f"watch: running (pid {proc.pid})" in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, proc.stderr.read()
    text = reconcile("status", "photos", env=env, check=0).stdout
    assert "watch: stopped" in text, text
    log = (Path(env["HOME"]) / ".local/state/reconcile/photos.log").read_text()
    assert "summary result=ok" in log


def test_launchd_watch_agent_keeps_it_alive():
    with open(CRON / "com.example.reconcile.watch.photos.plist", "rb") as f:
        doc = plistlib.load(f)
    assert doc["ProgramArguments"][1:4] == ["watch", "-q", "photos"]
    assert doc["RunAtLoad"] is True and doc["KeepAlive"] is True


def test_windows_watch_task_starts_at_log_on_and_restarts():
    root = ET.parse(CRON / "reconcile-watch-task.xml").getroot()
    assert root.find("t:Triggers/t:LogonTrigger", TASK_NS) is not None
    args = root.find("t:Actions/t:Exec/t:Arguments", TASK_NS).text
    assert args.split()[:3] == ["watch", "-q", "photos"]
    settings = root.find("t:Settings", TASK_NS)
    assert settings.find("t:ExecutionTimeLimit", TASK_NS).text == "PT0S"  # no time limit: it runs until log-off
    assert settings.find("t:RestartOnFailure/t:Count", TASK_NS) is not None

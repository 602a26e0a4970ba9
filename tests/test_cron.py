"""The scheduling recipes in cron/: each parses, and the cron line and the
systemd service's command actually run reconcile here."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.mirror import tree, write

CRON = Path(__file__).resolve().parent.parent / "cron"
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
# (lowest, highest) of minute, hour, day of month, month, day of week
FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
NAMES = {3: "jan feb mar apr may jun jul aug sep oct nov dec".split(), 4: "sun mon tue wed thu fri sat".split()}


def cron_jobs() -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """environment lines and (five time fields, command) of crontab.example."""
    env, jobs = {}, []
    for line in (CRON / "crontab.example").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        parts = line.split(None, 5)
        assert len(parts) == 6, f"not 5 time fields and a command: {line}"
        jobs.append((parts[:5], parts[5]))
    return env, jobs


def field_ok(text: str, index: int) -> bool:
    lo, hi = FIELD_RANGES[index]
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2:
            return False
        values = [NAMES[index].index(b.lower()) + (index == 3) if index in NAMES and b.lower() in NAMES[index]
                  else int(b) if b.isdigit() else None for b in bounds]
        if any(v is None or not lo <= v <= hi for v in values):
            return False
        if len(values) == 2 and values[0] > values[1]:
            return False
    return True


def test_field_checker_rejects_bad_fields():
    assert field_ok("*/15", 0) and field_ok("1-5", 4) and field_ok("mon-fri", 4) and field_ok("0,30", 0)
    assert not field_ok("60", 0) and not field_ok("24", 1) and not field_ok("0", 2)
    assert not field_ok("5-1", 4) and not field_ok("*/0", 0) and not field_ok("x", 1)


def test_crontab_line_parses():
    env, jobs = cron_jobs()
    assert jobs, "no job line in crontab.example"
    for fields, command in jobs:
        for i, f in enumerate(fields):
            assert field_ok(f, i), f"time field {i + 1} out of range: {f}"
        assert "%" not in command.replace("\\%", ""), "an unescaped % is a newline to cron"
        assert "reconcile apply" in command
    assert "PATH" in env


def reconcile_bin_dir() -> str:
    exe = shutil.which("reconcile") or os.path.join(os.path.dirname(sys.executable), "reconcile")
    assert os.path.exists(exe), "the reconcile command is not installed"
    return os.path.dirname(exe)


def scheduled_env(tmp_path: Path, mapping: str) -> tuple[dict[str, str], Path, Path]:
    """a fresh HOME with a config file holding one mapping, as a new user has."""
    home = tmp_path / "home"
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a" / "one.txt", b"one", 1_600_000_000_000_000_000)
    write(src / "two.txt", b"two", 1_600_000_000_000_000_000)
    cfg = home / ".config" / "reconcile" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[mapping.{mapping}]\nsource = "{src}"\ndest = "{dst}"\ndelete = true\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "RECONCILE_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return env, src, dst


def test_crontab_command_runs(tmp_path):
    cron_env, jobs = cron_jobs()
    _, command = jobs[0]
    env, src, dst = scheduled_env(tmp_path, "holiday-pics")
    # as cron runs it: its PATH line (plus where reconcile is installed here), sh -c
    env["PATH"] = f"{reconcile_bin_dir()}:{cron_env['PATH']}"
    command = command.replace("photos", "holiday-pics")
    p = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, cwd=env["HOME"])
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", (p.stdout, p.stderr)
    assert tree(dst) == tree(src)
    log = (tmp_path / "home" / ".local" / "state" / "reconcile" / "holiday-pics.log").read_text()
    assert "summary result=ok exit_code=0" in log


def test_crontab_failure_is_reported(tmp_path):
    """a run that fails prints one line, so cron mails it."""
    cron_env, jobs = cron_jobs()
    env, _, _ = scheduled_env(tmp_path, "photos")
    env["PATH"] = f"{reconcile_bin_dir()}:{cron_env['PATH']}"
    command = jobs[0][1].replace("photos", "not-configured")
    p = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, cwd=env["HOME"])
    assert "reconcile not-configured failed (exit 2)" in p.stdout


def unit_file(name: str) -> str:
    return (CRON / name).read_text()


def exec_start(service: str) -> str:
    lines = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1
    return lines[0].split("=", 1)[1]


def test_systemd_units_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    exe = os.path.join(reconcile_bin_dir(), "reconcile")
    # the README says: point ExecStart at `command -v reconcile`; do that here
    (tmp_path / "reconcile@.service").write_text(unit_file("reconcile@.service").replace(
        "%h/.local/bin/reconcile", exe))
    (tmp_path / "reconcile@.timer").write_text(unit_file("reconcile@.timer"))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", "./reconcile@photos.service",
                        "./reconcile@photos.timer"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0 and "reconcile@" not in p.stderr, p.stderr


def test_systemd_units_shape():
    service, timer = unit_file("reconcile@.service"), unit_file("reconcile@.timer")
    assert "Type=oneshot" in service and "%i" in exec_start(service)
    assert re.search(r"^OnCalendar=", timer, re.M) and "Persistent=true" in timer
    assert "WantedBy=timers.target" in timer


def test_systemd_service_command_runs(tmp_path):
    """ExecStart with %i and %h filled in as systemd would, run here."""
    env, src, dst = scheduled_env(tmp_path, "photos")
    argv = exec_start(unit_file("reconcile@.service")).replace("%h", env["HOME"]).replace("%i", "photos").split()
    argv[0] = os.path.join(reconcile_bin_dir(), "reconcile")
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert tree(dst) == tree(src)
    assert "summary result=ok" in (Path(env["HOME"]) / ".local/state/reconcile/photos.log").read_text()


def test_windows_task_xml():
    root = ET.parse(CRON / "reconcile-task.xml").getroot()
    assert root.tag == f"{{{TASK_NS['t']}}}Task"
    trigger = root.find("t:Triggers/t:CalendarTrigger", TASK_NS)
    assert trigger is not None and trigger.find("t:StartBoundary", TASK_NS) is not None
    assert trigger.find("t:ScheduleByDay/t:DaysInterval", TASK_NS).text == "1"
    command = root.find("t:Actions/t:Exec/t:Command", TASK_NS)
    assert command is not None and command.text.startswith("reconcile")
    args = root.find("t:Actions/t:Exec/t:Arguments", TASK_NS).text
    assert args.split()[:3] == ["apply", "-q", "photos"]
    settings = root.find("t:Settings", TASK_NS)
    assert settings is not None
    assert settings.find("t:MultipleInstancesPolicy", TASK_NS).text == "IgnoreNew"
    assert root.find("t:Principals/t:Principal", TASK_NS) is not None


def test_register_script_edits_the_elements_the_xml_has():
    script = (CRON / "register-task.ps1").read_text()
    assert "Register-ScheduledTask" in script
    root = ET.parse(CRON / "reconcile-task.xml").getroot()
    for xpath in re.findall(r'SelectSingleNode\("//([^"]+)"', script):
        assert root.find(".//" + xpath, TASK_NS) is not None, xpath


def test_launchd_plist():
    with open(CRON / "com.example.reconcile.photos.plist", "rb") as f:
        doc = plistlib.load(f)
    assert doc["ProgramArguments"][1:4] == ["apply", "-q", "photos"]
    assert set(doc["StartCalendarInterval"]) == {"Hour", "Minute"}

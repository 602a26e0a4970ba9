"""--log-file and --log-format: json lines parse, each run ends with exactly
one summary record whatever the verbosity, rotation, and no secret logged."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from reconcile import logs
from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000
SECRET = "s3cr3t-value"


def json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def src(tmp_path):
    for i in range(5):
        write(tmp_path / "src" / f"f{i}.txt", b"x" * (10 + i), T0)
    return tmp_path / "src"


def test_summary_duration_covers_the_run(tmp_path):
    """--bwlimit makes the run take at least 2 s by construction (4 KiB at
    1 KiB/s with a one-second burst); the summary says so, and never more
    than the time measured around the command."""
    write(tmp_path / "src" / "f.bin", b"x" * 4096, T0)
    log = tmp_path / "r.log"
    started = time.monotonic()
    reconcile("apply", tmp_path / "src", tmp_path / "dst", "--log-file", log, "--log-format", "json",
              "--state-dir", tmp_path / "st", "--bwlimit", "1K", check=0)
    wall = time.monotonic() - started
    (summary,) = [r for r in json_lines(log) if r["event"] == "summary"]
    assert 2.0 <= summary["duration_s"] <= wall, (summary["duration_s"], wall)


@pytest.mark.parametrize("verbosity", [[], ["-q"], ["-v"]])
def test_json_log_ends_with_one_summary(src, tmp_path, verbosity):
    log = tmp_path / "logs" / "r.log"
    dst = tmp_path / "dst"
    args = ["--log-file", log, "--log-format", "json", "--state-dir", tmp_path / "st", *verbosity]
    reconcile("apply", src, dst, *args, check=0)
    reconcile("apply", src, dst, *args, check=0)
    records = json_lines(log)
    summaries = [r for r in records if r["event"] == "summary"]
    assert len(summaries) == 2 and records[-1] is summaries[-1]
    first = summaries[0]
    assert (first["result"], first["exit_code"], first["done"], first["failed"]) == ("ok", 0, 5, 0)
    assert first["bytes"] == sum(10 + i for i in range(5))
    assert summaries[1]["done"] == 0 and summaries[1]["bytes"] == 0
    assert all({"time", "level", "message", "command"} <= r.keys() for r in records)
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


def test_text_log_and_plan(src, tmp_path):
    log = tmp_path / "r.log"
    p = reconcile("plan", src, tmp_path / "dst", "--log-file", log, "--state-dir", tmp_path / "st", check=0)
    assert p.stderr.startswith("plan: ")  # the terminal still gets the usual output
    lines = log.read_text().splitlines()
    assert lines[0].split(" ", 3)[2:] == ["INFO", "plan: start: " + f"{src} -> {tmp_path / 'dst'}"]
    assert sum(" summary " in ln for ln in lines) == 1 and " summary result=ok exit_code=0" in lines[-1]
    assert "| plan: " in lines[-1] and "(60 B)" in lines[-1]


def test_json_without_file_replaces_stderr(src, tmp_path):
    p = reconcile("apply", src, tmp_path / "dst", "--log-format", "json", "--state-dir", tmp_path / "st", check=0)
    records = [json.loads(line) for line in p.stderr.splitlines()]
    assert records[-1]["event"] == "summary" and records[-1]["done"] == 5


def test_failed_run_still_ends_with_summary(tmp_path):
    log = tmp_path / "r.log"
    reconcile("apply", tmp_path / "missing", tmp_path / "dst", "--log-file", log, "--log-format", "json", check=4)
    records = json_lines(log)
    assert records[-2]["level"] == "error" and "does not exist" in records[-2]["message"]
    assert records[-1]["event"] == "summary" and records[-1]["result"] == "refused"
    assert records[-1]["exit_code"] == 4


def test_no_secret_in_log_or_output(sftp_dest, src, tmp_path):
    env = {"RECONCILE_SFTP_PASSWORD": SECRET}
    log = tmp_path / "r.log"
    outputs = []
    for fmt in ("json", "text"):
        p = reconcile("apply", src, sftp_dest.url, *sftp_dest.cli_args, "-v", "--log-file", log,
                      "--log-format", fmt, "--state-dir", tmp_path / "st", env=env, check=0)
        outputs += [p.stdout, p.stderr]
    # a run that fails at authentication, after trying the password
    p = reconcile("apply", src, sftp_dest.url, "--known-hosts", sftp_dest.options.sftp.known_hosts, "--log-file", log,
                  "--log-format", "json", "--state-dir", tmp_path / "st2", "--retry-for", "0s",
                  env={**env, "SSH_AUTH_SOCK": "", "HOME": str(tmp_path)}, check=2)
    outputs += [p.stdout, p.stderr]
    assert "password" in p.stderr
    text = log.read_text()
    assert text.count("summary") >= 3 and SECRET not in text
    assert not any(SECRET in o for o in outputs)


def test_mask_hides_known_secrets(monkeypatch):
    monkeypatch.setenv("RECONCILE_SFTP_PASSWORD", SECRET)
    assert logs.mask(f"x {SECRET} sftp://me:pw@host/x") == "x *** sftp://me:***@host/x"


def test_rotation(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "MAX_BYTES", 400)
    path = tmp_path / "r.log"
    for i in range(10):
        with logs.RunLog(logs.LogSettings(str(path), "json"), "apply", f"m{i}", "/s", "/d") as run:
            run.finish(0)
    assert (tmp_path / "r.log.1").exists() and path.stat().st_size <= 800
    for p in tmp_path.glob("r.log*"):
        assert all(json.loads(line) for line in p.read_text().splitlines())


def test_rotated_log_stays_private(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "MAX_BYTES", 400)
    old = os.umask(0o022)
    try:
        path = tmp_path / "r.log"
        for i in range(6):
            with logs.RunLog(logs.LogSettings(str(path), "text"), "apply", f"m{i}", "/s", "/d") as run:
                run.finish(0)
    finally:
        os.umask(old)
    assert (tmp_path / "r.log.1").exists()
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("r.log*")} == \
        {p.name: 0o600 for p in tmp_path.glob("r.log*")}


def test_password_with_an_at_sign_is_masked_whole(monkeypatch):
    assert logs.mask("sftp://me:s3cr@tpass@host/x") == "sftp://me:***@host/x"


def test_s3_url_with_credentials_never_echoes_them(src, tmp_path):
    log = tmp_path / "r.log"
    p = reconcile("plan", src, "s3://AKIAXXX:topsecretkey@bkt/x", "--log-file", log, "--state-dir",
                  tmp_path / "st", check=2)
    assert "topsecretkey" not in p.stderr + log.read_text()
    assert "carries no credentials" in p.stderr


def test_unwritable_log_file_is_one_line_exit_2(src, tmp_path):
    p = reconcile("apply", src, tmp_path / "dst", "--log-file", src / "f0.txt" / "log", check=2)
    assert p.stderr.startswith("reconcile: cannot write the log file") and len(p.stderr.splitlines()) == 1


def test_bad_flag_still_ends_the_log_with_a_summary(src, tmp_path):
    log = tmp_path / "r.log"
    reconcile("apply", src, tmp_path / "dst", "--bwlimit", "0", "--log-file", log, "--log-format", "json", check=2)
    records = json_lines(log)
    assert records[-1]["event"] == "summary" and records[-1]["result"] == "config-error"
    assert "--bwlimit" in records[-1]["message"]


def test_output_and_log_complete_at_exit(tmp_path):
    # the command leaves by os._exit: everything written must be flushed first.
    # the commands flush their own output today; this guards the exit path.
    # block-buffered output, as under cron (this shell may set PYTHONUNBUFFERED)
    buffered = {"PYTHONUNBUFFERED": ""}
    for i in range(3000):
        write(tmp_path / "many" / f"d{i % 30}" / f"file-with-a-long-name-{i:05d}.txt", b"x", T0)
    log = tmp_path / "r.log"
    p = reconcile("plan", tmp_path / "many", tmp_path / "dst", "--json", "--log-file", log,
                  "--log-format", "json", "--state-dir", tmp_path / "st", env=buffered, check=0)
    assert len(p.stdout) > 1 << 17  # more than a pipe holds at once
    assert len([op for op in json.loads(p.stdout)["operations"] if op["op"] == "upload"]) == 3000
    assert json_lines(log)[-1]["event"] == "summary"
    status = reconcile("status", tmp_path / "many", tmp_path / "dst", "--json", "--state-dir", tmp_path / "st",
                       env=buffered, check=0)
    assert json.loads(status.stdout)["snapshot"] is None  # printed without a flush of its own
    bad = reconcile("plan", tmp_path / "nowhere", tmp_path / "dst", "--state-dir", tmp_path / "st2", env=buffered)
    assert bad.returncode == 4 and "does not exist" in bad.stderr  # the exit code survives too

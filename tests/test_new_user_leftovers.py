"""Issue 18, what a new user still hit after the ten items: each through the
real command line, checking the exit code and the words that say what to do."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


# --- a bad flag is two short lines, not click's usage block ------------------------------

@pytest.mark.parametrize("args, first", [
    (("apply", "SRC", "DST", "--frobnicate"), "reconcile: no such option: --frobnicate"),
    (("apply", "SRC", "DST", "--delet"), "reconcile: no such option: --delet (did you mean --delete?)"),
    (("plan", "SRC", "DST", "--transfers", "x"), "reconcile: invalid value for '--transfers': 'x' is not a valid int."),
    (("plan", "SRC", "DST", "--transfers", "0"), "reconcile: --transfers must be 1 or more"),
    (("apply", "SRC", "DST", "--transfers"), "reconcile: option '--transfers' requires an argument."),
    (("verify", "SRC", "DST", "--links", "sometimes"), "reconcile: --links 'sometimes': use skip, follow or store"),
    (("status", "--jsn"), "reconcile: no such option: --jsn (did you mean --json?)"),
    # no weak guess (it said "did you mean --retry-for?"): the commands that have it
    (("watch", "SRC", "DST", "--dry-run"),
     "reconcile: no such option: --dry-run (--dry-run is an option of reconcile apply, reconcile restore)"),
    (("apply", "SRC", "DST", "--offline"), "reconcile: no such option: --offline (--offline is an option of reconcile plan)"),
    (("config", "chek"), "reconcile: no such command 'chek'."),
])
def test_a_bad_flag_is_what_and_where_to_look_in_two_lines(tmp_path, args, first):
    (tmp_path / "SRC").mkdir()
    p = reconcile(*args, cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "state")}, check=2)
    lines = p.stderr.splitlines()
    command = " ".join(a for a in args[:2] if a.islower() and not a.startswith("-") and a != "chek")
    assert len(lines) == 2, p.stderr
    assert lines[0].startswith(first), p.stderr
    assert lines[1] == f"see `reconcile {command} --help`", p.stderr
    assert "Usage:" not in p.stderr and "Error:" not in p.stderr
    assert not (tmp_path / "DST").exists()


def test_help_and_no_arguments_still_show_the_help():
    assert reconcile("apply", "--help", check=0).stdout.startswith("Usage: reconcile apply [OPTIONS]")
    p = reconcile(check=2)  # no command at all: the help, as before
    assert "Commands:" in p.stdout + p.stderr and "plan" in p.stdout + p.stderr


# --- negative durations and rates are refused ----------------------------------------------

@pytest.mark.parametrize("flag, value, what", [
    ("--retry-for", "-5s", "is not a duration: it must be 0 or more"),
    ("--retry-for", "-1", "is not a duration: it must be 0 or more"),
    ("--retry-for", "nan", "is not a duration: it must be 0 or more"),
    ("--bwlimit", "-4M", "is not a rate: it must be more than 0"),
    ("--bwlimit", "inf", "is not a rate: it must be more than 0"),
    ("--backup-keep", "nan", "must be more than 0 days"),
])
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_negative_duration_or_rate_is_refused(tmp_path, command, flag, value, what):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.txt", b"a", T0)
    p = reconcile(command, src, dst, "--state-dir", tmp_path / "state", flag, value, check=2)
    first = p.stderr.splitlines()[0]
    assert first.startswith(f"reconcile: {flag}") and what in first, p.stderr
    assert not dst.exists()


@pytest.mark.parametrize("flag", ["--quiet-for", "--max-wait"])
def test_watch_refuses_a_negative_wait(tmp_path, flag):
    (tmp_path / "src").mkdir()
    p = reconcile("watch", tmp_path / "src", tmp_path / "dst", "--state-dir", tmp_path / "state", flag, "-1s",
                  timeout=60, check=2)
    assert f"reconcile: {flag}: '-1s' is not a duration: it must be 0 or more" in p.stderr, p.stderr
    assert not (tmp_path / "dst").exists()


def test_watch_refuses_a_max_wait_shorter_than_its_quiet_period(tmp_path):
    # the hard maximum would always come first: the quiet period the user asked for never counts
    (tmp_path / "src").mkdir()
    p = reconcile("watch", tmp_path / "src", tmp_path / "dst", "--state-dir", tmp_path / "state",
                  "--quiet-for", "20s", "--max-wait", "5s", timeout=60, check=2)
    assert "reconcile: --max-wait (5s) is shorter than --quiet-for (20s)" in p.stderr, p.stderr
    assert not (tmp_path / "dst").exists()


# --- help says what each command does with a flag, and cuts nothing ---------------------------

def test_verify_include_help_says_compare_not_send():
    text = " ".join(reconcile("verify", "--help", check=0).stdout.split())
    assert "--include PATTERN compare paths matching PATTERN even if an --exclude matched them" in text, text
    assert "send paths" not in text
    assert "--include PATTERN send paths matching PATTERN" in " ".join(reconcile("apply", "--help", check=0).stdout.split())


@pytest.mark.parametrize("command", [(), ("config",), ("plan",), ("apply",), ("watch",), ("status",), ("verify",),
                                     ("restore",), ("config", "check")])
def test_no_help_text_is_cut_with_dots(command):
    text = reconcile(*command, "--help", check=0).stdout
    described = [line for line in text.splitlines()[1:] if "..." in line.replace("://...", "")]
    assert described == [], described


# --- status while a run is in progress ---------------------------------------------------------

def test_status_during_a_run_says_it_is_in_progress_and_since_when(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "earlier.txt", b"1", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)  # a finished run to report
    for i in range(24):
        write(src / f"f{i:02d}.bin", bytes([i]) * 65536, T0)
    child = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", str(src), str(dst), "--state-dir",
                              str(state), "--bwlimit", "256K", "--transfers", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (dst / "f00.bin").exists():  # the run is under way
            time.sleep(0.05)
        text = reconcile("status", src, dst, "--state-dir", state, check=0).stdout
        doc = json.loads(reconcile("status", src, dst, "--state-dir", state, "--json", check=0).stdout)
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=60)
    lines = text.splitlines()
    assert lines[1].startswith("run in progress: since ") and f"(pid {child.pid})" in lines[1], text
    assert lines[2].startswith("last run: ") and ", ok, " in lines[2] and "1 done" in lines[2], text
    assert doc["running"]["pid"] == str(child.pid) and abs(doc["running"]["since"] - time.time()) < 600
    assert doc["last_run"]["result"] == "ok"
    # once it has stopped, nothing is running and the interrupted run is the last one
    text = reconcile("status", src, dst, "--state-dir", state, check=0).stdout
    assert "run in progress" not in text and "interrupted" in text, text
    assert json.loads(reconcile("status", src, dst, "--state-dir", state, "--json", check=0).stdout)["running"] is None


def test_status_of_a_first_run_in_progress_is_not_never(tmp_path):
    from reconcile.lock import RunLock
    from reconcile.statedir import StateDir

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    with RunLock(StateDir.for_pair(str(src), str(dst), str(state)).lock):  # as a first apply holds it
        text = reconcile("status", src, dst, "--state-dir", state, check=0).stdout
    assert "run in progress: since " in text and "last run: none finished yet" in text, text
    assert "never" not in text


@pytest.mark.parametrize("proc_locks", [True, False])
def test_held_by_sees_a_held_lock_with_or_without_proc_locks(tmp_path, monkeypatch, proc_locks):
    import os

    from reconcile import lock

    if not proc_locks:  # macOS, Windows: a shared lock is tried and dropped
        monkeypatch.setattr(lock, "PROC_LOCKS", str(tmp_path / "no-proc-locks"))
    elif not os.path.exists(lock.PROC_LOCKS):
        pytest.skip("no /proc/locks here")
    path = str(tmp_path / "lock")
    assert lock.held_by(path) is None  # never taken
    with lock.RunLock(path):
        pid, since = lock.held_by(path)
        assert pid == str(os.getpid()) and since > 0
    assert lock.held_by(path) is None  # released: the file stays, the lock is gone
    with lock.RunLock(path):  # and held_by never took it from its holder
        assert lock.held_by(path) is not None


# --- a mistyped deep destination is not made on the system disk -----------------------------------

@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_destination_missing_more_than_its_last_folder_is_refused(tmp_path, command):
    src = tmp_path / "Pictures"
    write(src / "a.jpg", b"a", T0)
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    typo = tmp_path / "x" / "media" / "USBDISK" / "backup"  # meant /media/USBDISK/backup
    p = reconcile(command, src, typo, env=env, check=2)
    assert p.stderr.splitlines() == [
        f"reconcile: destination {typo}: {tmp_path / 'x'} does not exist, and reconcile makes only the "
        "destination's last folder (as rsync does). A typo, or a disk not mounted? If the path is right, "
        f"create it first: mkdir -p {typo.parent}"], p.stderr
    assert not (tmp_path / "x").exists()
    (tmp_path / "x" / "media").mkdir(parents=True)  # still one level too few: it names that one
    p = reconcile(command, src, typo, env=env, check=2)
    assert f": {typo.parent} does not exist" in p.stderr and f"mkdir -p {typo.parent}" in p.stderr
    assert os.listdir(tmp_path / "x" / "media") == []
    typo.parent.mkdir()  # only the last folder is missing: made, as rsync makes it
    reconcile(command, src, typo, env=env, check=0)
    assert (typo / "a.jpg").exists() == (command == "apply")


def test_a_disk_whose_mount_folder_is_gone_is_still_the_unmounted_disk_refusal(tmp_path):
    # udisks removes /media/me/USBDISK on unmount: the destination held files, exit 4 says so
    src, state, disk = tmp_path / "Pictures", tmp_path / "state", tmp_path / "media" / "USBDISK"
    write(src / "a.jpg", b"a", T0)
    disk.mkdir(parents=True)
    reconcile("apply", src, disk / "backup", "--state-dir", state, check=0)
    shutil.rmtree(disk)
    p = reconcile("apply", src, disk / "backup", "--state-dir", state, check=4)
    assert "held 1 file at the last run and is now missing or empty: is the disk mounted?" in p.stderr
    p = reconcile("apply", src, disk / "backup", "--state-dir", state, "--allow-new-destination", check=2)
    assert f"{disk} does not exist" in p.stderr and not disk.exists()


# --- verify and plan --offline: what the destination cannot hold is not "missing" -------------------

def test_verify_and_offline_plan_report_names_a_usb_disk_cannot_hold_as_not_stored(exfat_disk, tmp_path):
    import json

    src, dst, state = tmp_path / "src", exfat_disk.fresh_folder(), tmp_path / "state"
    write(src / "Docs" / "a:b.txt", b"1", T0)
    write(src / "Docs" / "fine.txt", b"2", T0)
    write(src / "bad:folder" / "inside.txt", b"3", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=3)  # apply leaves the two out, with their reasons
    why = "cannot store Docs/a:b.txt on this destination (exfat): ':' is not allowed in names; " \
          "rename it, or use --name-encoding"

    p = reconcile("verify", src, dst, "--state-dir", state, check=1)  # not backed up: not equal
    assert "missing" not in p.stdout, p.stdout
    assert f"warning: {why}" in p.stderr and p.stderr.count("bad:folder") == 1, p.stderr
    last = p.stderr.splitlines()[-1]
    assert last.startswith("verify: no differences in what the destination can hold;"), last
    assert "2 not stored: the destination cannot hold them (see the warnings above)" in last
    assert "`reconcile apply` sends" not in last  # it cannot
    doc = json.loads(reconcile("verify", src, dst, "--state-dir", state, "--json", check=1).stdout)
    assert doc["differences"] == [] and [d["path"] for d in doc["not_stored"]] == ["Docs/a:b.txt", "bad:folder/"]
    write(src / "new.txt", b"4", T0)  # a real difference is still one
    doc = json.loads(reconcile("verify", src, dst, "--state-dir", state, "--json", check=1).stdout)
    assert [(d["path"], d["what"]) for d in doc["differences"]] == [("new.txt", "missing")]

    for offline in (["--offline"], []):  # the same words whether the plan connects or not
        p = reconcile("plan", src, dst, "--state-dir", state, *offline, check=0)
        assert f"warning: {why}" in p.stderr, (offline, p.stderr)
        assert "plan: 1 to send (1 B); 2 not stored: the destination cannot hold them" in p.stderr, p.stderr
        doc = json.loads(reconcile("plan", src, dst, "--state-dir", state, "--json", *offline, check=0).stdout)
        assert [d["path"] for d in doc["not_stored"]] == ["Docs/a:b.txt", "bad:folder"], offline
        assert [o["path"] for o in doc["operations"]] == ["new.txt"], offline


# --- README and --help match ----------------------------------------------------------------------

def _flags_in_help(*command: str) -> set[str]:
    import re

    text = reconcile(*command, "--help", check=0).stdout
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", text, re.M)) - {"--help"}


@pytest.mark.parametrize("command", [("plan",), ("apply",), ("watch",), ("status",), ("verify",), ("restore",),
                                     ("config", "check")])
def test_every_flag_in_help_is_in_the_readme(command):
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent
    text = (docs / "README.md").read_text() + (docs / "docs" / "restore.md").read_text()
    missing = sorted(f for f in _flags_in_help(*command) if f not in text)
    assert missing == [], f"reconcile {' '.join(command)} --help has flags the README never names: {missing}"


def test_every_flag_of_the_readme_options_table_is_in_help():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = text.split("## Options of `plan` and `apply`", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(--[a-z0-9-]+)", table))
    assert "--delete" in named and "--dry-run" in named
    assert sorted(named - _flags_in_help("plan") - _flags_in_help("apply")) == []


def test_offline_plan_of_an_ordinary_folder_still_takes_the_snapshot_for_the_remote(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a:b.txt", b"1", T0)  # a name an ordinary Linux folder holds
    write(src / "b.txt", b"2", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    p = reconcile("plan", src, dst, "--state-dir", state, "--offline", check=0)
    assert p.stderr.splitlines()[-1].startswith("plan: nothing to do"), p.stderr


def test_the_readme_exit_code_table_lists_every_code_and_reliability_has_items_1_to_5():
    import re
    from pathlib import Path

    import reconcile.cli

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (\d+) \|", table, re.M))
    documented = set(re.findall(r"(\d+) [a-z]", reconcile.cli.__doc__.split("Exit codes:", 1)[1].split("\n\n")[0]))
    assert listed == documented == {"0", "1", "2", "3", "4", "5", "130"}, (listed, documented)
    rows = (root / "docs" / "reliability.md").read_text()
    for item in ("An unreadable file (EACCES, run as nobody)", "A URL without its colon as DEST",
                 "A destination disk not mounted", "A host name that does not resolve",
                 "SOURCE and DEST swapped"):  # issue 18, items 1 to 5
        assert f"\n| {item}" in rows, item


def test_verify_on_s3_reports_a_name_that_is_not_utf8_as_not_stored(s3_dest, tmp_path):
    import json

    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "Docs" / "ok.txt", b"fine", T0)
    with open(os.path.join(os.fsencode(src / "Docs"), b"caf\xe9.txt"), "wb") as f:
        f.write(b"x")
    args = ("--state-dir", state, *s3_dest.cli_args)
    reconcile("apply", src, s3_dest.url, *args, env=s3_dest.env, check=3)  # apply: that one fails, with why
    p = reconcile("verify", src, s3_dest.url, *args, env=s3_dest.env, check=1)
    assert "missing" not in p.stdout, p.stdout
    assert "warning: cannot store Docs/caf\\xe9.txt on this destination: the name is not valid UTF-8 and S3 keys " \
           "must be; rename it" in p.stderr, p.stderr
    last = p.stderr.splitlines()[-1]
    assert "1 not stored: the destination cannot hold them" in last and "`reconcile apply` sends" not in last, last
    doc = json.loads(reconcile("verify", src, s3_dest.url, *args, "--json", env=s3_dest.env, check=1).stdout)
    assert doc["differences"] == [] and len(doc["not_stored"]) == 1


def test_offline_plan_without_a_snapshot_says_so_instead_of_an_unmounted_disk(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"1", T0)
    none_yet = "plan --offline plans against the snapshot of the last complete run, and this pair has none"
    p = reconcile("plan", src, dst, "--state-dir", state, "--offline", check=2)  # never ran: the remote is unknown
    assert none_yet in p.stderr and "without --offline" in p.stderr, p.stderr
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    os.unlink(state / "snapshot.msgpack")  # as after a first run that ended partial (its snapshot is not kept)
    p = reconcile("plan", src, dst, "--state-dir", state, "--offline", check=2)
    assert none_yet in p.stderr and "is the disk mounted" not in p.stderr, p.stderr
    reconcile("plan", src, dst, "--state-dir", state, check=0)


def test_a_bad_flag_is_logged_as_the_command_line_shows_it(tmp_path):
    src, log = tmp_path / "src", tmp_path / "run.log"
    src.mkdir()
    p = reconcile("apply", src, tmp_path / "dst", "--state-dir", tmp_path / "state", "--transfers", "0",
                  "--log-file", log, check=2)
    assert p.stderr.startswith("reconcile: --transfers must be 1 or more\n"), p.stderr
    summary = [line for line in log.read_text().splitlines() if "summary" in line]
    assert len(summary) == 1 and summary[0].endswith("| --transfers must be 1 or more"), summary

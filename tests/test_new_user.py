"""Issue 18: what a new user hit in the first hour, each driven through the
real command line as a user would, checking the exit code and the words that
tell the user what to do next. Permission rows run reconcile as nobody
(setpriv): tests run as root, and root reads everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.test_bad_input import MOUNT, open_tmp  # noqa: F401  (a fixture: a temp dir nobody may enter)
from tests.mirror import tree, write

T0 = 1_600_000_000_000_000_000
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(*args, cwd=None) -> subprocess.CompletedProcess:
    """the real command line as user nobody (uid 65534)."""
    p = subprocess.run([*NOBODY, sys.executable, "-m", "reconcile", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd or "/", env={**os.environ, "HOME": "/nonexistent"})
    assert "Traceback" not in p.stderr, p.stderr
    return p


def _give_to_nobody(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        os.chown(dirpath, 65534, 65534)
        for n in files:
            os.chown(os.path.join(dirpath, n), 65534, 65534)


# --- 1. an unreadable source file or folder is never a success -------------------

@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_source_is_counted_skipped_and_exits_3(open_tmp, what):
    src, dst, state = open_tmp / "src", open_tmp / "dst", open_tmp / "state"
    write(src / "open.txt", b"1", T0)
    write(src / "photo 90.jpg", b"jpeg", T0)
    write(src / "album" / "a.jpg", b"a", T0)
    _give_to_nobody(open_tmp)
    locked = src / ("photo 90.jpg" if what == "file" else "album")
    os.chmod(locked, 0o000)
    p = as_nobody("apply", src, dst, "--state-dir", state, "--json")
    assert p.returncode == 3, p.stderr
    summary = p.stderr.strip().splitlines()[-1]
    shown = "photo 90.jpg" if what == "file" else "album/"
    assert summary.startswith("partial: "), summary
    assert "1 skipped" in summary and f"could not be read: {shown} (Permission denied)" in summary
    assert "fix their permissions" in summary
    doc = json.loads(p.stdout)
    assert doc["unreadable"] == [{"path": shown, "reason": "Permission denied"}]
    assert doc["totals"]["skipped"] == 1
    assert (dst / "open.txt").read_bytes() == b"1"
    # status and the next run agree: still partial until the permissions are fixed
    st = json.loads(as_nobody("status", src, dst, "--state-dir", state, "--json").stdout)
    assert st["last_run"]["result"] == "partial"
    os.chmod(locked, 0o755 if what == "folder" else 0o644)
    p = as_nobody("apply", src, dst, "--state-dir", state)
    assert p.returncode == 0, p.stderr
    assert tree(dst) == tree(src)


def test_a_file_gone_between_walk_and_upload_is_not_an_error(tmp_path):
    from reconcile.engine import Run, RunOptions
    from tests.mirror import SilentReporter

    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "stays.txt", b"1", T0)
    write(src / "goes.txt", b"2", T0)
    r = Run(str(src), str(dst), RunOptions(state_dir=str(state)), SilentReporter())
    original = r._execute

    def execute(plan, tag):
        os.unlink(src / "goes.txt")
        return original(plan, tag)

    r._execute = execute
    from reconcile.engine import exit_word

    result = r.apply()
    r.close()
    assert exit_word(result) == "ok" and result.unreadable == []
    # and through the command line: a file gone before the hash is read is no error either
    write(src / "again.txt", b"3", T0)
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert "could not be read" not in p.stderr


# --- 2. a destination typo never writes into ./sftp/... ------------------------------

@pytest.mark.parametrize("typed, likely", [
    ("sftp//nas/backup/Pictures", "sftp://nas/backup/Pictures"),
    ("s3//bucket", "s3://bucket"),
    ("file//mnt/usb/backup", "file:///mnt/usb/backup"),
    ("ssh//me@nas/backup", "sftp://me@nas/backup"),
    ("scp//nas/x", "sftp://nas/x"),
    ("SFTP/nas/x", "sftp://nas/x"),
])
@pytest.mark.parametrize("command", ["apply", "plan"])
def test_url_without_colon_is_refused_with_the_likely_url(tmp_path, typed, likely, command):
    src = tmp_path / "Pictures"
    write(src / "a.jpg", b"a", T0)
    p = reconcile(command, src, typed, cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert p.returncode == 2, p.stderr
    assert f"did you mean {likely}?" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["Pictures"]  # no ./sftp, no state written


def test_a_folder_named_like_a_scheme_is_still_reachable(tmp_path):
    src = tmp_path / "Pictures"
    write(src / "a.jpg", b"a", T0)
    (tmp_path / "sftp").mkdir()  # a folder of that name
    reconcile("apply", src, "./sftp/copy", cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "st")}, check=0)
    assert (tmp_path / "sftp" / "copy" / "a.jpg").read_bytes() == b"a"


# --- 3. an unmounted disk is never refilled ------------------------------------------

needs_mount = pytest.mark.skipif(not MOUNT, reason="mount -t tmpfs is not possible here (needs root)")
UNMOUNTED = "held 3 files at the last run and is now missing or empty: is the disk mounted? " \
            "pass --allow-new-destination to start it again"


@pytest.fixture
def usb(tmp_path):
    """a small tmpfs at tmp_path/usb standing for a USB disk; unmounted at the end."""
    mnt = tmp_path / "usb"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@needs_mount
def test_unmounted_destination_disk_is_refused_not_refilled(tmp_path, usb):
    src, state = tmp_path / "Pictures", tmp_path / "state"
    for n in ("a.jpg", "b.jpg", "c/d.jpg"):
        write(src / n, n.encode(), T0)
    dest = usb / "backup"
    reconcile("apply", src, dest, "--state-dir", state, check=0)  # a first run into a new folder
    subprocess.run(["umount", str(usb)], check=True)
    # the mount point is bare: the backup folder is missing
    for command in ("plan", "apply"):
        p = reconcile(command, src, dest, "--state-dir", state, check=4)
        assert UNMOUNTED in p.stderr, p.stderr
    assert os.listdir(usb) == []
    # an empty folder on the system disk where the backup was
    dest.mkdir()
    p = reconcile("apply", src, dest, "--state-dir", state, "--delete", check=4)
    assert UNMOUNTED in p.stderr
    assert os.listdir(dest) == []
    # not empty, but the file system under it changed (the mount point is on / now)
    write(dest / "stray.txt", b"x", T0)
    p = reconcile("apply", src, dest, "--state-dir", state, check=4)
    assert f"was on the file system mounted at {usb} at the last run and is now on" in p.stderr, p.stderr
    assert "pass --allow-new-destination" in p.stderr
    assert os.listdir(dest) == ["stray.txt"]
    # a pair from before the destination was recorded: its snapshot says what the disk held
    os.unlink(state / "destination.json")
    shutil.rmtree(dest)
    p = reconcile("apply", src, dest, "--state-dir", state, check=4)
    assert UNMOUNTED in p.stderr
    dest.mkdir()
    write(dest / "stray.txt", b"x", T0)
    # the user means it: start again, and from then on that is the destination
    reconcile("apply", src, dest, "--state-dir", state, "--allow-new-destination", check=0)
    assert (dest / "c" / "d.jpg").read_bytes() == b"c/d.jpg"
    reconcile("apply", src, dest, "--state-dir", state, check=0)


def test_emptied_remote_root_is_refused_on_sftp(tmp_path, sftp_dest):
    src, state = tmp_path / "Pictures", tmp_path / "state"
    for n in ("a.jpg", "b.jpg", "c/d.jpg"):
        write(src / n, n.encode(), T0)
    args = ("--state-dir", state, *sftp_dest.cli_args)
    reconcile("apply", src, sftp_dest.url, *args, check=0)
    root = tmp_path / "sftp-root"
    shutil.rmtree(root)
    root.mkdir()  # the NAS share came back empty (its disk not mounted on the server)
    p = reconcile("apply", src, sftp_dest.url, *args, check=4)
    assert UNMOUNTED in p.stderr
    assert os.listdir(root) == []
    reconcile("apply", src, sftp_dest.url, *args, "--allow-new-destination", check=0)
    assert sorted(os.listdir(root)) == ["a.jpg", "b.jpg", "c"]


# --- 5. SOURCE and DEST swapped -----------------------------------------------------

def test_swapped_source_and_dest_are_refused_naming_the_pair(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}  # the default state root, as a user has it
    pictures, backup = tmp_path / "home" / "Pictures", tmp_path / "backup" / "Pictures"
    write(pictures / "old.jpg", b"old", T0)
    backup.parent.mkdir()  # the backup disk, mounted
    reconcile("apply", pictures, backup, env=env, check=0)
    write(pictures / "new.jpg", b"taken today", T0 + 10**12)  # not backed up yet
    for command in ("plan", "apply"):
        p = reconcile(command, "--delete", backup, pictures, env=env, check=4)
        assert f"the destination {pictures} is the source of the pair {pictures} -> {backup}" in p.stderr
        assert "SOURCE and DEST swapped?" in p.stderr and "--allow-reverse" in p.stderr
    assert (pictures / "new.jpg").read_bytes() == b"taken today"
    # the right direction still runs, and a copy of the backup elsewhere (a chain) is no swap
    reconcile("apply", pictures, backup, env=env, check=0)
    reconcile("apply", backup, tmp_path / "second-copy", env=env, check=0)
    # meant: restore by mirroring back, once allowed
    (pictures / "new.jpg").unlink()
    write(backup / "x.jpg", b"x", T0)
    reconcile("apply", backup, pictures, "--allow-reverse", env=env, check=0)
    assert (pictures / "x.jpg").read_bytes() == b"x"


# --- 4. a host name that does not resolve ----------------------------------------------

def in_terminal(*args, env: dict) -> tuple[int, str]:
    """the real command line with a pseudo-terminal as stdout and stderr."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "reconcile", *map(str, args)], {**os.environ, **env})
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


REPO = str(Path(__file__).resolve().parent.parent)


def test_unresolvable_host_fails_at_once_unless_the_pair_worked_before(tmp_path, sshd_server):
    from tests.servers_sftp import sftp_url

    src, state, root = tmp_path / "Pictures", tmp_path / "state", tmp_path / "sftp-root"
    write(src / "a.jpg", b"a", T0)
    root.mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    cfg = tmp_path / "ssh_config"
    env = {"RECONCILE_SSH_CONFIG": str(cfg)}
    auth = ("--ssh-key", sshd_server.user_key, "--known-hosts", kh)

    # a typo in a pair that never connected: exit 2 at once, not five minutes of retries
    cfg.write_text("")
    for command in ("plan", "apply", "verify"):
        p = reconcile(command, src, "sftp://nas.lcoal/backup", "--state-dir", tmp_path / "typo", *auth,
                      env=env, timeout=120)
        assert p.returncode == 2, p.stderr
        assert "cannot resolve host nas.lcoal: check the host name" in p.stderr
        assert "retrying" not in p.stderr

    # a pair that worked before (the alias nas.local), then the network is gone
    url = sftp_url(sshd_server, root).replace(f"{sshd_server.host}:{sshd_server.port}", "nas.local")
    cfg.write_text(f"Host nas.local\n  HostName {sshd_server.host}\n  Port {sshd_server.port}\n")
    reconcile("apply", src, url, "--state-dir", state, *auth, env=env, check=0)
    cfg.write_text(f"Host nas.local\n  HostName nas.lcoal\n  Port {sshd_server.port}\n")
    write(src / "b.jpg", b"b", T0)
    p = reconcile("apply", src, url, "--state-dir", state, *auth, "--retry-for", "3s", env=env)
    assert p.returncode == 3, p.stderr  # retried as before, a warning per attempt in a log
    assert "cannot resolve host nas.lcoal" in p.stderr and "retrying in" in p.stderr
    # on a terminal: one live line instead of a warning per attempt
    code, out = in_terminal("apply", src, url, "--state-dir", state, *auth, "--retry-for", "3s", env=env)
    assert code == 3, out
    assert "waiting for nas.lcoal (no network)" in out and "of 0:03; Ctrl-C to stop" in out
    assert "retrying in" not in out and "warning:" not in out


# --- 7. an interrupted run is counted -------------------------------------------------

def test_ctrl_c_is_recorded_and_the_resumed_run_counts_what_it_finished(tmp_path):
    import signal
    import time

    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "run.log"
    for i in range(24):
        write(src / f"f{i:02d}.bin", bytes([i]) * 65536, T0)
    args = ["apply", src, dst, "--state-dir", state, "--bwlimit", "256K", "--transfers", "1"]
    child = subprocess.Popen([sys.executable, "-m", "reconcile", *map(str, args)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([n for n in (os.listdir(dst) if dst.exists() else [])
                                                if n.startswith("f")]) < 3:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted; the next run resumes where this one stopped" in err
    st = json.loads(reconcile("status", src, dst, "--state-dir", state, "--json", check=0).stdout)
    last = st["last_run"]
    assert last["result"] == "interrupted" and last["done"] >= 2 and last["bytes"] == last["done"] * 65536
    left = st["pending_operations"]
    assert 0 < left < 24
    text = reconcile("status", src, dst, "--state-dir", state, check=0).stdout
    assert "interrupted" in text and "the next apply finishes it" in text

    p = reconcile("apply", src, dst, "--state-dir", state, "--json", "--log-file", log, check=0)
    doc = json.loads(p.stdout)
    assert len(doc["resumed"]) == left and all(d["result"] == "done" for d in doc["resumed"])
    assert doc["totals"]["done"] == left
    summary = p.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"ok: {left} done ({left} finishing the interrupted run)"), summary
    assert f"resumed: finished {left} operations of the interrupted run: upload f" in p.stderr
    logged = log.read_text()
    assert f"done={left} " in logged and f"bytes={left * 65536} " in logged, logged
    assert "resumed: finished" in logged
    assert tree(dst) == tree(src)


# --- 8. a damaged remote copy can be repaired ------------------------------------------

def test_verify_hash_repair_resends_what_differs_in_content(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"good content", T0)
    write(src / "b.txt", b"fine", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    write(dst / "a.txt", b"bitrot here!", T0)  # same size, same mtime: apply cannot see it
    for flags in ((), ("--checksum",)):
        reconcile("apply", src, dst, "--state-dir", state, *flags, check=0)
    assert (dst / "a.txt").read_bytes() == b"bitrot here!"
    p = reconcile("verify", src, dst, "--state-dir", state, "--hash", check=1)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("verify: 1 difference;"), last
    assert "`reconcile verify --hash --repair` re-sends the 1 that differ in content" in last
    p = reconcile("verify", src, dst, "--state-dir", state, "--hash", "--repair", "--json", check=0)
    assert json.loads(p.stdout)["repaired"] == ["a.txt"]
    assert "re-sent 1 that differed in content" in p.stderr.strip().splitlines()[-1]
    assert (dst / "a.txt").read_bytes() == b"good content"
    p = reconcile("verify", src, dst, "--state-dir", state, "--hash", check=0)
    assert p.stderr.strip().splitlines()[-1].startswith("verify: equal;")


# --- 9. output for people and for scripts ------------------------------------------------

def test_plan_into_a_pipe_is_one_tab_separated_line_per_operation(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    long = "a folder with a rather long name/" * 4 + "and a photo with a long name too.jpg"
    write(src / long, b"x", T0)
    write(src / "short.txt", b"y", T0)
    p = reconcile("plan", src, dst, "--state-dir", state, check=0, env={"COLUMNS": "60"})
    lines = p.stdout.splitlines()
    assert lines[0] == "operation\tpath\tto\tsize"
    assert f"upload (new)\t{long}\t\t1 B" in lines
    assert "upload (new)\tshort.txt\t\t1 B" in lines
    assert len(lines) == 3  # the header and two files, each on one line


def test_restore_finds_the_pairs_snapshot_without_state_dir(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    src, dst, back = tmp_path / "Pictures", tmp_path / "backup", tmp_path / "restored"
    for i in range(3):
        write(src / f"p{i}.jpg", bytes([i]) * 100, T0)
    reconcile("apply", src, dst, env=env, check=0)
    p = reconcile("restore", dst, back, env=env, check=0)
    assert "3 fetched" in p.stderr or "fetched" in p.stderr, p.stderr
    assert " 0 unverified" in p.stderr, p.stderr
    assert tree(back) == tree(src)


def test_all_names_each_mapping_and_json_is_one_document_per_line(tmp_path):
    cfg = tmp_path / "config.toml"
    for name in ("photos", "docs"):
        write(tmp_path / name / "f.txt", name.encode(), T0)
    (tmp_path / "backup").mkdir()  # each dest is made, not the folder above it
    cfg.write_text("".join(f'[mapping.{n}]\nsource = "{n}"\ndest = "backup/{n}"\nstate_dir = "state/{n}"\n\n'
                           for n in ("photos", "docs")))
    p = reconcile("apply", "--all", "--config", cfg, check=0)
    assert "[photos] ok: 1 done" in p.stderr and "[docs] ok: 1 done" in p.stderr, p.stderr
    p = reconcile("plan", "--all", "--json", "--config", cfg, "--log-file", tmp_path / "log", check=0)
    docs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [d["mapping"] for d in docs] == ["photos", "docs"] and all(d["operations"] == [] for d in docs)
    assert (tmp_path / "log").read_text().count("summary result=ok") == 2


def test_bwlimit_progress_shows_the_units_the_flag_uses(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for i in range(8):
        write(src / f"f{i}", bytes([i]) * 131072, T0)
    code, out = in_terminal("apply", src, dst, "--state-dir", state, "--bwlimit", "512K", env={"COLUMNS": "120"})
    assert code == 0, out
    assert "K/s" in out and "kB/s" not in out and "MB/s" not in out, out[-2000:]
    assert tree(dst) == tree(src)


# --- 10. habits from rsync and rclone ---------------------------------------------------

def test_version_and_dry_run(tmp_path):
    from reconcile import __version__

    assert reconcile("--version", check=0).stdout.strip() == f"reconcile {__version__}"
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"a", T0)
    for flag in ("-n", "--dry-run"):
        p = reconcile("apply", flag, src, dst, "--state-dir", state, check=0)
        assert p.stderr.strip().splitlines()[-1].startswith("plan: 1 to send"), p.stderr
        assert "upload (new)\ta.txt" in p.stdout
    assert not dst.exists()


def test_exclude_from_and_include(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for name in ("keep.txt", "cache.tmp", "important.tmp", "logs/x.log"):
        write(src / name, b"x", T0)
    patterns = tmp_path / "excludes"
    patterns.write_text("# what never goes\n*.tmp\n\nlogs/\n")
    reconcile("apply", src, dst, "--state-dir", state, "--exclude-from", patterns, "--include", "important.tmp",
              check=0)
    assert sorted(os.listdir(dst)) == ["important.tmp", "keep.txt"]
    p = reconcile("verify", src, dst, "--state-dir", state, "--exclude-from", patterns, "--include",
                  "important.tmp", check=0)
    assert "verify: equal" in p.stderr
    p = reconcile("apply", src, dst, "--state-dir", state, "--exclude-from", tmp_path / "missing", check=2)
    assert "cannot read --exclude-from" in p.stderr


def test_help_has_metavars_panels_examples_and_no_cut_descriptions():
    top = reconcile("--help", check=0).stdout
    assert "..." not in top.split("Commands:")[1]
    assert "--version" in top and "--install-completion" in top
    text = reconcile("apply", "--help", check=0).stdout
    for shown in ("--exclude PATTERN", "--max-delete N", "--backup-keep DAYS", "--bwlimit RATE",
                  "--retry-for DURATION", "--transfers N", "-n, --dry-run", "--exclude-from FILE",
                  "--include PATTERN"):
        assert shown in text, shown
    for panel in ("Safety guards:", "Controls:", "Connection:", "SFTP:", "S3:", "Config file and logs:"):
        assert f"\n{panel}\n" in text, panel
    assert "Example:\n    reconcile apply " in text
    assert "<str>" not in text and "<int>" not in text
    for command in ("plan", "status", "verify", "restore"):
        shown = reconcile(command, "--help", check=0).stdout
        assert "<str>" not in shown and "<int>" not in shown and "Example:" in shown, command
    status = reconcile("status", "--help", check=0).stdout
    assert "--state-dir DIR" in status and "--json" in status and "print one JSON document" in status


def test_wording_of_counts(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"a", T0)
    os.symlink("a.txt", src / "link")
    p = reconcile("apply", src, dst, "--state-dir", state, check=0)
    assert "[1 symlink skipped]" in p.stderr
    write(dst / "a.txt", b"b", T0 + 10**9)
    p = reconcile("verify", src, dst, "--state-dir", state, check=1)
    assert "verify: 1 difference;" in p.stderr


def test_a_port_where_nothing_listens_fails_at_once_for_a_new_pair(sshd_server, tmp_path):
    # a wrong port on a pair that never connected: exit 2 at once, not five minutes of retries
    from tests.servers_sftp import free_port, sftp_url

    src, root = tmp_path / "Pictures", tmp_path / "root"
    write(src / "a.jpg", b"a", T0)
    root.mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    auth = ("--ssh-key", sshd_server.user_key, "--known-hosts", kh)
    wrong = sftp_url(sshd_server, root, port=free_port())
    p = reconcile("apply", src, wrong, "--state-dir", tmp_path / "typo", *auth, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Connection refused: is the SSH server running there" in p.stderr
    assert "check the port in sftp://" in p.stderr and "retrying" not in p.stderr
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    p = reconcile("plan", src, "s3://photos", "--s3-endpoint", f"http://127.0.0.1:{free_port()}",
                  "--state-dir", tmp_path / "s3-typo", env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "check the port in the S3 endpoint" in p.stderr and "retrying" not in p.stderr
    # a pair that worked before: a server restarting is waited for, as before
    state, cfg = tmp_path / "state", tmp_path / "ssh_config"
    url = sftp_url(sshd_server, root).replace(f"{sshd_server.host}:{sshd_server.port}", "nas.local")
    cfg.write_text(f"Host nas.local\n  HostName {sshd_server.host}\n  Port {sshd_server.port}\n")
    env = {"RECONCILE_SSH_CONFIG": str(cfg)}
    reconcile("apply", src, url, "--state-dir", state, *auth, env=env, check=0)
    cfg.write_text(f"Host nas.local\n  HostName {sshd_server.host}\n  Port {free_port()}\n")
    write(src / "b.jpg", b"b", T0)
    p = reconcile("apply", src, url, "--state-dir", state, *auth, "--retry-for", "3s", env=env)
    assert p.returncode == 3, p.stderr
    assert "Connection refused" in p.stderr and "retrying in" in p.stderr


def test_unresolvable_s3_endpoint_fails_at_once_for_a_new_pair(tmp_path):
    src = tmp_path / "Pictures"
    write(src / "a.jpg", b"a", T0)
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    p = reconcile("plan", src, "s3://photos", "--s3-endpoint", "http://nas.lcoal:8333", "--state-dir",
                  tmp_path / "state", env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "cannot resolve host nas.lcoal: check the host name in the S3 endpoint" in p.stderr


def test_verify_repair_on_s3_resends_and_the_next_plan_is_empty(tmp_path, seaweed, s3_dest):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a.txt", b"good content", T0)
    write(src / "b.txt", b"fine", T0)
    args = ("--state-dir", state, *s3_dest.cli_args)
    reconcile("apply", src, s3_dest.url, *args, env=s3_dest.env, check=0)
    bucket, _, prefix = s3_dest.url[len("s3://"):].partition("/")
    key = f"{prefix}/a.txt"
    head = seaweed.client().head_object(Bucket=bucket, Key=key)
    # damaged behind reconcile's back: same size, same metadata (mtime, xxh3), other bytes
    seaweed.client().put_object(Bucket=bucket, Key=key, Body=b"bitrot here!", Metadata=head["Metadata"])
    p = reconcile("verify", src, s3_dest.url, *args, "--hash", env=s3_dest.env, check=1)
    assert "--repair` re-sends the 1 that differ in content" in p.stderr
    p = reconcile("verify", src, s3_dest.url, *args, "--repair", env=s3_dest.env, check=0)
    assert "re-sent 1 that differed in content" in p.stderr
    assert seaweed.client().get_object(Bucket=bucket, Key=key)["Body"].read() == b"good content"
    reconcile("verify", src, s3_dest.url, *args, "--hash", env=s3_dest.env, check=0)
    plan = json.loads(reconcile("plan", src, s3_dest.url, *args, "--json", env=s3_dest.env, check=0).stdout)
    assert plan["operations"] == []

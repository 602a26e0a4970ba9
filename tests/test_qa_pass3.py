"""A new user's third pass over main (qa): each finding through the real
command line against real servers, checking exit codes and the words printed."""

from __future__ import annotations

import json
import os

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


def test_a_name_s3_cannot_hold_does_not_cost_the_pair_its_rename_detection(s3_dest, tmp_path):
    """One Latin-1 name in the source failed its upload every run, so no run was
    complete, no snapshot was ever kept, and a renamed folder was sent again in
    full. It is now left out at plan time (not stored, exit 3), as on a USB disk."""
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(3):
        write(src / "album" / f"{i}.jpg", os.urandom(1000) + bytes([i]), T0)
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as f:
        f.write(b"x")
    args = ("--state-dir", state, *s3_dest.cli_args)
    p = reconcile("apply", src, s3_dest.url, *args, env=s3_dest.env, check=3)  # not backed up: never a success
    assert "cannot store caf\\xe9.txt on this destination: the name is not valid UTF-8" in p.stderr, p.stderr
    (src / "album").rename(src / "album-2026")
    doc = json.loads(reconcile("plan", src, s3_dest.url, *args, "--json", env=s3_dest.env, check=0).stdout)
    ops = [(o["op"], o.get("from"), o.get("to")) for o in doc["operations"]]
    assert ops == [("move", "album", "album-2026")], doc["operations"]
    assert len(doc["not_stored"]) == 1, doc
    p = reconcile("apply", src, s3_dest.url, *args, env=s3_dest.env, check=3)
    assert p.stderr.splitlines()[-1].startswith("partial: 1 done,"), p.stderr
    assert "1 not stored: the destination cannot hold them" in p.stderr.splitlines()[-1], p.stderr


def test_ctrl_c_during_a_large_sftp_upload_prints_no_failure_of_its_own(sshd_server, tmp_path):
    """Ctrl-C while a large file went up printed 'warning: upload m.bin: cannot
    finish m.bin: connection lost (SSHException); retrying in 0.4s' (or 'failed:
    upload m.bin: ... Socket is closed') before 'interrupted': the transfer
    threads met the connections the interruption closed, and said so as news."""
    import signal
    import sys
    import time

    from tests.kill import start_stalled
    from tests.servers_sftp import sftp_url

    src, state, root = tmp_path / "src", tmp_path / "state", tmp_path / "root"
    root.mkdir()
    src.mkdir()
    with open(src / "m.bin", "wb") as f:
        f.truncate(300 << 20)  # ranges on 4 connections, for long enough to be cut
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    url = sftp_url(sshd_server, root)
    args = ("--state-dir", state, "--ssh-key", sshd_server.user_key, "--known-hosts", kh)
    # a test started in the background inherits SIGINT ignored, and so would the child
    run = start_stalled([sys.executable, "-m", "reconcile", "apply", src, url, *map(str, args)],
                        "upload:2", state, tmp_path / "marker",
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run.wait()
    run.child.send_signal(signal.SIGINT)
    time.sleep(1)  # the main thread closes the connections while the sender is held
    run.release()
    err = run.child.stderr.read()
    assert run.child.wait(60) == 130, err
    assert err.splitlines() == ["reconcile: interrupted; the next run resumes where this one stopped"], err
    reconcile("apply", src, url, *args, check=0)
    reconcile("verify", src, url, *args, check=0)


def test_verify_of_one_file_says_1_file_compared(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "only.txt", b"one", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    p = reconcile("verify", src, dst, "--state-dir", state, check=0)
    assert p.stderr.startswith("verify: equal; 1 file compared ("), p.stderr


def test_a_file_changed_while_sent_is_named_and_its_temp_file_counted_in_the_singular(sshd_server, tmp_path):
    """it said 'removed 1 temporary files left by an interrupted run' in the run
    whose own upload had failed (nothing had been interrupted)."""
    import sys

    from tests.kill import start_stalled
    from tests.servers_sftp import sftp_url

    src, state, root = tmp_path / "src", tmp_path / "state", tmp_path / "root"
    root.mkdir()
    write(src / "live.bin", os.urandom(80 << 20), T0)
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    url = sftp_url(sshd_server, root)
    args = ("--state-dir", state, "--ssh-key", sshd_server.user_key, "--known-hosts", kh)
    # the first report of bytes sent while the file is partly sent: the caller reports every 0.2 s, and
    # on an idle machine 80 MiB may be sent in under 0.4 s, so a second partial report may never come
    run = start_stalled([sys.executable, "-m", "reconcile", "apply", src, url, *map(str, args)],
                        "upload:1", state, tmp_path / "marker")
    run.wait()
    with open(src / "live.bin", "r+b") as f:
        f.write(b"changed")
    run.release()
    err = run.child.stderr.read()
    assert run.child.wait(60) == 3, err
    assert "failed: upload live.bin: live.bin changed while being uploaded; left for the next run" in err, err
    assert "removed 1 temporary file left by an interrupted run or a failed upload" in err, err
    assert not [n for n in os.listdir(root) if n.startswith(".reconcile-tmp")]


def test_ctrl_c_while_the_command_starts_is_one_line_not_a_traceback(tmp_path):
    """Ctrl-C a fraction of a second after Enter (a wrong destination seen too
    late) landed in the imports and printed a 20-line traceback, exit -2. The
    interrupt is raised exactly there: when the command line imports typer."""
    import subprocess
    import sys

    raise_in_import = (
        "import sys, runpy\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'typer':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['reconcile', 'status', '--all']\n"
        "runpy.run_module('reconcile', run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", raise_in_import], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert p.returncode == 130, p.stderr
    assert p.stderr == "reconcile: interrupted while starting; nothing was done\n", p.stderr


def test_status_of_a_mistyped_pair_says_no_run_ever_made_it(tmp_path):
    """status of a pair typed with a typo said only 'last run: never', as if the
    backup had never run"""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.txt", b"a", T0)
    dst.mkdir()
    reconcile("apply", src, dst / "Pictures", env={"XDG_STATE_HOME": str(tmp_path / "st")}, check=0)
    p = reconcile("status", src, dst / "Picture", env={"XDG_STATE_HOME": str(tmp_path / "st")}, check=0)
    assert "last run: never (no state folder for this pair: check SOURCE and DEST" in p.stdout, p.stdout
    p = reconcile("status", src, dst / "Pictures", env={"XDG_STATE_HOME": str(tmp_path / "st")}, check=0)
    assert "last run: 20" in p.stdout and "never" not in p.stdout, p.stdout


def test_config_check_warns_of_a_local_destination_apply_would_refuse(tmp_path):
    """config check said 'ok, 0 warning(s)' for a mapping whose destination
    /mnt/usb/backup/Pictures lies on a disk not mounted (/mnt/usb missing),
    which apply then refuses with exit 2"""
    write(tmp_path / "src" / "a.txt", b"a", T0)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[mapping.photos]\nsource = "{tmp_path / "src"}"\ndest = "{tmp_path / "usb" / "backup" / "P"}"\n')
    p = reconcile("config", "check", "--config", cfg, check=0)  # a warning: the disk may be unmounted now
    assert (f"warning: {cfg}:3: mapping.photos.dest: destination {tmp_path / 'usb' / 'backup' / 'P'}: "
            f"{tmp_path / 'usb'} does not exist; apply refuses it; fix: mount the disk or correct the path") \
        in p.stdout, p.stdout
    assert "1 warning(s)" in p.stdout, p.stdout
    reconcile("apply", "photos", "--config", cfg, check=2)
    (tmp_path / "usb" / "backup").mkdir(parents=True)
    assert "ok, 0 warning(s)" in reconcile("config", "check", "--config", cfg, check=0).stdout

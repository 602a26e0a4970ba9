"""Messages a new user met on a first try of the command line (the qa pass):
each mistake ends in one line saying what is wrong and what to write instead,
with exit 2, never a bare exception name."""

from __future__ import annotations

import os

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


def _one_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("endpoint", ["htp://127.0.0.1:9", "127.0.0.1:9", "localhost:8333"])
def test_s3_endpoint_without_http_scheme_says_how_to_write_it(tmp_path, endpoint):
    write(tmp_path / "src" / "a.txt", b"a", T0)
    p = reconcile("apply", tmp_path / "src", "s3://bucket/p", "--s3-endpoint", endpoint, "--retry-for", "1s",
                  "--state-dir", tmp_path / "state",
                  env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"},
                  check=2)
    line = _one_line(p)
    assert f"--s3-endpoint '{endpoint}' is not an http:// or https:// URL" in line, line
    assert "like http://nas.local:8333" in line


@pytest.mark.parametrize("port", ["notaport", "99999"])
def test_sftp_bad_port_says_what_a_port_is(tmp_path, port):
    write(tmp_path / "src" / "a.txt", b"a", T0)
    p = reconcile("plan", tmp_path / "src", f"sftp://me@nas:{port}/backup", "--state-dir", tmp_path / "state",
                  check=2)
    line = _one_line(p)
    assert "bad port in" in line and "a number from 1 to 65535, like sftp://me@nas:2222/backup" in line, line


def test_ssh_public_key_given_as_key_says_give_the_private_one(tmp_path, sftp_dest):
    write(tmp_path / "src" / "a.txt", b"a", T0)
    key, known_hosts = sftp_dest.cli_args[1], sftp_dest.cli_args[3]
    p = reconcile("apply", tmp_path / "src", sftp_dest.url, "--ssh-key", key + ".pub",
                  "--known-hosts", known_hosts, "--state-dir", tmp_path / "state", check=2)
    line = _one_line(p)
    assert f"ssh key file {key}.pub is a public key: give the private key with --ssh-key" in line, line
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello\n")
    p = reconcile("apply", tmp_path / "src", sftp_dest.url, "--ssh-key", not_a_key,
                  "--known-hosts", known_hosts, "--state-dir", tmp_path / "state", check=2)
    line = _one_line(p)
    assert "is not a private key" in line and "give an OpenSSH or PEM private key" in line, line
    # the right key still works
    reconcile("apply", tmp_path / "src", sftp_dest.url, *sftp_dest.cli_args, "--state-dir", tmp_path / "state",
              check=0)


def test_plan_table_says_1_file_not_1_files(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "album" / "b.jpg", b"photo", T0)
    write(src / "big" / "x", b"1", T0)
    write(src / "big" / "y", b"2", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    (src / "album").rename(src / "album2")
    (src / "big").rename(src / "big2")
    p = reconcile("plan", src, dst, "--state-dir", state, check=0)
    rows = p.stdout.splitlines()
    assert "move dir\talbum/\talbum2\t1 file" in rows, p.stdout
    assert "move dir\tbig/\tbig2\t2 files" in rows, p.stdout


def test_config_mappings_plural_says_the_header_to_write(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[mappings.photos]\nsource = "{tmp_path}"\ndest = "/mnt/backup/photos"\n')
    p = reconcile("config", "check", "--config", cfg, check=2)
    assert "mappings: unknown top-level key; fix: did you mean [mapping.photos]?" in p.stdout, p.stdout
    p = reconcile("apply", "photos", "--config", cfg, check=2)
    assert "did you mean [mapping.photos]?" in p.stderr, p.stderr


def test_verify_of_a_destination_not_mounted_says_so(tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    dst = tmp_path / "usb" / "backup"
    write(src / "a.txt", b"a", T0)
    write(src / "b.txt", b"b", T0)
    dst.parent.mkdir()  # the disk, mounted
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    reconcile("verify", src, dst, "--state-dir", state, check=0)
    (dst / "a.txt").unlink()
    (dst / "b.txt").unlink()
    dst.rmdir()  # the disk's folder is gone: not mounted
    p = reconcile("verify", src, dst, "--state-dir", state, check=1)
    assert f"warning: the destination {dst} does not exist: is the disk mounted?" in p.stderr, p.stderr
    assert "missing  a.txt" in p.stdout
    # not 'reconcile apply sends the other 2': apply refuses a destination that held files and is gone (exit 4)
    last = p.stderr.strip().splitlines()[-1]
    assert "reconcile apply" not in last and "mount its disk (or correct the path) and verify again" in last, last


def test_refused_sftp_port_asks_whether_the_server_runs_on_that_port(tmp_path):
    from tests.servers_sftp import free_port

    write(tmp_path / "src" / "a.txt", b"a", T0)
    port = free_port()  # nothing listens there: a wrong port, or sshd not started
    p = reconcile("apply", tmp_path / "src", f"sftp://root@127.0.0.1:{port}/tmp/x", "--retry-for", "0s",
                  "--state-dir", tmp_path / "state", check=3)
    last = p.stderr.strip().splitlines()[-1]
    assert last == (f"reconcile: cannot connect to 127.0.0.1:{port}: Connection refused: "
                    f"is the SSH server running there, and is {port} its port?"), p.stderr


def test_restore_usage_names_its_arguments_as_the_help_does(tmp_path):
    usage = reconcile("restore", "--help", check=0).stdout.splitlines()[0]
    assert usage.endswith("restore [OPTIONS] {REMOTE_URL} [LOCAL_DIR]"), usage  # {}: typer's mark of a required one


def test_apply_all_names_the_mapping_whose_run_failed(tmp_path):
    write(tmp_path / "photos" / "a.jpg", b"a", T0)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[mapping.photos]\nsource = "{tmp_path / "photos"}"\ndest = "{tmp_path / "copy-photos"}"\n'
                   f'[mapping.docs]\nsource = "{tmp_path / "docs"}"\ndest = "{tmp_path / "copy-docs"}"\n')
    p = reconcile("apply", "--all", "--config", cfg, env={"XDG_STATE_HOME": str(tmp_path / "state")}, check=4)
    lines = p.stderr.strip().splitlines()
    assert any(line.startswith("[photos] ok: 1 done") for line in lines), p.stderr
    assert f"reconcile: [docs] source {tmp_path / 'docs'} does not exist (not mounted?)" in lines[-1], p.stderr


@pytest.mark.parametrize("keep", ["-3", "0"])
def test_backup_keep_of_zero_or_less_is_refused_and_prunes_nothing(tmp_path, keep):
    """--backup-keep -3 put the prune cutoff three days in the future: every
    earlier trash run was deleted ('pruned after -3 days')"""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a.txt", b"1", T0)
    args = ("--state-dir", state, "--backup-dir", ".trash")
    reconcile("apply", src, dst, *args, check=0)
    write(src / "a.txt", b"2", T0 + 10**9)
    reconcile("apply", src, dst, *args, check=0)
    kept = sorted(os.listdir(dst / ".trash"))
    assert len(kept) == 1
    write(src / "a.txt", b"3", T0 + 2 * 10**9)
    for command in ("plan", "apply"):
        p = reconcile(command, src, dst, *args, "--backup-keep", keep, check=2)
        assert "--backup-keep must be more than 0 days" in p.stderr, p.stderr
    assert sorted(os.listdir(dst / ".trash")) == kept
    assert (dst / ".trash" / kept[0] / "a.txt").read_bytes() == b"1"


@pytest.mark.parametrize("flag", ["--full-rescan", "--rescan-unwatched"])
def test_watch_period_of_zero_is_refused(tmp_path, flag):
    """--full-rescan 0 (meant as 'never') walked the whole tree over and over"""
    write(tmp_path / "src" / "a.txt", b"a", T0)
    p = reconcile("watch", tmp_path / "src", tmp_path / "dst", "--state-dir", tmp_path / "state", flag, "0",
                  timeout=60, check=2)
    assert f"{flag} must be more than 0" in p.stderr, p.stderr
    assert not (tmp_path / "dst").exists()


def test_restore_from_a_folder_not_there_asks_whether_the_disk_is_mounted(tmp_path):
    p = reconcile("restore", tmp_path / "usb" / "backup", tmp_path / "out", check=2)
    line = _one_line(p)
    assert line == f"reconcile: {tmp_path / 'usb' / 'backup'} does not exist; check the URL " \
                   "(is the disk it is on mounted?)", line


def test_a_mistyped_mapping_name_suggests_the_mapping_even_one_with_an_error(tmp_path):
    # photos has an error of its own (a typo'd key), so it was left out of the list: '(mappings: none)'
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mapping.photos]\nsource = "{tmp_path}"\ndest = "{tmp_path}/b"\ndelet = true\n')
    cfg.chmod(0o600)
    line = _one_line(reconcile("apply", "phtos", "--config", cfg, check=2))
    assert "(mappings: photos)" in line and "did you mean photos?" in line, line


def test_refused_port_of_a_new_pair_reads_as_sentences(tmp_path):
    # it read 'is the SSH server running there, and is 9 its port?: check the port in ...'
    from tests.servers_sftp import free_port

    write(tmp_path / "src" / "a.txt", b"a", T0)
    port = free_port()
    url = f"sftp://root@127.0.0.1:{port}/tmp/x"
    line = _one_line(reconcile("apply", tmp_path / "src", url, "--state-dir", tmp_path / "state",
                               timeout=120, check=2))
    assert "?:" not in line, line
    assert line.endswith(f"its port? This pair has never connected, so it is not retried: check the port in {url}"), line


def test_restore_over_one_differing_local_file_says_one_file(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "backup", tmp_path / "state"
    write(src / "a.txt", b"a", T0)
    write(src / "b.txt", b"b", T0)
    reconcile("apply", src, dst, "--state-dir", state, check=0)
    (src / "a.txt").write_bytes(b"changed since")
    line = _one_line(reconcile("restore", dst, src, check=0))
    assert "1 differing local file left alone (--overwrite replaces it)" in line, line
    assert (src / "a.txt").read_bytes() == b"changed since"


def test_watch_of_a_mistyped_source_names_it_in_its_warning(tmp_path, local_dest):
    # it said 'warning: cannot watch .: No such file or directory'
    from tests.watching import Watcher

    src = tmp_path / "Picturs"  # a typo: no such folder
    w = Watcher(src, local_dest, tmp_path / "state", tmp_path / "watch.log")
    try:
        text = w.wait_log(lambda t: "does not exist" in t)
    finally:
        w.stop(idle=False)
    assert f"cannot watch the source {src}: No such file or directory" in text, text
    assert "cannot watch .:" not in text, text


@pytest.mark.parametrize("below", ["sub", "sub/deeper"])
def test_a_local_destination_below_a_file_is_refused_naming_the_file(tmp_path, below):
    # every upload failed 'cannot write a.txt: Not a directory', exit 3, as if a retry could help
    write(tmp_path / "src" / "a.txt", b"a", T0)
    afile = tmp_path / "afile"
    afile.write_bytes(b"not a folder")
    line = _one_line(reconcile("apply", tmp_path / "src", afile / below, "--state-dir", tmp_path / "state", check=2))
    assert f"{afile} is a file, not a folder" in line, line
    assert afile.read_bytes() == b"not a folder"

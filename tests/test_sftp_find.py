"""Listing a tree by find over ssh (findlist.py): the parser with no server,
then against real sshds: the same rows as the SFTP listing, odd names and
all; SFTP-only servers and login shells that print their own lines; an error
on the server before and after rows."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from reconcile.entry import DIR, FILE, LINK, TEMP_MARK
from reconcile.errors import Permanent
from reconcile.remotes.sftp import findlist
from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.sftp.findlist import END, HEAD, BadListing, Parser, Unusable
from reconcile.remotes.sftp import SftpRemote
from reconcile.remotes.sftp.listing import FIND_FROM
from tests.cli import reconcile
from tests.mirror import tree
from tests.servers_sftp import run_sshd, sftp_url
from tests.test_sftp import no_agent_no_config, remote, root  # noqa: F401


def out(*records: bytes) -> bytes:
    return b"".join(r + b"\0" for r in records)


# --- the parser, no server ---------------------------------------------------

def test_records_become_the_rows_the_sftp_listing_gives():
    data = out(HEAD, b"d 4096 1700000000.0000000000 755 /a/", b"f 12 1700000001.5000000000 644 /a/x",
               b"l 3 1700000002.0000000000 777 /a/y", b"p 0 1700000003.0000000000 600 /fifo",
               b"f 5 5000000000.0000000000 4755 /setuid", END)
    p = Parser([])
    rows = p.feed(data)
    p.finish()
    assert rows == [
        (b"a/", DIR, 0, 1_700_000_000 * 10**9, 0, 0, stat.S_IFDIR | 0o755, None, None, None),
        (b"a/x", FILE, 12, 1_700_000_001 * 10**9, 0, 0, stat.S_IFREG | 0o644, None, None, None),
        (b"a/y", LINK, 0, 1_700_000_002 * 10**9, 0, 0, stat.S_IFLNK | 0o777, None, None, None),
        (b"fifo", FILE, 0, 1_700_000_003 * 10**9, 0, 0, stat.S_IFIFO | 0o600, None, None, None),
        # SFTP v3 sends uint32 seconds: a time past 2106 wraps the same way
        (b"setuid", FILE, 5, (5_000_000_000 & 0xFFFFFFFF) * 10**9, 0, 0, stat.S_IFREG | 0o4755, None, None, None),
    ]


def test_records_split_anywhere_across_reads_parse_the_same():
    data = out(b"motd line\n" + HEAD, b"d 1 1.0 755 /a b/", b"f 2 2.0 644 /a b/n\nl\xff", END)
    whole = Parser([]).feed(data)
    p = Parser([])
    rows = [r for i in range(len(data)) for r in p.feed(data[i:i + 1])]
    p.finish()
    assert rows == whole and [r[0] for r in rows] == [b"a b/", b"a b/n\nl\xff"]


def test_temp_names_are_reported_and_what_is_inside_a_temp_folder_is_not():
    temps: list[str] = []
    p = Parser(temps)
    rows = p.feed(out(HEAD, f"d 1 1.0 755 /{TEMP_MARK}d/".encode(), f"f 1 1.0 644 /{TEMP_MARK}d/in".encode(),
                      b"d 1 1.0 755 /k/", f"f 1 1.0 644 /k/{TEMP_MARK}f".encode(), END))
    assert [r[0] for r in rows] == [b"k/"]
    assert temps == [f"{TEMP_MARK}d", f"k/{TEMP_MARK}f"]


@pytest.mark.parametrize("data, error", [
    (out(b"Welcome!"), Unusable),  # a shell that did not run our command
    (out(HEAD, b"f 1 1.0 644 /b", b"f 1 1.0 644 /a", END), BadListing),  # out of order
    (out(HEAD, b"%y %s %T@ %m /a", END), BadListing),  # a find without -printf
    (out(HEAD, b"f 1 1.0 644 /a", END, b"f 1 1.0 644 /b"), BadListing),  # after the end
])
def test_what_find_does_not_print_is_refused(data, error):
    with pytest.raises(error):
        Parser([]).feed(data)


def test_a_listing_without_its_end_line_is_refused():
    p = Parser([])
    assert len(p.feed(out(HEAD, b"f 1 1.0 644 /a"))) == 1
    with pytest.raises(BadListing, match="broke off"):
        p.finish()


def test_the_script_quotes_any_root(tmp_path, monkeypatch):
    # run here by sh -s, as sshd would run it: a quote and a leading dash in the root
    base = tmp_path / "it's"
    (base / "-root" / "sub").mkdir(parents=True)
    (base / "-root" / "sub" / "f").write_bytes(b"x")
    monkeypatch.chdir(base)
    data = subprocess.run(findlist.COMMAND.split(), input=findlist.script(b"-root"), capture_output=True,
                          check=True).stdout
    p = Parser([])
    rows = p.feed(data)
    p.finish()
    assert [r[0] for r in rows] == [b"sub/", b"sub/f"]


# --- against sshd ------------------------------------------------------------

def odd_tree(root: Path) -> None:
    for d in ("a b", "a-b", "a/x", "-dash", "q'uote", "empty"):
        (root / d).mkdir(parents=True)
    for f in ("a b/f", "a-b/g", "a/x/h", "a0", "nl\nname", "-dash/x", "q'uote/$x", ".hidden"):
        (root / f).write_bytes(f.encode())
    (root / os.fsdecode(b"bad\xff")).write_bytes(b"latin-1")
    os.symlink("a/x", root / "link")
    os.symlink("/nowhere", root / "dangling")
    os.mkfifo(root / "fifo")
    os.chmod(root / "a0", 0o4755)
    os.utime(root / "a0", (5_000_000_000, 5_000_000_000))
    (root / f"{TEMP_MARK}abc-d").mkdir()
    (root / f"{TEMP_MARK}abc-d" / "in").write_bytes(b"partial")
    (root / "a" / f"{TEMP_MARK}zz-f").write_bytes(b"partial")


def listing(r: SftpRemote, how: str) -> tuple[list[tuple], list[str]]:
    r.options.sftp.find = how
    conn = r._connect()
    try:
        temps: list[str] = []
        rows = [row for run in r._row_runs(conn, temps) for row in run]
        return rows, sorted(temps)
    finally:
        conn.close()


def by_find(r: SftpRemote, temps: list[str] | None = None) -> list[tuple]:
    """the rows of _find_runs itself: Unusable is raised, never hidden by the fallback."""
    conn = r._connect()
    try:
        return [row for run in r._find_runs(conn, [] if temps is None else temps) for row in run]
    finally:
        conn.close()


def test_find_gives_the_sftp_listing_row_for_row(remote, root):
    odd_tree(root)
    by_find, by_sftp = listing(remote, "always"), listing(remote, "never")
    assert by_find == by_sftp
    assert len(by_find[0]) == 19 and by_find[1] == [f"{TEMP_MARK}abc-d", f"a/{TEMP_MARK}zz-f"]
    links = {r[0]: r[8] for r in by_find[0] if r[1] == LINK}
    assert links == {b"link": "a/x", b"dangling": "/nowhere"}


def test_the_root_is_quoted_for_the_server_shell(sshd_server, tmp_path):
    top = tmp_path / "it's -root"
    odd_tree(top)
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    r = SftpRemote.from_url(sftp_url(sshd_server, top), RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh)))
    try:
        assert by_find(r) == listing(r, "never")[0]
    finally:
        r.close()


def test_auto_lists_by_find_from_a_large_last_snapshot(remote):
    remote.options.sftp.find = "auto"
    remote.options.expected_entries = FIND_FROM - 1
    assert not remote._lists_by_find()
    remote.options.expected_entries = FIND_FROM
    assert remote._lists_by_find()
    remote.options.sftp.find = "never"
    assert not remote._lists_by_find()
    remote.options.sftp.find = "always"
    remote.options.expected_entries = 0
    assert remote._lists_by_find()


def test_a_run_tells_the_remote_how_large_its_last_snapshot_was(tmp_path):
    from reconcile.engine import SNAPSHOT_BYTES_PER_ENTRY, Run, RunOptions
    from tests.mirror import SilentReporter, run

    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"f{i:03d}").write_bytes(b"x")
    run(src, str(tmp_path / "dst"), tmp_path / "state")
    r = Run(str(src), str(tmp_path / "dst"), RunOptions(state_dir=str(tmp_path / "state")), SilentReporter())
    try:
        r.remote  # opened with the hint
        size = os.path.getsize(r.state.snapshot)
        assert r.opts.remote.expected_entries == size // SNAPSHOT_BYTES_PER_ENTRY > 0
    finally:
        r.close()


SFTP_SERVER = "/usr/lib/openssh/sftp-server"  # Debian's path
WRAPPER = """#!/bin/sh
# a login that says hello on both streams before it runs the command
case "$SSH_ORIGINAL_COMMAND" in
  internal-sftp|*sftp-server*) exec {sftp_server} ;;
esac
echo "Welcome to the NAS"
echo "motd on stderr" >&2
if [ -e {dir}/killfind ]; then PATH={dir}/bin:$PATH; export PATH; fi
sh -c "$SSH_ORIGINAL_COMMAND"
status=$?
if [ -e {dir}/fail ]; then echo "find: simulated error" >&2; fi
exit $status
"""
# a find that prints two good lines, then fails without a word
DYING_FIND = """#!/bin/sh
printf 'f 1 1.0 644 /a\\0f 1 1.0 644 /b\\0'
exit 3
"""


@pytest.fixture(scope="module")
def chatty_sshd(tmp_path_factory):
    if not os.path.exists(SFTP_SERVER):
        pytest.skip(f"no {SFTP_SERVER} here for the wrapper's SFTP sessions")
    d = tmp_path_factory.mktemp("chatty-sshd")
    wrapper = d / "login.sh"
    wrapper.write_text(WRAPPER.replace("{sftp_server}", SFTP_SERVER).replace("{dir}", str(d)))
    wrapper.chmod(0o755)
    (d / "bin").mkdir()
    (d / "bin" / "find").write_text(DYING_FIND)
    (d / "bin" / "find").chmod(0o755)
    yield from run_sshd(d, f"ForceCommand {wrapper}\n")


@pytest.fixture(scope="module")
def sftp_only_sshd(tmp_path_factory):
    yield from run_sshd(tmp_path_factory.mktemp("sftp-only-sshd"), "ForceCommand internal-sftp\n")


def remote_on(server, root: Path, tmp_path: Path) -> SftpRemote:
    kh = server.write_known_hosts(tmp_path / f"kh-{server.port}")
    options = RemoteOptions(sftp=SftpOptions(key=server.user_key, known_hosts=kh))
    options.sftp.find = "always"
    return SftpRemote.from_url(sftp_url(server, root), options)


def test_an_sftp_only_server_is_listed_over_sftp(sftp_only_sshd, tmp_path):
    root = tmp_path / "r"
    odd_tree(root)
    r = remote_on(sftp_only_sshd, root, tmp_path)
    try:
        with pytest.raises(Unusable):
            by_find(r)
        rows = list(r.list_rows())
        assert [row[0] for row in rows] == sorted(row[0] for row in rows) and len(rows) == 19
    finally:
        r.close()


def test_apply_to_an_sftp_only_server_with_ssh_find_always(sftp_only_sshd, tmp_path, run_env):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(20):
        (src / f"d{i}").mkdir(parents=True)
        (src / f"d{i}" / "f").write_bytes(b"%d" % i)
    kh = sftp_only_sshd.write_known_hosts(tmp_path / "kh")
    args = ["--ssh-key", sftp_only_sshd.user_key, "--known-hosts", kh, "--ssh-find", "always",
            "--state-dir", str(tmp_path / "state"), "--delete"]
    url = sftp_url(sftp_only_sshd, dst)
    for _ in range(2):
        p = reconcile("apply", str(src), url, *args, env=run_env)
        assert p.returncode == 0, p.stderr
    assert tree(dst, with_mtime=False) == tree(src, with_mtime=False)


def test_a_chatty_login_shell_is_read_past(chatty_sshd, tmp_path):
    root = tmp_path / "r"
    odd_tree(root)
    r = remote_on(chatty_sshd, root, tmp_path)
    try:
        temps: list[str] = []
        rows = by_find(r, temps)
        assert (rows, sorted(temps)) == listing(r, "never")
    finally:
        r.close()


def test_an_error_on_the_server_fails_the_listing_or_falls_back(chatty_sshd, tmp_path):
    fail = chatty_sshd.dir / "fail"
    fail.write_text("")
    try:
        root = tmp_path / "r"
        (root / "d").mkdir(parents=True)
        r = remote_on(chatty_sshd, root, tmp_path)
        try:
            # rows already handed on cannot be taken back: the listing fails, saying why
            with pytest.raises(Permanent, match="find: simulated error.*--ssh-find never"):
                list(r.list_rows())
            # nothing handed on yet: SFTP lists instead
            (root / "d").rmdir()
            assert list(r.list_rows()) == []
        finally:
            r.close()
    finally:
        fail.unlink()


def test_a_wrong_ssh_find_value_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "src").mkdir()
    p = reconcile("plan", tmp_path / "src", tmp_path / "dst", "--ssh-find", "sometimes", check=2)
    assert "'sometimes' is not one of auto, always, never" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_find_killed_without_a_word_fails_the_listing(chatty_sshd, tmp_path):
    # sort still sorts what it got and ends well: only find's own status tells
    kill = chatty_sshd.dir / "killfind"
    kill.write_text("")
    try:
        root = tmp_path / "r"
        root.mkdir()
        r = remote_on(chatty_sshd, root, tmp_path)
        try:
            with pytest.raises(Permanent, match="the server said: find: exited with status 3"):
                list(r.list_rows())
        finally:
            r.close()
    finally:
        kill.unlink()


def test_a_root_relative_to_the_login_folder_is_the_one_sftp_lists(sshd_server, tmp_path):
    # sftp://host/~/x is x under the login folder; find is given the path SFTP resolves
    top = tmp_path / "rel"
    odd_tree(top)
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    relative = os.path.relpath(top, os.path.expanduser("~root"))
    url = sftp_url(sshd_server, Path("/~") / relative)
    r = SftpRemote.from_url(url, RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh)))
    try:
        assert not r._abs("").startswith(b"/")
        rows = by_find(r)
        assert rows == listing(r, "never")[0] and len(rows) == 19
    finally:
        r.close()


def test_config_check_names_a_wrong_ssh_find(tmp_path):
    cfg = tmp_path / "c.toml"
    (tmp_path / "src").mkdir()
    cfg.write_text(f'[mapping.nas]\nsource = "{tmp_path / "src"}"\ndest = "sftp://nas/backup"\n'
                   'ssh_find = "sometimes"\n')
    p = reconcile("config", "check", "--config", cfg, check=2)
    assert f"{cfg}:4: mapping.nas.ssh_find: 'sometimes' is not auto, always or never" in p.stdout

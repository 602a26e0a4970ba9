"""What an SFTP run costs in connections and round trips (issue 21): one ssh
connection carries the listing's and every upload thread's sessions; a server
that allows one session per connection still gets every file; a folder move
asks its checks together; -v says what the run cost. Counted through the
suite's TCP proxy or by the remote itself; never timed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.sftp import SftpRemote
from tests.cli import reconcile
from tests.mirror import run, tree
from tests.servers_sftp import run_sshd, sftp_url


def make_src(src: Path, files: int = 60) -> None:
    for i in range(files):
        d = src / f"top{i % 3}" / f"sub{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}").write_bytes(os.urandom(100 + i))


def proxied_options(server, proxy, tmp_path: Path, transfers: int = 4) -> RemoteOptions:
    kh = server.write_known_hosts(tmp_path / "kh-proxy", proxy.port)
    return RemoteOptions(sftp=SftpOptions(key=server.user_key, known_hosts=kh), transfers=transfers)


def test_first_sync_no_change_and_folder_move_each_open_one_connection(sshd_server, sftp_proxy, tmp_path):
    src, state, root = tmp_path / "src", tmp_path / "state", tmp_path / "sftp-root"
    make_src(src)
    url = sftp_url(sshd_server, root, port=sftp_proxy.port)
    opened = []
    for step in ("first sync", "no change", "folder move"):
        if step == "folder move":
            (src / "top1").rename(src / "moved")
        before = sftp_proxy.connections
        result = run(src, url, state, options=proxied_options(sshd_server, sftp_proxy, tmp_path), delete=True)
        assert result.outcome.complete, step
        opened.append(sftp_proxy.connections - before)
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False), step
    # the listing and four upload threads share one handshake (sessions on one connection)
    assert opened == [1, 1, 1]


@pytest.fixture(scope="module")
def one_session_sshd(tmp_path_factory):
    """a server that opens one session per connection (some NAS and phone servers)."""
    yield from run_sshd(tmp_path_factory.mktemp("one-session-sshd"), "Match all\n    MaxSessions 1\n")


def test_a_server_allowing_one_session_per_connection_gets_one_connection_per_thread(one_session_sshd, tmp_path):
    src, state, root = tmp_path / "src", tmp_path / "state", tmp_path / "sftp-root"
    make_src(src)
    kh = one_session_sshd.write_known_hosts(tmp_path / "kh")
    options = RemoteOptions(sftp=SftpOptions(key=one_session_sshd.user_key, known_hosts=kh), transfers=4)
    result = run(src, sftp_url(one_session_sshd, root), state, options=options)
    assert result.outcome.complete
    assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
    (src / "top2").rename(src / "moved")
    result = run(src, sftp_url(one_session_sshd, root), state, options=options, delete=True)
    assert result.outcome.complete
    assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
    remote = SftpRemote.from_url(sftp_url(one_session_sshd, root), options)
    try:
        remote.stat("")
        other = threading.Thread(target=remote.stat, args=("moved",))
        other.start()
        other.join()
        net = remote.net_stats()
        assert (net.connections, net.sessions) == (2, 3)  # a second session refused: a connection of its own
    finally:
        remote.close()


def test_a_folder_move_asks_its_checks_in_one_round_trip(sshd_server, tmp_path):
    root = tmp_path / "r"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "f").write_bytes(b"x")
    (root / "x" / "y").mkdir(parents=True)
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    remote = SftpRemote.from_url(sftp_url(sshd_server, root), RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh)))
    try:
        remote.stat("")  # connected
        calls = []
        sftp = remote._sftp()
        real = sftp._read_response

        def counted(*a):
            calls.append(a)
            return real(*a)

        sftp._read_response = counted
        sent = []
        real_send = sftp._async_request

        def counted_send(*a):
            sent.append((len(calls), a[1]))
            return real_send(*a)

        sftp._async_request = counted_send
        remote.move("a/b/c", "x/y/c")
        # the source, the target and both folders above the target asked before any reply is read
        assert [n for n, _ in sent[:4]] == [0, 0, 0, 0]
        assert len(sent) == 5  # then the rename
        assert (root / "x" / "y" / "c" / "f").read_bytes() == b"x"
        os.symlink(root / "a", root / "link")
        with pytest.raises(Exception, match="symlink"):
            remote.move("x/y/c", "link/c")
        with pytest.raises(Exception, match="target exists"):
            remote.move("x/y", "a")
    finally:
        remote.close()


def test_verbose_says_what_the_run_cost_on_the_network(sshd_server, sftp_proxy, tmp_path, run_env):
    src, root = tmp_path / "src", tmp_path / "sftp-root"
    make_src(src, 12)
    kh = sshd_server.write_known_hosts(tmp_path / "kh-proxy", sftp_proxy.port)
    args = ["--ssh-key", sshd_server.user_key, "--known-hosts", kh, "--state-dir", str(tmp_path / "state")]
    url = sftp_url(sshd_server, root, port=sftp_proxy.port)
    p = reconcile("apply", src, url, *args, "-v", env=run_env, check=0)
    line = [x for x in p.stderr.splitlines() if x.startswith("network: ")]
    assert len(line) == 1, p.stderr
    assert line[0].startswith(f"network: {sftp_proxy.connections} ssh connection (")
    waited = int(line[0].split(", ")[-1].split()[0])
    assert waited >= 5  # a handshake alone waits on several
    p = reconcile("apply", src, url, *args, env=run_env, check=0)
    assert "network: " not in p.stderr  # only with -v


def test_the_listing_asks_the_roots_stat_with_its_first_opendir(sshd_server, tmp_path, monkeypatch):
    from paramiko.sftp import CMD_OPENDIR, CMD_STAT

    from reconcile import forked
    from reconcile.remotes.sftp import wire

    monkeypatch.setattr(forked, "available", lambda: False)  # counted in this process
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    remote = SftpRemote.from_url(sftp_url(sshd_server, root), RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh)))
    asked: list[int] = []
    request, next_reply = wire._Pipe.request, wire._Pipe.next

    def counted_request(self, t, *parts):
        asked.append(t)
        return request(self, t, *parts)

    def first_reply(self):
        asked.append(-1)  # a reply read
        return next_reply(self)

    monkeypatch.setattr(wire._Pipe, "request", counted_request)
    monkeypatch.setattr(wire._Pipe, "next", first_reply)
    try:
        assert [r[0] for r in remote.list_rows()] == [b"a/"]
        assert asked[:3] == [CMD_STAT, CMD_OPENDIR, -1]  # both out before the first reply
    finally:
        remote.close()


def test_small_files_in_flight_follow_the_servers_open_file_limit(sshd_server, tmp_path, monkeypatch):
    # OpenSSH says (limits@openssh.com) how many files it keeps open: up to half, at most 256, go out
    # together instead of 64 (a first sync at RTT 50 ms: a quarter less time)
    from paramiko.sftp import CMD_OPEN

    from reconcile import forked
    from reconcile.remotes.sftp import batch, wire
    from tests.mirror import run

    monkeypatch.setattr(forked, "available", lambda: False)  # every file sent from this process
    src, root = tmp_path / "src", tmp_path / "sftp-root"
    src.mkdir()
    for i in range(300):
        (src / f"f{i:03d}").write_bytes(b"%d" % i)
    opens: list[int] = [0]  # OPENs asked before each reply read
    request, next_reply = wire._Pipe.request, wire._Pipe.next

    def counted_request(self, t, *parts):
        if t == CMD_OPEN:
            opens[-1] += 1
        return request(self, t, *parts)

    def counted_next(self):
        opens.append(0)
        return next_reply(self)

    monkeypatch.setattr(wire._Pipe, "request", counted_request)
    monkeypatch.setattr(wire._Pipe, "next", counted_next)
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    result = run(src, sftp_url(sshd_server, root), tmp_path / "state",
                 options=RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh), transfers=1))
    assert result.outcome.complete
    assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
    assert max(opens) == batch.BATCH_FILES_MAX > batch.BATCH_FILES

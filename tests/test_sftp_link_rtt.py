"""A first sync over a slow link (issue 21), against the real sshd: the
probe of the server's disk, a missing root several levels deep and the
folders of new files each cost a fixed number of round trips, not one per
question or per level; upload threads open their sessions together; the
listing takes over the probe's idle session; and on a link whose round
trips, not the CPU, limit the small files, no upload child is forked (its
handshake would cost more than its core saves). Round trips are counted as
send-then-wait turns on the SFTP client, never timed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reconcile import apply, forked
from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.sftp import SftpRemote, session
from reconcile.remotes.sftp.probe import probe_folder
from tests.mirror import run, tree
from tests.servers_sftp import sftp_url
from tests.test_sftp import no_agent_no_config  # noqa: F401
from tests.test_sftp_batch import make_src
from tests.test_sftp_listing import wait_until_quiet


class Turns:
    """counts the waits of one SFTPClient: each time it reads a reply after
    having sent requests (requests sent together, then their replies read,
    are one round trip)."""

    def __init__(self, sftp) -> None:
        self.count = 0
        self._sent = False
        send, read = sftp._async_request, sftp._read_response

        def counted_send(*a, **kw):
            self._sent = True
            return send(*a, **kw)

        def counted_read(*a, **kw):
            if self._sent:
                self.count += 1
                self._sent = False
            return read(*a, **kw)

        sftp._async_request, sftp._read_response = counted_send, counted_read


def remote_at(sshd_server, tmp_path: Path, root: Path, transfers: int = 4) -> SftpRemote:
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    options = RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh), transfers=transfers, state_dir=str(tmp_path / "rstate"))
    return SftpRemote.from_url(sftp_url(sshd_server, root), options)


def test_the_probe_of_the_servers_disk_takes_two_round_trips_and_leaves_nothing(sshd_server, tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        sftp = remote._sftp()
        turns = Turns(sftp)
        facts = probe_folder(sftp, str(root))
        # create (with a Windows-only name and a symlink), then set and read the time with the case check;
        # the removes are not waited for
        assert turns.count == 2
        assert facts is not None and (facts.case_insensitive, facts.windows_names, facts.symlinks) == (
            False, False, True)
        assert facts.mtime_precision_ns == 1_000_000_000
        turns = Turns(sftp)
        assert remote._existing_folder(sftp) == str(root)
        assert turns.count == 1  # the root and every folder above it asked together
        assert list(root.iterdir()) == []  # the removes were served before the next request
    finally:
        remote.close()


def test_a_probes_removes_are_done_when_the_session_closes_right_after(sshd_server, tmp_path):
    """sftp-server stops at the end of its input: removes still queued there
    as the channel closes would be dropped, and probe files left behind."""
    for i in range(5):
        root = tmp_path / f"r{i}"
        root.mkdir()
        remote = remote_at(sshd_server, tmp_path, root)
        try:
            probe_folder(remote._sftp(), str(root))
        finally:
            remote.close()
        assert list(root.iterdir()) == []


def test_a_probe_where_nothing_can_be_written_assumes_nothing_and_leaves_nothing(sshd_server, tmp_path):
    missing = tmp_path / "no-such-folder"
    remote = remote_at(sshd_server, tmp_path, tmp_path)
    try:
        assert probe_folder(remote._sftp(), str(missing)) is None
        assert not missing.exists()
    finally:
        remote.close()


def test_a_missing_root_several_levels_deep_is_made_in_one_round_trip(sshd_server, tmp_path):
    root = tmp_path / "a" / "b" / "c" / "d"
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        sftp = remote._sftp()
        remote._root_missing = True  # as a first sync's listing finds it
        turns = Turns(sftp)
        remote._make_root(sftp)
        assert root.is_dir()
        assert turns.count == 1  # every level made and the root checked together
        remote._make_root(sftp)  # there already: harmless
        assert root.is_dir()
    finally:
        remote.close()


def test_upload_threads_open_their_sessions_together(sshd_server, tmp_path):
    # each session costs three round trips: threads waiting their turn paid them one after another
    root = tmp_path / "r"
    (root / "x").mkdir(parents=True)
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        remote.stat("")  # the connection the sessions are opened on
        both_inside = threading.Barrier(2, timeout=30)
        real = remote._open_session

        def meeting(*a, **kw):
            both_inside.wait()  # broken (an error) unless another thread opens one at the same time
            return real(*a, **kw)

        remote._open_session = meeting
        errors: list[BaseException] = []

        def stat() -> None:
            try:
                assert remote.stat("x") is not None
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=stat) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert (remote.net_stats().connections, remote.net_stats().sessions) == (1, 3)
    finally:
        remote.close()


def test_a_first_sync_lists_over_the_probes_session_and_makes_all_folders_ahead(sshd_server, tmp_path,
                                                                                 monkeypatch):
    from paramiko.sftp import CMD_OPEN

    from reconcile.remotes.sftp import wire

    monkeypatch.setattr(forked, "available", lambda: False)  # everything counted in this process
    src, root = tmp_path / "src", tmp_path / "deep" / "root"
    for i in range(12):
        d = src / f"t{i % 2}" / f"d{i % 3}" / f"e{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * i)
    opens = [0]
    request = wire._Pipe.request

    def counted_request(self, t, *parts):
        if t == CMD_OPEN:
            opens[0] += 1
        return request(self, t, *parts)

    monkeypatch.setattr(wire._Pipe, "request", counted_request)
    remote = remote_at(sshd_server, tmp_path, root, transfers=1)
    monkeypatch.setattr(SftpRemote, "from_url", classmethod(lambda cls, url, options: remote))
    try:
        result = run(src, sftp_url(sshd_server, root), tmp_path / "state", options=remote.options)
        assert result.outcome.complete
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
        # the probe's session lists, then uploads: no second session on the one connection
        assert (remote.net_stats().connections, remote.net_stats().sessions) == (1, 1)
        assert opens[0] == 12  # every folder was there before its files' opens: none opened twice
    finally:
        remote.close()


@pytest.mark.skipif(not forked.available(), reason="the upload child needs Linux and two cores")
@pytest.mark.parametrize("slow_link", [True, False])
def test_no_upload_child_is_forked_where_the_link_not_the_cpu_is_the_limit(sftp_dest, tmp_path, monkeypatch,
                                                                          slow_link):
    import os

    from reconcile.remotes.sftp import batch

    monkeypatch.setattr(apply, "FORK_SMALL_FROM", 20)
    # every link counts as slow, or none does (the measured round trip decides on a real link)
    monkeypatch.setattr(session, "LINK_BOUND_RTT", 0.0 if slow_link else float("inf"))
    pids = tmp_path / "pids"
    real = batch.Batch.upload_many

    def noted(self, *a, **kw):
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(self, *a, **kw)

    monkeypatch.setattr(SftpRemote, "upload_many", noted)
    src = tmp_path / "src-tree"
    make_src(src, 120, seed=5)
    wait_until_quiet()  # a thread an earlier test left would stop the fork either way
    result = run(src, sftp_dest.url, tmp_path / "state", options=sftp_dest.options)
    assert result.outcome.complete and result.outcome.count("done") == len(result.plan.ops)
    assert tree(tmp_path / "sftp-root") == tree(src)
    assert len(set(pids.read_text().split())) == (1 if slow_link else 2)


def test_closing_wakes_the_connections_thread_instead_of_leaving_it_to_the_servers_reply(sshd_server, tmp_path):
    # paramiko's thread sits in a read until the server answers the close (a round trip) or its
    # 0.1 s poll ends: every run ended that much later. The socket is shut down first, which wakes it.
    import socket

    root = tmp_path / "r"
    root.mkdir()
    remote = remote_at(sshd_server, tmp_path, root)
    remote.stat("")
    transport = remote._conn().transport
    wire, calls = transport.sock, []
    wire._sock = _Recording(wire._sock, calls)
    remote.close()
    assert calls[:2] == [("shutdown", socket.SHUT_RDWR), ("close",)]
    assert not transport.is_alive()


class _Recording:
    """a socket whose shutdown and close calls are noted (everything else passes through)."""

    def __init__(self, sock, calls: list) -> None:
        self._sock, self._calls = sock, calls

    def shutdown(self, how):
        self._calls.append(("shutdown", how))
        return self._sock.shutdown(how)

    def close(self):
        self._calls.append(("close",))
        return self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_a_sessions_limits_are_asked_without_waiting_for_the_answer(sshd_server, tmp_path, monkeypatch):
    # limits@openssh.com (request sizes, open files) was a round trip of its own on every session
    import paramiko

    from reconcile.remotes.sftp import wire

    monkeypatch.setattr(forked, "available", lambda: False)
    made: list[Turns] = []
    real = paramiko.SFTPClient.__init__

    def counted(self, *a, **kw):
        real(self, *a, **kw)  # SFTP's INIT
        made.append(Turns(self))

    monkeypatch.setattr(paramiko.SFTPClient, "__init__", counted)
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        assert remote.stat("a") is not None
        assert made[0].count == 1  # the limits and the stat answered in one wait
        assert remote._conn().write_chunk == wire.MAX_CHUNK  # and the answer was read (OpenSSH's 255 KiB)
        other = remote_at(sshd_server, tmp_path, root)
        try:
            assert [r[0] for r in other.list_rows()] == [b"a/"]  # a raw listing meets the answer first
            conn = other._session()  # the listing's session, handed on: nothing was left unread
            assert conn.limits.values is not None and other.net_stats().sessions == 1
        finally:
            other.close()
    finally:
        remote.close()


def test_a_listings_session_serves_the_next_thread_before_the_last_replies_come_back(sshd_server, tmp_path,
                                                                                    monkeypatch):
    # the listing's last CLOSEs were read before its session could serve the move of a folder rename:
    # a round trip; now whoever uses the session next drops them as they come
    from paramiko.sftp import CMD_ATTRS, CMD_STAT

    from reconcile.remotes.sftp import wire

    monkeypatch.setattr(forked, "available", lambda: False)
    root = tmp_path / "r"
    for d in ("a/b", "a/c", "x"):
        (root / d).mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"f")
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        assert [r[0] for r in remote.list_rows()] == [b"a/", b"a/b/", b"a/b/f", b"a/c/", b"x/"]
        conn = remote._conn()  # the listing's session, handed on
        assert remote.net_stats().sessions == 1
        left = len(conn.sftp._expecting)
        assert left > 0  # its last replies were not waited for
        remote.move("a/b", "x/b")  # paramiko's reader drops them on the way
        assert (root / "x" / "b" / "f").read_bytes() == b"f"
        assert len(conn.sftp._expecting) == 0
        other = remote_at(sshd_server, tmp_path, root)
        try:
            list(other.list_rows())
            conn = other._conn()
            assert len(conn.sftp._expecting) > 0
            pipe = wire._Pipe(conn.sftp)  # a raw reader next (as upload_many is): it drops them too
            num = pipe.request(CMD_STAT, wire._sftp_str(other._abs("x/b/f")))
            t, _body = pipe.reply(num, {}, [(num,)])
            assert t == CMD_ATTRS and pipe.idle and len(conn.sftp._expecting) == 0
        finally:
            other.close()
    finally:
        remote.close()


def test_a_move_to_a_top_level_name_is_one_request_and_refuses_what_the_checked_move_refuses(sshd_server,
                                                                                           tmp_path):
    # OpenSSH's plain rename never replaces a target and fails on a missing source: the checks
    # (two lstats, a round trip) are the server's; where it fails, the checked move says why
    from reconcile.errors import NotFound, Permanent

    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"f")
    (root / "full").mkdir()
    (root / "full" / "g").write_bytes(b"g")
    (root / "file").write_bytes(b"file")
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        assert not remote.capabilities.case_insensitive  # the disk probed, as a run has by its moves
        turns = Turns(remote._sftp())
        remote.move("a", "moved")
        assert turns.count == 1
        assert (root / "moved" / "b" / "f").read_bytes() == b"f" and not (root / "a").exists()
        with pytest.raises(Permanent, match="target exists"):
            remote.move("moved", "full")
        (root / "empty").mkdir()
        with pytest.raises(Permanent, match="target exists"):
            remote.move("moved", "empty")  # a rename(2) would have replaced it
        assert (root / "moved" / "b" / "f").read_bytes() == b"f" and (root / "full" / "g").exists()
        with pytest.raises(NotFound):
            remote.move("no-such-folder", "elsewhere")
        remote.move("full/g", "file")  # a file is replaced, as by the checked move
        assert (root / "file").read_bytes() == b"g"
    finally:
        remote.close()


def _wire_log(monkeypatch) -> list[tuple[str, int]]:
    """the ssh messages sent and read from here on, by type, in order, and
    where the sign-in's caller starts waiting for its answer"""
    import paramiko

    log: list[tuple[str, int]] = []
    send, read = paramiko.packet.Packetizer.send_message, paramiko.packet.Packetizer.read_message

    def sent(self, data):
        log.append(("sent", data.asbytes()[0]))
        return send(self, data)

    def got(self):
        ptype, m = read(self)
        log.append(("read", ptype))
        return ptype, m

    def waited(self, event):
        log.append(("wait", 0))  # the caller waits for the sign-in's answer from here
        return wait(self, event)

    wait = paramiko.auth_handler.AuthHandler.wait_for_response
    monkeypatch.setattr(paramiko.packet.Packetizer, "send_message", sent)
    monkeypatch.setattr(paramiko.packet.Packetizer, "read_message", got)
    monkeypatch.setattr(paramiko.auth_handler.AuthHandler, "wait_for_response", waited)
    return log


def test_the_sign_in_and_the_sessions_channel_go_without_waiting_for_the_answers_before(sshd_server, tmp_path,
                                                                                       monkeypatch):
    # OpenSSH handles a connection's messages in turn: the userauth request waited for the service's
    # acceptance, and the channel open for the sign-in's success: two round trips every connection
    from paramiko.common import MSG_CHANNEL_OPEN, MSG_USERAUTH_REQUEST, MSG_USERAUTH_SUCCESS

    log = _wire_log(monkeypatch)
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        assert remote.stat("a") is not None
        assert (remote.net_stats().connections, remote.net_stats().sessions) == (1, 1)
    finally:
        remote.close()
    # both sent before the caller waits for the sign-in (the answers may come in any time after)
    assert log.index(("sent", MSG_USERAUTH_REQUEST)) < log.index(("wait", 0))
    assert log.index(("sent", MSG_CHANNEL_OPEN)) < log.index(("wait", 0))
    assert ("read", MSG_USERAUTH_SUCCESS) in log


def test_a_key_the_server_refuses_first_leaves_its_early_channel_behind(sshd_server, tmp_path, monkeypatch):
    # the channel asked for behind a refused sign-in is never answered (OpenSSH says UNIMPLEMENTED):
    # it is forgotten, and the session opens after the next key signs in
    import paramiko
    from paramiko.common import MSG_CHANNEL_OPEN

    log = _wire_log(monkeypatch)
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    remote = remote_at(sshd_server, tmp_path, root)
    keys = remote._keys
    stray = paramiko.ECDSAKey.generate()
    monkeypatch.setattr(remote, "_keys", lambda: iter([("a key the server does not know", stray), *keys()]))
    try:
        assert remote.stat("a") is not None
        assert (remote.net_stats().connections, remote.net_stats().sessions) == (1, 1)
    finally:
        remote.close()
    assert log.count(("sent", MSG_CHANNEL_OPEN)) == 2  # behind the refused key's request, then after sign-in

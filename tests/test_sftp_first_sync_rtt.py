"""A first sync's round trips after sign-in (issue 21), against the real
sshd: where the probe found no root, the listing is not asked again; the
root is made in the files' pipeline, not in a round trip of its own; a file
frees its place in the pipeline once its handle is closed, not once it is
renamed; and a root that cannot be made still fails as it did, with one
clear error. Requests are recorded in the order they go out, never timed."""

from __future__ import annotations

import dataclasses
import os

import pytest
from paramiko.sftp import CMD_EXTENDED, CMD_LSTAT, CMD_MKDIR, CMD_OPEN, CMD_OPENDIR, CMD_STAT

from reconcile import forked
from reconcile.remotes.sftp import SftpRemote, batch, wire
from tests.mirror import run, tree
from tests.mounts import read_only_bind
from tests.servers_sftp import sftp_url
from tests.test_sftp import no_agent_no_config  # noqa: F401
from tests.test_sftp_link_rtt import remote_at


def make_src(src, n: int = 12) -> None:
    for i in range(n):
        d = src / f"t{i % 2}" / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * (i + 1))


class Recorded:
    """the pipe's requests (type, first string) and the replies it read, in order."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[tuple] = []
        self.numbers: dict[int, tuple] = {}
        request, following = wire._Pipe.request, wire._Pipe.next
        events, numbers = self.events, self.numbers

        def recorded_request(pipe, t, *parts):
            num = request(pipe, t, *parts)
            what = ("ask", t, _first_string(parts))
            numbers[num] = what
            events.append(what)
            return num

        def recorded_next(pipe):
            num, t, body = following(pipe)
            events.append(("answer",) + numbers.get(num, ("?", None, None))[1:])
            return num, t, body

        monkeypatch.setattr(wire._Pipe, "request", recorded_request)
        monkeypatch.setattr(wire._Pipe, "next", recorded_next)
        self.paramiko: list[int] = []
        real = wire.paramiko.SFTPClient._async_request

        def counted(sftp, fileobj, t, *args):
            self.paramiko.append(t)
            return real(sftp, fileobj, t, *args)

        monkeypatch.setattr(wire.paramiko.SFTPClient, "_async_request", counted)


def _first_string(parts) -> bytes | None:
    for p in parts:
        if isinstance(p, bytes) and len(p) >= 4:
            n = int.from_bytes(p[:4], "big")
            if 0 < n <= len(p) - 4:
                return p[4:4 + n]
    return None


def first_sync(sshd_server, tmp_path, monkeypatch, root, transfers: int = 1):
    monkeypatch.setattr(forked, "available", lambda: False)  # everything in this process
    src = tmp_path / "src"
    make_src(src)
    remote = remote_at(sshd_server, tmp_path, root, transfers=transfers)
    monkeypatch.setattr(SftpRemote, "from_url", classmethod(lambda cls, url, options: remote))
    return src, remote


def test_a_first_sync_asks_no_listing_and_makes_the_root_in_the_files_pipeline(sshd_server, tmp_path, monkeypatch):
    root = tmp_path / "deep" / "root"
    rec = Recorded(monkeypatch)
    made_alone = []
    real_make_root = SftpRemote._make_root
    monkeypatch.setattr(SftpRemote, "_make_root", lambda self, sftp: (made_alone.append(1), real_make_root(self, sftp)))
    src, remote = first_sync(sshd_server, tmp_path, monkeypatch, root)
    try:
        result = run(src, sftp_url(sshd_server, root), tmp_path / "state", options=remote.options)
        assert result.outcome.complete
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
        asked = [e for e in rec.events if e[0] == "ask"]
        # the probe saw no root: the listing's STAT and OPENDIR of it would only be told "no such folder"
        assert not any(t in (CMD_OPENDIR, CMD_STAT) for _, t, _ in asked)
        assert CMD_OPENDIR not in rec.paramiko and CMD_STAT not in rec.paramiko
        # the root and the folders above it, then its check, go out ahead of the first file's OPEN
        first_open = next(i for i, e in enumerate(asked) if e[1] == CMD_OPEN)
        ahead = asked[:first_open]
        assert ("ask", CMD_MKDIR, os.fsencode(root)) in ahead
        assert ("ask", CMD_LSTAT, os.fsencode(root)) in ahead
        assert made_alone == []  # no round trip of its own
        assert remote.net_stats().sessions == 1  # the probe's session served the files
    finally:
        remote.close()


def test_a_file_frees_its_place_once_its_handle_is_closed_not_once_renamed(sshd_server, tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setattr(batch, "BATCH_FILES_MAX", 1)  # one file open at a time
    rec = Recorded(monkeypatch)
    src, remote = first_sync(sshd_server, tmp_path, monkeypatch, root)
    try:
        result = run(src, sftp_url(sshd_server, root), tmp_path / "state", options=remote.options)
        assert result.outcome.complete
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
        events = rec.events
        first_rename = next(i for i, e in enumerate(events) if e[:2] == ("ask", CMD_EXTENDED))
        its_answer = next(i for i, e in enumerate(events) if i > first_rename and e[:2] == ("answer", CMD_EXTENDED))
        second_open = [i for i, e in enumerate(events) if e[:2] == ("ask", CMD_OPEN)][1]
        # the next file opens while the first one's rename is still out
        assert second_open < its_answer
    finally:
        remote.close()


def test_a_root_its_pipeline_could_not_make_is_made_on_a_second_try(sshd_server, tmp_path, monkeypatch):
    """the root's check in the pipeline says it is not there (here: its
    MKDIRs were left out): the root is made the old way, and the files the
    pipeline held are handed back and sent."""
    root = tmp_path / "deep" / "root"
    monkeypatch.setattr(SftpRemote, "_root_chain", lambda self: [])  # the pipeline's MKDIRs, not _make_root's
    real_make_root = SftpRemote._make_root
    chains = []

    def make_root(self, sftp):
        chains.append(1)
        monkeypatch.undo()  # the real chain again, for this one
        real_make_root(self, sftp)

    src, remote = first_sync(sshd_server, tmp_path, monkeypatch, root)
    monkeypatch.setattr(SftpRemote, "_make_root", make_root)
    try:
        result = run(src, sftp_url(sshd_server, root), tmp_path / "state", options=remote.options)
        assert result.outcome.complete, result.outcome.results
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
        assert chains == [1]
    finally:
        remote.close()


@pytest.fixture
def read_only_parent(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    with read_only_bind(parent):
        yield parent


def test_a_root_that_cannot_be_made_fails_the_run_with_its_reason(sshd_server, tmp_path, monkeypatch,
                                                                 read_only_parent):
    root = read_only_parent / "root"
    src, remote = first_sync(sshd_server, tmp_path, monkeypatch, root)
    try:
        # OpenSSH's bare Failure reads as a lost connection: not retried for minutes here
        options = dataclasses.replace(remote.options, retry_for=0.0)
        result = run(src, sftp_url(sshd_server, root), tmp_path / "state", options=options)
        assert not result.outcome.complete
        reasons = {why for what, why in result.outcome.results.values() if what == "failed"}
        reasons.discard(None)
        if result.outcome.remote_gone:
            reasons.add(result.outcome.remote_gone)
        assert reasons and all("cannot write to" in r for r in reasons), reasons
        assert not root.exists()
    finally:
        remote.close()


def test_a_sessions_limits_go_out_with_its_init_to_openssh(sshd_server, tmp_path, monkeypatch):
    """the number of files a session keeps in flight waits on the limits'
    answer: asked together with INIT, it is here a round trip earlier."""
    before_version: list[int] = []
    real = wire.paramiko.SFTPClient._read_packet

    def read_packet(sftp):
        if not getattr(sftp, "version_read", False):  # the first reply: INIT's VERSION
            sftp.version_read = True
            before_version.append(len(sftp._expecting))
        return real(sftp)

    monkeypatch.setattr(wire.paramiko.SFTPClient, "_read_packet", read_packet)
    root = tmp_path / "root"
    root.mkdir()
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        conn = remote._conn()
        assert before_version == [1]  # the limits request was out when VERSION was read
        assert conn.max_handles > 0 and conn.write_chunk > wire.SAFE_CHUNK  # and its answer was read
        assert remote.stat("") is not None  # the session serves as before
    finally:
        remote.close()


@pytest.mark.parametrize("mode", ["apply", "plan"])
def test_a_first_sync_over_a_slow_link_opens_its_upload_sessions_while_it_plans(sshd_server, tmp_path, monkeypatch,
                                                                                 mode):
    """each session past the first costs three round trips: opened by the
    upload threads, they came after the plan; a plan, which sends nothing,
    opens none."""
    from reconcile.engine.run import Run

    root = tmp_path / "root"  # missing: a first sync
    src, remote = first_sync(sshd_server, tmp_path, monkeypatch, root, transfers=4)
    monkeypatch.setattr(SftpRemote, "link_bound", lambda self: True)  # as at RTT 20 ms or more
    at_plan = []
    real_plan = Run._plan

    def plan(self, changes, tag):
        at_plan.append(remote.net_stats().sessions)
        return real_plan(self, changes, tag)

    monkeypatch.setattr(Run, "_plan", plan)
    try:
        result = run(src, sftp_url(sshd_server, root), tmp_path / "state", mode=mode, options=remote.options)
        if mode == "plan":
            assert at_plan == [1] and remote.net_stats().sessions == 1
            assert not root.exists()
            return
        assert result.outcome.complete
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
        assert at_plan == [4]  # the probe's, and three opened ahead
        assert remote.net_stats().sessions == 4  # each taken by an upload thread, none opened twice
    finally:
        remote.close()


def test_a_first_runs_probe_asks_where_the_root_is_together_with_init(sshd_server, tmp_path, monkeypatch):
    """the lstats of the root and each folder above it go out with the
    session's INIT (OpenSSH), not in a round trip of their own after it."""
    expecting_at_version: list[int] = []
    asked_later: list[bytes] = []
    read_packet, ask = wire.paramiko.SFTPClient._read_packet, wire.paramiko.SFTPClient._async_request

    def first_read(sftp):
        if not getattr(sftp, "version_read", False):
            sftp.version_read = True
            expecting_at_version.append(len(sftp._expecting))
        return read_packet(sftp)

    def counted_ask(sftp, fileobj, t, *args):
        if t == CMD_LSTAT:
            asked_later.append(args[0])
        return ask(sftp, fileobj, t, *args)

    monkeypatch.setattr(wire.paramiko.SFTPClient, "_read_packet", first_read)
    monkeypatch.setattr(wire.paramiko.SFTPClient, "_async_request", counted_ask)
    root = tmp_path / "a" / "b"  # missing: its parent is the nearest folder there
    (tmp_path / "a").mkdir()
    remote = remote_at(sshd_server, tmp_path, root)
    try:
        caps = remote.capabilities
        above = remote._root_and_above()
        assert len(above) >= 3 and above[0] == str(root)
        assert expecting_at_version == [1 + len(above)]  # the limits and every lstat were out with INIT
        assert not set(asked_later) & {os.fsencode(p) for p in above}  # none asked again
        assert remote._probe_saw_no_root and caps.symlinks  # the probe ran, in the root's parent
    finally:
        remote.close()
    assert not root.exists() and list((tmp_path / "a").iterdir()) == []  # the probe left nothing

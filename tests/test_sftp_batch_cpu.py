"""The small-file pipeline's per-file CPU (issue 21), against the real sshd:
a file's writes and fsetstat are built in one go (one call, numbers taken
together) instead of one request() each, and what reaches the server
is the same: exact bytes, mode and mtime, from empty files to files of
several write chunks."""

from __future__ import annotations

import os
import stat

from reconcile.remotes.local import final_mode
from reconcile.remotes.sftp import wire
from reconcile.remotes.sftp.upload import UMASK
from tests.mirror import tree
from tests.test_sftp import no_agent_no_config, remote, root  # noqa: F401
from tests.test_sftp_batch import items_for, make_src


def test_a_small_file_costs_three_single_requests_and_lands_whole(remote, root, tmp_path, monkeypatch):
    src = tmp_path / "src-tree"
    files = make_src(src, 40)
    files["empty.bin"] = b""
    files["chunks/three.bin"] = os.urandom(2 * remote._conn().write_chunk + 1234)  # three WRITEs
    for rel in ("empty.bin", "chunks/three.bin"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(files[rel])
        os.utime(src / rel, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    kinds: list[int] = []
    real = wire._Pipe.request

    def counted(self, t, *parts):
        kinds.append(t)
        return real(self, t, *parts)

    monkeypatch.setattr(wire._Pipe, "request", counted)
    items = items_for(src, files)
    errors = []
    remote.upload_many(items, lambda item, error: errors.append(error) if error else None)
    assert errors == []
    singles = [t for t in kinds if t not in (wire.CMD_MKDIR,)]
    # OPEN, CLOSE and the posix-rename only: the writes and fsetstat went out with queue()
    assert len(singles) == 3 * len(files)
    assert singles.count(wire.CMD_CLOSE) == len(files)
    assert tree(root) == tree(src)
    for rel in files:
        assert stat.S_IMODE(os.stat(root / rel).st_mode) == final_mode(os.stat(src / rel).st_mode, False, UMASK)
    assert all(item.hash is not None for item in items)


def test_numbers_taken_together_follow_on_from_single_requests(remote):
    sftp = remote._conn().sftp
    pipe = wire._Pipe(sftp)
    first = pipe.reserve(3)
    assert pipe.reserve(1) == first + 3
    assert sftp.request_number == first + 4


class _CountingSocket:
    def __init__(self, sock) -> None:
        self.sock, self.recvs = sock, 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def test_the_packet_thread_reads_many_replies_per_socket_read(remote, tmp_path):
    """paramiko reads each packet in two recv calls; the connection's socket
    (session._Wire) reads ahead, so a stream of small replies costs fewer
    reads than packets. The upload is exact all the same."""
    src = tmp_path / "src-tree"
    files = make_src(src, 300, seed=7)
    transport = remote._conn().sftp.sock.get_transport()
    wire = transport.sock
    counting = wire._sock = _CountingSocket(wire._sock)
    before = transport.packetizer._Packetizer__received_packets
    errors = []
    remote.upload_many(items_for(src, files), lambda item, error: errors.append(error) if error else None)
    packets = transport.packetizer._Packetizer__received_packets - before
    assert errors == [] and packets >= 300
    assert counting.recvs < packets  # was two per packet

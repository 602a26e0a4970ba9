"""A full upload of a large file reads it once (issue 26): the block map a
later delta needs is taken on the pass that reads the file to send it, not on
a pass of its own before. Counted on a real file sent to the real sshd: the
bytes every read call of this process (os.preadv, os.pread, os.read) got from
that file, by its inode; nothing of the file system or SFTP is replaced."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest

from reconcile.blockmap import BlockStore, map_fd
from reconcile.entry import Entry
from reconcile.remotes import open_remote
from tests.mirror import write
from tests.storage import read_dest

MiB = 1 << 20
BLOCK = 8 * MiB
SIZE = 72 * MiB  # above the 64 MiB threshold (so the first upload is mapped) and RANGE_MIN
T0 = 1_600_000_000 * 10**9


class ReadCounter:
    """bytes read from one file (by device and inode) through os's read calls"""

    def __init__(self, monkeypatch, path) -> None:
        st = os.stat(path)
        self.file, self.bytes = (st.st_dev, st.st_ino), 0
        for name in ("preadv", "pread", "read"):
            monkeypatch.setattr(os, name, self._counting(getattr(os, name)))

    def _counting(self, call):
        def counted(fd, *args):
            got = call(fd, *args)
            try:
                st = os.fstat(fd)
            except OSError:
                return got
            if (st.st_dev, st.st_ino) == self.file:
                self.bytes += got if isinstance(got, int) else len(got)
            return got
        return counted


def entry_of(path, rel: str) -> Entry:
    st = path.stat()
    return Entry(rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


@pytest.mark.parametrize("transfers", [1, 4])
def test_a_full_upload_maps_the_file_on_the_pass_that_sends_it(sftp_dest, tmp_path, monkeypatch, transfers):
    """one stream: the file is read once (twice before: its block map, then
    the upload). Four range writers: the writers' reads and one hashing pass
    that now maps the file too (three before)"""
    local = tmp_path / "disk.img"
    data = bytearray(random.randbytes(SIZE))
    write(local, bytes(data), T0)
    options = replace(sftp_dest.options, transfers=transfers)
    remote = open_remote(sftp_dest.url, options)
    try:
        reads = ReadCounter(monkeypatch, local)
        sent = remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
        monkeypatch.undo()
        assert reads.bytes == SIZE * (1 if transfers == 1 else 2), reads.bytes / SIZE
        with open(local, "rb") as f:
            whole = map_fd(f.fileno(), SIZE)
        assert BlockStore(options.state_dir).get("disk.img")[0] == whole and sent.hash == whole.digest

        data[3 * BLOCK:3 * BLOCK + 10] = b"d" * 10  # the map taken on the way serves the next delta
        write(local, bytes(data), T0 + 10**9)
        again = remote.upload(str(local), "disk.img", entry_of(local, "disk.img"))
    finally:
        remote.close()
    assert again.reused == SIZE - BLOCK
    stored = read_dest(sftp_dest)
    assert stored.files["disk.img"] == data and not stored.temps



@pytest.mark.parametrize("kind,checksum", [("local", False), ("sftp", False), ("s3", False), ("sftp", True)])
def test_a_changed_large_file_is_read_once_for_its_hash_and_its_delta(kind, checksum, request, tmp_path, monkeypatch):
    """a large file of the same size with a new mtime is hashed by the plan
    (a touch, if its content were the same; with --checksum every file is
    hashed by the walk's merge); that pass maps its blocks too, and the delta
    uses that map: the file is read once, then only its changed block again
    to send it (before: the plan's hash, then the map, then the block)"""
    from tests.mirror import run

    monkeypatch.setenv("RECONCILE_TEST_LOCAL_DELTA", "1")  # the test folders are on ext4
    dest = request.getfixturevalue(f"{kind}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    data = bytearray(random.randbytes(SIZE))
    write(src / "disk.img", bytes(data), T0)
    run(src, dest.url, state, options=dest.options)

    data[5 * BLOCK + 100:5 * BLOCK + 200] = b"c" * 100
    write(src / "disk.img", bytes(data), T0 + 10**9)
    reads = ReadCounter(monkeypatch, src / "disk.img")
    result = run(src, dest.url, state, options=dest.options, checksum=checksum)
    monkeypatch.undo()
    assert result.counted.saved_delta == SIZE - BLOCK, result.counted
    assert reads.bytes == SIZE + BLOCK, reads.bytes / SIZE
    assert read_dest(dest).files["disk.img"] == data


@pytest.mark.parametrize("kind", ["local", "sftp", "s3"])
def test_a_file_changed_after_the_plan_mapped_it_is_mapped_again(kind, request, tmp_path, monkeypatch):
    """the plan's map serves the upload only while the file is the version it
    read: a block rewritten after the plan, with the mtime put back, is seen
    (its ctime moved), the file mapped afresh, and the remote gets exactly
    what the file holds when it is sent, not the old block copied"""
    from reconcile.engine.hashes import Hashes
    from tests.mirror import run

    monkeypatch.setenv("RECONCILE_TEST_LOCAL_DELTA", "1")
    dest = request.getfixturevalue(f"{kind}_dest")
    src, state = tmp_path / "src", tmp_path / "state"
    local = src / "disk.img"
    data = bytearray(random.randbytes(SIZE))
    write(local, bytes(data), T0)
    run(src, dest.url, state, options=dest.options)
    first = bytes(data)

    data[5 * BLOCK:5 * BLOCK + 100] = b"p" * 100  # what the plan sees
    write(local, bytes(data), T0 + 10**9)
    planned = Hashes.hash_needed

    def then_changed(self, changes):
        got = planned(self, changes)
        assert changes.needed["disk.img"].block_map is not None  # the plan mapped it
        with open(local, "r+b") as f:  # block 2 changes, in place, after the plan
            f.seek(2 * BLOCK)
            f.write(b"q" * 100)
        os.utime(local, ns=(T0 + 10**9, T0 + 10**9))
        return got

    monkeypatch.setattr(Hashes, "hash_needed", then_changed)
    run(src, dest.url, state, options=dest.options)
    monkeypatch.undo()
    data[2 * BLOCK:2 * BLOCK + 100] = b"q" * 100
    # the file is not the version the plan hashed: left for the next run (the
    # old copy stays) or sent as it is now; never the plan's map over new bytes
    got = read_dest(dest).files["disk.img"]
    assert got == first or got == data, "the remote holds a version the local file never was"
    run(src, dest.url, state, options=dest.options)
    assert read_dest(dest).files["disk.img"] == data

"""A small file that grew after the plan is refused before it is read: the
pipelined path never loads a file bigger than the plan said into memory."""

from __future__ import annotations

import os

from reconcile.apply import SmallUpload
from reconcile.entry import FILE, Entry
from reconcile.errors import SourceChanged
from reconcile.remotes.sftp import batch as batch_mod
from tests.test_sftp import no_agent_no_config, remote, root  # noqa: F401

MTIME = 1_700_000_000_000_000_000


def test_a_grown_small_file_is_refused_unread(remote, root, tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    os.utime(path, ns=(MTIME, MTIME))
    entry = Entry("f.bin", FILE, 10, MTIME)
    with open(path, "r+b") as fh:  # grows to 64 MiB after the plan (sparse: no disk used)
        fh.truncate(64 << 20)
    os.utime(path, ns=(MTIME, MTIME))
    asked: list[int] = []
    real = os.pread
    monkeypatch.setattr(batch_mod.os, "pread", lambda fd, n, off: asked.append(n) or real(fd, n, off))
    got: dict[int, object] = {}
    remote.upload_many([SmallUpload(0, str(path), "f.bin", entry)], lambda item, err: got.setdefault(item.key, err))
    assert isinstance(got[0], SourceChanged)
    assert all(n <= 10 for n in asked)
    assert not (root / "f.bin").exists()

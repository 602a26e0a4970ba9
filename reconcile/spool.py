"""Let the source walk run ahead while the remote's listing has not started.

A listing that sorts on the server (find | sort over ssh) sends its first row
only once the whole remote tree is read; the merge, which needs a row from
each side, would sit idle that long with the source walk not started. Here
the walk runs in a thread for as long as the caller waits on the remote's
first row, into a Spool; once the row is in, the walk carries on in the
caller's thread, so the two never compete for the GIL afterwards.

The spool keeps a bounded number of rows in memory and the rest in a private
temp file (unlinked, mode 0600), so memory does not grow with the tree.
"""

from __future__ import annotations

import tempfile
import threading
from itertools import chain
from typing import Iterator

import msgpack

from reconcile import forked
from reconcile.errors import ReconcileError

MEMORY_ROWS = 4096  # rows kept in memory; more go to the temp file
CHUNK = 512  # rows taken from the walk between looks at the stop flag

_END = object()


class Spool:
    """rows in the order added, read back once by drain()."""

    def __init__(self, spill_dir: str | None) -> None:
        self.spill_dir = spill_dir
        self.memory: list[list[tuple]] = []
        self.held = 0
        self.file = None
        self.error: BaseException | None = None

    def add(self, rows: list[tuple]) -> None:
        if self.file is None and self.held + len(rows) <= MEMORY_ROWS:
            self.memory.append(rows)
            self.held += len(rows)
            return
        try:
            if self.file is None:
                self.file = tempfile.TemporaryFile(dir=self.spill_dir, prefix="reconcile-spool-")
                self.packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
            self.file.write(self.packer.pack(rows))
        except OSError as exc:
            where = self.spill_dir or tempfile.gettempdir()
            raise ReconcileError(f"cannot write a temp file in {where} ({exc.strerror or exc}); free space "
                                 "there or pass --state-dir DIR. Nothing was changed") from None

    def fail(self, exc: BaseException) -> None:
        """the walk's error, raised where its rows end."""
        self.error = exc

    def drain(self) -> Iterator[tuple]:
        try:
            for rows in self.memory:
                yield from rows
            self.memory = []
            if self.file is not None:
                self.file.seek(0)
                unpacker = msgpack.Unpacker(self.file, use_list=False, raw=False,
                                            unicode_errors="surrogateescape", max_buffer_size=1 << 26)
                for rows in unpacker:
                    yield from rows
            if self.error is not None:
                raise self.error
        finally:
            self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def walk_while_waiting(walk: Iterator[tuple], remote: Iterator[tuple],
                       spill_dir: str | None) -> tuple[Iterator[tuple], Iterator[tuple]]:
    """(walk, remote) as the merge should read them: the remote's first row
    is fetched here, and the walk runs ahead in a thread until it comes."""
    walk, remote = iter(walk), iter(remote)
    spool = Spool(spill_dir)
    stop = threading.Event()

    def run_ahead() -> None:
        # each chunk under the fork gate: the remote may fork a listing child
        # now, which must not happen while this thread holds any lock
        rows: list[tuple] = []
        try:
            while not stop.is_set():
                with forked.working():
                    for row in walk:
                        rows.append(row)
                        if len(rows) == CHUNK:
                            break
                    else:
                        spool.add(rows)
                        return  # the whole walk is in
                    spool.add(rows)
                    rows = []
        except BaseException as exc:  # raised again in the merge, where the walk's rows end
            with forked.working():
                try:
                    if rows:
                        spool.add(rows)
                except BaseException as again:
                    exc = again
                spool.fail(exc)

    ahead = threading.Thread(target=run_ahead, name="walk-ahead", daemon=True)
    forked.parkable(ahead)
    ahead.start()
    try:
        first = next(remote, _END)
    except BaseException:
        stop.set()
        ahead.join()
        forked.unpark(ahead)
        spool.close()
        raise
    stop.set()
    ahead.join()
    forked.unpark(ahead)
    rest = chain(spool.drain(), walk) if spool.error is None else spool.drain()
    return rest, iter(()) if first is _END else chain((first,), remote)

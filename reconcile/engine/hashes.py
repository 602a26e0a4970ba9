"""The content hashes a run needs: those the plan asks for (moves, touches),
and those of the files it sent, for the next snapshot. A file that cannot be
read is left out of the run, with a warning."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor

from reconcile.apply import Outcome
from reconcile.blockmap import PLAN_MAPS, BlockStore, map_file
from reconcile.diff import Changes
from reconcile.entry import FILE, Entry
from reconcile.errors import SourceChanged
from reconcile.hashing import hash_file
from reconcile.plan import Plan, needs_hash

# files from this size are hashed on two threads (xxh3 and read() free the GIL
# for long enough); smaller ones in one thread, where two took 3.7x longer
# (0.47 s against 0.13 s on 10,000 files of 1-32 KB)
HASH_THREADED_FROM = 1 << 20


class Hashes:
    """Run's hashing of source files."""

    def hash_needed(self, changes: Changes) -> dict[str, bytes | None]:
        """Hash what the plan needs to find moves and touches (plan.needs_hash); the other
        files to send are hashed as they are sent. A file that cannot be read
        or keeps changing is left out of this run and its remote copy left alone."""
        caps = self.remote.capabilities
        todo = needs_hash(changes, caps.mtime_precision_ns, touch=caps.set_mtime)
        results = self._hash_files(todo, warn=True, mapped=self._plan_map_store())
        for e in changes.needed.values():
            if e.kind == FILE and e.hash is None and e.path not in results and not os.access(self._local(e), os.R_OK):
                results[e.path] = None
                if os.path.lexists(self._local(e)):
                    self._unreadable(e.path, os.strerror(errno.EACCES))
                # else it vanished since the walk: gone, not an error
        for path, h in results.items():
            if h is None:
                changes.needed.pop(path, None)
                s = changes.stale.get(path)
                if s is not None and s.displaced:
                    del changes.stale[path]
        return results

    def hashes_of_sent(self, plan: Plan, outcome: Outcome) -> dict[str, bytes | None]:
        """for the next snapshot: the hash of each file this run sent, taken
        while it was sent where the remote could, else read now. None (not
        recorded) for a file that changed since."""
        sent = [op.entry for i, op in enumerate(plan.ops) if op.op == "upload" and op.entry is not None
                and outcome.results.get(i, ("",))[0] == "done"]
        hashes: dict[str, bytes | None] = {e.path: e.hash for e in sent if e.hash is not None}
        hashes.update(self._hash_files([e for e in sent if e.hash is None], warn=False))
        return hashes

    def _plan_map_store(self) -> BlockStore | None:
        """where a large file the plan hashes is mapped on that pass too (the
        remote sends deltas and keeps block maps): its upload, a delta or the
        one that records its blocks, then need not read it again"""
        if not (PLAN_MAPS and self.remote.capabilities.delta):
            return None
        store = BlockStore(self.opts.remote.state_dir)
        return store if store.dir is not None else None

    def content_hash(self, e: Entry, mapped: BlockStore | None) -> bytes:
        """e's xxh3, read now (SourceChanged, OSError as hash_file). A file
        large enough for mapped (_plan_map_store) is mapped on the same pass,
        the map kept on e.block_map for its upload."""
        if mapped is not None and mapped.wants(e.size):
            e.block_map = map_file(self._local(e), e.size, e.mtime_ns, mapped.block)
            return e.block_map.digest
        return hash_file(self._local(e), e.size, e.mtime_ns)

    def _hash_files(self, entries: list[Entry], warn: bool,
                    mapped: BlockStore | None = None) -> dict[str, bytes | None]:
        results: dict[str, bytes | None] = {}

        def one(e: Entry) -> None:
            try:
                e.hash = self.content_hash(e, mapped)
                results[e.path] = e.hash
            except FileNotFoundError:
                results[e.path] = None  # vanished since the walk: gone, not an error
            except (SourceChanged, OSError) as exc:
                results[e.path] = None
                if warn and isinstance(exc, OSError):
                    self._unreadable(e.path, exc.strerror or str(exc))
                elif warn:
                    self.warn(f"skipped {e.path}: it changed while it was read; the next run sends it")

        big = [e for e in entries if e.size >= HASH_THREADED_FROM]
        if big:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(one, big))
        for e in entries:
            if e.size < HASH_THREADED_FROM:
                one(e)
        return results

    def _unreadable(self, path: str, reason: str) -> None:
        self.unreadable.append((path, reason))
        self.warn(f"skipped {path}: {reason}; its remote copy is left as it is")

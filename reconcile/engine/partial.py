"""The snapshot a partial run leaves (some operation failed, was skipped or
was not reached): the walk's rows where the destination now holds what the
plan meant, and the last snapshot's rows, unchanged, for every path an
operation that did not end "done" may have left otherwise.

For those paths this is exactly what was recorded before (a partial run
used to leave the whole last snapshot in place); for every other path it is
what a complete run records: their operations were done, or they needed
none. So renames are detected again after a partial run, and a failed file
is compared with the time the last snapshot holds for it, as before."""

from __future__ import annotations

import heapq
from typing import Iterable, Iterator

from reconcile.apply import Outcome
from reconcile.entry import encode_path
from reconcile.plan import Plan


def doubtful(plan: Plan, outcome: Outcome) -> set[bytes]:
    """the paths (and the folders whose whole content) an operation that did
    not end done acted on: its path, and a move's target, as keys' paths"""
    out: set[bytes] = set()
    for i, op in enumerate(plan.ops):
        if outcome.results.get(i, ("",))[0] == "done":
            continue
        out.add(encode_path(op.path))
        if op.to:
            out.add(encode_path(op.to))
    for path in outcome.locked:
        out.add(encode_path(path))
    return out


def _in_doubt(key: bytes, doubt: set[bytes]) -> bool:
    """the row's path or a folder above it is in doubt"""
    path = key[:-1] if key.endswith(b"/") else key
    if path in doubt:
        return True
    cut = path.rfind(b"/")
    while cut > 0:
        path = path[:cut]
        if path in doubt:
            return True
        cut = path.rfind(b"/")
    return False


def outside(hashes: dict[str, bytes | None], doubt: set[bytes]) -> dict[str, bytes | None]:
    """the hashes a run learnt, but for paths in doubt (they keep their last row)"""
    return {p: h for p, h in hashes.items() if not _in_doubt(encode_path(p), doubt)}


def partial_rows(walked: Iterable[tuple], previous: Iterable[tuple], doubt: set[bytes]) -> Iterator[tuple]:
    """walked rows outside doubt, previous rows inside it, in key order"""
    kept = (row for row in walked if not _in_doubt(row[0], doubt))
    before = (row for row in previous if _in_doubt(row[0], doubt))
    return heapq.merge(kept, before, key=lambda row: row[0])

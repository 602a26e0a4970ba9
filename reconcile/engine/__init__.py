"""One run of plan or apply (Run), over the stages: lock, resume, walk +
merge, plan, guards, apply, commit state.

    options.py   RunOptions (what a run is given), RunResult, exit_word
    run.py       Run: the order of a plan and of an apply; the remote, retries
    state.py     the state folder: snapshot, journal, trash and last-run records
    changes.py   walk + snapshot + listing -> Changes
    hashes.py    the hashes the plan needs, and those of what was sent
    planning.py  Changes -> Plan (names the destination cannot hold, trash)
    guards.py    the refusals before anything changes
    execute.py   the plan carried out under the journal, resume first
    triggered.py reconcile watch: runs planned on what its last clean run left (known.py)
"""

from __future__ import annotations

from reconcile.engine.guards import check_paths, off_disk_message
from reconcile.engine.hashes import HASH_THREADED_FROM
from reconcile.engine.options import RunOptions, RunResult, exit_word
from reconcile.engine.run import Run
from reconcile.engine.state import SNAPSHOT_BYTES_PER_ENTRY

__all__ = ["HASH_THREADED_FROM", "SNAPSHOT_BYTES_PER_ENTRY", "Run", "RunOptions", "RunResult", "check_paths",
           "exit_word", "off_disk_message"]

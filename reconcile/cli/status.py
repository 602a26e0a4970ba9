"""reconcile status: the last run, pending work and snapshot of a pair, read
from its state folder without connecting."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Optional

import typer

from reconcile.cli.flags import AllOpt, ConfigOpt, NameArg, OptDestArg
from reconcile.cli.guard import read_only
from reconcile.cli.root import command


@command(short_help="Last run, pending work and snapshot of a pair, a mapping, or --all.",
         example="reconcile status ~/Pictures /mnt/backup/Pictures")
def status(source: Optional[str] = NameArg, dest: Optional[str] = OptDestArg,
           state_dir: Annotated[Optional[str], typer.Option("--state-dir", metavar="DIR", help="the pair's state folder, if apply ran with --state-dir")] = None,
           json_out: Annotated[bool, typer.Option("--json", help="print one JSON document: running, last_run, pending_operations, snapshot, state_dir")] = False,
           all_: AllOpt = False, config: ConfigOpt = None):
    """Last run, pending work and snapshot of one SOURCE+DEST pair, a mapping, or --all."""
    from reconcile.jobs import status_jobs

    def show(job) -> int:
        return _status(job.source, job.dest, job.kw.get("state_dir"), json_out)

    raise typer.Exit(read_only(lambda: status_jobs(source, dest, all_, config, state_dir, json_out, show), False))


def _status(source: str, dest: str, state_dir: str | None, json_out: bool) -> int:
    from reconcile import journal, snapshot
    from reconcile.statedir import StateDir, display_url

    state = StateDir.for_pair(os.path.abspath(os.path.expanduser(source)), dest, state_dir, create=False)
    info: dict = {"source": os.path.abspath(source), "dest": display_url(dest), "state_dir": state.path}
    from reconcile.lock import held_by

    running = held_by(state.lock)  # a run in progress: last_run is the one before it
    info["running"] = {"pid": running[0], "since": running[1]} if running else None
    try:
        with open(state.last_run, "rb") as f:
            info["last_run"] = json.loads(f.read())
    except (OSError, ValueError):
        info["last_run"] = None
    try:
        p = journal.load(state.journal)
        info["pending_operations"] = len(p.remaining) if p else 0
    except journal.CorruptJournal as exc:
        info["pending_operations"] = None
        info["journal_error"] = str(exc)
    if os.path.exists(state.snapshot):
        st = os.stat(state.snapshot)
        info["snapshot"] = {"age_seconds": round(time.time() - st.st_mtime), "bytes": st.st_size}
        try:
            snapshot.verify(state.snapshot)
        except snapshot.CorruptState as exc:
            info["snapshot"]["error"] = str(exc)
    else:
        info["snapshot"] = None
    from reconcile.watch.state import read_watch_state, watch_lines

    info["watch"] = read_watch_state(state.path)
    if json_out:
        print(json.dumps(info))
        return 0
    lr = info["last_run"]
    print(f"{info['source']} -> {info['dest']}")
    if running:
        print(f"run in progress: since {_when(running[1])} (pid {running[0]}); "
              "the lines below are from before it")
    if lr:
        print(f"last run: {_when(lr['ended'])}, {lr['result']}, {lr['ended'] - lr['started']:.1f}s, "
              f"{lr['done']} done, {lr['failed']} failed, {lr['bytes']} bytes sent"
              + ("; the next apply finishes it" if lr["result"] == "interrupted" else ""))
    else:
        print("last run: none finished yet" if running else "last run: never" + _unknown_pair(state.path))
    print(f"pending operations: {info['pending_operations']}")
    snap = info["snapshot"]
    print(f"snapshot: {snap['bytes']} bytes, {snap['age_seconds']}s old" if snap else "snapshot: none")
    for line in watch_lines(info["watch"]):
        print(line)
    return 0


def _unknown_pair(state_path: str) -> str:
    """a typo in SOURCE or DEST names a pair no run ever made: say so"""
    if os.path.isdir(state_path):
        return ""
    return (" (no state folder for this pair: check SOURCE and DEST are written as apply was given them, "
            "or pass the --state-dir DIR apply ran with)")


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

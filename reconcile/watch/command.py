"""What `reconcile watch` runs, below the command line: the pairs asked for
(SOURCE DEST, a mapping or --all), each watched, each triggered run an
ordinary logged `apply` through the command layer's Driver."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any, Callable

from reconcile.trash import DEFAULT_TRASH, known_trash, trash_root
from reconcile.errors import ConfigError
from reconcile.excludes import Excludes, all_patterns
from reconcile.known import Known
from reconcile.jobs import Driver, Job, _logged, _raiser, resolve
from reconcile.logs import LogSettings
from reconcile.statedir import StateDir
from reconcile.watch.loop import PairWatch, WatchSettings, watch_pairs
from reconcile.watch.state import WatchState


def watch_jobs(source: str | None, dest: str | None, all_: bool, config: str | None, log: LogSettings,
               kw: dict[str, Any], driver: Driver, settings: WatchSettings) -> int:
    verbose = kw.get("verbose", False)
    try:
        jobs = resolve("watch", source, dest, all_, config, kw, driver.defaults)
        pairs = [_pair(job, all_, log, driver, settings) for job in jobs]
    except ConfigError as exc:
        return driver.guard(_raiser(exc), verbose)
    return driver.guard(lambda: watch_pairs(pairs), verbose)


def _pair(job: Job, all_: bool, log: LogSettings, driver: Driver, settings: WatchSettings) -> PairWatch:
    source = os.path.abspath(os.path.expanduser(job.source))
    state = StateDir.for_pair(source, job.dest, job.kw.get("state_dir"))
    verbose = job.kw.get("verbose", False)

    known = Known()  # what the last clean run left: a triggered run is planned on it, not on a listing

    def run_one(only: list[str] | None, source_dev: int | None, again: bool = False) -> int:
        one = replace(job, kw={**job.kw, "walk_only": only, "source_dev": source_dev, "known": known})
        known.used = known.recheck = False  # what this run sets, whichever way it ends
        rc = _logged(log, "apply", job.name, job.source, job.dest, job.kw.get("state_dir"),
                     lambda: driver.run(one, all_), verbose, driver)
        if rc == 130:
            raise KeyboardInterrupt  # the run stopped on SIGTERM or Ctrl-C: so does the watch
        if verbose and known.used:
            print("watch: planned on the remote as the last run left it (not listed)", file=sys.stderr, flush=True)
        if known.recheck and not again:  # an operation skipped, failed or found the remote not as planned on
            print("watch: the remote was not as the last run left it; running again with a full listing",
                  file=sys.stderr, flush=True)
            return run_one(only, source_dev, again=True)  # Known is forgotten: this one lists
        return rc

    return PairWatch(job.name, source, run_one, _skip(job.kw, state), WatchState(state.path), settings)


def _skip(kw: dict[str, Any], state: StateDir) -> Callable[[str, bool], bool]:
    """the run's own excludes (engine.Run builds the same): what they leave
    out is neither watched nor marked dirty"""
    trash = trash_root(kw.get("backup_dir"))
    protected = {DEFAULT_TRASH} | set(known_trash(state.path)) | ({trash} if trash else set())
    excludes = Excludes(all_patterns(kw.get("exclude"), kw.get("exclude_from"), kw.get("include")),
                        protected=sorted(protected))
    return excludes.excluded

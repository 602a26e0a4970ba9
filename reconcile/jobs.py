"""Which runs a command line asks for: SOURCE DEST, one mapping name from the
config file, or --all of them; and running each under its RunLog.

The command layer (reconcile/cli/) calls in with a Driver: how one run goes and how
its errors end are the command line's; this module never imports it."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from reconcile.config import Mapping, apply_mapping, default_path, load_checked
from reconcile.errors import ConfigError, ReconcileError
from reconcile.logs import LogSettings, RunLog


@dataclass
class Job:
    name: str | None  # the mapping's name; None for SOURCE DEST
    source: str
    dest: str
    kw: dict[str, Any]  # the command's flags, the mapping's values filled in


@dataclass
class Driver:
    """what the command layer lends the jobs of one command."""
    defaults: dict[str, Any]  # the command's flag defaults, to tell given flags apart
    run: Callable[[Job, bool], int]  # one job; the flag is --all (name the run on its summary line)
    guard: Callable[[Callable[[], int], bool | None], int]  # errors end in one line and an exit code
    usage_error: type[Exception]  # a bad flag: logged, then re-raised for the command line to show


def resolve(command: str, source: str | None, dest: str | None, all_: bool, config: str | None,
            kw: dict[str, Any], defaults: dict[str, Any]) -> list[Job]:
    if all_:
        if source or dest:
            raise ConfigError("--all takes no SOURCE, DEST or mapping name")
        cfg = load_checked(config)
        if not cfg.mappings:
            raise ConfigError(f"no mappings in {cfg.path}; add [mapping.NAME] tables with source and dest")
        return [_job(m, kw, defaults) for m in cfg.mappings.values()]
    if source is None:
        raise ConfigError(f"give SOURCE DEST, a mapping name, or --all (reconcile {command} --help)")
    if dest is not None:
        return [Job(None, source, dest, dict(kw))]
    return [_job(_named(command, source, config), kw, defaults)]


def _named(command: str, name: str, config: str | None) -> Mapping:
    # one word: a mapping, even when a folder of that name happens to exist here
    folder = os.path.isdir(os.path.expanduser(name))
    no_mapping = ConfigError(f"{name} is a folder and no mapping of that name is configured: "
                             f"give the destination too (reconcile {command} SOURCE DEST)")
    try:
        cfg = load_checked(config, name)
    except ConfigError:
        # a broken mapping is reported as it is; only a missing file means "no mapping"
        if folder and not os.path.exists(os.path.expanduser(config or default_path())):
            raise no_mapping from None
        raise
    try:
        return cfg.mapping(name)
    except ConfigError:
        if folder:
            raise no_mapping from None
        raise


def _job(m: Mapping, kw: dict[str, Any], defaults: dict[str, Any]) -> Job:
    merged = apply_mapping(m, kw, defaults)
    return Job(m.name, m.source, m.dest, merged)


def run_jobs(command: str, source: str | None, dest: str | None, all_: bool, config: str | None,
             log: LogSettings, kw: dict[str, Any], driver: Driver) -> int:
    """plan or apply, for each run asked for; the exit code is the first
    failure's, and every mapping is tried even after one fails."""
    verbose = kw.get("verbose", False)
    # the config's warnings are held back so that they reach the first run's log
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            jobs = resolve(command, source, dest, all_, config, kw, driver.defaults)
    except ConfigError as exc:
        # a broken config must reach the log too: cron users read only that
        return _logged(log, command, source, None, None, None, _raiser(exc), verbose, driver, held.getvalue())
    code = 0
    for i, job in enumerate(jobs):
        one = (lambda j=job: _named_errors(j.name, lambda: driver.run(j, all_))) if all_ \
            else (lambda j=job: driver.run(j, all_))
        rc = _logged(log, command, job.name, job.source, job.dest, job.kw.get("state_dir"),
                     one, verbose, driver, held.getvalue() if i == 0 else "")
        code = code or rc
    return code


def _named_errors(name: str | None, fn: Callable[[], int]) -> int:
    """under --all, a mapping's one-line error names the mapping, as its summary line does"""
    try:
        return fn()
    except ReconcileError as exc:
        exc.args = (f"[{name}] {exc}",)
        raise


def _logged(log: LogSettings, command: str, name: str | None, source: str | None, dest: str | None,
            state_dir: str | None, fn: Callable[[], int], verbose: bool, driver: Driver, preamble: str = "") -> int:
    run_log = RunLog(log, command, name, source, dest, state_dir)
    try:
        run_log.__enter__()
    except ReconcileError as exc:  # the log file itself cannot be written
        return driver.guard(_raiser(exc), verbose)
    try:
        sys.stderr.write(preamble)
        try:
            rc = driver.guard(run_log.guard(fn), verbose)
        except driver.usage_error as exc:
            # the command line prints it with the usage; the log still gets its summary line
            # as the command line shows it: click's "Invalid value: " prefix left out
            run_log.error = ConfigError(exc.format_message().removeprefix("Invalid value: "))  # type: ignore[attr-defined]
            run_log.finish(2)
            raise
        run_log.finish(rc)
    finally:
        run_log.__exit__(None, None, None)
    return rc


def _raiser(exc: Exception) -> Callable[[], int]:
    def fn() -> int:
        raise exc

    return fn


def status_jobs(source: str | None, dest: str | None, all_: bool, config: str | None,
                state_dir: str | None, json_out: bool, show: Callable[[Job], int]) -> int:
    """show(job) prints one pair's status and gives its exit code."""
    kw = {"state_dir": state_dir}
    jobs = resolve("status", source, dest, all_, config, kw, {"state_dir": None})
    code = 0
    for job in jobs:
        if job.name and not json_out:
            print(f"[{job.name}]")
        code = code or show(job)
        if job.name and not json_out and len(jobs) > 1:
            print()
    sys.stdout.flush()
    return code


def verify_jobs(source: str | None, dest: str | None, all_: bool, config: str | None,
                kw: dict[str, Any], driver: Driver) -> int:
    jobs = resolve("verify", source, dest, all_, config, kw, driver.defaults)
    code = 0
    for job in jobs:
        if job.name and not kw.get("json_out"):
            print(f"[{job.name}]", flush=True)
        rc = driver.guard(lambda j=job: driver.run(j, all_), False)
        code = code or rc
    return code

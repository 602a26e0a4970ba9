"""The command line: reconcile plan | apply | watch | status | verify | restore | config.

Exit codes: 0 done or nothing to do; 1 error; 2 usage or configuration
error; 3 partial (the journal keeps the rest); 4 refused by a safety guard;
5 another run holds the lock; 130 interrupted (Ctrl-C, or Ctrl-Break on Windows; the next
run resumes).

This package is the command layer: it owns typer, the flags and what is
printed, and sits over the core (engine, restore, verify, ...), which never
imports it. root.py holds the app, flags.py the flags several commands share,
and each command has its module; importing one registers its commands.
"""

from __future__ import annotations

import logging
import os
import sys

from reconcile import portable
from reconcile.cli.root import app
# in --help order: importing a module registers its commands on app
from reconcile.cli import mirror, watch, status, verify, config, restore  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    portable.prepare_process()
    try:
        app()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    _leave(code)


def _leave(code: int) -> None:
    """exit without tearing the interpreter down: by now every state file is
    synced and closed, and freeing a big run's objects one by one took about
    0.1 s of a 1.8 s no-change run. Output and logs are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away, as `reconcile plan | head`
    os._exit(code)

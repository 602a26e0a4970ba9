"""How a command ends: user mistakes and remote failures in one line and an exit code."""

from __future__ import annotations

import sys
import traceback

import typer

from reconcile.errors import EXIT_ERROR, ReconcileError


def guarded(fn, verbose: bool | None, resumes: bool = True) -> int:
    """User mistakes and remote failures end in one line and an exit code.
    resumes: the command keeps a journal a next run finishes (apply, restore)."""
    try:
        return fn()
    except ReconcileError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("reconcile: interrupted" + ("; the next run resumes where this one stopped" if resumes else ""),
              file=sys.stderr)
        return 130
    except typer.BadParameter:
        raise
    except OSError as exc:  # the state folder or a local path the OS refused
        where = exc.filename or ""
        print(f"reconcile: {exc.strerror or exc}: {where}; check that folder (free space, permissions) "
              "or pass --state-dir DIR", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: say so briefly, details with -v
        if verbose:
            traceback.print_exc()
        print(f"reconcile: internal error: {type(exc).__name__}: {exc} (run with -v for details)",
              file=sys.stderr)
        return EXIT_ERROR


def read_only(fn, verbose: bool | None) -> int:
    """guarded, for a command that changes nothing and has nothing to resume
    (verify, status, config check)"""
    return guarded(fn, verbose, resumes=False)

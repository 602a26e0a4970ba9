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

try:
    from reconcile.cli.early import start_from_arguments

    start_from_arguments(sys.argv[1:])  # an SFTP destination's connection opens while the rest loads
    import typer

    from reconcile import portable
    from reconcile.cli.root import app
    # in --help order: importing a module registers its commands on app
    from reconcile.cli import mirror, watch, status, verify, config, restore  # noqa: E402,F401  isort: skip
except KeyboardInterrupt:  # Ctrl-C right after Enter: a line, not a traceback of the imports
    print("reconcile: interrupted while starting; nothing was done", file=sys.stderr)
    os._exit(130)

__all__ = ["app", "main"]


# click's UsageError (a bad flag, a missing argument), which typer does not export
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    portable.prepare_process()
    try:
        code = app(standalone_mode=False, prog_name="reconcile")
        code = code if isinstance(code, int) else 0
    except _UsageError as exc:
        code = _usage_error(exc)
    except typer.Abort:
        print("reconcile: aborted", file=sys.stderr)
        code = 1
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    _leave(code)


def _usage_error(exc) -> int:
    """an unknown flag or a bad value in two lines, what and where to look,
    instead of click's usage block. No arguments at all still shows the help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()
        return exc.exit_code
    if type(exc).__name__ == "NoSuchOption":
        message = f"no such option: {exc.option_name}{_hint(exc.option_name, exc.possibilities, exc.ctx)}"
    else:
        message = exc.format_message().replace("\n", " ").removeprefix("Invalid value: ")
        flag, _, rest = message.removeprefix("Invalid value for '").partition("': ")
        if rest.startswith(flag):  # our own message names the flag already
            message = rest
        message = message[:1].lower() + message[1:] if message[1:2].islower() else message
    path = exc.ctx.command_path if exc.ctx is not None else _command_path(sys.argv[1:])
    print(f"reconcile: {message}\nsee `{path} --help`", file=sys.stderr)
    return exc.exit_code


def _hint(option: str, possible: list[str] | None, ctx) -> str:
    """a close spelling of this command's (not click's weakest match of three),
    or the commands that have this option"""
    import difflib

    close = difflib.get_close_matches(option, possible or [], 1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]}?)"
    here = ctx.command_path if ctx is not None else ""
    owners = [path for path, command in _commands(typer.main.get_command(app), "reconcile")
              if path != here and any(option in p.opts or option in p.secondary_opts for p in command.params)]
    return f" ({option} is an option of {', '.join(owners)})" if owners else ""


def _commands(group, path: str):
    """(command path, command) of every command below group"""
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield f"{path} {name}", command
        yield from _commands(command, f"{path} {name}")


def _command_path(args: list[str]) -> str:
    """reconcile and the (sub)command named in args, when click's error does not say"""
    words, group = ["reconcile"], typer.main.get_command(app)
    for arg in args:
        sub = getattr(group, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        group = sub
    return " ".join(words)


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

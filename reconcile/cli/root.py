"""The typer app every command registers on, and how --help lays out flags."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="Keep a remote copy of a local folder exactly in step.",
                  pretty_exceptions_enable=False, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from reconcile import __version__

        print(f"reconcile {__version__}")
        raise typer.Exit()


@app.callback()
def _top(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False) -> None:
    """Keep a remote copy of a local folder exactly in step."""


# --help shows the flags in these panels, in this order
GUARDS, CONTROLS, CONNECTION, SFTP, S3, JOBS = ("Safety guards", "Controls", "Connection", "SFTP", "S3",
                                                "Config file and logs")
PANELS = ("Options", GUARDS, CONTROLS, CONNECTION, SFTP, S3, JOBS)


class GroupedCommand(typer.core.TyperCommand):
    """plain --help with the options in panels (typer draws panels only with rich markup);
    flags that contradict each other refused before the command runs."""

    def invoke(self, ctx):
        from reconcile.cli.flags import conflicting_flags
        from reconcile.errors import EXIT_USAGE

        problem = conflicting_flags(ctx)
        if problem:
            print(f"reconcile: {problem}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE)
        return super().invoke(ctx)

    def format_options(self, ctx, formatter) -> None:
        args, groups = [], {p: [] for p in PANELS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                groups.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        for title, rows in groups.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def command(name: str | None = None, example: str = "", **kw):
    """app.command with grouped options, the whole first line as the short help, and an example."""
    return app.command(name, cls=GroupedCommand, epilog=f"\b\nExample:\n  {example}" if example else None, **kw)

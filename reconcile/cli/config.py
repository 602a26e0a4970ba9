"""reconcile config check: the config file's problems, each with its line and fix."""

from __future__ import annotations

import typer

from reconcile.cli.flags import ConfigOpt, JsonOut
from reconcile.cli.guard import read_only
from reconcile.cli.root import GroupedCommand, app


config_app = typer.Typer(help="The config file of named mappings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check", cls=GroupedCommand, short_help="Report the config file's problems, each with its line and fix.",
                    epilog="\b\nExample:\n  reconcile config check")
def config_check(config: ConfigOpt = None, json_out: JsonOut = False):
    """Report each problem of the config file with its line and the fix (exit 2 when any)."""
    from reconcile.config import check_command

    raise typer.Exit(read_only(lambda: check_command(config, json_out), False))

"""What restore shows the user: the progress bar, the dry-run table, the JSON
document, the summary line and the trash listing; run_restore drives a
restore.Restore for the command line. rich is used here, never in restore.py."""

from __future__ import annotations

import sys
import threading

from reconcile.errors import ConfigError
from reconcile.report import TABLE_ROWS
from reconcile.restore import Restore
from reconcile.restore_model import Item, Outcome, RestoreOptions, Survey, child_url, exit_code, shown
from reconcile.statedir import display_url
from reconcile.shown import json_text


class Reporter:
    """a progress bar on a terminal; failures as lines; nothing else"""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = Console(file=sys.stderr, stderr=True)
        self.tty = sys.stderr.isatty() and not quiet
        self.verbose = verbose
        self.received_bytes = 0
        self._lock = threading.Lock()
        self._progress = None

    def start(self, files: int, total: int) -> None:
        if not self.tty or not files:
            return
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                  console=self.console, transient=True)
        self._files = self._progress.add_task("files", total=files)
        self._bytes = self._progress.add_task("bytes", total=max(total, 1))
        self._progress.start()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def received(self, n: int) -> None:
        with self._lock:
            self.received_bytes += n
        if self._progress is not None:
            self._progress.advance(self._bytes, n)

    def ended(self, item: Item) -> None:
        if self._progress is not None:
            self._progress.advance(self._files, 1)
        if item.result in ("failed", "corrupt"):
            self.line(f"{item.result}: {shown(item.rel)}: {item.error}")
        elif self.verbose and item.result == "done":
            self.line(f"fetched: {shown(item.rel)}" + ("" if item.verified else " (unverified)"))

    def warn(self, message: str) -> None:
        self.line(f"warning: {message}")

    def line(self, text: str) -> None:
        from reconcile.shown import escape_controls

        text = escape_controls(text)  # a remote name inside a message cannot drive the terminal
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=sys.stderr, flush=True)


def human_bytes(n: int) -> str:
    from reconcile.report import human_bytes as hb

    return hb(n)


def op_json(item: Item, with_result: bool) -> dict:
    d: dict = {"op": "download", "path": item.rel, "size": item.entry.size, "reason": item.reason}
    if item.partial:
        d["resume_from"] = item.partial
    if with_result:
        d.update(result=item.result, fetched=item.fetched, verified=item.verified)
        if item.error:
            d["error"] = item.error
    return d


def summary_json(s: Survey, out: Outcome | None) -> dict:
    d: dict = {"download": {"count": len(s.todo), "bytes": sum(i.entry.size for i in s.todo)},
               "identical": s.identical, "local_differs": len(s.differs), "folders": len(s.dirs)}
    if out is not None:
        d.update(fetched=out.count("done"), kept_aside=out.count("corrupt"), unverified=out.unverified,
                 failed=out.count("failed"), not_reached=out.count("pending") + out.count("partial"),
                 bytes_fetched=sum(i.fetched for i in s.todo),
                 bytes_resumed=sum(i.partial for i in s.todo if i.result == "done"),
                 seconds=round(out.seconds, 3))
        if out.remote_gone:
            d["remote_gone"] = out.remote_gone
    return d


def print_json(doc: dict) -> None:
    # names that are not UTF-8 as \udcXX escapes: valid JSON, the exact bytes through os.fsencode
    sys.stdout.buffer.write(json_text(doc).encode("utf-8") + b"\n")
    sys.stdout.flush()


def print_table(s: Survey, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # names are Text, never markup: a file may be called "[bold]z"
    rows = [(f"{'resume' if i.partial else 'download'} ({i.reason})", Text(shown(i.rel)),
             human_bytes(i.entry.size)) for i in s.todo]
    rows += [("keep (differs locally)", Text(shown(p)), "") for p in s.differs]
    rows += [(f"blocked ({i.blocked_by} in the way)" if i.blocked_by else "blocked", Text(shown(i.rel)), "")
             for i in s.blocked]
    console = Console()
    if not rows:
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("operation", no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    limit = len(rows) if verbose else TABLE_ROWS
    for row in rows[:limit]:
        table.add_row(*row)
    console.print(table)
    if len(rows) > limit:
        console.print(f"... and {len(rows) - limit} more (-v or --json lists them all)")


def summary_line(s: Survey, out: Outcome | None) -> str:
    if out is None:
        line = (f"restore (dry run): {len(s.todo)} to fetch "
                f"({human_bytes(sum(i.entry.size for i in s.todo))}), {s.identical} already identical")
    else:
        line = (f"restore: {out.count('done')} fetched, {s.identical} already identical, "
                f"{out.count('corrupt')} kept aside, {out.unverified} unverified")
    extra = []
    if s.differs:
        n = len(s.differs)
        extra.append(f"{n} differing local {'file' if n == 1 else 'files'} left alone (--overwrite replaces "
                     f"{'it' if n == 1 else 'them'})")
    if out is not None:
        if out.count("failed"):
            extra.append(f"{out.count('failed')} failed")
        received = sum(i.fetched for i in s.todo)
        if received:
            extra.append(f"{human_bytes(received)} received")
        if out.remote_gone:
            extra.append(f"partial: the remote went away ({out.remote_gone}); run again to resume")
    if s.links:
        extra.append(f"{s.links} symlinks not restored")
    return line + "".join(f"; {x}" for x in extra)


def run_restore(url: str, local_dir: str | None, opts: RestoreOptions, json_out: bool, list_only: bool,
                quiet: bool, verbose: bool) -> int:
    reporter = Reporter(quiet=quiet, verbose=verbose)
    r = Restore(url, opts, reporter)
    if list_only:
        return _print_trash(r, json_out)
    if not local_dir:
        raise ConfigError("give the LOCAL_DIR to restore into (only --list-trash works without one)")
    out = r.run()
    s = out.survey
    done = None if opts.dry_run else out
    for item in s.blocked if done else []:
        reporter.line(f"failed: {shown(item.rel)}: {item.error}")
    if json_out:
        print_json({"remote": display_url(url), "local": r.root, "run": r.run_name,
                    "operations": [op_json(i, done is not None) for i in s.todo],
                    "local_differs": s.differs,
                    "blocked": [{"path": i.rel, "error": i.error} for i in s.blocked],
                    "summary": summary_json(s, done)})
    elif opts.dry_run and not quiet:
        print_table(s, verbose)
    print(f"{summary_line(s, done)} ({out.seconds:.1f}s)", file=sys.stderr, flush=True)
    return exit_code(out) if done else 0


def _print_trash(r: Restore, json_out: bool) -> int:
    runs = r.list_trash()
    if json_out:
        print_json({"trash": display_url(child_url(r.url, r.backup_dir)),
                    "runs": [{"run": k, "files": v[0], "bytes": v[1]} for k, v in runs.items()]})
        return 0
    if not runs:
        print(f"no trash runs under {shown(display_url(child_url(r.url, r.backup_dir)))}", file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col, just in (("run", "left"), ("files", "right"), ("size", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for run, (files, size) in runs.items():
        table.add_row(Text(shown(run)), str(files), human_bytes(size))
    Console().print(table)
    return 0

"""What the user sees: the plan table, JSON, progress and the summary line."""

from __future__ import annotations

import sys
import threading
import time

from typing import TYPE_CHECKING

from reconcile.entry import DIR
from reconcile.plan import Op, Plan
from reconcile.shown import escape_controls, json_text, printable

if TYPE_CHECKING:
    from reconcile.apply import Counted
    from rich.console import Console
    from rich.progress import Progress
# rich is imported where a table or a bar is drawn: a quiet run never needs it

TABLE_ROWS = 200


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def rate(bytes_per_s: float) -> str:
    """as --bwlimit reads it: K and M are 1024 and 1024**2."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if bytes_per_s >= size:
            return f"{bytes_per_s / size:.4g}{unit}/s"
    return f"{bytes_per_s:.0f} B/s"


def count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def plan_summary(plan: Plan) -> str:
    s = plan.summary()
    parts = []
    if s["upload"]["count"]:
        parts.append(f"{s['upload']['count']} to send ({human_bytes(s['upload']['bytes'])})")
    if s["touch"]["count"]:
        parts.append(f"{count(s['touch']['count'], 'file')} to touch (same content, new mtime: "
                     f"{human_bytes(s['touch']['bytes_saved'])} not resent)")
    if s["move"]["count"]:
        parts.append(f"{count(s['move']['count'], 'move')} ({count(s['move']['files'], 'file')}, "
                     f"{human_bytes(s['move']['bytes_saved'])} not resent)")
    if s["delete"]["count"]:
        parts.append(f"{count(s['delete']['files'], 'file')} to delete")
    if s["mkdir"]["count"]:
        parts.append(f"{count(s['mkdir']['count'], 'folder')} to create")
    return ", ".join(parts) if parts else "nothing to do"


def bytes_line(counted: "Counted") -> str:
    """the summary line's account of bytes: sent, and not resent thanks to moves, touches and deltas"""
    line = f"{human_bytes(counted.sent)} sent"
    causes = [f"{what} {human_bytes(n)}" for what, n in (("moves", counted.saved_move),
                                                         ("touches", counted.saved_touch),
                                                         ("deltas", counted.saved_delta)) if n]
    if causes:
        line += (f", {human_bytes(sum(counted.saved.values()))} not resent"
                 f" ({', '.join(causes)})")
    return line


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _row(op: Op) -> tuple[str, str, str, str]:
    path = printable(op.path) + ("/" if op.kind == DIR else "")
    if op.op == "move":
        what = "move dir" if op.kind == DIR else "move"
        detail = _files(len(op.files)) if op.kind == DIR else human_bytes(op.size)
        return what, path, printable(op.to or ""), detail
    if op.op == "upload":
        return f"upload ({op.reason})", path, "", human_bytes(op.size)
    if op.op == "touch":
        return "touch", path, "", human_bytes(op.size)
    if op.op == "delete":
        detail = _files(len(op.files)) if op.kind == DIR else ""
        return "delete" + (" (replaced)" if op.reason == "replaced" else ""), path, "", detail
    return op.op, path, "", ""


def controls(opts) -> dict:
    """the run's controls, for the plan: what the user set, never a secret."""
    return {"bwlimit": opts.bwlimit, "backup_dir": opts.backup_dir, "backup_keep_days": opts.backup_keep_days,
            "links": opts.links, "checksum": opts.checksum, "perms": bool(opts.remote.extra.get("perms"))}


def controls_lines(c: dict) -> list[str]:
    lines = []
    if c.get("bwlimit"):
        lines.append(f"bandwidth limit: {rate(c['bwlimit'])} for all transfers together")
    if c.get("backup_dir"):
        keep = f", pruned after {c['backup_keep_days']:g} days" if c.get("backup_keep_days") else ""
        lines.append(f"overwritten and deleted files are kept in {printable(c['backup_dir'])}/{keep}")
    if c.get("links", "skip") != "skip":
        lines.append(f"symlinks: {c['links']}")
    if c.get("checksum"):
        lines.append("compared by content (xxh3), not size and mtime")
    if c.get("perms"):
        lines.append("file permissions kept")
    return lines


def print_plan(plan: Plan, console: "Console", verbose: bool = False, controls: dict | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    if not console.is_terminal:
        print_plan_lines(plan, controls)
        return
    if plan.ops:
        shown = [o for o in plan.ops if o.reason != "temp"]
        kept = any(o.backup for o in shown)
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("operation", no_wrap=True)
        table.add_column("path", overflow="fold")
        table.add_column("to", overflow="fold")
        table.add_column("size", justify="right", no_wrap=True)
        if kept:
            table.add_column("old version kept in", overflow="fold")
        limit = len(shown) if verbose else TABLE_ROWS
        for op in shown[:limit]:
            row = _row(op)
            if kept:
                row += (printable(op.backup or ""),)
            table.add_row(*(Text(cell) for cell in row))  # a name like [bold] is text, not markup
        console.print(table)
        if len(shown) > limit:
            console.print(f"... and {len(shown) - limit} more operations (-v or --json lists them all)")
    for line in controls_lines(controls or {}):
        console.print(line, markup=False, highlight=False)


def _ops_json(ops: list[Op], results: dict | None) -> list[dict]:
    out = []
    for i, op in enumerate(ops):
        if op.reason == "temp":
            continue
        d = op.to_json()
        if results is not None:
            r, err = results.get(i, ("skipped", "not reached"))
            d["result"] = r
            if err and r != "done":
                d["error"] = err
        out.append(d)
    return out


def print_plan_lines(plan: Plan, controls: dict | None = None, out=None) -> None:
    """for a pipe or a file: every operation on one line, tab-separated, never
    wrapped (names show tabs and newlines escaped), so grep and cut find rows."""
    out = out or sys.stdout
    shown = [o for o in plan.ops if o.reason != "temp"]
    kept = any(o.backup for o in shown)
    if shown:
        header = ("operation", "path", "to", "size") + (("old version kept in",) if kept else ())
        print("\t".join(header), file=out)
    for op in shown:
        row = _row(op) + ((printable(op.backup or ""),) if kept else ())
        print("\t".join(row), file=out)
    for line in controls_lines(controls or {}):
        print(line, file=out)


def plan_json(source: str, dest: str, plan: Plan, results: dict | None = None,
              controls: dict | None = None, unreadable: list[tuple[str, str]] | None = None,
              resumed: tuple[list[Op], dict] | None = None, mapping: str | None = None,
              not_stored: list[tuple[str, str]] | None = None, counted: "Counted | None" = None) -> str:
    doc = {**({"mapping": mapping} if mapping else {}), "source": source, "dest": dest, "operations": _ops_json(plan.ops, results), "summary": plan.summary()}
    if controls is not None:
        doc["controls"] = controls
    # source files and folders (ending in /) that could not be read: not sent, counted as skipped
    doc["unreadable"] = [{"path": printable(p), "reason": why} for p, why in unreadable or []]
    # what the destination cannot hold (a forbidden name, a case twin, a file too big): not sent, skipped
    doc["not_stored"] = [{"path": printable(p), "reason": why} for p, why in not_stored or []]
    if resumed is not None:
        # what this run finished for an interrupted one, before its own plan
        ops, carried_out = resumed
        doc["resumed"] = [d for i, d in zip(_kept(ops), _ops_json(ops, carried_out)) if i in carried_out]
    if results is not None:
        everything = list(results.values()) + (list(resumed[1].values()) if resumed else [])
        doc["totals"] = {k: sum(1 for r, _ in everything if r == k) for k in ("done", "skipped", "failed")}
        doc["totals"]["skipped"] += len(doc["unreadable"]) + len(doc["not_stored"])
        if counted is not None:
            doc["totals"]["bytes_sent"] = counted.sent
            doc["totals"]["bytes_saved"] = counted.saved
    return json_text(doc, default=str)


def _kept(ops: list[Op]) -> list[int]:
    """the indexes _ops_json keeps, in its order"""
    return [i for i, op in enumerate(ops) if op.reason != "temp"]


class ApplyReporter:
    """Progress on a terminal; plain lines (only with -v) and warnings otherwise."""

    def __init__(self, verbose: bool = False, quiet: bool = False, stream=None, binary_rate: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.binary_rate = binary_rate  # under --bwlimit: speeds as the flag reads them (4M/s)
        self.verbose = verbose
        self.quiet = quiet
        self.tty = self.stream.isatty() and not quiet
        self._lock = threading.Lock()
        self._progress: "Progress | None" = None
        self.started = time.monotonic()

    def start(self, total_ops: int, total_bytes: int) -> None:
        if not self.tty or total_ops == 0:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._total_ops, self._ops_done, self._by_bytes = total_ops, 0, total_bytes > 0
        columns = [TextColumn("{task.description}"), BarColumn()]
        if self._by_bytes and self.binary_rate:
            columns += [DownloadColumn(binary_units=True), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
        elif self._by_bytes:
            columns += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
        else:
            columns += [MofNCompleteColumn()]
        self._progress = Progress(*columns, console=Console(file=self.stream, stderr=True), transient=True)
        self._task = self._progress.add_task(self._describe(), rate="",
                                             total=total_bytes if self._by_bytes else total_ops)
        self._progress.start()

    def _describe(self) -> str:
        return f"{self._ops_done}/{self._total_ops} operations"

    def stop(self) -> None:
        with self._lock:
            self._end_waiting()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def op_started(self, op: Op) -> None:
        pass

    def sent(self, n: int) -> None:
        if self._progress is not None and self._by_bytes:
            self._progress.advance(self._task, n)
            if self.binary_rate:
                speed = self._progress.tasks[0].speed if self._progress.tasks else None
                self._progress.update(self._task, rate=rate(speed) if speed else "")

    def op_ended(self, op: Op, result: str, error: str | None) -> None:
        if self._progress is not None:
            with self._lock:
                self._ops_done += 1
            self._progress.update(self._task, description=self._describe(),
                                  advance=0 if self._by_bytes else 1)
        if result == "failed":
            self._line(f"failed: {op.op} {printable(op.path)}: {error}")
        elif self.verbose and op.reason != "temp":
            what, path, to, _ = _row(op)
            self._line(f"{result}: {what} {path}" + (f" -> {to}" if to else "") + (f" ({error})" if error else ""))

    def warn(self, message: str) -> None:
        self._line(f"warning: {message}")

    def waiting(self, text: str) -> None:
        """one live line on a terminal, rewritten in place (a wait for the network)."""
        with self._lock:
            if self._progress is not None:  # the bar's own line says it, until the next operation ends
                self._progress.update(self._task, description=text)
                return
            self.stream.write(f"\r\x1b[K{text}")
            self.stream.flush()
            self._waiting = True

    def _end_waiting(self) -> None:
        if getattr(self, "_waiting", False):
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._waiting = False

    def _line(self, text: str) -> None:
        with self._lock:
            self._end_waiting()
            text = escape_controls(text)  # names inside messages (errors, warnings) included
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=self.stream, flush=True)

"""The lines a plan or apply run ends with: what it resumed, what it could
not read or store, the walk's skips and the summary line itself."""

from __future__ import annotations

import sys
import time

RESUMED_SHOWN = 10  # operations named on the resumed: line; -v and --json list them all


def resumed_line(result) -> str:
    """one line naming what this run finished for an interrupted one."""
    from reconcile.report import count, printable

    if not result.resumed:
        return ""
    done = [op for i, op in enumerate(result.resumed_ops)
            if result.resumed.results.get(i, ("",))[0] == "done" and op.reason != "temp"]
    if not done:
        return ""
    named = ", ".join(f"{op.op} {printable(op.path)}" for op in done[:RESUMED_SHOWN])
    more = f" and {len(done) - RESUMED_SHOWN} more" if len(done) > RESUMED_SHOWN else ""
    return f"resumed: finished {count(len(done), 'operation')} of the interrupted run: {named}{more}"


UNREADABLE_SHOWN = 3  # in the summary line; the warnings above it name every one


def unreadable_note(unreadable: list[tuple[str, str]]) -> str:
    """the summary line's account of what could not be read, and what to do."""
    if not unreadable:
        return ""
    from reconcile.report import printable

    named = ", ".join(f"{printable(p)} ({why})" for p, why in unreadable[:UNREADABLE_SHOWN])
    more = f" and {len(unreadable) - UNREADABLE_SHOWN} more" if len(unreadable) > UNREADABLE_SHOWN else ""
    return (f"; not backed up, could not be read: {named}{more}; "
            "fix their permissions (or run as their owner) and run again")


def not_stored_note(not_stored: list[tuple[str, str]]) -> str:
    """what the destination cannot hold; the warnings above say why, one by one"""
    if not not_stored:
        return ""
    return f"; {len(not_stored)} not stored: the destination cannot hold them (see the warnings above)"


def print_network(run) -> None:
    """-v: what the run cost on the network (SFTP: connections, round trips), before the summary."""
    net = run.network()
    if net is None:
        return
    from reconcile.report import count

    print(f"network: {count(net.connections, 'ssh connection')} ({count(net.sessions, 'SFTP session')}), "
          f"{count(net.round_trips, 'round trip')} waited on", file=sys.stderr)


def print_delta_note(run) -> None:
    """-v: how large files that change travel to this destination (delta transfer)"""
    note = run.delta_note()
    if note:
        print(f"large files (64 MiB or more) that change: {note}", file=sys.stderr)


def print_summary(line: str, result, started: float) -> None:
    w = result.walk
    from reconcile.report import count

    extra = []
    if w.symlinks_skipped:
        extra.append(f"{count(w.symlinks_skipped, 'symlink')} skipped")
    if w.specials_skipped:
        extra.append(f"{count(len(w.specials_skipped), 'special file')} skipped")
    if w.links_not_followed:
        extra.append(f"{count(len(w.links_not_followed), 'symlink')} not followed")
    tail = f" [{'; '.join(extra)}]" if extra else ""
    # the details first: the summary line is the run's last word
    for u in w.unreadable:
        print(f"warning: cannot read {u}; its remote copy is left alone", file=sys.stderr)
    for link in w.links_not_followed[:20]:
        print(f"warning: symlink not followed: {link}", file=sys.stderr)
    for sp in w.specials_skipped[:20]:
        print(f"warning: skipped special file {sp}", file=sys.stderr)
    print(f"{line}{tail} ({time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)

"""python -m bench.delta_phases [--mib 1024] [--rounds 3] [--remote sftp|local] [--dest DIR]

Where a delta's time goes, in-process (no proxy, no command start-up, no
walk). SFTP: against a loopback sshd of its own. local: into --dest (a
folder on the file system to measure, e.g. an XFS image mounted with
reflink; the remote's own choice of delta or whole copy is kept).

Each round, in a fresh folder: one large file of random data uploaded whole
into the empty folder; then 1 MiB changed in its middle, hashed and mapped
as the plan does (blockmap.map_file: a same-size file with a new mtime is
hashed to find touches) and sent as a delta; then changed again, hashed the
same way and sent whole over the old copy (deltas turned off: what the same
change costs without them, the fair baseline: it pays the old version's
removal as the delta does). Timers sit around the delta's pieces. Times are
wall-clock seconds, medians over the rounds, each round shown. Prints a
table; writes nothing else."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

MiB = 1 << 20
T0 = 1_600_000_000 * 10**9

# (module, attribute, the row it times)
SFTP_PHASES = [("reconcile.remotes.sftp.delta", "_copy", "the server's copy-data of the unchanged blocks and its fsync"),
               ("reconcile.remotes.sftp.remote.SftpRemote", "_replace", "the rename into place (frees the old version)")]
LOCAL_PHASES = [("reconcile.remotes.local", "_fill_delta", "the temp file filled: shared ranges, changed blocks, read back"),
                ("reconcile.remotes.local", "_read_back", "  of which: reading the result back for its xxh3"),
                ("reconcile.remotes.local", "_copy_range", "  of which: copy_file_range of the unchanged ranges"),
                ("reconcile.remotes.local.LocalRemote", "_write_new", "the temp file written, fsynced, renamed into place")]


def _resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _timed(owner, name: str, row: str, totals: dict[str, float]) -> None:
    """owner.name, adding its wall time to totals[row] on each call"""
    fn = getattr(owner, name)

    def timed(*args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            totals[row] = totals.get(row, 0.0) + time.perf_counter() - t
    setattr(owner, name, timed)


def _change_middle(path: Path, mib: int) -> None:
    with open(path, "r+b") as f:
        f.seek(mib * MiB // 2 - MiB // 2)
        f.write(random.randbytes(MiB))


@contextmanager
def _no_delta(remote):
    if hasattr(remote, "_copy_data"):
        remote._copy_data = False
        try:
            yield
        finally:
            remote._copy_data = True
    else:
        remote._delta_pays = lambda: False
        try:
            yield
        finally:
            del remote._delta_pays


def one_round(remote, where: str, src: Path, mib: int, totals: dict[str, float], r: int) -> dict[str, float]:
    """where: the folder the remote writes into, on this machine"""
    from reconcile.blockmap import map_file
    from reconcile.entry import Entry

    rel = f"r{r}/disk.img"

    def upload(stamp: int, planned: bool) -> tuple[float, float]:
        """(the plan's hash and map, the upload)"""
        os.utime(src, ns=(stamp, stamp))
        st = src.stat()
        entry = Entry(rel, size=st.st_size, mtime_ns=st.st_mtime_ns)
        t = time.perf_counter()
        if planned:
            entry.block_map = map_file(str(src), st.st_size, st.st_mtime_ns)
            entry.hash = entry.block_map.digest
        hashed = time.perf_counter() - t
        t = time.perf_counter()
        remote.upload(str(src), rel, entry)
        return hashed, time.perf_counter() - t

    row = {"full upload into an empty folder": upload(T0 + r * 10**10, planned=False)[1]}
    _change_middle(src, mib)
    totals.clear()
    hashed, sent = upload(T0 + r * 10**10 + 10**9, planned=True)
    row["delta, plan's hash and map + upload"] = hashed + sent
    row["  the plan's hash and map of the local file (map_file)"] = hashed
    row["  the upload"] = sent
    row.update({f"  {k}": v for k, v in totals.items()})
    _change_middle(src, mib)
    with _no_delta(remote):
        hashed, sent = upload(T0 + r * 10**10 + 2 * 10**9, planned=True)
    row["whole file over the old copy, plan's hash and map + upload"] = hashed + sent
    row["  the upload (whole)"] = sent
    shutil.rmtree(Path(where) / f"r{r}")  # room for the next round
    return row


def _sftp_remote(base: Path, stack):
    from reconcile.remotes import open_remote
    from reconcile.remotes.base import RemoteOptions, SftpOptions
    from tests.servers_sftp import _stop, start_sshd

    (base / "sshd").mkdir()
    port, proc = start_sshd(base / "sshd", log_level="ERROR")
    stack.callback(_stop, proc)
    host_pub = " ".join((base / "sshd" / "hostkey.pub").read_text().split()[:2])
    kh = base / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    (base / "dst").mkdir()
    options = RemoteOptions(state_dir=str(base / "state"),
                            sftp=SftpOptions(key=str(base / "sshd" / "userkey"), known_hosts=str(kh)))
    return open_remote(f"sftp://root@127.0.0.1:{port}{base}/dst", options), str(base / "dst")


def _local_remote(base: Path, dest: str, stack):
    from reconcile.remotes import open_remote
    from reconcile.remotes.base import RemoteOptions

    folder = Path(tempfile.mkdtemp(prefix="delta-phases-", dir=dest))
    stack.callback(shutil.rmtree, folder, True)
    return open_remote(str(folder), RemoteOptions(state_dir=str(base / "state"))), str(folder)


def main(argv: list[str]) -> int:
    from contextlib import ExitStack

    p = argparse.ArgumentParser(prog="python -m bench.delta_phases")
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--remote", choices=["sftp", "local"], default="sftp")
    p.add_argument("--dest", help="local: the folder to write into (its file system is measured)")
    args = p.parse_args(argv)
    if args.remote == "local" and not args.dest:
        p.error("--remote local needs --dest DIR")

    totals: dict[str, float] = {}
    for dotted, name, row in SFTP_PHASES if args.remote == "sftp" else LOCAL_PHASES:
        _timed(_resolve(dotted), name, row, totals)
    with tempfile.TemporaryDirectory(prefix="delta-phases-", dir=os.environ.get("TMPDIR", "/tmp")) as tmp, \
            ExitStack() as stack:
        base = Path(tmp)
        src = base / "disk.img"
        with open(src, "wb") as f:
            for _ in range(args.mib):
                f.write(random.randbytes(MiB))
        remote, where = _sftp_remote(base, stack) if args.remote == "sftp" else _local_remote(base, args.dest, stack)
        stack.callback(remote.close)
        note = remote.delta_note()
        rows = [one_round(remote, where, src, args.mib, totals, r) for r in range(args.rounds)]
    print(f"{args.remote}: {note}\n")
    print(f"| {args.mib} MiB, {args.remote}, in-process | median s | rounds |\n|---|---|---|")
    for key in dict.fromkeys(k for row in rows for k in row):
        each = [row.get(key, 0.0) for row in rows]
        print(f"| {key} | {statistics.median(each):.2f} | {', '.join(f'{x:.2f}' for x in each)} |")
    delta = "delta, plan's hash and map + upload"
    fair = "whole file over the old copy, plan's hash and map + upload"
    ratio = [row[delta] / row["full upload into an empty folder"] for row in rows]
    ratio_fair = [row[delta] / row[fair] for row in rows]
    print(f"\ndelta / full upload into an empty folder: {statistics.median(ratio):.2f} "
          f"(rounds {', '.join(f'{x:.2f}' for x in ratio)}); delta / whole file over the old copy: "
          f"{statistics.median(ratio_fair):.2f} (rounds {', '.join(f'{x:.2f}' for x in ratio_fair)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

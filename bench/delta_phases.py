"""python -m bench.delta_phases [--mib 1024] [--rounds 3]

Where an SFTP delta's time goes, in-process against a loopback sshd of its
own (no proxy, no command start-up, no walk): one large file of random data
uploaded whole to an empty folder, then 1 MiB changed in its middle and sent
as a delta, then changed again and sent whole over the old copy (copy-data
turned off: what the same change costs without deltas). Timers sit around
the delta's pieces: mapping the local file (blockmap.map_fd), the server's
copies and their fsync (sftp.delta._copy), and the rename into place, which
frees the old version. Each round a fresh folder; times are wall-clock
seconds, medians over the rounds, each round shown."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
T0 = 1_600_000_000 * 10**9


def _timed(module, name: str, totals: dict[str, float]) -> None:
    """module.name, adding its wall time to totals[name] on each call"""
    fn = getattr(module, name)

    def timed(*args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
    setattr(module, name, timed)


def _change_middle(path: Path, mib: int) -> None:
    with open(path, "r+b") as f:
        f.seek(mib * MiB // 2 - MiB // 2)
        f.write(random.randbytes(MiB))


def one_round(remote, src: Path, mib: int, totals: dict[str, float], r: int) -> dict[str, float]:
    from reconcile.entry import Entry

    def upload(stamp: int) -> float:
        os.utime(src, ns=(stamp, stamp))
        st = src.stat()
        t = time.perf_counter()
        remote.upload(str(src), f"r{r}/disk.img", Entry(f"r{r}/disk.img", size=st.st_size, mtime_ns=st.st_mtime_ns))
        return time.perf_counter() - t

    row = {"full upload": upload(T0 + r * 10**10)}
    _change_middle(src, mib)
    totals.clear()
    row["delta"] = upload(T0 + r * 10**10 + 10**9)
    row.update({f"  {k}": v for k, v in totals.items()})
    _change_middle(src, mib)
    remote._copy_data = False
    row["whole file over the old copy"] = upload(T0 + r * 10**10 + 2 * 10**9)
    remote._copy_data = True
    return row


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delta_phases")
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    import reconcile.blockmap as blockmap
    import reconcile.remotes.sftp.delta as delta
    import reconcile.remotes.sftp.remote as sftp_remote
    from reconcile.remotes import open_remote
    from reconcile.remotes.base import RemoteOptions, SftpOptions
    from tests.servers_sftp import _stop, start_sshd

    totals: dict[str, float] = {}
    _timed(blockmap, "map_fd", totals)
    _timed(delta, "_copy", totals)
    _timed(sftp_remote.SftpRemote, "_replace", totals)
    with tempfile.TemporaryDirectory(prefix="delta-phases-", dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        base = Path(tmp)
        (base / "sshd").mkdir()
        port, proc = start_sshd(base / "sshd", log_level="ERROR")
        try:
            host_pub = " ".join((base / "sshd" / "hostkey.pub").read_text().split()[:2])
            kh = base / "known_hosts"
            kh.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
            src = base / "disk.img"
            with open(src, "wb") as f:
                for _ in range(args.mib):
                    f.write(random.randbytes(MiB))
            (base / "dst").mkdir()
            options = RemoteOptions(state_dir=str(base / "state"),
                                    sftp=SftpOptions(key=str(base / "sshd" / "userkey"), known_hosts=str(kh)))
            remote = open_remote(f"sftp://root@127.0.0.1:{port}{base}/dst", options)
            try:
                rows = [one_round(remote, src, args.mib, totals, r) for r in range(args.rounds)]
            finally:
                remote.close()
        finally:
            _stop(proc)
    print(f"| {args.mib} MiB, SFTP, in-process | median s | rounds |\n|---|---|---|")
    for key in rows[0]:
        each = [row.get(key, 0.0) for row in rows]
        print(f"| {key} | {statistics.median(each):.2f} | {', '.join(f'{x:.2f}' for x in each)} |")
    ratio = [row["delta"] / row["full upload"] for row in rows]
    fair = [row["delta"] / row["whole file over the old copy"] for row in rows]
    print(f"\ndelta / full upload: {statistics.median(ratio):.2f} (rounds {', '.join(f'{x:.2f}' for x in ratio)}); "
          f"delta / whole file over the old copy: {statistics.median(fair):.2f} "
          f"(rounds {', '.join(f'{x:.2f}' for x in fair)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""python -m bench.delta [--mib 1024] [--rounds 3] [--reflink DIR] [--output FILE]

Bytes on the wire for issue 26 (touch, resume bound, delta), counted by a TCP
proxy (tests/servers_sftp.py TcpProxy) between each tool and the loopback
sshd or SeaweedFS, with times beside them. Peers on the same data: rsync
over ssh (its --stats "Total bytes sent" too) and rclone. reconcile's own
targets also send the same kind of change whole over the old copy (their
block records forgotten): the fair baseline for a delta, which pays the old
version's removal too. --reflink DIR adds a local target in DIR (a folder on
a file system that shares blocks, e.g. XFS with reflink). Prints a markdown
section, or writes it to --output FILE; never edits docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, log, rmtree
from bench.servers import s3_env, start_seaweed, start_sshd

MiB = 1 << 20
T0 = 1_600_000_000
WHOLE_OVER_OLD = "1 MiB changed, sent whole over the old copy"


@dataclass
class Target:
    name: str
    proxy: object | None  # TcpProxy, None for a local folder
    sync: callable  # (src) -> (seconds, stdout)
    fresh: callable = lambda: None  # a new, empty destination and state (reconcile's targets)
    forget_blocks: callable | None = None  # drop its block records: the next change goes whole (reconcile's)
    rows: dict[str, list[tuple[int | None, float, str]]] = field(default_factory=dict)  # case -> [(bytes, s, note)]


def timed(argv: list[str], env: dict | None = None, check: bool = True) -> tuple[float, str]:
    t = time.perf_counter()
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}  # None: unset
    p = subprocess.run(argv, capture_output=True, text=True, env=full)
    took = time.perf_counter() - t
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv[:3]}... exit {p.returncode}: {p.stderr[-800:]}")
    return took, p.stdout


def measure(t: Target, case: str, src: Path, note: str = "") -> None:
    before = t.proxy.bytes_up if t.proxy else 0
    seconds, out = t.sync(src)
    wire = t.proxy.bytes_up - before if t.proxy else None
    if t.name.startswith("rsync"):
        note = note or next((f"--stats: {line.split(':')[1].strip()} sent" for line in out.splitlines()
                             if line.startswith("Total bytes sent")), "")
    if t.name.startswith("reconcile local"):
        totals = json.loads(out)["totals"]
        note = note or f"written {totals['bytes_sent'] / MiB:.1f} MiB, copied {totals['bytes_saved']['delta'] / MiB:.1f} MiB"
    t.rows.setdefault(case, []).append((wire, seconds, note))
    log(f"{t.name:18} {case:28} {'-' if wire is None else f'{wire / MiB:9.2f} MiB'} {seconds:7.2f} s {note}")


def reconcile_target(name: str, proxy, dest: str, state: Path, extra: list[str], env: dict | None = None) -> Target:
    where = [dest, state, 0]

    def sync(src: Path) -> tuple[float, str]:
        return timed([sys.executable, "-m", "reconcile", "apply", str(src), where[0], "--state-dir", str(where[1]),
                      "--json", *extra], env)

    def fresh() -> None:
        where[2] += 1
        where[0], where[1] = f"{dest}-{where[2]}", Path(f"{state}-{where[2]}")

    def forget_blocks() -> None:
        for blocks in Path(where[1]).rglob("blocks"):
            rmtree(str(blocks))

    return Target(name, proxy, sync, fresh, forget_blocks)


def targets(work: Path, sshd, weed, bucket: str, stem: str, reflink: str | None = None) -> list[Target]:
    from bench.proxy import TcpProxy

    out = []
    host_pub = " ".join((Path(ROOT) / "sshd" / "hostkey.pub").read_text().split()[:2])

    def sftp_proxy() -> tuple[TcpProxy, str]:
        proxy = TcpProxy(sshd.port)
        kh = work / f"known_hosts_{proxy.port}"
        kh.write_text(f"[127.0.0.1]:{proxy.port} {host_pub}\n")
        return proxy, str(kh)

    p, kh = sftp_proxy()
    out.append(reconcile_target("reconcile sftp", p, f"sftp://root@127.0.0.1:{p.port}{work}/{stem}-sftp",
                                work / f"{stem}-state-sftp", ["--ssh-key", sshd.key, "--known-hosts", kh]))
    p = TcpProxy(weed.ports["s3"])
    env = s3_env(f"http://127.0.0.1:{p.port}")
    out.append(reconcile_target("reconcile s3", p, f"s3://{bucket}/{stem}", work / f"{stem}-state-s3",
                                ["--s3-endpoint", f"http://127.0.0.1:{p.port}"], env))
    out.append(reconcile_target("reconcile local", None, str(work / f"{stem}-local"), work / f"{stem}-state-local", []))
    # the bench folder is on ext4, where a folder gets whole files: the delta's cost there, forced
    out.append(reconcile_target("reconcile local (delta forced)", None, str(work / f"{stem}-localf"),
                                work / f"{stem}-state-localf", [], {"RECONCILE_TEST_LOCAL_DELTA": "1"}))
    if reflink:
        out.append(reconcile_target("reconcile local (reflink)", None, f"{reflink}/{stem}-local",
                                    work / f"{stem}-state-reflink", []))
    p, kh = sftp_proxy()
    ssh = (f"ssh -p {p.port} -i {sshd.key} -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes "
           "-o BatchMode=yes")
    out.append(Target("rsync over ssh", p, lambda src, ssh=ssh: timed(
        ["rsync", "-a", "--stats", "-e", ssh, f"{src}/", f"root@127.0.0.1:{work}/{stem}-rsync/"])))
    p, kh = sftp_proxy()
    renv = {"RCLONE_CONFIG_BSFTP_TYPE": "sftp", "RCLONE_CONFIG_BSFTP_HOST": "127.0.0.1",
            "RCLONE_CONFIG_BSFTP_PORT": str(p.port), "RCLONE_CONFIG_BSFTP_USER": "root",
            "RCLONE_CONFIG_BSFTP_KEY_FILE": sshd.key, "RCLONE_CONFIG_BSFTP_KNOWN_HOSTS_FILE": kh}
    out.append(Target("rclone sftp", p, lambda src, renv=renv: timed(
        ["rclone", "sync", str(src), f"bsftp:{work}/{stem}-rclone"], renv)))
    p = TcpProxy(weed.ports["s3"])
    renv = s3_env(f"http://127.0.0.1:{p.port}")
    out.append(Target("rclone s3", p, lambda src, renv=renv: timed(
        ["rclone", "sync", str(src), f"bs3:{bucket}/{stem}-rclone"], renv)))
    return out


def big_file_cases(work: Path, sshd, weed, bucket: str, mib: int, rounds: int, reflink: str | None) -> list[Target]:
    """every tool once; reconcile's own targets `rounds` times (times are noisy), each on a fresh copy"""
    ts = targets(work, sshd, weed, bucket, "big", reflink)
    for r in range(rounds):
        _big_round(work / f"big-src{r}", [t for t in ts if r == 0 or t.name.startswith("reconcile")], mib, r)
    return ts


def _big_round(src: Path, ts: list[Target], mib: int, r: int) -> None:
    src.mkdir(parents=True)
    path = src / "disk.img"
    size = mib * MiB
    with open(path, "wb") as f:
        for _ in range(mib // 64):
            f.write(random.randbytes(64 * MiB))
    os.utime(path, (T0 + 100 * r, T0 + 100 * r))
    for t in ts:
        if r:
            t.fresh()
        measure(t, "full upload", src)
    with open(path, "r+b") as f:
        f.seek(size // 2 - MiB // 2)
        f.write(random.randbytes(MiB))
    os.utime(path, (T0 + 100 * r + 10, T0 + 100 * r + 10))
    for t in ts:
        measure(t, "1 MiB changed in the middle", src)
    with open(path, "r+b") as f:
        f.seek(size // 2 - MiB // 2)
        f.write(random.randbytes(MiB))
    os.utime(path, (T0 + 100 * r + 15, T0 + 100 * r + 15))
    for t in ts:
        if t.forget_blocks:
            t.forget_blocks()
            measure(t, WHOLE_OVER_OLD, src)
        else:
            measure(t, "second change (peers: kept in step, not shown)", src)
    with open(path, "ab") as f:
        f.write(random.randbytes(MiB))
    os.utime(path, (T0 + 100 * r + 20, T0 + 100 * r + 20))
    for t in ts:
        measure(t, "1 MiB appended", src)


def touch_cases(work: Path, sshd, weed, bucket: str) -> list[Target]:
    src = work / "touch-src"
    for i in range(100):
        p = src / f"p{i:03}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(random.randbytes(50_000))
        os.utime(p, (T0, T0))
    ts = [t for t in targets(work, sshd, weed, bucket, "touch") if t.proxy is not None]
    for t in ts:
        measure(t, "100 files of 50 KB: first", src)
    for p in src.iterdir():
        os.utime(p, (T0 + 86400, T0 + 86400))
    for t in ts:
        measure(t, "100 files of 50 KB touched", src)
    return ts


def resume_case(work: Path, sshd, weed, bucket: str, mb: int = 300, at: float = 0.4) -> list[str]:
    """SIGKILL reconcile once the proxy passed `at` of the file, then apply
    again: what the second run sends against what was left."""
    src = work / "resume-src"
    src.mkdir(parents=True)
    size = mb * 1_000_000
    with open(src / "big.bin", "wb") as f:
        for _ in range(mb // 50):
            f.write(random.randbytes(50_000_000))
    lines = []
    for t in targets(work, sshd, weed, bucket, "resume")[:2]:
        dest, state, extra, env = _reconcile_parts(t, work, bucket)
        argv = [sys.executable, "-m", "reconcile", "apply", str(src), dest, "--state-dir", str(state), *extra]
        full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
        child = subprocess.Popen(argv, env=full, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        while t.proxy.bytes_up < size * at and child.poll() is None:
            time.sleep(0.002)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        time.sleep(0.3)
        first = t.proxy.bytes_up
        seconds, _ = timed(argv, env)
        again = t.proxy.bytes_up - first
        lost = first + again - size
        lines.append(f"| {t.name} | {size / 1e6:.0f} MB | {first / 1e6:.1f} MB | {again / 1e6:.1f} MB | "
                     f"{lost / 1e6:.1f} MB | {seconds:.1f} s |")
        log(lines[-1])
    return lines


def _reconcile_parts(t: Target, work: Path, bucket: str):
    if t.name == "reconcile sftp":
        kh = work / f"known_hosts_{t.proxy.port}"
        return (f"sftp://root@127.0.0.1:{t.proxy.port}{work}/resume-sftp", work / "resume-state-sftp",
                ["--ssh-key", str(Path(ROOT) / "sshd" / "userkey"), "--known-hosts", str(kh)], None)
    env = s3_env(f"http://127.0.0.1:{t.proxy.port}")
    return (f"s3://{bucket}/resume", work / "resume-state-s3", ["--s3-endpoint", f"http://127.0.0.1:{t.proxy.port}"],
            env)


def median(t: Target, case: str) -> float:
    return statistics.median(r[1] for r in t.rows[case])


def render(big: list[Target], touch: list[Target], resume: list[str], mib: int) -> str:
    def cell(t: Target | None, case: str) -> str:
        if t is None or case not in t.rows:
            return "–"
        runs = t.rows[case]
        wire, _, note = runs[0]
        most = max(r[0] for r in runs) if wire is not None else None
        b = "(local)" if most is None else f"{most / MiB:.1f} MiB" if most >= MiB else f"{most / 1024:.0f} KiB"
        many = f" median of {len(runs)}" if len(runs) > 1 else ""
        return f"{b}, {median(t, case):.1f} s{many}" + (f" ({note})" if note else "")

    out = [f"### Bytes on the wire: touch, resume, delta (issue 26)", "",
           "`python -m bench.delta` (bench/delta.py): every tool reaches the loopback sshd or SeaweedFS through a "
           "byte-counting TCP proxy; bytes are client to server, protocol included. Times are wall-clock seconds of "
           "the whole command on a shared 2-core machine (7 agents at work): bytes are exact, times are noisy; "
           "reconcile's big-file times are medians of several rounds (each on a fresh destination), the peers' "
           "one run.", ""]
    by = {t.name: t for t in big}
    cases = ["full upload", "1 MiB changed in the middle", WHOLE_OVER_OLD, "1 MiB appended"]
    out += [f"**One {mib} MiB file** (random data; the change is 1 MiB across two 8 MiB blocks; "
            "\"full upload\" goes into an empty folder, \"sent whole over the old copy\" is the same kind of "
            "change with reconcile's block records forgotten: the fair baseline)", "",
            "| case | " + " | ".join(by) + " |", "|---|" + "---|" * len(by)]
    for case in cases:
        out.append(f"| {case} | " + " | ".join(cell(by[n], case) for n in by) + " |")
    out.append("")
    for name in [n for n in by if n.startswith("reconcile")]:
        t = by[name]
        full, delta, whole, app = (median(t, c) for c in cases)
        each = ", ".join(f"{d[1] / f[1]:.2f}" for f, d in zip(t.rows[cases[0]], t.rows[cases[1]]))
        fair = ", ".join(f"{d[1] / w[1]:.2f}" for d, w in zip(t.rows[cases[1]], t.rows[WHOLE_OVER_OLD]))
        out.append(f"- {name}: 1 MiB changed: {delta / full:.2f}× the full upload into an empty folder "
                   f"(medians; each round: {each}), {delta / whole:.2f}× the whole file over the old copy "
                   f"(each round: {fair}); 1 MiB appended: {app / full:.2f}× the full upload")
    if not touch:
        return "\n".join(out)
    out += ["", "**100 files of 50 KB get a new mtime (`touch`)**", "",
            "| tool | first sync | after touch |", "|---|---|---|"]
    for t in touch:
        out.append(f"| {t.name} | {cell(t, '100 files of 50 KB: first')} | {cell(t, '100 files of 50 KB touched')} |")
    out += ["", "**SIGKILL at ~40% of a 300 MB upload, then `apply`** (sent twice = first run + second run − size; "
            "the README's bound: 32 MiB = 33.6 MB)", "",
            "| remote | size | first run sent | second run sent | sent twice | second run time |", "|---|---|---|---|---|---|",
            *resume, ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delta")
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--output", default="-")
    p.add_argument("--rounds", type=int, default=3, help="rounds of reconcile's own big-file runs")
    p.add_argument("--reflink", help="a folder on a file system that shares blocks (XFS, Btrfs): one more local target")
    p.add_argument("--big-only", action="store_true", help="only the large-file cases (no touch, no resume)")
    args = p.parse_args(argv)
    work = Path(ROOT) / "delta"
    rmtree(str(work))
    work.mkdir(parents=True)
    sshd, weed = start_sshd(), start_seaweed()
    try:
        bucket = weed.new_bucket("delta")
        big = big_file_cases(work, sshd, weed, bucket, args.mib, args.rounds, args.reflink)
        touch = [] if args.big_only else touch_cases(work, sshd, weed, bucket)
        resume = [] if args.big_only else resume_case(work, sshd, weed, bucket)
        text = render(big, touch, resume, args.mib)
    finally:
        sshd.stop()
        weed.stop()
        if args.reflink:
            for folder in Path(args.reflink).glob("big-local*"):
                rmtree(str(folder))
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text + "\n")
    rmtree(str(work))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

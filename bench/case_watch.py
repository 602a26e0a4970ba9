"""reconcile watch: latency, a folder rename, the CPU of a triggered run,
idle cost, and lsyncd (Debian package, default rsync mode) beside it.

    python -m bench.case_watch [--size small|full] [--parts latency,rename,big] [--big N]
                               [--output FILE] [--into docs/benchmarks.md]
    python -m bench --only watch [--size small|full]    (the same, into docs/benchmarks.md)

Latency is from the moment a write is closed to the file complete under its
real name on the remote (reconcile writes a temp name then renames, so the
name appearing is the file complete), polled every 10 ms. SFTP goes through
a byte-counting proxy (tests/servers_sftp.py TcpProxy) so bytes sent on the
wire are counted for both tools. Prints a Markdown section; --into puts it
below the KEPT_MARK line of that page, in place of the one an earlier run put
there, and leaves the rest of the page as it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, ROOT, log, reconcile_cmd

SIZES = {"small": dict(latency=5, rename=1000, big=20_000, folders=5_000, idle=10),
         "full": dict(latency=20, rename=10_000, big=200_000, folders=100_000, idle=60)}


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _until(pred, timeout: float = 300, step: float = 0.01) -> float:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("the destination never caught up")
        time.sleep(step)
    return time.monotonic()


class Watch:
    """reconcile watch on SOURCE -> DEST as a child process"""

    def __init__(self, src: str, dest: str, state: str, args=(), env=None) -> None:
        shutil.rmtree(state, ignore_errors=True)
        self.log = open(f"{state}.log", "wb")
        self.proc = subprocess.Popen([*reconcile_cmd(), "watch", src, dest, "--state-dir", state, "-q", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, **(env or {})})
        self.state = state

    def idle(self, timeout: float = 600) -> None:
        import json

        def quiet() -> bool:
            try:
                doc = json.loads(Path(self.state, "watch.json").read_text())
            except (OSError, ValueError):
                return False
            return doc.get("state") == "watching" and doc.get("runs", 0) >= 1
        _until(quiet, timeout, 0.1)
        time.sleep(1.5)
        _until(quiet, timeout, 0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def _tree(root: str, files: int, per_dir: int = 100) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for i in range(files):
        d = os.path.join(root, f"d{i // per_dir:05d}")
        if i % per_dir == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(b"x" * (i % 2000 + 1))


def _latencies(src: str, present, n: int) -> list[float]:
    out = []
    for i in range(n):
        path = os.path.join(src, f"saved-{i}.txt")
        with open(path, "wb") as f:
            f.write(os.urandom(1000))
        t0 = time.monotonic()
        out.append(_until(lambda: present(f"saved-{i}.txt")) - t0)
        time.sleep(0.5)
    return out


def _pcts(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"{statistics.median(xs):.2f} s / {p95:.2f} s"


def latency_rows(size: dict, sshd, proxy, s3) -> list[str]:
    rows = []
    base = f"{ROOT}/watch"
    for kind in ("local", "sftp", "s3"):
        src, dst = f"{base}/lat-src-{kind}", f"{base}/lat-dst-{kind}"
        for d in (src, dst):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(src)
        os.makedirs(dst)
        args, env = [], None
        if kind == "local":
            url, present = dst, lambda name: os.path.exists(os.path.join(dst, name))
        elif kind == "sftp":
            url, args = f"sftp://root@127.0.0.1:{proxy.port}{dst}", sshd.reconcile_args() + ["--known-hosts", _kh(sshd, proxy)]
            present = lambda name: os.path.exists(os.path.join(dst, name))  # noqa: E731
        else:
            client = s3.client()
            bucket = s3.new_bucket("lat")
            url, args = f"s3://{bucket}/m", ["--s3-endpoint", s3.endpoint]

            def present(name, client=client, bucket=bucket) -> bool:
                try:
                    client.head_object(Bucket=bucket, Key=f"m/{name}")
                    return True
                except Exception:
                    return False
        w = Watch(src, url, f"{base}/lat-state-{kind}", args, env)
        try:
            w.idle()
            lat = _latencies(src, present, size["latency"])
        finally:
            w.stop()
        rows.append(f"| reconcile watch (--quiet-for 1s) | {kind} | {_pcts(lat)} | {len(lat)} files |")
        log(f"watch latency {kind}: {_pcts(lat)}")
    return rows


def _kh(sshd, proxy) -> str:
    """known_hosts naming the proxy's port"""
    path = f"{ROOT}/watch/known_hosts-proxy"
    line = Path(sshd.known_hosts).read_text().split(" ", 1)[1]
    Path(path).write_text(f"[127.0.0.1]:{proxy.port} {line}")
    return path


def rename_and_lsyncd(size: dict, sshd, proxy) -> list[str]:
    """the same changes for reconcile watch and lsyncd to SFTP/ssh through the proxy: small
    file latency, then the rename of a folder of N files: time until the remote is in step, bytes sent"""
    base = f"{ROOT}/watch"
    n = size["rename"]
    rows = []
    for tool in ("reconcile watch", "lsyncd 2.2 (default.rsync)"):
        src, dst = f"{base}/ren-src", f"{base}/ren-dst"
        for d in (src, dst):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(dst)
        _tree(src, 0)
        os.makedirs(os.path.join(src, "album"))
        for i in range(n):
            with open(os.path.join(src, "album", f"p{i}.jpg"), "wb") as f:
                f.write(os.urandom(1000))
        if tool.startswith("reconcile"):
            w = Watch(src, f"sftp://root@127.0.0.1:{proxy.port}{dst}", f"{base}/ren-state",
                      sshd.reconcile_args() + ["--known-hosts", _kh(sshd, proxy)])
            stop = w.stop
            w.idle()
        else:
            stop = _lsyncd(src, dst, sshd, proxy)
            _until(lambda: len(os.listdir(os.path.join(dst, "album"))) == n if os.path.isdir(
                os.path.join(dst, "album")) else False, 600, 0.2)
            time.sleep(20)
        try:
            present = lambda name: os.path.exists(os.path.join(dst, name))  # noqa: E731
            lat = _latencies(src, present, max(3, size["latency"] // 4))
            sent0 = proxy.bytes_up
            os.rename(os.path.join(src, "album"), os.path.join(src, "album-2024"))
            t0 = time.monotonic()

            def in_step() -> bool:
                new = os.path.join(dst, "album-2024")
                return (not os.path.exists(os.path.join(dst, "album")) and os.path.isdir(new)
                        and len(os.listdir(new)) == n)
            took = _until(in_step, 600, 0.02) - t0
            time.sleep(2)
            sent = proxy.bytes_up - sent0
        finally:
            stop()
        rows.append(f"| {tool} | {_pcts(lat)} | {took:.2f} s | {_bytes(sent)} |")
        log(f"{tool}: latency {_pcts(lat)}, rename {took:.2f} s, {sent} bytes")
    return rows


def _bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def _lsyncd(src: str, dst: str, sshd, proxy):
    conf = f"{ROOT}/watch/lsyncd.conf"
    rsh = (f"/usr/bin/ssh -p {proxy.port} -i {sshd.key} -o UserKnownHostsFile={_kh(sshd, proxy)} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    Path(conf).write_text(f'settings {{ nodaemon = true, logfile = "{ROOT}/watch/lsyncd.log" }}\n'
                          f'sync {{ default.rsync, source = "{src}", target = "root@127.0.0.1:{dst}",\n'
                          f'  rsync = {{ rsh = "{rsh}" }} }}\n')
    proc = subprocess.Popen(["lsyncd", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        proc.terminate()
        proc.wait(30)
    return stop


def big_tree_rows(size: dict) -> list[str]:
    """CPU of the run one changed file starts, on a large tree, beside a whole no-change apply;
    idle CPU; memory while watching many folders"""
    base = f"{ROOT}/watch"
    n = size["big"]
    src, dst, state = f"{base}/big-src", f"{base}/big-dst", f"{base}/big-state"
    _tree(src, n)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    subprocess.run([*reconcile_cmd(), "apply", src, dst, "--state-dir", state, "-q"], check=True)
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *reconcile_cmd(), "apply", src, dst, "--state-dir",
                        state, "-q"], capture_output=True, text=True, check=True)
    user, system, _ = p.stderr.strip().splitlines()[-1].split()
    full_wall, full_cpu = time.monotonic() - t, float(user) + float(system)
    w = Watch(src, dst, state + "-w")
    rows = []
    try:
        w.idle()
        rss_after_start = _rss_mb(w.proc.pid)
        cpu0 = _cpu(w.proc.pid)
        time.sleep(size["idle"])
        idle_cpu = (_cpu(w.proc.pid) - cpu0) / size["idle"] * 100
        triggered = []
        for i in range(5):
            cpu0 = _cpu(w.proc.pid)
            with open(os.path.join(src, "d00001", f"f{100 + i}"), "ab") as f:
                f.write(b"changed")
            w.idle()
            triggered.append(_cpu(w.proc.pid) - cpu0)
    finally:
        w.stop()
    rows.append(f"| CPU of the run one changed file starts, {n:,} files | {statistics.median(triggered):.2f} s "
                f"(median of 5; min {min(triggered):.2f}, max {max(triggered):.2f}) |")
    rows.append(f"| a whole no-change `apply`, same tree | {full_cpu:.2f} s CPU, {full_wall:.2f} s wall |")
    rows.append(f"| idle CPU over {size['idle']} s, watching {n:,} files | {idle_cpu:.2f} % |")
    rows.append(f"| RSS after the start-up run, {n:,} files | {rss_after_start:.0f} MB |")
    rows += _memory_rows(size)
    return rows


def _memory_rows(size: dict) -> list[str]:
    base = f"{ROOT}/watch"
    rows = []
    rss = {}
    for label, folders in (("one folder", 0), (f"{size['folders']:,} folders", size["folders"])):
        src, dst = f"{base}/mem-src", f"{base}/mem-dst"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(src)
        for i in range(folders):
            os.makedirs(os.path.join(src, f"a{i // 1000:03d}", f"b{i}"))
        w = Watch(src, dst, f"{base}/mem-state")
        try:
            w.idle()
            rss[label] = _rss_mb(w.proc.pid)
        finally:
            w.stop()
    (a, ra), (b, rb) = rss.items()
    rows.append(f"| RSS watching {b} (each with its inotify watch), idle after the start-up run | {rb:.0f} MB, "
                f"{rb - ra:.0f} MB above watching {a} ({ra:.0f} MB) |")
    return rows


HEADING = "### watch: latency, folder rename, triggered run, idle (lsyncd beside it)"
PARTS = ("latency", "rename", "big")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.case_watch")
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--parts", type=lambda v: v.split(","), default=list(PARTS),
                    help=f"which parts to run, comma-separated: {','.join(PARTS)}")
    ap.add_argument("--big", type=int, help="files in the large tree (default: 20,000 small, 200,000 full)")
    ap.add_argument("--output", help="write the section to this file too")
    ap.add_argument("--into", help="put the section below the KEPT_MARK line of this page (docs/benchmarks.md)")
    args = ap.parse_args(argv)
    size = dict(SIZES[args.size], **({"big": args.big} if args.big else {}))
    os.makedirs(f"{ROOT}/watch", exist_ok=True)
    from bench.servers import start_seaweed, start_sshd
    from bench.proxy import TcpProxy

    lat = peers = big = []
    if {"latency", "rename"} & set(args.parts):
        sshd = start_sshd()
        proxy = TcpProxy(sshd.port)
        s3 = start_seaweed()
        try:
            lat = latency_rows(size, sshd, proxy, s3) if "latency" in args.parts else []
            peers = rename_and_lsyncd(size, sshd, proxy) if "rename" in args.parts else []
        finally:
            proxy.close()
            sshd.stop()
            s3.stop()
    if "big" in args.parts:
        big = big_tree_rows(size)
    # the page as the repository names it: no machine's path in the docs
    shown = [os.path.relpath(a, REPO) if a == args.into and os.path.abspath(a).startswith(REPO + os.sep) else a
             for a in argv]
    command = " ".join(["python -m bench.case_watch", *shown])
    out = [HEADING, "", f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. The machine has 2 "
           "cores and was shared with 6 other agents while this ran: figures are noisy.", ""]
    if lat:
        out += ["Small file saved → complete on the remote (p50 / p95):", "",
                "| tool | destination | p50 / p95 | files |", "|---|---|---|---|", *lat, ""]
    if peers:
        out += [f"Same changes to SFTP/ssh through a byte-counting proxy; rename of a folder of "
                f"{size['rename']:,} files until the remote is in step:", "",
                "| tool | small file p50 / p95 | folder rename in step after | bytes sent for the rename |",
                "|---|---|---|---|", *peers, ""]
    if big:
        out += ["| figure | measured |", "|---|---|", *big, ""]
    text = "\n".join(out)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    if args.into:
        put_below_mark(args.into, text)
    return 0


def put_below_mark(path: str, section: str) -> None:
    """the section below the page's KEPT_MARK line (what a re-render of the
    page keeps), in place of the one an earlier run put there"""
    from bench.report import KEPT_MARK

    text = Path(path).read_text()
    head, mark, kept = text.partition(KEPT_MARK)
    if not mark:
        head, mark, kept = text.rstrip("\n") + "\n\n", KEPT_MARK, "\n"
    lines, out, skipping = kept.split("\n"), [], False
    for line in lines:
        if line.startswith("### "):
            skipping = line == HEADING
        if not skipping:
            out.append(line)
    kept = "\n".join(out).rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    Path(path).write_text(head + mark + kept)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

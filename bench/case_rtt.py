"""Round-trip time: every tool through the same delay proxy (bench/delay.py),
at each RTT of the sweep. SFTP: reconcile against rsync over ssh and rclone;
S3: against aws-cli and rclone. The issue's three cases: a first sync of small
files in many folders, a no-change run, a folder rename.

Under each tool's time: the connections it opened and the waits the proxy saw
(a send after the client had sat silent, answered, for half an RTT)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from bench.common import ROOT, TIME, Case, CommandFailed, Run, Series, drop_dirty, log, reconcile_cmd, rmtree
from bench.data import copy_tree, make_tree
from bench.delay import DelayProxy

RETRY = "20s"
SMALL_MIN, SMALL_MAX = 1024, 8 * 1024  # the "2,000 files of 1-8 KB"


def layout_140(i: int) -> str:
    """10 top folders of 13 folders each: 140 folders, as in the issue."""
    return f"t{i % 10}/d{(i // 10) % 13:02d}/f{i:05d}.bin"


def layout_rename(i: int) -> str:
    """one top folder (the one renamed) of 5 folders."""
    return f"t000/d{i % 5}/f{i:05d}.bin"


@dataclass(frozen=True)
class Sweep:
    rtts: tuple[int, ...]
    files: int
    rename: int
    runs: int
    patience: float  # a peer's run is stopped after this many seconds, and not repeated


FULL = Sweep((0, 10, 50, 100), 2_000, 500, 3, 60.0)
SMALL = Sweep((0, 20), 100, 20, 1, 60.0)


@dataclass
class Tool:
    name: str
    argv: list[str]
    env: dict | None = None
    patient: bool = True  # False: a peer, stopped after Sweep.patience


def timed(tool: Tool, proxy: DelayProxy, limit: float | None) -> tuple[Run | None, str]:
    """one run through the proxy: (the run, or None when it was stopped; what the proxy saw)."""
    conns, waits, _, _ = proxy.counts()
    full_env = {k: v for k, v in {**os.environ, **(tool.env or {})}.items() if v is not None}
    argv = [TIME, "-f", "%M", "-o", f"{ROOT}/.rss", *tool.argv] if TIME else tool.argv
    err_path = f"{ROOT}/.stderr"
    with open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                env=full_env, start_new_session=True)
        try:
            code = proc.wait(limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the tool, not only /usr/bin/time
            proc.wait()
            return None, f"stopped after {limit:.0f} s"
        seconds = time.perf_counter() - start
    if code != 0:
        raise CommandFailed(f"{' '.join(tool.argv)} exited {code}:\n{open(err_path, errors='replace').read()[-2000:]}")
    c, w, _, _ = proxy.counts()
    rss = 0
    try:
        rss = int(open(f"{ROOT}/.rss").read().split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return Run(seconds, rss, "", ""), f"{c - conns} connections, {w - waits} waits"


def take_turns(case: Case, tools: list[Tool], proxy: DelayProxy, sweep: Sweep, before=None) -> list[Series]:
    """each tool `runs` times, in turns (A B C A B C); a peer slower than
    sweep.patience runs once, stopped at that limit."""
    series = [case.add(Series(t.name, " ".join(t.argv))) for t in tools]
    given_up: set[int] = set()
    for _ in range(sweep.runs):
        for i, (s, t) in enumerate(zip(series, tools)):
            if i in given_up:
                continue
            if before:
                before(t)
            run, seen = timed(t, proxy, None if t.patient else sweep.patience)
            s.note = seen
            if run is None:
                s.runs.append(Run(sweep.patience, 0, "", ""))
                s.note = f"> {sweep.patience:.0f} s ({seen}); runs: 1"
                given_up.add(i)
            else:
                s.runs.append(run)
                if not t.patient and run.seconds > sweep.patience / 2:
                    given_up.add(i)  # a slow peer once is enough: its runs are not repeated
    return series


def _proxied_known_hosts(srv, port: int) -> None:
    """ssh, rsync and rclone check the host key under the proxy's port too."""
    with open(srv.known_hosts) as f:
        lines = f.read().splitlines()
    line = lines[0].replace(f"]:{srv.port} ", f"]:{port} ", 1)
    if line not in lines:
        with open(srv.known_hosts, "a") as f:
            f.write(line + "\n")


class SftpTools:
    """the command lines of each tool, pointed at the proxy."""

    def __init__(self, srv, port: int) -> None:
        self.srv, self.port = srv, port
        _proxied_known_hosts(srv, port)
        self.rclone_env = {
            "RCLONE_CONFIG_BSFTP_TYPE": "sftp", "RCLONE_CONFIG_BSFTP_HOST": "127.0.0.1",
            "RCLONE_CONFIG_BSFTP_PORT": str(port), "RCLONE_CONFIG_BSFTP_USER": "root",
            "RCLONE_CONFIG_BSFTP_KEY_FILE": srv.key, "RCLONE_CONFIG_BSFTP_KNOWN_HOSTS_FILE": srv.known_hosts,
            "RCLONE_CONFIG_BSFTP_DISABLE_HASHCHECK": "true"}

    def ours(self, src: str, dst: str, state: str) -> Tool:
        return Tool("reconcile apply", [*reconcile_cmd(), "apply", src, f"sftp://root@127.0.0.1:{self.port}{dst}",
                                        *self.srv.reconcile_args(), "--state-dir", state, "-q", "--retry-for",
                                        RETRY, "--delete"])

    def rsync(self, src: str, dst: str) -> Tool:
        ssh = self.srv.ssh_command().replace(f"-p {self.srv.port} ", f"-p {self.port} ", 1)
        return Tool("rsync -a --delete over ssh",
                    ["rsync", "-a", "--delete", "-e", ssh, src + "/", f"root@127.0.0.1:{dst}/"])

    def rclone(self, src: str, dst: str) -> Tool:
        return Tool("rclone sync (sftp)", ["rclone", "sync", src, f"bsftp:{dst}"], self.rclone_env, patient=False)


def sftp(srv, sweep: Sweep) -> list[Case]:
    src = make_tree(f"{ROOT}/rtt/src", sweep.files, SMALL_MIN, SMALL_MAX, 71, layout_140)
    ren_src = make_tree(f"{ROOT}/rtt/ren-src", sweep.rename, SMALL_MIN, SMALL_MAX, 72, layout_rename)
    cases = []
    for rtt in sweep.rtts:
        proxy = DelayProxy(srv.port, rtt)
        try:
            tools = SftpTools(srv, proxy.port)
            cases += [_sftp_first(tools, src, rtt, proxy, sweep), _sftp_nochange(tools, src, rtt, proxy, sweep),
                      _sftp_rename(tools, ren_src, rtt, proxy, sweep)]
        finally:
            proxy.close()
    return cases


def _title(what: str, rtt: int) -> str:
    return f"{what}, RTT {rtt} ms"


def _sftp_first(tools: SftpTools, src: str, rtt: int, proxy: DelayProxy, sweep: Sweep) -> Case:
    out = f"{ROOT}/rtt/first-dst"
    case = Case("rtt-sftp", _title(f"first sync, {sweep.files:,} files of 1–8 KB in 140 folders", rtt))
    log(f"rtt {rtt} ms: sftp {case.name}")
    runs = [tools.ours(src, f"{out}/r", f"{ROOT}/state/rtt-first"), tools.rsync(src, f"{out}/rs"),
            tools.rclone(src, f"{out}/rc")]

    def fresh(_: Tool) -> None:
        rmtree(out)
        rmtree(f"{ROOT}/state/rtt-first")
        os.makedirs(out)
        drop_dirty()

    ours, rs, rc = take_turns(case, runs, proxy, sweep, fresh)
    case.ratio(ours, rs, 1.0 if rtt == 50 else None)
    case.ratio(ours, rc, None)
    return case


def _sftp_nochange(tools: SftpTools, src: str, rtt: int, proxy: DelayProxy, sweep: Sweep) -> Case:
    dst = f"{ROOT}/rtt/nc-dst"
    state = f"{ROOT}/state/rtt-nc"
    case = Case("rtt-sftp", _title(f"no-change run, {sweep.files:,} files", rtt))
    log(f"rtt {rtt} ms: sftp {case.name}")
    copy_tree(src, dst)  # the twin tree, made locally
    rmtree(state)
    runs = [tools.ours(src, dst, state), tools.rsync(src, dst), tools.rclone(src, dst)]
    for t in runs:  # every tool once, untimed: reconcile records its snapshot
        timed(t, proxy, None)
    ours, rs, rc = take_turns(case, runs, proxy, sweep)
    case.ratio(ours, rs, 1.0 if rtt else None)
    case.ratio(ours, rc, None)
    return case


def _sftp_rename(tools: SftpTools, src: str, rtt: int, proxy: DelayProxy, sweep: Sweep) -> Case:
    base = f"{ROOT}/rtt/ren-dst"
    rmtree(base)
    _put_back(src)
    for name in ("r", "rs", "rc"):  # made locally: the untimed first runs find nothing to send
        copy_tree(src, f"{base}/{name}")
    runs = [tools.ours(src, f"{base}/r", f"{ROOT}/state/rtt-ren"), tools.rsync(src, f"{base}/rs"),
            tools.rclone(src, f"{base}/rc")]
    rmtree(f"{ROOT}/state/rtt-ren")
    case = Case("rtt-sftp", _title(f"rename of a folder holding {sweep.rename} files", rtt))
    log(f"rtt {rtt} ms: sftp {case.name}")
    return _rename_turns(case, runs, src, proxy, sweep, 0.5 if rtt == 50 else None)


def _rename_turns(case: Case, runs: list[Tool], src: str, proxy: DelayProxy, sweep: Sweep,
                  target: float | None) -> Case:
    """every tool syncs the tree, untimed; then, each round, the folder is
    renamed in the source and every tool runs once."""
    for t in runs:
        timed(t, proxy, None)
    series = [case.add(Series(t.name, " ".join(t.argv))) for t in runs]
    names = ("t000", "renamed")
    slow: set[int] = set()
    for i in range(sweep.runs):
        os.rename(f"{src}/{names[i % 2]}", f"{src}/{names[(i + 1) % 2]}")
        drop_dirty()
        for k, (s, t) in enumerate(zip(series, runs)):
            if k in slow:
                continue  # a slow peer once is enough (its copy is left behind: it runs no more rounds)
            run, seen = timed(t, proxy, None if t.patient else sweep.patience * 4)
            if run is None:
                raise CommandFailed(f"{t.name}: {seen} on a rename; the next round would not be one")
            s.runs.append(run)
            s.note = seen
            if not t.patient and run.seconds > sweep.patience / 2:
                slow.add(k)
                s.note += "; runs: 1 (slow)"
    _put_back(src)
    case.ratio(series[0], series[1], target)
    for peer in series[2:]:
        case.ratio(series[0], peer, None)
    return case


def _put_back(src: str) -> None:
    if os.path.exists(f"{src}/renamed"):
        os.rename(f"{src}/renamed", f"{src}/t000")


# --- S3 ----------------------------------------------------------------------


def s3(server, aws: str, rclone: str | None, sweep: Sweep) -> list[Case]:
    from bench.servers import s3_env

    src = make_tree(f"{ROOT}/rtt/src", sweep.files, SMALL_MIN, SMALL_MAX, 71, layout_140)
    ren_src = make_tree(f"{ROOT}/rtt/ren-src", sweep.rename, SMALL_MIN, SMALL_MAX, 72, layout_rename)
    bucket = server.new_bucket("rtt")
    port = int(server.endpoint.rsplit(":", 1)[1])
    cases = []
    for rtt in sweep.rtts:
        proxy = DelayProxy(port, rtt)
        try:
            endpoint = f"http://127.0.0.1:{proxy.port}"
            env = s3_env(endpoint)

            def tools(src_dir: str, prefix: str, state: str) -> list[Tool]:
                out = [Tool("reconcile apply", [*reconcile_cmd(), "apply", src_dir, f"s3://{bucket}/{prefix}-r",
                                                "--s3-endpoint", endpoint, "--state-dir", state, "-q",
                                                "--retry-for", RETRY, "--delete"], env),
                       Tool("aws s3 sync --delete", [aws, "s3", "sync", src_dir, f"s3://{bucket}/{prefix}-aws",
                                                     "--endpoint-url", endpoint, "--only-show-errors",
                                                     "--delete"], env, patient=False)]
                if rclone:
                    out.append(Tool("rclone sync (s3)", [rclone, "sync", src_dir, f"bs3:{bucket}/{prefix}-rc"],
                                    env, patient=False))
                return out

            cases += _s3_first_nochange(tools, src, rtt, proxy, sweep)
            rmtree(f"{ROOT}/state/rtt-s3-ren")
            _put_back(ren_src)
            case = Case("rtt-s3", _title(f"rename of a folder holding {sweep.rename} objects", rtt))
            log(f"rtt {rtt} ms: s3 {case.name}")
            ren = tools(ren_src, f"ren-{rtt}", f"{ROOT}/state/rtt-s3-ren")
            cases.append(_rename_turns(case, ren, ren_src, proxy, sweep, None))
            if rtt == 50 and len(ren) > 2:
                case.checks[-1].target, case.checks[-1].ok = "≤ 1.00×", case.series[0].median <= case.series[2].median
        finally:
            proxy.close()
    return cases


def _s3_first_nochange(tools, src: str, rtt: int, proxy: DelayProxy, sweep: Sweep) -> list[Case]:
    first = Case("rtt-s3", _title(f"first sync, {sweep.files:,} files of 1–8 KB in 140 folders", rtt))
    log(f"rtt {rtt} ms: s3 {first.name}")
    rounds = iter(range(1_000_000))

    def fresh_prefix(t: Tool) -> None:
        # every run is a first sync: a new prefix (and state) for each
        n = next(rounds)
        t.argv = [_renumber(a, rtt, n) for a in t.argv]
        drop_dirty()

    made = tools(src, f"first-{rtt}-N", f"{ROOT}/state/rtt-s3-first-{rtt}-N")
    series = take_turns(first, made, proxy, sweep, fresh_prefix)
    first.ratio(series[0], series[1], 0.5 if rtt == 50 else None)
    for peer in series[2:]:
        first.ratio(series[0], peer, None)
    nc = Case("rtt-s3", _title(f"no-change run, {sweep.files:,} objects", rtt))
    log(f"rtt {rtt} ms: s3 {nc.name}")
    # against what each tool's last first sync left; a peer stopped there has no whole copy
    whole = [t for t, s in zip(made, series) if not s.note.startswith(">")]
    series = take_turns(nc, whole, proxy, sweep)
    for peer in series[1:2]:
        nc.ratio(series[0], peer, 1.0 if rtt == 50 and peer.tool.startswith("aws") else None)
    for peer in series[2:]:
        nc.ratio(series[0], peer, None)
    return [first, nc]


def _renumber(arg: str, rtt: int, n: int) -> str:
    """first-<rtt>-<old> -> first-<rtt>-<n> in a prefix or state folder."""
    mark = f"first-{rtt}-"
    head, found, tail = arg.partition(mark)
    if not found:
        return arg
    rest = tail.split("-", 1)
    return head + mark + str(n) + ("-" + rest[1] if len(rest) > 1 else "")

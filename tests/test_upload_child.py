"""Half the small files of a run go through a forked child process
(reconcile.upload_child), against the real sshd: the result is an exact
mirror with every hash recorded, a cut or a dead child ends the run with the
journal kept and the next run finishes it, and the child dies with its
parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import xxhash

from reconcile import apply, forked
from reconcile.entry import is_temp_name
from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.sftp import SftpRemote, session
from tests.mirror import run, tree
from tests.servers_sftp import sftp_url
from tests.test_sftp import no_agent_no_config, root  # noqa: F401
from tests.test_sftp_batch import make_src, snapshot_hashes

pytestmark = pytest.mark.skipif(not forked.available(), reason="the upload child needs Linux and two cores")


@pytest.fixture(autouse=True)
def fork_from_few(monkeypatch):
    monkeypatch.setattr(apply, "FORK_SMALL_FROM", 20)
    # a busy machine's loopback must not pass for a slow link (no child there: test_sftp_link_rtt.py)
    monkeypatch.setattr(session, "LINK_BOUND_RTT", float("inf"))


def pids_uploading(monkeypatch, tmp_path: Path) -> Path:
    """a file each process that sends small files writes its pid to (the child's
    patched code is the parent's, copied by the fork)."""
    out = tmp_path / "pids"
    real = SftpRemote.upload_many

    def noted(self, *a, **kw):
        with open(out, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(self, *a, **kw)

    monkeypatch.setattr(SftpRemote, "upload_many", noted)
    return out


def test_a_child_sends_half_and_the_result_is_an_exact_mirror_with_every_hash(sftp_dest, root, tmp_path,
                                                                             monkeypatch):
    src, state = tmp_path / "src-tree", tmp_path / "state"
    files = make_src(src, 300, seed=11, big=1)
    pids = pids_uploading(monkeypatch, tmp_path)
    result = run(src, sftp_dest.url, state, options=sftp_dest.options)
    assert result.outcome.complete and result.outcome.count("done") == len(result.plan.ops)
    assert len(set(pids.read_text().split())) == 2  # this process and the child
    assert tree(root) == tree(src)
    assert snapshot_hashes(src, sftp_dest.url, state) == {p: xxhash.xxh3_128_digest(d) for p, d in files.items()}
    assert not run(src, sftp_dest.url, state, mode="plan", options=sftp_dest.options).plan.ops


def test_a_cut_ends_the_run_with_no_partial_file_and_the_next_run_finishes(sshd_server, sftp_proxy, root,
                                                                          tmp_path):
    src, state = tmp_path / "src-tree", tmp_path / "state"
    files = make_src(src, 400, seed=12)
    kh = sshd_server.write_known_hosts(tmp_path / "kh_proxy", sftp_proxy.port)
    url = sftp_url(sshd_server, root, port=sftp_proxy.port)
    options = RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh), retry_for=0)
    sftp_proxy.drop_after(2 << 20)
    first = run(src, url, state, options=options)
    assert first.outcome.remote_gone and not first.outcome.complete
    for path, entry in tree(root, with_mtime=False).items():
        if entry[0] == "f" and not is_temp_name(Path(path).name):
            assert entry == ("f", files[path]), path  # whole, never partial
    options = RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh))
    again = run(src, url, state, options=options)
    assert again.resumed is not None and again.resumed.complete and again.outcome.complete
    assert tree(root) == tree(src)


def child_goes_wrong(sftp_dest, root, tmp_path, monkeypatch, seed: int, act) -> str:
    """a run whose child calls act() before its share; why it ended. The next
    run, with a sound child, must finish the mirror."""
    src, state = tmp_path / "src-tree", tmp_path / "state"
    make_src(src, 200, seed=seed)
    parent = os.getpid()
    real = apply.Executor.upload_share

    def wrong(self, ops, share):
        if os.getpid() != parent:
            act()
        return real(self, ops, share)

    monkeypatch.setattr(apply.Executor, "upload_share", wrong)
    first = run(src, sftp_dest.url, state, options=sftp_dest.options)
    assert not first.outcome.complete
    monkeypatch.setattr(apply.Executor, "upload_share", real)
    again = run(src, sftp_dest.url, state, options=sftp_dest.options)
    assert again.outcome.complete or (again.resumed is not None and again.resumed.complete)
    assert tree(root) == tree(src)
    return first.outcome.remote_gone


def test_a_child_that_dies_ends_the_run_and_the_next_run_finishes(sftp_dest, root, tmp_path, monkeypatch):
    why = child_goes_wrong(sftp_dest, root, tmp_path, monkeypatch, 13, lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert "upload process was killed by signal 9" in why


def test_a_child_that_stops_answering_is_stopped_and_the_next_run_finishes(sftp_dest, root, tmp_path,
                                                                          monkeypatch):
    from reconcile import upload_child

    monkeypatch.setattr(upload_child, "SILENCE", 1)
    why = child_goes_wrong(sftp_dest, root, tmp_path, monkeypatch, 15, lambda: time.sleep(60))
    assert "said nothing for 1 s" in why


def test_the_child_dies_with_its_parent(sftp_dest, root, tmp_path):
    # an orphan still writing the temp names a new run writes would be a hazard
    src = tmp_path / "src-tree"
    make_src(src, 200, seed=14)
    pid_file = tmp_path / "child-pid"
    script = textwrap.dedent(f"""
        import os, time
        from reconcile import apply
        from reconcile.remotes.base import RemoteOptions, SftpOptions
        from reconcile.remotes.sftp import SftpRemote, session
        from tests.mirror import run
        apply.FORK_SMALL_FROM = 20
        session.LINK_BOUND_RTT = float("inf")  # as the fixture does: a busy loopback is no slow link
        parent = os.getpid()
        real = SftpRemote.upload_many

        def slow(self, *a, **kw):
            if os.getpid() != parent:
                with open({str(pid_file)!r} + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
                time.sleep(60)
            return real(self, *a, **kw)

        SftpRemote.upload_many = slow
        options = RemoteOptions(sftp=SftpOptions(key={sftp_dest.options.sftp.key!r}, known_hosts={sftp_dest.options.sftp.known_hosts!r}))
        run({str(src)!r}, {sftp_dest.url!r}, {str(tmp_path / "state")!r}, options=options)
    """)
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the upload child outlived its parent"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


"""Issue 21: `reconcile apply SRC sftp://...` opens its SSH connection while
it starts up (cli/early.py, remotes/sftp/headstart.py), and nothing else
changes: the host key and the sign-in are checked as before, failures read
as before, --offline never connects, and a run that ends before it needs the
server ends at once, without a traceback. Real sshd, behind a TcpProxy that
counts connections; the CLI runs as a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.cli import reconcile
from tests.servers_sftp import free_port, sftp_url

WAIT = 30.0  # for an event, not a timing: the test fails if it never comes


def _pair(sshd_server, proxy, tmp_path, port=None):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "sub").mkdir()
    (src / "sub" / "b.txt").write_text("b")
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts", port=port or proxy.port)
    url = sftp_url(sshd_server, tmp_path / "dst", port=port or proxy.port)
    return src, url, ["--ssh-key", sshd_server.user_key, "--known-hosts", kh,
                      "--state-dir", str(tmp_path / "state")]


def _until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_the_connection_opens_before_the_run_has_read_its_flags_and_is_the_one_used(sshd_server, sftp_proxy,
                                                                                      tmp_path):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path)
    fifo = tmp_path / "excludes"
    os.mkfifo(fifo)
    # --exclude-from is read while the run's options are built, before the
    # engine runs: on a FIFO no one writes to yet, the run waits right there
    run = subprocess.Popen([sys.executable, "-m", "reconcile", "apply", str(src), url, *args,
                            "--exclude-from", str(fifo), "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: sftp_proxy.connections == 1 and sftp_proxy.bytes_down > 0,
               "the server answered a connection while the run waited for its --exclude-from")
        with open(fifo, "w") as f:
            f.write("*.tmp\n")
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
        run.wait()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    assert (tmp_path / "dst" / "sub" / "b.txt").read_text() == "b"
    # the connection opened early is the run's: no second handshake
    assert sftp_proxy.connections == 1
    assert "1 ssh connection" in out + err


def test_an_unknown_host_is_refused_as_before_and_not_recorded(sshd_server, sftp_proxy, tmp_path):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    p = reconcile("apply", src, url, *args, check=2, timeout=120)
    assert f"unknown host [127.0.0.1]:{sftp_proxy.port}: its ssh-ed25519 key fingerprint is " \
           f"{sshd_server.fingerprint()}" in p.stderr
    assert "--accept-new-host-key" in p.stderr
    assert empty.read_text() == ""
    assert not (tmp_path / "dst").exists()


def test_a_key_the_server_refuses_is_an_authentication_error_as_before(sshd_server, sftp_proxy, tmp_path):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    args[1] = str(stranger)
    p = reconcile("apply", src, url, *args, "--retry-for", "0", check=2, timeout=120)
    assert f"authentication failed for root@127.0.0.1:{sftp_proxy.port} (tried key {stranger})" in p.stderr
    assert not (tmp_path / "dst").exists()


def test_a_port_where_nothing_listens_is_refused_at_once_for_a_new_pair(sshd_server, sftp_proxy, tmp_path):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path, port=free_port())
    p = reconcile("apply", src, url, *args, check=2, timeout=120)
    assert "This pair has never connected, so it is not retried: check the port in" in p.stderr


def test_plan_offline_never_connects(sshd_server, sftp_proxy, tmp_path):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path)
    reconcile("plan", src, url, *args, "--offline", check=2, timeout=120)  # no snapshot yet
    reconcile("apply", src, url, *args, check=0, timeout=120)
    before = sftp_proxy.connections
    (src / "c.txt").write_text("c")
    p = reconcile("plan", src, url, *args, "--offline", check=0, timeout=120)
    assert "c.txt" in p.stdout
    assert sftp_proxy.connections == before == 1


def test_runs_that_end_before_they_need_the_server_end_as_before(sshd_server, sftp_proxy, tmp_path):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path)
    p = reconcile("apply", tmp_path / "missing", url, *args, check=4, timeout=60)
    assert "does not exist" in p.stderr
    p = reconcile("apply", src, url, *args, "--max-delete", "-1", check=2, timeout=60)
    assert "--max-delete must be 0 or more" in p.stderr
    p = reconcile("apply", src, url, *args, "--no-such-flag", check=2, timeout=60)
    assert "no such option: --no-such-flag" in p.stderr


def test_a_listing_forked_while_a_connection_is_pending_closes_it_first(sshd_server, tmp_path, monkeypatch):
    """a fork copies no other thread (forked.py): the pending connection's
    threads end before the listing child is forked, and it still forks."""
    from reconcile import forked
    from reconcile.entry import entry_of
    from reconcile.remotes import open_remote
    from reconcile.remotes.base import RemoteOptions, SftpOptions
    from reconcile.remotes.sftp import headstart, listing
    from tests.test_sftp_listing import count_forks, wait_until_quiet

    if not forked.available():
        pytest.skip("no fork here (not Linux, or one core)")
    root = tmp_path / "dst"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "b.txt").write_text("b")
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    options = RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh),
                            state_dir=str(tmp_path / "rstate"))
    url = sftp_url(sshd_server, root)
    monkeypatch.setattr(listing, "FORK_LIST_FROM", 0)
    wait_until_quiet()
    forks = count_forks(monkeypatch)
    headstart.start(url, options)
    _until(lambda: not headstart._pending.thread.is_alive(), "the pending connection's key exchange ended")
    assert headstart._pending.transport is not None and headstart._pending.transport.is_active()
    remote = open_remote(url, options)
    try:
        paths = [entry_of(row).path for row in remote.list_rows()]
    finally:
        remote.close()
    assert forks, "no child was forked: another thread was running (forked._alone)"
    assert not headstart.pending()
    assert paths == ["sub", "sub/b.txt"]


def test_a_broken_paramiko_is_reported_by_the_run_as_before(tmp_path):
    """the head start starts while the command line loads: what fails there
    is left for the run to report, in one line, not a traceback at import."""
    fake = tmp_path / "fake" / "paramiko"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("paramiko is broken here")\n')
    (tmp_path / "src").mkdir()
    p = reconcile("apply", tmp_path / "src", "sftp://root@127.0.0.1:1/x", "--state-dir", tmp_path / "state",
                  env={"PYTHONPATH": str(tmp_path / "fake")}, check=1, timeout=60)
    assert p.stderr.strip() == ("reconcile: internal error: ImportError: paramiko is broken here "
                                "(run with -v for details)")


def _pending_then_stat(sshd_server, proxy, tmp_path):
    """a connection started for the remote's URL, its key exchange ended;
    then the remote's first call: the proxy's connection count after it"""
    from reconcile.remotes import open_remote
    from reconcile.remotes.base import RemoteOptions, SftpOptions
    from reconcile.remotes.sftp import headstart

    (tmp_path / "dst").mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
    options = RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh),
                            state_dir=str(tmp_path / "rstate"))
    url = sftp_url(sshd_server, tmp_path / "dst", port=proxy.port)
    headstart.start(url, options)
    _until(lambda: not headstart._pending.thread.is_alive(), "the pending connection's key exchange ended")
    remote = open_remote(url, options)
    try:
        assert remote.stat("") is not None
        return proxy.connections, remote.net_stats().connections
    finally:
        remote.close()


def test_the_remote_takes_the_pending_connection(sshd_server, sftp_proxy, tmp_path):
    assert _pending_then_stat(sshd_server, sftp_proxy, tmp_path) == (1, 1)


def test_a_pending_connection_left_too_long_is_not_taken(sshd_server, sftp_proxy, tmp_path, monkeypatch):
    from reconcile.remotes.sftp import headstart

    monkeypatch.setattr(headstart, "FRESH_FOR", 0.0)
    assert _pending_then_stat(sshd_server, sftp_proxy, tmp_path) == (2, 1)
    assert not headstart.pending()

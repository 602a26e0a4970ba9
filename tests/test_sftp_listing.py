"""The pipelined SFTP listing (SftpRemote.list_rows) against the real sshd:
the same rows as the filesystem says, in order, with link targets, temps
hidden, raw names kept; many folders per flush; a cut connection is Transient
and leaves no connection behind. Each case runs in a forked child (Linux
with two cores) and in a thread of this process, listing by SFTP requests
and by find over ssh (findlist.py)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from reconcile import forked
from reconcile.entry import DIR, FILE, LINK, TEMP_MARK, entry_key, entry_of
from reconcile.errors import ConfigError, NotFound, Transient
from reconcile.remotes.sftp import listing, wire
from reconcile.remotes.sftp import SftpRemote
from tests.test_sftp import no_agent_no_config, proxied, remote, root  # noqa: F401


@pytest.fixture(params=["forked-sftp", "thread-sftp", "forked-find", "thread-find"])
def listing_way(request, monkeypatch) -> str:
    """where the listing runs (a forked child, a thread) and how it lists
    (SFTP requests, or find over ssh: findlist.py)."""
    where, how = request.param.split("-")
    if where == "forked" and not forked.available():
        pytest.skip("no fork here (not Linux, or one core)")
    if where == "thread":
        monkeypatch.setattr(forked, "available", lambda: False)
    else:  # a child lists whatever the tree's size
        monkeypatch.setattr(listing, "FORK_LIST_FROM", 0)
    monkeypatch.setattr(SftpRemote, "_lists_by_find", lambda self: how == "find")
    if where == "forked" and "sftp_proxy" not in request.fixturenames:
        wait_until_quiet()
    forks = count_forks(monkeypatch)
    yield request.param
    if where == "forked" and "sftp_proxy" not in request.fixturenames:
        # the cutting proxy's threads run in this process: with them the listing runs here
        assert forks, "no child was forked: another thread was running (forked._alone)"


def wait_until_quiet(timeout: float = 15.0) -> None:
    """a thread an earlier test left ending (a closed connection's, a proxy's)
    sends the listing down the in-process path; wait for it, and name any
    that does not end."""
    deadline = time.monotonic() + timeout
    while not forked.quiet():
        if time.monotonic() > deadline:
            names = [t.name for t in threading.enumerate()]
            pytest.fail(f"another thread still runs in this process: {names}")
        time.sleep(0.05)


def count_forks(monkeypatch) -> list[int]:
    """the pids of the children forked from here on"""
    forks: list[int] = []
    real = os.fork

    def fork() -> int:
        pid = real()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(forked.os, "fork", fork)
    return forks


def fill(root: Path) -> None:
    for i in range(30):
        d = root / f"d{i:02d}" / ("sub" if i % 3 else "")
        d.mkdir(parents=True, exist_ok=True)
        for j in range(i % 7):
            (d / f"f{j}").write_bytes(b"x" * (i + j))
            os.utime(d / f"f{j}", (1_600_000_000 + j, 1_600_000_000 + j))
    (root / "d00" / "empty").mkdir()
    os.symlink("../d01", root / "d00" / "link")
    os.symlink("nowhere", root / "dangling")
    (root / f"{TEMP_MARK}abc-x").write_bytes(b"partial")
    (root / "d02" / f"{TEMP_MARK}dir").mkdir()
    (root / "d02" / f"{TEMP_MARK}dir" / "inner").write_bytes(b"hidden")
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"latin-1 name")
    (root / "a-b").write_bytes(b"sorts before a/")
    (root / "a").mkdir()
    (root / "a" / "x").write_bytes(b"1")


def expected(root: Path) -> list[tuple]:
    rows = []
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            if TEMP_MARK.encode() in rel:
                continue
            s = os.lstat(full)
            kind = DIR if stat.S_ISDIR(s.st_mode) else LINK if stat.S_ISLNK(s.st_mode) else FILE
            target = os.fsdecode(os.readlink(full)) if kind == LINK else None
            rows.append((rel + b"/" if kind == DIR else rel, kind, s.st_size if kind == FILE else 0,
                         int(s.st_mtime) * 1_000_000_000, target))
    return sorted(rows)


@pytest.mark.usefixtures("listing_way")
def test_rows_match_the_filesystem_in_order(remote, root):
    fill(root)
    rows = list(remote.list_rows())
    keys = [r[0] for r in rows]
    assert keys == sorted(keys)  # one byte order, a folder as 'name/'
    assert [(r[0], r[1], r[2], r[3], r[8]) for r in rows] == expected(root)
    assert sorted(remote._seen_temps) == [f"{TEMP_MARK}abc-x", f"d02/{TEMP_MARK}dir"]
    entries = list(remote.list())
    assert [entry_key(e) for e in entries] == keys
    assert entry_of(rows[0]) == entries[0]


def test_many_folders_go_out_per_flush(remote, root, monkeypatch):
    # counted in this process: the child's requests are out of sight
    monkeypatch.setattr(forked, "available", lambda: False)
    fill(root)
    sends: list[int] = [0]  # requests per channel write
    request, flush = wire._Pipe.request, wire._Pipe.flush

    def counted_request(self, *a):
        sends[-1] += 1
        return request(self, *a)

    def counted_flush(self):
        sends.append(0)
        flush(self)

    monkeypatch.setattr(wire._Pipe, "request", counted_request)
    monkeypatch.setattr(wire._Pipe, "flush", counted_flush)
    list(remote.list_rows())
    assert max(sends) >= 20  # the top folders' OPENDIRs go out together
    assert remote._pool is None  # no thread per folder
    # the listing's session, read to its end, is handed on to the next call: no session opened for it
    assert remote._handoff is not None and not remote._conns
    sessions = remote.net_stats().sessions
    assert remote.stat("d00") is not None
    assert remote.net_stats().sessions == sessions == 1


@pytest.mark.usefixtures("listing_way")
def test_missing_root_and_file_root(sftp_dest, root, tmp_path):
    missing = SftpRemote.from_url(sftp_dest.url + "/nope", sftp_dest.options)
    try:
        with pytest.raises(NotFound):
            list(missing.list_rows())
    finally:
        missing.close()
    (root / "afile").write_bytes(b"x")
    afile = SftpRemote.from_url(sftp_dest.url + "/afile", sftp_dest.options)
    try:
        with pytest.raises(ConfigError):
            list(afile.list_rows())
    finally:
        afile.close()


def test_cut_mid_listing_is_transient(proxied, sftp_proxy, root, listing_way):
    for i in range(400):
        (root / f"d{i:03d}").mkdir()
        (root / f"d{i:03d}" / "f").write_bytes(b"x")
    # over SFTP the requests are most of what goes up; by find, the listing
    # is most of what comes down
    down = listing_way.endswith("find")
    before = sftp_proxy.bytes_down if down else sftp_proxy.bytes_up
    assert len(list(proxied.list_rows())) == 800
    whole = (sftp_proxy.bytes_down if down else sftp_proxy.bytes_up) - before
    # cut halfway: a forked lister may run far ahead of its reader, so the
    # cut is placed by bytes, not by rows read
    sftp_proxy.drop_after(whole // 2, down=down)
    with pytest.raises(Transient):
        list(proxied.list_rows())
    assert len(proxied._conns) == 0
    assert len(list(proxied.list_rows())) == 800  # a fresh listing works


@pytest.mark.usefixtures("listing_way")
def test_big_folder_and_abandoned_listing(remote, root):
    import threading

    (root / "big").mkdir()
    for i in range(450):  # several rounds of read-ahead (OpenSSH sends 100 names a reply)
        (root / "big" / f"f{i:03d}").write_bytes(b"x")
    for i in range(300):
        (root / f"z{i:03d}").mkdir()
    rows = list(remote.list_rows())
    assert [r[0] for r in rows[:451]] == [b"big/"] + [f"big/f{i:03d}".encode() for i in range(450)]
    assert len(rows) == 751
    listing = remote.list_rows()
    next(listing)
    listing.close()  # the consumer gives up: the lister thread (or child) and its connection go
    assert not any(t.name == "sftp-list" for t in threading.enumerate())
    assert len(remote._conns) == 0



def test_on_a_terminal_the_parent_signs_in_before_the_child_lists(remote, root, monkeypatch):
    # a secret asked on a terminal is asked once, here, and kept for the later connections
    if not forked.available():
        pytest.skip("no fork here (not Linux, or one core)")
    fill(root)
    monkeypatch.setattr(listing, "FORK_LIST_FROM", 0)
    monkeypatch.setattr(SftpRemote, "_may_prompt", lambda self: True)
    connects_here: list[int] = []
    real_connect = SftpRemote._connect

    def connect(self):
        connects_here.append(os.getpid())
        return real_connect(self)

    monkeypatch.setattr(SftpRemote, "_connect", connect)
    wait_until_quiet()
    forks = count_forks(monkeypatch)
    assert not remote._connected()
    rows = list(remote.list_rows())
    assert forks, f"not forked; threads: {[t.name for t in threading.enumerate()]}"
    assert connects_here == [os.getpid()]  # signed in here, before the fork (the child's is its own)
    assert not remote._connected()
    assert [(r[0], r[1], r[2], r[3], r[8]) for r in rows] == expected(root)

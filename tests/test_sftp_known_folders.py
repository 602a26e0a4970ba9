"""The SFTP listing asks for the folders the last run saw all at once
(issue 21): a tree the last run saw is listed in a number of round trips that
does not grow with its depth, and the listing is the one a walk level by
level gives, whatever changed on the server since (a folder removed, made a
file or a symlink, a new folder under a known one, a folder that cannot be
opened). Against the real sshd; round trips are counted as the longest chain
of requests each sent only after a reply (never timed)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_OPENDIR, CMD_READDIR, CMD_READLINK, CMD_STAT

from reconcile import forked
from reconcile.entry import DIR
from reconcile.errors import Permanent
from reconcile.remotes.base import RemoteOptions, SftpOptions
from reconcile.remotes.sftp import SftpRemote, lister, wire
from tests.mirror import run, tree
from tests.servers_sftp import sftp_url
from tests.test_sftp import no_agent_no_config, user_dir  # noqa: F401

LISTING_REQUESTS = (CMD_STAT, CMD_OPENDIR, CMD_READDIR, CMD_READLINK)


class Chains:
    """per _Pipe, the round trips behind each request: one more than the
    most behind any reply read before it was sent. `depth` is the longest
    chain of the listing's own requests (STAT, OPENDIR, READDIR, READLINK):
    the round trips it waited on on a link of any length. Also the folder
    handles the server gave and those closed, and the most open at once."""

    def __init__(self, monkeypatch) -> None:
        self.depth = 0
        self.handles: set[bytes] = set()
        self.closed: set[bytes] = set()
        self.most_open = 0
        self.asked: list[int] = []  # request types, in order
        chains: dict[int, int] = {}  # request -> its round trips
        opendirs: set[int] = set()  # the OPENDIRs not yet answered
        behind: dict[int, int] = {}  # id(pipe) -> round trips behind the replies read so far
        request, next_reply = wire._Pipe.request, wire._Pipe.next

        def counted_request(pipe, t, *parts):
            num = request(pipe, t, *parts)
            chains[num] = behind.get(id(pipe), 0) + 1
            self.asked.append(t)
            if t == CMD_OPENDIR:
                opendirs.add(num)
            if t in LISTING_REQUESTS:
                self.depth = max(self.depth, chains[num])
            if t == CMD_CLOSE:
                self.closed.add(parts[0])
            return num

        def counted_next(pipe):
            num, t, body = next_reply(pipe)
            behind[id(pipe)] = max(behind.get(id(pipe), 0), chains.pop(num, 0))
            if t == CMD_HANDLE and num in opendirs:  # a folder's (files' handles are the uploads')
                self.handles.add(wire._sftp_str(wire._handle(body)))
                self.most_open = max(self.most_open, len(self.handles - self.closed))
            return num, t, body

        monkeypatch.setattr(wire._Pipe, "request", counted_request)
        monkeypatch.setattr(wire._Pipe, "next", counted_next)


@pytest.fixture(autouse=True)
def in_this_process(monkeypatch):
    monkeypatch.setattr(forked, "available", lambda: False)  # the listing runs (and is counted) here


def deep_tree(root: Path, levels: int) -> None:
    """two folders a level, each with a file; the first of each goes on down."""
    here = root
    for level in range(levels):
        for name in ("a", "b"):
            (here / name).mkdir(parents=True)
            (here / name / f"f{level}").write_bytes(b"x" * level)
        here = here / "a"


def options_for(sshd_server, tmp_path: Path) -> RemoteOptions:
    kh = sshd_server.write_known_hosts(tmp_path / "kh")
    return RemoteOptions(sftp=SftpOptions(key=sshd_server.user_key, known_hosts=kh), transfers=1)


def listed(sshd_server, tmp_path: Path, root: Path, known: list[bytes] | None, user: str | None = None) -> list[tuple]:
    options = options_for(sshd_server, tmp_path)
    options.known_folders = None if known is None else (lambda: known)
    remote = SftpRemote.from_url(sftp_url(sshd_server, root, **({"user": user} if user else {})), options)
    try:
        return list(remote.list_rows())
    finally:
        remote.close()


def folders(rows: list[tuple]) -> list[bytes]:
    return [r[0][:-1] for r in rows if r[1] == DIR]


@pytest.mark.parametrize("levels", [2, 6])
def test_a_second_run_lists_a_tree_in_round_trips_that_do_not_grow_with_its_depth(sshd_server, tmp_path,
                                                                                    monkeypatch, levels):
    src, root, state = tmp_path / "src", tmp_path / "r", tmp_path / "state"
    deep_tree(src, levels)
    options = options_for(sshd_server, tmp_path)
    assert run(src, sftp_url(sshd_server, root), state, options=options).outcome.complete
    chains = Chains(monkeypatch)
    result = run(src, sftp_url(sshd_server, root), state, options=options)  # no change: the snapshot names them all
    assert result.outcome.complete and not result.plan.ops
    # the root's STAT with every folder's OPENDIR, then their READDIRs; a walk level by level
    # took two a level (six levels: 13)
    assert chains.depth == 2
    assert chains.handles and chains.handles <= chains.closed  # every folder opened was closed


def changed_since(root: Path) -> None:
    """what may have changed on the server since the last run saw the tree of deep_tree(root, 6)"""
    (root / "b" / "f0").unlink()
    (root / "b").rmdir()  # a folder removed
    (root / "a" / "b" / "f1").unlink()
    (root / "a" / "b").rmdir()
    (root / "a" / "b").write_bytes(b"now a file")  # a folder made a file
    outside = root.parent / f"{root.name}-outside"
    os.rename(root / "a" / "a" / "b", outside)  # a folder made a symlink to a folder (outside the root)
    for i in range(1500):  # read through the link in many rounds: still open when its parent is read
        (outside / f"n{i}").touch()
    os.symlink(outside, root / "a" / "a" / "b")
    deep = root / "a" / "a" / "a" / "a"
    (deep / "new" / "newer").mkdir(parents=True)  # new folders under a known one
    (deep / "new" / "newer" / "g").write_bytes(b"g")
    os.rename(deep / "b", root / "a" / "moved")  # moved up: gone from one place, new at another


def test_the_listing_with_known_folders_is_the_one_level_by_level_whatever_changed(sshd_server, tmp_path,
                                                                                   monkeypatch):
    root = tmp_path / "r"
    deep_tree(root, 6)
    known = folders(listed(sshd_server, tmp_path, root, None))
    assert len(known) == 12
    changed_since(root)
    level_by_level = listed(sshd_server, tmp_path, root, None)
    chains = Chains(monkeypatch)
    rows = listed(sshd_server, tmp_path, root, known)
    assert rows == level_by_level
    assert b"a/a/b" in [r[0] for r in rows] and b"a/b" in [r[0] for r in rows]  # the link and the file
    assert not any(r[0].startswith(b"a/a/b/") for r in rows)  # nothing listed through the link
    assert b"a/a/a/a/new/newer/g" in [r[0] for r in rows]
    # the known folders at once, then two round trips for each level of new ones (two here)
    assert chains.depth <= 6
    assert chains.handles <= chains.closed  # the folders that were not there any more were closed too


def test_a_known_folder_that_cannot_be_read_fails_as_level_by_level(sshd_server, user_dir, tmp_path,
                                                                     monkeypatch):
    # as a user who cannot read one folder (root reads every one): its OPENDIR fails
    monkeypatch.setenv("RECONCILE_SFTP_PASSWORD", sshd_server.password)
    pw = pwd.getpwnam(sshd_server.password_user)
    root = user_dir / "r"
    deep_tree(root, 4)
    for d, _dirs, _files in os.walk(root):
        os.chown(d, pw.pw_uid, pw.pw_gid)
    user = sshd_server.password_user
    known = folders(listed(sshd_server, tmp_path, root, None, user))
    os.chmod(root / "a" / "a", 0o311)
    level_by_level = _outcome(lambda: listed(sshd_server, tmp_path, root, None, user))
    chains = Chains(monkeypatch)
    with_known = _outcome(lambda: listed(sshd_server, tmp_path, root, known, user))
    assert level_by_level[0] == "error" and "permission denied" in level_by_level[1]
    assert with_known == level_by_level
    assert chains.depth <= 4  # the known folders were asked for at once all the same


def _outcome(fn):
    try:
        return ("rows", fn())
    except Permanent as exc:
        return ("error", str(exc))


def test_no_more_folders_are_open_at_once_than_allowed_and_the_missing_are_found(sshd_server, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(lister, "OPEN_DIRS_MAX", 3)
    root = tmp_path / "r"
    deep_tree(root, 6)
    for i in range(10):
        (root / "b" / f"wide{i}").mkdir()
    known = folders(listed(sshd_server, tmp_path, root, None))
    (root / "b" / "late").mkdir()  # not known: found by the walk
    level_by_level = listed(sshd_server, tmp_path, root, None)
    chains = Chains(monkeypatch)
    assert listed(sshd_server, tmp_path, root, known) == level_by_level
    assert chains.most_open <= 3 + 1  # the bound, and the folder the walk waits for
    assert chains.handles <= chains.closed


def test_a_first_run_without_a_snapshot_and_a_missing_root_list_as_before(sshd_server, tmp_path, monkeypatch):
    root = tmp_path / "missing"
    options = options_for(sshd_server, tmp_path)
    options.known_folders = lambda: [b"a", b"a/b"]
    remote = SftpRemote.from_url(sftp_url(sshd_server, root), options)
    chains = Chains(monkeypatch)
    try:
        from reconcile.errors import NotFound

        with pytest.raises(NotFound):
            list(remote.list_rows())
        assert chains.asked.count(CMD_OPENDIR) == 3  # the root's and the known folders', all failed
        src = tmp_path / "src"
        deep_tree(src, 2)
        assert run(src, sftp_url(sshd_server, root), tmp_path / "state", options=options).outcome.complete
        assert tree(root, with_mtime=False) == tree(src, with_mtime=False)
    finally:
        remote.close()
    assert chains.handles <= chains.closed

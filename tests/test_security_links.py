"""Issue 24, symlinks someone who can write the destination plants there:
the trash folder, folders swapped between listing and write (local and SFTP)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from reconcile import safepath
from reconcile.entry import FILE, Entry
from reconcile.errors import Permanent
from reconcile.remotes.local import LocalRemote
from tests.cli import reconcile
from tests.mirror import tree, write

T0 = 1_600_000_000_000_000_000


def _root_of(dest) -> Path:
    return Path(dest.url if dest.kind == "local" else unquote(urlsplit(dest.url).path))


@pytest.fixture(params=["local", "sftp"])
def linkable_dest(request):
    """the remotes that can hold a symlink"""
    return request.getfixturevalue(f"{request.param}_dest")


@pytest.mark.parametrize("where", ["trash", "run"])
def test_a_symlinked_trash_is_never_followed(linkable_dest, tmp_path, where):
    dest = linkable_dest
    root = _root_of(dest)
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "old", b"to be deleted", T0)
    write(src / "changed", b"v1", T0)
    args = ("--state-dir", state, "--delete", "--max-delete", "10", "--backup-dir", ".reconcile-trash",
            *dest.cli_args)
    reconcile("apply", src, dest.url, *args, env=dest.env, check=0)
    # the attacker: the trash (or this run's predictable folder in it) points elsewhere
    outside = tmp_path / "outside"
    outside.mkdir()
    if where == "trash":
        os.symlink(outside, root / ".reconcile-trash")
    else:
        (root / ".reconcile-trash").mkdir(exist_ok=True)
        import time
        now = time.time()
        for dt in range(0, 120):  # the run folders of the next two minutes
            name = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(now + dt))
            os.symlink(outside, root / ".reconcile-trash" / name)
    (src / "old").unlink()
    write(src / "changed", b"v2", T0 + 10**12)
    p = reconcile("apply", src, dest.url, *args, env=dest.env)
    assert p.returncode == 4, p.stderr
    assert "symlink" in p.stderr and "nothing was changed" in p.stderr.lower()
    assert "Traceback" not in p.stderr
    assert list(outside.iterdir()) == []
    assert (root / "old").read_bytes() == b"to be deleted"
    assert (root / "changed").read_bytes() == b"v1"


def test_sftp_move_refuses_a_symlinked_folder_above_the_target(sftp_dest, tmp_path):
    """past the engine's check (a link made mid-run): the move itself refuses"""
    from reconcile.remotes import open_remote

    root = _root_of(sftp_dest)
    outside = tmp_path / "outside"
    outside.mkdir()
    write(root / "f", b"mine", T0)
    (root / "t").mkdir()
    os.symlink(outside, root / "t" / "run")
    remote = open_remote(sftp_dest.url, sftp_dest.options)
    try:
        with pytest.raises(Permanent, match="symlink"):
            remote.move("f", "t/run/f")
    finally:
        remote.close()
    assert list(outside.iterdir()) == [] and (root / "f").exists()


# --- local destination: by construction, every folder opened O_NOFOLLOW ---------

def _swap_hook(root: Path, at: str, outside: Path):
    """swap the folder `at` for a symlink to outside just before it is opened:
    the race of CVE-2024-12747, made to happen every time"""
    def hook(rel: str) -> None:
        if rel == at and not (root / at).is_symlink():
            (root / at).rename(root / (at + ".moved"))
            os.symlink(outside, root / at)
    return hook


@pytest.mark.parametrize("op", ["upload", "delete", "move_to", "move_from", "mkdir", "symlink", "rmdir"])
def test_local_ops_never_follow_a_folder_swapped_for_a_symlink(tmp_path, monkeypatch, op):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root / "a" / "b" / "victim", b"inside", T0)
    (root / "a" / "b" / "empty").mkdir()
    write(outside / "victim", b"outside, not ours", T0)
    (outside / "empty").mkdir()
    write(tmp_path / "local", b"payload", T0)
    before = tree(outside)
    monkeypatch.setattr(safepath, "before_open", _swap_hook(root, "a/b", outside))
    r = LocalRemote(str(root))
    with pytest.raises(Permanent, match="symlink"):
        if op == "upload":
            r.upload(str(tmp_path / "local"), "a/b/new", Entry("a/b/new", FILE, 7, T0))
        elif op == "delete":
            r.delete("a/b/victim")
        elif op == "move_to":
            write(root / "x", b"x", T0)
            r.move("x", "a/b/x")
        elif op == "move_from":
            r.move("a/b/victim", "stolen")
        elif op == "mkdir":
            r.mkdir("a/b/new")
        elif op == "symlink":
            r.symlink("/etc/passwd", "a/b/link")
        else:
            r.rmdir("a/b/empty")
    assert tree(outside) == before
    assert not (root / "stolen").exists()
    assert r.stat("a/b/victim") is None  # seen through a symlink: not ours


def test_local_stat_and_download_do_not_follow_a_symlinked_folder(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(outside / "secret", b"outside", T0)
    root.mkdir()
    os.symlink(outside, root / "d")
    r = LocalRemote(str(root))
    assert r.stat("d/secret") is None
    with pytest.raises(Permanent, match="symlink"):
        r.download("d/secret", str(tmp_path / "copy"))

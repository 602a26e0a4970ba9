"""Issue 24.8 (output part): a name holding terminal escape sequences is
printed escaped by apply -v, restore -v and verify, never raw."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000
EVIL = "x\x1b]0;owned\x07\x1b[2Jy\x9b31m"


def _no_controls(p) -> None:
    out = p.stdout + p.stderr
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, out
    assert "\\x1b" in out  # the name is there, escaped


def test_names_with_escape_sequences_are_printed_escaped(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / EVIL, b"1", T0)
    _no_controls(reconcile("apply", src, dst, "--state-dir", state, "-v", check=0))
    write(dst / (EVIL + "2"), b"extra on the remote", T0)
    _no_controls(reconcile("verify", src, dst, "--state-dir", state))
    _no_controls(reconcile("restore", dst, tmp_path / "out", "-v", check=0))
    _no_controls(reconcile("plan", src, dst, "--state-dir", state, "--delete", "-v", check=0))


def test_an_endlessly_deep_server_tree_is_a_clear_error(sftp_dest, tmp_path, monkeypatch):
    """a server whose tree never ends: a clear error, not a RecursionError"""
    import os

    from reconcile.errors import Permanent
    from reconcile.remotes.sftp import listing as listing_mod
    from reconcile.remotes.sftp import SftpRemote

    monkeypatch.setattr(listing_mod, "MAX_DEPTH", 40)  # the same guard, reached sooner
    monkeypatch.setenv("RECONCILE_SSH_CONFIG", str(tmp_path / "none"))
    root = tmp_path / "sftp-root"
    os.makedirs(root / "/".join(["d"] * 60))
    remote = SftpRemote.from_url(sftp_dest.url, sftp_dest.options)
    remote.options.sftp.find = "never"
    try:
        import pytest

        with pytest.raises(Permanent, match="deeper than 40 folders"):
            list(remote.list_rows())
    finally:
        remote.close()


def test_a_nul_or_escape_in_a_listed_name_is_skipped_by_restore(tmp_path, monkeypatch):
    from reconcile import restore, restore_output
    from reconcile.entry import FILE, Entry
    from reconcile.remotes.local import LocalRemote

    class Hostile(LocalRemote):
        def list(self):
            yield from super().list()
            yield Entry("a\x00b", FILE, 3, T0)

    remote_root = tmp_path / "remote"
    write(remote_root / "ok", b"fine", T0)
    monkeypatch.setattr(restore, "open_remote", lambda url, opts: Hostile(url, opts))
    warnings = []
    rep = restore_output.Reporter(quiet=True)
    monkeypatch.setattr(rep, "warn", warnings.append)
    out = restore.Restore(str(remote_root), restore.RestoreOptions(str(tmp_path / "out")), rep).run()
    assert out.count("done") == 1 and (tmp_path / "out" / "ok").read_bytes() == b"fine"
    assert warnings == ["skipped a\\x00b: not a usable relative path"]


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_a_download_is_bounded_by_the_listed_size(request, tmp_path, monkeypatch, kind):
    """the server's listing said 10 bytes, its fstat says 5 MB: nothing is read"""
    import os
    from urllib.parse import unquote, urlsplit

    from reconcile import restore, restore_output
    from reconcile.remotes import open_remote

    dest = request.getfixturevalue(f"{kind}_dest")
    root = Path(dest.url if kind == "local" else unquote(urlsplit(dest.url).path))
    write(root / "big", os.urandom(5 << 20), T0)
    write(root / "small", b"fine", T0)
    monkeypatch.setenv("RECONCILE_SSH_CONFIG", str(tmp_path / "none"))

    def lying(url, opts):
        remote = open_remote(url, dest.options)
        real = remote.list

        def listed():
            for e in real():
                if e.path == "big":
                    e.size = 10
                yield e
        remote.list = listed
        return remote

    monkeypatch.setattr(restore, "open_remote", lying)
    rep = restore_output.Reporter(quiet=True)
    out = restore.Restore(dest.url, restore.RestoreOptions(str(tmp_path / "out")), rep).run()
    items = {i.rel: i for i in out.survey.todo}
    assert items["small"].result == "done"
    assert items["big"].result == "failed" and "not the 10 listed" in items["big"].error
    assert items["big"].fetched == 0 and not (tmp_path / "out" / "big").exists()

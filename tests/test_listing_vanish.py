"""A destination that changes while it is listed: a folder removed under the
lister is skipped like any vanished entry, and a listing cut short after its
first rows is an error to retry, never taken for the whole."""

from __future__ import annotations

import shutil

import pytest

from reconcile.engine import Run, RunOptions
from reconcile.errors import NotFound, Transient
from reconcile.remotes import local
from reconcile.remotes.base import RemoteOptions
from tests.mirror import SilentReporter, write

T0 = 1_600_000_000_000_000_000


def test_a_folder_removed_while_listed_is_skipped_not_the_rest(tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    for path in ("a/f", "b/f", "c/f1", "c/f2", "z.txt"):
        write(dst / path, b"x", T0)
    real = local._list_dir

    def vanishing(abspath: bytes, prefix: bytes, *rest):
        if prefix == b"b/":
            shutil.rmtree(dst / "b")
        return real(abspath, prefix, *rest)

    monkeypatch.setattr(local, "_list_dir", vanishing)
    remote = local.LocalRemote(str(dst), RemoteOptions())
    paths = [row[0] for row in remote.list_rows(fork=False)]
    assert paths == [b"a/", b"a/f", b"b/", b"c/", b"c/f1", b"c/f2", b"z.txt"]


class _CutListing:
    """a remote whose listing stops with NotFound after its first row."""

    def __init__(self, first_missing: bool) -> None:
        self.first_missing = first_missing

    def list_rows(self):
        if self.first_missing:
            raise NotFound("no such folder")
        yield (b"a.txt", "f", 1, T0, 0, 0, 0o644, None, None, None)
        raise NotFound("c/ vanished")


@pytest.mark.parametrize("first_missing", [True, False])
def test_only_a_missing_root_is_an_empty_listing(tmp_path, first_missing):
    (tmp_path / "src").mkdir()
    run = Run(str(tmp_path / "src"), str(tmp_path / "dst"), RunOptions(state_dir=str(tmp_path / "st")),
              SilentReporter())
    run._remote = _CutListing(first_missing)
    if first_missing:
        assert list(run._listing_rows()) == []
    else:
        with pytest.raises(Transient, match="changed while it was listed"):
            list(run._listing_rows())

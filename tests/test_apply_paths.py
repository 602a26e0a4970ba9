"""Executor._local: a file's local path, built by concatenation where "/" is
the separator, is the path os.path.join gives."""

from __future__ import annotations

import os

import pytest

from reconcile.apply import Executor


@pytest.mark.parametrize("root", ["/src", "/src/", "/", "/a b/ü"])
@pytest.mark.parametrize("path", ["f", "d/f", "d/e/f.bin", "ü/x y"])
def test_local_path_is_the_joined_path(root, path):
    ex = Executor(None, root, None, None)  # type: ignore[arg-type]
    assert ex._local(path) == os.path.join(root, *path.split("/"))

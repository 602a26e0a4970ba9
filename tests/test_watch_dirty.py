"""The dirty set of reconcile watch stays bounded: nested paths fold into
the outermost, and past the limit the deepest fold into their parents."""

from __future__ import annotations

import random

from reconcile.watch.changes import DirtySet, is_under


def test_nested_paths_fold_into_the_outermost():
    d = DirtySet()
    for p in ["a/b/c", "a/b/d", "x"]:
        d.add(p)
    d.add("a")
    d.add("a/q")
    assert d.take() == ["a", "x"]
    assert not d


def test_the_root_covers_everything():
    d = DirtySet()
    d.add("a/b")
    d.add("")
    d.add("c")
    assert d.take() == [""]


def test_past_the_limit_paths_fold_into_parents_and_cover_every_change():
    rng = random.Random(7)
    changed = [f"top{rng.randint(0, 30)}/mid{rng.randint(0, 30)}/f{i}" for i in range(5000)]
    d = DirtySet(limit=100)
    for p in changed:
        d.add(p)
        assert len(d) <= 100
    kept = d.take()
    assert all(any(is_under(p, k) for k in kept) for p in changed)  # nothing changed is left out
    assert all(k.count("/") <= 1 for k in kept)


def test_a_failed_run_puts_its_paths_back():
    d = DirtySet()
    d.add("a/x")
    taken = d.take()
    d.add("b")
    d.put_back(taken)
    assert d.take() == ["a/x", "b"]

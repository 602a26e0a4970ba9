"""The mirror property on real exFAT and NTFS disks (tests/servers_usb.py):
random trees under random changes end in an exact mirror (bytes, and mtimes
at the disk's precision) after each apply, and a second plan is empty.

The source names differ by more than case: two names that are one on exFAT
are a collision, reported and skipped (test_usb_names.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tests.test_mirror_property as base
from tests.mirror import run, tree

NAMES = ["a", "b", "a-b", "a0", "c d"]
EXAMPLES = int(os.environ.get("RECONCILE_USB_PROPERTY_EXAMPLES", "25"))


def within(dst: dict, src: dict, precision: int) -> list[str]:
    """the paths where the mirror differs from the source"""
    bad = sorted(dst.keys() ^ src.keys())
    for k in dst.keys() & src.keys():
        d, s = dst[k], src[k]
        if d[:2] != s[:2] or (d[0] == "f" and abs(d[2] - s[2]) >= precision):
            bad.append(k)
    return bad


@pytest.mark.parametrize("fs", ["exfat", "ntfs"])
def test_random_changes_end_in_exact_mirror_on_usb_disks(fs, request):
    disk = request.getfixturevalue(f"{fs}_disk")

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def prop(data):
        with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "NAMES", NAMES)
            tmp = Path(tmp)
            src, state, dst = tmp / "src", tmp / "state", disk.fresh_folder()
            src.mkdir()
            clock = base.Clock()
            for _ in range(data.draw(st.integers(1, 8))):
                base.change(src, data.draw(base.change_st), clock)
            for _ in range(data.draw(st.integers(1, 4))):
                result = run(src, str(dst), state, delete=True, max_delete=10**9, allow_empty_source=True)
                assert result.outcome.complete, result.outcome.results
                assert result.outcome.count("skipped") == 0, [o.to_json() for o in result.plan.ops]
                precision = {"exfat": 10**9, "ntfs": 100}[fs]
                assert within(tree(dst), tree(src), precision) == []
                again = run(src, str(dst), state, mode="plan", delete=True, max_delete=10**9,
                            allow_empty_source=True)
                assert again.plan.ops == [], [o.to_json() for o in again.plan.ops]
                for _ in range(data.draw(st.integers(1, 6))):
                    base.change(src, data.draw(base.change_st), clock)

    prop()

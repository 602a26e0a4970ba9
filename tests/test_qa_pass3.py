"""A new user's third pass over main (qa): each finding through the real
command line against real servers, checking exit codes and the words printed."""

from __future__ import annotations

import json
import os

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


def test_a_name_s3_cannot_hold_does_not_cost_the_pair_its_rename_detection(s3_dest, tmp_path):
    """One Latin-1 name in the source failed its upload every run, so no run was
    complete, no snapshot was ever kept, and a renamed folder was sent again in
    full. It is now left out at plan time (not stored, exit 3), as on a USB disk."""
    src, state = tmp_path / "src", tmp_path / "state"
    for i in range(3):
        write(src / "album" / f"{i}.jpg", os.urandom(1000) + bytes([i]), T0)
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as f:
        f.write(b"x")
    args = ("--state-dir", state, *s3_dest.cli_args)
    p = reconcile("apply", src, s3_dest.url, *args, env=s3_dest.env, check=3)  # not backed up: never a success
    assert "cannot store caf\\xe9.txt on this destination: the name is not valid UTF-8" in p.stderr, p.stderr
    (src / "album").rename(src / "album-2026")
    doc = json.loads(reconcile("plan", src, s3_dest.url, *args, "--json", env=s3_dest.env, check=0).stdout)
    ops = [(o["op"], o.get("from"), o.get("to")) for o in doc["operations"]]
    assert ops == [("move", "album", "album-2026")], doc["operations"]
    assert len(doc["not_stored"]) == 1, doc
    p = reconcile("apply", src, s3_dest.url, *args, env=s3_dest.env, check=3)
    assert p.stderr.splitlines()[-1].startswith("partial: 1 done,"), p.stderr
    assert "1 not stored: the destination cannot hold them" in p.stderr.splitlines()[-1], p.stderr

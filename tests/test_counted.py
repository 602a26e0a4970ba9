"""Bytes sent and bytes saved, counted per run (issue 26, item 4): `apply
--json` totals, the summary line, the log's summary record and `status` all
give the same numbers, from the operations that completed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.kill import start_stalled
from tests.mirror import write
from tests.storage import SEC, read_dest

T0 = 1_600_000_000 * SEC
LATER = T0 + 86_400 * SEC
ALBUM = {"a.jpg": 1_000, "b.jpg": 2_000, "c.jpg": 3_000}  # 6,000 bytes in the moved folder
TOUCHED = 4_000
NEW = 500


def cli(dest, *args, check=0):
    return reconcile(*args, *dest.cli_args, env=dest.env, check=check)


def first_run(dest, src, state) -> None:
    for name, size in ALBUM.items():
        write(src / "album" / name, os.urandom(size), T0)
    write(src / "notes.txt", os.urandom(TOUCHED), T0)
    cli(dest, "apply", src, dest.url, "--state-dir", state)


def summary_record(log) -> dict:
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in records if r["event"] == "summary"][-1]


@pytest.mark.parametrize("dest", ["local", "sftp", "s3"], indirect=True)
def test_a_move_a_touch_and_an_upload_are_counted_everywhere(dest, tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    first_run(dest, src, state)
    os.rename(src / "album", src / "album-2024")  # a folder move: 6,000 bytes not resent
    os.utime(src / "notes.txt", ns=(LATER, LATER))  # a touch: 4,000 bytes not resent
    write(src / "new.txt", os.urandom(NEW), T0)  # an upload: 500 bytes sent

    text_log, json_log = tmp_path / "run.log", tmp_path / "run.jsonl"
    p = cli(dest, "apply", src, dest.url, "--state-dir", state, "--json", "--log-file", text_log)
    doc = json.loads(p.stdout)
    assert {(o["op"], o.get("path", o.get("from")), o["result"]) for o in doc["operations"]} == {
        ("move", "album", "done"), ("touch", "notes.txt", "done"), ("upload", "new.txt", "done")}
    assert doc["totals"]["bytes_sent"] == NEW
    assert doc["totals"]["bytes_saved"] == {"move": 6_000, "touch": TOUCHED, "delta": 0}
    summary = p.stderr.strip().splitlines()[-1]
    assert "; 500 B sent, 10.0 KB not resent (moves 6.0 KB, touches 4.0 KB)" in summary, summary
    logged = text_log.read_text()
    assert "bytes=500 bytes_saved_move=6000 bytes_saved_touch=4000 " in logged, logged
    assert "500 B sent, 10.0 KB not resent (moves 6.0 KB, touches 4.0 KB)" in logged
    status = reconcile("status", src, dest.url, "--state-dir", state, "--json", env=dest.env, check=0)
    last = json.loads(status.stdout)["last_run"]
    assert (last["bytes"], last["bytes_saved"]) == (NEW, {"move": 6_000, "touch": TOUCHED, "delta": 0})

    # a run with nothing to do counts nothing, in the JSON log too
    cli(dest, "apply", src, dest.url, "--state-dir", state, "--log-format", "json", "--log-file", json_log)
    record = summary_record(json_log)
    assert (record["bytes"], record["bytes_saved_move"], record["bytes_saved_touch"]) == (0, 0, 0), record
    assert "failed; 0 B sent (" in record["message"], record
    stored = read_dest(dest)
    assert sorted(stored.files) == sorted(["album-2024/a.jpg", "album-2024/b.jpg", "album-2024/c.jpg",
                                           "notes.txt", "new.txt"])


def apply_stalled(dest, src, state, tmp_path, point: str, meanwhile) -> tuple[dict, str]:
    """apply --json, held at its first `point` while `meanwhile` changes the destination"""
    args = [sys.executable, "-m", "reconcile", "apply", str(src), dest.url, "--state-dir", str(state),
            "--json", "--log-file", str(tmp_path / "run.log")]
    run = start_stalled(args, point, state, tmp_path / "marker", stdout=subprocess.PIPE)
    assert run.wait()["op"] == point
    meanwhile()
    run.release()
    out, err = run.child.communicate(timeout=120)
    assert run.child.returncode in (0, 3), err
    return json.loads(out), err


def test_a_failed_move_saves_nothing(local_dest, tmp_path):
    """the folder move fails (its target appeared on the destination while the
    run went): it saves nothing; the upload beside it is still counted."""
    dest, src, state = local_dest, tmp_path / "src", tmp_path / "state"
    first_run(dest, src, state)
    os.rename(src / "album", src / "album-2024")
    write(src / "new.txt", os.urandom(NEW), T0)

    # a folder at the move's target: the move cannot merge into it
    doc, err = apply_stalled(dest, src, state, tmp_path, "move",
                             lambda: write(Path(dest.url) / "album-2024" / "other.txt", b"not ours", T0))
    results = {o.get("path", o.get("from")): o["result"] for o in doc["operations"]}
    assert results == {"album": "failed", "new.txt": "done"}, doc["operations"]
    assert doc["totals"]["bytes_sent"] == NEW
    assert doc["totals"]["bytes_saved"] == {"move": 0, "touch": 0, "delta": 0}
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("partial: ") and "; 500 B sent" in summary and "not resent" not in summary, summary
    assert "bytes=500 bytes_saved_move=0 bytes_saved_touch=0 " in (tmp_path / "run.log").read_text()


def test_a_touch_that_had_to_send_the_file_counts_as_sent(local_dest, tmp_path):
    """the remote copy went away between the plan and the touch: the file is
    uploaded instead, and counted as sent, not as saved."""
    dest, src, state = local_dest, tmp_path / "src", tmp_path / "state"
    first_run(dest, src, state)
    os.utime(src / "notes.txt", ns=(LATER, LATER))

    doc, err = apply_stalled(dest, src, state, tmp_path, "touch", lambda: os.unlink(Path(dest.url) / "notes.txt"))
    assert [(o["op"], o["result"]) for o in doc["operations"]] == [("touch", "done")]
    assert doc["totals"]["bytes_sent"] == TOUCHED
    assert doc["totals"]["bytes_saved"] == {"move": 0, "touch": 0, "delta": 0}
    summary = err.strip().splitlines()[-1]
    assert "; 4.0 KB sent" in summary and "not resent" not in summary, summary
    assert "bytes=4000 bytes_saved_move=0 bytes_saved_touch=0 " in (tmp_path / "run.log").read_text()
    assert read_dest(dest).files["notes.txt"] == (src / "notes.txt").read_bytes()


def test_a_move_an_interrupted_run_left_is_counted_by_the_run_that_finishes_it(local_dest, tmp_path):
    dest, src, state = local_dest, tmp_path / "src", tmp_path / "state"
    first_run(dest, src, state)
    os.rename(src / "album", src / "album-2024")
    args = [sys.executable, "-m", "reconcile", "apply", str(src), dest.url, "--state-dir", str(state)]
    start_stalled(args, "move", state, tmp_path / "marker").kill()  # killed just before the move
    write(src / "new.txt", os.urandom(NEW), T0)  # and the next run's own plan sends this

    p = cli(dest, "apply", src, dest.url, "--state-dir", state, "--json", "--log-file", tmp_path / "run.log")
    doc = json.loads(p.stdout)
    assert [(o["op"], o["result"]) for o in doc["resumed"]] == [("move", "done")]
    assert [(o["op"], o["result"]) for o in doc["operations"]] == [("upload", "done")]
    assert doc["totals"]["bytes_sent"] == NEW
    assert doc["totals"]["bytes_saved"] == {"move": 6_000, "touch": 0, "delta": 0}
    assert "; 500 B sent, 6.0 KB not resent (moves 6.0 KB)" in p.stderr.strip().splitlines()[-1]
    assert "bytes=500 bytes_saved_move=6000 bytes_saved_touch=0 " in (tmp_path / "run.log").read_text()
    assert sorted(read_dest(dest).files) == ["album-2024/a.jpg", "album-2024/b.jpg", "album-2024/c.jpg",
                                             "new.txt", "notes.txt"]

"""--json is valid UTF-8 whatever the names: a file name holding a byte that
is not UTF-8 (an old Latin-1 name, b'caf\\xe9.txt') was written as that raw
byte, so jq and every strict reader failed on the whole document. Now it is
the escape \\udce9 (Python's surrogateescape), from which os.fsencode gives
the exact bytes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(*args) -> bytes:
    p = subprocess.run([sys.executable, "-m", "reconcile", *map(str, args)], capture_output=True)
    assert b"Traceback" not in p.stderr, p.stderr
    return p.stdout


def test_json_output_is_utf8_and_gives_back_the_exact_name(tmp_path):
    src, dest, state, log = tmp_path / "src", tmp_path / "dest", tmp_path / "state", tmp_path / "run.log"
    src.mkdir()
    raw = b"caf\xe9.txt"
    with open(os.path.join(os.fsencode(src), raw), "wb") as f:
        f.write(b"x")
    for command in ("plan", "apply"):
        out = run(command, src, dest, "--state-dir", state, "--json", "--log-file", log, "--log-format", "json")
        doc = json.loads(out.decode("utf-8"))  # strict: a raw 0xE9 byte fails here
        assert [os.fsencode(op["path"]) for op in doc["operations"]] == [raw]
    assert os.listdir(os.fsencode(dest)) == [raw]
    for line in log.read_bytes().splitlines():
        json.loads(line.decode("utf-8"))
    out = run("verify", src, dest, "--state-dir", state, "--json")
    assert json.loads(out.decode("utf-8"))["equal"] is True

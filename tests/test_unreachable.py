"""A host that cannot be reached ends in exit 3 (try again later), distinct
from configuration errors (exit 2); also through a mapping and in the log."""

from __future__ import annotations

import json

import pytest

from tests.cli import reconcile
from tests.mirror import write
from tests.servers_sftp import free_port


@pytest.fixture
def src(tmp_path):
    write(tmp_path / "src" / "f.txt", b"data", 1_600_000_000_000_000_000)
    return tmp_path / "src"


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_refused_sftp_port_exits_3(src, tmp_path, command):
    url = f"sftp://root@127.0.0.1:{free_port()}/tmp/x"  # free: nothing listens there
    p = reconcile(command, src, url, "--retry-for", "0s", "--state-dir", tmp_path / "st", check=3)
    assert "Connection refused" in p.stderr


def test_unknown_host_exits_3(src, tmp_path):
    p = reconcile("plan", src, "sftp://root@no-such-host.invalid/x", "--retry-for", "0s",
                  "--state-dir", tmp_path / "st", check=3)
    assert "cannot resolve host" in p.stderr


def test_s3_endpoint_down_exits_3(src, tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    reconcile("plan", src, "s3://bucket/x", "--s3-endpoint", f"http://127.0.0.1:{free_port()}",
              "--retry-for", "0s", "--state-dir", tmp_path / "st", env=env, check=3)


def test_unreachable_mapping_is_logged_as_such(src, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mapping.nas]\nsource = "{src}"\ndest = "sftp://root@127.0.0.1:{free_port()}/x"\n'
                   'retry_for = "0s"\n')
    log = tmp_path / "r.log"
    reconcile("apply", "nas", "--config", cfg, "--log-file", log, "--log-format", "json", check=3)
    summary = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert summary["event"] == "summary" and summary["result"] == "unreachable" and summary["exit_code"] == 3


def test_bad_destination_is_a_config_error(src, tmp_path):
    reconcile("plan", src, "ftp://host/x", "--state-dir", tmp_path / "st", check=2)

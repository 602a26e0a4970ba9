"""The fault campaign (tests/fault_campaign.py) at its CI size, on every remote:
SIGKILL, cut connections, a server that goes away, a full state folder and
replayed journals. Nothing may be lost, and the next run must converge.

The documented full-size figures come from
`python -m tests.fault_campaign --size full` (docs/reliability.md)."""

from __future__ import annotations

import os

import pytest

from tests.fault_campaign import SIZES, local_target, run_campaign, s3_target, sftp_target, table

SIZE = SIZES[os.environ.get("RECONCILE_CAMPAIGN_SIZE", "ci")]


def _check(report) -> None:
    print(table([report]))
    assert report.trials == sum(n for f, n in SIZE.trials.items() if f in report.attempted)
    assert report.faults_injected > 0
    assert report.losses == 0, report.violations
    assert report.violations == []


def test_campaign_local(tmp_path):
    _check(run_campaign(local_target(tmp_path), tmp_path, SIZE, seed=11))


def test_campaign_sftp(tmp_path, sshd_server):
    _check(run_campaign(sftp_target(sshd_server, tmp_path), tmp_path, SIZE, seed=12))


def test_campaign_s3(tmp_path, seaweed_factory):
    server = seaweed_factory()  # private: this campaign stops and starts it
    try:
        _check(run_campaign(s3_target(server, tmp_path), tmp_path, SIZE, seed=13))
    finally:
        server.stop()

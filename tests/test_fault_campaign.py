"""The fault campaign (tests/fault_campaign.py) at its CI size, on every remote:
SIGKILL mid-upload and mid-move/delete, cut connections, a server that goes
away, a full state folder and a full destination, each landed mid-apply at
least once (proved from the journal), and replayed journals apart. Nothing
may be lost, and the next run must converge.

The documented full-size figures come from
`python -m tests.fault_campaign --size full` (docs/reliability.md)."""

from __future__ import annotations

import os

import pytest

from tests.fault_campaign import FAULTS, NOT_APPLICABLE, SIZES, local_target, run_campaign, s3_target, sftp_target, table

SIZE = SIZES[os.environ.get("RECONCILE_CAMPAIGN_SIZE", "ci")]


def _check(report) -> None:
    print(table([report]))
    faults = [f for f in FAULTS if f not in NOT_APPLICABLE.get(report.remote, set())]
    assert report.replays == SIZE.trials["replay"]
    # every fault landed mid-apply at least once (proved from the journal each time)
    assert {f: report.landed.get(f, 0) >= 1 for f in faults} == {f: True for f in faults}, (report.landed,
                                                                                         report.notes)
    assert report.losses == 0, report.violations
    assert report.violations == []
    if report.server_torn:
        pytest.xfail(f"SeaweedFS keeps a PUT cut mid-body under its real key: {report.server_torn[:5]}")


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

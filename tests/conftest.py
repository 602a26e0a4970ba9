"""Shared fixtures. Real servers live in their own plugin files:
tests/servers_sftp.py (OpenSSH sshd), tests/servers_s3.py (SeaweedFS) and
tests/servers_usb.py (exFAT and NTFS disk images through FUSE)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from reconcile.remotes.base import RemoteOptions

pytest_plugins = ["tests.ci_strict", "tests.servers_sftp", "tests.servers_s3", "tests.servers_usb"]


@dataclass
class Dest:
    """A fresh, empty destination on one kind of remote."""

    kind: str  # local | sftp | s3 | exfat | ntfs (a local folder on a USB-disk file system)
    url: str
    options: RemoteOptions
    cli_args: list[str] = field(default_factory=list)  # flags the CLI needs for it
    env: dict[str, str] = field(default_factory=dict)  # environment the CLI needs for it


@pytest.fixture
def local_dest(tmp_path) -> Dest:
    root = tmp_path / "dest"
    root.mkdir()
    return Dest("local", str(root), RemoteOptions(state_dir=str(tmp_path / "rstate")))


REMOTE_KINDS = ["local", "sftp", "s3"]
USB_KINDS = ["exfat", "ntfs"]  # local folders on USB-disk file systems (tests/servers_usb.py)


@pytest.fixture(params=REMOTE_KINDS)
def dest(request) -> Dest:
    """Every remote kind in turn."""
    return request.getfixturevalue(f"{request.param}_dest")


@pytest.fixture(params=REMOTE_KINDS + USB_KINDS)
def any_dest(request) -> Dest:
    """Every remote kind and every USB-disk file system in turn: the conformance suite runs on each."""
    return request.getfixturevalue(f"{request.param}_dest")


@pytest.fixture
def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return env


# These tests need a listing or upload child to be forked, and forked.py forks
# only in a process where no other thread runs (a lock held by one at the fork
# could hang the child). In one long pytest process a thread left behind by an
# earlier test (a client's pool, a proxy) sends them down the in-process path,
# so they run first, in their usual order.
NEEDS_A_QUIET_PROCESS = ("test_fork_threads.py", "test_scale_listing.py", "test_sftp_headstart.py",
                         "test_sftp_link_rtt.py", "test_sftp_listing.py", "test_upload_child.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    items.sort(key=lambda item: item.path.name not in NEEDS_A_QUIET_PROCESS)

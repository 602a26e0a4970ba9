"""The SFTP head start (cli/early.py) is not taken where the last run saw a
tree large enough to be listed by a forked child: the child opens its own
connection, so the early one was closed unused before the fork on every such
run, leaving a second connection and a line in the server's log each time
(found by review). Real sshd behind a counting proxy."""

from __future__ import annotations

import pytest

from reconcile import forked
from reconcile.cli import early
from reconcile.remotes.sftp import headstart
from reconcile.statedir import SNAPSHOT_BYTES_PER_ENTRY
from tests.servers_sftp import sftp_url
from tests.test_sftp_headstart import _pair, _until

pytestmark = pytest.mark.skipif(not forked.available(), reason="the listing forks only on Linux with 2 cores")


@pytest.mark.parametrize("entries", [100, headstart.LIST_IN_A_CHILD_FROM])
def test_no_head_start_where_the_listing_will_run_in_a_child(sshd_server, sftp_proxy, tmp_path, entries):
    src, url, args = _pair(sshd_server, sftp_proxy, tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "snapshot.msgpack").write_bytes(b"\0" * (entries * SNAPSHOT_BYTES_PER_ENTRY))
    try:
        early.start_from_arguments(["plan", str(src), url, *args])
        if entries < headstart.LIST_IN_A_CHILD_FROM:
            _until(lambda: sftp_proxy.connections == 1, "a small tree's run connects early")
            assert headstart.pending()
        else:
            assert not headstart.pending()
            assert sftp_proxy.connections == 0
    finally:
        headstart.discard(wait=True)


def test_the_source_is_the_argument_before_the_url_and_state_dir_is_read(tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    (state / "snapshot.msgpack").write_bytes(b"\0" * (SNAPSHOT_BYTES_PER_ENTRY * 7))
    url = "sftp://nas.invalid/backup"
    assert early._entries_last_seen(["apply", "/src", url, "--state-dir", str(state)], url) == 7
    assert early._entries_last_seen(["apply", "--state-dir", str(state), url], url) == 7  # the state named
    assert early._entries_last_seen(["apply", "--delete", url], url) == 0  # no source: unknown
    assert early._entries_last_seen(["apply", "/src", url], url) == 0  # no state yet

"""A run that ends before it opens its destination (a missing source, a bad
flag) closes the SFTP connection its start opened (cli/early.py,
remotes/sftp/headstart.py): under --all the next mapping's run must not meet
it (a fork waits for a quiet process; the server holds a connection that
never signs in). Real sshd; the command runs in this process, so what it
left pending can be seen."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reconcile.cli import app
from reconcile.remotes.sftp import headstart
from tests.servers_sftp import sftp_url
from tests.test_sftp import no_agent_no_config  # noqa: F401


@pytest.mark.parametrize("why, extra, code", [
    ("a missing source", [], 4),
    ("a bad flag", ["--max-delete", "-1"], 2),
])
def test_a_run_that_ends_before_it_connects_leaves_no_connection_pending(sshd_server, tmp_path, why, extra,
                                                                         code):
    src = tmp_path / ("missing" if why == "a missing source" else "src")
    if why != "a missing source":
        src.mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    url = sftp_url(sshd_server, tmp_path / "dst")
    try:
        result = CliRunner().invoke(app, ["apply", str(src), url, "--ssh-key", sshd_server.user_key,
                                          "--known-hosts", kh, "--state-dir", str(tmp_path / "state"), *extra])
        assert result.exit_code == code, result.output
        assert not headstart.pending(), f"{why}: the run's early connection is still open"
    finally:
        headstart.discard()
    assert not (tmp_path / "dst").exists()

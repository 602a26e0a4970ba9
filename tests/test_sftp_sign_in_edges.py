"""The sign-in sent without waiting (remotes/sftp/eager.py) at its edges, on
the real sshd: a key that cannot sign is a one-line authentication error,
not a lost connection retried for --retry-for (found by review)."""

from __future__ import annotations

import pytest

from reconcile.errors import AuthError
from tests.test_sftp_link_rtt import remote_at


def test_a_key_that_cannot_sign_is_an_authentication_error(sshd_server, tmp_path, monkeypatch):
    # an agent that refuses to sign (confirm-on-use said no, a token unplugged)
    import paramiko

    root = tmp_path / "r"
    root.mkdir()
    remote = remote_at(sshd_server, tmp_path, root)
    key = paramiko.ECDSAKey.generate()

    def refuse(*_args, **_kw):
        raise paramiko.SSHException("key cannot be used for signing")

    key.sign_ssh_data = refuse
    monkeypatch.setattr(remote, "_keys", lambda: iter([("agent key ecdsa-sha2-nistp256", key)]))
    try:
        with pytest.raises(AuthError, match="agent key ecdsa-sha2-nistp256 could not sign"):
            remote.stat(".")
    finally:
        remote.close()


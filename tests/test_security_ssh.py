"""Issue 24.6 and 24.9 (ssh part): a host name is checked before any ssh
config is evaluated (`Match exec` runs %h through a shell), and an ssh
config's ProxyCommand is used, not silently ignored."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


@pytest.mark.parametrize("host", ["x;{touch,pwned};y", "a$(touch${IFS}pwned)b", "a`touch pwned`b", "-oProxyCommand=x"])
def test_shell_metacharacters_in_a_host_name_never_reach_match_exec(tmp_path, host):
    config = tmp_path / "ssh_config"
    config.write_text('Match exec "echo %h >/dev/null"\n  Port 2222\n')
    src = tmp_path / "src"
    write(src / "a", b"1", T0)
    p = reconcile("plan", src, f"sftp://{host}/backup", "--state-dir", tmp_path / "state", cwd=tmp_path,
                  env={"RECONCILE_SSH_CONFIG": str(config)})
    assert p.returncode == 2, p.stderr
    assert not (tmp_path / "pwned").exists()
    assert "host name" in p.stderr and "Traceback" not in p.stderr


PROXY = r'''
import socket, sys, threading, pathlib
pathlib.Path(sys.argv[3]).write_text("used")
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while True:
        b = sys.stdin.buffer.raw.read(65536)
        if not b:
            break
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    sys.stdout.buffer.write(b)
    sys.stdout.buffer.flush()
'''


def test_proxy_command_in_the_ssh_config_is_used(sshd_server, tmp_path):
    from tests.servers_sftp import sftp_url

    proxy, used = tmp_path / "proxy.py", tmp_path / "proxy-used"
    proxy.write_text(PROXY)
    root = tmp_path / "remote-root"
    root.mkdir()
    real = sftp_url(sshd_server, root)  # sftp://root@127.0.0.1:PORT/...
    port = sshd_server.port
    config = tmp_path / "ssh_config"
    # the alias resolves nowhere: only the ProxyCommand can reach the server
    config.write_text(f"Host backup-box\n  HostName 127.0.0.1\n  Port {port}\n"
                      f"  ProxyCommand {sys.executable} {proxy} %h %p {used}\n")
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    url = real.replace(f"127.0.0.1:{port}", "backup-box")
    src = tmp_path / "src"
    write(src / "a", b"through the proxy", T0)
    reconcile("apply", src, url, "--state-dir", tmp_path / "state", "--ssh-key", sshd_server.user_key,
              "--known-hosts", kh, env={"RECONCILE_SSH_CONFIG": str(config), "SSH_AUTH_SOCK": ""}, check=0)
    assert used.read_text() == "used"
    assert (root / "a").read_bytes() == b"through the proxy"


def test_proxy_jump_is_refused_not_silently_ignored(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host nas\n  HostName 127.0.0.1\n  Port 1\n  ProxyJump gateway\n")
    src = tmp_path / "src"
    write(src / "a", b"1", T0)
    p = reconcile("plan", src, "sftp://nas/backup", "--state-dir", tmp_path / "state",
                  env={"RECONCILE_SSH_CONFIG": str(config)}, check=2)
    assert "ProxyCommand ssh -W %h:%p gateway" in p.stderr

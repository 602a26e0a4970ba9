"""A real OpenSSH sshd for the tests, plus a TCP proxy that can cut connections
(bench/proxy.py's TcpProxy: the bench and the tests share it).

The sshd runs from a temp dir on a free 127.0.0.1 port, with its own ed25519
host key and user key (start_sshd: also for the fault campaign and the bench).
It is skipped only when /usr/sbin/sshd is missing (a failure under CI=true,
tests/ci_strict.py); CI installs openssh-server.

Paths in sftp:// URLs are absolute on the server: sftp://host/tmp/x is /tmp/x
(sftp://host/~/x is x under the login directory). Since the server is local,
tests can look at the remote tree directly through the filesystem.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from bench.proxy import TcpProxy
from reconcile.remotes.base import RemoteOptions, SftpOptions

SSHD = "/usr/sbin/sshd"
TEST_USER = "reconcile-test"


@dataclass
class SshServer:
    host: str
    port: int
    dir: Path
    host_pub: str  # "ssh-ed25519 AAAA..." as in known_hosts
    user_key: str  # private key file accepted for every user
    password_user: str | None  # a user with a password, None when useradd is missing
    password: str | None

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(self.dir / "hostkey.pub")],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]  # "SHA256:..."

    def authorize(self, pub_file: str) -> None:
        """accept one more public key, for every user."""
        with open(self.dir / "extra_keys", "a") as f:
            f.write(Path(pub_file).read_text())

    def write_known_hosts(self, path: Path, port: int | None = None) -> str:
        path.write_text(f"[{self.host}]:{port or self.port} {self.host_pub}\n")
        path.chmod(0o600)
        return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reconcile-test", "-f", str(path)],
                   check=True)


def _password_user() -> tuple[str | None, str | None]:
    """a local user with a fresh password, so root's own password stays untouched."""
    if not shutil.which("useradd") or not shutil.which("chpasswd"):
        return None, None
    if subprocess.run(["id", TEST_USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], capture_output=True)
        if made.returncode != 0:
            return None, None
    password = _shared_password()
    done = subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, capture_output=True)
    return (TEST_USER, password) if done.returncode == 0 else (None, None)


def _shared_password() -> str:
    """one random password per machine, in a root-only file: two test sessions
    running at once set the same one instead of overwriting each other's."""
    path = os.path.join(os.path.expanduser("~"), ".cache", "reconcile-test-password")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("pw-" + os.urandom(9).hex())
    try:
        os.link(tmp, path)  # atomic: the first session's password wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path) as f:
        return f.read().strip()


def _sshd_config(d: Path, port: int) -> str:
    return f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/hostkey
AuthorizedKeysFile {d}/userkey.pub {d}/extra_keys
PidFile {d}/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
MaxStartups 200:30:400
MaxSessions 50
LogLevel VERBOSE
"""


def _wait_banner(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port}: {log.read_text()}")


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory) -> SshServer:
    yield from run_sshd(tmp_path_factory.mktemp("sshd"))


def start_sshd(d: Path, extra_config: str = "", log_level: str = "VERBOSE") -> tuple[int, subprocess.Popen]:
    """sshd from d (its keys made there: hostkey, userkey) on a free
    127.0.0.1 port, logging to d/sshd.log; (port, process) once it answers.
    extra_config is appended to its sshd_config (a ForceCommand, say)."""
    _keygen(d / "hostkey")
    _keygen(d / "userkey")
    os.makedirs("/run/sshd", exist_ok=True)
    port = free_port()
    config = _sshd_config(d, port).replace("LogLevel VERBOSE", f"LogLevel {log_level}")
    (d / "sshd_config").write_text(config + extra_config)
    log = d / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(log)])
    try:
        _wait_banner(port, proc, log)
    except BaseException:
        _stop(proc)
        raise
    return port, proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_sshd(d: Path, extra_config: str = "") -> Iterator[SshServer]:
    """a fresh sshd in d for as long as the generator runs; extra_config is
    appended to its sshd_config (a ForceCommand, say)."""
    if not os.path.exists(SSHD):
        pytest.skip("openssh-server is not installed (/usr/sbin/sshd missing)")
    port, proc = start_sshd(d, extra_config)
    try:
        user, password = _password_user()
        host_pub = " ".join((d / "hostkey.pub").read_text().split()[:2])
        yield SshServer("127.0.0.1", port, d, host_pub, str(d / "userkey"), user, password)
    finally:
        _stop(proc)


def sftp_url(server: SshServer, root: Path, user: str = "root", port: int | None = None) -> str:
    return f"sftp://{user}@{server.host}:{port or server.port}{quote(str(root), safe='/')}"


@pytest.fixture
def sftp_dest(sshd_server: SshServer, tmp_path):
    from tests.conftest import Dest

    root = tmp_path / "sftp-root"
    root.mkdir()
    kh = sshd_server.write_known_hosts(tmp_path / "known_hosts")
    key = sshd_server.user_key
    options = RemoteOptions(sftp=SftpOptions(key=key, known_hosts=kh), state_dir=str(tmp_path / "rstate"))
    return Dest("sftp", sftp_url(sshd_server, root), options,
                cli_args=["--ssh-key", key, "--known-hosts", kh], env={})


@pytest.fixture
def sftp_proxy(sshd_server: SshServer):
    proxy = TcpProxy(sshd_server.port)
    yield proxy
    proxy.close()

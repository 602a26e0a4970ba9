"""A destination reached through a byte-counting TCP proxy (SFTP and S3), so a
test counts what reaches the server: touch (issue 26 item 1), the resume
bound and delta transfer (items 2 and 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.servers_sftp import TcpProxy, sftp_url


@pytest.fixture
def proxied(dest, request, tmp_path):
    """dest, with SFTP and S3 reached through a byte-counting proxy (None on local)."""
    if dest.kind == "sftp":
        server = request.getfixturevalue("sshd_server")
        proxy = TcpProxy(server.port)
        kh = server.write_known_hosts(tmp_path / "known_hosts_proxy", port=proxy.port)
        root = Path(unquote(urlsplit(dest.url).path))
        cli_args = ["--ssh-key", server.user_key, "--known-hosts", kh]
        # its options too, so a remote opened from them knows the host key at the proxy's port
        options = dataclasses.replace(dest.options, sftp=dataclasses.replace(dest.options.sftp, known_hosts=kh))
        d = dataclasses.replace(dest, url=sftp_url(server, root, port=proxy.port), cli_args=cli_args, options=options)
    elif dest.kind == "s3":
        seaweed = request.getfixturevalue("seaweed")
        proxy = TcpProxy(seaweed.ports["s3"])
        endpoint = f"http://127.0.0.1:{proxy.port}"
        # options keep the server's own endpoint: tests read the bucket past the proxy
        d = dataclasses.replace(dest, cli_args=["--s3-endpoint", endpoint])
    else:
        proxy, d = None, dest
    yield d, proxy
    if proxy is not None:
        proxy.close()

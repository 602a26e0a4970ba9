"""A PUT whose connection is cut after its headers never replaces the object.

SeaweedFS 4.x stores an object from a PUT that was cut before any body byte
arrived (0 bytes), replacing the old version; AWS refuses such a request.
Each single PUT therefore carries Content-MD5, which the server checks
against what it received. The cut is made by a proxy that forwards a PUT's
headers and then closes both sides: the body never arrives.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import replace

import pytest

from reconcile.errors import RemoteError
from reconcile.remotes.s3 import IN_MEMORY_MAX, S3Remote
from tests.test_s3 import MiB, raw_key, write


class CutAfterPutHeaders:
    """forwards 127.0.0.1:port to target; once a PUT's headers went through,
    closes the connection before any of its body."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                end = pending.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head, pending = pending[:end + 4], pending[end + 4:]
                server.sendall(head)
                if head.startswith(b"PUT "):
                    self.cuts += 1
                    threading.Event().wait(0.3)  # the server has read the headers
                    break
                server.sendall(pending)  # a request without a body of interest
                pending = b""
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass


@pytest.mark.parametrize("size", [1000, IN_MEMORY_MAX + MiB], ids=["in-memory", "streamed"])
def test_put_cut_after_its_headers_keeps_the_old_object(s3_dest, seaweed, tmp_path, size):
    path = tmp_path / "f.bin"
    first = write(path, b"A" * size)
    remote = S3Remote.from_url(s3_dest.url, s3_dest.options)
    remote.upload(str(path), "f.bin", first)
    remote.close()

    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    proxy = CutAfterPutHeaders(port)
    options = replace(s3_dest.options, s3=replace(s3_dest.options.s3, endpoint=f"http://127.0.0.1:{proxy.port}"),
                      extra={**s3_dest.options.extra, "s3_attempts": 1})
    second = write(path, b"B" * size)
    remote = S3Remote.from_url(s3_dest.url, options)
    try:
        with pytest.raises(RemoteError):
            remote.upload(str(path), "f.bin", second)
    finally:
        remote.close()
        proxy.close()
    assert proxy.cuts >= 1
    bucket, key = raw_key(s3_dest, "f.bin")
    body = seaweed.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == b"A" * size, f"the object now holds {len(body)} bytes"

"""A TCP proxy that adds round-trip time: each chunk is held RTT/2 in each
direction before it is forwarded (the kernel here has no netem). No bandwidth
cap. It counts connections, bytes and the times a client waited on the server.

Usage: DelayProxy(target_port, rtt_ms).port is where the tool connects.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from bench.proxy import Forwarder, _shut, _shut_write

CHUNK = 1 << 16


@dataclass
class _Link:
    """one proxied connection: the times that tell a wait from a stream."""
    last_up: float = 0.0  # when the client last sent
    last_down: float = 0.0  # when the client was last handed server bytes
    waits: int = 0
    ended: int = 0  # directions that have closed: at 2 the sockets go
    socks: list[socket.socket] = field(default_factory=list)


class DelayProxy(Forwarder):
    """127.0.0.1:port -> 127.0.0.1:target_port with rtt_ms of round-trip time.

    `waits` counts, over all connections, the client sends that came after the
    client had been silent for half an RTT or more and had been answered in
    that silence: a request that had to wait for a reply. A pipelined stream
    counts once; connections working in parallel each count theirs."""

    def __init__(self, target_port: int, rtt_ms: float, target_host: str = "127.0.0.1") -> None:
        self.delay = rtt_ms / 2000.0
        self.rtt_ms = rtt_ms
        self._links: list[_Link] = []
        super().__init__((target_host, target_port), name="delay-accept")

    @property
    def waits(self) -> int:
        with self._lock:
            return sum(link.waits for link in self._links)

    def counts(self) -> tuple[int, int, int, int]:
        """(connections, waits, bytes up, bytes down) so far."""
        with self._lock:
            return self.connections, sum(k.waits for k in self._links), self.bytes_up, self.bytes_down

    def close(self) -> None:
        self._closed = True
        _shut(self.listener)
        with self._lock:
            socks = [s for link in self._links for s in link.socks]
        for s in socks:
            _shut(s)
        self._join()

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        link = _Link(socks=[client, server])
        with self._lock:
            self._links.append(link)
        for src, dst, up in ((client, server, True), (server, client, False)):
            self._start(_Direction(self, link, src, dst, up).run)

    def _received(self, link: _Link, n: int, up: bool, now: float) -> None:
        with self._lock:
            if up:
                self.bytes_up += n
                silent = now - link.last_up
                if link.last_down > link.last_up and silent >= max(self.delay, 0.002):
                    link.waits += 1
                link.last_up = now
            else:
                self.bytes_down += n

    def _ended(self, link: _Link) -> None:
        with self._lock:
            link.ended += 1
            last = link.ended == 2
        if last:
            for s in link.socks:
                _shut(s)

    def _delivered(self, link: _Link, up: bool) -> None:
        if not up:
            with self._lock:
                link.last_down = time.monotonic()


class _Direction:
    """one way of one connection: a reader stamps chunks, a sender holds each
    until it is due. Order is kept; the delay is a latency, not a rate."""

    def __init__(self, proxy: DelayProxy, link: _Link, src: socket.socket, dst: socket.socket,
                 up: bool) -> None:
        self.proxy, self.link, self.src, self.dst, self.up = proxy, link, src, dst, up
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.ready = threading.Condition()

    def run(self) -> None:
        if self.proxy.delay > 0:
            self.proxy._start(self._send_loop)
        try:
            while data := self.src.recv(CHUNK):
                now = time.monotonic()
                self.proxy._received(self.link, len(data), self.up, now)
                if self.proxy.delay > 0:
                    self._push(now + self.proxy.delay, data)
                else:
                    self.proxy._delivered(self.link, self.up)  # before: the answer may come back at once
                    self.dst.sendall(data)
        except OSError:
            pass
        if self.proxy.delay > 0:
            self._push(time.monotonic() + self.proxy.delay, None)  # the close is late too
        else:
            _shut_write(self.dst)
            self.proxy._ended(self.link)

    def _push(self, due: float, data: bytes | None) -> None:
        with self.ready:
            self.queue.append((due, data))
            self.ready.notify()

    def _send_loop(self) -> None:
        try:
            while True:
                with self.ready:
                    while not self.queue:
                        self.ready.wait()
                    due, data = self.queue.popleft()
                    # what else arrived within a millisecond of it goes out with it
                    while data and self.queue and self.queue[0][1] and self.queue[0][0] <= due + 0.001:
                        data += self.queue.popleft()[1]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    _shut_write(self.dst)
                    self.proxy._ended(self.link)
                    return
                self.proxy._delivered(self.link, self.up)  # before: the answer may come back at once
                self.dst.sendall(data)
        except OSError:
            _shut(self.src)
            _shut(self.dst)


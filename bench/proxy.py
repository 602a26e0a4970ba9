"""TCP proxies on 127.0.0.1 for the bench and the tests: Forwarder accepts
and connects each client to the target; DelayProxy (delay.py) holds what it
forwards for a round-trip time, TcpProxy cuts connections on request.

The tests import these (tests/servers_sftp.py); nothing here imports the tests.
"""

from __future__ import annotations

import socket
import threading


class Forwarder:
    """127.0.0.1:port -> target: each accepted client gets its own connection
    to the target, handed to _serve(client, server)."""

    def __init__(self, target: tuple[str, int], name: str = "proxy-accept") -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.bytes_up = self.bytes_down = 0  # client -> server, server -> client, all connections
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True, name=name)]
        self._threads[0].start()

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        raise NotImplementedError

    def _refusing(self) -> bool:
        return False

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._refusing():
                _shut(client)
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _shut(client)
                continue
            for s in (client, server):  # no Nagle stalls: a chunk goes out whole and at once
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
            self._serve(client, server)

    def _start(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _join(self) -> None:
        """wait for every thread of ours to end: a test after this one may
        need a process with no other thread (forked.py forks only then)."""
        for t in list(self._threads):
            t.join(5)


class TcpProxy(Forwarder):
    """Forwards 127.0.0.1:port to a target port, counting bytes, and cuts
    connections on request: at once (drop_all) or after N more client bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._cut_at: int | None = None
        self._cut_down_at: int | None = None
        self._refuse = False
        self._refuse_after_cut = False
        self._socks: list[socket.socket] = []
        super().__init__(("127.0.0.1", target_port))

    def drop_all(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _shut(s)

    def drop_after(self, n: int, down: bool = False, then_refuse: bool = False) -> None:
        """cut every connection once n more bytes went from client to server
        (with down: from server to client); then_refuse: and refuse new ones
        from then on (a server gone, not a blip a client's own retry gets past)."""
        with self._lock:
            if down:
                self._cut_down_at = self.bytes_down + n
            else:
                self._cut_at = self.bytes_up + n
            self._refuse_after_cut = then_refuse

    def refuse(self, on: bool = True) -> None:
        """close new connections at once, as a server that is down would."""
        self._refuse = on

    def close(self) -> None:
        """stop, and wait for every thread of ours to end."""
        self._closed = True
        _shut(self.listener)
        self.drop_all()
        self._join()

    def _refusing(self) -> bool:
        return self._refuse

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        with self._lock:
            self._socks += [client, server]
        for args in ((client, server, True), (server, client, False)):
            self._start(self._pump, *args)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if not self._count(len(data), upstream):
                    break
                dst.sendall(data)
        except OSError:
            pass
        _shut(src)
        _shut(dst)

    def _count(self, n: int, upstream: bool) -> bool:
        """false once the cut point is reached: the caller then drops everything."""
        with self._lock:
            if upstream:
                self.bytes_up += n
                cut = self._cut_at is not None and self.bytes_up >= self._cut_at
                if cut:
                    self._cut_at = None
            else:
                self.bytes_down += n
                cut = self._cut_down_at is not None and self.bytes_down >= self._cut_down_at
                if cut:
                    self._cut_down_at = None
        if cut:
            if self._refuse_after_cut:
                self._refuse = True
            self.drop_all()
        return not cut


def _shut_write(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()

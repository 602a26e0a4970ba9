"""The steps of opening an SFTP session sent without waiting for the answer
before, where OpenSSH allows it (it handles a connection's messages in turn):
the userauth request right behind the service request, and the session's
channel open right behind the userauth request (RFC 4252 5.1: what follows
the request that succeeds goes to the service). Two round trips less a
connection. This module reaches into paramiko's private transport API, as
wire.py does for SFTP and ssh_send.py for the packetizer.

Only to a server whose banner says OpenSSH and with a key that is not RSA
(paramiko picks an RSA signature algorithm from the server's
server-sig-algs, which may not have been read yet); anything else, and
passwords, go step by step as before. A key the server refuses leaves the
early channel unanswered (OpenSSH says UNIMPLEMENTED before sign-in): it is
forgotten, and the session is opened after the next key's sign-in."""

from __future__ import annotations

import threading
import time

from reconcile.remotes.sftp.loader import paramiko
from paramiko.auth_handler import AuthHandler
from paramiko.common import cMSG_CHANNEL_OPEN

WINDOW = 32 << 20  # ssh channel window: large, so pipelined writes never stall on it


class _EagerAuth(AuthHandler):
    """paramiko's authentication, the userauth request sent right behind the
    service request instead of after its acceptance."""

    def _request_auth(self) -> None:
        super()._request_auth()
        accepted = paramiko.Message()
        accepted.add_string("ssh-userauth")
        accepted.rewind()
        super()._parse_service_accept(accepted)  # the userauth request, made as paramiko makes it

    def _parse_service_accept(self, m: paramiko.Message) -> None:
        pass  # the request went out already


def eager(transport: paramiko.Transport, key: paramiko.PKey) -> bool:
    return "rsa" not in key.get_name() and transport.remote_version.startswith("SSH-2.0-OpenSSH")


def auth_publickey(transport: paramiko.Transport, user: str, key: paramiko.PKey,
                   early: bool) -> "EarlyChannel | None":
    """transport.auth_publickey; to OpenSSH without waiting for the service's
    acceptance, and with early, a session channel asked for right behind
    (returned once signed in; its answer is read by EarlyChannel.wait)."""
    if not eager(transport, key):
        transport.auth_publickey(user, key)
        return None
    if not transport.is_active() or not transport.initial_kex_done:
        raise paramiko.SSHException("No existing session")
    event = threading.Event()
    transport.auth_handler = _EagerAuth(transport)  # as Transport.auth_publickey does, with ours
    try:
        transport.auth_handler.auth_publickey(user, key, event)
    except paramiko.SSHException as exc:
        # the signature is made here, not in paramiko's thread: a key that cannot sign (an agent
        # that refused, a token unplugged) must not read as a lost connection. The service
        # request went out alone; another key on this connection would meet its answer
        raise KeyCannotSign(str(exc)) from None
    chan = EarlyChannel(transport) if early else None
    try:
        transport.auth_handler.wait_for_response(event)
    except BaseException:
        if chan is not None:
            chan.forget()
        raise
    return chan


class KeyCannotSign(Exception):
    """the key was asked to sign the sign-in request and could not"""


class EarlyChannel:
    """a session channel asked for before sign-in ended: the first half of
    paramiko's Transport.open_channel now, the second (wait) later."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        with transport.lock:
            window = transport._sanitize_window_size(WINDOW)
            packet = transport._sanitize_packet_size(None)
            self.chanid = chanid = transport._next_channel()
            m = paramiko.Message()
            m.add_byte(cMSG_CHANNEL_OPEN)
            m.add_string("session")
            m.add_int(chanid)
            m.add_int(window)
            m.add_int(packet)
            self.chan = chan = paramiko.Channel(chanid)  # held here: the transport holds channels weakly
            transport._channels.put(chanid, chan)
            self.event = transport.channel_events[chanid] = threading.Event()
            transport.channels_seen[chanid] = True
            chan._set_transport(transport)
            chan._set_window(window, packet)
        transport._send_user_message(m)

    def wait(self, timeout: float) -> paramiko.Channel:
        """the channel, once the server opened it (as Transport.open_channel waits)."""
        transport = self.transport
        deadline = time.monotonic() + timeout
        while not self.event.wait(0.1):
            if not transport.is_active():
                break
            if time.monotonic() > deadline:
                self.forget()
                raise paramiko.SSHException("Timeout opening channel.")
        if transport._channels.get(self.chanid) is not None and transport.is_active():
            return self.chan
        raise transport.get_exception() or paramiko.SSHException("Unable to open channel.")

    def forget(self) -> None:
        """never to be answered (the sign-in it followed failed)."""
        with self.transport.lock:
            self.transport._channels.delete(self.chanid)
            self.transport.channel_events.pop(self.chanid, None)

"""Channel data sent with one copy, where paramiko's cipher is AES-GCM.

paramiko's Channel.send copies every byte about six times on its way to the
socket (the message buffer, its bytes, the packet, the padded packet, the
encrypted body, length plus body). Over a fast link that copying is most of
an upload's CPU. `send_data` does what Channel._send,
Transport._send_user_message and Packetizer.send_message do together, under
the same locks and with the same counters, but builds each packet once in a
reused buffer and encrypts it straight into the buffer it sends.

It reads paramiko's private packetizer state, so it checks that state is
there first (`supported`) and otherwise leaves the send to chan.send.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from reconcile.remotes.sftp.loader import paramiko
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paramiko.common import MSG_CHANNEL_DATA

_P = "_Packetizer__"
_STATE = ("aead_out", "block_engine_out", "compress_engine_out", "dump_packets", "iv_out",
          "sequence_number_out", "sent_bytes", "sent_packets", "need_rekey", "write_lock",
          "received_bytes_overflow", "received_packets_overflow", "block_size_out")
_PACKETIZER = ("_initial_kex_done", "_inc_iv_counter", "_trigger_rekey", "write_all", "REKEY_BYTES",
               "REKEY_PACKETS")
_TRANSPORT = ("active", "clear_to_send", "clear_to_send_lock", "clear_to_send_timeout", "_send_message")
_TAG = 16  # AES-GCM's tag
_HEAD = struct.Struct(">IBBII")  # packet length, padding length, type, channel, data length


class _Buffers(threading.local):
    """each sending thread builds its packets in buffers of its own."""

    def __init__(self) -> None:
        self.plain = bytearray()
        self.out = bytearray()


_buffers = _Buffers()


def supported(chan: paramiko.Channel) -> bool:
    """the transport's outgoing cipher is AES-GCM and its state is where we
    look for it (this paramiko keeps it as we expect)."""
    t = chan.transport
    p = t.packetizer
    if not all(hasattr(p, _P + name) for name in _STATE) or not all(hasattr(p, name) for name in _PACKETIZER) \
            or not all(hasattr(t, name) for name in _TRANSPORT):
        return False
    return _buildable(p, getattr(p, _P + "block_engine_out"))


def _buildable(p, engine) -> bool:
    """packets we can build for this engine: AES-GCM (another AEAD, such as
    chacha20-poly1305, encrypts the length too), uncompressed, not dumped."""
    get = p.__getattribute__
    return bool(get(_P + "aead_out")) and isinstance(engine, AESGCM) and get(_P + "block_size_out") == 16 \
        and get(_P + "compress_engine_out") is None and not get(_P + "dump_packets")


def send_data(chan: paramiko.Channel, data: memoryview) -> int:
    """chan.send(data) for a byte view: up to one packet's worth; the bytes
    taken, 0 at EOF."""
    with chan.lock:
        if chan.closed:
            raise socket.error("Socket is closed")
        size = chan._wait_for_send_window(len(data))
        if size == 0:
            return 0
    transport = chan.transport
    if not _wait_clear_to_send(transport):
        return size  # paramiko drops the data of a dead connection the same way
    try:
        if not _send_packet(transport.packetizer, chan.remote_chanid, data[:size]):
            m = paramiko.Message()
            m.add_byte(bytes([MSG_CHANNEL_DATA]))
            m.add_int(chan.remote_chanid)
            m.add_string(bytes(data[:size]))
            transport._send_message(m)
    finally:
        transport.clear_to_send_lock.release()
    return size


def _wait_clear_to_send(transport: paramiko.Transport) -> bool:
    """Transport._send_user_message's wait: no user data during a key exchange.
    True holding clear_to_send_lock; False, without it, once the connection is dead."""
    start = time.time()
    while True:
        transport.clear_to_send.wait(0.1)
        if not transport.active:
            return False
        transport.clear_to_send_lock.acquire()
        if transport.clear_to_send.is_set():
            return True
        transport.clear_to_send_lock.release()
        if time.time() > start + transport.clear_to_send_timeout:
            raise paramiko.SSHException("Key-exchange timed out waiting for key negotiation")


def _send_packet(p, chanid: int, data: memoryview) -> bool:
    """one CHANNEL_DATA packet, built and encrypted in place; False when the
    cipher in use is not AES-GCM (after a key exchange, say)."""
    get = p.__getattribute__
    with get(_P + "write_lock"):
        engine = get(_P + "block_engine_out")
        if not _buildable(p, engine):
            return False
        n = len(data)
        body = 1 + 1 + 4 + 4 + n  # padding length, type, channel, length, data
        bsize = get(_P + "block_size_out")
        padding = 3 + bsize - ((body - 1 + 4) % bsize)
        plain_len = body + padding
        buf = _buffers
        if len(buf.plain) < plain_len:
            buf.plain = bytearray(plain_len)
            buf.out = bytearray(4 + plain_len + _TAG)
        plain = memoryview(buf.plain)[:plain_len]
        _HEAD.pack_into(buf.out, 0, plain_len, padding, MSG_CHANNEL_DATA, chanid, n)
        plain[:10] = memoryview(buf.out)[4:14]
        plain[10:10 + n] = data
        plain[10 + n:] = os.urandom(padding)
        out = memoryview(buf.out)[:4 + plain_len + _TAG]
        iv = get(_P + "iv_out")
        # the packet length is the associated data (RFC 5647, 7.3)
        if hasattr(engine, "encrypt_into"):
            engine.encrypt_into(iv, plain, out[:4], out[4:])
        else:
            out[4:] = engine.encrypt(iv, plain, out[:4])
        setattr(p, _P + "iv_out", p._inc_iv_counter(iv))
        seq = (get(_P + "sequence_number_out") + 1) & 0xFFFFFFFF
        if seq == 0 and not p._initial_kex_done:
            raise paramiko.SSHException("Sequence number rolled over during initial kex!")
        setattr(p, _P + "sequence_number_out", seq)
        p.write_all(out)
        sent_bytes = get(_P + "sent_bytes") + len(out)
        sent_packets = get(_P + "sent_packets") + 1
        setattr(p, _P + "sent_bytes", sent_bytes)
        setattr(p, _P + "sent_packets", sent_packets)
        if (sent_packets >= p.REKEY_PACKETS or sent_bytes >= p.REKEY_BYTES) and not get(_P + "need_rekey"):
            setattr(p, _P + "received_bytes_overflow", 0)
            setattr(p, _P + "received_packets_overflow", 0)
            p._trigger_rekey()
    return True

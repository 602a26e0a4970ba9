"""An SFTP server as the destination, over paramiko (remote.SftpRemote).

    target.py    the URL and the ssh config: where to connect
    session.py   connections and the SFTP sessions on them, errors mapped
    auth.py      host keys and authentication
    wire.py      the code that reaches into paramiko's private SFTP API
    ssh_send.py  channel data sent with one copy (paramiko's private packetizer)
    listing.py   the pipelined SFTP listing, and find over ssh (findlist.py)
    upload.py    one file: temp file, resume, pipelined or ranged writes
    batch.py     many small files pipelined together (upload_many)
    calls.py     small helpers over an SFTPClient's public API
    remote.py    SftpRemote: the rest of the remote contract on top of these

Importing this package does not import paramiko (the command line reads
findlist.WAYS at every start): SftpRemote is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconcile.remotes.sftp.remote import SftpRemote

__all__ = ["SftpRemote"]


def __getattr__(name: str):
    if name == "SftpRemote":
        from reconcile.remotes.sftp.remote import SftpRemote
        return SftpRemote
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""S3 and S3-compatible stores (AWS, MinIO, SeaweedFS, Ceph, R2, B2), over boto3.

Layout: s3://bucket[/prefix]; an object's key is prefix + "/" + relative path.
S3 has no directories: none are listed, mkdir/rmdir do nothing and empty
directories are not mirrored. Local names that are not valid UTF-8 cannot be
S3 keys: uploading one raises Permanent.

Every request costs the user money, so a run with nothing to do costs only
the listing. ListObjectsV2 returns no user metadata, so we keep a record
(state_dir/s3-record.msgpack) of key -> (size, etag, mtime_ns, xxh3, mode) for what
we wrote or looked at; a listed object whose size and ETag match it is known.
Only objects we have no record of get one HEAD, once.

Objects carry their mtime in user metadata "mtime" in rclone's format
(seconds since the epoch with a fraction), so a bucket filled by rclone is
recognised, plus our content hash "xxh3" (hex of xxh3_128). With --perms
the file mode goes in "mode" (octal st_mode, as rclone --metadata writes it).

    objects.py    keys, the metadata we write, the Record of one object
    client.py     the botocore client and its settings
    errors.py     botocore's errors -> the project's own (none leaves this package)
    record.py     the record of the bucket in the state folder
    listing.py    the listing in byte order, HEADs of unknown objects, stat
    body.py       request bodies read from the local file (progress, checks)
    upload.py     one file: a single PUT
    multipart.py  multipart: bounded window, resume, parts copied on the server
    moves.py      server-side copy, touch, move, delete
    quickcopy.py  a move's CopyObject requests without the client's per-call machinery
    remote.py     S3Remote: the remote contract on top of these

botocore is imported by this package only, so other remotes do not pay for it;
importing the package itself does not import it: S3Remote is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconcile.remotes.s3.listing import ListOrder
    from reconcile.remotes.s3.objects import format_mtime, parse_mtime, parse_url
    from reconcile.remotes.s3.remote import DEFAULT_TRANSFERS, S3Remote
    from reconcile.remotes.s3.upload import IN_MEMORY_MAX

# the names other modules and the tests take from reconcile.remotes.s3
_WHERE = {
    "S3Remote": "remote",
    "DEFAULT_TRANSFERS": "remote",
    "ListOrder": "listing",
    "IN_MEMORY_MAX": "upload",
    "format_mtime": "objects",
    "parse_mtime": "objects",
    "parse_url": "objects",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

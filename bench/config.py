"""The two sizes: full (by hand, figures committed) and small (CI)."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class Size:
    name: str
    runs: int
    scale: tuple[int, ...]  # local no-change trees
    sftp_first: int  # files of 1-32 KB
    sftp_nochange: int  # tiny files
    big: int  # bytes of the one large file
    rename: int  # files in the renamed folder
    s3_first: int
    hash_bytes: int
    profile: bool  # py-spy "where time goes"
    bw_rate: int = 4 << 20  # --bwlimit case: bytes per second...
    bw_seconds: int = 30  # ...for this long


FULL = Size("full", 3, (100_000, 300_000, 1_000_000), 10_000, 200_000, GIB, 500, 10_000, GIB, True)
SMALL = Size("small", 3, (2_000,), 300, 2_000, 32 << 20, 50, 300, 64 << 20, False, 2 << 20, 3)
SIZES = {"full": FULL, "small": SMALL}

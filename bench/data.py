"""Deterministic data sets: the same seed gives the same names, sizes,
bytes and mtimes, so two trees made alike are byte-for-byte mirrors."""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Callable

from bench.common import ROOT, log

BASE_MTIME = 1_700_000_000  # whole seconds: sftp keeps only seconds
POOL_SIZE = 1 << 20


def _pool(seed: int) -> bytes:
    return random.Random(seed).randbytes(POOL_SIZE + 64 * 1024)


def rel_path(i: int) -> str:
    """100 files per folder, 100 folders per top folder."""
    return f"t{i // 10000:03d}/d{(i // 100) % 100:02d}/f{i:07d}.bin"


def make_tree(root: str, files: int, min_size: int, max_size: int, seed: int,
              layout: Callable[[int], str] = rel_path) -> str:
    """write (once) a tree of `files` files; reused while its recipe matches.
    layout(i) is file i's relative path."""
    recipe = {"files": files, "min": min_size, "max": max_size, "seed": seed, "v": 2}
    if layout is not rel_path:
        recipe["layout"] = layout.__name__
    marker = root + ".recipe"
    if os.path.isdir(root) and _read(marker) == recipe:
        return root
    shutil.rmtree(root, ignore_errors=True)
    log(f"generating {files:,} files of {min_size}-{max_size} bytes in {root}")
    _write_tree(root, files, min_size, max_size, seed, layout)
    with open(marker, "w") as f:
        json.dump(recipe, f)
    return root


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_tree(root: str, files: int, min_size: int, max_size: int, seed: int,
                layout: Callable[[int], str]) -> None:
    rng = random.Random(seed)
    pool = _pool(seed)
    made: set[str] = set()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(files):
        rel = layout(i)
        parent = os.path.join(root, rel.rsplit("/", 1)[0])
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        size = rng.randint(min_size, max_size)
        off = rng.randrange(POOL_SIZE)
        head = b"%d\n" % i  # makes every file's content unique
        body = (head + pool[off:off + size])[:size]
        fd = os.open(os.path.join(root, rel), flags, 0o644)
        os.write(fd, body)
        t = (BASE_MTIME + i) * 1_000_000_000
        os.utime(fd, ns=(t, t))
        os.close(fd)
    _settle_dirs(root)


def _settle_dirs(root: str) -> None:
    """fixed folder mtimes, so rsync -a sees nothing to fix in twin trees."""
    t = BASE_MTIME * 1_000_000_000
    for dirpath, _, _ in os.walk(root, topdown=False):
        os.utime(dirpath, ns=(t, t))


def make_big_file(path: str, size: int, seed: int) -> str:
    """one large file of pseudo-random bytes (repeated 1 MiB pool + counter)."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    log(f"generating {size >> 20} MiB file {path}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pool = _pool(seed)[:POOL_SIZE]
    with open(path + ".part", "wb") as f:
        for n in range(size // POOL_SIZE):
            block = bytearray(pool)
            block[:8] = n.to_bytes(8, "little")  # no two MiB alike
            f.write(block)
        f.write(pool[: size % POOL_SIZE])
    os.utime(path + ".part", ns=(BASE_MTIME * 10**9,) * 2)
    os.replace(path + ".part", path)
    return path


def copy_tree(src: str, dst: str) -> None:
    """untimed mirror copy (keeps mtimes): cp -a is fast enough."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.system(f"cp -a '{src}' '{dst}'")


def scratch(*parts: str) -> str:
    path = os.path.join(ROOT, *parts)
    return path

"""hash_file reuses one read buffer per thread: hashes stay right when
threads hash many files of every size at once, as hash_needed does."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import xxhash

from reconcile.hashing import BUFFER, hash_file


def test_threads_hashing_many_files_get_each_file_right(tmp_path):
    rnd = random.Random(7)
    sizes = [0, 1, 4095, BUFFER - 1, BUFFER, BUFFER + 1, 3 * BUFFER + 17] + [rnd.randrange(70_000) for _ in range(200)]
    want = {}
    for i, size in enumerate(sizes):
        data = rnd.randbytes(size)
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        want[str(path)] = xxhash.xxh3_128(data).digest()
    paths = list(want) * 3
    rnd.shuffle(paths)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(hash_file, paths))
    assert got == [want[p] for p in paths]
    st = os.stat(paths[0])
    assert hash_file(paths[0], st.st_size, st.st_mtime_ns) == want[paths[0]]


def test_read_buffer_starts_on_a_page():
    # the kernel copies into a buffer 16 bytes past a page (a bytearray's) at half speed
    import ctypes
    import mmap

    from reconcile.hashing import _buffer

    buf = _buffer()
    assert len(buf) == BUFFER
    assert ctypes.addressof(ctypes.c_char.from_buffer(buf)) % mmap.PAGESIZE == 0


def test_small_files_are_hashed_on_one_thread_large_ones_on_two(tmp_path, monkeypatch):
    # two threads on small files fight over the GIL: 3.7x slower than one
    import threading

    from reconcile import engine
    from reconcile.engine import hashes
    from tests.mirror import run

    src = tmp_path / "src"
    src.mkdir()
    sizes = {f"small{i}": 100 + i for i in range(20)}
    sizes |= {f"big{i}": engine.HASH_THREADED_FROM + i for i in range(4)}
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    threads: dict[str, str] = {}
    real = hashes.hash_file

    def recorded(path, *a):
        threads[os.path.basename(path)] = threading.current_thread().name
        return real(path, *a)

    monkeypatch.setattr(hashes, "hash_file", recorded)
    result = run(src, str(tmp_path / "dst"), tmp_path / "state")
    assert result.outcome.complete
    assert set(threads) == set(sizes)
    main = threading.current_thread().name
    assert {threads[n] for n in sizes if n.startswith("small")} == {main}
    assert main not in {threads[n] for n in sizes if n.startswith("big")}
    for name in sizes:
        assert (tmp_path / "dst" / name).read_bytes() == (src / name).read_bytes()


def test_file_hasher_in_pieces_matches_and_a_short_file_has_no_digest(tmp_path):
    from reconcile.hashing import FileHasher

    for size in (0, 1, BUFFER, 3 * BUFFER + 17):
        data = os.urandom(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            h = FileHasher(fd, size)
            if size:
                h.step()  # a piece now, the rest in digest()
            assert h.digest() == xxhash.xxh3_128_digest(data)
            assert FileHasher(fd, size + 1).digest() is None  # shrank since it was listed
        finally:
            os.close(fd)

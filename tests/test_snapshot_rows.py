"""SnapshotWriter packs add_row's rows many at a time: the file must hold the
same bytes as packing each row alone, in order, whatever add() comes between."""

from __future__ import annotations

import msgpack
import pytest

from reconcile import snapshot
from reconcile.entry import DIR, FILE, LINK, Entry, row_of, row_path


def rows(n: int) -> list[tuple]:
    out = []
    for i in range(n):
        if i % 7 == 0:
            e = Entry(f"d{i:06d}", DIR, 0, 1_600_000_000_000_000_000 + i, inode=i, dev=1, mode=0o40755)
        elif i % 11 == 0:
            e = Entry(f"l{i:06d}", LINK, 0, None, target=f"t\udcff{i}")
        else:
            e = Entry(f"f{i:06d}\udcfe\n", FILE, i * 3, 1_700_000_000_123_456_789 + i, inode=10 + i, dev=1,
                      mode=0o100644, hash=bytes([i % 256]) * 16 if i % 2 else None)
        out.append(row_of(e))
    return out


def write(path, items: list, monkeypatch, at_once: int) -> bytes:
    monkeypatch.setattr(snapshot, "ROWS_AT_ONCE", at_once)
    w = snapshot.SnapshotWriter(str(path), {"source": "/src"})
    for item in items:
        w.add(item) if isinstance(item, Entry) else w.add_row(item)
    w.finish()
    assert w.count == len(items)
    return path.with_name(path.name + ".tmp").read_bytes()


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1023, 1024, 1025, 3000])
def test_rows_packed_together_are_the_bytes_of_rows_packed_alone(tmp_path, monkeypatch, n):
    items: list = rows(n)
    if n > 20:  # an Entry added between rows keeps its place
        items.insert(n // 2, Entry(f"f{n // 2:06d}~", FILE, 5, 1_700_000_000_000_000_000))
    one_by_one = write(tmp_path / "a", items, monkeypatch, 1)
    together = write(tmp_path / "b", items, monkeypatch, snapshot.ROWS_AT_ONCE)
    assert together == one_by_one
    # and the same as msgpack gives for each row alone, as the reader takes them
    pack = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape").pack
    head = len(snapshot.MAGIC) + len(pack({"version": snapshot.VERSION, "source": "/src"}))
    alone = b"".join(pack((row_path(r), *r[1:9])) for r in (row_of(i) if isinstance(i, Entry) else i for i in items))
    assert together[head:-snapshot.FOOTER.size] == alone
    path = tmp_path / "b"
    path.with_name("b.tmp").rename(path)
    back = [r[:9] for r in snapshot.read_rows(str(path))]
    assert back == [(row_of(i) if isinstance(i, Entry) else i)[:9] for i in items]

"""One suite every remote passes: local folder, real OpenSSH sshd, real SeaweedFS,
folders on real exFAT and NTFS disk images (FUSE).

A case is skipped only where the remote lacks the capability it needs.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash

from reconcile.entry import DIR, FILE, Entry, entry_key, is_temp_name
from reconcile.errors import NotFound
from reconcile.errors import ReconcileError, SourceChanged
from reconcile.remotes import open_remote, remote_class
from reconcile.remotes.retry import RetryingRemote, RetryPolicy
from tests.proxied import proxied  # noqa: F401 (a fixture)
from tests.storage import plant_resume_temps, plant_temps, read_dest, resume_handles


@pytest.fixture
def dest(any_dest):
    return any_dest


@pytest.fixture
def remote(dest):
    r = open_remote(dest.url, dest.options)
    yield r
    r.close()


def write(tmp_path, name: str, data: bytes, mtime: int = 1_600_000_000) -> tuple[str, Entry]:
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, (mtime, mtime))
    s = p.stat()
    return str(p), Entry(name, FILE, s.st_size, s.st_mtime_ns)


def put(remote, tmp_path, path: str, data: bytes, mtime: int = 1_600_000_000) -> Entry:
    local, e = write(tmp_path, path.replace("/", "_"), data, mtime)
    return remote.upload(local, path, Entry(path, FILE, e.size, e.mtime_ns))


def files(remote) -> dict[str, int]:
    return {e.path: e.size for e in remote.list() if e.kind == FILE}


def read_back(remote, tmp_path, path: str) -> bytes:
    out = tmp_path / "download.bin"
    remote.download(path, str(out))
    return out.read_bytes()


def test_empty_root_lists_nothing(remote):
    assert list(remote.list()) == []


def test_upload_creates_parents_and_keeps_content_and_mtime(remote, tmp_path):
    data = os.urandom(70_000)
    got = put(remote, tmp_path, "a/b/c.bin", data, mtime=1_650_000_000)
    assert got.size == len(data)
    assert files(remote) == {"a/b/c.bin": len(data)}
    listed = {e.path: e for e in remote.list()}["a/b/c.bin"]
    assert listed.mtime_ns // 1_000_000_000 == 1_650_000_000
    assert read_back(remote, tmp_path, "a/b/c.bin") == data


def test_upload_of_empty_file(remote, tmp_path):
    put(remote, tmp_path, "empty", b"")
    assert files(remote) == {"empty": 0}


def test_overwrite_replaces_content_and_leaves_no_temp(remote, tmp_path):
    put(remote, tmp_path, "x.txt", b"old version")
    put(remote, tmp_path, "x.txt", b"new")
    assert files(remote) == {"x.txt": 3}
    assert read_back(remote, tmp_path, "x.txt") == b"new"
    assert not any(is_temp_name(e.path) for e in remote.list())


def test_list_is_in_sort_key_order(remote, tmp_path):
    if remote.capabilities.case_insensitive:
        pytest.skip("'A' and 'a/x' are one name on a case-insensitive remote (exFAT)")
    for p in ["a/x", "a-b", "a0", "b/c/d", "b/c-d", "A", "a/y/z"]:
        put(remote, tmp_path, p, b"1")
    listed = list(remote.list())
    assert [entry_key(e) for e in listed] == sorted(entry_key(e) for e in listed)
    assert set(files(remote)) == {"a/x", "a-b", "a0", "b/c/d", "b/c-d", "A", "a/y/z"}


def test_stat(remote, tmp_path):
    put(remote, tmp_path, "d/f", b"12345")
    e = remote.stat("d/f")
    assert e is not None and e.size == 5 and e.kind == FILE
    assert remote.stat("d/missing") is None


def test_move_file_to_new_parent(remote, tmp_path):
    put(remote, tmp_path, "a/f", b"payload")
    remote.move("a/f", "b/c/g")
    assert files(remote) == {"b/c/g": 7}
    assert read_back(remote, tmp_path, "b/c/g") == b"payload"


def test_move_file_over_existing_file(remote, tmp_path):
    put(remote, tmp_path, "f1", b"one")
    put(remote, tmp_path, "f2", b"second")
    remote.move("f1", "f2")
    assert files(remote) == {"f2": 3}
    assert read_back(remote, tmp_path, "f2") == b"one"


def test_move_keeps_mtime(remote, tmp_path):
    put(remote, tmp_path, "m", b"x", mtime=1_500_000_000)
    remote.move("m", "n")
    assert {e.path: e for e in remote.list()}["n"].mtime_ns // 1_000_000_000 == 1_500_000_000


def test_move_missing_source_is_not_found(remote):
    with pytest.raises(NotFound):
        remote.move("nope", "other")


def test_move_directory(remote, tmp_path):
    for i in range(5):
        put(remote, tmp_path, f"old/sub/f{i}", bytes([i]) * (i + 1))
    remote.move("old", "new/place")
    assert files(remote) == {f"new/place/sub/f{i}": i + 1 for i in range(5)}


def test_delete_file_and_missing_file(remote, tmp_path):
    put(remote, tmp_path, "a/f", b"1")
    put(remote, tmp_path, "a/g", b"2")
    remote.delete("a/f")
    remote.delete("a/f")
    remote.delete("never/was")
    assert files(remote) == {"a/g": 1}


def test_empty_directories(remote):
    if not remote.capabilities.empty_dirs:
        pytest.skip("remote has no directories of its own")
    remote.mkdir("e/f")
    remote.mkdir("e/f")
    kinds = {e.path: e.kind for e in remote.list()}
    assert kinds == {"e": DIR, "e/f": DIR}
    remote.rmdir("e/f")
    remote.rmdir("e/f")
    assert {e.path for e in remote.list()} == {"e"}


def test_odd_names(remote, tmp_path):
    names = [
        "with space .txt",
        unicodedata.normalize("NFC", "café"),
        unicodedata.normalize("NFD", "café") + "-nfd",
        "x" * 250,
        "semi;colon,comma'quote",
        "percent%20plus+",
    ]
    for n in names:
        put(remote, tmp_path, f"d/{n}", n.encode())
    assert set(files(remote)) == {f"d/{n}" for n in names}
    for n in names:
        assert read_back(remote, tmp_path, f"d/{n}") == n.encode()


def test_download_from_offset(remote, tmp_path):
    data = os.urandom(300_000)
    put(remote, tmp_path, "big", data)
    out = tmp_path / "partial"
    out.write_bytes(data[:100_000])
    remote.download("big", str(out), offset=100_000)
    assert out.read_bytes() == data


def test_upload_reports_progress(remote, tmp_path):
    seen = []
    local, e = write(tmp_path, "p", os.urandom(200_000))
    remote.upload(local, "p", e, progress=seen.append)
    assert sum(seen) == 200_000


def test_list_of_missing_root_is_not_found(dest):
    if not remote_class(dest.url).CAPABILITIES.empty_dirs:
        pytest.skip("a bucket-like remote has no folders: a prefix always exists")
    url = dest.url.rstrip("/") + "/does-not-exist"
    r = open_remote(url, dest.options)
    try:
        with pytest.raises(NotFound):
            list(r.list())
    finally:
        r.close()


def test_remove_temp_files_leaves_real_files(remote, dest, tmp_path):
    put(remote, tmp_path, "keep/me", b"1")
    planted = plant_temps(dest)  # what a killed run leaves, written straight to storage
    assert len(read_dest(dest).temps) == planted
    assert remote.remove_temp_files() == planted
    stored = read_dest(dest)
    assert stored.temps == [] and stored.files == {"keep/me": b"1"}
    assert files(remote) == {"keep/me": 1}


def test_upload_returns_the_hash_of_what_it_sent_or_none(remote, tmp_path):
    # the journal records it as the file's hash: never one of other bytes
    # (a local folder copies without reading: None)
    for name, size in (("small", 5_000), ("larger", 3 << 20)):
        data = os.urandom(size)
        local, e = write(tmp_path, name, data)
        assert remote.upload(local, name, e).hash in (None, xxhash.xxh3_128_digest(data))


def test_a_source_changing_while_sent_never_leaves_a_mix_under_its_name(remote, tmp_path):
    # the second half is rewritten once the first bytes have gone: a remote that
    # did not notice would hold the old first half and the new second half
    size = 10 << 20
    old, new = os.urandom(size), os.urandom(size // 2)
    local, e = write(tmp_path, "changing", old)
    changed = []

    def progress(n: int) -> None:
        if not changed:
            changed.append(n)
            with open(local, "r+b") as f:
                f.seek(size // 2)
                f.write(new)
            os.utime(local, (1_600_000_100, 1_600_000_100))

    try:
        got = remote.upload(local, "changing", e, progress=progress)
    except SourceChanged:
        assert remote.stat("changing") is None
    else:
        # read whole before it was sent (S3 below 8 MiB): the version the plan saw
        assert read_back(remote, tmp_path, "changing") == old and got.size == size
    assert changed
    assert not any(is_temp_name(e.path) for e in remote.list())


def test_a_folder_is_never_moved_into_an_existing_one(remote, tmp_path):
    caps = remote.capabilities
    if not (caps.dir_move and caps.empty_dirs):
        pytest.skip("the remote moves no folder in one call")
    put(remote, tmp_path, "a/f", b"1")
    put(remote, tmp_path, "b/g", b"2")
    with pytest.raises(ReconcileError) as info:
        remote.move("a", "b")
    assert not isinstance(info.value, NotFound)
    assert files(remote) == {"a/f": 1, "b/g": 1}


def test_a_folder_is_not_deleted_as_a_file(remote, tmp_path):
    if not remote.capabilities.empty_dirs:
        pytest.skip("remote has no directories of its own")
    put(remote, tmp_path, "d/f", b"1")
    with pytest.raises(ReconcileError):
        remote.delete("d")
    assert files(remote) == {"d/f": 1}


@dataclass
class Small:
    key: int
    local_path: str
    path: str
    entry: Entry
    hash: bytes | None = None


def test_upload_many_reports_each_file_once_with_its_hash(remote, tmp_path):
    items, data = [], {}
    for i in range(20):
        path = f"many/{i % 3}/f{i}"
        data[path] = os.urandom(100 + i)
        local, e = write(tmp_path, f"m{i}", data[path])
        items.append(Small(i, local, path, Entry(path, FILE, e.size, e.mtime_ns)))
    reported: list[tuple[int, object]] = []
    remote.upload_many(iter(items), lambda item, error: reported.append((item.key, error)))
    assert sorted(reported) == [(i, None) for i in range(20)]
    assert all(item.hash in (None, xxhash.xxh3_128_digest(data[item.path])) for item in items)
    assert files(remote) == {p: len(d) for p, d in data.items()}
    for p in ("many/0/f0", "many/1/f19"):
        assert read_back(remote, tmp_path, p) == data[p]


def test_upload_many_reports_an_unreadable_file_and_sends_the_rest(remote, tmp_path):
    local, e = write(tmp_path, "ok", b"fine")
    items = [Small(0, str(tmp_path / "src" / "gone"), "gone", Entry("gone", FILE, 4, e.mtime_ns)),
             Small(1, local, "ok", Entry("ok", FILE, e.size, e.mtime_ns))]
    reported: dict[int, object] = {}
    remote.upload_many(items, lambda item, error: reported.setdefault(item.key, error))
    assert isinstance(reported[0], ReconcileError) and reported[1] is None
    assert files(remote) == {"ok": 4}


def test_move_many_and_delete_many(remote, tmp_path):
    for i in range(4):
        put(remote, tmp_path, f"from/f{i}", bytes([i]) * (i + 1))
    remote.move_many([(f"from/f{i}", f"to/f{i}") for i in range(4)])
    assert files(remote) == {f"to/f{i}": i + 1 for i in range(4)}
    remote.delete_many(["to/f0", "to/f1", "to/never-was"])
    assert files(remote) == {"to/f2": 3, "to/f3": 4}


def test_remove_temp_files_keeps_the_resume_handles_it_is_given(remote, dest):
    if not remote.capabilities.resumable:
        pytest.skip("the remote resumes no upload: it gives out no resume handles")
    # SFTP's first use probes the server's disk and removes its probe files without waiting: they are
    # gone once the next answer comes (one session serves in turn); the storage is read here directly
    remote.stat("")
    keep = plant_resume_temps(dest)
    assert len(resume_handles(dest)) == 2 and keep in resume_handles(dest)
    assert remote.remove_temp_files(frozenset({keep})) == 1
    assert resume_handles(dest) == {keep}


def test_an_upload_cut_mid_way_resumes_exactly_and_leaves_nothing_partial_under_its_name(dest, proxied, tmp_path):
    # the connection cut (and the server gone) mid-upload, then the same upload with the resume
    # handle the cut one checkpointed: the file exact, never partial under its name, and what
    # was stored before the cut not sent again (SFTP: the confirmed offset; S3: the stored parts)
    if not remote_class(dest.url).CAPABILITIES.resumable:
        pytest.skip("the remote resumes no upload: a cut one starts again (the killed-process case below)")
    reached, proxy = proxied
    # S3 is reached through the proxy by its endpoint, SFTP by the URL's port; each ignores the other's
    options = dataclasses.replace(reached.options, s3=dataclasses.replace(
        reached.options.s3, endpoint=f"http://127.0.0.1:{proxy.port}"))
    size = 48 << 20  # over both remotes' steps: SFTP checkpoints every 16 MiB, S3 sends 8 MiB parts above 32
    data = os.urandom(size)
    local, e = write(tmp_path, "big", data)
    entry = Entry("dir/big", FILE, e.size, e.mtime_ns)
    remote = open_remote(reached.url, options)
    try:
        list(remote.list())  # connected before the bytes are counted
        marks: list[dict] = []
        proxy.drop_after(36 << 20, then_refuse=True)
        with pytest.raises(ReconcileError):
            remote.upload(local, "dir/big", entry, checkpoint=marks.append)
        assert marks, "no resume handle before the cut"
        assert read_dest(reached).files == {}  # in storage, not only in a listing
        proxy.refuse(False)
        retrying = RetryingRemote(remote, RetryPolicy(60, sleep=lambda _: None))  # as the engine calls it
        assert retrying.stat("dir/big") is None

        before = proxy.bytes_up
        sent = retrying.upload(local, "dir/big", entry, resume=marks[-1], checkpoint=marks.append)
        assert proxy.bytes_up - before < size  # resumed, not sent whole again
        assert sent.size == size and sent.hash in (None, xxhash.xxh3_128_digest(data))
        assert files(retrying) == {"dir/big": size}
        stored = read_dest(reached)
        assert stored.files == {"dir/big": data} and stored.temps == []  # the resumed upload left nothing
    finally:
        remote.close()


KILLED_UPLOAD = r"""
import os, pickle, sys, time
from reconcile.remotes import open_remote
url, options, local, path, entry, marker = pickle.loads(open(sys.argv[1], "rb").read())
remote = open_remote(url, options)
def progress(n):
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(600)  # killed here, part of the file sent
remote.upload(local, path, entry, progress=progress)
"""


def test_an_upload_killed_mid_way_leaves_nothing_under_its_name_and_the_next_is_exact(remote, dest, tmp_path):
    # a local folder has no connection to cut: its process is killed instead (every remote here)
    size = 24 << 20  # over a local copy's 8 MiB step, under S3's multipart threshold: one PUT cut mid-body
    data = os.urandom(size)
    local, e = write(tmp_path, "big", data)
    entry = Entry("dir/big", FILE, e.size, e.mtime_ns)
    job, marker = tmp_path / "job.pickle", tmp_path / "part-sent"
    job.write_bytes(pickle.dumps((dest.url, dest.options, local, "dir/big", entry, str(marker))))
    repo = str(Path(__file__).resolve().parent.parent)
    child = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD, str(job)], cwd=repo,
                             env={**os.environ, **dest.env, "PYTHONPATH": repo})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the upload reported no progress (exit {child.poll()})"
    finally:
        child.kill()
        child.wait()
    assert read_dest(dest).files == {}  # in storage, not only in a listing
    assert remote.stat("dir/big") is None

    sent = remote.upload(local, "dir/big", entry)
    assert sent.size == size
    assert files(remote) == {"dir/big": size}
    remote.remove_temp_files()  # what the killed one left, as the next run does
    stored = read_dest(dest)
    assert stored.files == {"dir/big": data} and stored.temps == []

"""The pipelined path for many small files (SftpRemote.upload_many, used by the
executor), against the real sshd: it is the path taken, it ends in an exact
mirror, small files leave no checkpoint in the journal, and a connection cut
mid-batch never leaves a partial file under its real name."""

from __future__ import annotations

import os
import random
from pathlib import Path

import paramiko
import xxhash
import pytest

from reconcile import journal as journal_mod
from reconcile.apply import Executor, SmallUpload
from reconcile.entry import FILE, TEMP_MARK, Entry, is_temp_name
from reconcile.errors import NotFound, Permanent, SourceChanged, Transient
from reconcile.plan import Op
from reconcile.remotes.sftp import batch as batch_mod
from reconcile.remotes.retry import RetryingRemote, RetryPolicy
from reconcile.remotes.sftp import SftpRemote
from tests.mirror import SilentReporter, count_calls, tree, write
from tests.test_sftp import local_file, no_agent_no_config, proxied, remote, root  # noqa: F401

MTIME = 1_650_000_000_000_000_000


def make_src(src: Path, n: int, seed: int = 1, big: int = 0) -> dict[str, bytes]:
    """n small files over nested folders, plus `big` files above the batch size."""
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        rel = f"a{i % 3}/b{i % 5}/f{i}.bin" if i % 4 else f"top{i}.bin"
        files[rel] = rng.randbytes(rng.randint(0, 40_000))
    for i in range(big):
        files[f"big/g{i}.bin"] = rng.randbytes(batch_mod.SMALL_FILE + 1000 + i)
    for rel, data in files.items():
        write(src / rel, data, MTIME + len(data) * 1_000_000_000)
    return files


def upload_ops(src: Path, files: dict[str, bytes]) -> list[Op]:
    ops = []
    for rel in sorted(files):
        st = os.stat(src / rel)
        e = Entry(rel, FILE, st.st_size, st.st_mtime_ns, mode=st.st_mode)
        ops.append(Op("upload", rel, FILE, size=st.st_size, reason="new", entry=e))
    return ops


def items_for(src: Path, files: dict[str, bytes]) -> list[SmallUpload]:
    return [SmallUpload(i, str(src / op.path), op.path, op.entry) for i, op in enumerate(upload_ops(src, files))]


def test_executor_sends_small_files_pipelined_without_checkpoints(remote, root, tmp_path, monkeypatch):
    src = tmp_path / "src-tree"
    files = make_src(src, 120, big=1)
    ops = upload_ops(src, files)
    singles = count_calls(monkeypatch, remote, "upload")
    batches = count_calls(monkeypatch, remote, "upload_many")
    j = journal_mod.Journal(str(tmp_path / "journal"))
    j.start({"plan_id": "t"}, ops)
    reporter = SilentReporter()
    retrying = RetryingRemote(remote, RetryPolicy(5, sleep=lambda _: None))
    outcome = Executor(retrying, str(src), j, reporter, transfers=3).run(ops, list(range(len(ops))))
    j.close()
    assert outcome.complete and reporter.failed == []
    assert 1 <= len(batches) <= 3  # one stream per worker
    assert [a[1] for a in singles] == ["big/g0.bin"]  # only the file above the batch size
    pending = journal_mod.load(j.path)
    assert pending.done == set(range(len(ops)))
    assert pending.resume == {}  # no checkpoint for any file below the checkpoint size
    assert tree(root) == tree(src)  # bytes and whole-second mtimes


def test_mid_size_file_sends_no_checkpoint(remote, root, tmp_path):
    data = os.urandom(3 << 20)  # above the batch size, below the checkpoint size
    local, e = local_file(tmp_path, "mid", data)
    marks: list[dict] = []
    remote.upload(local, "mid", e, checkpoint=marks.append)
    assert marks == []
    assert (root / "mid").read_bytes() == data


def test_folders_made_on_the_way_and_perms_and_mtime(sftp_dest, root, tmp_path):
    sftp_dest.options.extra["perms"] = True
    r = SftpRemote.from_url(sftp_dest.url, sftp_dest.options)
    try:
        local, e = local_file(tmp_path, "x", b"abc", mtime=1_234_567_890)
        e.mode = 0o100640
        deep = SmallUpload(0, local, "p/q/r/x", e)
        flat = SmallUpload(1, local, "x", e)
        got: list = []
        r.upload_many([deep, flat], lambda item, err: got.append((item.key, err)))
    finally:
        r.close()
    assert sorted(got) == [(0, None), (1, None)]
    for p in (root / "x", root / "p/q/r/x"):
        assert p.read_bytes() == b"abc"
        assert p.stat().st_mtime == 1_234_567_890
        assert p.stat().st_mode & 0o777 == 0o640
    assert not any(is_temp_name(n) for n in os.listdir(root / "p/q/r"))


def test_one_bad_file_fails_alone(remote, root, tmp_path):
    src = tmp_path / "src-tree"
    files = make_src(src, 20)
    items = items_for(src, files)
    blocked = items[3]
    (root / blocked.path).mkdir(parents=True)  # a folder where the file goes
    (root / blocked.path / "inside").write_bytes(b"x")
    gone = items[5]
    os.unlink(gone.local_path)
    changed = items[7]
    write(Path(changed.local_path), b"other", MTIME)
    got: dict[int, object] = {}
    remote.upload_many(items, lambda item, err: got.setdefault(item.key, err))
    assert sorted(got) == list(range(len(items)))
    assert isinstance(got[blocked.key], Permanent)
    assert isinstance(got[gone.key], NotFound)
    assert isinstance(got[changed.key], SourceChanged)
    bad = {blocked.key, gone.key, changed.key}
    for item in items:
        if item.key not in bad:
            assert got[item.key] is None
            assert (root / item.path).read_bytes() == files[item.path]
    remote.remove_temp_files()
    assert not any(is_temp_name(p.name) for p in root.rglob("*"))


def test_cut_mid_batch_leaves_no_partial_file_then_resumes(proxied, sftp_proxy, root, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_mod, "BATCH_FILES", 16)
    monkeypatch.setattr(batch_mod, "BATCH_FILES_MAX", 16)  # whatever the server keeps open
    src = tmp_path / "src-tree"
    files = make_src(src, 300, seed=2)
    items = items_for(src, files)
    list(proxied.list())  # connect before counting
    sftp_proxy.drop_after(2 << 20)
    reported: dict[int, object] = {}
    with pytest.raises(Transient):
        proxied.upload_many(items, lambda item, err: reported.setdefault(item.key, err))
    assert 0 < len(reported) < len(items)
    assert all(err is None for err in reported.values())
    on_remote = {k: v for k, v in tree(root, with_mtime=False).items() if v[0] == "f"}
    for path, entry in on_remote.items():
        if not is_temp_name(Path(path).name):
            assert entry == ("f", files[path]), path  # whole, never partial
    assert {items[k].path for k in reported} <= set(on_remote)

    # the retrying wrapper, as the executor uses it, gets the rest through another cut
    sftp_proxy.drop_after(1 << 20)
    rest = [it for it in items if it.key not in reported]
    more: dict[int, object] = {}
    retrying = RetryingRemote(proxied, RetryPolicy(30, sleep=lambda _: None))
    retrying.upload_many(rest, lambda item, err: more.setdefault(item.key, err) if item.key not in more
                         else pytest.fail(f"{item.path} reported twice"))
    assert sorted(more) == sorted(it.key for it in rest)
    assert all(err is None for err in more.values())
    assert sftp_proxy.connections >= 3
    proxied.remove_temp_files()
    got = tree(root, with_mtime=False)
    assert {p: v for p, v in got.items() if v[0] == "f"} == {p: ("f", d) for p, d in files.items()}


def test_engine_first_sync_over_sftp_is_an_exact_mirror(sftp_dest, root, tmp_path):
    from tests.mirror import run

    src = tmp_path / "src-tree"
    make_src(src, 200, seed=3, big=1)
    (src / "empty-dir").mkdir()
    result = run(src, sftp_dest.url, tmp_path / "state", options=sftp_dest.options)
    assert result.outcome.complete
    assert tree(root) == tree(src)  # folders, bytes and mtimes
    again = run(src, sftp_dest.url, tmp_path / "state", mode="plan", options=sftp_dest.options)
    assert not again.plan.ops


def test_a_refused_login_fails_each_small_upload_once(sftp_dest, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    sftp_dest.options.sftp.key = str(tmp_path / "stranger")
    src = tmp_path / "src-tree"
    files = make_src(src, 6)
    ops = upload_ops(src, files)
    j = journal_mod.Journal(str(tmp_path / "journal"))
    j.start({"plan_id": "t"}, ops)
    reporter = SilentReporter()
    r = SftpRemote.from_url(sftp_dest.url, sftp_dest.options)
    try:
        outcome = Executor(RetryingRemote(r, RetryPolicy(5, sleep=lambda _: None)), str(src), j, reporter,
                           transfers=2).run(ops, list(range(len(ops))))
    finally:
        r.close()
        j.close()
    assert outcome.count("failed") == len(ops)
    assert all("authentication failed" in line for line in reporter.failed)


def test_first_sync_into_a_missing_root_stays_pipelined(sftp_dest, root, tmp_path, monkeypatch):
    # the root and its parent do not exist yet: a first sync must not fall back to one file at a time
    src = tmp_path / "src-tree"
    files = make_src(src, 60)
    url = sftp_dest.url.rstrip("/") + "/new/deeper"
    r = SftpRemote.from_url(url, sftp_dest.options)
    singles = count_calls(monkeypatch, r, "upload")
    results: list = []
    try:
        r.upload_many(items_for(src, files), lambda item, err: results.append((item.path, err)))
    finally:
        r.close()
    assert sorted(results) == [(p, None) for p in sorted(files)]
    assert singles == []
    assert tree(root / "new" / "deeper") == tree(src)


def test_workers_starting_together_make_a_missing_root_once(sftp_dest, root, tmp_path, monkeypatch):
    # every upload worker starts with upload_many at once; their mkdirs of one root must not race
    import threading
    import time

    src = tmp_path / "src-tree"
    files = make_src(src, 40)
    r = SftpRemote.from_url(sftp_dest.url.rstrip("/") + "/new/deeper", sftp_dest.options)
    real = paramiko.SFTPClient.mkdir

    def slow_mkdir(self, *a, **kw):
        time.sleep(0.2)  # widen the window between looking (lstat) and making
        return real(self, *a, **kw)

    monkeypatch.setattr(paramiko.SFTPClient, "mkdir", slow_mkdir)
    items = items_for(src, files)
    results: list = []
    errors: list = []
    start = threading.Barrier(4)

    def worker(share):
        start.wait()
        try:
            r.upload_many(share, lambda item, err: results.append((item.path, err)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(items[k::4],)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        r.close()
    assert errors == []
    assert sorted(results) == [(p, None) for p in sorted(files)]
    assert tree(root / "new" / "deeper") == tree(src)


def test_a_root_missing_when_listed_is_not_walked_for_temp_files_after(sftp_dest, root, tmp_path, monkeypatch):
    # a first sync made the whole tree itself: walking it for temps cost ~0.2 s on 10,000 files
    src = tmp_path / "src-tree"
    files = make_src(src, 30)
    r = SftpRemote.from_url(sftp_dest.url.rstrip("/") + "/new", sftp_dest.options)
    try:
        with pytest.raises(NotFound):
            list(r.list_rows())
        results: list = []
        r.upload_many(items_for(src, files), lambda item, err: results.append(err))
        assert results == [None] * len(files)
        reads = count_calls(monkeypatch, r, "_read_dir")
        assert r.remove_temp_files() == 0
        assert reads == []
        # a later listing of the tree, now there, is what the next cleanup goes by
        (root / "new" / f"{TEMP_MARK}left").write_bytes(b"x")
        list(r.list_rows())
        assert r.remove_temp_files() == 1
    finally:
        r.close()
    assert tree(root / "new") == tree(src)


def snapshot_hashes(src: Path, url: str, state: Path) -> dict[str, bytes | None]:
    from reconcile import snapshot
    from reconcile.engine import Run, RunOptions
    from reconcile.entry import entry_of

    path = Run(str(src), url, RunOptions(state_dir=str(state)), SilentReporter()).state.snapshot
    return {e.path: e.hash for e in map(entry_of, snapshot.read_rows(path)) if e.kind == FILE}


def test_a_first_sync_hashes_files_as_it_sends_them_and_finds_a_rename_after(sftp_dest, root, tmp_path,
                                                                              monkeypatch):
    # nothing on the remote to pair a new file with: no file is read before it is sent,
    # yet the snapshot gets every hash, and the next run finds a copied-and-deleted file by it
    from reconcile.engine import hashes
    from tests.mirror import run

    src, state = tmp_path / "src-tree", tmp_path / "state"
    files = make_src(src, 60, seed=5, big=1)  # small ones pipelined, one sent as a single stream
    read = count_calls(monkeypatch, hashes, "hash_file")  # --checksum's reads go through it too
    result = run(src, sftp_dest.url, state, options=sftp_dest.options)
    assert result.outcome.complete and read == []
    want = {p: xxhash.xxh3_128_digest(d) for p, d in files.items()}
    assert snapshot_hashes(src, sftp_dest.url, state) == want

    old = src / "big" / "g0.bin"
    st = old.stat()
    write(src / "moved" / "copy.bin", old.read_bytes(), st.st_mtime_ns)  # a new inode
    old.unlink()
    again = run(src, sftp_dest.url, state, options=sftp_dest.options, delete=True)
    assert [(o.op, o.path, o.to) for o in again.plan.ops if o.op in ("move", "upload")] == \
        [("move", "big/g0.bin", "moved/copy.bin")]
    assert tree(root) == tree(src)

"""Retry with backoff around any remote, so no remote retries on its own."""

from __future__ import annotations

import random
import time
from typing import BinaryIO, Callable, Iterable, Iterator, TypeVar

from reconcile.entry import Entry
from reconcile.errors import DestinationFull, Transient
from reconcile.remotes.base import Capabilities, NetStats, Progress, Remote

T = TypeVar("T")


class RetryPolicy:
    def __init__(self, retry_for: float, on_retry: Callable[[str, Exception, float], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.retry_for = retry_for
        self.on_retry = on_retry
        self.sleep = sleep

    def run(self, fn: Callable[[], T], what: str) -> T:
        deadline = None
        delay = 0.5
        while True:
            try:
                return fn()
            except Transient as exc:
                if isinstance(exc, DestinationFull):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.retry_for
                if now >= deadline:
                    raise
                wait = min(delay, deadline - now) * (0.8 + 0.4 * random.random())
                if self.on_retry:
                    self.on_retry(what, exc, wait)
                self.sleep(wait)
                delay = min(delay * 2, 30.0)


def retry_message(what: str, exc: Exception, wait: float) -> str:
    return f"{what}: {exc}; retrying in {wait:.1f}s"


class RetryingRemote(Remote):
    """Wraps a remote; every call retries Transient errors, written out method
    by method (restic's backend_retry.go). An upload is retried from the last
    checkpoint it reported, so confirmed bytes are not resent."""

    def __init__(self, remote: Remote, policy: RetryPolicy) -> None:
        self._remote = remote
        self.policy = policy
        self.url = remote.url

    @property
    def capabilities(self) -> Capabilities:
        # a local folder probes its file system on first use, an SFTP server its disk: retried
        # like any call, so a server still waking up is waited for as the listing would be
        return self.policy.run(lambda: self._remote.capabilities, "check the destination")

    @property
    def batch_max_size(self) -> int:  # type: ignore[override]
        return self._remote.batch_max_size

    def _run(self, fn: Callable[[], T], what: str) -> T:
        return self.policy.run(fn, what)

    def list(self) -> Iterator[Entry]:
        # consumed lazily by the merge: the engine retries the whole merge
        return self._remote.list()

    def list_rows(self) -> Iterator[tuple]:
        # only the start is retried (a local folder checks its root there); the
        # rows are consumed lazily by the merge, which the engine retries whole
        return self._run(self._remote.list_rows, "list_rows ")

    def stat(self, path: str) -> Entry | None:
        return self._run(lambda: self._remote.stat(path), f"stat {path}")

    def upload(self, local_path, path, entry, progress=None, resume=None, checkpoint=None):
        state = {"resume": resume}

        def remember(s: dict) -> None:
            state["resume"] = s
            if checkpoint:
                checkpoint(s)

        return self.policy.run(
            lambda: self._remote.upload(local_path, path, entry, progress, state["resume"], remember),
            f"upload {path}")

    def upload_many(self, items, done, progress=None) -> None:
        """the remote's upload_many, retried: items it took but never reported
        are handed to it again first. The retry clock restarts whenever an
        attempt finished something before it failed."""
        source = iter(items)
        live: dict[int, object] = {}  # taken, not yet reported, in order
        finished = [0]

        def feed(again: list):
            yield from again
            for item in source:
                live[id(item)] = item
                yield item

        def report(item, error) -> None:
            live.pop(id(item), None)
            finished[0] += 1
            done(item, error)

        def attempt() -> bool:
            before = finished[0]
            try:
                self._remote.upload_many(feed(list(live.values())), report, progress)
            except Transient:
                if finished[0] == before:
                    raise
                return False
            return True

        while not self.policy.run(attempt, "upload"):
            pass

    def touch(self, path: str, entry: Entry) -> None:
        self._run(lambda: self._remote.touch(path, entry), f"touch {path}")

    def symlink(self, target: str, path: str) -> None:
        self._run(lambda: self._remote.symlink(target, path), f"symlink {target}")

    def mkdir(self, path: str) -> None:
        self._run(lambda: self._remote.mkdir(path), f"mkdir {path}")

    def move(self, src: str, dst: str) -> None:
        self._run(lambda: self._remote.move(src, dst), f"move {src}")

    def move_many(self, pairs: list[tuple[str, str]]) -> None:
        self._run(lambda: self._remote.move_many(pairs), f"move_many {pairs}")

    def delete(self, path: str) -> None:
        self._run(lambda: self._remote.delete(path), f"delete {path}")

    def delete_many(self, paths: Iterable[str]) -> None:
        self._run(lambda: self._remote.delete_many(paths), f"delete_many {paths}")

    def rmdir(self, path: str) -> None:
        self._run(lambda: self._remote.rmdir(path), f"rmdir {path}")

    def download(self, path: str, local_path: "str | BinaryIO", progress: Progress | None = None, offset: int = 0,
                 limit: int | None = None) -> Entry:
        return self._run(lambda: self._remote.download(path, local_path, progress, offset, limit),
                         f"download {path}")

    def remove_temp_files(self, keep: frozenset[str] = frozenset()) -> int:
        return self._run(lambda: self._remote.remove_temp_files(keep), "remove_temp_files ")

    def net_stats(self) -> NetStats | None:
        return self._remote.net_stats()  # counters: nothing to retry

    def link_bound(self) -> bool:
        return self._remote.link_bound()  # a measurement: nothing to retry

    def delta_note(self) -> str | None:
        return self._remote.delta_note()  # what the remote knows: nothing to retry

    def forget_connections(self) -> None:
        self._run(self._remote.forget_connections, "forget_connections ")

    def close(self) -> None:
        self._remote.close()

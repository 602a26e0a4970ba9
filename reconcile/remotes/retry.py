"""Retry with backoff around any remote, so no remote retries on its own."""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from reconcile.errors import Transient

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


class RetryingRemote:
    """Wraps a remote; every call retries Transient errors. An upload is retried
    from the last checkpoint it reported, so confirmed bytes are not resent."""

    def __init__(self, remote, policy: RetryPolicy) -> None:
        self._remote = remote
        self.policy = policy
        self.url = remote.url

    @property
    def capabilities(self):
        return self._remote.capabilities  # a local folder probes its file system on first use

    def __getattr__(self, name: str):
        if name == "upload_many":
            getattr(self._remote, name)  # AttributeError where the remote has none
            return self._upload_many
        attr = getattr(self._remote, name)
        if not callable(attr) or name in ("list", "close"):
            return attr
        return lambda *a, **kw: self.policy.run(lambda: attr(*a, **kw), f"{name} {a[0] if a else ''}")

    def list(self):
        # consumed lazily by the merge: the engine retries the whole merge
        return self._remote.list()

    def upload(self, local_path, path, entry, progress=None, resume=None, checkpoint=None):
        state = {"resume": resume}

        def remember(s: dict) -> None:
            state["resume"] = s
            if checkpoint:
                checkpoint(s)

        return self.policy.run(
            lambda: self._remote.upload(local_path, path, entry, progress, state["resume"], remember),
            f"upload {path}")

    def _upload_many(self, items, done, progress=None) -> None:
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

    def close(self) -> None:
        self._remote.close()

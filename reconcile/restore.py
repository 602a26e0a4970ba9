"""reconcile restore: fetch a remote tree, or one run of its trash, back into a
local folder. Verified, atomic per file, resumable. Restore drives it:
restore_model.py (options, items, temp names), restore_survey.py (the
local folder compared), restore_fetch.py (downloads); what it prints is
restore_output.py's, in the command layer.

- Each file lands under a temp name in its target folder: a stem fixed by
  (path, size, mtime), so a killed restore finds and resumes it from its size
  (SFTP offset, S3 byte range), then a random part no one can guess ahead.
  It is created O_EXCL|O_NOFOLLOW (0600), and resumed only if it is our own
  regular file; no folder below the target is followed through a symlink.
- The temp file's xxh3 is checked against the hash the remote knows (S3
  metadata or record) or the pair's snapshot (--state-dir). A mismatch is
  kept aside as NAME.reconcile-corrupt, never put in place.
- An existing local file that differs is left alone unless --overwrite.
- Trash layout (written by apply's trash): <root>/<backup-dir>/<run>/<path>,
  run = UTC start time YYYY-MM-DDTHHMMSSZ.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from reconcile.entry import FILE, Entry, is_inside
from reconcile.errors import ConfigError, NotFound
from reconcile.remotes import dest_kind, open_remote, remote_class
from reconcile.remotes import local_path as local_folder_of
from reconcile.remotes.base import RemoteOptions
from reconcile.remotes.retry import RetryPolicy
from reconcile.restore_fetch import Fetcher, make_dirs, remove_stale_temps
from reconcile.restore_model import (Outcome, RestoreOptions, RestoreReporter, Survey, child_url, clean_rel,
                                     in_folder_of, pick_run, safe_rel, select, shown, temp_stem, trash_runs)
from reconcile.restore_survey import snapshot_hashes, survey
from reconcile.statedir import check_private, display_url, private_copy
from reconcile.trash import DEFAULT_TRASH, known_trash


class Restore:
    def __init__(self, url: str, opts: RestoreOptions, reporter: RestoreReporter) -> None:
        self.url = url
        self.opts = opts
        self.reporter = reporter
        self.root = os.path.abspath(os.path.expanduser(opts.local_dir))
        self.backup_dir = clean_rel(opts.backup_dir, "--backup-dir")
        self.paths = [clean_rel(p, "--path") for p in opts.paths]
        self.policy = RetryPolicy(opts.remote.retry_for, on_retry=self._on_retry)
        self.transfers = opts.remote.transfers or remote_class(url).default_transfers
        self.run_name: str | None = None  # the trash run restored, if any
        self._scratch: str | None = None  # temp folder holding the private record copy

    def _on_retry(self, what: str, exc: Exception, wait: float) -> None:
        self.reporter.warn(f"{what}: {exc}; retrying in {wait:.1f}s")

    def _open(self, url: str, with_state: bool):
        options = RemoteOptions(**vars(self.opts.remote))
        options.state_dir = None
        if with_state and self.opts.state_dir:
            # the pair's S3 record saves a HEAD per object; a private copy,
            # since the remote rewrites its record and restore holds no lock
            options.state_dir = self._private_record()
        return open_remote(url, options)

    def _private_record(self) -> str:
        real = os.path.join(os.path.abspath(os.path.expanduser(self.opts.state_dir or "")), "remote")
        self._scratch = tempfile.mkdtemp(prefix="reconcile-restore-")
        return private_copy(real, self._scratch)  # no record: restore HEADs instead

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def list_trash(self) -> dict[str, list[int]]:
        trash = child_url(self.url, self.backup_dir)
        remote = self._open(trash, False)
        try:
            return trash_runs(self._entries(remote, display_url(trash), missing_ok=True))
        finally:
            remote.close()

    def _entries(self, remote, what: str, missing_ok: bool = False) -> list[Entry]:
        try:
            return self.policy.run(lambda: list(remote.list()), f"list {what}")
        except NotFound:
            if missing_ok:
                return []
            disk = "" if "://" in what else " (is the disk it is on mounted?)"
            raise ConfigError(f"{what} does not exist; check the URL{disk}") from None

    def run(self) -> Outcome:
        self._check_local()
        if self.opts.state_dir and os.path.lexists(os.path.expanduser(self.opts.state_dir)):
            # its snapshot's hashes judge what is fetched and its trash record hides names: ours only
            check_private(os.path.abspath(os.path.expanduser(self.opts.state_dir)))
        started = time.monotonic()
        if self.opts.from_trash is not None:
            url, with_state, skip = child_url(self.url, self.backup_dir), False, []
        else:
            skip = [self.backup_dir, DEFAULT_TRASH, *known_trash(self.opts.state_dir)]
            url, with_state = self.url, True
        try:
            remote = self._open(url, with_state)
        except BaseException:
            self._drop_scratch()
            raise
        try:
            entries = self._entries(remote, display_url(url))
            if not entries and self.opts.from_trash is None:
                # on S3 a mistyped prefix lists nothing, as a missing folder would
                raise ConfigError(f"nothing to restore: {display_url(url)} is empty or does not exist; "
                                  "check the URL (on S3 the bucket and the prefix)")
            strip = pick_run(trash_runs(entries), self.opts.from_trash) if self.opts.from_trash else None
            self.run_name = strip
            out = Outcome(self._survey(entries, skip, strip, remote.capabilities.mtime_precision_ns))
            if not self.opts.dry_run:
                self._fetch(remote, out)
        finally:
            self.reporter.stop()
            try:
                remote.close()
            finally:
                self._drop_scratch()
        out.seconds = time.monotonic() - started
        return out

    def _check_local(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise ConfigError(f"{self.root} is a file; give the folder to restore into")
        if dest_kind(self.url) == "local":
            src = os.path.realpath(os.path.expanduser(local_folder_of(self.url)))
            dst = os.path.realpath(self.root)
            if is_inside(src, dst) or is_inside(dst, src):
                raise ConfigError(f"{src} and {dst} overlap; restore into a folder outside the backup")

    def _survey(self, entries: list[Entry], skip: list[str], strip: str | None, precision: int) -> Survey:
        pairs = []
        for rel, e in select(entries, self.paths, skip, strip):
            if safe_rel(rel):
                pairs.append((rel, e))
            else:
                self.reporter.warn(f"skipped {shown(e.path)}: not a usable relative path")
        if self.paths and not pairs:
            raise ConfigError(f"nothing on the remote under --path {', '.join(self.paths)}")
        snaps: dict[str, Entry] = {}
        # the snapshot knows the live versions, never what the trash kept
        if self.opts.state_dir and strip is None:
            wanted = {rel for rel, e in pairs if e.kind == FILE and e.hash is None}
            if wanted:
                snaps = snapshot_hashes(self.opts.state_dir, wanted, self.reporter.warn)
        return survey(pairs, self.root, snaps, precision, self.opts.overwrite)

    def _fetch(self, remote, out: Outcome) -> None:
        s = out.survey
        os.makedirs(self.root, exist_ok=True)
        s.blocked += make_dirs(self.root, s.dirs)
        self.reporter.start(len(s.todo), sum(i.entry.size - i.partial for i in s.todo))
        fetcher = Fetcher(remote, self.policy, self.root, self.reporter, self.transfers)
        fetcher.run(s.todo)
        self.reporter.stop()
        out.remote_gone = fetcher.remote_gone
        if fetcher.remote_gone is None:
            # a file not fetched this time keeps its partial; any other temp file is stale
            unfinished = {in_folder_of(i.rel, temp_stem(i.rel, i.entry)) for i in s.todo if i.result != "done"}
            remove_stale_temps(self.root, s.todo, unfinished, self.paths)

"""The remote trash (--backup-dir): its default name, the rule a name must
follow, and the names a pair's earlier runs used. apply writes it (engine/state.py),
restore reads it back, verify and watch leave it out of the mirror."""

from __future__ import annotations

import json
import os

from reconcile.entry import is_safe_path
from reconcile.errors import ConfigError
from reconcile.statefile import open_read

DEFAULT_TRASH = ".reconcile-trash"  # protected even on runs that forget --backup-dir
TRASH_RECORD = "backup-dirs.json"  # in the pair's state folder: every trash name apply used


def trash_root(backup_dir: str | None) -> str | None:
    if not backup_dir:
        return None
    path = backup_dir.replace("\\", "/").strip("/")
    # one name at the top: a nested trash's parent folder would look like a
    # stale folder to --delete, and deleting it would take the trash along
    if not path or "/" in path or path in (".", ".."):
        raise ConfigError(f"--backup-dir {backup_dir!r} must be one folder name at the top of the "
                          "destination, like .reconcile-trash")
    return path


def known_trash(state_dir: str | None) -> list[str]:
    """trash folders earlier runs of the pair used (recorded in its state
    folder): protected even when the flag is forgotten"""
    if not state_dir:
        return []
    try:
        with open_read(os.path.join(os.path.expanduser(state_dir), TRASH_RECORD)) as f:
            names = json.loads(f.read())
    except (OSError, ValueError, TypeError):
        return []
    # one folder name at the top each (trash_root's rule): anything else is not ours
    return [p for p in names if isinstance(p, str) and is_safe_path(p) and "/" not in p] \
        if isinstance(names, list) else []

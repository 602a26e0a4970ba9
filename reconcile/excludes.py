"""--exclude patterns, in gitignore syntax, matched on the relative path.

pathspec does the gitignore matching: its rules (anchoring, '**', trailing
'/', negation) are subtle enough that we would not write them by hand.
"""

from __future__ import annotations

import pathspec

from reconcile.entry import TEMP_MARK
from reconcile.errors import ConfigError


class Excludes:
    def __init__(self, patterns: list[str] | tuple[str, ...] = (), protected: list[str] | tuple = ()) -> None:
        """protected: folders at the root never mirrored nor deleted (the
        trash), matched by prefix: cheaper than a pattern on every path."""
        self.patterns = list(patterns)
        self._protected = tuple(protected)
        self._protected_slash = tuple(p + "/" for p in protected)
        try:
            self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns) if self.patterns else None
        except Exception as exc:  # pathspec raises several types for bad patterns
            raise ConfigError(f"bad --exclude pattern: {exc}") from None

    def __bool__(self) -> bool:
        return self._spec is not None or bool(self._protected)

    def excluded(self, path: str, is_dir: bool) -> bool:
        if TEMP_MARK in path:
            return True
        if self._protected and (path in self._protected or path.startswith(self._protected_slash)):
            return True
        if self._spec is None:
            return False
        return self._spec.match_file(path + "/" if is_dir else path)

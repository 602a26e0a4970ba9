"""--exclude patterns, in gitignore syntax, matched on the relative path.

pathspec does the gitignore matching: its rules (anchoring, '**', trailing
'/', negation) are subtle enough that we would not write them by hand. It is
imported only when there are patterns: most runs have none.
"""

from __future__ import annotations

from reconcile.entry import TEMP_MARK, decode_path, encode_path
from reconcile.errors import ConfigError

TEMP_MARK_B = TEMP_MARK.encode()


def all_patterns(exclude: list[str] | None, exclude_from: list[str] | None = None,
                 include: list[str] | None = None) -> list[str]:
    """--exclude, the lines of each --exclude-from FILE (blank lines and # comments
    skipped), then each --include as a gitignore "!" pattern, which re-includes
    what the patterns before it excluded."""
    patterns = list(exclude or [])
    for path in exclude_from or []:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --exclude-from {path}: {getattr(exc, 'strerror', None) or exc}; "
                              "give a text file with one pattern a line") from None
        patterns += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return patterns + [f"!{p}" for p in include or []]


class Excludes:
    def __init__(self, patterns: list[str] | tuple[str, ...] = (), protected: list[str] | tuple = ()) -> None:
        """protected: folders never mirrored nor deleted (the trash), matched
        by prefix: cheaper than a pattern on every path."""
        self.patterns = list(patterns)
        self._protected = tuple(protected)
        self._protected_slash = tuple(p + "/" for p in protected)
        # the same, on encoded sort keys (a directory's key ends with '/')
        self._protected_keys = frozenset(encode_path(p) for p in protected)
        self._protected_key_dirs = tuple(k + b"/" for k in self._protected_keys)
        self._spec = None
        # gitignore: nothing under an excluded folder comes back through a "!"
        # pattern; pathspec matches each path alone, so parents are asked too
        self._negates = any(p.lstrip().startswith("!") for p in self.patterns)
        self._dirs: dict[str, bool] = {}
        if self.patterns:
            import pathspec

            try:
                self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)
            except Exception as exc:  # pathspec raises several types for bad patterns
                raise ConfigError(f"bad --exclude pattern: {exc}") from None

    def __bool__(self) -> bool:
        return self._spec is not None or bool(self._protected)

    @property
    def has_patterns(self) -> bool:
        return self._spec is not None

    def excluded(self, path: str, is_dir: bool) -> bool:
        if TEMP_MARK in path:
            return True
        if self._protected and (path in self._protected or path.startswith(self._protected_slash)):
            return True
        if self._spec is None:
            return False
        return self._match(path, is_dir)

    def _match(self, path: str, is_dir: bool) -> bool:
        assert self._spec is not None
        if self._spec.match_file(path + "/" if is_dir else path):
            return True
        return self._negates and self._parent_excluded(path)

    def _parent_excluded(self, path: str) -> bool:
        if len(self._dirs) > 4096:
            self._dirs.clear()  # sorted input: recent folders are the ones asked again
        parent = path.rpartition("/")[0]
        while parent:
            hit = self._dirs.get(parent)
            if hit is None:
                hit = self._dirs[parent] = self._spec.match_file(parent + "/")
            if hit:
                return True
            parent = parent.rpartition("/")[0]
        return False

    def excluded_key(self, key: bytes, is_dir: bool) -> bool:
        """excluded(), given a row's sort key: no decoding unless patterns need it."""
        if TEMP_MARK_B in key or key.startswith(self._protected_key_dirs) or key in self._protected_keys:
            return True
        if self._spec is None:
            return False
        path = decode_path(key[:-1] if is_dir else key)
        return self._match(path, is_dir)

    def protected_names(self, prefix: bytes) -> frozenset[bytes]:
        """names protected directly in the folder whose children's keys start
        with prefix (b'' at the root, b'a/' in 'a'); usually none."""
        return frozenset(k[len(prefix):] for k in self._protected_keys
                         if k.startswith(prefix) and b"/" not in k[len(prefix):])

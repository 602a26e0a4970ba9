"""paramiko, imported without invoke and without importlib.metadata. Every
module of this package that uses paramiko takes it from here, so the first
import of paramiko is this one.

paramiko imports invoke (about 40 ms at every start) only to run `Match exec`
lines of an ssh config; it is loaded when a config has one (target._config_lookup).
paramiko's __init__ reads its own version with importlib.metadata, which
imports email and friends and scans every path entry (about 35 ms of CPU at
every start): it gets the version from its .dist-info folder's name instead,
and anything else asked of that module goes to the real one."""

from __future__ import annotations

import logging
import os
import sys
import types
from importlib.machinery import PathFinder


def _real_metadata() -> types.ModuleType:
    if isinstance(sys.modules.get("importlib.metadata"), _Metadata):
        del sys.modules["importlib.metadata"]
    import importlib.metadata

    return importlib.metadata


class _Metadata(types.ModuleType):
    """importlib.metadata as paramiko's __init__ uses it: version(name) of a
    distribution installed beside its package; the real module otherwise."""

    def version(self, name: str) -> str:
        spec = PathFinder.find_spec(name)
        folder = os.path.dirname(os.path.dirname(spec.origin)) if spec and spec.origin else None
        try:
            found = [n for n in os.listdir(folder) if n.startswith(f"{name}-") and n.endswith(".dist-info")] \
                if folder else []
        except OSError:
            found = []
        if len(found) == 1:
            return found[0][len(name) + 1:-len(".dist-info")]
        return _real_metadata().version(name)

    def __getattr__(self, attr: str):
        return getattr(_real_metadata(), attr)


_HIDE_INVOKE = "invoke" not in sys.modules
_LIGHT_METADATA = "importlib.metadata" not in sys.modules
if _HIDE_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
if _LIGHT_METADATA:
    sys.modules["importlib.metadata"] = _Metadata("importlib.metadata")
try:
    import paramiko
    import paramiko.config
finally:
    if _HIDE_INVOKE:
        del sys.modules["invoke"]
    if _LIGHT_METADATA and isinstance(sys.modules.get("importlib.metadata"), _Metadata):
        del sys.modules["importlib.metadata"]

# paramiko logs a lost handshake with a traceback (Python's last-resort handler
# prints it); we report such errors ourselves, in one line
logging.getLogger("paramiko").addHandler(logging.NullHandler())

__all__ = ["paramiko"]

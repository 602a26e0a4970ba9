"""paramiko, imported without invoke. Every module of this package that uses
paramiko takes it from here, so the first import of paramiko is this one.

paramiko imports invoke (about 40 ms at every start) only to run `Match exec`
lines of an ssh config; it is loaded when a config has one (target._config_lookup)."""

from __future__ import annotations

import logging
import sys

_HIDE_INVOKE = "invoke" not in sys.modules
if _HIDE_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
    import paramiko.config
finally:
    if _HIDE_INVOKE:
        del sys.modules["invoke"]

# paramiko logs a lost handshake with a traceback (Python's last-resort handler
# prints it); we report such errors ourselves, in one line
logging.getLogger("paramiko").addHandler(logging.NullHandler())

__all__ = ["paramiko"]

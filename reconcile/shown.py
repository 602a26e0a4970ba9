"""How a path is shown to a person (in messages, tables, JSON): never with raw
undecodable bytes or terminal control characters. Core and command layer alike
use it; it imports nothing of reconcile."""

from __future__ import annotations

# every control character (C0, DEL, C1) as an escape: a name holding ESC [ ...
# would otherwise drive the terminal it is printed on
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def escape_controls(text: str) -> str:
    return text.translate(_CONTROLS)


def printable(path: str) -> str:
    """names with undecodable bytes or control characters, shown safely."""
    return escape_controls(path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))

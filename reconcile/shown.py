"""How a path is shown to a person (in messages, tables, JSON): never with raw
undecodable bytes or terminal control characters. Core and command layer alike
use it; it imports nothing of reconcile."""

from __future__ import annotations

import json
import re
from typing import Any

# every control character (C0, DEL, C1) as an escape: a name holding ESC [ ...
# would otherwise drive the terminal it is printed on
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def escape_controls(text: str) -> str:
    return text.translate(_CONTROLS)


def printable(path: str) -> str:
    """names with undecodable bytes or control characters, shown safely."""
    return escape_controls(path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(doc: Any, **kw: Any) -> str:
    """JSON that is valid UTF-8 whatever the names: a byte a name holds that
    is not UTF-8 (a lone surrogate, as os.fsdecode gives it) is written as
    its \\udcXX escape, so a reader's os.fsencode(name) has the exact bytes
    again; every other character as it is."""
    text = json.dumps(doc, ensure_ascii=False, **kw)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

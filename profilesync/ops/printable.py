"""Text from servers (Redis hashes, pg_stat_activity, error messages) made safe to print on a terminal.

Anyone who can write to Redis or name a database session chooses those bytes: an escape sequence would reach
the operator's terminal (rewrite the screen, set the title, hide lines), a bidi override would reorder what
they read, a lone surrogate would crash `print`. Every such character is shown as its escape instead.
"""

from __future__ import annotations

import unicodedata

# Cc: C0 controls (ESC, CR, BEL, …), DEL, C1 controls (CSI U+009B, …); Cf: bidi overrides and isolates,
# zero-width characters; Zl/Zp: line and paragraph separators; Cs: lone surrogates; Co: private use.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})


def printable(text: str) -> str:
    """`text` with every control, format, separator or surrogate character escaped (`\\x1b`, `\\u202e`)."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

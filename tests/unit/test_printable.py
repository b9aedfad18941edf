"""Server-supplied text made safe for a terminal."""

from __future__ import annotations

import pytest

from profilesync.ops.printable import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, ünïcode, 日本", "plain text, ünïcode, 日本"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),  # ESC, CSI, OSC, BEL
        ("a\r\nb\tc\x00", "a\\x0d\\x0ab\\x09c\\x00"),  # C0
        ("\x7f\x9b6n\x85", "\\x7f\\x9b6n\\x85"),  # DEL, C1 CSI, NEL
        ("\u202eevil\u2066x\u2069\u200f", "\\u202eevil\\u2066x\\u2069\\u200f"),  # bidi overrides, isolates
        ("a\u2028b\u2029c\ufeff", "a\\u2028b\\u2029c\\ufeff"),
        ("\ud800 \U000f0000", "\\ud800 \\U000f0000"),  # lone surrogate, private use
    ],
)
def test_controls_bidi_and_surrogates_are_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    printable(raw).encode("utf-8")  # printable on any UTF-8 terminal

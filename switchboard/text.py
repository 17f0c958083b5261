"""Text written by a subagent, made safe to show a person: controls shown, not sent.

A file name, a diff line, a tool's output or a model's message can carry terminal
escape sequences (ESC [ ... that move the cursor, recolour, retitle the window or
hide a line behind another), carriage returns and backspaces that overwrite what
was printed, and Unicode bidirectional overrides that make text read differently
from what it is ("Trojan Source"). `visible` replaces each of them with a visible
stand-in and keeps newlines and tabs, so what a person reads is what is there.
"""

from __future__ import annotations

__all__ = ["visible"]

_PICTURES = {code: chr(0x2400 + code) for code in range(0x20)}  # ␀ … ␟ (␛ for ESC)
_PICTURES[0x7F] = "\u2421"  # ␡

_INVISIBLE = (
    # bidirectional embeddings, overrides, isolates and marks
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x200E,
    0x200F,
    0x061C,
    # zero-width characters and line/paragraph separators
    *range(0x200B, 0x200E),
    0x2060,
    0xFEFF,
    0x2028,
    0x2029,
)

_TABLE: dict[int, str] = {
    **{code: picture for code, picture in _PICTURES.items() if chr(code) not in "\n\t"},
    **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},  # C1 controls (CSI is 0x9b)
    **{code: f"<U+{code:04X}>" for code in _INVISIBLE},
}


def visible(text: str) -> str:
    """`text` with every control character and invisible formatting mark made visible.

    Newlines and tabs are kept; C0 controls become Unicode control pictures
    (ESC is "␛", CR "␍"), C1 controls `\\x9b`, bidi and zero-width marks `<U+202E>`.
    """
    return text.translate(_TABLE)

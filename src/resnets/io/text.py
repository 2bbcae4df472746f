"""Names read from files (class names, file names, data set names), made safe before a terminal or a CSV sees them.

A class folder can be named ``ESC[2J`` or hold a newline, and a run record or an export's metadata can carry any
text: printed raw, such a name clears the screen, rewrites earlier lines or splits one error into two. Every
control or format character (C0, DEL, C1, line and paragraph separators, bidirectional overrides) is shown as its
escape (``\\x1b``, ``\\u202e``) instead. In a CSV a cell that a spreadsheet would run as a formula (``=``, ``+``,
``@``, or ``-`` before something that is not a number) gets a leading ``'``, as OWASP advises.
"""

from __future__ import annotations

import unicodedata

_UNSAFE = ("Cc", "Cf", "Zl", "Zp")  # control, format (bidi overrides, zero-width), line and paragraph separators
_FORMULA = ("=", "+", "@", "-")


def printable(text: object) -> str:
    """``text`` with every control or format character replaced by its escape; plain text is unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE else c for c in text)


def plot_label(text: object) -> str:
    """``text`` for a matplotlib label: printable, and a ``$`` shown as itself rather than starting mathtext (an
    unbalanced ``$`` in a class name made the figure fail to draw)."""
    return printable(text).replace("$", r"\$")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def csv_cell(text: object) -> str:
    """``text`` for a CSV cell: printable, and never read as a formula by a spreadsheet."""
    cell = printable(text)
    if cell.startswith(_FORMULA) and not _is_number(cell):
        return "'" + cell
    return cell


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

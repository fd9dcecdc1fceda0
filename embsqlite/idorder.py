"""How SQLite orders ids, so that a prefix search is a range on the primary key.

SQLite compares text with BINARY, memcmp() of the database's text encoding: UTF-8 bytes
(code point order), UTF-16BE (code unit order: U+10000 and above sort before U+E000) or
UTF-16LE (low byte first: U+00FF sorts after U+0100). `prefix_range` gives the bounds of
the ids that start with a prefix in that order, and `sort_key` the same order in Python
(the vector cache bisects its ids with it).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

ENCODINGS = ("UTF-8", "UTF-16le", "UTF-16be")  # the values of PRAGMA encoding
_MAX_CODE_POINT = 0x10FFFF


def database_encoding(conn: Any) -> str:
    """The text encoding of the main database of `conn`, as PRAGMA encoding names it."""
    encoding = conn.execute("pragma encoding").fetchone()[0]
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown SQLite text encoding {encoding!r}")
    return encoding


def sort_key(encoding: str) -> Callable[[str], Any]:
    """A key under which Python sorts str as SQLite's BINARY collation does in `encoding`."""
    if encoding == "UTF-8":
        return _same
    codec = _CODECS[encoding]
    return lambda text: text.encode(codec, "surrogatepass")


def _same(text: str) -> str:
    return text


_CODECS = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}
# Text bound as UTF-8 (as Python binds it) is converted to a UTF-16 database's encoding,
# and the conversion turns these two noncharacters into U+FFFD: there, no id written
# through UTF-8 holds them, and no bound may.
_LOST_IN_UTF16 = frozenset((0xFFFE, 0xFFFF))


def searchable(prefix: str, encoding: str) -> bool:
    """False when no id written through UTF-8 can start with `prefix` and SQLite would
    compare a changed text (U+FFFE or U+FFFF in a UTF-16 database)."""
    return encoding == "UTF-8" or not any(ord(c) in _LOST_IN_UTF16 for c in prefix)


def prefix_range(prefix: str, encoding: str = "UTF-8") -> tuple[str, Optional[str]]:
    """The ids starting with `prefix` are exactly those with low <= id < high in SQLite's
    order for `encoding`, bound as text; `high` is None when no upper bound exists.
    (A prefix that is not `searchable` matches nothing.)"""
    chars = list(prefix)
    while chars:
        successor = _successor(ord(chars.pop()), encoding)
        if successor is not None:
            return prefix, "".join(chars) + chr(successor)
    return prefix, None


def _successor(code_point: int, encoding: str) -> Optional[int]:
    """The code point that comes next after `code_point` in `encoding`'s order (skipping
    surrogates, which stored text never holds), or None after the last one."""
    if encoding == "UTF-8":
        if code_point >= _MAX_CODE_POINT:
            return None
        following = code_point + 1
        return 0xE000 if 0xD800 <= following <= 0xDFFF else following
    # UTF-16: text is compared code unit by code unit; a unit's weight is its value in
    # big-endian, its byte-swapped value in little-endian (the low byte is compared first).
    weight = _swap if encoding == "UTF-16le" else _same_unit
    units = _utf16_units(code_point)
    if len(units) == 2:  # a surrogate pair: first the next low surrogate after this one
        for w in range(weight(units[1]) + 1, 0x10000):
            if 0xDC00 <= weight(w) <= 0xDFFF:
                return _pair(units[0], weight(w))
    for w in range(weight(units[0]) + 1, 0x10000):
        unit = weight(w)  # both weights are their own inverse
        if 0xDC00 <= unit <= 0xDFFF:
            continue  # a low surrogate cannot start a character
        if 0xD800 <= unit <= 0xDBFF:
            return _pair(unit, 0xDC00)  # U+xxC00 has the lightest low surrogate in both orders
        if unit in _LOST_IN_UTF16:
            continue
        return unit
    return None


def _swap(unit: int) -> int:
    return ((unit & 0xFF) << 8) | (unit >> 8)


def _same_unit(unit: int) -> int:
    return unit


def _utf16_units(code_point: int) -> list[int]:
    if code_point < 0x10000:
        return [code_point]
    offset = code_point - 0x10000
    return [0xD800 + (offset >> 10), 0xDC00 + (offset & 0x3FF)]


def _pair(high: int, low: int) -> int:
    return 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)

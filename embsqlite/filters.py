"""Filters of a search: which rows of a collection may be ranked, chosen in SQL.

Two ways to say it, combinable (AND), as sqlite-utils' `rows_where(where, where_args)` does:

- `where`: an SQL boolean expression over the row's columns (`id`, `content`,
  `content_blob`, `metadata`, `updated`, `rowid`), with `?` parameters bound from a
  sequence or `:name` ones from a dict (`where_args`).
- `metadata`: `{key: value}` equalities on the stored metadata JSON object (`metadata_rule`).

The expression goes inside the ranking statement's WHERE, in parentheses, so it must not be
able to leave them: it is split into tokens the way SQLite's tokenizer splits them, and a
statement separator, a comment, an unterminated literal or a parenthesis closing one it did
not open is refused. Its parameters are renumbered (`Filter.render`), so it can never read
the statement's own parameters, and every value is bound, never written into the SQL.

The rows a filter keeps are reused while the database is unchanged (`Filter.reuse_key`)
only when nothing else can change them: no subquery (no SELECT, VALUES or WITH word, no
`IN table`: a view may call random()); every word before "(" a keyword or a
deterministic built-in function (`_SAME_ROWS_CALLS`: not random(), date('now'),
CURRENT_TIME, an application's function); no LIKE, GLOB, REGEXP or MATCH (PRAGMA
case_sensitive_like and application functions change them) and no COLLATE (collations
are the application's); every parameter None, bool, int, float, str or a buffer (keyed by
type and content). Any other filter is evaluated for every search. An application that
redefines a built-in function under its own name between two searches with the same
filter is not noticed.
"""
from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

# A token of SQLite's tokenizer, as far as a filter's safety needs it: whitespace (the
# five characters SQLite skips), comment openers, string literals and quoted identifiers
# (each with its own doubling escape), parameters, parentheses, ';' and everything else.
# A character from U+0080 up is part of an identifier, as in SQLite.
_IDCHARS = "A-Za-z0-9_$\u0080-\U0010ffff"
_TOKEN = re.compile(
    rf"""(?P<space>[ \t\n\f\r]+)
    |(?P<comment>--|/\*)
    |(?P<string>'(?:[^']|'')*')
    |(?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
    |(?P<number_param>\?[0-9]*)
    |(?P<named_param>[:@$#][{_IDCHARS}]*)
    |(?P<open>\()|(?P<close>\))|(?P<end>;)
    |(?P<word>[{_IDCHARS}]+)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_UNTERMINATED = {"'": "string literal", '"': "quoted identifier", "`": "quoted identifier",
                 "[": "quoted identifier"}
# Keys that a JSON path can name unquoted on every SQLite (`$.key`, tried first by
# metadata_rule); every key is also matched decoded, through json_each.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_INT = 2**63 - 1
# Stored metadata that is not valid JSON counts as no metadata (json_type would raise).
_METADATA = "(case when json_valid(metadata) then metadata end)"
# The JSON type a filter value must have to be equal to it, besides the value itself.
_JSON_TYPES = {str: "('text')", int: "('integer', 'real')", float: "('integer', 'real')"}
_JSON_CONSTANTS = {None: "null", True: "true", False: "false"}

Piece = Union[str, int]  # SQL text, or the index of a value in Filter.values
# Words before "(" with which a filter's rows may be reused (the rule: the module's docstring)
_SAME_ROWS_CALLS = frozenset("""
    abs acos acosh and asin asinh atan atan2 atanh between case cast ceil ceiling char
    coalesce cos cosh cosine_similarity degrees else embedding_dimensions
    embedding_from_json embedding_norm embedding_to_json exp floor
    format hex iif ifnull in instr is json json_array
    json_array_length json_error_position json_extract json_insert json_object json_patch
    json_quote json_remove json_replace json_set json_type json_valid length likelihood
    likely ln log log10 log2 lower ltrim max min mod not nullif octet_length or pi pow
    power printf quote radians replace round rtrim sign sin sinh soundex sqrt substr
    substring tan tanh then trim trunc typeof unhex unicode unlikely upper when zeroblob
""".split())
# Words that make a filter's rows not reusable wherever they appear (the module's docstring)
_NEVER_REUSED_WORDS = frozenset("""
    select values with like glob regexp match collate current_date current_time
    current_timestamp
""".split())
# embsqlite's own SQL functions for its copies of the vectors (embsqlite_sink,
# embsqlite_sink_append, embsqlite_mark: they write into open matrices and files by
# handle); the public embsqlite_version and embsqlite_data_version only read
_INTERNAL = re.compile(r"embsqlite_(?!version$|data_version$)\w*", re.IGNORECASE)


class FilterError(ValueError):
    """A filter that cannot be used; the message names the expression."""


@dataclass(frozen=True)
class Filter:
    """A boolean SQL expression over one `embeddings` row, its parameters kept apart:
    `pieces` is SQL text interleaved with indexes into `values` (`names` holds each
    value's `:name`, or None for a positional one)."""

    pieces: tuple[Piece, ...]
    values: tuple[Any, ...]
    names: tuple[Optional[str], ...]
    expression: str  # what the caller wrote, for messages
    same_rows: bool = True  # the same rows for the same database state (see _SAME_ROWS_CALLS)

    def reuse_key(self) -> Optional[tuple[Any, ...]]:
        """What identifies the rows this filter keeps in one database state (the SQL and
        each value's type and content: 1, 1.0 and True may select differently); None when
        they may change without the database changing, or a value cannot be keyed."""
        if not self.same_rows:
            return None
        keyed: list[tuple[str, Any]] = []
        for value in self.values:
            if type(value) in (bytes, bytearray, memoryview):
                keyed.append(("bytes", bytes(value)))  # the content, never the object's address
            elif type(value) is float:
                keyed.append(("float", repr(value)))  # -0.0 is not 0.0 to printf, nan is itself
            elif value is None or type(value) in (bool, int, str):
                keyed.append((type(value).__name__, value))
            else:
                return None  # a subclass may bind otherwise than it compares: not reused
        return (self.render(lambda i: f"?{i + 1}"), tuple(keyed))

    def render(self, placeholder: Callable[[int], str]) -> str:
        """The expression with each parameter written as `placeholder(index)`."""
        return "".join(p if isinstance(p, str) else placeholder(p) for p in self.pieces)

    def __and__(self, other: Filter) -> Filter:
        """Both filters; `other`'s parameters follow this one's."""
        shift = len(self.values)
        return Filter(
            ("(",) + self.pieces + (") and (",)
            + tuple(p if isinstance(p, str) else p + shift for p in other.pieces) + (")",),
            self.values + other.values,
            self.names + other.names,
            f"{self.expression} and {other.expression}",
            self.same_rows and other.same_rows,
        )


def describe(expression: str) -> str:
    """The expression as error messages quote it (at most 200 characters)."""
    return repr(expression if len(expression) <= 200 else expression[:200] + "...")


def parse_where(where: str, where_args: Any = None, *, args_name: str = "where_args") -> Filter:
    """The `where` expression as a Filter, its parameters taken from `where_args` (a
    sequence for `?`/`?NNN`, a mapping for `:name`/`@name`/`$name`), checked to stay
    inside its parentheses. `args_name` says in messages where the values come from
    (Datasette: the URL, named parameters only)."""
    if not isinstance(where, str):
        raise TypeError(f"where must be a str, not {type(where).__name__}")
    named = isinstance(where_args, Mapping)
    if where_args is not None and not named and (
        isinstance(where_args, (str, bytes)) or not isinstance(where_args, Sequence)
    ):
        raise TypeError(
            f"where_args must be a sequence (for ?) or a dict (for :name), not {type(where_args).__name__}"
        )
    said = describe(where)

    def refuse(why: str) -> FilterError:
        return FilterError(f"filter {said}: {why}")

    if not where.strip():
        raise refuse("the expression is empty")
    if "\x00" in where:
        raise refuse("the expression holds a NUL character")
    pieces: list[Piece] = []
    slots: dict[Any, int] = {}  # parameter (number or name) -> index in values
    order: list[Any] = []
    depth = 0
    largest = 0
    same_rows = True
    previous = ("space", "")  # the last token that is not whitespace: a call's name
    for match in _TOKEN.finditer(where):
        kind, text = match.lastgroup, match.group()
        if kind == "comment":
            raise refuse("comments (-- or /*) are not allowed in a filter")
        if kind == "end":
            raise refuse("';' is not allowed in a filter")
        if kind == "other" and text in _UNTERMINATED:
            raise refuse(f"unterminated {_UNTERMINATED[text]} ({text})")
        if kind == "word":
            same_rows = same_rows and text.lower() not in _NEVER_REUSED_WORDS
            if previous[0] == "word" and previous[1].lower() == "in":  # `x IN table`: a subquery without SELECT
                same_rows = False
        elif kind == "open":
            if previous[0] == "quoted" or (previous[0] == "word" and previous[1].lower() not in _SAME_ROWS_CALLS):
                same_rows = False
            if previous[0] in ("word", "quoted") and _INTERNAL.fullmatch(previous[1].strip('"`[]')):
                raise refuse(f"{previous[1]}() is embsqlite's own, not for filters")
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth < 0:
                raise refuse("')' closes a parenthesis the expression did not open")
        if kind != "space":
            previous = (str(kind), text)
        if kind not in ("number_param", "named_param"):
            pieces.append(text)
            continue
        following = where[match.end():match.end() + 1]
        if kind == "number_param":
            if named:
                raise refuse(f"parameter {text} is positional: " + (
                    "pass where_args as a sequence" if args_name == "where_args"
                    else f"use :name parameters, their values from {args_name}"))
            number = int(text[1:]) if len(text) > 1 else largest + 1
            if not 1 <= number <= 32766:
                raise refuse(f"parameter {text} is out of range")
            largest = max(largest, number)
            key: Any = number
        else:
            if text[0] == "#" or len(text) == 1 or following in ("(", ":"):
                raise refuse(f"unsupported parameter {text}{following}")
            if where_args is not None and not named:
                raise refuse(f"parameter {text} is named: pass {args_name} as a dict")
            key = text[1:]
        if key not in slots:
            slots[key] = len(order)
            order.append(key)
        pieces.append(slots[key])
    if depth:
        raise refuse("a parenthesis is not closed")
    if not sqlite3.complete_statement(where + "\n;"):  # SQLite's own view: no open literal
        raise refuse("the expression does not end where it seems to")
    values, names = _bind(order, where_args, named, largest, refuse, args_name)
    return Filter(tuple(pieces), values, names, where, same_rows)


def _bind(
    order: list[Any], where_args: Any, named: bool, largest: int,
    refuse: Callable[[str], FilterError], args_name: str,
) -> tuple[tuple[Any, ...], tuple[Optional[str], ...]]:
    """The value of each parameter in `order`, checked to be bindable."""
    values = []
    if named:
        for key in order:
            if key not in where_args:
                raise refuse(f"no value for parameter :{key} in {args_name}")
            values.append(where_args[key])
        names: tuple[Optional[str], ...] = tuple(order)
    else:
        given = list(where_args or ())
        if len(given) != largest:
            raise refuse(f"the expression has {largest} positional parameter(s) but {args_name} "
                         f"has {len(given)} value(s)")
        values = [given[number - 1] for number in order]
        names = (None,) * len(order)
    for key, value in zip(order, values):
        label = _label(key)
        _check_value(value, lambda why: refuse(f"parameter {label} {why}"))  # noqa: B023
    return tuple(values), names


def _label(key: Any) -> str:
    return f"?{key}" if isinstance(key, int) else f":{key}"


def _check_value(value: Any, refuse: Callable[[str], Exception]) -> None:
    """SQLite can bind None, int (64-bit), float, str and bytes."""
    if value is None or isinstance(value, (str, bytes, bytearray, memoryview)):
        return
    if isinstance(value, bool) or isinstance(value, int):
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise refuse("is an integer outside SQLite's 64-bit range")
        return
    if isinstance(value, float):
        return
    raise refuse(f"has a type SQLite cannot bind ({type(value).__name__})")


def metadata_rule(metadata: Mapping[str, Any]) -> Filter:
    """Every key of `metadata` equals its value in the row's metadata JSON object: a str
    a JSON string, an int or float a JSON number of that value (1 equals 1.0), True/False
    JSON true/false, None JSON null (the key present). Rows whose metadata is NULL, not
    an object or not valid JSON match nothing."""
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    if not metadata:
        raise ValueError("metadata must name at least one key")
    pieces: list[Piece] = []
    values: list[Any] = []
    names: list[Optional[str]] = []
    for number, (key, value) in enumerate(metadata.items(), 1):
        _check_metadata_item(key, value)
        if pieces:
            pieces.append(" and ")
        key_at = len(values)
        values.append(key)
        names.append(f"metadata_key_{number}")
        kind: tuple[str, list[Piece]]  # the JSON types a value must have, and its test
        if value is None or isinstance(value, bool):
            kind = "", [f" = '{_JSON_CONSTANTS[value]}'"]
        else:
            values.append(value)
            names.append(f"metadata_value_{number}")
            kind = f" in {_JSON_TYPES[type(value)]} and ", [" = ", key_at + 1]
        # any key: decoded by json_each
        decoded: list[Piece] = [f"exists (select 1 from json_each({_METADATA}) where key = ", key_at,
                                " and type", *_wanted(kind, ["atom"]), ")"]
        if _PLAIN_KEY.fullmatch(key) is None:
            pieces += decoded
            continue
        # a plain key: `$.key` (faster), which before SQLite 3.45 misses a key written with
        # escapes in the stored text, so json_each decides for text holding a backslash
        path_at = len(values)
        values.append("$." + key)
        names.append(f"metadata_path_{number}")
        pieces += ["(json_type(", _METADATA, ", ", path_at, ")",
                   *_wanted(kind, ["json_extract(", _METADATA, ", ", path_at, ")"]),
                   " or instr(metadata, '\\') and ", *decoded, ")"]
    return Filter(tuple(pieces), tuple(values), tuple(names), f"metadata={dict(metadata)!r}")


def _wanted(kind: tuple[str, list[Piece]], stored: list[Piece]) -> list[Piece]:
    """The test of a JSON type (already written before it) and the stored value."""
    types, rest = kind
    return [types, *stored, *rest] if types else list(rest)


def _check_metadata_item(key: Any, value: Any) -> None:
    """A key and value `metadata_rule` can compare."""
    if not isinstance(key, str):
        raise TypeError(f"metadata keys must be str, not {type(key).__name__} ({key!r:.60})")
    if value is not None and type(value) not in (str, int, float, bool):
        raise TypeError(
            f"metadata value of {key!r:.60} must be str, int, float, bool or None, "
            f"not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metadata value of {key!r:.60} must be finite, not {value}")
    if type(value) is int and not -MAX_INT - 1 <= value <= MAX_INT:
        raise ValueError(f"metadata value of {key!r:.60} is outside SQLite's 64-bit integer range")
    for text in (key, value):
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"metadata key or value {text!r:.60} is not valid UTF-8 text") from None


def build(
    where: Optional[str], where_args: Any, metadata: Optional[Mapping[str, Any]],
    args_name: str = "where_args",
) -> Optional[Filter]:
    """The filter a search asked for (`where` AND `metadata`), or None for no filter;
    `args_name` is what messages call the parameters' values (the CLI: --param)."""
    if where is None and where_args is not None:
        raise ValueError(f"{args_name} was given without a where expression")
    parts = []
    if where is not None:
        parts.append(parse_where(where, where_args, args_name=args_name))
    if metadata is not None:
        parts.append(metadata_rule(metadata))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] & parts[1]

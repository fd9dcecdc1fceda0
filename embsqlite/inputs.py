"""Rows for `embsqlite embed-multi`: CSV, TSV, a JSON array, newline-delimited JSON, files
in directories, or an SQL query; each becomes `(id, value, metadata)` for a collection.

Rules, the same for every source:
- the id is the `id` field or column if there is one, else the first;
- a `metadata` field or column, if present, is the item's metadata: a JSON object (or JSON
  text of one); empty or null means none;
- every other value is content, joined with single spaces (null as empty text).

Errors are `InputError`, whose message names the source and the row, so the command line
can print it as one line.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Optional

from .model import Value

# One input record as a collection takes it: (id, value, metadata).
Item = tuple[str, Value, Optional[dict]]
FORMATS = ("json", "csv", "tsv", "nl")
DEFAULT_ENCODINGS = ("utf-8", "latin-1")

# CSV fields can be long (whole documents); lift the csv module's 128 KiB default.
csv.field_size_limit(1 << 30)


class InputError(ValueError):
    """Input that cannot be turned into items; the message says where and why."""


def _metadata(value: Any, where: str) -> Optional[dict]:
    """A `metadata` value as a dict (or None), from a JSON object or JSON text of one."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: metadata is not valid JSON: {error}") from None
        except RecursionError:
            raise InputError(f"{where}: metadata is nested too deeply") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"{where}: metadata must be a JSON object, not {type(value).__name__}")
    return value


def _text(value: Any, where: str) -> str:
    """One content value as text: null is empty, numbers as written, containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InputError(f"{where}: a binary value in text content (use --binary)")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def item_from_mapping(row: dict, where: str, binary: bool = False) -> Item:
    """An item from one record: id, content of the other fields, optional metadata."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object with an id, not {type(row).__name__}")
    if not row:
        raise InputError(f"{where}: an empty record has no id")
    keys = list(row)
    id_key = "id" if "id" in row else keys[0]
    id_ = row[id_key]
    if id_ is None or id_ == "":
        raise InputError(f"{where}: the id is empty")
    if isinstance(id_, (dict, list, bytes)):
        raise InputError(f"{where}: the id must be text or a number")
    metadata = _metadata(row.get("metadata"), where) if id_key != "metadata" else None
    rest = [row[k] for k in keys if k != id_key and k != "metadata"]
    if binary:
        if len(rest) != 1 or not isinstance(rest[0], (bytes, bytearray, memoryview)):
            raise InputError(f"{where}: --binary needs exactly one BLOB value besides the id")
        value: Value = bytes(rest[0])
    else:
        value = " ".join(_text(v, where) for v in rest)
    return str(id_), value, metadata


def detect_format(head: bytes) -> str:
    """Guess the format from the first bytes: `[` JSON, `{` NDJSON, tabs TSV, else CSV."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "nl"
    first_line = text.split(b"\n", 1)[0]
    if b"\t" in first_line and b"," not in first_line:
        return "tsv"
    return "csv"


def read_stream(stream: BinaryIO, format: Optional[str], name: str, encoding: str = "utf-8-sig") -> Iterator[Item]:
    """Items from a byte stream in `format` (detected when None), read lazily where possible."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type,type-var]
    if format is None:
        format = detect_format(buffered.peek(4096)[:4096])  # type: ignore[union-attr]
    text = io.TextIOWrapper(buffered, encoding=encoding, newline="")
    try:
        if format == "json":
            yield from _json_items(text, name)
        elif format == "nl":
            yield from _ndjson_items(text, name)
        elif format in ("csv", "tsv"):
            yield from _csv_items(text, name, "\t" if format == "tsv" else ",")
        else:
            raise InputError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    except UnicodeDecodeError as error:
        shown = "UTF-8" if encoding.lower().replace("_", "-") == "utf-8-sig" else encoding
        raise InputError(f"{name}: not {shown} text ({error.reason} at byte {error.start}); "
                         "try --encoding latin-1") from None
    finally:
        text.detach()


def _json_items(text: io.TextIOBase, name: str) -> Iterator[Item]:
    try:
        data = json.load(text)  # type: ignore[arg-type]
    except json.JSONDecodeError as error:
        raise InputError(f"{name}: invalid JSON: {error}") from None
    except RecursionError:
        raise InputError(f"{name}: the JSON is nested too deeply") from None
    if not isinstance(data, list):
        raise InputError(f"{name}: expected a JSON array of objects, got {type(data).__name__}")
    for number, row in enumerate(data, 1):
        yield item_from_mapping(row, f"{name}: item {number}")


def _ndjson_items(text: io.TextIOBase, name: str) -> Iterator[Item]:
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{name}: line {number}: invalid JSON: {error}") from None
        except RecursionError:
            raise InputError(f"{name}: line {number}: the JSON is nested too deeply") from None
        yield item_from_mapping(row, f"{name}: line {number}")


def _csv_items(text: io.TextIOBase, name: str, delimiter: str) -> Iterator[Item]:
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        if not header or not any(header):
            raise InputError(f"{name}: the first line must name the columns")
        for row in reader:
            if not row:
                continue
            where = f"{name}: line {reader.line_num}"
            if len(row) > len(header):
                raise InputError(f"{where}: {len(row)} values but {len(header)} columns")
            record = dict(zip(header, row + [""] * (len(header) - len(row))))
            yield item_from_mapping(record, where)
    except csv.Error as error:
        raise InputError(f"{name}: line {reader.line_num}: {error}") from None


def read_path(path: str, format: Optional[str], encoding: str = "utf-8-sig") -> Iterator[Item]:
    """Items from a file (opened lazily, closed when the iterator ends)."""
    try:
        stream = open(path, "rb")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    with stream:
        yield from read_stream(stream, format, path, encoding)


def check_directories(files: Sequence[tuple[str, str]]) -> None:
    """Raise InputError for a `--files` directory that does not exist or is not a directory."""
    for directory, _pattern in files:
        path = Path(directory)
        if not path.exists():
            raise InputError(f"--files: directory {directory} does not exist")
        if not path.is_dir():
            raise InputError(f"--files: {directory} is not a directory")


def matching_files(
    files: Sequence[tuple[str, str]], warn: Any = None, exclude: Sequence[Path] = ()
) -> Iterator[tuple[Path, Path]]:
    """(directory, path) for each regular file matching each (directory, glob), sorted.
    Directories are passed over; anything else that is not a regular file (a FIFO would
    block the read forever, a device never ends) and the files in `exclude` (the database
    being written and its sidecars) are skipped with a call to `warn(message)`."""
    excluded = {_identity(path) for path in exclude} - {None}
    for directory, pattern in files:
        root = Path(directory)
        for path in sorted(root.glob(pattern)):
            try:
                mode = path.stat().st_mode
            except OSError as error:
                raise InputError(f"cannot read {path}: {error.strerror or error}") from None
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                if warn is not None:
                    warn(f"skipped {path}: not a regular file")
                continue
            if _identity(path) in excluded:
                if warn is not None:
                    warn(f"skipped {path}: it is the database being written")
                continue
            yield root, path


def _identity(path: Path) -> Optional[tuple[int, int]]:
    """(device, inode) of an existing file, so that two names of one file compare equal."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def read_files(
    files: Sequence[tuple[str, str]],
    binary: bool = False,
    encodings: Sequence[str] = DEFAULT_ENCODINGS,
    warn: Any = None,
    exclude: Sequence[Path] = (),
) -> Iterator[Item]:
    """One item per file: id the path relative to its directory, value its bytes (binary)
    or its text in the first of `encodings` that decodes it. A file no encoding decodes,
    a file that is not regular and a file in `exclude` are skipped with a call to
    `warn(message)`; a file that cannot be read is an InputError."""
    check_directories(files)
    for root, path in matching_files(files, warn, exclude):
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from None
        id_ = path.relative_to(root).as_posix()
        if binary:
            yield id_, data, None
            continue
        for encoding in encodings:
            try:
                yield id_, data.decode(encoding), None
                break
            except (UnicodeDecodeError, LookupError):
                continue
        else:
            if warn is not None:
                warn(f"Could not decode text in file {path}")


def count_files(files: Sequence[tuple[str, str]], exclude: Sequence[Path] = ()) -> int:
    check_directories(files)
    return sum(1 for _ in matching_files(files, None, exclude))


SNAPSHOT_TABLE = "embsqlite_sql_input"


def snapshot_sql(conn: Any, query: str) -> int:
    """Run `query` once into a temporary table and return its row count. Reading the
    query's cursor while writing the same database would also see the rows being written
    (a query over `embeddings` would never end); the copy is one fixed snapshot, kept by
    SQLite on disk rather than in Python's memory."""
    conn.execute(f"drop table if exists temp.{SNAPSHOT_TABLE}")
    try:
        conn.execute(f"create temp table {SNAPSHOT_TABLE} as {query}")
    except sqlite3.Error as error:
        raise InputError(f"--sql: {error} (the query must be one SELECT, WITH or VALUES statement)") from None
    return conn.execute(f"select count(*) from temp.{SNAPSHOT_TABLE}").fetchone()[0]


def read_sql(conn: Any, binary: bool = False) -> Iterator[Item]:
    """Items from the snapshot `snapshot_sql` took, in the query's order: first column (or
    `id`) the id, the rest content. The snapshot is dropped at the end."""
    cursor = conn.execute(f"select * from temp.{SNAPSHOT_TABLE} order by rowid")
    names = [d[0] for d in cursor.description or ()]
    if not names:
        raise InputError("--sql: the query returns no columns")
    try:
        for number, row in enumerate(cursor, 1):
            yield item_from_mapping(dict(zip(names, row)), f"--sql: row {number}", binary=binary)
    finally:
        try:
            cursor.close()
            conn.execute(f"drop table if exists temp.{SNAPSHOT_TABLE}")
        except sqlite3.Error:  # the connection was closed first; the table went with it
            pass


def with_prefix(items: Iterable[Item], prefix: str = "", prepend: str = "") -> Iterator[Item]:
    """`prefix` added to each id, `prepend` to each text value."""
    for id_, value, metadata in items:
        if prepend and isinstance(value, str):
            value = prepend + value
        yield prefix + id_, value, metadata

"""An approximate-search index of one collection, for collections far larger than memory.

The index is one file beside the database, `<database>-embsqlite-<collection id>.index`:
a faiss IVF index with 8-bit scalar-quantized codes (`IVF<lists>,SQ8`, inner product of
L2-normalised vectors, so its order approximates cosine order), keyed by the rows' SQLite
`rowid`, followed by a JSON trailer (what was indexed and the `changes.State` read in the
same read transaction as the vectors), the trailer's length and a magic. llm never looks at
it. A search memory-maps the faiss part (`IO_FLAG_MMAP`: a new process pays no load), asks
it for a pool of candidate rowids and re-ranks those rows in SQLite with the ranking
statement, so every returned score is the C cosine's exact bits and the order is SQL's.

The index is used only while `changes.state()` reads exactly what the trailer records;
after any write to the collection (by anyone: the triggers see it), DDL, VACUUM or a lost
trigger it is stale and searches are exact full scans again until `build(...)` runs anew.
It is never updated in place: IVF lists trained on one set of vectors would drift, and a
rebuild is the only way to keep the recall the build measured.

faiss comes from the `index` extra (`pip install 'embsqlite[index]'`); without it building
raises `IndexUnavailable` and searches stay exact.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import __version__, changes, settings
from .transaction import read_transaction

MAGIC = b"EMBSQLIX"
FORMAT = 1
SUFFIX = ".index"
# Candidates re-ranked exactly per search: at least POOL, and POOL_PER_RESULT per result.
POOL = 100
POOL_PER_RESULT = 10
MAX_LISTS = 1024
TRAIN_PER_LIST = 40  # faiss asks for 39 training points per list
PROBES = 16  # lists scanned per search unless the build says otherwise (measured: benchmarks/index.py)
PROBES_ENV = "EMBSQLITE_INDEX_PROBES"  # overrides the build's probes at search time
CHUNK = 50_000  # rows read, normalised and added at a time
HEAD_BYTES = 1 << 20  # the digest covers faiss's headers and the start of its arrays
_TRAILER_END = 16  # the trailer's length (8 bytes, little-endian) and MAGIC


class IndexUnavailable(RuntimeError):
    """faiss is not installed: `pip install 'embsqlite[index]'`."""


class IndexBuildError(ValueError):
    """The index cannot be built here (no database file, a mixed-dimension collection)."""


class InvalidIndex(ValueError):
    """The index file is not one this version wrote, or is damaged (truncated, altered)."""


@dataclass(frozen=True)
class Trailer:
    """What an index file says about itself."""

    collection_id: int
    state: changes.State
    dimensions: int
    count: int
    lists: int
    probes: int
    faiss_bytes: int
    head_digest: str
    seconds: float


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise IndexUnavailable(
            "building an index needs faiss: pip install 'embsqlite[index]'"
        ) from error
    return faiss


def database_file(conn: Any) -> Optional[str]:
    """The main database's file, or None for an in-memory or temporary database."""
    for _seq, name, path in conn.execute("pragma database_list").fetchall():
        if name == "main":
            return path or None
    return None


def path_for(database: str, collection_id: int) -> str:
    """The index file of a collection: beside the database, named for both."""
    return f"{database}-embsqlite-{collection_id}{SUFFIX}"


def lists_for(count: int) -> int:
    """IVF lists for `count` vectors: about sqrt(count), at most MAX_LISTS (the build's
    cost is a product of rows and lists), and never more than the training points allow."""
    return max(1, min(MAX_LISTS, int(math.sqrt(count)), count // TRAIN_PER_LIST))


def file_for(conn: Any, collection_id: int) -> Optional[str]:
    """The collection's index file name (it may not exist), or None without a database file."""
    database = database_file(conn)
    return None if database is None else path_for(database, collection_id)


# Reading and validating a file


def read_trailer(path: str) -> Trailer:
    """The trailer of an index file, after checking its framing and head digest; raises
    InvalidIndex naming what is wrong."""
    # never block on a FIFO or read a device: only a regular file (a symlink to one is fine)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InvalidIndex(f"{path} is not a regular file")
    size = info.st_size
    with os.fdopen(fd, "rb") as handle:
        if size < _TRAILER_END:
            raise InvalidIndex(f"{path} is too short to be an index ({size} bytes)")
        handle.seek(size - _TRAILER_END)
        end = handle.read(_TRAILER_END)
        length = int.from_bytes(end[:8], "little")
        if end[8:] != MAGIC or length <= 0 or length > size - _TRAILER_END:
            raise InvalidIndex(f"{path} does not end with an embsqlite index trailer (truncated?)")
        handle.seek(size - _TRAILER_END - length)
        try:
            fields = json.loads(handle.read(length).decode("utf-8"))
            if fields.pop("format") != FORMAT:
                raise InvalidIndex(f"{path} is an index of another format; build it again")
            fields.pop("embsqlite", None)
            fields["state"] = changes.State(*fields["state"])
            trailer = Trailer(**fields)
        except InvalidIndex:
            raise
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
            raise InvalidIndex(f"{path} has a damaged trailer ({error})") from None
        if trailer.faiss_bytes != size - _TRAILER_END - length:
            raise InvalidIndex(f"{path} has the wrong size for its trailer (truncated or appended to)")
        handle.seek(0)
        if _digest(handle.read(min(HEAD_BYTES, trailer.faiss_bytes))) != trailer.head_digest:
            raise InvalidIndex(f"{path} was altered after it was built (its head digest differs)")
    return trailer


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class _Loaded:
    """An open index file: its trailer and the memory-mapped faiss index."""

    def __init__(self, path: str) -> None:
        self.trailer = read_trailer(path)
        faiss = _faiss()
        try:
            self.index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as error:
            raise InvalidIndex(f"{path} could not be read by faiss: {str(error).splitlines()[0]}") from None
        if self.index.d != self.trailer.dimensions or self.index.ntotal != self.trailer.count:
            raise InvalidIndex(f"{path} does not hold what its trailer says")
        self.lock = threading.Lock()


_open_lock = threading.Lock()
_opened: dict[tuple[str, int, int, int, int], _Loaded] = {}
_warned: set[tuple[str, str]] = set()


def _identity(path: str) -> Optional[tuple[str, int, int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _load(path: str) -> Optional[_Loaded]:
    """The index at `path`, opened once per file version per process; None when absent.
    Raises InvalidIndex or IndexUnavailable."""
    key = _identity(path)
    if key is None:
        return None
    with _open_lock:
        loaded = _opened.get(key)
        if loaded is None:
            for old in [k for k in _opened if k[0] == path]:
                del _opened[old]
            loaded = _opened[key] = _Loaded(path)
    return loaded


def status(conn: Any, collection_id: int) -> str:
    """`none`, `current`, `stale` or `invalid: <why>` for the collection's index file."""
    database = database_file(conn)
    if database is None:
        return "none"
    path = path_for(database, collection_id)
    if not os.path.exists(path):
        return "none"
    try:
        trailer = read_trailer(path)
    except (InvalidIndex, OSError) as error:
        return f"invalid: {error}"
    with read_transaction(conn):
        now = changes.state(conn, collection_id)
        current = now is not None and changes.unchanged(conn, trailer.state, now)
    return "current" if current and trailer.collection_id == collection_id else "stale"


# Searching


def candidates(conn: Any, collection_id: int, query: bytes, pool: int) -> Optional[list[int]]:
    """Rowids of about `pool` rows near `query` from the collection's index, or None when
    there is no usable index: absent, stale (the collection changed since the build),
    another dimension, damaged (a warning names the file once), or faiss missing. Call
    inside the read transaction that then re-ranks the rows."""
    database = database_file(conn)
    if database is None:
        return None
    path = path_for(database, collection_id)
    try:
        loaded = _load(path)
    except (InvalidIndex, IndexUnavailable, OSError) as error:
        _warn_once(path, f"the index is not used, searches scan every row: {error}")
        return None
    if loaded is None:
        return None
    trailer = loaded.trailer
    if trailer.collection_id != collection_id or len(query) != 4 * trailer.dimensions:
        return None
    now = changes.state(conn, collection_id)
    if now is None or not changes.unchanged(conn, trailer.state, now):
        return None
    import numpy as np

    vector = np.frombuffer(query, dtype="<f4").astype(np.float32).reshape(1, -1)
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if not math.isfinite(norm):
        return None  # SQL raises the error that names the function
    if norm > 0:
        vector = vector / np.float32(norm)
    with loaded.lock:
        ivf = _faiss().extract_index_ivf(loaded.index)
        probes = int(settings.env_number(PROBES_ENV, trailer.probes, minimum=1, integer=True))
        ivf.nprobe = min(probes, trailer.lists)
        _scores, ids = loaded.index.search(vector, min(pool, max(1, trailer.count)))
    return [int(rowid) for rowid in ids[0] if rowid >= 0]


def _warn_once(path: str, message: str) -> None:
    if (path, message) not in _warned:
        _warned.add((path, message))
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# Building


def build(
    conn: Any,
    collection_id: int,
    *,
    probes: int = PROBES,
    progress: Optional[Callable[[int], None]] = None,
) -> tuple[str, Trailer]:
    """Build the collection's index file (replacing any) from the vectors stored now and
    return its path and trailer. Installs change tracking first (a write), then reads the
    state and every vector in one read transaction. `progress` gets row counts."""
    faiss = _faiss()

    if not isinstance(probes, int) or isinstance(probes, bool) or probes < 1:
        raise ValueError(f"probes must be a positive int, not {probes!r}")
    database = database_file(conn)
    if database is None:
        raise IndexBuildError("an index is kept beside the database file; this database has no file")
    path = path_for(database, collection_id)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        raise IndexBuildError(f"cannot write the index in {directory} (not writable)")
    changes.install(conn)
    started = time.perf_counter()
    with read_transaction(conn):
        state = changes.state(conn, collection_id)
        if state is None:
            raise IndexBuildError("the database does not keep change tokens; the index could not be made safe")
        dimensions, count = _shape(conn, collection_id)
        lists = lists_for(count)
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dimensions), dimensions, lists,
            faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT,
        )
        index.cp.spherical = True
        index.train(_sample(conn, collection_id, dimensions, min(count, lists * TRAIN_PER_LIST)))
        added, first, last = 0, 0, 0
        for rowids, matrix in _chunks(conn, collection_id, dimensions):
            index.add_with_ids(matrix, rowids)
            added += len(rowids)
            low, high = int(rowids.min()), int(rowids.max())
            first, last = (low, high) if added == len(rowids) else (min(first, low), max(last, high))
            if progress is not None:
                progress(len(rowids))
        if added != count:
            raise IndexBuildError(f"the collection changed while it was read ({count} rows, then {added})")
        state = changes.recorded(conn, state, first, last)
    handle, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(database).st_mode))  # readable by whoever reads the database
        faiss.write_index(index, tmp)
        del index
        faiss_bytes = os.path.getsize(tmp)
        with open(tmp, "rb") as part:
            head = _digest(part.read(min(HEAD_BYTES, faiss_bytes)))
        trailer = Trailer(
            collection_id, state, dimensions, count, lists, probes, faiss_bytes, head,
            round(time.perf_counter() - started, 3),
        )
        fields = {"format": FORMAT, "embsqlite": __version__, **trailer.__dict__, "state": list(state)}
        text = json.dumps(fields, sort_keys=True).encode("utf-8")
        with open(tmp, "ab") as out:
            out.write(text + len(text).to_bytes(8, "little") + MAGIC)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path, trailer


def remove(conn: Any, collection_id: int) -> bool:
    """Delete the collection's index file; returns whether there was one."""
    database = database_file(conn)
    if database is None:
        return False
    path = path_for(database, collection_id)
    if not os.path.exists(path):
        return False
    os.remove(path)
    return True


def _shape(conn: Any, collection_id: int) -> tuple[int, int]:
    """(dimensions, rows with a vector); one dimension for all, else IndexBuildError."""
    shortest, longest, count = conn.execute(  # one pass, no temporary b-tree
        "select min(length(embedding)), max(length(embedding)), count(*) from embeddings"
        " where collection_id = ? and embedding is not null and id is not null",
        (collection_id,),
    ).fetchone()
    if not count:
        raise IndexBuildError("the collection has no vectors to index")
    if shortest != longest or shortest % 4 or shortest == 0:
        raise IndexBuildError("the collection's vectors do not all have one dimension")
    return shortest // 4, count


def _normalised(blobs: list[bytes], dimensions: int) -> Any:
    import numpy as np

    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, dimensions).astype(np.float32)
    if not np.isfinite(matrix).all():
        raise IndexBuildError("the collection holds a vector with a non-finite value")
    scale = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
    scale[scale == 0] = 1.0
    matrix /= scale[:, None].astype(np.float32)  # in place: one copy of the rows in all
    return matrix


def _sample(conn: Any, collection_id: int, dimensions: int, size: int) -> Any:
    """`size` vectors at random rowids of the collection, normalised: training points."""
    import numpy as np

    rowids = np.fromiter(
        (row[0] for row in conn.execute(
            "select rowid from embeddings where collection_id = ? and embedding is not null and id is not null",
            (collection_id,),
        )),
        dtype=np.int64,
    )
    chosen = np.sort(np.random.default_rng(0).choice(rowids, size=size, replace=False))
    del rowids
    blobs: list[bytes] = []
    for start in range(0, len(chosen), 10_000):
        part = json.dumps(chosen[start : start + 10_000].tolist())
        blobs += [
            row[0] for row in conn.execute(
                "select embedding from embeddings where rowid in (select value from json_each(?))",
                (part,),
            )
        ]
    return _normalised(blobs, dimensions)


def _chunks(conn: Any, collection_id: int, dimensions: int) -> Iterator[tuple[Any, Any]]:
    """(rowids, normalised vectors) of the collection, CHUNK rows at a time."""
    import numpy as np

    cursor = conn.execute(
        "select rowid, embedding from embeddings where collection_id = ? and embedding is not null and id is not null",
        (collection_id,),
    )
    while True:
        rows = cursor.fetchmany(CHUNK)
        if not rows:
            return
        yield np.array([row[0] for row in rows], dtype=np.int64), _normalised(
            [row[1] for row in rows], dimensions
        )

"""Embedding on a Dask cluster (`dask.distributed`, the `dask` extra): workers run the
model, this process reads, checks and deduplicates the items and stays the only writer.

Per batch, this process asks the database which contents were never stored (the same
query `ingest.write_batch` uses) and sends only those; contents another unwritten batch
already sends are not sent twice. Each worker process loads the model once (cached by
`ModelSpec.key`) and keeps it. At most `window` batches are unwritten at a time, so memory
stays flat whatever the input size. A batch is written in its own transaction as soon as
its vectors have arrived and every earlier batch it shares an id or a content with is
written; otherwise batches commit in the order their results arrive. A task that raises
is retried (`RETRIES`); one whose worker dies is re-run elsewhere by the scheduler.
"""
from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from . import __version__, ingest
from .collection import check_count
from .model import EmbeddingModel, ModelNotInstalledError, UnknownModelError
from .registry import LLM_PREFIX, get_embedding_model

RETRIES = 2  # re-runs of a task that raised (an API model's transient error)
BATCHES_PER_THREAD = 2  # unwritten batches per worker thread: one running, one queued
CONNECT_TIMEOUT = "20s"

DaskTarget = Union[Any, str, int]  # a distributed.Client, a scheduler address, or N workers


class ClusterError(RuntimeError):
    """The cluster cannot embed: no scheduler at the address, a worker without the model
    or with another embsqlite version, a model that cannot be sent to workers."""


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise ModelNotInstalledError(
            "embedding on a Dask cluster needs dask.distributed: pip install 'embsqlite[dask]'"
        ) from error
    return distributed


@contextlib.contextmanager
def connect(dask: DaskTarget) -> Iterator[Any]:
    """A `distributed.Client` for `dask`: the client given (left open), a scheduler address
    (e.g. "tcp://10.0.0.5:8786"), or an int N: a LocalCluster of N one-thread worker
    processes on 127.0.0.1, stopped on exit."""
    distributed = _distributed()
    if isinstance(dask, distributed.Client):
        yield dask
    elif isinstance(dask, int) and not isinstance(dask, bool):
        if dask < 1:
            raise ValueError(f"a local Dask cluster needs at least 1 worker, not {dask}")
        with distributed.LocalCluster(
            n_workers=dask, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as local, distributed.Client(local) as client:
            yield client
    elif isinstance(dask, str) and dask:
        try:
            client = distributed.Client(dask, timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise ClusterError(f"no Dask scheduler answers at {dask!r}: {error}") from None
        with client:
            yield client
    else:
        raise TypeError(
            "dask must be a distributed.Client, a scheduler address or a number of local "
            f"workers, not {dask!r:.80}"
        )


# The model on the workers


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: by `name` through its own registry (built-ins,
    plugins, `llm:` models), else from `pickled` (cloudpickle) for a model only this
    process knows. `key` names the worker's cached copy."""

    name: str
    version: str
    by_name: bool
    pickled: Optional[bytes]
    key: str


def model_spec(model: EmbeddingModel) -> ModelSpec:
    """The ModelSpec for this process's `model`; ClusterError if workers could not get it."""
    from .llm_bridge import LlmEmbeddingModel

    if isinstance(model, LlmEmbeddingModel):
        name = LLM_PREFIX + model.model_id
        return ModelSpec(name, __version__, True, None, name)
    try:
        found: Optional[EmbeddingModel] = get_embedding_model(model.model_id)
    except (UnknownModelError, ModelNotInstalledError):
        found = None
    try:
        import cloudpickle

        pickled: Optional[bytes] = cloudpickle.dumps(model)
    except Exception as error:  # any object may fail to pickle in its own way
        if found is None or type(found) is not type(model):
            raise ClusterError(
                f"model {model.model_id!r} cannot be sent to Dask workers: it is not the "
                f"model registered under its id here and it cannot be pickled ({error}); "
                "register it through a plugin installed on every worker"
            ) from None
        pickled = None
    by_name = found is model or pickled is None
    key = model.model_id if pickled is None else hashlib.sha256(pickled).hexdigest()
    return ModelSpec(model.model_id, __version__, by_name, pickled, key)


_worker_models: dict[str, EmbeddingModel] = {}
_worker_lock = threading.Lock()


def worker_model(spec: ModelSpec) -> EmbeddingModel:
    """The model of `spec` in this (worker) process, loaded on first use and kept."""
    with _worker_lock:
        model = _worker_models.get(spec.key)
        if model is None:
            model = _worker_models[spec.key] = _load_model(spec)
        return model


def _load_model(spec: ModelSpec) -> EmbeddingModel:
    where = f"Dask worker on {socket.gethostname()}"
    if spec.version != __version__:
        raise ClusterError(
            f"the {where} has embsqlite {__version__}, this process {spec.version}: "
            "install the same version on every worker"
        )
    if spec.by_name:
        try:
            return get_embedding_model(spec.name)
        except (UnknownModelError, ModelNotInstalledError) as error:
            if spec.pickled is None:
                raise ClusterError(
                    f"the {where} cannot load model {spec.name!r}: {error}; install "
                    "embsqlite with the model's extra or plugin on every worker"
                ) from None
    assert spec.pickled is not None
    import cloudpickle

    try:
        return cloudpickle.loads(spec.pickled)
    except Exception as error:  # a class or module this worker lacks, among others
        raise ClusterError(
            f"the {where} cannot unpickle model {spec.name!r} ({type(error).__name__}: "
            f"{error}); install what defines it on every worker"
        ) from None


def embed_on_worker(spec: ModelSpec, values: list[ingest.Value], labels: list[str]) -> list[bytes]:
    """The task: embed `values` (labelled "item N (id ...)") into float32 blobs. A model
    error names the first item that fails on its own."""
    model = worker_model(spec)
    try:
        return ingest.embed_values(model, values)
    except Exception as error:
        raise _naming_item(model, values, labels, error) from None


def _naming_item(
    model: EmbeddingModel, values: list[ingest.Value], labels: list[str], error: Exception
) -> Exception:
    """`error`, its message prefixed with the label of the first value that fails alone
    (else the batch's range of items); exceptions with their own message layout get a note."""
    where = f"{labels[0]} to {labels[-1]}" if len(labels) > 1 else labels[0]
    if len(values) > 1:
        for value, label in zip(values, labels):
            try:
                ingest.embed_values(model, [value])
            except Exception as alone:
                error, where = alone, label
                break
    message = f"{where}: {error}"
    if type(error).__str__ is BaseException.__str__ and len(error.args) == 1:
        error.args = (message,)
    elif hasattr(error, "add_note"):  # Python 3.11 and later
        error.add_note(message)
    return error


# This process: dispatch, collect, write


@dataclass(eq=False)
class _Batch:
    """A checked batch between dispatch and commit."""

    items: list
    wanted: list[bytes]  # content hashes sent to the cluster, in task order
    deps: list[_Batch]  # earlier unwritten batches sharing an id or a content
    vectors: Optional[dict[bytes, bytes]] = None  # set when the task's result arrived
    written: bool = False
    future: Any = field(default=None, repr=False)


class _Writer:
    """Dispatches batches to the cluster and commits them as their vectors arrive."""

    def __init__(self, collection: Any, client: Any, spec: ModelSpec, store: bool,
                 window: Optional[int], on_commit: Optional[Callable[[int], None]]) -> None:
        distributed = _distributed()
        self.collection, self.client, self.store, self.on_commit = collection, client, store, on_commit
        if window is None:
            threads = sum(client.nthreads().values())
            window = max(2, BATCHES_PER_THREAD * threads)
        self.window = window
        self.spec = spec  # sent with each task: a worker that joins later needs it too
        self.pending: list[_Batch] = []  # unwritten, in dispatch order
        self.sending: dict[bytes, _Batch] = {}  # content hash -> unwritten batch embedding it
        self.holding: dict[str, _Batch] = {}  # id -> last unwritten batch holding it
        self.running: dict[Any, _Batch] = {}  # future -> batch
        self.done = distributed.as_completed()

    def dispatch(self, items: list, first: int) -> None:
        """Send the contents of `items` (numbered from `first`) the database lacks."""
        with self.collection._lock:
            wanted = ingest.content_to_embed(self.collection.conn, self.collection.id, items)
        deps = {self.holding[id_] for id_, _, _ in items if id_ in self.holding}
        for digest in [d for d in wanted if d in self.sending]:
            deps.add(self.sending[digest])
            del wanted[digest]
        batch = _Batch(items, list(wanted), sorted(deps, key=self.pending.index))
        if wanted:
            values = [value for _, value in wanted.values()]
            labels = [
                f"item {first + index} (id {items[index][0]!r:.80})" for index, _ in wanted.values()
            ]
            batch.future = self.client.submit(
                embed_on_worker, self.spec, values, labels, retries=RETRIES, pure=False
            )
            self.running[batch.future] = batch
            self.done.add(batch.future)
        else:
            batch.vectors = {}
        self.pending.append(batch)
        self.sending.update((digest, batch) for digest in batch.wanted)
        self.holding.update((id_, batch) for id_, _, _ in items)
        self.write_ready()

    def collect_one(self) -> None:
        """Wait for the next finished task (raising its error) and write what is ready."""
        future = next(self.done)
        batch = self.running.pop(future)
        try:
            blobs = future.result()  # the model's error raises here
        except _distributed().KilledWorker as error:
            first, last = batch.items[0][0], batch.items[-1][0]
            raise ClusterError(
                f"the batch of ids {first!r:.80} to {last!r:.80}: every worker that ran it "
                f"died ({error})"
            ) from error
        batch.future = None
        batch.vectors = dict(zip(batch.wanted, blobs))
        self.write_ready()

    def write_ready(self) -> None:
        """Commit, in dispatch order, each batch whose vectors and dependencies are in."""
        for batch in list(self.pending):
            if batch.vectors is None or not all(dep.written for dep in batch.deps):
                continue
            given: dict[bytes, bytes] = {}
            for dep in batch.deps:
                given.update(dep.vectors or {})
            given.update(batch.vectors)
            self.collection._write_batch(batch.items, self.store, given)
            batch.written, batch.deps = True, []
            self.pending.remove(batch)
            for digest in batch.wanted:
                if self.sending.get(digest) is batch:
                    del self.sending[digest]
            for id_, _, _ in batch.items:
                if self.holding.get(id_) is batch:
                    del self.holding[id_]
            if self.on_commit is not None:
                self.on_commit(len(batch.items))

    def cancel(self) -> None:
        """Stop the tasks still running (after an error)."""
        if self.running:
            self.client.cancel(list(self.running))
            self.running.clear()


def embed(collection: Any, entries: Iterable[Sequence[Any]], store: bool, batch_size: int,
          dask: DaskTarget, on_commit: Optional[Callable[[int], None]] = None,
          window: Optional[int] = None) -> None:
    """Write (id, value, metadata) `entries` into `collection` with the model run on the
    cluster `dask` (see `connect`); `on_commit(n)` after each batch of n items commits.
    An input error writes the batches before it and raises; a model error raises at once."""
    check_count("batch_size", batch_size, minimum=1)
    if window is not None:
        check_count("window", window, minimum=1)
    spec = model_spec(collection.model())  # refused here, before any cluster starts
    with connect(dask) as client:
        writer = _Writer(collection, client, spec, store, window, on_commit)
        try:
            batches = ingest.checked_batches(entries, batch_size)
            first = 1
            while True:
                try:
                    batch = next(batches, None)
                except Exception:
                    while writer.pending:  # what came before a bad item is written
                        writer.collect_one()
                    raise
                if batch is None:
                    break
                while len(writer.pending) >= writer.window or writer.done.has_ready():
                    writer.collect_one()
                writer.dispatch(batch, first)
                first += len(batch)
            while writer.pending:
                writer.collect_one()
        finally:
            writer.cancel()

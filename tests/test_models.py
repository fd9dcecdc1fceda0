"""Embedding models: the base class, the registry, plugins, the default model and the user
directory, llm's models."""
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
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from model_helpers import run_python

import embsqlite
from embsqlite import EmbeddingModel, UnknownModelError, plugins, registry

TESTS = Path(__file__).parent
PLUGIN_PKG = TESTS / "plugin_pkg"
BROKEN_PLUGIN_PKG = TESTS / "broken_plugin_pkg"


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


def test_register_rejects_a_string_of_aliases_and_bad_ids():
    model = Recorder(model_id="alias-check")
    with pytest.raises(TypeError, match="alias-check.*list of strings"):
        embsqlite.register_embedding_model(model, aliases="ac")
    with pytest.raises(TypeError, match="alias-check.*non-empty strings"):
        embsqlite.register_embedding_model(model, aliases=["ok", 7])
    with pytest.raises(ValueError, match="Recorder needs a model_id"):
        embsqlite.register_embedding_model(Recorder(model_id=""))
    with pytest.raises(ValueError, match="model_id string, not 5"):
        embsqlite.register_embedding_model(Recorder(model_id=5))
    for name in ("alias-check", "a", "c", "ok"):
        with pytest.raises(UnknownModelError):
            embsqlite.get_embedding_model(name)


def test_saved_state_restores_the_registry():
    state = registry.saved_state()
    temporary = Recorder(model_id="temporary-model")
    replacement = Recorder(model_id="hashing")
    embsqlite.register_embedding_model(temporary)
    embsqlite.register_embedding_model(replacement, aliases=["hash"])
    assert embsqlite.get_embedding_model("hash") is replacement
    registry.restore_state(state)
    with pytest.raises(UnknownModelError):
        embsqlite.get_embedding_model("temporary-model")
    assert embsqlite.get_embedding_model("hash").model_id == "hashing"
    assert embsqlite.get_embedding_model("hash") is not replacement


@pytest.mark.slow
def test_each_test_starts_with_the_registry_and_user_directory_it_was_given(tmp_path):
    """The autouse fixtures of conftest.py, run for real: a pytest session whose first test
    registers a model, a plugin and a saved default, and whose second test sees none."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_leaks.py").write_text(
        "import os, pathlib, embsqlite\n"
        "from embsqlite import plugins\n"
        "class Leaky(embsqlite.EmbeddingModel):\n"
        "    model_id = 'leaky'\n"
        "    def embed_batch(self, items):\n"
        "        return ([1.0] for _ in items)\n"
        "class Plugin:\n"
        "    pass\n"
        "def test_first():\n"
        "    embsqlite.register_embedding_model(Leaky(), aliases=['leak'])\n"
        "    plugins.pm.register(Plugin(), name='leaky-plugin')\n"
        "    embsqlite.set_default_embedding_model('leak')\n"
        "    assert embsqlite.get_default_embedding_model() == 'leaky'\n"
        "    saved = pathlib.Path(os.environ['EMBSQLITE_USER_PATH']) / 'default_model.txt'\n"
        "    assert saved.read_text().strip() == 'leaky'\n"
        "def test_second():\n"
        "    ids = [m.model_id for m in embsqlite.get_embedding_models()]\n"
        "    assert 'leaky' not in ids, ids\n"
        "    assert plugins.pm.get_plugin('leaky-plugin') is None\n"
        "    assert embsqlite.get_default_embedding_model() in ('all-MiniLM-L6-v2', 'hashing')\n"
    )
    outside = tmp_path / "outside-user-path"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_leaks.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "EMBSQLITE_USER_PATH": str(outside)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert not outside.exists()  # the session's own user path was never written


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
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11: tomli, which pytest itself depends on there
        import tomli as tomllib
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


def _install(packages: list[Path], tmp_path: Path) -> Path:
    """pip-install the test plugin packages into a new target directory; return it."""
    wheels = [str(_build_wheel(package, tmp_path)) for package in packages]
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), *wheels],
        check=True, timeout=120,
    )
    return target


@pytest.mark.slow
def test_plugin_package_found_through_entry_point(tmp_path):
    target = _install([PLUGIN_PKG], tmp_path)
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


@pytest.mark.slow
def test_broken_plugins_warn_and_the_working_plugin_still_loads(tmp_path):
    target = _install([PLUGIN_PKG, BROKEN_PLUGIN_PKG], tmp_path)
    code = (
        "import json, warnings, embsqlite\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    ids = [m.model_id for m in embsqlite.get_embedding_models()]\n"
        "print(json.dumps([ids, embsqlite.get_embedding_model('letters').embed('aa')[0],\n"
        "                  sorted(str(w.message) for w in caught)]))\n"
    )
    pythonpath = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    ids, letters_a, messages = json.loads(run_python(code, PYTHONPATH=pythonpath).stdout)
    assert ids == ["hashing", "all-MiniLM-L6-v2", "letter-counts"]  # no half-registered model
    assert letters_a == 2.0
    assert len(messages) == 3, messages
    bad_aliases, broken_hook, broken_import = messages
    assert "'bad_aliases' failed to register" in bad_aliases and "list of strings" in bad_aliases
    assert "'broken_hook' failed to register" in broken_hook and "hook broke" in broken_hook
    assert "'broken_import' failed to load" in broken_import
    assert "embsqlite_missing_dependency" in broken_import


def test_a_plugin_whose_hook_raises_adds_nothing_and_the_others_count():
    """In-process, through the plugin manager: pluggy stops at the failing hook, we do not."""

    class Good:
        @embsqlite.hookimpl
        def register_embedding_models(self, register):
            register(Recorder(model_id="from-good-plugin"), aliases=["good"])

    class Broken:
        @embsqlite.hookimpl
        def register_embedding_models(self, register):
            register(Recorder(model_id="from-broken-plugin"))
            raise RuntimeError("broken on purpose")

    plugins.pm.register(Good(), name="good-plugin")
    plugins.pm.register(Broken(), name="broken-plugin")
    with pytest.warns(UserWarning, match="'broken-plugin' failed to register.*broken on purpose"):
        found = plugins.plugin_models()
    assert [(model.model_id, aliases) for model, aliases in found] == [("from-good-plugin", ["good"])]


# ---------------------------------------------------------------- default model, user directory


def test_default_model_is_minilm_with_extra():
    assert embsqlite.get_default_embedding_model() == "all-MiniLM-L6-v2"


def test_default_model_set_saved_in_the_user_path_and_env_overrides(user_path, monkeypatch):
    embsqlite.set_default_embedding_model("hash")
    assert embsqlite.get_default_embedding_model() == "hashing"
    assert (user_path / "default_model.txt").read_text().strip() == "hashing"
    monkeypatch.setenv("EMBSQLITE_DEFAULT_MODEL", "minilm")
    assert embsqlite.get_default_embedding_model() == "minilm"
    monkeypatch.delenv("EMBSQLITE_DEFAULT_MODEL")
    embsqlite.set_default_embedding_model(None)
    assert embsqlite.get_default_embedding_model() == "all-MiniLM-L6-v2"
    assert not (user_path / "default_model.txt").exists()
    with pytest.raises(UnknownModelError):
        embsqlite.set_default_embedding_model("not-a-model")
    assert embsqlite.get_default_embedding_model() == "all-MiniLM-L6-v2"


def test_user_path_that_is_a_file_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("EMBSQLITE_USER_PATH", str(not_a_dir))
    for action in (embsqlite.get_default_embedding_model,
                   lambda: embsqlite.set_default_embedding_model("hashing")):
        with pytest.raises(NotADirectoryError, match="EMBSQLITE_USER_PATH must name a directory") as info:
            action()
        assert info.value.filename == str(not_a_dir)
    assert not_a_dir.read_text() == "x"
    monkeypatch.setenv("EMBSQLITE_DEFAULT_MODEL", "hash")  # the variable wins; no file is read
    assert embsqlite.get_default_embedding_model() == "hash"


def test_empty_user_path_means_unset(tmp_path, monkeypatch):
    from embsqlite import user_dir

    monkeypatch.setenv("EMBSQLITE_USER_PATH", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    assert user_dir.user_path() is None
    monkeypatch.setenv("EMBSQLITE_USER_PATH", "~/somewhere")
    assert user_dir.user_path() == Path.home() / "somewhere"


@pytest.mark.linux_only(reason="platformdirs follows XDG_* there")
def test_without_user_path_the_platform_config_directory_keeps_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBSQLITE_USER_PATH")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    embsqlite.set_default_embedding_model("hash")
    saved = tmp_path / "xdg-config" / "embsqlite" / "default_model.txt"
    assert saved.read_text().strip() == "hashing"
    assert embsqlite.get_default_embedding_model() == "hashing"


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

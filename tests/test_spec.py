from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqdeploy.errors import InputFileNotFound, SeqdeployError, SpecError
from seqdeploy.spec import LayerSpec, load_spec, parse_spec_text

MODELS = Path(__file__).resolve().parent.parent / "models"

MINIMAL = """
name = "t"
[data]
source = "breast_cancer"
[[layers]]
type = "Dense"
units = 1
activation = "sigmoid"
[compile]
loss = "binary_crossentropy"
"""


def test_every_shipped_spec_parses():
    specs = sorted(MODELS.glob("*.toml"))
    assert len(specs) >= 5
    for path in specs:
        spec = load_spec(path)
        assert spec.name == path.stem
        assert spec.layers and spec.fit.epochs >= 1


def test_seed_spec_matches_the_seed_model():
    spec = load_spec(MODELS / "breast_cancer_mlp.toml")
    assert [(l.type, l.kwargs.get("units"), l.kwargs.get("activation")) for l in spec.layers] == [
        ("Dense", 16, "relu"), ("Dense", 8, "relu"), ("Dense", 1, "sigmoid")]
    assert (spec.compile.optimizer, spec.compile.loss, spec.compile.metrics) == ("adam", "binary_crossentropy", ("accuracy",))
    assert (spec.fit.epochs, spec.fit.batch_size, spec.fit.validation_split) == (20, 32, 0.2)


def test_defaults_and_overrides():
    spec = parse_spec_text(MINIMAL)
    assert spec.compile.optimizer == "adam" and spec.fit.seed == 42
    spec2 = spec.with_overrides(epochs=3, seed=7)
    assert (spec2.fit.epochs, spec2.fit.seed) == (3, 7)
    with pytest.raises(SpecError, match="epochs = 0; expected an integer >= 1"):
        spec.with_overrides(epochs=0)


def test_optimizer_table_and_wrapped_layers():
    text = MINIMAL.replace('loss = "binary_crossentropy"',
                           'loss = "binary_crossentropy"\noptimizer = { name = "adam", learning_rate = 0.01 }')
    text += '\n[[layers]]\ntype = "Bidirectional"\nlayer = { type = "LSTM", units = 4 }\n'
    spec = parse_spec_text(text)
    assert spec.compile.optimizer_kwargs == {"learning_rate": 0.01}
    wrapped = spec.layers[-1].kwargs["layer"]
    assert isinstance(wrapped, LayerSpec) and wrapped.type == "LSTM"


@pytest.mark.parametrize("mutation, message", [
    (lambda t: t.replace('[data]\nsource = "breast_cancer"\n', ""), "missing \\[data\\]"),
    (lambda t: t.replace('source = "breast_cancer"', 'source = "mnist"'), "source = 'mnist'"),
    (lambda t: t + '\n[fit]\nepochs = -1\n', "epochs = -1"),
    (lambda t: t + '\n[fit]\nepochs = "ten"\n', "expected an integer"),
    (lambda t: t + '\n[fit]\nvalidation_split = 0.9\n', "validation_split"),
    (lambda t: t + '\n[input]\nshape = [0]\n', "positive integers"),
    (lambda t: t + '\n[input]\ndtype = "float64"\n', "dtype"),
    (lambda t: t.replace("[compile]", "[compile]\nlos = 1"), "did you mean 'loss'"),
    (lambda t: "epoch = 3\n" + t, "unknown key 'epoch' in top level"),
    (lambda t: t.replace("[[layers]]\ntype = \"Dense\"\nunits = 1\nactivation = \"sigmoid\"\n", ""), "no \\[\\[layers\\]\\]"),
    (lambda t: "labels = []\n" + t, "labels = \\[\\]"),
    (lambda t: 'labels = ["a", "a"]\n' + t, "duplicates"),
    (lambda t: t.replace('source = "breast_cancer"', 'source = "csv"'), "path"),
    (lambda t: t + "\n[[[broken\n", "invalid TOML"),
])
def test_bad_specs_name_the_key(mutation, message):
    with pytest.raises(SpecError, match=message):
        parse_spec_text(mutation(MINIMAL), path="bad.toml")


def test_missing_and_wrong_files(tmp_path):
    with pytest.raises(InputFileNotFound, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    (tmp_path / "x.yaml").write_text("a: 1")
    with pytest.raises(SpecError, match="expected .toml or .py"):
        load_spec(tmp_path / "x.yaml")


def test_py_spec(tmp_path):
    (tmp_path / "m.py").write_text(
        "SPEC = {'data': {'source': 'breast_cancer'}, 'compile': {'loss': 'binary_crossentropy'}}\n"
        "def build_model():\n    raise RuntimeError('not called at parse time')\n")
    spec = load_spec(tmp_path / "m.py")
    assert spec.build_model is not None and spec.layers == ()
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(SpecError, match="build_model"):
        load_spec(tmp_path / "bad.py")


_toml_scalar = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False, width=32),
                         st.booleans(), st.text(max_size=8), st.sampled_from(["breast_cancer", "Dense", "adam", "csv"]))
_keys = st.sampled_from(["name", "data", "source", "layers", "type", "units", "compile", "loss", "fit", "epochs",
                         "batch_size", "validation_split", "input", "shape", "labels", "optimizer", "metrics", "x"])
_values = st.recursive(_toml_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


def _to_toml(doc: dict) -> str:
    import json

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"

    return "\n".join(f"{k} = {val(v)}" for k, v in doc.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=8))
def test_random_documents_give_a_spec_or_a_spec_error(doc):
    try:
        parse_spec_text(_to_toml(doc), path="fuzz.toml")
    except SeqdeployError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_a_spec_or_a_spec_error(text):
    try:
        parse_spec_text(text, path="fuzz.toml")
    except SeqdeployError:
        pass

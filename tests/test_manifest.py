"""Bundle manifests: derived from a run directory, validated, integrity-checked.

The tiny bundles here are built with onnx.helper (no TensorFlow); the
builders (`build_bundle`, `reference`) are reused by test_runtime.py and
test_predict_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqdeploy.atomic import sha256_file
from seqdeploy.errors import BundleError, InputFileNotFound, IntegrityError
from seqdeploy.runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION, Manifest, Standardize, Tokenize, Window, check_relative_path, load_manifest, manifest_from_dict
from seqdeploy.bundle.write import inspect_path, write_bundle_manifest

KINDS = ("binary", "multiclass", "text", "window")
VOCAB = ["<pad>", "<oov>", "good", "bad", "film", "plot", "great", "awful"]
SEQ_LEN = 5


# --------------------------------------------------------------------------- builders


def _model(kind: str, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    if kind == "binary":
        x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])
        nodes += [helper.make_node("MatMul", ["features", const("W", rng.normal(size=(4, 1)).astype(np.float32))], ["mm"]),
                  helper.make_node("Add", ["mm", const("b", np.array([0.1], np.float32))], ["logit"]),
                  helper.make_node("Sigmoid", ["logit"], ["prob"])]
        y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])
    elif kind == "multiclass":
        x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])
        nodes += [helper.make_node("MatMul", ["features", const("W", rng.normal(size=(3, 3)).astype(np.float32))], ["mm"]),
                  helper.make_node("Add", ["mm", const("b", rng.normal(size=(3,)).astype(np.float32))], ["logits"]),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
        y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])
    elif kind == "text":
        x = helper.make_tensor_value_info("tokens", TensorProto.INT32, ["batch", SEQ_LEN])
        nodes += [helper.make_node("Gather", [const("E", rng.normal(size=(len(VOCAB), 2)).astype(np.float32)), "tokens"], ["emb"]),
                  helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
                  helper.make_node("MatMul", ["pooled", const("W", rng.normal(size=(2, 1)).astype(np.float32))], ["mm"]),
                  helper.make_node("Add", ["mm", const("b", np.array([0.0], np.float32))], ["logit"]),
                  helper.make_node("Sigmoid", ["logit"], ["prob"])]
        y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])
    elif kind == "window":
        x = helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 4, 1])
        nodes += [helper.make_node("Reshape", ["series", const("shape", np.array([-1, 4], np.int64))], ["flat"]),
                  helper.make_node("MatMul", ["flat", const("W", rng.normal(size=(4, 1)).astype(np.float32))], ["mm"]),
                  helper.make_node("Add", ["mm", const("b", np.array([0.2], np.float32))], ["y"])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    else:
        raise ValueError(kind)
    graph = helper.make_graph(nodes, f"tiny_{kind}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="seqdeploy-tests")
    model.ir_version = 8
    helper.set_model_props(model, {"seqdeploy.kind": kind})
    onnx.checker.check_model(model)
    return model


def _train_json(kind: str) -> dict:
    base = {"spec_name": f"tiny_{kind}", "target_name": None, "seed": 0, "versions": {"seqdeploy": "test"}}
    if kind == "binary":
        return {**base, "task": "binary", "labels": ["neg", "pos"],
                "input": {"name": "features", "shape": [None, 4], "dtype": "float32"},
                "preprocessing": {"kind": "standardize", "feature_names": ["a", "b", "c", "d"],
                                  "mean": [1.0, -2.0, 0.5, 10.0], "std": [2.0, 0.5, 1.0, 4.0]}}
    if kind == "multiclass":
        return {**base, "task": "multiclass", "labels": ["setosa", "versicolor", "virginica"],
                "input": {"name": "features", "shape": [None, 3], "dtype": "float32"},
                "preprocessing": {"kind": "standardize", "feature_names": ["x1", "x2", "x3"],
                                  "mean": [0.0, 1.0, 2.0], "std": [1.0, 2.0, 3.0]}}
    if kind == "text":
        return {**base, "task": "binary", "labels": ["negative", "positive"],
                "input": {"name": "tokens", "shape": [None, SEQ_LEN], "dtype": "int32"},
                "preprocessing": {"kind": "tokenize", "vocabulary": VOCAB, "sequence_length": SEQ_LEN,
                                  "lowercase": True, "token_pattern": r"[a-z0-9']+"}}
    return {**base, "task": "regression", "labels": None, "target_name": "sunspots",
            "input": {"name": "series", "shape": [None, 4, 1], "dtype": "float32"},
            "preprocessing": {"kind": "window", "window": 4, "mean": 50.0, "std": 20.0}}


def sample_raw(kind: str, n: int = 7, seed: int = 1):
    """Raw inputs of the right form for each tiny bundle."""
    rng = np.random.default_rng(seed)
    if kind == "binary":
        return rng.normal(size=(n, 4)) * 3
    if kind == "multiclass":
        return rng.normal(size=(n, 3)) * 2
    if kind == "text":
        words = VOCAB[2:] + ["unknown", "Words", "GOOD"]
        return [" ".join(rng.choice(words, size=rng.integers(0, 8))) for _ in range(n)]
    return rng.uniform(0, 100, size=(n, 4))


def reference(kind: str, raw, seed: int = 0):
    """Numpy reference: (feeds, probabilities or values) for raw inputs."""
    import onnx.numpy_helper as nh

    model = _model(kind, seed)
    w = {i.name: nh.to_array(i) for i in model.graph.initializer}
    pre = _train_json(kind)["preprocessing"]
    f32 = np.float32  # the preprocessing definition computes in float32, like the portable graph
    if kind in ("binary", "multiclass"):
        x = (np.asarray(raw, f32) - np.asarray(pre["mean"], f32)) / np.asarray(pre["std"], f32)
        z = x @ w["W"] + w["b"]
        if kind == "binary":
            with np.errstate(over="ignore"):
                p = 1 / (1 + np.exp(-z[:, 0].astype(np.float64)))
            return x, np.stack([1 - p, p], 1)
        e = np.exp(z - z.max(1, keepdims=True))
        return x, e / e.sum(1, keepdims=True)
    if kind == "text":
        import re

        ids = np.zeros((len(raw), SEQ_LEN), np.int32)
        for i, t in enumerate(raw):
            toks = [VOCAB.index(tok) if tok in VOCAB else 1 for tok in re.findall(pre["token_pattern"], t.lower())]
            ids[i, : len(toks[:SEQ_LEN])] = toks[:SEQ_LEN]
        z = w["E"][ids].mean(1) @ w["W"] + w["b"]
        p = 1 / (1 + np.exp(-z[:, 0].astype(np.float64)))
        return ids, np.stack([1 - p, p], 1)
    x = (np.asarray(raw, f32) - f32(pre["mean"])) / f32(pre["std"])
    y = x @ w["W"] + w["b"]
    return x[:, :, None], (y[:, 0] * f32(pre["std"]) + f32(pre["mean"])).astype(np.float64)


def build_bundle(root: Path, kind: str = "binary", *, quantize: bool = False, chosen: str | None = None,
                 verify: bool = True, golden: bool = True) -> Path:
    """A run directory with train.json, model.onnx (+ candidates, verify.json, golden) and manifest.json."""
    import onnx

    run = Path(root) / f"tiny_{kind}"
    run.mkdir(parents=True, exist_ok=True)
    (run / "train.json").write_text(json.dumps(_train_json(kind)))
    model = _model(kind)
    onnx.save(model, str(run / "model.onnx"))
    if quantize:
        cands = []
        for recipe in ("int8-dynamic", "fp16"):
            m = _model(kind)
            m.doc_string = f"stand-in for the {recipe} candidate"  # same numbers, different bytes
            onnx.save(m, str(run / f"model.{recipe}.onnx"))
            cands.append({"recipe": recipe, "path": f"model.{recipe}.onnx", "accepted": True})
        cands.append({"recipe": "int8-static", "path": "model.int8-static.onnx", "accepted": False})  # not kept
        cands.append({"recipe": "int8-static", "attempt": 2, "path": None, "qualified": False})  # never written
        (run / "quantize.json").write_text(json.dumps({"chosen": chosen, "candidates": cands}))
    if verify:
        from seqdeploy.atomic import sha256_file

        (run / "verify.json").write_text(json.dumps({"passed": True, "max_abs_error": 1.5e-7,
                                                     "label_agreement": None if kind == "window" else 1.0,
                                                     "artifact": "model.onnx",
                                                     "onnx_sha256": sha256_file(run / "model.onnx")}))
    if golden:
        raw = sample_raw(kind, n=4, seed=3)
        feeds, expected = reference(kind, raw)
        in_name = model.graph.input[0].name
        out_name = model.graph.output[0].name
        out = expected[:, 1:2].astype(np.float32) if kind in ("binary", "text") else (
            expected.astype(np.float32) if kind == "multiclass" else
            ((expected - 50.0) / 20.0).astype(np.float32)[:, None])
        arrays = {"raw": np.asarray(raw), f"input__{in_name}": feeds, f"output__{out_name}": out}
        np.savez(run / "golden.npz", **arrays)
        (run / "golden.json").write_text(json.dumps(
            {k: {"dtype": str(v.dtype) if v.dtype.kind != "U" else "str", "shape": list(v.shape), "data": v.tolist()}
             for k, v in arrays.items()}))
    write_bundle_manifest(run)
    return run


@pytest.fixture
def bundle(tmp_path):
    return build_bundle(tmp_path, "binary", quantize=True)


def _edit_manifest(run: Path, fn) -> None:
    data = json.loads((run / MANIFEST_NAME).read_text())
    fn(data)
    (run / MANIFEST_NAME).write_text(json.dumps(data))


# --------------------------------------------------------------------------- write_bundle_manifest


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_derived_from_run_dir(tmp_path, kind):
    run = build_bundle(tmp_path, kind)
    m = load_manifest(run)
    assert isinstance(m, Manifest) and m.schema_version == SCHEMA_VERSION
    assert m == write_bundle_manifest(run)  # deterministic and round-trips through JSON
    assert m.name == f"tiny_{kind}"
    assert m.deployment_artifact == "model.onnx" and m.deployment.precision == "float32"
    assert m.deployment.sha256 == sha256_file(run / "model.onnx")
    assert m.deployment.opset == 17 and m.min_onnxruntime == "1.17"
    # the portable graph of a text model tokenizes with onnxruntime's Tokenizer (in every binding)
    assert m.contrib_ops == (("com.microsoft:Tokenizer",) if kind == "text" else ())
    assert m.inputs[0].shape[0] == "batch" and m.outputs[0].shape[0] == "batch"
    assert m.verification is not None and m.verification.passed
    assert {f.file for f in m.files} == {"golden.npz", "golden.json"}
    expected_pre = {"binary": Standardize, "multiclass": Standardize, "text": Tokenize, "window": Window}[kind]
    assert isinstance(m.preprocessing, expected_pre)
    if kind == "text":
        assert m.inputs[0].dtype == "int32" and m.preprocessing.sequence_length == SEQ_LEN
    if kind == "window":
        assert m.task == "regression" and m.target_name == "sunspots" and m.labels is None
        assert m.inputs[0].shape == ("batch", 4, 1)


def test_quantized_candidates_and_chosen(tmp_path):
    run = build_bundle(tmp_path, "binary", quantize=True, chosen="model.int8-dynamic.onnx")
    m = load_manifest(run)
    assert [a.file for a in m.artifacts] == ["model.onnx", "model.int8-dynamic.onnx", "model.fp16.onnx"]
    assert [a.precision for a in m.artifacts] == ["float32", "int8-dynamic", "fp16"]
    assert m.deployment_artifact == "model.int8-dynamic.onnx"
    assert m.artifact("fp16").file == "model.fp16.onnx" and m.artifact("model.onnx").precision == "float32"
    with pytest.raises(BundleError, match="int4.*not in this bundle.*model.onnx"):
        m.artifact("int4")


def test_chosen_null_deploys_model_onnx(bundle):
    assert load_manifest(bundle).deployment_artifact == "model.onnx"


def test_chosen_file_missing_is_refused(tmp_path):
    run = build_bundle(tmp_path, "binary", quantize=True)
    q = json.loads((run / "quantize.json").read_text())
    (run / "quantize.json").write_text(json.dumps({**q, "chosen": "model.int8-static.onnx"}))
    with pytest.raises(BundleError, match="chosen = 'model.int8-static.onnx'"):
        write_bundle_manifest(run)


def test_no_verify_no_golden(tmp_path):
    m = load_manifest(build_bundle(tmp_path, "multiclass", verify=False, golden=False))
    assert m.verification is None and m.files == ()


def test_missing_train_json_or_model(tmp_path):
    run = build_bundle(tmp_path, "binary")
    (run / "model.onnx").unlink()
    with pytest.raises(InputFileNotFound, match="model.onnx"):
        write_bundle_manifest(run)
    (run / "train.json").unlink()
    with pytest.raises(InputFileNotFound, match="train.json.*seqdeploy train"):
        write_bundle_manifest(run)
    with pytest.raises(InputFileNotFound, match="does not exist"):
        write_bundle_manifest(tmp_path / "nope")


def test_garbage_onnx_is_a_model_load_error(tmp_path):
    from seqdeploy.errors import ModelLoadError

    run = build_bundle(tmp_path, "binary")
    (run / "model.onnx").write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        write_bundle_manifest(run)


# --------------------------------------------------------------------------- load_manifest checks


def test_tampered_artifact_refused(bundle):
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx has sha256 .* modified"):
        load_manifest(bundle)
    load_manifest(bundle, check_files=False)  # the schema itself is fine


def test_truncated_artifact_refused(bundle):
    path = bundle / "model.fp16.onnx"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(IntegrityError, match=r"model\.fp16\.onnx has 20 bytes but the manifest expects"):
        load_manifest(bundle)


def test_tampered_golden_and_missing_file(bundle):
    (bundle / "golden.json").write_text("{}")
    with pytest.raises(IntegrityError, match="golden.json"):
        load_manifest(bundle)
    (bundle / "golden.json").unlink()
    with pytest.raises(IntegrityError, match="golden.json is listed in the manifest but missing"):
        load_manifest(bundle)


@pytest.mark.parametrize("bad", ["../model.onnx", "/etc/passwd", "sub/../../x.onnx", "C:\\x.onnx", "..\\x.onnx", ""])
def test_paths_escaping_the_bundle_refused(bundle, bad):
    _edit_manifest(bundle, lambda d: d["artifacts"][0].update(file=bad))
    with pytest.raises(BundleError, match="absolute|outside|relative"):
        load_manifest(bundle)
    with pytest.raises(BundleError):
        check_relative_path(bad)


def test_symlink_escaping_the_bundle_refused(bundle, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle / "model.onnx", outside)
    (bundle / "model.onnx").unlink()
    os.symlink(outside, bundle / "model.onnx")
    with pytest.raises(BundleError, match="outside the bundle directory"):
        load_manifest(bundle)


def test_newer_schema_version_refused(bundle):
    _edit_manifest(bundle, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match=rf"schema_version {SCHEMA_VERSION + 1}.*supports schema_version "
                                          rf"{SCHEMA_VERSION}.*upgrade seqdeploy"):
        load_manifest(bundle)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("schema_version"), "schema_version: None"),
    (lambda d: d.update(schema_version="1"), "schema_version: '1'"),
    (lambda d: d.update(task="ranking"), "task: 'ranking'"),
    (lambda d: d.update(deployment_artifact="model.int4.onnx"), "deployment_artifact: 'model.int4.onnx' is not one"),
    (lambda d: d["preprocessing"].update(kind="fourier"), "kind = 'fourier'.*upgrade seqdeploy"),
    (lambda d: d["preprocessing"].update(std=[1.0, 0.0, 1.0, 1.0]), "std contains values <= 0"),
    (lambda d: d["preprocessing"].update(mean=[1.0]), "mean has 1 values .expected 4"),
    (lambda d: d["artifacts"][0].update(sha256="abc"), "sha256 = 'abc'"),
    (lambda d: d["artifacts"][0].pop("size"), "missing required field 'size'"),
    (lambda d: d.update(labels=["only-one"]), "1 labels for a binary task"),
    (lambda d: d.update(inputs=[]), "inputs: .* non-empty list"),
])
def test_invalid_manifest_fields(bundle, edit, match):
    _edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=match):
        load_manifest(bundle)


def test_not_json_and_not_a_bundle(tmp_path, bundle):
    (bundle / MANIFEST_NAME).write_text("{ nope")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(bundle)
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_manifest(tmp_path)
    with pytest.raises(InputFileNotFound, match="does not exist"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(BundleError, match="top level is list"):
        manifest_from_dict([])


def test_manifest_import_is_light():
    code = ("import sys, seqdeploy.runtime.manifest; "
            "print(sorted(m for m in ('tensorflow', 'onnx', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- inspect


def test_inspect_bundle_and_model(bundle):
    res = inspect_path(bundle)
    # every artifact (float32, int8, fp16) and its portable deployment graph
    assert res.manifest is not None and len(res.models) == 6
    portable = [i for i in res.models if i.file.endswith(".portable.onnx")]
    assert len(portable) == 3 and all(i.metadata_props["seqdeploy.graph"] == "portable" for i in portable)
    assert all([o.name for o in i.outputs] == ["probabilities", "class_id", "label"] for i in portable)
    info = res.models[0]
    assert info.op_counts == {"Add": 1, "MatMul": 1, "Sigmoid": 1}
    assert info.opset == 17 and info.n_parameters == 5 and info.metadata_props == {"seqdeploy.kind": "binary"}
    assert info.inputs[0].name == "features" and info.producer == "seqdeploy-tests"
    single = inspect_path(bundle / "model.onnx")
    assert single.manifest is None and single.models[0].sha256 == res.models[0].sha256
    with pytest.raises(BundleError, match="neither a bundle directory nor a .onnx file"):
        inspect_path(bundle / "train.json")

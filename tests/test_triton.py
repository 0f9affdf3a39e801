"""Triton model repository export, cross-checked offline (no Triton server runs here).

config.pbtxt is parsed into tritonclient's ``model_config_pb2.ModelConfig`` (the
schema Triton itself reads) and compared with the ONNX graph in ``<version>/model.onnx``;
then the graph is run the way Triton would feed it (a batch axis in front of
``dims``, ``reshape`` applied) and its answers are compared with the Predictor's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app
from seqdeploy.errors import IntegrityError, UsageError
from seqdeploy.targets import available_targets, get_target
from test_manifest import KINDS, build_bundle

MODELS = Path(__file__).resolve().parent.parent / "models"
runner = CliRunner()

# ONNX TensorProto element type -> Triton data type, written out independently of the writer's table
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
                   8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}

_TRITON_TO_NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8,
                    "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_BOOL": np.bool_}


def cross_check(export, bundle: Path, raw=None) -> None:
    """Everything Triton would check when loading the model, plus its answers vs the Predictor's."""
    import onnx
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from seqdeploy.atomic import sha256_file
    from seqdeploy.runtime.predictor import Predictor

    cfg = text_format.Parse(export.config_path.read_text(), model_config_pb2.ModelConfig())
    assert cfg.name == export.model_name == export.config_path.parent.name
    assert cfg.backend == "onnxruntime" and cfg.default_model_filename == "model.onnx"
    assert export.model_path == export.config_path.parent / str(export.version) / "model.onnx"
    manifest = json.loads((bundle / "manifest.json").read_text())
    dep = next(a for a in manifest["artifacts"] if a["file"] == manifest["deployment_artifact"])
    want_file = (dep.get("portable") or {}).get("file") or dep["file"]
    assert sha256_file(export.model_path) == sha256_file(bundle / want_file)  # the manifest's graph, byte for byte

    graph = onnx.load(str(export.model_path)).graph
    inits = {i.name for i in graph.initializer}
    g_inputs = [i for i in graph.input if i.name not in inits]
    assert cfg.max_batch_size > 0  # every seqdeploy graph has a dynamic batch axis

    def dims_of(vi):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]

    for section, values in ((cfg.input, g_inputs), (cfg.output, list(graph.output))):
        assert [t.name for t in section] == [v.name for v in values]
        for t, v in zip(section, values):
            assert model_config_pb2.DataType.Name(t.data_type) == _ONNX_TO_TRITON[v.type.tensor_type.elem_type]
            shape = dims_of(v)
            assert shape[0] == -1  # the batch axis, left out of dims
            if len(shape) == 1:
                assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
            else:
                assert list(t.dims) == shape[1:] and not t.HasField("reshape")

    # run it as Triton feeds it: [batch] + reshape (or dims), -1 filled in
    sess = ort.InferenceSession(str(export.model_path), providers=["CPUExecutionProvider"])
    predictor = Predictor.from_bundle(bundle)
    if raw is None:
        raw = np.load(bundle / "golden.npz")["raw"]
    feeds = {}
    for t in cfg.input:
        shape = [len(raw)] + [d if d > 0 else 3 for d in (t.reshape.shape if t.HasField("reshape") else t.dims)]
        # mixed raw rows (numeric + categorical columns) are a structured array with one field per graph input
        col = raw[t.name] if getattr(getattr(raw, "dtype", None), "names", None) else raw
        if t.data_type == model_config_pb2.TYPE_STRING:
            feeds[t.name] = np.asarray(list(np.asarray(col).reshape(-1)), dtype=object).reshape(shape)
        else:
            dtype = _TRITON_TO_NUMPY[model_config_pb2.DataType.Name(t.data_type)]
            feeds[t.name] = np.asarray(col).astype(dtype).reshape(shape)
    outs = dict(zip([o.name for o in cfg.output], sess.run([o.name for o in cfg.output], feeds)))
    for t in cfg.output:
        want = [len(raw)] + list(t.reshape.shape if t.HasField("reshape") else t.dims)
        assert [d if w > 0 else w for d, w in zip(outs[t.name].shape, want)] == want
    if export.portable:
        answer = outs.get("label", outs.get("prediction"))
        got = predictor.predict(raw)
        if answer.dtype == object:
            assert answer.tolist() == got.tolist()
        else:
            np.testing.assert_allclose(answer, got, rtol=1e-5, atol=1e-5)


def test_registry_lists_triton():
    assert "triton" in available_targets()
    with pytest.raises(UsageError, match="unknown output target"):
        get_target("tensorrt")


@pytest.mark.parametrize("kind", KINDS)
def test_repository_for_each_preprocessing_kind(tmp_path, kind):
    bundle = build_bundle(tmp_path, kind)
    export = get_target("triton").write(bundle, tmp_path / "repo")
    assert export.portable  # bundles carry their portable graph: raw inputs in, answers out
    cross_check(export, bundle)


def test_model_ready_graph_when_the_manifest_has_no_portable_graph(tmp_path):
    bundle = build_bundle(tmp_path, "multiclass")
    m = json.loads((bundle / "manifest.json").read_text())
    for a in m["artifacts"]:
        a.pop("portable", None)
    (bundle / "manifest.json").write_text(json.dumps(m))
    export = get_target("triton").write(bundle, tmp_path / "repo", model_name="iris", version=3, max_batch_size=8)
    assert (export.source, export.portable, export.max_batch_size) == ("model.onnx", False, 8)
    assert export.model_path == tmp_path / "repo" / "iris" / "3" / "model.onnx"
    cross_check(export, bundle)


def test_measured_thread_count_reaches_the_backend(tmp_path):
    """The thread count seqdeploy tune recorded for the batches Triton forms becomes intra_op_thread_count."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    bundle = build_bundle(tmp_path, "binary")
    cfg = lambda e: text_format.Parse(e.config_path.read_text(), model_config_pb2.ModelConfig())  # noqa: E731
    assert not cfg(get_target("triton").write(bundle, tmp_path / "repo")).parameters  # nothing measured: defaults
    m = json.loads((bundle / "manifest.json").read_text())
    m["runtime_settings"] = {"threads": [[1, 1], [64, 2]], "source": "tune.json",
                             "sessions": [[1, {"threads": 1, "allow_spinning": False, "graph_optimization": "all"}],
                                          [64, {"threads": 2, "allow_spinning": False, "graph_optimization": "all"}]]}
    (bundle / "manifest.json").write_text(json.dumps(m))
    params = cfg(get_target("triton").write(bundle, tmp_path / "repo", max_batch_size=64)).parameters
    assert {k: v.string_value for k, v in params.items()} == {"intra_op_thread_count": "2", "inter_op_thread_count": "1"}
    params = cfg(get_target("triton").write(bundle, tmp_path / "repo", max_batch_size=8)).parameters
    assert params["intra_op_thread_count"].string_value == "1"


def test_tampered_bundle_writes_nothing(tmp_path):
    bundle = build_bundle(tmp_path, "binary")
    f = bundle / "model.onnx"
    f.write_bytes(f.read_bytes()[:-8] + b"tampered")
    with pytest.raises(IntegrityError, match="sha256"):
        get_target("triton").write(bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_other_models_in_the_repository_are_left_alone(tmp_path):
    a, b = build_bundle(tmp_path / "a", "binary"), build_bundle(tmp_path / "b", "window")
    repo = tmp_path / "repo"
    get_target("triton").write(a, repo)
    get_target("triton").write(b, repo)
    assert sorted(p.name for p in repo.iterdir()) == ["tiny_binary", "tiny_window"]
    with pytest.raises(UsageError, match="model name"):
        get_target("triton").write(a, repo, model_name="../escape")


def test_cli_export_triton(tmp_path):
    bundle = build_bundle(tmp_path, "text")
    before = (bundle / "model.onnx").read_bytes()
    res = runner.invoke(app, ["export", str(bundle), "--triton", str(tmp_path / "repo"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model_name"] == "tiny_text" and out["max_batch_size"] == 64
    assert [t["data_type"] for t in out["inputs"]] == ["TYPE_STRING"]
    assert (bundle / "model.onnx").read_bytes() == before  # a bundle is written as it is, not re-exported
    res = runner.invoke(app, ["export", str(bundle), "--triton", str(tmp_path / "repo")])
    assert res.exit_code == 0 and "config.pbtxt" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("spec", sorted(p.stem for p in MODELS.glob("*.toml")))
def test_every_spec_exports_a_consistent_triton_repository(spec, tmp_path):
    from seqdeploy.data import load_run_splits
    from seqdeploy.app.pipeline import PipelineOptions, run_pipeline

    result = run_pipeline(MODELS / f"{spec}.toml", out=tmp_path / spec, stages="train,export,verify",
                          options=PipelineOptions(epochs=1))
    raw = load_run_splits(result.run_dir).raw_test[:16]
    res = runner.invoke(app, ["export", str(result.run_dir), "--triton", str(tmp_path / "repo"), "--json"])
    assert res.exit_code == 0, res.output
    export = get_target("triton").write(result.run_dir, tmp_path / "repo")
    cross_check(export, result.run_dir, raw=list(raw) if raw.dtype.kind == "U" else raw)  # text: a list of str

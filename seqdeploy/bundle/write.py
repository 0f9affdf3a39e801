"""Building and inspecting bundles (the toolchain side of :mod:`seqdeploy.runtime.manifest`).

:func:`write_bundle_manifest` derives ``manifest.json`` from a run directory's files
and writes the portable deployment graph beside every artifact
(:mod:`seqdeploy.bundle.portable`); :func:`refresh_bundle_manifest` is what every stage that
changes a run directory calls. :func:`inspect_path` / :func:`inspect_model` summarise
a bundle or an ONNX file. ``onnx`` is imported lazily inside the functions; the
schema, parsing and loading that the runtime needs stay in :mod:`seqdeploy.runtime.manifest`.

    >>> from seqdeploy.bundle.write import write_bundle_manifest
    >>> write_bundle_manifest("runs/breast_cancer_mlp").deployment_artifact  # doctest: +SKIP
    'model.onnx'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from seqdeploy.atomic import atomic_write_json, sha256_file
from seqdeploy.errors import BundleError, InputFileNotFound, ModelLoadError
from seqdeploy.layout import (
    GOLDEN_FILES,
    MODEL_ONNX,
    QUANTIZE_FILE,
    TRAIN_FILE,
    TUNE_FILE,
    read_quantize_record,
    read_train_record,
    read_tune_choices,
    read_verify_record,
)
from seqdeploy.runtime.extensions import binding_support, packages_for
from seqdeploy.runtime.manifest import (
    DEFAULT_DOMAINS,
    ORT_FLOOR,
    ORT_FOR_OPSET,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Artifact,
    BundleFile,
    Manifest,
    PortableGraph,
    RuntimeSettings,
    TensorInfo,
    Verification,
    opt_float,
    resolve_inside,
    bundle_path,
    load_manifest,
    manifest_from_dict,
    parse_preprocessing,
    version_tuple,
)


# --------------------------------------------------------------------------- building


def _load_onnx(path: Path) -> Any:
    import onnx  # lazy: the runtime never needs it

    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise InputFileNotFound(f"{path} does not exist (expected an ONNX model); run `seqdeploy export` first") from None
    except Exception as exc:  # onnx raises DecodeError / RuntimeError for garbage
        raise ModelLoadError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
                             f"re-export it") from None


def _tensor_infos(model: Any, which: str) -> tuple[TensorInfo, ...]:
    from onnx import helper

    graph = model.graph
    init = {i.name for i in graph.initializer}
    values = graph.input if which == "inputs" else graph.output
    out = []
    for v in values:
        if v.name in init:
            continue
        tt = v.type.tensor_type
        try:
            dtype = "str" if tt.elem_type == 8 else helper.tensor_dtype_to_np_dtype(tt.elem_type).name  # 8: STRING
        except Exception:
            dtype = f"onnx:{tt.elem_type}"
        shape: list[Union[int, str, None]] = []
        for dim in tt.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                shape.append(dim.dim_param)
            else:
                shape.append(None)
        out.append(TensorInfo(v.name, dtype, tuple(shape)))
    return tuple(out)


def _opset_and_contrib(model: Any) -> tuple[int | None, tuple[str, ...]]:
    opset = None
    for o in model.opset_import:
        if o.domain in DEFAULT_DOMAINS:
            opset = int(o.version)
    contrib = set()

    def walk(graph: Any) -> None:
        for node in graph.node:
            if node.domain not in DEFAULT_DOMAINS and node.domain != "ai.onnx.ml":
                contrib.add(f"{node.domain}:{node.op_type}")
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return opset, tuple(sorted(contrib))


def min_onnxruntime_for(opset: int | None) -> str:
    """Lowest onnxruntime that implements ``opset`` (never below the base install's floor).

    >>> min_onnxruntime_for(13), min_onnxruntime_for(21)
    ('1.17', '1.18')
    """
    need = ORT_FLOOR
    if opset is not None:
        known = [o for o in ORT_FOR_OPSET if o <= opset]
        if known:
            need = max(need, ORT_FOR_OPSET[max(known)], key=version_tuple)
    return need


def _precision_of(recipe: str | None, model: Any) -> str:
    from seqdeploy.precision import precision_of, precision_of_graph  # the one precision definition

    return (precision_of(recipe) if recipe else precision_of_graph(model)).name


def _artifact(run_dir: Path, rel: str, recipe: str | None, train: Mapping[str, Any] | None = None) -> Artifact:
    """Describe one model-ready artifact; with ``train`` (train.json), also write and describe its portable graph."""
    path = resolve_inside(run_dir, rel, f"artifact {rel}")
    model = _load_onnx(path)
    opset, contrib = _opset_and_contrib(model)
    portable = _portable_graph(run_dir, rel, train) if train is not None else None
    return Artifact(file=rel, sha256=sha256_file(path), size=path.stat().st_size,
                    precision=_precision_of(recipe, model), recipe=recipe, opset=opset,
                    contrib_ops=contrib, min_onnxruntime=min_onnxruntime_for(opset), portable=portable)


def _portable_graph(run_dir: Path, rel: str, train: Mapping[str, Any]) -> PortableGraph:
    from seqdeploy.bundle.portable import ensure_portable

    pre = parse_preprocessing(train.get("preprocessing"), "train.json preprocessing")
    labels = train.get("labels")
    result = ensure_portable(run_dir, rel, pre, str(train.get("task")),
                             [str(x) for x in labels] if isinstance(labels, (list, tuple)) else None)
    path = run_dir / result.file
    model = _load_onnx(path)
    opset, contrib = _opset_and_contrib(model)
    return PortableGraph(result.file, sha256_file(path), path.stat().st_size, _tensor_infos(model, "inputs"),
                         _tensor_infos(model, "outputs"), contrib, min_onnxruntime_for(opset))


def _remove_stale_portables(run_dir: Path, artifacts: Sequence[Artifact]) -> None:
    from seqdeploy.bundle.portable import PORTABLE_SUFFIX

    keep = {a.portable.file for a in artifacts if a.portable is not None}
    for p in run_dir.glob("*" + PORTABLE_SUFFIX):
        if p.name not in keep:
            p.unlink(missing_ok=True)


def measured_settings(run_dir: Path, deployed_file: str) -> RuntimeSettings | None:
    """The session settings :func:`seqdeploy.bench.tune.tune_bundle` chose per batch size for the deployed artifact
    (``tune.json``), while the artifact's sha256 matches the tuned one; else None (the runtime's defaults)."""
    got = read_tune_choices(run_dir, deployed_file)
    if got is None:
        return None
    choices, _ = got
    return RuntimeSettings(
        threads=tuple((c.batch, c.settings.threads) for c in choices),
        p50_us=tuple((c.batch, round(c.p50_us, 2)) for c in choices),
        source=TUNE_FILE,
        sessions=tuple((c.batch, c.settings) for c in choices),
        plain_best_p50_us=tuple((c.batch, round(c.plain_best_p50_us, 2)) for c in choices),
    )


def refresh_bundle_manifest(run_dir: str | os.PathLike) -> Manifest | None:
    """Rewrite ``manifest.json`` when ``run_dir`` is a bundle (has ``train.json`` and ``model.onnx``).

    What every stage that changes a run directory calls to keep its manifest in step.

    >>> refresh_bundle_manifest("some/dir/without/train.json") is None  # doctest: +SKIP
    True
    """
    run_dir = Path(run_dir)
    if not ((run_dir / TRAIN_FILE).is_file() and (run_dir / MODEL_ONNX).is_file()):
        return None
    return write_bundle_manifest(run_dir)


def write_bundle_manifest(run_dir: str | os.PathLike) -> Manifest:
    """Derive ``manifest.json`` from a run directory's files, write it atomically, return it.

    Reads ``train.json`` (task, labels, preprocessing), ``model.onnx`` (inputs and
    outputs from the graph), ``quantize.json`` (candidates and the chosen one; the
    deployment artifact is ``model.onnx`` when nothing was chosen), ``verify.json``
    (summary) and ``golden.npz`` / ``golden.json`` when present.

    >>> write_bundle_manifest("runs/breast_cancer_mlp").deployment_artifact  # doctest: +SKIP
    'model.onnx'
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileNotFound(f"run directory {run_dir} does not exist; run `seqdeploy train` and "
                                f"`seqdeploy export` first (or check the run directory path)")
    train = read_train_record(run_dir)
    model_path = run_dir / MODEL_ONNX
    base_model = _load_onnx(model_path)
    inputs = _tensor_infos(base_model, "inputs")
    outputs = _tensor_infos(base_model, "outputs")

    artifacts = [_artifact(run_dir, MODEL_ONNX, None, train)]
    deploy = MODEL_ONNX
    record = read_quantize_record(run_dir)
    if record is not None:
        for rel, recipe in record.kept:
            if rel != MODEL_ONNX:  # candidates whose file was not kept are not in the record's kept list
                artifacts.append(_artifact(run_dir, rel, recipe, train))
        if record.named_chosen:
            if record.named_chosen not in {a.file for a in artifacts}:
                raise BundleError(f"{run_dir / QUANTIZE_FILE}: chosen = {record.named_chosen!r} but that file is not "
                                  f"in {run_dir} (have: {', '.join(a.file for a in artifacts)}); rerun `seqdeploy quantize`")
            deploy = record.named_chosen

    verification = None
    v = read_verify_record(run_dir)
    # Only a verification of the very bytes in this bundle counts (a re-export makes it stale).
    verified = next((a for a in artifacts if v is not None and a.file == v.get("artifact")), None)
    if verified is not None and v.get("onnx_sha256") == verified.sha256:
        verification = Verification(bool(v.get("passed")), opt_float(v.get("max_abs_error")),
                                    opt_float(v.get("label_agreement")))

    files = []
    for name, role in GOLDEN_FILES:
        p = run_dir / name
        if p.is_file():
            files.append(BundleFile(name, sha256_file(p), p.stat().st_size, role))

    _remove_stale_portables(run_dir, artifacts)
    deploy_art = next(a for a in artifacts if a.file == deploy)
    runtime_settings = measured_settings(run_dir, deploy_art.file)
    labels = train.get("labels")
    contrib_ops = tuple(sorted(set(deploy_art.contrib_ops) | set(deploy_art.portable.contrib_ops
                                                                if deploy_art.portable else ())))
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=str(train.get("spec_name") or run_dir.name),
        task=str(train.get("task")),
        labels=tuple(str(x) for x in labels) if isinstance(labels, (list, tuple)) else None,
        target_name=train.get("target_name") if isinstance(train.get("target_name"), str) else None,
        inputs=inputs, outputs=outputs,
        preprocessing=parse_preprocessing(train.get("preprocessing"), "train.json preprocessing"),
        artifacts=tuple(artifacts), deployment_artifact=deploy,
        min_onnxruntime=max((deploy_art.min_onnxruntime, deploy_art.portable.min_onnxruntime if deploy_art.portable
                             else ORT_FLOOR), key=version_tuple),
        contrib_ops=contrib_ops,
        custom_op_libraries=packages_for(contrib_ops), bindings=binding_support(contrib_ops),
        verification=verification, files=tuple(files), runtime_settings=runtime_settings,
    )
    # Round-trip through the validator so that a manifest we write is one we can load.
    manifest_from_dict(json.loads(json.dumps(_to_json(manifest))))
    atomic_write_json(run_dir / MANIFEST_NAME, _to_json(manifest))
    return manifest


def _to_json(m: Manifest) -> dict[str, Any]:
    from seqdeploy.atomic import to_jsonable

    return to_jsonable(m)


# --------------------------------------------------------------------------- inspect (toolchain side)


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect_model` reports about one ONNX file."""

    file: str
    size: int
    sha256: str
    ir_version: int
    opset: int | None
    opsets: dict[str, int]
    producer: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    n_parameters: int
    contrib_ops: tuple[str, ...]
    metadata_props: dict[str, str]


@dataclass(frozen=True)
class InspectResult:
    """``seqdeploy inspect``: one model, or a bundle's manifest plus each of its artifacts."""

    path: str
    manifest: Manifest | None
    models: tuple[ModelInfo, ...]


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Summarise an ONNX file: inputs, outputs, opset, op counts, parameters, metadata.

    >>> inspect_model("runs/breast_cancer_mlp/model.onnx").op_counts  # doctest: +SKIP
    {'MatMul': 3, 'Add': 3, 'Relu': 2, 'Sigmoid': 1}
    """
    path = Path(path)
    model = _load_onnx(path)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}:{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    n_params = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        n_params += n
    opset, contrib = _opset_and_contrib(model)
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)
    return ModelInfo(
        file=str(path), size=path.stat().st_size, sha256=sha256_file(path), ir_version=int(model.ir_version),
        opset=opset, opsets={(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        producer=producer, inputs=_tensor_infos(model, "inputs"), outputs=_tensor_infos(model, "outputs"),
        op_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), n_parameters=n_params,
        contrib_ops=contrib, metadata_props={p.key: p.value for p in model.metadata_props},
    )


def inspect_path(path: str | os.PathLike) -> InspectResult:
    """Inspect a bundle directory (manifest checked, each artifact summarised) or one ``.onnx`` file.

    >>> inspect_path("runs/breast_cancer_mlp").manifest.task  # doctest: +SKIP
    'binary'
    """
    p = Path(path)
    if not p.exists():
        raise InputFileNotFound(f"{p} does not exist (expected a bundle directory or a .onnx file)")
    if p.is_dir() or p.name == MANIFEST_NAME:
        manifest = load_manifest(p)
        root = p if p.is_dir() else p.parent
        files = [f for a in manifest.artifacts for f in (a.file, a.portable.file if a.portable else None) if f]
        return InspectResult(str(p), manifest, tuple(inspect_model(bundle_path(root, f)) for f in files))
    if p.suffix.lower() != ".onnx":
        raise BundleError(f"{p} is neither a bundle directory nor a .onnx file; pass a run directory or a model.onnx")
    return InspectResult(str(p), None, (inspect_model(p),))

"""Keras -> ONNX through tf2onnx, plus the graph fixes tf2onnx lacks.

    >>> from seqdeploy.export.convert import export_onnx
    >>> result = export_onnx("runs/breast_cancer_mlp")          # doctest: +SKIP
    >>> result.onnx_path, result.op_counts["MatMul"]            # doctest: +SKIP
    (PosixPath('runs/breast_cancer_mlp/model.onnx'), 2)

How a model is converted
------------------------
* Every model (Sequential, Functional with several inputs/outputs, nested
  models) is traced once as a whole and converted by tf2onnx
  ``from_function`` (``from_keras`` fails on Keras 3). The registered layer
  converters (:mod:`seqdeploy.export.layers`, one module per layer family) take
  over the layers they claim (:mod:`seqdeploy.export.native` cuts their calls
  out of the trace and stitches their ONNX nodes back): every LSTM / GRU /
  SimpleRNN (plain, ``go_backwards``, ``Bidirectional``, masked with any padding
  pattern) becomes a native ONNX ``LSTM`` / ``GRU`` / ``RNN`` node (tf2onnx alone
  would emit a slow, opaque ``Loop`` for GRU, SimpleRNN and every masked
  recurrent layer; a recurrent layer that has no native form stays in the trace
  and the export warns about the resulting ``Loop``); ``TimeDistributed`` is
  folded into the batch axis; lookup-table preprocessing layers are refused.
* Graph fixes (:mod:`seqdeploy.export.fixes`, re-exported here), each a small
  function: :func:`fix_erfc` (TF's exact GELU uses
  ``Erfc``, which is not an ONNX op), :func:`name_batch_axis` (tf2onnx names the
  dynamic batch ``unk__N``), :func:`rename_io` (names from the Keras model),
  :func:`check_opset_support` and :func:`check_runtime_loadable` (anything
  onnxruntime refuses is reported by layer name).

Opsets: :mod:`seqdeploy.export.opsets` (default 17, supported 13-18).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

from seqdeploy import __version__
from seqdeploy.layout import MODEL_KERAS, MODEL_ONNX, TRAIN_FILE, export_record_for
from seqdeploy.atomic import atomic_path, atomic_write_json, sha256_file
from seqdeploy.export.fixes import (  # noqa: F401 - re-exported: the public graph fixes live there
    check_opset_support,
    check_runtime_loadable,
    GRAPH_FIXES,
    apply_graph_fixes,
    fix_erfc,
    loop_and_contrib_warnings,
    name_batch_axis,
)
from seqdeploy.export.graph import layer_of, op_counts, rename_io, sanitize_name, unique_names
from seqdeploy.export.layers.time_distributed import fold_time_distributed
from seqdeploy.export.opsets import BATCH, DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, check_opset, extension_domains
from seqdeploy.export.optimize import OptimizeReport
from seqdeploy import compat
from seqdeploy.errors import (
    ExportError,
    InputFileNotFound,
    ModelLoadError,
    OpsetError,
    UnsupportedLayerError,
    first_line,
)

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MAX_OPSET",
    "TensorInfo",
    "ExportResult",
    "load_keras_model",
    "export_onnx",
    "convert_model",
    "fix_erfc",
    "name_batch_axis",
    "rename_io",
    "sanitize_name",
    "fold_time_distributed",
    "keras_input_names",
    "keras_output_names",
    "loop_and_contrib_warnings",
    "check_opset_support",
    "check_runtime_loadable",
]


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: ``shape`` uses ``"batch"`` for the dynamic batch axis
    and ``None`` for any other dynamic axis."""

    name: str
    shape: tuple
    dtype: str


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and what the graph contains."""

    source: Path
    onnx_path: Path
    report_path: Path
    opset: int
    ir_version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    native_recurrent: tuple[str, ...]
    strategy: str  # "tf2onnx+native" (converters' native nodes stitched in) or "tf2onnx"
    seconds: float
    size_bytes: int
    sha256: str
    native_layers: tuple[str, ...] = ()  # every layer call a converter emitted ("name: what"), recurrent ones too
    opset_domains: dict[str, int] = dataclasses.field(default_factory=dict)  # imported besides the default domain
    needs_extensions: bool = False  # the graph has ai.onnx.contrib ops: onnxruntime-extensions must be installed
    graph_cleanup: dict = dataclasses.field(default_factory=dict)  # what the graph cleanup did: OptimizeReport.summary


@dataclasses.dataclass(frozen=True)
class Conversion:
    """An in-memory conversion (before metadata and files): see :func:`convert_model`."""

    model: Any  # onnx.ModelProto
    native_recurrent: tuple[str, ...]
    notes: tuple[str, ...]
    strategy: str
    native_layers: tuple[str, ...] = ()
    opset_domains: dict[str, int] = dataclasses.field(default_factory=dict)
    needs_extensions: bool = False
    graph_cleanup: dict = dataclasses.field(default_factory=dict)  # :meth:`OptimizeReport.summary`
    opset: int = DEFAULT_OPSET  # the default-domain opset the graph was converted at


# --------------------------------------------------------------------------- loading


def _keras_config(path: Path) -> dict | None:
    """The saved model config (``.keras`` zip or legacy ``.h5``) without deserializing it."""
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        import h5py

        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
            if raw is None:
                return None
            return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: not a saved Keras model ({type(exc).__name__}: {exc}); expected a file written by "
            "keras Model.save() (.keras, or legacy .h5); re-save the model with model.save('model.keras')"
        ) from None


def _find_layers(config: Any, class_names: set[str]) -> list[tuple[str, str]]:
    """(class, name) of every layer config (nested too) whose class is in ``class_names``."""
    found: list[tuple[str, str]] = []
    if isinstance(config, dict):
        cls = config.get("class_name")
        if cls in class_names and isinstance(config.get("config"), dict):
            found.append((cls, str(config["config"].get("name", "?"))))
        for v in config.values():
            found.extend(_find_layers(v, class_names))
    elif isinstance(config, list):
        for v in config:
            found.extend(_find_layers(v, class_names))
    return found


def load_keras_model(path: str | Path, *, unsafe: bool = False, custom_objects: Any = None):
    """Load a saved Keras 3 model (``.keras`` or legacy ``.h5``) without compiling it.

    ``custom_objects``: a dict (name -> class/function), or files/modules that define the model's custom
    layers (:func:`seqdeploy.export.custom_objects.load_custom_objects` imports them).

    ``Lambda`` layers run arbitrary Python: they are refused (naming the layer)
    unless ``unsafe=True`` (Keras ``safe_mode=False``).

    >>> model = load_keras_model("runs/breast_cancer_mlp/model.keras")  # doctest: +SKIP
    >>> model.name                                                      # doctest: +SKIP
    'breast_cancer_mlp'
    """
    path = Path(path)
    if path.is_dir():
        if (path / MODEL_KERAS).is_file():
            path = path / MODEL_KERAS
        else:
            raise InputFileNotFound(
                f"{path}: directory without model.keras; expected a run directory written by "
                "`seqdeploy train` or a .keras/.h5 file"
            )
    if not path.exists():
        raise InputFileNotFound(f"{path}: no such file; expected a .keras or .h5 model file or a run directory")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelLoadError(
            f"{path}: unsupported model file type {path.suffix or '(no suffix)'!r}; expected one of "
            f"{', '.join(MODEL_SUFFIXES)} (save with model.save('model.keras'))"
        )
    config = _keras_config(path)
    if not unsafe and config is not None:
        lambdas = _find_layers(config, {"Lambda"})
        if lambdas:
            names = ", ".join(f"{name!r}" for _, name in lambdas)
            raise ModelLoadError(
                f"{path}: Lambda layer {names} runs arbitrary Python code and is refused in safe mode; "
                "replace it with a built-in or registered layer, or allow unsafe layers (unsafe=True) if you trust this file"
            )
    import keras

    from seqdeploy.export.custom_objects import custom_objects_hint, load_custom_objects

    if custom_objects is not None and not isinstance(custom_objects, dict):
        custom_objects = load_custom_objects([custom_objects] if isinstance(custom_objects, (str, Path))
                                             else custom_objects)
    try:
        with contextlib.redirect_stdout(None):  # legacy h5 loading may print
            model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe,
                                            custom_objects=custom_objects or None)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        msg = first_line(exc)
        named = custom_objects_hint(str(exc), config, custom_objects)
        if named:
            raise ModelLoadError(f"{path}: could not load the Keras model: {named}") from None
        hint = (
            "if it uses custom layers, register them with @keras.saving.register_keras_serializable and import them first"
            if "class" in msg.lower() or "custom" in msg.lower() or "unknown" in msg.lower()
            else "check that the file was written by keras Model.save()"
        )
        raise ModelLoadError(f"{path}: could not load the Keras model ({type(exc).__name__}: {msg}); {hint}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{path}: contains a {type(model).__name__}, expected a keras.Model")
    return model


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _tf_dtype(dtype: Any):
    import tensorflow as tf

    return tf.as_dtype(getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype)


def _from_function(fn, specs: list, opset: int, what: str, layer_names: list[str]):
    """tf2onnx ``from_function`` with errors mapped to seqdeploy errors."""
    import tensorflow as tf
    import tf2onnx

    try:
        with _quiet_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(tf.function(fn), input_signature=specs, opset=opset)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises bare Exceptions
        msg = first_line(exc)
        layer = layer_of(msg, layer_names)
        where = f"layer {layer!r}" if layer else what
        if "opset" in msg.lower():
            raise OpsetError(
                f"{where}: tf2onnx cannot convert it at opset {opset} ({msg[:300]}); "
                f"try opset {DEFAULT_OPSET} (supported {MIN_OPSET}-{MAX_OPSET})"
            ) from None
        raise UnsupportedLayerError(f"{where}: tf2onnx conversion failed ({type(exc).__name__}: {msg[:300]})") from None
    return proto


def _spec_shape(shape) -> list:
    return [None if (d is None or (isinstance(d, int) and d < 0)) else int(d) for d in shape]


def _io_specs(model) -> list:
    import tensorflow as tf

    specs = []
    for t, name in zip(model.inputs, keras_input_names(model)):
        shape = _spec_shape(t.shape)
        shape[0] = None
        specs.append(tf.TensorSpec(shape, _tf_dtype(t.dtype), name=name))
    return specs


def keras_output_names(model) -> list[str]:
    """ONNX output names for a Keras model: its ``output_names`` (Functional: the output
    layers' names), else ``output_0, output_1, ...`` (Sequential, like Keras's own ONNX
    export), sanitised and made unique.

    >>> keras_output_names(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))  # doctest: +SKIP
    ['output_0']
    """
    from seqdeploy.export.native import dict_output_names

    names = dict_output_names(model) or list(getattr(model, "output_names", None) or [])  # dict outputs: the keys
    if len(names) != len(model.outputs):
        names = [f"output_{i}" for i in range(len(model.outputs))]
    return unique_names([sanitize_name(n, "output") for n in names])


def keras_input_names(model) -> list[str]:
    """ONNX input names for a Keras model: its input layers' names (``keras.Input(name=...)``,
    else Keras's ``input_layer``), sanitised and made unique.

    >>> keras_input_names(keras.Sequential([keras.Input((3,), name="features"), keras.layers.Dense(1)]))  # doctest: +SKIP
    ['features']
    """
    from seqdeploy.export.native import dict_input_names

    names = dict_input_names(model)  # keras.Model(inputs={key: Input}): one input per key, named by the key
    if names is not None:
        return unique_names([sanitize_name(n, "input") for n in names])
    names = []
    for i, t in enumerate(model.inputs):
        names.append(compat.keras_tensor_layer_name(t) or getattr(t, "name", "") or f"input_{i}")
    return unique_names([sanitize_name(n, "input") for n in names])


def _all_layer_names(model) -> list[str]:
    names = []
    for layer in getattr(model, "layers", []):
        names.append(layer.name)
        names.extend(_all_layer_names(layer) if hasattr(layer, "layers") else [])
        for attr in ("layer", "forward_layer", "backward_layer"):
            inner = getattr(layer, attr, None)
            if inner is not None and hasattr(inner, "name"):
                names.append(inner.name)
    return names


def required_opset(model) -> tuple[int, list[str]]:
    """The lowest opset the model's layer converters need (``LayerConverter.min_opset``; 0: none) and the layers
    that need it."""
    from seqdeploy.export.layers import converter_for
    from seqdeploy.export.native import iter_layers

    need, who = 0, []
    for layer in iter_layers(model):
        conv = converter_for(layer)
        m = int(getattr(conv, "min_opset", 0) or 0) if conv is not None else 0
        if m > need:
            need, who = m, [layer.name]
        elif m and m == need:
            who.append(layer.name)
    return need, who


def convert_model(model, *, opset: int | None = None) -> Conversion:
    """Convert a loaded Keras model to an ONNX ``ModelProto`` (no files written).

    Applies every graph fix and checks the result (checker, shape inference,
    opset support, onnxruntime can load it).

    >>> conv = convert_model(keras_model, opset=17)  # doctest: +SKIP
    >>> conv.native_recurrent                         # doctest: +SKIP
    ('gru: GRU',)
    """
    import onnx

    need, who = required_opset(model)
    opset = max(DEFAULT_OPSET, need) if opset is None else opset  # default: 17, or what a layer needs
    check_opset(opset)
    if opset < need:
        raise OpsetError(f"opset {opset} is too low for layer(s) {who}: their ONNX form needs opset >= {need}; "
                         f"export at opset {need} (or leave the opset unset)")
    if not getattr(model, "built", True) or not getattr(model, "inputs", None):
        raise ExportError(
            f"model {model.name!r} has no defined inputs (it was never built); build it with keras.Input(shape=...) "
            "as its first layer, or call it once on data before saving"
        )
    from seqdeploy.export.native import convert_native, eager_tensors_as_variables

    layer_names = _all_layer_names(model)
    with eager_tensors_as_variables(model):
        traced = convert_native(model, opset, input_specs=_io_specs(model), output_names=keras_output_names(model),
                                from_function=_from_function, layer_names=layer_names)
    proto = traced.model
    conv = Conversion(model=proto, opset=opset, native_recurrent=tuple(n.description for n in traced.native if n.converter == "recurrent"),
                      notes=traced.notes, strategy="tf2onnx+native" if traced.native else "tf2onnx",
                      native_layers=tuple(n.description for n in traced.native),
                      opset_domains=dict(sorted(traced.domains.items())),
                      needs_extensions=bool(extension_domains(proto)))
    reports = apply_graph_fixes(proto)
    cleanup = next((r for r in reports if isinstance(r, OptimizeReport)), None)
    conv = dataclasses.replace(conv, graph_cleanup=cleanup.summary() if cleanup is not None else {})
    check_opset_support(proto, opset, layer_names)
    try:
        onnx.checker.check_model(proto, full_check=False)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"model {model.name!r}: the converted ONNX graph is invalid ({str(exc).splitlines()[0][:300]})") from None
    name_batch_axis(proto)  # again: shape inference adds value_info with unnamed batch dims
    check_runtime_loadable(proto, layer_names)
    return dataclasses.replace(conv, model=proto)


# --------------------------------------------------------------------------- export


def _resolve_source(source: str | Path) -> tuple[Path, Path | None]:
    """(model file, run directory or None)."""
    src = Path(source)
    if src.is_dir():
        model_file = src / MODEL_KERAS
        if not model_file.is_file():
            raise InputFileNotFound(
                f"{src}: run directory without model.keras; expected the output directory of "
                "`seqdeploy train` (model.keras + train.json) or a .keras/.h5 file"
            )
        return model_file, src
    if not src.exists():
        raise InputFileNotFound(
            f"{src}: no such file or directory; expected a run directory, a .keras or a .h5 model file"
        )
    return src, None


def _tensor_infos(values) -> tuple[TensorInfo, ...]:
    from onnx import helper

    out = []
    for vi in values:
        tt = vi.type.tensor_type
        shape = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.dim_param == BATCH or (i == 0 and d.dim_param):
                shape.append(BATCH)
            else:
                shape.append(None)
        out.append(TensorInfo(name=vi.name, shape=tuple(shape), dtype=str(helper.tensor_dtype_to_np_dtype(tt.elem_type))))
    return tuple(out)


def _metadata(model_file: Path, run_dir: Path | None, opset: int) -> dict[str, str]:
    import keras
    import tensorflow as tf
    import tf2onnx

    meta = {
        "seqdeploy_version": __version__,
        "source_file": model_file.name,
        "source_sha256": sha256_file(model_file),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "tf2onnx_version": tf2onnx.__version__,
        "opset": str(opset),
    }
    train_json = run_dir / TRAIN_FILE if run_dir else None
    if train_json is not None and train_json.is_file():
        try:
            info = json.loads(train_json.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(f"{train_json}: unreadable train.json ({exc}); re-run `seqdeploy train` or remove the file") from None
        for key in ("spec_name", "task", "target_name"):
            if info.get(key) is not None:
                meta[key] = str(info[key])
        for key in ("labels", "preprocessing", "input"):
            if info.get(key) is not None:
                meta[key] = json.dumps(info[key], sort_keys=True)
    return meta


def export_onnx(
    source: str | Path,
    *,
    out: str | Path | None = None,
    opset: int | None = None,
    unsafe: bool = False,
    custom_objects: Any = None,
) -> ExportResult:
    """Export a run directory or a saved Keras model to ONNX, plus an ``export.json`` report.

    ``custom_objects``: as in :func:`load_keras_model` (the files defining the model's custom layers).

    A run directory gets ``model.onnx`` and ``export.json`` inside it; a model
    file ``m.keras`` gets ``m.onnx`` and ``m.export.json`` beside it (or beside
    ``out``). Nothing is written unless the whole conversion succeeds; files are
    replaced atomically.

    >>> r = export_onnx("runs/sunspots_gru")     # doctest: +SKIP
    >>> r.native_recurrent, r.warnings           # doctest: +SKIP
    (('gru: GRU',), ())
    """
    import onnx

    if opset is not None:
        check_opset(opset)
    model_file, run_dir = _resolve_source(source)
    if out is not None:
        onnx_path = Path(out)
        if onnx_path.is_dir():
            onnx_path = onnx_path / (MODEL_ONNX if run_dir else f"{model_file.stem}.onnx")
    elif run_dir is not None:
        onnx_path = run_dir / MODEL_ONNX
    else:
        onnx_path = model_file.with_suffix(".onnx")
    if onnx_path.suffix != ".onnx":
        raise ExportError(f"output path {onnx_path}: expected a path ending in .onnx (or an existing directory)")
    report_path = export_record_for(onnx_path)

    model = load_keras_model(model_file, unsafe=unsafe, custom_objects=custom_objects)
    start = time.perf_counter()
    conv = convert_model(model, opset=opset)
    proto = conv.model
    opset = conv.opset
    layer_names = _all_layer_names(model)
    warnings = loop_and_contrib_warnings(proto, layer_names)
    onnx.helper.set_model_props(proto, _metadata(model_file, run_dir, opset))
    data = proto.SerializeToString()
    seconds = time.perf_counter() - start

    with atomic_path(onnx_path) as tmp:
        tmp.write_bytes(data)
    result = ExportResult(
        source=model_file,
        onnx_path=onnx_path,
        report_path=report_path,
        opset=opset,
        ir_version=int(proto.ir_version),
        inputs=_tensor_infos(proto.graph.input),
        outputs=_tensor_infos(proto.graph.output),
        op_counts=op_counts(proto),
        warnings=warnings,
        notes=conv.notes,
        native_recurrent=conv.native_recurrent,
        strategy=conv.strategy,
        seconds=round(seconds, 3),
        size_bytes=len(data),
        sha256=sha256_file(onnx_path),
        native_layers=conv.native_layers,
        opset_domains=conv.opset_domains,
        needs_extensions=conv.needs_extensions,
        graph_cleanup=conv.graph_cleanup,
    )
    atomic_write_json(report_path, result)
    if run_dir is not None and onnx_path == run_dir / MODEL_ONNX:
        from seqdeploy.bundle.write import refresh_bundle_manifest

        refresh_bundle_manifest(run_dir)  # a run directory is a bundle: keep its manifest (and portable graphs) in step
    return result


def load_checked_onnx(path: str | Path):
    """Load an ONNX file a user handed us and run ``onnx.checker`` on it before anything uses it.

    >>> load_checked_onnx("runs/breast_cancer_mlp/model.onnx").graph.input[0].name  # doctest: +SKIP
    'features'
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputFileNotFound(f"{path} does not exist; expected an ONNX model file (run `seqdeploy export`)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError & co for anything that is not ONNX
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__}); re-export it with "
                             "`seqdeploy export`") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid graph"
        raise ModelLoadError(f"{path}: fails onnx.checker ({first[:200]}); re-export it with `seqdeploy export`") from None
    return model

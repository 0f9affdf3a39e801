"""Training specs: a TOML file (or a ``.py`` file) -> frozen, validated dataclasses.

A spec says, as in the Keras Sequential API, what to build, how to compile and
fit it, and on which data::

    name = "breast_cancer_mlp"

    [data]
    source = "breast_cancer"

    [[layers]]
    type = "Dense"
    units = 16
    activation = "relu"

    [compile]
    optimizer = "adam"
    loss = "binary_crossentropy"
    metrics = ["accuracy"]

    [fit]
    epochs = 20
    batch_size = 32
    validation_split = 0.2

    >>> spec = load_spec("models/breast_cancer_mlp.toml")  # doctest: +SKIP
    >>> spec.fit.epochs  # doctest: +SKIP
    20

Parsing checks structure and types only (no TensorFlow import); layer names and
arguments are checked against Keras when the model is built (``train.py``).
A ``.py`` spec defines ``build_model() -> keras.Model`` and a ``SPEC`` dict with
the same keys as the TOML file minus ``layers``/``input``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from seqdeploy.errors import InputFileNotFound, SpecError

BUILTIN_SOURCES = ("breast_cancer", "digits", "sentiment", "sunspots")
TABLE_SOURCES = ("csv", "jsonl", "parquet")
FILE_SOURCES = (*TABLE_SOURCES, "npz", "images")
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos", "box", "hamming")
ALPHA_MODES = ("white", "black", "error")
ENCODINGS = ("onehot", "index")
TASKS = ("binary", "multiclass", "regression")
DTYPES = ("float32", "int32")

_TOP_KEYS = {"name", "description", "data", "input", "layers", "compile", "fit", "labels"}
_DATA_KEYS = {"source", "path", "target", "features", "task", "test_fraction", "window",
              "sequence_length", "vocabulary_size", "samples", "image_size", "channels",
              "text", "lowercase", "token_pattern", "categorical", "encoding", "resize", "alpha",
              "skip_bad_files"}
_INPUT_KEYS = {"shape", "dtype", "name"}
_COMPILE_KEYS = {"optimizer", "loss", "metrics"}
_FIT_KEYS = {"epochs", "batch_size", "validation_split", "early_stopping_patience", "seed"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    source: str
    path: Path | None = None
    target: str | None = None
    features: tuple[str, ...] | None = None
    task: str | None = None
    test_fraction: float = 0.2
    window: int = 12
    sequence_length: int = 20
    vocabulary_size: int = 2000
    samples: int = 2000
    image_size: int | tuple[int, int] = 8
    channels: int = 1
    #: tables: a text column (tokenized) instead of numeric features
    text: str | None = None
    lowercase: bool = True
    token_pattern: str | None = None
    #: tables: categorical feature columns (None: inferred from non-numeric columns)
    categorical: tuple[str, ...] | None = None
    encoding: str = "onehot"
    #: image folders
    resize: str = "bilinear"
    alpha: str = "white"
    skip_bad_files: bool = False


@dataclasses.dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    type: str
    kwargs: Mapping[str, Any]
    index: int


@dataclasses.dataclass(frozen=True)
class CompileSpec:
    optimizer: str
    optimizer_kwargs: Mapping[str, Any]
    loss: str
    metrics: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FitSpec:
    epochs: int = 10
    batch_size: int = 32
    validation_split: float = 0.2
    early_stopping_patience: int = 5
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    path: Path
    data: DataSpec
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    compile: CompileSpec
    fit: FitSpec
    labels: tuple[str, ...] | None = None
    description: str = ""
    build_model: Callable[[], Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    def with_overrides(self, *, epochs: int | None = None, seed: int | None = None) -> "Spec":
        """Return a copy with ``fit.epochs`` / ``fit.seed`` replaced (CLI overrides)."""
        fit = self.fit
        if epochs is not None:
            fit = dataclasses.replace(fit, epochs=_positive_int(epochs, "epochs", self.path))
        if seed is not None:
            fit = dataclasses.replace(fit, seed=_int(seed, "seed", self.path))
        return dataclasses.replace(self, fit=fit)


def load_spec(path: str | Path, *, base_dir: str | Path | None = None) -> Spec:
    """Read and validate a ``.toml`` or ``.py`` spec file.

    ``base_dir`` resolves relative data paths (defaults to the spec's folder).

    >>> load_spec("models/digits_cnn.toml").data.source  # doctest: +SKIP
    'digits'
    """
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"spec file {str(path)!r} does not exist; expected a .toml or .py spec "
                                "(see models/ for examples)")
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; expected a .toml or .py spec file")
    base = Path(base_dir) if base_dir is not None else path.parent
    if path.suffix == ".py":
        return _load_py_spec(path, base)
    if path.suffix != ".toml":
        raise SpecError(f"{path}: unsupported spec type {path.suffix!r}; expected .toml or .py")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason}); save the spec as UTF-8") from None
    return parse_spec_text(text, path=path, base_dir=base)


def parse_spec_text(text: str, *, path: str | Path = "<spec>", base_dir: str | Path = ".") -> Spec:
    """Parse TOML text into a :class:`Spec` (structure and types only)."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}; fix the syntax at that line") from None
    return spec_from_dict(doc, path=path, base_dir=Path(base_dir))


def spec_from_dict(doc: Mapping[str, Any], *, path: Path, base_dir: Path,
                   build_model: Callable[[], Any] | None = None) -> Spec:
    """Validate a parsed spec document. ``build_model`` replaces ``layers`` for .py specs."""
    if not isinstance(doc, Mapping):
        raise SpecError(f"{path}: the spec must be a table of keys, got {type(doc).__name__}")
    _no_unknown(doc, _TOP_KEYS, path, "top level")
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(f"{path}: name = {name!r}; expected letters, digits, '_', '-' or '.' "
                        "(it names the run directory)")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{path}: description must be a string, got {type(description).__name__}")

    data = _parse_data(_table(doc, "data", path, required=True), path, base_dir)
    inp = _parse_input(_table(doc, "input", path, required=False), path)
    if build_model is None:
        layers = _parse_layers(doc.get("layers"), path)
    else:
        if "layers" in doc:
            raise SpecError(f"{path}: a .py spec defines its layers in build_model(); remove 'layers' from SPEC")
        layers = ()
    comp = _parse_compile(_table(doc, "compile", path, required=True), path)
    fit = _parse_fit(_table(doc, "fit", path, required=False), path)
    labels = doc.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise SpecError(f"{path}: labels = {labels!r}; expected a non-empty list of strings, one per class")
        if len(set(labels)) != len(labels):
            raise SpecError(f"{path}: labels contain duplicates: {labels!r}; class names must be unique")
        labels = tuple(labels)
    return Spec(name=name, path=path, data=data, input=inp, layers=layers, compile=comp, fit=fit,
                labels=labels, description=description, build_model=build_model)


# --- sections -----------------------------------------------------------------------------

def _parse_data(t: Mapping[str, Any], path: Path, base_dir: Path) -> DataSpec:
    _no_unknown(t, _DATA_KEYS, path, "[data]")
    source = t.get("source")
    allowed = BUILTIN_SOURCES + FILE_SOURCES
    if not isinstance(source, str) or source not in allowed:
        raise SpecError(f"{path}: [data] source = {source!r}; expected one of {', '.join(allowed)}")
    data_path = None
    if source in FILE_SOURCES:
        raw = t.get("path")
        if not isinstance(raw, str) or not raw:
            example = "photos/\" (one subfolder per class" if source == "images" else f"file.{source}\" ("
            raise SpecError(f"{path}: [data] source = {source!r} needs path = \"{example}"
                            "relative to the spec file)")
        data_path = Path(raw) if Path(raw).is_absolute() else (base_dir / raw)
    elif "path" in t:
        raise SpecError(f"{path}: [data] path is only used with source = {' / '.join(FILE_SOURCES)}, "
                        f"not the built-in {source!r}; remove it")
    target = t.get("target")
    if target is not None and not isinstance(target, str):
        raise SpecError(f"{path}: [data] target = {target!r}; expected a column name (string)")
    if source in TABLE_SOURCES and target is None:
        raise SpecError(f"{path}: [data] source = {source!r} needs target = \"<column>\" naming the label column")
    features = t.get("features")
    if features is not None:
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise SpecError(f"{path}: [data] features = {features!r}; expected a non-empty list of column names")
        features = tuple(features)
    task = t.get("task")
    if task is not None and task not in TASKS:
        raise SpecError(f"{path}: [data] task = {task!r}; expected one of {', '.join(TASKS)}")
    if source == "images":
        task = task or "multiclass"
        if task == "regression":
            raise SpecError(f"{path}: [data] source = \"images\" has one class per folder: task = \"binary\" or "
                            "\"multiclass\", not \"regression\"")
    if source in FILE_SOURCES and task is None:
        raise SpecError(f"{path}: [data] source = {source!r} needs task = one of {', '.join(TASKS)}")
    test_fraction = _float(t.get("test_fraction", 0.2), "[data] test_fraction", path)
    if not 0.05 <= test_fraction <= 0.5:
        raise SpecError(f"{path}: [data] test_fraction = {test_fraction}; expected a value in [0.05, 0.5]")
    window = _positive_int(t.get("window", 12), "[data] window", path)
    seq_len = _positive_int(t.get("sequence_length", 20), "[data] sequence_length", path)
    vocab = _positive_int(t.get("vocabulary_size", 2000), "[data] vocabulary_size", path)
    samples = _positive_int(t.get("samples", 2000), "[data] samples", path)
    raw_size = t.get("image_size", 8)
    channels = _positive_int(t.get("channels", 1), "[data] channels", path)
    if source == "images":
        image_size = _image_size(raw_size, path)
        if channels not in (1, 3):
            raise SpecError(f"{path}: [data] channels = {channels}; expected 1 (greyscale) or 3 (RGB)")
    else:
        image_size = _positive_int(raw_size, "[data] image_size", path)
    if (image_size != 8 or channels != 1) and source not in ("digits", "images"):
        raise SpecError(f"{path}: [data] image_size/channels only apply to source = \"digits\" or \"images\", "
                        f"not {source!r}")
    if source != "images" and (not 8 <= image_size <= 128 or channels not in (1, 3)):
        raise SpecError(f"{path}: [data] image_size = {image_size}, channels = {channels}; expected image_size in "
                        "8..128 (nearest-neighbour upsampling of the 8x8 digits) and channels 1 or 3")
    if vocab < 3:
        raise SpecError(f"{path}: [data] vocabulary_size = {vocab}; expected >= 3 (pad, OOV and one word)")
    extra = _parse_byo(t, source, path)
    if extra.get("text") is not None and (features is not None or extra.get("categorical")):
        raise SpecError(f"{path}: [data] text = {extra['text']!r} feeds the model the tokenized text column alone; "
                        "remove features / categorical (or drop text for a numeric/categorical table)")
    if extra.get("text") is not None and task == "regression":
        raise SpecError(f"{path}: [data] text = {extra['text']!r} with task = \"regression\": text columns feed "
                        "classifiers; use task = \"binary\" or \"multiclass\"")
    return DataSpec(source=source, path=data_path, target=target, features=features, task=task,
                    test_fraction=test_fraction, window=window, sequence_length=seq_len,
                    vocabulary_size=vocab, samples=samples, image_size=image_size, channels=channels, **extra)


def _parse_byo(t: Mapping[str, Any], source: str, path: Path) -> dict[str, Any]:
    """The bring-your-own-data keys: text/categorical columns of tables, image-folder loading."""
    out: dict[str, Any] = {}
    table_keys = ("text", "lowercase", "token_pattern", "categorical", "encoding")
    image_keys = ("resize", "alpha", "skip_bad_files")
    for key in table_keys:
        if key in t and source not in TABLE_SOURCES:
            raise SpecError(f"{path}: [data] {key} applies to table sources ({', '.join(TABLE_SOURCES)}), not "
                            f"{source!r}; remove it")
    for key in image_keys:
        if key in t and source != "images":
            raise SpecError(f"{path}: [data] {key} applies to source = \"images\", not {source!r}; remove it")
    if "text" in t:
        if not isinstance(t["text"], str) or not t["text"]:
            raise SpecError(f"{path}: [data] text = {t['text']!r}; expected the name of the text column")
        out["text"] = t["text"]
    for key in ("lowercase", "skip_bad_files"):
        if key in t:
            if not isinstance(t[key], bool):
                raise SpecError(f"{path}: [data] {key} = {t[key]!r}; expected true or false")
            out[key] = t[key]
    if "token_pattern" in t:
        pattern = t["token_pattern"]
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise SpecError(f"{path}: [data] token_pattern = {pattern!r} is not a regex ({exc}); e.g. "
                            "\"[A-Za-z0-9']+\"") from None
        out["token_pattern"] = pattern
    if "categorical" in t:
        cats = t["categorical"]
        if not isinstance(cats, list) or not all(isinstance(c, str) and c for c in cats) or len(set(cats)) != len(cats):
            raise SpecError(f"{path}: [data] categorical = {cats!r}; expected a list of distinct column names "
                            "(or [] for none)")
        out["categorical"] = tuple(cats)
    for key, allowed in (("encoding", ENCODINGS), ("resize", RESIZE_METHODS), ("alpha", ALPHA_MODES)):
        if key in t:
            if t[key] not in allowed:
                raise SpecError(f"{path}: [data] {key} = {t[key]!r}; expected one of {', '.join(allowed)}")
            out[key] = t[key]
    return out


def _image_size(raw: Any, path: Path) -> int | tuple[int, int]:
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        h, w = raw
    elif isinstance(raw, int) and not isinstance(raw, bool):
        h = w = raw
    else:
        raise SpecError(f"{path}: [data] image_size = {raw!r}; expected an integer or [height, width]")
    if not (4 <= h <= 1024 and 4 <= w <= 1024):
        raise SpecError(f"{path}: [data] image_size = {raw!r}; expected sizes from 4 to 1024 pixels")
    return h if h == w else (h, w)


def _parse_input(t: Mapping[str, Any], path: Path) -> InputSpec:
    _no_unknown(t, _INPUT_KEYS, path, "[input]")
    shape = t.get("shape")
    if shape is not None:
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise SpecError(f"{path}: [input] shape = {shape!r}; expected a list of positive integers "
                            "without the batch axis, e.g. [30] or [8, 8, 1]")
        shape = tuple(shape)
    dtype = t.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise SpecError(f"{path}: [input] dtype = {dtype!r}; expected one of {', '.join(DTYPES)}")
    name = t.get("name")
    if name is not None and (not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name)):
        raise SpecError(f"{path}: [input] name = {name!r}; expected an identifier such as \"features\"")
    return InputSpec(shape=shape, dtype=dtype, name=name)


def _parse_layers(raw: Any, path: Path) -> tuple[LayerSpec, ...]:
    if raw is None:
        raise SpecError(f"{path}: no [[layers]]; expected at least one, e.g.\n"
                        "[[layers]]\ntype = \"Dense\"\nunits = 1")
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{path}: layers must be an array of tables ([[layers]]), got {type(raw).__name__}")
    out = []
    for i, entry in enumerate(raw):
        out.append(_parse_layer(entry, path, f"layers[{i}]", i))
    return tuple(out)


def _parse_layer(entry: Any, path: Path, where: str, index: int) -> LayerSpec:
    if not isinstance(entry, Mapping):
        raise SpecError(f"{path}: {where} must be a table with a 'type' key, got {entry!r}")
    kind = entry.get("type")
    if not isinstance(kind, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", kind):
        raise SpecError(f"{path}: {where} type = {kind!r}; expected a keras.layers class name such as \"Dense\"")
    kwargs = {k: v for k, v in entry.items() if k != "type"}
    for key, value in kwargs.items():
        if isinstance(value, Mapping) and "type" in value:  # a wrapped layer (Bidirectional, TimeDistributed)
            kwargs[key] = _parse_layer(value, path, f"{where}.{key}", index)
    return LayerSpec(type=kind, kwargs=kwargs, index=index)


def _parse_compile(t: Mapping[str, Any], path: Path) -> CompileSpec:
    _no_unknown(t, _COMPILE_KEYS, path, "[compile]")
    opt = t.get("optimizer", "adam")
    opt_kwargs: dict[str, Any] = {}
    if isinstance(opt, Mapping):
        opt_kwargs = {k: v for k, v in opt.items() if k != "name"}
        opt = opt.get("name")
    if not isinstance(opt, str) or not opt:
        raise SpecError(f"{path}: [compile] optimizer = {opt!r}; expected a name such as \"adam\" or "
                        "a table {{ name = \"adam\", learning_rate = 0.001 }}")
    loss = t.get("loss")
    if not isinstance(loss, str) or not loss:
        raise SpecError(f"{path}: [compile] loss = {loss!r}; expected a Keras loss name such as "
                        "\"binary_crossentropy\"")
    metrics = t.get("metrics", [])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise SpecError(f"{path}: [compile] metrics = {metrics!r}; expected a list of metric names")
    return CompileSpec(optimizer=opt, optimizer_kwargs=opt_kwargs, loss=loss, metrics=tuple(metrics))


def _parse_fit(t: Mapping[str, Any], path: Path) -> FitSpec:
    _no_unknown(t, _FIT_KEYS, path, "[fit]")
    epochs = _positive_int(t.get("epochs", 10), "[fit] epochs", path)
    batch = _positive_int(t.get("batch_size", 32), "[fit] batch_size", path)
    vs = _float(t.get("validation_split", 0.2), "[fit] validation_split", path)
    if not 0.0 < vs < 0.5:
        raise SpecError(f"{path}: [fit] validation_split = {vs}; expected a value in (0, 0.5)")
    patience = _int(t.get("early_stopping_patience", 5), "[fit] early_stopping_patience", path)
    if patience < 0:
        raise SpecError(f"{path}: [fit] early_stopping_patience = {patience}; expected >= 0 (0 disables it)")
    seed = _int(t.get("seed", 42), "[fit] seed", path)
    if not 0 <= seed < 2**32:
        raise SpecError(f"{path}: [fit] seed = {seed}; expected an integer in [0, 2**32)")
    return FitSpec(epochs=epochs, batch_size=batch, validation_split=vs,
                   early_stopping_patience=patience, seed=seed)


# --- .py specs ---------------------------------------------------------------------------

def _load_py_spec(path: Path, base_dir: Path) -> Spec:
    mod_spec = importlib.util.spec_from_file_location(f"seqdeploy_user_spec_{path.stem}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise SpecError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SpecError(f"{path}: Python syntax error at line {exc.lineno}: {exc.msg}") from None
    build = getattr(module, "build_model", None)
    if not callable(build):
        raise SpecError(f"{path}: a .py spec must define build_model() -> keras.Model")
    doc = getattr(module, "SPEC", None)
    if not isinstance(doc, Mapping):
        raise SpecError(f"{path}: a .py spec must define SPEC = {{...}} with 'data' and 'compile' "
                        "(and optionally 'fit', 'labels') like a TOML spec")
    return spec_from_dict(doc, path=path, base_dir=base_dir, build_model=build)


# --- small validators --------------------------------------------------------------------

def _table(doc: Mapping[str, Any], key: str, path: Path, *, required: bool) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise SpecError(f"{path}: missing [{key}] table; see models/breast_cancer_mlp.toml for an example")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}: {key} must be a table ([{key}]), got {type(value).__name__}")
    return value


def _no_unknown(t: Mapping[str, Any], allowed: set[str], path: Path, where: str) -> None:
    import difflib

    for key in t:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(sorted(allowed))}"
            raise SpecError(f"{path}: unknown key {key!r} in {where}{hint}")


def _int(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}: {where} = {value!r}; expected an integer")
    return value


def _positive_int(value: Any, where: str, path: Path) -> int:
    value = _int(value, where, path)
    if value < 1:
        raise SpecError(f"{path}: {where} = {value}; expected an integer >= 1")
    return value


def _float(value: Any, where: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{path}: {where} = {value!r}; expected a finite number")
    return float(value)

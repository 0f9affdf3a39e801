"""The bundle manifest: what an application needs to run an exported model.

``manifest.json`` sits in the run directory beside the ONNX files. It records
the model's inputs and outputs, the preprocessing, the task and its labels,
every ONNX artifact with its sha256, precision and portable deployment graph,
which artifact is deployed, what onnxruntime version it needs and the
verification summary. This module holds the schema, its validation and
:func:`load_manifest` (what :mod:`seqdeploy.runtime.predictor` needs: no TensorFlow, no
``onnx``); building and inspecting bundles live in :mod:`seqdeploy.bundle.write`.

    >>> from seqdeploy.runtime.manifest import load_manifest
    >>> load_manifest("runs/breast_cancer_mlp").deployment.file  # doctest: +SKIP
    'model.int8-static.onnx'

Schema history (``schema_version``):

1. first version.
2. each artifact may carry ``portable``: its portable deployment graph (raw inputs ->
   answers; file, sha256, size, inputs, outputs). Version 1 manifests still load.
   Optional additions within version 2 (older readers ignore them): ``runtime_settings``
   (measured thread counts per batch size), then its ``sessions`` (the full chosen
   :class:`~seqdeploy.runtime.session.SessionSettings` per batch size) and ``plain_best_p50_us``;
   ``custom_op_libraries`` (pip packages the deployed graphs' ``contrib_ops`` need, e.g.
   onnxruntime-extensions) and ``bindings`` (whether onnxruntime for Python, Node and the web runs the
   deployed portable graph, and what to do instead): manifests without them get both derived from
   ``contrib_ops`` (:mod:`seqdeploy.runtime.extensions`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping, Union

from seqdeploy import __version__
from seqdeploy.atomic import sha256_file
from seqdeploy.errors import BundleError, InputFileNotFound, InputValidationError, IntegrityError
from seqdeploy.layout import BENCH_FILE, MANIFEST_FILE, TUNE_FILE
from seqdeploy.runtime.extensions import BindingSupport, binding_support, packages_for
from seqdeploy.runtime.session import SessionSettings
from seqdeploy.preprocess import (  # noqa: F401  (re-exported: the kinds are part of the manifest's schema)
    NoPreprocessing,
    Preprocessing,
    Scale,
    Standardize,
    Tokenize,
    Window,
    from_record,
)

SCHEMA_VERSION = 2
MANIFEST_NAME = MANIFEST_FILE
TASKS = ("binary", "multiclass", "regression")

# Lowest onnxruntime release implementing each ai.onnx opset (onnxruntime docs, "Compatibility").
ORT_FOR_OPSET = {
    13: "1.6", 14: "1.8", 15: "1.9", 16: "1.11", 17: "1.12", 18: "1.14",
    19: "1.15", 20: "1.17", 21: "1.18", 22: "1.20", 23: "1.22",
}
# The base install's floor (pyproject `onnxruntime>=1.17`): never ask for less.
ORT_FLOOR = "1.17"
DEFAULT_DOMAINS = ("", "ai.onnx")


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: name, numpy dtype name and shape (``"batch"`` = dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[Union[int, str, None], ...]


@dataclass(frozen=True)
class PortableGraph:
    """The portable deployment graph of one artifact: raw inputs in, answers out (:mod:`seqdeploy.bundle.portable`)."""

    file: str
    sha256: str
    size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    contrib_ops: tuple[str, ...] = ()
    min_onnxruntime: str = ORT_FLOOR


@dataclass(frozen=True)
class Artifact:
    """One model-ready ONNX file of the bundle (path relative to the bundle directory) and its portable wrapping."""

    file: str
    sha256: str
    size: int
    precision: str
    recipe: str | None = None
    opset: int | None = None
    contrib_ops: tuple[str, ...] = ()
    min_onnxruntime: str = ORT_FLOOR
    portable: PortableGraph | None = None


@dataclass(frozen=True)
class BundleFile:
    """A non-model file of the bundle (golden data) with its checksum."""

    file: str
    sha256: str
    size: int
    role: str


@dataclass(frozen=True)
class Verification:
    """The verify stage's summary (Keras vs onnxruntime parity)."""

    passed: bool
    max_abs_error: float | None
    label_agreement: float | None


@dataclass(frozen=True)
class RuntimeSettings:
    """onnxruntime settings measured best for the deployed artifact, per batch size (from ``tune.json``,
    written by :func:`seqdeploy.bench.tune.tune_bundle`).

    ``sessions`` maps a measured batch size to the :class:`~seqdeploy.runtime.session.SessionSettings`
    (threads, spinning, graph optimisation) with the lowest p50 latency of the deployed per-call path;
    :class:`seqdeploy.runtime.predictor.Predictor` uses :meth:`for_batch` (the per-call regime, batch 1, unless told
    otherwise). ``threads`` repeats the thread counts for readers of schema 2 manifests written before
    ``sessions`` existed. ``p50_us`` is the chosen configuration's p50, ``plain_best_p50_us`` the best
    plain ``session.run`` p50 over every configuration measured (the deployed choice must not be slower).
    """

    threads: tuple[tuple[int, int], ...]  # (batch size, threads), ascending batch
    p50_us: tuple[tuple[int, float], ...] = ()  # (batch size, the chosen configuration's p50)
    source: str = TUNE_FILE
    sessions: tuple[tuple[int, SessionSettings], ...] = ()  # (batch size, chosen settings), ascending batch
    plain_best_p50_us: tuple[tuple[int, float], ...] = ()

    def for_batch(self, batch: int = 1) -> SessionSettings:
        """The chosen settings for the nearest measured batch size at or below ``batch`` (else the smallest)."""
        chosen = dict(self.sessions) if self.sessions else {b: SessionSettings(threads=t) for b, t in self.threads}
        best = chosen[min(chosen)]
        for b in sorted(chosen):
            if b <= batch:
                best = chosen[b]
        return best

    def threads_for(self, batch: int = 1) -> int:
        """The measured best thread count for the nearest measured batch size at or below ``batch``."""
        return self.for_batch(batch).threads


@dataclass(frozen=True)
class Manifest:
    """The parsed, validated ``manifest.json`` of a bundle.

    >>> m = load_manifest("runs/breast_cancer_mlp")  # doctest: +SKIP
    >>> m.task, m.labels, m.inputs[0].shape          # doctest: +SKIP
    ('binary', ('malignant', 'benign'), ('batch', 30))
    """

    schema_version: int
    name: str
    task: str
    labels: tuple[str, ...] | None
    target_name: str | None
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    preprocessing: Preprocessing
    artifacts: tuple[Artifact, ...]
    deployment_artifact: str
    min_onnxruntime: str
    contrib_ops: tuple[str, ...]
    verification: Verification | None
    files: tuple[BundleFile, ...] = ()
    producer: str = f"seqdeploy {__version__}"
    runtime_settings: RuntimeSettings | None = None
    custom_op_libraries: tuple[str, ...] = ()  # pip packages the deployed graphs' contrib_ops need
    bindings: tuple[BindingSupport, ...] = ()  # which onnxruntime bindings run the deployed portable graph

    def binding(self, name: str) -> BindingSupport:
        """Whether the onnxruntime binding ``name`` (python, node, web) runs the deployed portable graph."""
        for b in self.bindings or binding_support(self.contrib_ops):
            if b.binding == name:
                return b
        raise BundleError(f"binding {name!r} is not one of python, node, web")

    @property
    def deployment(self) -> Artifact:
        """The artifact the application should load by default."""
        return self.artifact(self.deployment_artifact)

    @property
    def portable(self) -> PortableGraph | None:
        """The deployed artifact's portable graph (raw inputs -> answers), or None for older bundles."""
        return self.deployment.portable

    def artifact(self, name: str) -> Artifact:
        """Find an artifact by file name, recipe or precision (``"model.onnx"``, ``"int8-static"``)."""
        for a in self.artifacts:
            if name in (a.file, a.recipe, a.precision, Path(a.file).stem):
                return a
        known = ", ".join(f"{a.file} ({a.precision})" for a in self.artifacts)
        raise BundleError(f"artifact {name!r} is not in this bundle (it has: {known}); "
                          f"pass one of these file names or precisions")


# --------------------------------------------------------------------------- parsing / validation


def _err(where: str, msg: str) -> BundleError:
    return BundleError(f"manifest.json: {where}: {msg}")


def _get(d: Mapping[str, Any], key: str, where: str, types: type | tuple[type, ...], optional: bool = False) -> Any:
    if key not in d or d[key] is None:
        if optional:
            return None
        raise _err(where, f"missing required field {key!r}; rebuild the bundle with `seqdeploy pipeline` "
                          f"or write_bundle_manifest(run_dir)")
    v = d[key]
    if types is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _err(where, f"{key} = {v!r} (expected {_tname(types)})")
    if not isinstance(v, types):
        raise _err(where, f"{key} = {v!r} (expected {_tname(types)})")
    return v


def _tname(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


def parse_preprocessing(d: Mapping[str, Any] | None, where: str = "preprocessing") -> Preprocessing:
    """Validate a preprocessing record (docs/CONTRACTS.md) into its kind (:mod:`seqdeploy.preprocess`).

    >>> parse_preprocessing({"kind": "window", "window": 3, "mean": 1.0, "std": 2.0})
    Window(window=3, mean=1.0, std=2.0)
    """
    return from_record(d, f"manifest.json: {where}")


def _parse_tensor(d: Any, where: str) -> TensorInfo:
    if not isinstance(d, Mapping):
        raise _err(where, f"{d!r} (expected an object with name, dtype, shape)")
    name = _get(d, "name", where, str)
    dtype = _get(d, "dtype", where, str)
    shape = _get(d, "shape", where, (list, tuple))
    for s in shape:
        if not (s is None or isinstance(s, str) or (isinstance(s, int) and not isinstance(s, bool) and s >= 0)):
            raise _err(where, f"shape {shape!r} has {s!r} (expected ints, axis names or null)")
    return TensorInfo(name, dtype, tuple(shape))


def check_relative_path(rel: Any, where: str = "file") -> str:
    """Refuse paths that could leave the bundle directory (absolute, ``..``, drive letters).

    >>> check_relative_path("model.onnx")
    'model.onnx'
    """
    if not isinstance(rel, str) or not rel.strip():
        raise _err(where, f"{rel!r} (expected a file name relative to the bundle directory)")
    posix, win = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or win.is_absolute() or win.drive or rel.startswith(("/", "\\")):
        raise _err(where, f"{rel!r} is an absolute path (expected a file name inside the bundle directory); "
                          f"a manifest must only name files next to it")
    if ".." in posix.parts or ".." in win.parts:
        raise _err(where, f"{rel!r} points outside the bundle directory ('..'); "
                          f"a manifest must only name files next to it")
    return rel


def resolve_inside(bundle_dir: Path, rel: str, where: str) -> Path:
    check_relative_path(rel, where)
    root = bundle_dir.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise _err(where, f"{rel!r} resolves to {target}, outside the bundle directory {root} (symlink?); "
                          f"copy the file into the bundle instead")
    return target


def _file_fields(d: Mapping[str, Any], where: str) -> tuple[str, str, int, tuple[str, ...]]:
    """An ONNX file entry's ``file`` (inside the bundle), ``sha256``, ``size`` and ``contrib_ops``."""
    file = check_relative_path(_get(d, "file", where, str), where)
    sha = _get(d, "sha256", where, str)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise _err(where, f"sha256 = {sha!r} (expected 64 lowercase hex digits)")
    contrib = d.get("contrib_ops") or ()
    if not isinstance(contrib, (list, tuple)) or not all(isinstance(c, str) for c in contrib):
        raise _err(where, f"contrib_ops = {contrib!r} (expected a list of op names)")
    return file, sha, _get(d, "size", where, int), tuple(contrib)


def _parse_artifact(d: Any, where: str) -> Artifact:
    if not isinstance(d, Mapping):
        raise _err(where, f"{d!r} (expected an object)")
    file, sha, size, contrib = _file_fields(d, where)
    return Artifact(file=file, sha256=sha, size=size, precision=_get(d, "precision", where, str),
                    recipe=_get(d, "recipe", where, str, optional=True),
                    opset=_get(d, "opset", where, int, optional=True), contrib_ops=contrib,
                    min_onnxruntime=_get(d, "min_onnxruntime", where, str, optional=True) or ORT_FLOOR,
                    portable=_parse_portable(d.get("portable"), f"{where}.portable"))


def _parse_portable(d: Any, where: str) -> PortableGraph | None:
    if d is None:
        return None
    if not isinstance(d, Mapping):
        raise _err(where, f"{d!r} (expected an object)")
    file, sha, size, contrib = _file_fields(d, where)
    ins = tuple(_parse_tensor(t, f"{where}.inputs[{i}]") for i, t in enumerate(_get(d, "inputs", where, list)))
    outs = tuple(_parse_tensor(t, f"{where}.outputs[{i}]") for i, t in enumerate(_get(d, "outputs", where, list)))
    if not ins or not outs:
        raise _err(where, "inputs and outputs must not be empty")
    return PortableGraph(file, sha, size, ins, outs, contrib,
                         _get(d, "min_onnxruntime", where, str, optional=True) or ORT_FLOOR)


def manifest_from_dict(d: Any) -> Manifest:
    """Validate a decoded ``manifest.json`` (no file checks; see :func:`load_manifest`).

    Refuses a newer ``schema_version`` than this seqdeploy supports.
    """
    if not isinstance(d, Mapping):
        raise BundleError(f"manifest.json: top level is {type(d).__name__} (expected a JSON object)")
    version = d.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _err("schema_version", f"{version!r} (expected an integer >= 1); the file is not a seqdeploy manifest "
                                     f"or is damaged: rebuild it with write_bundle_manifest(run_dir)")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"manifest.json has schema_version {version}, but this seqdeploy {__version__} supports "
            f"schema_version {SCHEMA_VERSION} at most; upgrade seqdeploy (pip install -U seqdeploy) to load this bundle")
    task = _get(d, "task", "task", str)
    if task not in TASKS:
        raise _err("task", f"{task!r} (expected one of {', '.join(TASKS)})")
    labels = d.get("labels")
    if labels is not None:
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, (str, int)) for x in labels):
            raise _err("labels", f"{labels!r} (expected a list of class names or null)")
        labels = tuple(str(x) for x in labels)
        if task == "binary" and len(labels) != 2:
            raise _err("labels", f"{len(labels)} labels for a binary task (expected 2)")
    inputs = d.get("inputs")
    outputs = d.get("outputs")
    if not isinstance(inputs, list) or not inputs:
        raise _err("inputs", f"{inputs!r} (expected a non-empty list)")
    if not isinstance(outputs, list) or not outputs:
        raise _err("outputs", f"{outputs!r} (expected a non-empty list)")
    arts = d.get("artifacts")
    if not isinstance(arts, list) or not arts:
        raise _err("artifacts", f"{arts!r} (expected a non-empty list of ONNX files)")
    artifacts = tuple(_parse_artifact(a, f"artifacts[{i}]") for i, a in enumerate(arts))
    files_raw = d.get("files") or []
    if not isinstance(files_raw, list):
        raise _err("files", f"{files_raw!r} (expected a list)")
    files = []
    for i, f in enumerate(files_raw):
        where = f"files[{i}]"
        if not isinstance(f, Mapping):
            raise _err(where, f"{f!r} (expected an object)")
        files.append(BundleFile(check_relative_path(_get(f, "file", where, str), where), _get(f, "sha256", where, str),
                                _get(f, "size", where, int), str(f.get("role", "data"))))
    deploy = _get(d, "deployment_artifact", "deployment_artifact", str)
    if deploy not in {a.file for a in artifacts}:
        raise _err("deployment_artifact", f"{deploy!r} is not one of the artifacts "
                                          f"({', '.join(a.file for a in artifacts)})")
    ver = d.get("verification")
    verification = None
    if ver is not None:
        if not isinstance(ver, Mapping):
            raise _err("verification", f"{ver!r} (expected an object or null)")
        verification = Verification(bool(ver.get("passed")), opt_float(ver.get("max_abs_error")),
                                    opt_float(ver.get("label_agreement")))
    contrib = d.get("contrib_ops") or ()
    if not isinstance(contrib, (list, tuple)) or not all(isinstance(c, str) for c in contrib):
        raise _err("contrib_ops", f"{contrib!r} (expected a list of op names)")
    return Manifest(
        schema_version=version, name=str(d.get("name", "")), task=task, labels=labels,
        target_name=d.get("target_name") if isinstance(d.get("target_name"), str) else None,
        inputs=tuple(_parse_tensor(t, f"inputs[{i}]") for i, t in enumerate(inputs)),
        outputs=tuple(_parse_tensor(t, f"outputs[{i}]") for i, t in enumerate(outputs)),
        preprocessing=parse_preprocessing(d.get("preprocessing")),
        artifacts=artifacts, deployment_artifact=deploy,
        min_onnxruntime=str(d.get("min_onnxruntime") or ORT_FLOOR), contrib_ops=tuple(contrib),
        verification=verification, files=tuple(files), producer=str(d.get("producer", "")),
        runtime_settings=_parse_runtime_settings(d.get("runtime_settings")),
        custom_op_libraries=_parse_names(d, "custom_op_libraries", packages_for(contrib)),
        bindings=_parse_bindings(d.get("bindings"), tuple(contrib)),
    )


def _parse_names(d: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise _err(key, f"{v!r} (expected a list of package names)")
    return tuple(v)


def _parse_bindings(v: Any, contrib: tuple[str, ...]) -> tuple[BindingSupport, ...]:
    if v is None:  # written before bindings were recorded: derived from the ops
        return binding_support(contrib)
    if not isinstance(v, (list, tuple)):
        raise _err("bindings", f"{v!r} (expected a list of {{binding, runs, note}} objects)")
    out = []
    for i, b in enumerate(v):
        where = f"bindings[{i}]"
        if not isinstance(b, Mapping):
            raise _err(where, f"{b!r} (expected an object with binding, runs, note)")
        out.append(BindingSupport(_get(b, "binding", where, str), _get(b, "runs", where, bool),
                                  str(b.get("note", ""))))
    return tuple(out)


def _parse_runtime_settings(d: Any) -> RuntimeSettings | None:
    if d is None:
        return None
    where = "runtime_settings"
    if not isinstance(d, Mapping):
        raise _err(where, f"{d!r} (expected an object or null)")
    pairs = d.get("threads")
    ok = isinstance(pairs, (list, tuple)) and pairs and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                              for v in p) for p in pairs)
    if not ok:
        raise _err(where, f"threads = {pairs!r} (expected a non-empty list of [batch size, threads] pairs >= 1)")
    sessions = []
    for i, item in enumerate(d.get("sessions") or ()):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], int)):
            raise _err(where, f"sessions[{i}] = {item!r} (expected [batch size, settings object])")
        try:
            sessions.append((int(item[0]), SessionSettings.from_record(item[1], f"sessions[{i}]")))
        except InputValidationError as exc:
            raise _err(where, str(exc)) from None

    def numbers(key: str) -> tuple[tuple[int, float], ...]:
        return tuple((int(b), float(v)) for b, v in d.get(key) or () if isinstance(v, (int, float)))

    return RuntimeSettings(tuple(sorted((int(b), int(t)) for b, t in pairs)), numbers("p50_us"),
                           str(d.get("source", BENCH_FILE)), tuple(sorted(sessions, key=lambda x: x[0])),
                           numbers("plain_best_p50_us"))


def opt_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _manifest_path(bundle: str | os.PathLike) -> Path:
    p = Path(bundle)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        if p.name == MANIFEST_NAME and p.parent.is_dir():
            raise BundleError(f"{p.parent} has no {MANIFEST_NAME} (expected a bundle directory); "
                              f"create it with `seqdeploy pipeline` or write_bundle_manifest('{p.parent}')")
        raise InputFileNotFound(f"bundle {bundle} does not exist (expected a run directory with {MANIFEST_NAME})")
    return p


def load_manifest(bundle_dir: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read and validate a bundle's manifest; check each file's size and sha256.

    Raises :class:`BundleError` for an invalid or newer manifest, or a path
    leaving the bundle, and :class:`IntegrityError` naming the file whose
    content does not match. No onnxruntime session is created here.

    >>> m = load_manifest("runs/breast_cancer_mlp")  # doctest: +SKIP
    >>> m.deployment.precision                       # doctest: +SKIP
    'float32'
    """
    path = _manifest_path(bundle_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); rebuild it with write_bundle_manifest(run_dir)") from None
    manifest = manifest_from_dict(data)
    root = path.parent
    for a in manifest.artifacts:
        target = resolve_inside(root, a.file, f"artifact {a.file}")
        if check_files:
            check_file(target, a.sha256, a.size)
        if a.portable is not None:
            target = resolve_inside(root, a.portable.file, f"artifact {a.portable.file}")
            if check_files:
                check_file(target, a.portable.sha256, a.portable.size)
    for f in manifest.files:
        target = resolve_inside(root, f.file, f"file {f.file}")
        if check_files:
            check_file(target, f.sha256, f.size)
    return manifest


def check_file(path: Path, sha256: str, size: int | None = None) -> None:
    """Raise :class:`IntegrityError` naming ``path`` unless it exists with this size and sha256."""
    if not path.is_file():
        raise IntegrityError(f"{path} is listed in the manifest but missing; copy the whole bundle directory "
                             f"or rebuild it")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(f"{path} has {actual_size} bytes but the manifest expects {size} "
                             f"(truncated or replaced?); copy the bundle again or rebuild it")
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(f"{path} has sha256 {actual[:16]}... but the manifest expects {sha256[:16]}... "
                             f"(the file was modified); copy the bundle again or rebuild it")


def bundle_path(bundle_dir: str | os.PathLike, rel: str) -> Path:
    """Absolute path of a bundle file named in the manifest (checked to stay inside the bundle)."""
    p = Path(bundle_dir)
    root = p.parent if p.is_file() else p
    return resolve_inside(root, rel, f"file {rel}")


def version_tuple(v: str) -> tuple[int, ...]:
    """``"1.32.0rc1"`` -> ``(1, 32, 0)``: release numbers compared as tuples (one definition, used everywhere).

    >>> version_tuple("1.17.3") < version_tuple("1.32")
    True
    """
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])

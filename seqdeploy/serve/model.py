"""One served bundle: its signature on the Open Inference Protocol, request checks, batched runs.

Nothing here imports kserve, so the checks and the batched runs are usable (and
tested) without a server. What the v2 protocol serves is the bundle's portable
graph (raw inputs -> preprocessing -> model -> labels/values) when the manifest
has one, else the deployment artifact (model-ready inputs); the v1
``:predict`` route takes raw rows (``instances``) and answers what
:meth:`seqdeploy.runtime.predictor.Predictor.predict` answers.

Every file is read once and its sha256 checked against the manifest before a
session exists (a tampered bundle is refused with :class:`IntegrityError`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqdeploy.errors import InputValidationError, IntegrityError, RequestTooLarge

__all__ = ["TensorSpec", "ServedModel", "V2_DATATYPES"]

# Open Inference Protocol datatypes <-> numpy (strings are BYTES, as in Triton's TYPE_STRING).
V2_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "object": "BYTES",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the protocol states it: ``shape`` has -1 for variable axes."""

    name: str
    datatype: str  # v2 datatype, e.g. "FP32", "BYTES"
    dtype: str  # numpy dtype name ("object" for strings)
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _specs(nodes: Sequence[Any]) -> tuple[TensorSpec, ...]:
    from seqdeploy.runtime.session import ORT_TYPES

    out = []
    for n in nodes:
        if n.type not in ORT_TYPES:
            raise InputValidationError(f"tensor {n.name!r} has type {n.type}, which the server cannot carry "
                                       f"(expected one of {sorted(ORT_TYPES)})")
        dtype = np.dtype(ORT_TYPES[n.type]).name
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (n.shape or []))
        out.append(TensorSpec(n.name, V2_DATATYPES[dtype], dtype, shape))
    return tuple(out)


class ServedModel:
    """A bundle loaded for serving: a session for the v2 graph and a Predictor for raw v1 rows.

    >>> m = ServedModel.load("runs/breast_cancer_mlp")   # doctest: +SKIP
    >>> [t.as_dict() for t in m.inputs]                   # doctest: +SKIP
    [{'name': 'features', 'datatype': 'FP32', 'shape': [-1, 30]}]
    """

    def __init__(self, name: str, bundle: Path, graph_file: str, portable: bool, session: Any, predictor: Any):
        self.name = name
        self.bundle = bundle
        self.graph_file = graph_file
        self.portable = portable
        self.session = session
        self.predictor = predictor
        self.manifest = predictor.manifest
        self.inputs = _specs(session.get_inputs())
        self.outputs = _specs(session.get_outputs())
        self._input_by_name = {t.name: t for t in self.inputs}
        self._output_names = [t.name for t in self.outputs]

    @classmethod
    def load(cls, bundle: str | os.PathLike, name: str | None = None, threads: int | None = None) -> "ServedModel":
        """Check the bundle (manifest, every sha256) and create its sessions."""
        from seqdeploy.atomic import sha256_bytes
        from seqdeploy.runtime.manifest import bundle_path
        from seqdeploy.runtime.predictor import Predictor
        from seqdeploy.runtime.extensions import libraries_for
        from seqdeploy.runtime.session import make_session

        bundle = Path(bundle)
        predictor = Predictor.from_bundle(bundle, threads=threads)  # checks the manifest and every listed file
        manifest = predictor.manifest
        portable = getattr(manifest, "portable", None)
        art = portable if portable is not None else manifest.deployment
        path = bundle_path(bundle, art.file)
        data = path.read_bytes()
        if sha256_bytes(data) != art.sha256:
            raise IntegrityError(f"{path} has sha256 {sha256_bytes(data)[:16]}... but the manifest expects "
                                 f"{art.sha256[:16]}... (the file was modified); copy the bundle again or rebuild it")
        session = make_session(data, settings=predictor.info.settings,  # the bundle's chosen settings (+ threads)
                               custom_ops_libraries=libraries_for(art.contrib_ops, art.file))  # e.g. string ops
        return cls(name or manifest.name, bundle, art.file, portable is not None, session, predictor)

    # ------------------------------------------------------------------ metadata

    def metadata(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": self.name, "graph": self.graph_file, "portable": self.portable, "task": m.task,
                "labels": list(m.labels) if m.labels else None,
                "inputs": [t.as_dict() for t in self.inputs], "outputs": [t.as_dict() for t in self.outputs]}

    # ------------------------------------------------------------------ v2 (tensors)

    def check_v2(self, tensors: Sequence[tuple[str, str, Any]], max_rows: int) -> tuple[dict[str, np.ndarray], int]:
        """``[(name, datatype, array)]`` -> model feeds and the row count, or an error naming what is wrong."""
        got = [t[0] for t in tensors]
        expected = [t.name for t in self.inputs]
        dup = sorted({n for n in got if got.count(n) > 1})
        unknown = [n for n in got if n not in self._input_by_name]
        missing = [n for n in expected if n not in got]
        if dup or unknown or missing:
            raise InputValidationError(
                f"request inputs {got} do not match the model's {expected} (unknown {unknown}, missing {missing}"
                f"{', duplicated ' + str(dup) if dup else ''}); send exactly these inputs (GET /v2/models/"
                f"{self.name} lists them)")
        feeds: dict[str, np.ndarray] = {}
        rows = None
        for name, datatype, arr in tensors:
            spec = self._input_by_name[name]
            if datatype != spec.datatype:
                raise InputValidationError(f"input {name!r} has datatype {datatype} (expected {spec.datatype}); "
                                           f"send it as {spec.datatype}")
            arr = np.asarray(arr)
            if arr.ndim != len(spec.shape) or any(w > 0 and g != w for g, w in zip(arr.shape, spec.shape)):
                raise InputValidationError(f"input {name!r} has shape {list(arr.shape)} (expected {list(spec.shape)}, "
                                           f"-1 = any size)")
            n = int(arr.shape[0]) if arr.ndim else 1
            if n == 0 or arr.size == 0:
                raise InputValidationError(f"input {name!r} has shape {list(arr.shape)}: no data (expected at least "
                                           f"one row)")
            if rows is not None and n != rows:
                raise InputValidationError(f"input {name!r} has {n} rows but the other inputs have {rows}")
            rows = n
            if spec.dtype == "object":
                arr = _strings(arr, name)
            else:
                arr = arr.astype(spec.dtype, copy=False)
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    bad = int(np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0])
                    raise InputValidationError(f"input {name!r} row {bad} contains a non-finite value (expected "
                                               f"finite numbers); impute or drop rows with missing values")
            feeds[name] = arr
        assert rows is not None
        if rows > max_rows:
            raise RequestTooLarge(f"request has {rows} rows (the server takes at most {max_rows} per request); "
                                  f"split it into smaller requests")
        return feeds, rows

    def run_v2(self, payloads: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One onnxruntime call for a batch of checked feeds; one output dict per request."""
        from seqdeploy.serve.batching import concat_feeds, split_outputs

        feeds, sizes = concat_feeds(payloads)
        outs = self.session.run(self._output_names, feeds)
        return split_outputs(dict(zip(self._output_names, outs)), sizes)

    def requested_outputs(self, names: Sequence[str] | None) -> list[str]:
        if not names:
            return list(self._output_names)
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise InputValidationError(f"requested output(s) {unknown} are not outputs of {self.name!r} "
                                       f"(expected some of {self._output_names})")
        return list(names)

    # ------------------------------------------------------------------ v1 (raw rows)

    def check_instances(self, instances: Any, max_rows: int) -> tuple[Any, int]:
        """v1 ``instances`` (raw rows) -> the canonical raw array of the bundle's preprocessing, and its row count.

        The preprocessing kind's own ``coerce`` decides what a raw row may be (numbers, objects keyed by
        feature name, strings for text), so v1 accepts exactly what :class:`Predictor` accepts.
        """
        from seqdeploy.runtime.manifest import NoPreprocessing

        if not isinstance(instances, list) or not instances:
            got = "an empty list" if isinstance(instances, list) else type(instances).__name__
            raise InputValidationError(f"'instances' is {got} (expected a non-empty list of raw rows)")
        n = len(instances)
        if n > max_rows:
            raise RequestTooLarge(f"request has {n} instances (the server takes at most {max_rows} per request); "
                                  f"split it into smaller requests")
        pre = self.manifest.preprocessing
        if not isinstance(pre, NoPreprocessing):
            return pre.coerce(instances), n
        if len(self.manifest.inputs) != 1:
            raise InputValidationError(f"{self.name!r} has inputs {[t.name for t in self.manifest.inputs]}; raw v1 "
                                       f"instances cannot name them: use the v2 infer route with one tensor per input")
        t = self.manifest.inputs[0]
        return pre.coerce(instances, dtype=t.dtype, shape=t.shape[1:], name=t.name), n

    def run_v1(self, payloads: list[Any]) -> list[np.ndarray]:
        """Predictor.predict on the raw rows of a batch of requests; one result array per request."""
        sizes = [len(p) for p in payloads]
        if len(payloads) == 1:
            return [self.predictor.predict(payloads[0])]
        pred = self.predictor.predict(np.concatenate(payloads, axis=0))
        return np.split(pred, np.cumsum(sizes)[:-1], axis=0)


def _strings(arr: np.ndarray, name: str) -> np.ndarray:
    """BYTES tensors arrive as bytes objects; onnxruntime's string tensors take str."""
    flat = arr.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat):
        if isinstance(v, (bytes, bytearray)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                raise InputValidationError(f"input {name!r} element {i} is not UTF-8 text") from None
        elif not isinstance(v, str):
            raise InputValidationError(f"input {name!r} element {i} is {type(v).__name__} (expected a string)")
        out[i] = v
    return out.reshape(arr.shape)

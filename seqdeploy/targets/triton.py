"""Triton Inference Server model repository: ``REPO/<name>/config.pbtxt`` + ``REPO/<name>/<version>/model.onnx``.

The model file is the bundle's portable graph (raw inputs -> preprocessing ->
model -> probabilities/class_id/label or prediction) when the manifest has one,
else the deployment artifact (model-ready inputs). Its bytes are checked against
the manifest's sha256 before they are copied.

``config.pbtxt`` follows Triton's model configuration for the ``onnxruntime``
backend:

* ``max_batch_size > 0`` when every input and output has a variable first
  (batch) axis; then ``dims`` leave that axis out, and a tensor whose only axis is
  the batch (``label``, ``class_id``, ``prediction``, the ``text`` input) is
  declared ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }`` (Triton needs
  non-empty dims). Otherwise ``max_batch_size: 0`` and ``dims`` are the full shape.
* ONNX string tensors are ``TYPE_STRING``; variable axes other than the batch are -1.
* ``dynamic_batching`` with a short queue delay, ``instance_group`` on CPU.
* when the bundle records measured session settings (``manifest.runtime_settings``, from
  :func:`seqdeploy.bench.tune.tune_bundle`), the backend's ``intra_op_thread_count`` is the thread count
  measured fastest at the batch size Triton forms (``max_batch_size``, else 1), with one inter-op thread.

Nothing here needs Triton or tritonclient; the tests parse the file with
tritonclient's ``model_config_pb2`` and compare it with the ONNX graph.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from seqdeploy.errors import BundleError, IntegrityError, UsageError
from seqdeploy.targets import register

__all__ = ["TritonTensor", "TritonExport", "write_triton_repository", "config_pbtxt", "describe", "TRITON_TYPES"]

TRITON_TYPES = {
    "tensor(float)": "TYPE_FP32", "tensor(double)": "TYPE_FP64", "tensor(float16)": "TYPE_FP16",
    "tensor(bfloat16)": "TYPE_BF16", "tensor(bool)": "TYPE_BOOL",
    "tensor(int8)": "TYPE_INT8", "tensor(int16)": "TYPE_INT16", "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64", "tensor(uint8)": "TYPE_UINT8", "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32", "tensor(uint64)": "TYPE_UINT64", "tensor(string)": "TYPE_STRING",
}
#: the model file in a version directory (the onnxruntime backend's default_model_filename)
MODEL_FILE = "model.onnx"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TritonTensor:
    """One input/output as written to config.pbtxt (``reshape`` None = no reshape)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None


@dataclass(frozen=True)
class TritonExport:
    """What :func:`write_triton_repository` wrote."""

    repository: Path
    model_name: str
    version: int
    config_path: Path
    model_path: Path
    source: str  # the bundle file copied
    portable: bool
    sha256: str
    max_batch_size: int
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]


def _tensors(nodes: Sequence[Any], batched: bool) -> tuple[TritonTensor, ...]:
    out = []
    for n in nodes:
        dtype = TRITON_TYPES.get(n.type)
        if dtype is None:
            raise BundleError(f"tensor {n.name!r} has type {n.type}, which Triton's onnxruntime backend does not "
                              f"carry (expected one of {sorted(TRITON_TYPES)})")
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in (n.shape or [])]
        if batched:
            shape = shape[1:]
            if not shape:  # only the batch axis: Triton wants non-empty dims
                out.append(TritonTensor(n.name, dtype, (1,), ()))
                continue
        out.append(TritonTensor(n.name, dtype, tuple(shape), None))
    return tuple(out)


def _is_batched(nodes: Sequence[Any]) -> bool:
    return all(n.shape and not (isinstance(n.shape[0], int) and n.shape[0] > 0) for n in nodes)


def config_pbtxt(name: str, inputs: Sequence[TritonTensor], outputs: Sequence[TritonTensor], max_batch_size: int,
                 max_queue_delay_us: int = 1000, instances: int = 1, model_file: str = MODEL_FILE,
                 threads: int | None = None) -> str:
    """The text-format ``ModelConfig`` for the onnxruntime backend (``threads``: the backend's intra-op thread
    count per instance, with one inter-op thread; None leaves the backend's default)."""

    def dims(d: Sequence[int]) -> str:
        return f"[ {', '.join(map(str, d))} ]" if d else "[ ]"

    def block(t: TritonTensor) -> str:
        lines = [f'    name: "{t.name}"', f"    data_type: {t.data_type}", f"    dims: {dims(t.dims)}"]
        if t.reshape is not None:
            lines.append(f"    reshape: {{ shape: {dims(t.reshape)} }}")
        return "  {\n" + "\n".join(lines) + "\n  }"

    parts = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}",
             f'default_model_filename: "{model_file}"',
             "input [\n" + ",\n".join(block(t) for t in inputs) + "\n]",
             "output [\n" + ",\n".join(block(t) for t in outputs) + "\n]"]
    if max_batch_size > 0:
        parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}")
    parts.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]")
    if threads is not None:
        for key, value in (("intra_op_thread_count", threads), ("inter_op_thread_count", 1)):
            parts.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    return "\n".join(parts) + "\n"


def describe(result: TritonExport) -> list[str]:
    """What the command line prints for a written repository: the two files, then every tensor."""
    kind = "portable graph (raw inputs)" if result.portable else "model-ready graph"
    lines = [f"Triton model {result.model_name}: {result.config_path} + {result.model_path} ({result.source}, {kind}; "
             f"backend onnxruntime, max_batch_size {result.max_batch_size})"]
    for role, tensors in (("input", result.inputs), ("output", result.outputs)):
        for t in tensors:
            reshape = f" reshape {list(t.reshape)}" if t.reshape is not None else ""
            lines.append(f"  {role} {t.name}: {t.data_type} dims {list(t.dims)}{reshape}")
    return lines


@register("triton", "Triton Inference Server model repository (config.pbtxt + <version>/model.onnx, onnxruntime backend)",
          option_help="Write the bundle as a Triton model repository into this directory (exports ONNX first only if "
                      "the run has no manifest yet).", describe=describe)
def write_triton_repository(bundle: str | os.PathLike, repository: str | os.PathLike, *, model_name: str | None = None,
                            version: int = 1, max_batch_size: int = 64, max_queue_delay_us: int = 1000,
                            instances: int = 1) -> TritonExport:
    """Write ``bundle`` as one model of a Triton repository (other models and versions there are left alone).

    >>> write_triton_repository("runs/breast_cancer_mlp", "model_repository").config_path  # doctest: +SKIP
    PosixPath('model_repository/breast_cancer_mlp/config.pbtxt')
    """
    from seqdeploy.atomic import atomic_write_bytes, atomic_write_text, sha256_bytes
    from seqdeploy.runtime.manifest import bundle_path, load_manifest
    from seqdeploy.runtime.predictor import make_session

    for what, v, lo in (("version", version, 1), ("max_batch_size", max_batch_size, 1),
                        ("max_queue_delay_us", max_queue_delay_us, 0), ("instances", instances, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise UsageError(f"{what} = {v!r} (expected an integer >= {lo})")
    manifest = load_manifest(bundle)  # checks every listed file's sha256
    portable = getattr(manifest, "portable", None)
    art = portable if portable is not None else manifest.deployment
    src = bundle_path(bundle, art.file)
    data = src.read_bytes()
    if sha256_bytes(data) != art.sha256:
        raise IntegrityError(f"{src} changed after the manifest check (sha256 differs); copy the bundle again")
    name = model_name or manifest.name
    if not _NAME_RE.match(name):
        raise UsageError(f"model name {name!r} is not a usable Triton model directory name (expected letters, "
                         f"digits, '_', '.', '-')")
    session = make_session(data)  # the graph must load; its signature is what Triton will see
    ins, outs = session.get_inputs(), session.get_outputs()
    batched = _is_batched(ins) and _is_batched(outs)
    inputs, outputs = _tensors(ins, batched), _tensors(outs, batched)
    mbs = max_batch_size if batched else 0
    # the thread count the bundle measured fastest (seqdeploy.bench.tune) for the batches Triton will form
    rs = manifest.runtime_settings
    threads = rs.for_batch(mbs or 1).threads if rs is not None else None

    repo = Path(repository)
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"{repo} exists and is not a directory (expected a Triton model repository directory)")
    model_dir = repo / name
    model_path = model_dir / str(version) / MODEL_FILE
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model_path, data)
    config_path = atomic_write_text(model_dir / "config.pbtxt",
                                    config_pbtxt(name, inputs, outputs, mbs, max_queue_delay_us, instances,
                                                 threads=threads))
    return TritonExport(repo, name, version, Path(config_path), model_path, art.file, portable is not None,
                        art.sha256, mbs, inputs, outputs)

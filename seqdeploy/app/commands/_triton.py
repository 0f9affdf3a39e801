"""`seqdeploy export RUN --triton REPO_DIR`: render the Triton repository writer's result (used by commands/export.py)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from seqdeploy.app.cli import console, emit_json


def write_and_render(bundle: Path, repository: Path, as_json: bool) -> None:
    from seqdeploy.targets import get_target

    result = get_target("triton").write(bundle, repository)
    if as_json:
        emit_json(result)
        return
    kind = "portable graph (raw inputs)" if result.portable else "model-ready graph"
    console.print(f"Triton model {escape(result.model_name)}: {escape(str(result.config_path))} + "
                  f"{escape(str(result.model_path))} ({escape(result.source)}, {kind}; backend onnxruntime, "
                  f"max_batch_size {result.max_batch_size})", soft_wrap=True)
    for role, tensors in (("input", result.inputs), ("output", result.outputs)):
        for t in tensors:
            reshape = f" reshape {list(t.reshape)}" if t.reshape is not None else ""
            console.print(f"  {role} {escape(t.name)}: {t.data_type} dims {list(t.dims)}{reshape}", soft_wrap=True)

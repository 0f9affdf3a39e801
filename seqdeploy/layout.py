"""The run directory: the name of every file the stages write there, and the readers of each stage's record.

One home for the layout, so a stage never spells another stage's file name and a reader of a record
never reaches into the stage that wrote it. Names by stage:

| stage | files |
|---|---|
| train | ``model.keras``, ``train.json`` (task, labels, preprocessing, data fingerprint) |
| export | ``model.onnx``, ``export.json`` |
| verify | ``verify.json``, ``golden.npz`` / ``golden.json`` / ``golden_portable.json`` |
| quantize | ``model.<recipe>.onnx`` (naming rule in :mod:`seqdeploy.precision`), ``quantize.json`` |
| tune | ``tune.json`` |
| bench | ``bench.json``, ``bench.md``, ``bench.png`` |
| bundle | ``manifest.json`` (derived from the others), ``report.md``, ``pipeline.json`` |

Importing this module needs only the standard library, so the runtime can name the manifest through it.

    >>> MODEL_ONNX, MANIFEST_FILE
    ('model.onnx', 'manifest.json')
    >>> read_quantize_record("runs/digits_mlp").chosen     # doctest: +SKIP
    'model.int8-static.onnx'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from seqdeploy.errors import BundleError, InputFileNotFound, QuantizeError

if TYPE_CHECKING:  # pragma: no cover
    from seqdeploy.runtime.session import SessionSettings

# --- file names ------------------------------------------------------------------------------------

MODEL_KERAS = "model.keras"
#: the float32 export; every other precision is ``model.<name>.onnx`` (seqdeploy.precision.artifact_name)
MODEL_ONNX = "model.onnx"
TRAIN_FILE = "train.json"
EXPORT_FILE = "export.json"
VERIFY_FILE = "verify.json"
GOLDEN_NPZ = "golden.npz"
GOLDEN_JSON = "golden.json"
GOLDEN_PORTABLE = "golden_portable.json"
QUANTIZE_FILE = "quantize.json"
TUNE_FILE = "tune.json"
BENCH_FILE = "bench.json"
BENCH_MD = "bench.md"
BENCH_PNG = "bench.png"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.md"
PIPELINE_FILE = "pipeline.json"

#: the golden files verify writes, with their role in the manifest's file list
GOLDEN_FILES: tuple[tuple[str, str], ...] = ((GOLDEN_NPZ, "golden"), (GOLDEN_JSON, "golden-json"),
                                            (GOLDEN_PORTABLE, "golden-portable"))
#: the version of tune.json's layout that :func:`read_tune_choices` reads
TUNE_SCHEMA = 1


def export_record_for(onnx_path: str | os.PathLike) -> Path:
    """The export record beside an ONNX file: ``export.json`` for ``model.onnx``, ``NAME.export.json`` otherwise.

    >>> export_record_for("runs/x/model.onnx").name, export_record_for("out/other.onnx").name
    ('export.json', 'other.export.json')
    """
    p = Path(onnx_path)
    return p.with_name(EXPORT_FILE if p.name == MODEL_ONNX else f"{p.stem}.{EXPORT_FILE}")


# --- readers ---------------------------------------------------------------------------------------


def read_json_record(path: str | os.PathLike, what: str) -> Any:
    """A stage's JSON record; ``what`` says which stage writes it (for the messages)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileNotFound(f"{path} does not exist ({what}); run the stage that writes it first") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); rerun the stage that writes it") from None


def read_train_record(run_dir: str | os.PathLike) -> Mapping[str, Any]:
    """``train.json`` of ``run_dir``: task, labels, target name, preprocessing, spec and data fingerprint."""
    path = Path(run_dir) / TRAIN_FILE
    record = read_json_record(path, "written by `seqdeploy train`")
    if not isinstance(record, Mapping):
        raise BundleError(f"{path}: expected a JSON object")
    return record


def read_verify_record(run_dir: str | os.PathLike) -> Mapping[str, Any] | None:
    """``verify.json`` of ``run_dir`` (None when verify has not run)."""
    path = Path(run_dir) / VERIFY_FILE
    if not path.exists():
        return None
    record = read_json_record(path, "written by `seqdeploy verify`")
    return record if isinstance(record, Mapping) else None


@dataclass(frozen=True)
class QuantizeRecord:
    """What ``quantize.json`` says about the files in the run directory."""

    chosen: str | None  # file name (relative to the run directory) of the chosen artifact, or None
    chosen_recipe: str | None
    kept: tuple[tuple[str, str | None], ...]  # (file name, recipe) of every candidate whose file exists
    summary: str | None
    named_chosen: str | None = None  # the record's ``chosen`` entry as written (a file name), checked or not


def read_quantize_record(run_dir: str | os.PathLike) -> QuantizeRecord | None:
    """The quantize record of ``run_dir`` (None without a quantize.json).

    ``chosen`` is checked against the files present; records that name the chosen candidate by
    recipe instead of file name resolve by the artifact naming rule.
    """
    from seqdeploy.precision import artifact_name

    root = Path(run_dir)
    path = root / QUANTIZE_FILE
    if not path.is_file():
        return None
    try:
        q = json.loads(path.read_text())
        kept: dict[str, str | None] = {}
        for c in q.get("candidates") or []:
            rel = c.get("path")
            if rel and (root / rel).is_file():  # candidates not kept have path null
                rel = Path(rel).name if Path(rel).is_absolute() else str(rel)
                recipe = c.get("recipe")
                kept.setdefault(rel, recipe if isinstance(recipe, str) else None)
        chosen = None
        recipe = q.get("chosen_recipe")
        picks = [q.get("chosen_path"), q.get("chosen")]
        if q.get("chosen"):
            picks += [artifact_name(str(q["chosen"])), artifact_name(str(recipe)) if recipe else None]
        for pick in picks:
            if pick and (root / str(pick)).is_file():
                chosen = Path(str(pick)).name
                kept.setdefault(chosen, recipe)
                break
        named = q.get("chosen")
        named = (Path(named).name if Path(named).is_absolute() else str(named)) if named else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QuantizeError(f"{path}: unreadable ({type(exc).__name__}: {exc}); expected "
                            '{"chosen": name|null, "candidates": [{"recipe", "path", ...}]}; rerun `seqdeploy quantize`') from exc
    summary = q.get("reason") or q.get("summary")
    return QuantizeRecord(chosen, recipe if chosen else None, tuple(kept.items()), summary, named)


@dataclass(frozen=True)
class TuneChoice:
    """The session settings chosen for one batch size and why (one entry of ``tune.json``'s choices)."""

    batch: int
    settings: SessionSettings
    p50_us: float
    default_p50_us: float
    plain_best_p50_us: float
    plain_best_settings: SessionSettings
    reason: str

    @property
    def vs_default(self) -> float:
        return self.default_p50_us / self.p50_us

    @property
    def vs_plain_best(self) -> float:
        """Best plain p50 / chosen deployed p50 (>= 1: the deployed choice is not slower)."""
        return self.plain_best_p50_us / self.p50_us


def read_tune_choices(run_dir: str | os.PathLike, artifact: str) -> tuple[tuple[TuneChoice, ...], str] | None:
    """The recorded choices in ``tune.json`` for ``artifact`` while its sha256 still matches (else None),
    with the record's artifact sha256."""
    from seqdeploy.atomic import sha256_file
    from seqdeploy.runtime.session import SessionSettings

    run_dir = Path(run_dir)
    p = run_dir / TUNE_FILE
    if not p.is_file() or not (run_dir / artifact).is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("schema_version") != TUNE_SCHEMA or d.get("artifact") != artifact:
            return None
        if d.get("artifact_sha256") != sha256_file(run_dir / artifact):
            return None  # the artifact changed after it was tuned
        out = []
        for c in d["choices"]:
            out.append(TuneChoice(int(c["batch"]), SessionSettings.from_record(c["settings"]), float(c["p50_us"]),
                                  float(c["default_p50_us"]), float(c["plain_best_p50_us"]),
                                  SessionSettings.from_record(c["plain_best_settings"]), str(c.get("reason", ""))))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable or older record: no recommendation
    return (tuple(out), d["artifact_sha256"]) if out else None


__all__ = [
    "BENCH_FILE", "BENCH_MD", "BENCH_PNG", "EXPORT_FILE", "GOLDEN_FILES", "GOLDEN_JSON", "GOLDEN_NPZ",
    "GOLDEN_PORTABLE", "MANIFEST_FILE", "MODEL_KERAS", "MODEL_ONNX", "PIPELINE_FILE", "QUANTIZE_FILE",
    "QuantizeRecord", "REPORT_FILE", "TRAIN_FILE", "TUNE_FILE", "TUNE_SCHEMA", "TuneChoice", "VERIFY_FILE",
    "export_record_for", "read_json_record", "read_quantize_record", "read_train_record", "read_tune_choices",
    "read_verify_record",
]

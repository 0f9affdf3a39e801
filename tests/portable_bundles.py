"""Tiny trained bundles with a portable graph and their golden answers, for the Node and browser clients.

``golden_portable.json`` has the format ``seqdeploy verify`` writes:
``{"inputs": {name: {"dtype", "shape", "data"}}, "outputs": {name: {...}}}`` with
flat ``data`` lists and ``"str"`` for strings. Here the expected answers come
from :meth:`Predictor.answers` (the Python runtime), so a client that matches
them gives what Python gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = "golden_portable.json"

#: text edge cases every client must answer exactly as Python does (the long one is added per bundle)
EDGE_TEXTS = (
    "",
    "loved it 😀🎬👍 best film 🍿",
    "café naïve résumé: the acting was superb, très bien",
    "THIS WAS THE WORST MOVIE I HAVE EVER SEEN",
    "great!!!???... wow,,, ;;; -- not bad at all!!!",
)


def tensor(a: Any) -> dict[str, Any]:
    a = np.asarray(a)
    dtype = "str" if a.dtype.kind in "OUS" else str(a.dtype)
    data = [str(v) for v in a.reshape(-1)] if dtype == "str" else a.reshape(-1).tolist()
    return {"dtype": dtype, "shape": list(a.shape), "data": data}


def write_golden(bundle: Path, raw: Any) -> dict[str, Any]:
    """Write ``golden_portable.json``: ``raw`` rows and the Python runtime's answers for them."""
    from seqdeploy.runtime.predictor import Predictor

    p = Predictor.from_bundle(bundle)
    name = p.raw_input_names[0]
    arr = p.pre.coerce(raw)
    doc = {"inputs": {name: tensor(arr)}, "outputs": {k: tensor(v) for k, v in p.answers(arr).items()}}
    (bundle / GOLDEN).write_text(json.dumps(doc))
    return doc


def long_review(bundle: Path) -> str:
    """A review ten times as long as the model's sequence length (in words)."""
    seq = json.loads((bundle / "manifest.json").read_text())["preprocessing"]["sequence_length"]
    words = "the plot was slow but the acting was great and i loved the ending".split()
    return " ".join(words[i % len(words)] for i in range(10 * seq))


def build(root: Path, trained_mlp_run: Path) -> dict[str, Path]:
    """``{"tabular": breast_cancer_mlp, "text": sentiment_lstm, "int8": breast_cancer_mlp with int8-qgemm deployed}``
    trained briefly, exported, with golden answers."""
    from seqdeploy.data import load_run_splits
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.train.local import train

    tab = shutil.copytree(trained_mlp_run, root / "breast_cancer")
    text = root / "sentiment"
    train(REPO / "models/sentiment_lstm.toml", out=text, epochs=2)
    for run in (tab, text):
        export_onnx(run)
        write_bundle_manifest(run)
    write_golden(tab, load_run_splits(tab).raw_test[:8])
    texts = [str(t) for t in load_run_splits(text).raw_test[:6]] + list(EDGE_TEXTS) + [long_review(text)]
    write_golden(text, texts)
    return {"tabular": tab, "text": text, "int8": int8_bundle(root / "breast_cancer_int8", tab)}


def int8_bundle(dst: Path, tabular: Path) -> Path:
    """``tabular`` with a real ``int8-qgemm`` artifact deployed (com.microsoft QGemm in the portable graph):
    what the quantize gate picks for larger MLPs, so every client must run it."""
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.data import load_run_splits
    from seqdeploy.quantize import get_recipe

    run = shutil.copytree(tabular, dst)
    recipe = get_recipe("int8-qgemm")
    splits = load_run_splits(run)
    recipe.build(run / "model.onnx", run / recipe.artifact, recipe.settings_type(),
                 {"features": np.asarray(splits.x_train, np.float32)})
    (run / "quantize.json").write_text(json.dumps({"chosen": recipe.artifact, "candidates": [
        {"recipe": recipe.name, "path": recipe.artifact, "accepted": True, "chosen": True}]}))
    manifest = write_bundle_manifest(run)
    assert manifest.deployment_artifact == recipe.artifact and "com.microsoft:QGemm" in manifest.contrib_ops
    write_golden(run, splits.raw_test[:8])
    return run


#: the numeric columns of models/data/customers.csv (the others are categories)
CUSTOMER_NUMERIC = ("tenure_months", "monthly_charges")


def customers(root: Path) -> Path:
    """models/customers_mixed_mlp.toml trained one epoch and exported: two raw inputs (numbers + categories)."""
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.train.local import train

    run = root / "customers"
    train(REPO / "models/customers_mixed_mlp.toml", out=run, epochs=1)
    export_onnx(run)
    write_bundle_manifest(run)
    return run


def customer_rows(n: int) -> list[dict[str, str]]:
    """The first ``n`` rows of models/data/customers.csv as strings, by column."""
    import csv

    with open(REPO / "models/data/customers.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))[:n]


def typed_customers(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``rows`` with the numeric columns as floats: what Predictor takes."""
    return [{k: (float(v) if k in CUSTOMER_NUMERIC else v) for k, v in r.items()} for r in rows]

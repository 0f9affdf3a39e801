"""Verify the portable deployment graph: raw test rows through the whole ONNX file vs Keras.

Part of ``seqdeploy verify`` on a run directory. The portable graph built from
the artifact being verified gets the run's raw test rows; Keras gets the same
rows preprocessed in numpy (:mod:`seqdeploy.preprocess`) and its outputs go
through the numpy task outputs. Labels must agree exactly for float32
artifacts; probabilities and predictions within tolerance (predictions in the
target's units). Text models also check that the in-graph tokenizer gives
exactly the Python tokenizer's ids on every test sentence and on hostile
strings. Writes ``golden_portable.json`` (raw inputs -> expected answers) for
clients in other languages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqdeploy.layout import GOLDEN_PORTABLE
from seqdeploy.preprocess import Kind, Tokenize, task_outputs

GOLDEN_ROWS = 8

#: strings that have broken tokenizers elsewhere: every one must give the Python tokenizer's ids exactly
HOSTILE_TEXTS = (
    "", " ", "   \t\n  ", "a", "A", "GOOD", "Good Movie", "gOoD mOvIe", "don't won't it's 'quoted'", "''''",
    "!!!???...,,,;;;:::", "--- *** ###", "1234 5678 90", "4ever 2good", "café naïve résumé Ünïcödé àccents",
    "ÉCOLE ÀÉÎÕÜ", "İstanbul KELVIN K", "straße STRASSE", "emoji 😀🎬👍 good", "good😀bad", "日本語 テキスト",
    "Ελληνικά κείμενο", "русский текст good", "tab\tseparated\tgood", "new\nline\ngood", "nul\x00byte good",
    "zero\u200bwidth good", "non\u00a0breaking", "x" * 300, "oov-only zzqx qqzz xxqq",
)


@dataclass(frozen=True)
class PortableCheck:
    """What the portable-graph check found."""

    passed: bool
    rows: int
    label_agreement: float | None
    max_abs_error: float
    tolerance: float
    tokenizer_strings: int
    tokenizer_mismatches: int
    failures: tuple[str, ...]
    golden_path: str | None


def check_portable(run_dir: str | Path, onnx_file: str | Path, keras_model: Any, raw_test: Any, pre: Kind,
                   task: str, labels: Sequence[str] | None, *, quantized: bool = False,
                   write_golden: bool = True, rows: int = 400, atol: float | None = None,
                   rtol: float = 0.0) -> PortableCheck:
    """Run the check; the caller decides what a failure means (verify raises :class:`CheckFailed`).

    ``atol`` (default 1e-4, 5e-2 for quantized artifacts) and ``rtol`` bound probabilities
    (``|got - want| <= atol + rtol * |want|``); predictions are compared in target units (``atol``
    times the target's scale).
    """
    import onnx

    from seqdeploy.atomic import atomic_write_json
    from seqdeploy.bundle.portable import build_portable, build_preprocessing
    from seqdeploy.export.opsets import custom_ops_libraries
    from seqdeploy.runtime.session import make_session

    run_dir = Path(run_dir)
    model = onnx.load(str(onnx_file))
    portable = build_portable(model, pre, task, labels)
    sess = make_session(portable.SerializeToString(), wrap_errors=False,
                        custom_ops_libraries=custom_ops_libraries(portable))  # e.g. onnxruntime-extensions
    raw_rows = list(raw_test[:rows]) if isinstance(pre, Tokenize) else np.asarray(raw_test)[:rows]
    in_name = sess.get_inputs()[0].name
    # a string input (a model with its own StringLookup/TextVectorization) is coerced as strings
    string_input = pre.kind == "none" and sess.get_inputs()[0].type == "tensor(string)"
    raw = pre.coerce(raw_rows, 0, object) if string_input else pre.coerce(raw_rows)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, pre.feeds(raw, in_name))))

    k_in = keras_model.inputs[0]
    model_shape = tuple(k_in.shape[1:])
    strings = str(k_in.dtype) == "string"
    x = np.asarray(raw) if strings else pre.apply(raw, np.dtype(str(np.dtype(k_in.dtype))), model_shape)
    y = keras_model(x.astype(str) if strings else x, training=False)
    y = np.asarray(y[0] if isinstance(y, (list, tuple)) else y)
    want = task_outputs(y, task, labels, pre)

    failures: list[str] = []
    if task == "regression":
        scale = pre.target_scale
        tol = (atol if atol is not None else 5e-2 if quantized else 1e-4) * max(1.0, scale)
        diff = np.abs(got["prediction"].astype(np.float64) - want["prediction"])
        err = float(np.max(diff)) if diff.size else 0.0
        agreement = None
        if np.any(diff > tol + rtol * np.abs(want["prediction"])):
            failures.append(f"prediction: max abs error {err:.3g} > {tol:.3g} (target units) on raw test rows")
    else:
        tol = atol if atol is not None else 5e-2 if quantized else 1e-4
        diff = np.abs(got["probabilities"].astype(np.float64) - want["probabilities"])
        err = float(np.max(diff))
        agreement = float(np.mean(got["label"] == want["label"]))
        if np.any(diff > tol + rtol * np.abs(want["probabilities"])):
            failures.append(f"probabilities: max abs error {err:.3g} > {tol:g} on raw test rows")
        if not quantized and agreement < 1.0:
            failures.append(f"label: agreement {agreement:.2%} < 100% on raw test rows")

    n_strings = mismatches = 0
    if isinstance(pre, Tokenize):
        texts = [str(t) for t in raw_rows] + list(HOSTILE_TEXTS) + [" ".join(["good"] * (10 * pre.sequence_length))]
        ids_graph = tokenizer_ids(pre, texts, build_preprocessing)
        ids_py = pre.apply(pre.coerce(texts), np.int64)
        bad = np.flatnonzero(~(ids_graph == ids_py).all(axis=1))
        n_strings, mismatches = len(texts), int(len(bad))
        if mismatches:
            failures.append(f"tokenizer: {mismatches} of {n_strings} strings give other ids in the graph than in "
                            f"Python, e.g. {texts[int(bad[0])][:60]!r}")

    golden = None
    if write_golden and not failures:
        n = min(GOLDEN_ROWS, len(raw))
        golden_raw = raw[:n]
        if isinstance(pre, Tokenize):  # a few hostile strings too: other bindings must tokenize them alike
            extra = [t for t in HOSTILE_TEXTS if t and "\x00" not in t][:6]
            golden_raw = np.asarray(list(golden_raw) + extra, dtype=object)
        g_feeds = pre.feeds(golden_raw, in_name)
        g_out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, g_feeds)))
        x_g = pre.apply(golden_raw, np.dtype(str(np.dtype(k_in.dtype))), model_shape)
        y_g = keras_model(x_g, training=False)
        expect = task_outputs(np.asarray(y_g[0] if isinstance(y_g, (list, tuple)) else y_g), task, labels, pre)
        doc = {"inputs": {k: _tensor(v) for k, v in g_feeds.items()},
               "outputs": {name: _tensor(expect[name]) for name in g_out},
               "tolerance": {"atol": max(tol, 1e-4)}, "graph": "portable"}
        path = run_dir / GOLDEN_PORTABLE
        atomic_write_json(path, doc)
        golden = path.name
    return PortableCheck(passed=not failures, rows=int(len(raw)), label_agreement=agreement, max_abs_error=err,
                         tolerance=tol, tokenizer_strings=n_strings, tokenizer_mismatches=mismatches,
                         failures=tuple(failures), golden_path=golden)


def tokenizer_ids(pre: Tokenize, texts: Sequence[str], build_preprocessing: Any = None) -> np.ndarray:
    """Token ids of ``texts`` computed by the in-graph tokenizer (onnxruntime), int64 (n, sequence_length)."""
    from seqdeploy.export.opsets import custom_ops_libraries
    from seqdeploy.runtime.session import make_session

    if build_preprocessing is None:
        from seqdeploy.bundle.portable import build_preprocessing
    model = build_preprocessing(pre, np.int64, (pre.sequence_length,))
    sess = make_session(model.SerializeToString(), wrap_errors=False, custom_ops_libraries=custom_ops_libraries(model))
    arr = np.empty(len(texts), dtype=object)
    arr[:] = list(texts)
    return sess.run(None, {pre.raw_name: arr})[0]


def _tensor(a: Any) -> dict[str, Any]:
    a = np.asarray(a)
    dtype = "str" if a.dtype.kind in "OUS" else str(a.dtype)
    data = [str(v) for v in a.reshape(-1)] if dtype == "str" else a.reshape(-1).tolist()
    return {"dtype": dtype, "shape": list(a.shape), "data": data}

"""Which layers add the quantization noise: SQNR per node, float32 vs quantized activations."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from seqdeploy.quantize.feeds import ArrayReader
from seqdeploy.quantize.results import LayerDiagnosis

_SQNR_CAP_DB = 100.0


def diagnose_layers(float_model: str | os.PathLike, quant_model: str | os.PathLike, feeds: Mapping[str, np.ndarray],
                    *, op_types: frozenset[str] | None = None, work_dir: str | os.PathLike | None = None) -> list[LayerDiagnosis]:
    """Per-node quantization noise, worst first.

    Both models are augmented to output every float tensor
    (``qdq_loss_debug.modify_model_output_intermediate_tensors``); QDQ tensors are
    matched to their float originals (``create_activation_matching``), other
    recipes by tensor name. A node's ``sqnr_loss_db`` is how much SQNR its output
    lost relative to its noisiest input: the noise that node itself added.

        >>> worst = diagnose_layers("pre.onnx", "model.int8-static.onnx", {"x": x})  # doctest: +SKIP
        >>> worst[0].node                                                            # doctest: +SKIP
        'sequential/dense_1/MatMul'
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    own_tmp = None
    if work_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="seqdeploy-diag-")
        work_dir = own_tmp.name
    try:
        work = Path(work_dir)
        aug_f, aug_q = work / "diag.float.onnx", work / "diag.quant.onnx"
        dbg.modify_model_output_intermediate_tensors(str(float_model), str(aug_f))
        dbg.modify_model_output_intermediate_tensors(str(quant_model), str(aug_q))
        f_act = dbg.collect_activations(str(aug_f), ArrayReader(feeds, 32))
        q_act = dbg.collect_activations(str(aug_q), ArrayReader(feeds, 32))
        matched = dbg.create_activation_matching(q_act, f_act)
        sqnr: dict[str, float] = {}
        for name, m in matched.items():
            if m.get("float") is not None and len(m["float"]):
                sqnr[name] = dbg.compute_signal_to_quantization_noice_ratio(
                    [np.asarray(a, np.float32) for a in m["float"]], [np.asarray(a, np.float32) for a in m["post_qdq"]])
        for name, f_vals in f_act.items():  # dynamic / fp16: same tensor names in both models
            if name not in sqnr and name in q_act:
                sqnr[name] = dbg.compute_signal_to_quantization_noice_ratio(
                    [np.asarray(a, np.float32) for a in f_vals], [np.asarray(a, np.float32) for a in q_act[name]])
        sqnr = {k: min(_SQNR_CAP_DB, v) for k, v in sqnr.items()}
        model = onnx.load(str(float_model), load_external_data=False)
        out: list[LayerDiagnosis] = []
        for node in model.graph.node:
            if not node.name or (op_types is not None and node.op_type not in op_types):
                continue
            outs = [t for t in node.output if t in sqnr]
            if not outs:
                continue
            s_out = min(sqnr[t] for t in outs)
            ins = [sqnr.get(t, _SQNR_CAP_DB) for t in node.input if t in sqnr or t in {i.name for i in model.graph.input}]
            s_in = min(ins) if ins else _SQNR_CAP_DB
            out.append(LayerDiagnosis(node.name, node.op_type, outs[0], round(s_out, 2), round(max(0.0, s_in - s_out), 2)))
        out.sort(key=lambda d: (-d.sqnr_loss_db, d.sqnr_db))
        return out
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


__all__ = ["diagnose_layers"]

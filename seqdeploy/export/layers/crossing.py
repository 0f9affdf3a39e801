"""Keras ``HashedCrossing`` (FeatureSpace ``crosses``) as exact ONNX integer arithmetic.

TensorFlow's ``sparse_cross_hashed`` hashes an integer value as the value itself and combines the values of
one row with ``FingerprintCat64`` starting from the default key ``0xDECAFCAFFE``, then takes the result modulo
``num_bins``:

    cat(fp1, fp2) = shiftmix(shiftmix((fp1 ^ K) ^ shiftmix(fp2 * K) * K) * K) * K ... (see ``_cat``)

with ``K = 0xc6a4a7935bd1e995`` and ``shiftmix(v) = v ^ (v >> 47)`` on wrapping uint64. That is ``Mul``,
``BitShift``, ``BitwiseXor`` (opset 18) and ``Mod`` on uint64 tensors, bit-exact to TensorFlow (tested
against Keras, negative values included). FeatureSpace crosses its features after their lookups, so the
values are integer indices. String inputs are hashed by FarmHash ``Fingerprint64`` first, which no ONNX op
computes: refused with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqdeploy.errors import UnsupportedLayerError
from seqdeploy.export.layers import REGISTRY, Built, Call, Cut, LayerConverter, NodeBuilder, OutputSpec

K_MUL = 0xC6A4A7935BD1E995  # FingerprintCat64's multiplier
HASH_KEY = 0xDECAFCAFFE  # tf.sparse.cross_hashed's default hash_key
XOR_OPSET = 18  # BitwiseXor


def _what(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


class HashedCrossingConverter(LayerConverter):
    """Keras ``HashedCrossing`` over integer inputs (``output_mode`` ``int`` or ``one_hot``)."""

    name, classes = "hashed_crossing", ("HashedCrossing",)
    min_opset = XOR_OPSET

    def prepare(self, layer: Any) -> None:
        if getattr(layer, "sparse", False):
            raise UnsupportedLayerError(f"{_what(layer)}: sparse=True outputs a SparseTensor, which ONNX has no "
                                        "form for; build the layer with sparse=False")
        if layer.output_mode not in ("int", "one_hot"):
            raise UnsupportedLayerError(f"{_what(layer)}: output_mode={layer.output_mode!r} (expected 'int' or "
                                        "'one_hot')")

    def record(self, layer: Any, state: Any, arguments: dict[str, Any]) -> Cut:
        import tensorflow as tf

        xs = list(arguments["inputs"])
        if any(x.dtype == tf.string for x in xs):
            raise UnsupportedLayerError(
                f"{_what(layer)} crosses string values, which TensorFlow hashes with FarmHash Fingerprint64 before "
                "FingerprintCat64; no ONNX op computes Fingerprint64, so the exported buckets could not match; cross "
                "the values' lookup indices instead (what FeatureSpace does), or drop the cross")
        shape = tuple(xs[0].shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise UnsupportedLayerError(f"{_what(layer)} receives inputs of shape {shape} (expected (batch,) or "
                                        "(batch, 1))")
        if layer.output_mode == "one_hot":
            out = OutputSpec((shape[0], int(layer.num_bins)), np.dtype(layer.compute_dtype).name)
        else:
            out = OutputSpec(shape, np.dtype(layer.compute_dtype).name)
        return Cut(inputs={f"x{i}": tf.cast(x, tf.int64) for i, x in enumerate(xs)}, outputs=(out,),
                   info={"n": len(xs), "rank": len(shape)})

    def build(self, call: Call) -> Built:
        layer = call.layer
        if call.opset < XOR_OPSET:
            raise UnsupportedLayerError(f"{_what(layer)} needs opset >= {XOR_OPSET} (BitwiseXor on uint64); "
                                        f"received opset {call.opset}; export at opset {XOR_OPSET}")
        b = NodeBuilder(call.prefix)
        k = b.const("k_mul", np.array(K_MUL, np.uint64))
        s47 = b.const("shift47", np.array(47, np.uint64))

        def shiftmix(v: str, tag: str) -> str:
            return b.node("BitwiseXor", [v, b.node("BitShift", [v, s47], f"{tag}_shr", direction="RIGHT")], tag)

        def cat(fp1: str, fp2: str, i: int) -> str:  # FingerprintCat64
            r = b.node("BitwiseXor", [fp1, k], f"c{i}_r0")
            t = b.node("Mul", [shiftmix(b.node("Mul", [fp2, k], f"c{i}_t0"), f"c{i}_t1"), k], f"c{i}_t2")
            r = b.node("Mul", [b.node("BitwiseXor", [r, t], f"c{i}_r1"), k], f"c{i}_r2")
            r = b.node("Mul", [shiftmix(r, f"c{i}_r3"), k], f"c{i}_r4")
            return shiftmix(r, f"c{i}_out")

        from onnx import TensorProto

        h = b.const("hash_key", np.array(HASH_KEY, np.uint64))
        for i in range(call.info["n"]):
            v = b.node("Cast", [call.inputs[f"x{i}"]], f"u{i}", to=TensorProto.UINT64)  # two's complement, as TF
            h = cat(h, v, i)
        bucket = b.node("Cast", [b.node("Mod", [h, b.const("bins", np.array(layer.num_bins, np.uint64))], "mod")],
                        "bucket", to=TensorProto.INT64)
        if layer.output_mode == "one_hot":
            flat = b.node("Reshape", [bucket, b.const("col", np.array([-1, 1], np.int64))], "column")
            hit = b.node("Equal", [flat, b.const("bin_ids", np.arange(layer.num_bins, dtype=np.int64)[None, :])], "hit")
            out = b.node("Cast", [hit], "output", to=_onnx_type(call.outputs[0].dtype))
        elif call.outputs[0].dtype != "int64":
            out = b.node("Cast", [bucket], "output", to=_onnx_type(call.outputs[0].dtype))
        else:
            out = b.node("Identity", [bucket], "output")
        return b.built([out], f"{layer.name}: FingerprintCat64 in uint64 Mul/BitShift/BitwiseXor, Mod {layer.num_bins}")


def _onnx_type(dtype: str) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


REGISTRY.add(HashedCrossingConverter.name, HashedCrossingConverter())

__all__ = ["HASH_KEY", "HashedCrossingConverter", "K_MUL"]

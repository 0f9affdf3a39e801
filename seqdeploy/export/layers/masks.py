"""Exact Keras masks around native ONNX recurrent ops, for any mask pattern.

ONNX ``LSTM`` / ``GRU`` / ``RNN`` know one kind of mask: ``sequence_lens``, the
first *n* steps of every row are valid (right padding). Keras masks may have
any pattern: left padding (``pad_sequences`` default), holes (a 0 token inside
a sentence), all-masked rows. Keras semantics at a masked step (TF backend,
``keras.src.backend.tensorflow.rnn``): the state is carried over unchanged, and
the output is the previous step's output (zeros before the first unmasked
step) or zeros with ``zero_output_for_mask=True`` (which ``Bidirectional``
forces on both directions when it returns sequences). So a masked recurrent
layer is exactly the same layer run over the unmasked steps only, with the
outputs spread back over time. That is what these nodes do:

1. **compact**: a stable permutation moves the unmasked steps of each row to
   the front, in time order (``TopK`` of the key ``t + T * masked``, smallest
   first); ``sequence_lens`` is the number of unmasked steps. A forward
   direction then sees the unmasked steps in order, a reverse direction (Keras
   ``go_backwards``, Bidirectional's backward layer) in reverse order, exactly
   as Keras processes them.
2. **scatter back** (sequence outputs): with ``c[t]`` the number of unmasked
   steps up to and including ``t`` and a zero row prepended to the compacted
   output ``Yc`` (so row 0 means "nothing yet"), Keras's output at time ``t`` is
   one gather from ``[0, Yc]``:

   ====================  ==================================  ==========================
   direction             repeat previous output (default)    zero_output_for_mask
   ====================  ==================================  ==========================
   forward               ``c[t]``                            ``m[t] * c[t]``
   reverse               ``c[t] - m[t] + 1`` if that step    ``m[t] * c[t]``
                         exists (``c[t] - m[t] < n``) else 0
   ====================  ==================================  ==========================

   (a reverse direction has processed, at time ``t``, the unmasked steps at
   ``>= t``; the most recent of them is the first unmasked step at or after ``t``.)
3. the last output (``return_sequences=False``) is ONNX ``Y_h`` (zeros for an
   all-masked row, as in Keras), times the mask of the last processed step
   under ``zero_output_for_mask``.

Only numpy and onnx node helpers are used; the callers pass ``node`` and
``const`` builders that prefix names (see :func:`seqdeploy.export.layers.recurrent_onnx.build_recurrent`).

    >>> masked = compact_steps(node, const, "x", "mask")            # doctest: +SKIP
    >>> idx = scatter_indices(node, const, masked, reverse=False, zero_output=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Node = Callable[..., str]
Const = Callable[[str, np.ndarray], str]


@dataclasses.dataclass(frozen=True)
class CompactedSteps:
    """Tensor names made by :func:`compact_steps`."""

    x: str  # [B, T, F] unmasked steps first, in time order
    sequence_lens: str  # [B] int32 number of unmasked steps
    mask: str  # [B, T] int64 0/1
    counts: str  # [B, T] int64 inclusive running count of unmasked steps
    total: str  # [B, 1] int64 number of unmasked steps


def compact_steps(node: Node, const: Const, x: str, mask: str) -> CompactedSteps:
    """Move the unmasked steps of ``x`` ([B, T, F]) to the front of each row (stable)."""
    from onnx import TensorProto

    m = node("Cast", [mask], "mask_i64", to=TensorProto.INT64)
    counts = node("CumSum", [m, const("axis_1", np.array(1, np.int64))], "mask_counts")
    shape = node("Shape", [x], "x_shape")
    steps = node("Gather", [shape, const("idx_1", np.array(1, np.int64))], "steps")  # scalar T
    steps_1d = node("Unsqueeze", [steps, const("axes_0", np.array([0], np.int64))], "steps_1d")
    t = node("Range", [const("zero", np.array(0, np.int64)), steps, const("one", np.array(1, np.int64))], "time")
    masked = node("Sub", [const("one_b", np.array(1, np.int64)), m], "masked")
    key = node("Add", [t, node("Mul", [masked, steps], "masked_times_t")], "order_key")
    key_f = node("Cast", [key], "order_key_f", to=TensorProto.FLOAT)  # exact below 2**24 steps
    _, perm = node("TopK", [key_f, steps_1d], ["order_values", "order"], axis=1, largest=0, sorted=1)
    perm3 = node("Unsqueeze", [perm, const("axes_2", np.array([2], np.int64))], "order_3d")
    gather_idx = node("Expand", [perm3, shape], "order_expanded")
    xc = node("GatherElements", [x, gather_idx], "x_compacted", axis=1)
    total = node("ReduceSum", [m, const("axes_1", np.array([1], np.int64))], "unmasked_steps", keepdims=1)
    flat = node("Reshape", [total, const("shape_flat", np.array([-1], np.int64))], "unmasked_flat")
    lens = node("Cast", [flat], "sequence_lens", to=TensorProto.INT32)
    return CompactedSteps(x=xc, sequence_lens=lens, mask=m, counts=counts, total=total)


def scatter_indices(node: Node, const: Const, c: CompactedSteps, *, reverse: bool, zero_output: bool,
                    tag: str) -> str:
    """[B, T] int64 row of ``[0, Yc]`` that Keras's output at each time step comes from (table above)."""
    if zero_output:
        return node("Mul", [c.mask, c.counts], f"{tag}_gather_idx")
    if not reverse:
        return c.counts
    before = node("Sub", [c.counts, c.mask], f"{tag}_steps_before")  # unmasked steps strictly before t
    exists = node("Less", [before, c.total], f"{tag}_has_later_step")
    plus = node("Add", [before, const(f"{tag}_one", np.array(1, np.int64))], f"{tag}_row")
    return node("Where", [exists, plus, const(f"{tag}_zero", np.array(0, np.int64))], f"{tag}_gather_idx")


def scatter_sequence(node: Node, const: Const, y: str, indices: list[str]) -> str:
    """Spread compacted outputs ``y`` ([B, T, dirs, H], step j = j-th unmasked step) back over time.

    ``indices`` holds one [B, T] index tensor per direction (see :func:`scatter_indices`).
    """
    padded = node("Pad", [y, const("pad_front", np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64))], "y_zero_first")
    per_dir = [node("Unsqueeze", [ix, const("axes_2b", np.array([2], np.int64))], f"dir{i}_idx")
               for i, ix in enumerate(indices)]
    idx = per_dir[0] if len(per_dir) == 1 else node("Concat", per_dir, "dirs_idx", axis=2)
    idx4 = node("Unsqueeze", [idx, const("axes_3", np.array([3], np.int64))], "idx_4d")
    full = node("Expand", [idx4, node("Shape", [y], "y_shape")], "idx_expanded")
    return node("GatherElements", [padded, full], "y_keras_steps", axis=1)


def last_step_factor(node: Node, const: Const, c: CompactedSteps, *, reverse: bool, tag: str) -> str:
    """[B, 1] float 0/1: the mask of the last step processed (time T-1 forward, 0 reverse)."""
    from onnx import TensorProto

    pos = const(f"{tag}_last_pos", np.array([0 if reverse else -1], np.int64))
    bit = node("Gather", [c.mask, pos], f"{tag}_last_mask", axis=1)
    return node("Cast", [bit], f"{tag}_last_factor", to=TensorProto.FLOAT)

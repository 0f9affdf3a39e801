"""Keras ``TextVectorization`` as exact ONNX nodes.

Keras runs, in order (``TextVectorization._preprocess`` and ``call``):

1. **standardize**: ``tf.strings.lower`` (ASCII only: ``"É"`` stays ``"É"``)
   and/or ``tf.strings.regex_replace`` of Keras's punctuation class with ``""``
   (RE2), or a user function. A user function is traced with ``tf.function``
   on a string vector; its graph may only chain ``StringLower`` (ASCII) and
   ``StaticRegexReplace`` / ``RegexReplace`` with constant pattern and rewrite,
   anything else is refused naming the layer and the op.
2. **split**: on runs of ASCII whitespace ``[ \\t\\n\\v\\f\\r]`` (leading and
   trailing runs give no token) or into UTF-8 characters, then **ngrams**
   joined by ``" "``, for each width in turn.
3. **lookup** and **encode**: the inner ``StringLookup`` (see
   :mod:`seqdeploy.export.layers.lookup`), then padding / truncation to
   ``output_sequence_length`` (``int``) or the bag-of-tokens counts.

Which ops are exact where (measured against TensorFlow 2.21, onnxruntime 1.32,
onnxruntime-extensions 0.15):

* ASCII lowercase: core ``StringNormalizer`` needs an ``en_US.UTF-8`` locale
  at run time (the session fails to load without one) and lowercases non-ASCII
  letters; the extensions' ``StringLower`` also lowercases non-ASCII letters.
  Neither is exact, so lowercasing is 26 RE2 ``StringRegexReplace`` nodes,
  ``A`` -> ``a`` ... ``Z`` -> ``z``.
* punctuation and user regexes: extensions ``StringRegexReplace`` (RE2, as
  TensorFlow).
* whitespace split: core ``StringSplit`` (opset 20) splits on spaces only,
  not on tabs or newlines; the extensions' ``StringRegexSplitWithOffsets``
  on ``([ \\t\\n\\v\\f\\r]+)`` is exact. Character split is the same op on
  ``((?s).)``.
* ngrams: extensions ``StringConcat`` (core ``StringConcat`` needs opset 20).

So a ``TextVectorization`` that splits or standardizes needs
onnxruntime-extensions at run time (:attr:`Fragment.needs_extensions`);
``split=None, standardize=None`` is core ONNX only.

    >>> frag = build_text_vectorization(vectorizer, "review", "token_ids")   # doctest: +SKIP
    >>> frag.needs_extensions                                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import numpy as np

from seqdeploy.errors import UnsupportedLayerError
from seqdeploy.export.layers import REGISTRY
from seqdeploy.export.layers.lookup import (
    EXT_DOMAIN,
    ML_DOMAIN,
    Fragment,
    FragmentConverter,
    GraphBuilder,
    check_lookup_layer,
    encoded_depth,
    extensions_library_path,
    encode_lookup,
    layer_kind,
    lookup_indices,
    output_dtype,
    rows_2d,
    unrow,
)

#: Keras's own punctuation pattern (``lower_and_strip_punctuation`` / ``strip_punctuation``)
KERAS_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
#: ASCII whitespace as TensorFlow's ``StringSplitV2`` (empty separator) splits on it
WHITESPACE_SPLIT = r"([ \t\n\x0b\f\r]+)"
CHARACTER_SPLIT = r"((?s).)"
_INT64_MAX = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class Step:
    """One standardization step: ASCII ``lower``, or an RE2 ``regex`` replacement."""

    kind: str  # "lower" | "regex"
    pattern: str = ""
    rewrite: str = ""
    replace_global: bool = True


def standardize_steps(layer: Any) -> list[Step]:
    """The standardization of a ``TextVectorization`` as a list of steps, refusing what ONNX cannot match."""
    std = layer._standardize
    if std is None:
        return []
    if std == "lower":
        return [Step("lower")]
    if std == "strip_punctuation":
        return [Step("regex", KERAS_PUNCTUATION, "")]
    if std == "lower_and_strip_punctuation":
        return [Step("lower"), Step("regex", KERAS_PUNCTUATION, "")]
    if callable(std):
        return trace_standardize(layer, std)
    raise UnsupportedLayerError(f"{layer_kind(layer)}: standardize={std!r} is not one of None, 'lower', "
                                f"'strip_punctuation', 'lower_and_strip_punctuation' or a function")


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def trace_standardize(layer: Any, fn: Any) -> list[Step]:
    """Trace a user ``standardize`` function on a string vector and read its steps from the graph.

    Accepted: a chain of ``StringLower`` (ASCII, ``encoding=""``) and
    ``StaticRegexReplace`` / ``RegexReplace`` with constant pattern and rewrite.
    """
    import tensorflow as tf

    who = layer_kind(layer)
    try:
        concrete = tf.function(fn).get_concrete_function(tf.TensorSpec([None], tf.string))
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the user's function
        raise UnsupportedLayerError(f"{who}: its standardize function {getattr(fn, '__name__', fn)!r} cannot be "
                                    f"traced on a string vector ({type(exc).__name__}: {exc})") from None

    def source(tensor: Any) -> Any:
        while tensor.op.type == "Identity":
            tensor = tensor.op.inputs[0]
        return tensor

    steps: list[Step] = []
    current = concrete.inputs[0]
    for op in concrete.graph.get_operations():
        if op.type in ("Placeholder", "Const", "Identity", "NoOp"):
            continue
        if op.type not in ("StringLower", "StaticRegexReplace", "RegexReplace"):
            raise UnsupportedLayerError(
                f"{who}: its standardize function uses the TensorFlow op {op.type!r} ({op.name}), which the ONNX "
                f"export cannot reproduce exactly; supported: tf.strings.lower and tf.strings.regex_replace "
                f"with constant pattern and rewrite")
        if source(op.inputs[0]) is not current:
            raise UnsupportedLayerError(f"{who}: its standardize function is not a single chain of string ops "
                                        f"(op {op.type!r} {op.name} reads another value); chain "
                                        f"tf.strings.lower / tf.strings.regex_replace calls one after another")
        if op.type == "StringLower":
            encoding = _text(op.get_attr("encoding"))
            if encoding:
                raise UnsupportedLayerError(
                    f"{who}: its standardize function lowercases with encoding={encoding!r} (Unicode case "
                    f"mapping), which no ONNX op reproduces exactly; use tf.strings.lower without encoding "
                    f"(ASCII letters only)")
            steps.append(Step("lower"))
        elif op.type == "StaticRegexReplace":
            steps.append(Step("regex", _text(op.get_attr("pattern")), _text(op.get_attr("rewrite")),
                              bool(op.get_attr("replace_global"))))
        else:
            pattern, rewrite = (tf.get_static_value(t) for t in op.inputs[1:3])
            if pattern is None or rewrite is None:
                raise UnsupportedLayerError(f"{who}: its standardize function calls tf.strings.regex_replace "
                                            f"({op.name}) with a pattern or rewrite computed at run time; use "
                                            f"constant strings")
            steps.append(Step("regex", _text(pattern), _text(rewrite), bool(op.get_attr("replace_global"))))
        current = op.outputs[0]
    if source(concrete.outputs[0]) is not current:
        raise UnsupportedLayerError(f"{who}: its standardize function does not return the result of its last "
                                    f"string op; return the standardized strings")
    return steps


def apply_steps(b: GraphBuilder, steps: list[Step], x: str) -> str:
    """Standardization steps as extensions ``StringRegexReplace`` nodes (ASCII lower: one per letter)."""
    replacements = []
    for step in steps:
        if step.kind == "lower":
            replacements += [(upper, upper.lower(), True) for upper in string.ascii_uppercase]
        else:
            replacements.append((step.pattern, step.rewrite, step.replace_global))
    for k, (pattern, rewrite, replace_global) in enumerate(replacements):
        x = b.op("StringRegexReplace", [x, b.constant([pattern], object), b.constant([rewrite], object)],
                 domain=EXT_DOMAIN, global_replace=int(replace_global), typed=k == len(replacements) - 1)
    return x


def split_dense(b: GraphBuilder, x: str, pattern: str, keep: str = "") -> tuple[str, str, str]:
    """Split the strings of a vector ``x`` on ``pattern``: tokens [B, T] padded with "", lengths [B], valid [B, T].

    Matches of ``keep`` are tokens themselves (character split: every character is both).
    """
    i64 = np.int64
    flat, _, _, splits = b.op("StringRegexSplitWithOffsets",
                              [x, b.constant(pattern, object), b.constant(keep, object)], 4, domain=EXT_DOMAIN)
    starts = b.op("Slice", [splits, b.constant([0], i64), b.constant([-1], i64)])
    ends = b.op("Slice", [splits, b.constant([1], i64), b.constant([_INT64_MAX], i64)])
    lengths = b.op("Sub", [ends, starts])
    width = b.op("Squeeze", [b.max_or_zero(lengths), b.constant([0], i64)])
    steps = b.op("Range", [b.constant(0, i64), width, b.constant(1, i64)])
    row_steps = b.op("Unsqueeze", [steps, b.constant([0], i64)])
    valid = b.op("Less", [row_steps, b.op("Unsqueeze", [lengths, b.constant([1], i64)])])
    index = b.op("Add", [b.op("Unsqueeze", [starts, b.constant([1], i64)]), row_steps])
    total = b.op("Squeeze", [b.op("Shape", [flat]), b.constant([0], i64)])
    index = b.op("Where", [valid, index, total])  # padding reads the "" appended below
    padded = b.op("Concat", [flat, b.constant([""], object)], axis=0)
    return b.op("Gather", [padded, index], axis=0), lengths, valid


def ngrams(b: GraphBuilder, tokens: str, lengths: str, widths: tuple[int, ...]) -> tuple[str, str]:
    """``tf.strings.ngrams(tokens, widths, separator=" ")`` on padded rows: (grams [B, G], valid [B, G]).

    Each row holds its ngrams of the first width, then of the next, ..., moved to the
    front in that order (a stable TopK on position + columns * padding).
    """
    i64 = np.int64
    rows = b.dim(tokens, 0)
    cols = b.dim(tokens, 1)
    steps = b.op("Unsqueeze", [b.op("Range", [b.constant(0, i64), b.op("Squeeze", [cols, b.constant([0], i64)]),
                                              b.constant(1, i64)]), b.constant([0], i64)])
    row_len = b.op("Unsqueeze", [lengths, b.constant([1], i64)])
    grams, valids = [], []
    for n in widths:
        if n == 1:
            gram = tokens
        else:
            pad = b.op("Expand", [b.constant([[""]], object),
                                  b.op("Concat", [rows, b.constant([n - 1], i64)], axis=0)])
            wide = b.op("Concat", [tokens, pad], axis=1)
            sep = b.op("Expand", [b.constant([[" "]], object), b.op("Shape", [tokens])])
            gram = tokens
            for k in range(1, n):
                part = b.op("Slice", [wide, b.constant([k], i64), b.op("Add", [cols, b.constant([k], i64)]),
                                      b.constant([1], i64)])
                gram = b.op("StringConcat", [b.op("StringConcat", [gram, sep], domain=EXT_DOMAIN), part],
                            domain=EXT_DOMAIN)
        grams.append(gram)
        valids.append(b.op("Less", [b.op("Add", [steps, b.constant(n - 1, i64)]), row_len]))
    grams_all = b.op("Concat", grams, axis=1)
    valid_all = b.op("Concat", valids, axis=1)
    total = b.dim(grams_all, 1)
    position = b.op("Unsqueeze", [b.op("Range", [b.constant(0, i64), b.op("Squeeze", [total, b.constant([0], i64)]),
                                                 b.constant(1, i64)]), b.constant([0], i64)])
    key = b.op("Add", [position, b.op("Mul", [b.op("Cast", [b.op("Not", [valid_all])], to=7), total])])
    _, order = b.op("TopK", [key, total], 2, axis=1, largest=0, sorted=1)
    packed = b.op("GatherElements", [grams_all, order], axis=1)
    counts = b.reduce_sum(b.op("Cast", [valid_all], to=7), 1)
    width = b.max_or_zero(counts)
    packed = b.op("Slice", [packed, b.constant([0], i64), width, b.constant([1], i64)])
    steps = b.op("Unsqueeze", [b.op("Range", [b.constant(0, i64), b.op("Squeeze", [width, b.constant([0], i64)]),
                                              b.constant(1, i64)]), b.constant([0], i64)])
    valid = b.op("Less", [steps, b.op("Unsqueeze", [counts, b.constant([1], i64)])])
    return b.op("Where", [valid, packed, b.constant("", object)]), valid  # padding: "", the mask token


def check_text_vectorization(layer: Any) -> None:
    who = layer_kind(layer)
    if getattr(layer, "_ragged", False):
        raise UnsupportedLayerError(f"{who}: ragged=True outputs a RaggedTensor, which ONNX has no type for; "
                                    f"use ragged=False")
    if layer._split not in (None, "whitespace", "character"):
        raise UnsupportedLayerError(f"{who}: split={layer._split!r} (a function) cannot be exported; use "
                                    f"split='whitespace', 'character' or None")
    if layer._ngrams is not None and layer._split is None:
        raise UnsupportedLayerError(f"{who}: ngrams without split is not supported by the ONNX export; use "
                                    f"split='whitespace' or 'character'")
    check_lookup_layer(layer._lookup_layer, owner=layer)


def build_text_vectorization(layer: Any, input_name: str, output_name: str, *, opset: int = 17,
                             prefix: str | None = None) -> Fragment:
    """Keras ``TextVectorization`` (standardize, split, ngrams, vocabulary, output mode) as ONNX nodes.

    The input is a string tensor of shape [B] or [B, 1], as Keras takes it.
    """
    check_text_vectorization(layer)
    steps = standardize_steps(layer)
    lookup = layer._lookup_layer
    b = GraphBuilder(prefix or layer.name, opset)
    i64 = np.int64
    x = apply_steps(b, steps, input_name)
    seq_len = layer._output_sequence_length
    if layer._split is None:
        ids = lookup_indices(b, lookup, x)
        weight = None
        if lookup.output_mode != "int":
            encoded = b.name("encoded")
            encode_lookup(b, lookup, rows_2d(b, ids), None, encoded)
            unrow(b, encoded, ids, output_name)
            return b.fragment(output_dtype(lookup))
    else:
        vector = b.op("Reshape", [x, b.constant([-1], i64)])
        if layer._split == "whitespace":
            tokens, lengths, weight = split_dense(b, vector, WHITESPACE_SPLIT)
        else:
            tokens, lengths, weight = split_dense(b, vector, CHARACTER_SPLIT, keep=CHARACTER_SPLIT)
        if layer._ngrams is not None:
            tokens, weight = ngrams(b, tokens, lengths, tuple(layer._ngrams))
        ids = lookup_indices(b, lookup, tokens)  # padding "" is the mask token: 0 in int mode
    if lookup.output_mode != "int":
        encode_lookup(b, lookup, ids, weight, output_name)
    elif seq_len is None:
        b.op("Identity", [ids], outputs=[output_name])
    else:  # pad with 0 / truncate the last axis to output_sequence_length
        lead = b.op("Slice", [b.op("Shape", [ids]), b.constant([0], i64), b.constant([-1], i64)])
        zeros = b.op("ConstantOfShape", [b.op("Concat", [lead, b.constant([seq_len], i64)], axis=0)],
                     value=_int64_zero())
        wide = b.op("Concat", [ids, zeros], axis=-1)
        b.op("Slice", [wide, b.constant([0], i64), b.constant([seq_len], i64), b.constant([-1], i64)],
             outputs=[output_name])
    return b.fragment(output_dtype(lookup))


def _int64_zero():
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([0], dtype=np.int64))


# -- converters (registry) -------------------------------------------------------------------------------------


def needs_string_ops(layer: Any) -> bool:
    """Whether the layer's nodes use onnxruntime-extensions ops (any standardization or split)."""
    return layer._standardize is not None or layer._split is not None


def text_output_spec(layer: Any, depth: int, input_shape: tuple) -> tuple[tuple, str]:
    """Keras's output shape (``None`` for dynamic axes) and dtype name of a ``TextVectorization``."""
    lookup = layer._lookup_layer
    seq_len = layer._output_sequence_length
    dtype = output_dtype(lookup)
    if lookup.output_mode == "int":
        if layer._split is None:
            return (*input_shape[:-1], seq_len if seq_len is not None else input_shape[-1]), dtype
        return (input_shape[0], seq_len), dtype
    if layer._split is None and len(input_shape) == 1:
        return (depth,), dtype
    return (input_shape[0], depth), dtype


class TextVectorizationConverter(FragmentConverter):
    """``TextVectorization`` with standardization or split: onnxruntime-extensions string ops."""

    name, classes, domains = "text_vectorization", ("TextVectorization",), {ML_DOMAIN: 2, EXT_DOMAIN: 1}
    builder = staticmethod(build_text_vectorization)

    def claims(self, layer: Any) -> bool:
        return super().claims(layer) and needs_string_ops(layer)

    def check(self, layer: Any) -> None:
        check_text_vectorization(layer)
        standardize_steps(layer)

    def prepare(self, layer: Any) -> int:
        self.check(layer)
        if needs_string_ops(layer):
            # import onnxruntime-extensions now, before anything imports it without RTLD_DEEPBIND (the
            # export's load check runs the graph in this process, next to TensorFlow's RE2)
            extensions_library_path()
        return encoded_depth(layer._lookup_layer)

    def spec(self, layer: Any, depth: int, input_shape: tuple) -> tuple[tuple, str]:
        return text_output_spec(layer, depth, input_shape)


class PlainTextVectorizationConverter(TextVectorizationConverter):
    """``TextVectorization`` without standardization or split: a vocabulary lookup, core ONNX only."""

    name, domains = "text_vectorization_plain", {ML_DOMAIN: 2}

    def claims(self, layer: Any) -> bool:
        return type(layer).__name__ in self.classes and not needs_string_ops(layer)


for _conv in (TextVectorizationConverter(), PlainTextVectorizationConverter()):
    REGISTRY.add(_conv.name, _conv)

"""Keras lookup layers (``StringLookup``, ``IntegerLookup``) as exact ONNX nodes.

Keras keeps the vocabulary in a TensorFlow hash table, which tf2onnx cannot
convert. The table is read out of the layer and written as an ``ai.onnx.ml``
``LabelEncoder`` (token -> index, or index -> token for ``invert=True``); the
rest of :meth:`IndexLookup.call` follows with core ONNX ops:

* the mask token maps to 0 (``output_mode="int"``) or is dropped from the
  counts (other modes, where Keras maps it past the last bin);
* with ``num_oov_indices > 1`` Keras spreads out-of-vocabulary keys over the
  OOV indices: integer keys by ``floormod`` (exact here, ONNX ``Mod``), string
  keys by FarmHash ``Fingerprint64`` or SipHash (``oov_method="farmhash"`` /
  ``salt``), which no ONNX op computes: those are refused. The
  onnxruntime-extensions ``StringToHashBucketFast`` kernel uses another
  FarmHash variant and gives different buckets, so it is not used;
* ``one_hot`` / ``multi_hot`` / ``count`` / ``tf_idf`` are one ``OneHot`` or a
  ``ScatterElements`` sum (opset >= 16) over the last axis, times the IDF
  weights for ``tf_idf``.

``Hashing`` is refused for the same reason as the string OOV buckets (Keras
hashes with FarmHash ``Fingerprint64`` / SipHash, also for integers, which it
hashes as their decimal strings).

Every builder has the form ``build_x(layer, input_name, output_name, *,
opset=17) -> Fragment``: ONNX nodes, initializers and the opset imports they
need, with every internal name prefixed by the layer's name.

    >>> frag = build_string_lookup(lookup_layer, "city", "city_ids")   # doctest: +SKIP
    >>> frag.opsets                                                     # doctest: +SKIP
    {'': 17, 'ai.onnx.ml': 2}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from seqdeploy.errors import OpsetError, UnsupportedLayerError
from seqdeploy.export.layers import REGISTRY, Built, Cut, LayerConverter, NodeBuilder, OutputSpec

#: onnxruntime-extensions custom-op domain (string regex, split, concat)
EXT_DOMAIN = "ai.onnx.contrib"
ML_DOMAIN = "ai.onnx.ml"
_DOMAIN_VERSIONS = {ML_DOMAIN: 2, EXT_DOMAIN: 1}
_INT64_MAX = np.iinfo(np.int64).max
#: element types (TensorProto) of the extensions' non-string outputs; every other output is a string (8)
_EXT_OUTPUT_TYPES = {("StringRegexSplitWithOffsets", 1): 7, ("StringRegexSplitWithOffsets", 2): 7,
                     ("StringRegexSplitWithOffsets", 3): 7}


@dataclasses.dataclass(frozen=True)
class Fragment:
    """ONNX nodes computing one layer: ``nodes`` read the input name and write the output name."""

    nodes: tuple
    initializers: tuple
    opsets: dict  # domain -> version ("" is the core domain)
    output_dtype: str  # numpy name of the output's element type: "int64", "float32" or "object" (strings)

    @property
    def needs_extensions(self) -> bool:
        """True when the nodes use onnxruntime-extensions custom ops (register its library to run them)."""
        return EXT_DOMAIN in self.opsets


class GraphBuilder(NodeBuilder):
    """A :class:`NodeBuilder` that names every tensor itself (``prefix/hint_n``) and records the opset
    domains its nodes use."""

    def __init__(self, prefix: str, opset: int = 17) -> None:
        super().__init__(prefix)
        self.opset = opset
        self.domains: dict = {"": opset}
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def constant(self, value: Any, dtype: Any = None, hint: str = "const") -> str:
        """An initializer holding ``value`` (strings as ONNX strings), under a fresh name."""
        from onnx import numpy_helper

        arr = np.asarray(value, dtype=dtype)
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, *,
           domain: str = "", typed: bool = True, **attrs: Any):
        """Add one node; returns its output name (or the list of names when it has several).

        Outputs of onnxruntime-extensions ops are typed by a Cast unless ``typed`` is false (a chain
        of them needs only its last output typed).
        """
        from onnx import helper

        outs = [self.name(op_type) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type + "_node"),
                                           domain=domain, **attrs))
        if domain:
            self.domains[domain] = _DOMAIN_VERSIONS[domain]
        if domain == EXT_DOMAIN and typed:
            # custom ops have no schema, so ONNX type inference leaves their outputs untyped, and
            # onnx 1.23's LabelEncoder inference crashes (segfault) on an untyped input: a Cast to the
            # known type (a no-op at run time) types them
            outs = [self.op("Cast", [o], to=_EXT_OUTPUT_TYPES.get((op_type, k), 8)) for k, o in enumerate(outs)]
        return outs[0] if len(outs) == 1 else outs

    def fragment(self, output_dtype: str) -> Fragment:
        return Fragment(tuple(self.nodes), tuple(self.initializers), dict(self.domains), output_dtype)

    # -- small idioms -------------------------------------------------------------------------------
    def dim(self, x: str, axis: int) -> str:
        """``shape(x)[axis]`` as a 1-D int64 tensor of one element."""
        end = _INT64_MAX if axis == -1 else axis + 1
        return self.op("Slice", [self.op("Shape", [x]), self.constant([axis], np.int64), self.constant([end], np.int64)])

    def reduce_sum(self, x: str, axis: int, keepdims: int = 0) -> str:
        return self.op("ReduceSum", [x, self.constant([axis], np.int64)], keepdims=keepdims)

    def max_or_zero(self, x1d: str) -> str:
        """The largest element of a 1-D int64 tensor (0 when it is empty), as a 1-D tensor of one element."""
        padded = self.op("Concat", [self.constant([0], np.int64), x1d], axis=0)
        values, _ = self.op("TopK", [padded, self.constant([1], np.int64)], 2, largest=1, sorted=1)
        return values


def layer_kind(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def check_lookup_layer(layer: Any, owner: Any = None) -> None:
    """Refuse the lookup configurations that ONNX cannot reproduce exactly, naming the layer."""
    who = layer_kind(owner if owner is not None else layer)
    if getattr(layer, "sparse", False):
        raise UnsupportedLayerError(f"{who}: sparse=True outputs a SparseTensor, which ONNX has no type for; "
                                    f"use sparse=False")
    if int(layer.lookup_table.size()) == 0:
        raise UnsupportedLayerError(f"{who} has an empty vocabulary; call adapt() or pass vocabulary= "
                                    f"before exporting")
    if not layer.invert and layer.num_oov_indices == 0:
        raise UnsupportedLayerError(
            f"{who}: num_oov_indices=0 makes Keras raise an error on unseen keys at run time, which an "
            f"ONNX graph cannot do; use num_oov_indices=1 (unseen keys get index "
            f"{1 if layer.mask_token is not None else 0})")
    if not layer.invert and layer.num_oov_indices > 1:
        integer = str(layer._key_dtype) != "string"
        if not integer or getattr(layer, "oov_method", "farmhash") == "farmhash":
            how = "SipHash (salt is set)" if getattr(layer, "salt", None) is not None else "FarmHash Fingerprint64"
            raise UnsupportedLayerError(
                f"{who}: num_oov_indices={layer.num_oov_indices} hashes unseen keys into OOV buckets with {how}, "
                f"which no ONNX op computes (the onnxruntime-extensions hash kernel uses another FarmHash variant "
                f"and gives different buckets); use num_oov_indices=1"
                + ("" if not integer else ", or oov_method='floormod'"))


def _table(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    keys, values = layer.lookup_table.export()
    keys, values = keys.numpy(), values.numpy()
    if keys.dtype.kind in "SO":
        keys = np.array([k.decode("utf-8") for k in keys], dtype=object)
    if values.dtype.kind in "SO":
        values = np.array([v.decode("utf-8") for v in values], dtype=object)
    return keys, values


def _scalar(value: Any) -> Any:
    value = value.numpy() if hasattr(value, "numpy") else value
    return value.decode("utf-8") if isinstance(value, bytes) else value


def lookup_indices(b: GraphBuilder, layer: Any, x: str) -> str:
    """The ids Keras's ``IndexLookup._lookup_dense`` gives for the keys in ``x`` (any shape).

    String keys must be a string tensor; integer keys are cast to int64.
    ``invert=True`` maps indices (int64) to tokens. The mask token is never a
    vocabulary key, so Keras's ``where(x == mask_key, mask_value, lookup(x))`` is
    one more entry of the same table (string ``Equal`` needs opset 19).
    """
    keys, values = _table(layer)
    keys, values = list(keys), list(values)
    if layer.mask_token is not None:
        keys.append(_scalar(layer._mask_key))
        values.append(_scalar(layer._mask_value))
    default = _scalar(layer._default_value)
    attrs: dict = {}
    if isinstance(keys[0], str):
        attrs["keys_strings"] = [str(k) for k in keys]
    else:
        x = b.op("Cast", [x], to=7)  # int64
        attrs["keys_int64s"] = [int(k) for k in keys]
    if isinstance(values[0], str):
        attrs.update(values_strings=[str(v) for v in values], default_string=str(default))
    else:
        attrs.update(values_int64s=[int(v) for v in values], default_int64=int(default))
    ids = b.op("LabelEncoder", [x], domain=ML_DOMAIN, **attrs)
    if not layer.invert and layer.num_oov_indices > 1:  # integer keys, floormod (strings are refused)
        buckets = b.op("Mod", [x, b.constant(layer.num_oov_indices, np.int64)], fmod=0)
        buckets = b.op("Add", [buckets, b.constant(layer._oov_start_index(), np.int64)])
        is_oov = b.op("Equal", [ids, b.constant(int(default), np.int64)])
        ids = b.op("Where", [is_oov, buckets, ids])
    return ids


def bin_counts(b: GraphBuilder, ids: str, weight: str | None, depth: int) -> str:
    """Per row of a [B, N] int64 ``ids``, the count of each id in [0, depth) as [B, depth] int64.

    Ids outside [0, depth) and positions where ``weight`` (bool [B, N]) is false are not counted,
    as TensorFlow's bincount with ``maxlength`` drops them.
    """
    if b.opset < 16:
        raise OpsetError(f"{b.prefix}: counting tokens needs ScatterElements with reduction (opset 16); "
                         f"received opset {b.opset}; use opset 16 or higher")
    zero = b.constant(0, np.int64)
    inside = b.op("And", [b.op("GreaterOrEqual", [ids, zero]), b.op("Less", [ids, b.constant(depth, np.int64)])])
    if weight is not None:
        inside = b.op("And", [inside, weight])
    safe = b.op("Where", [inside, ids, zero])
    ones = b.op("Cast", [inside], to=7)
    rows = b.dim(ids, 0)
    zeros = b.op("ConstantOfShape", [b.op("Concat", [rows, b.constant([depth], np.int64)], axis=0)],
                 value=_int64_tensor(0))
    return b.op("ScatterElements", [zeros, safe, ones], axis=1, reduction="add")


def _int64_tensor(v: int):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([v], dtype=np.int64))


def encode(b: GraphBuilder, mode: str, depth: int, ids: str, weight: str | None, out: str,
           idf: Any = None) -> None:
    """Keras ``encode_categorical_inputs`` (+ IDF for ``tf_idf``) of int64 ``ids``, writing ``out`` (int64,
    float32 for ``tf_idf``).

    ``ids`` is [B, N] (multi_hot / count / tf_idf) or any shape (one_hot); ``weight`` marks real
    (not padding) positions.
    """
    if mode == "one_hot":
        onehot = b.op("OneHot", [ids, b.constant([depth], np.int64), b.constant([0, 1], np.int64)], axis=-1)
        # Keras drops a trailing axis of size 1 first (for inputs of rank > 1)
        shape = b.op("Shape", [ids])
        rank = b.op("Shape", [shape])
        last = b.dim(ids, -1)
        squeeze = b.op("And", [b.op("Equal", [last, b.constant([1], np.int64)]),
                               b.op("Greater", [rank, b.constant([1], np.int64)])])
        kept_last = b.op("Compress", [last, b.op("Not", [squeeze])], axis=0)
        lead = b.op("Slice", [shape, b.constant([0], np.int64), b.constant([-1], np.int64)])
        new_shape = b.op("Concat", [lead, kept_last, b.constant([depth], np.int64)], axis=0)
        b.op("Reshape", [onehot, new_shape], outputs=[out])
        return
    counts = bin_counts(b, ids, weight, depth)
    if mode == "multi_hot":
        b.op("Min", [counts, b.constant(1, np.int64)], outputs=[out])
    elif mode == "count":
        b.op("Identity", [counts], outputs=[out])
    elif mode == "tf_idf":
        idf = np.asarray(idf, dtype=np.float32)
        if idf.shape[0] < depth:  # pad_to_max_tokens: Keras pads the weights with zeros
            idf = np.concatenate([idf, np.zeros(depth - idf.shape[0], np.float32)])
        b.op("Mul", [b.op("Cast", [counts], to=1), b.constant(idf)], outputs=[out])
    else:
        raise UnsupportedLayerError(f"{b.prefix}: output_mode={mode!r} is not one of int, one_hot, "
                                    f"multi_hot, count, tf_idf")


def encode_lookup(b: GraphBuilder, layer: Any, ids: str, weight: str | None, out: str) -> None:
    """:func:`encode` with a lookup layer's output mode, depth and IDF weights."""
    idf = layer.idf_weights_const.numpy() if layer.output_mode == "tf_idf" else None
    encode(b, layer.output_mode, encoded_depth(layer), ids, weight, out, idf)


def rows_2d(b: GraphBuilder, x: str) -> str:
    """The row layout of TensorFlow's bincount: [N] -> [1, N] (one sample), [B, N] -> [B, N]."""
    shape = b.op("Concat", [b.constant([1], np.int64), b.op("Shape", [x])], axis=0)
    return b.op("Reshape", [x, b.op("Slice", [shape, b.constant([-2], np.int64), b.constant([_INT64_MAX], np.int64)])])


def unrow(b: GraphBuilder, counts: str, like: str, out: str) -> None:
    """[R, depth] counts back to Keras's shape: [depth] for a vector input ``like``, [B, depth] otherwise."""
    lead = b.op("Slice", [b.op("Shape", [like]), b.constant([0], np.int64), b.constant([-1], np.int64)])
    b.op("Reshape", [counts, b.op("Concat", [lead, b.dim(counts, -1)], axis=0)], outputs=[out])


def _build_index_lookup(layer: Any, input_name: str, output_name: str, opset: int, prefix: str | None) -> Fragment:
    check_lookup_layer(layer)
    b = GraphBuilder(prefix or layer.name, opset)
    if layer.output_mode == "int":
        b.op("Identity", [lookup_indices(b, layer, input_name)], outputs=[output_name])
    elif layer.output_mode == "one_hot":
        encode_lookup(b, layer, lookup_indices(b, layer, input_name), None, output_name)
    else:
        encoded = b.name("encoded")
        encode_lookup(b, layer, lookup_indices(b, layer, rows_2d(b, input_name)), None, encoded)
        unrow(b, encoded, input_name, output_name)
    return b.fragment(output_dtype(layer))


def output_dtype(layer: Any) -> str:
    """The numpy name of the element type Keras gives for this lookup layer's output."""
    if layer.output_mode == "tf_idf":
        return "float32"
    if layer.output_mode == "int":
        return "object" if str(layer._value_dtype) == "string" else "int64"
    return "int64"


def build_string_lookup(layer: Any, input_name: str, output_name: str, *, opset: int = 17,
                        prefix: str | None = None) -> Fragment:
    """Keras ``StringLookup`` (every output mode, mask token, ``invert=True``) as ONNX nodes."""
    return _build_index_lookup(layer, input_name, output_name, opset, prefix)


def build_integer_lookup(layer: Any, input_name: str, output_name: str, *, opset: int = 17,
                         prefix: str | None = None) -> Fragment:
    """Keras ``IntegerLookup`` (every output mode, floormod OOV buckets, ``invert=True``) as ONNX nodes."""
    return _build_index_lookup(layer, input_name, output_name, opset, prefix)


def build_hashing(layer: Any, input_name: str, output_name: str, *, opset: int = 17,
                  prefix: str | None = None) -> Fragment:
    """Keras ``Hashing``: always refused (FarmHash Fingerprint64 / SipHash have no ONNX form)."""
    how = "SipHash (salt is set)" if layer.salt is not None else "FarmHash Fingerprint64"
    raise UnsupportedLayerError(
        f"{layer_kind(layer)} hashes its inputs with {how} (integers as their decimal strings), which no ONNX op "
        f"computes (the onnxruntime-extensions hash kernel uses another FarmHash variant and gives different "
        f"buckets); replace it with a StringLookup / IntegerLookup adapted on the training data")


def build_discretization(layer: Any, input_name: str, output_name: str, *, opset: int = 17,
                         prefix: str | None = None) -> Fragment:
    """Keras ``Discretization`` (TensorFlow ``Bucketize``, which tf2onnx does not convert) as ONNX nodes.

    ``Bucketize`` is ``std::upper_bound`` over float32 boundaries: the bucket is the number of
    boundaries ``b`` with ``not (x < b)`` (so NaN lands in the last bucket, as in TensorFlow), compared
    as float32 (Keras casts float inputs to float32 first; integers meet float boundaries as floats).
    """
    if getattr(layer, "sparse", False):
        raise UnsupportedLayerError(f"{layer_kind(layer)}: sparse=True outputs a SparseTensor, which ONNX has no "
                                    f"type for; use sparse=False")
    if layer.bin_boundaries is None:
        raise UnsupportedLayerError(f"{layer_kind(layer)} has no bin boundaries; call adapt() or pass "
                                    f"bin_boundaries= before exporting")
    b = GraphBuilder(prefix or layer.name, opset)
    bounds = np.asarray(layer.bin_boundaries, dtype=np.float32)
    x = b.op("Cast", [input_name], to=1)
    below = b.op("Not", [b.op("Less", [b.op("Unsqueeze", [x, b.constant([-1], np.int64)]), b.constant(bounds)])])
    ids = b.op("ReduceSum", [b.op("Cast", [below], to=7), b.constant([-1], np.int64)], keepdims=0)
    out_type = _ONNX_TYPES[np.dtype(layer.output_dtype).name]
    if layer.output_mode == "int":
        b.op("Cast", [ids], outputs=[output_name], to=out_type)
        return b.fragment(np.dtype(layer.output_dtype).name)
    encoded = b.name("encoded")
    if layer.output_mode == "one_hot":
        encode(b, "one_hot", len(bounds) + 1, ids, None, encoded)
    else:
        encode(b, layer.output_mode, len(bounds) + 1, rows_2d(b, ids), None, b.name("counts"))
        unrow(b, b.nodes[-1].output[0], ids, encoded)
    b.op("Cast", [encoded], outputs=[output_name], to=out_type)
    return b.fragment(np.dtype(layer.output_dtype).name)


_ONNX_TYPES = {"float32": 1, "int32": 6, "int64": 7, "float64": 11, "float16": 10}


def fragment_model(fragment: Fragment, inputs: dict, output_name: str):
    """A standalone ONNX model of one fragment: ``inputs`` maps input names to numpy dtypes."""
    from onnx import TensorProto, helper

    def elem(dtype: Any) -> int:
        dtype = np.dtype(dtype)
        return TensorProto.STRING if dtype.kind in "OUS" else helper.np_dtype_to_tensor_dtype(dtype)

    graph = helper.make_graph(
        list(fragment.nodes), "fragment",
        [helper.make_tensor_value_info(n, elem(t), None) for n, t in inputs.items()],
        [helper.make_tensor_value_info(output_name, elem(fragment.output_dtype), None)],
        initializer=list(fragment.initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in fragment.opsets.items()])
    model.ir_version = 8
    return model


def extensions_library_path() -> str:
    """Path of the onnxruntime-extensions custom-op library (imported with ``RTLD_DEEPBIND``:
    :func:`seqdeploy.runtime.extensions.import_library`); :class:`UnsupportedLayerError` when it is missing."""
    from seqdeploy.errors import BundleError
    from seqdeploy.runtime.extensions import extensions_library_path as runtime_path

    try:
        return runtime_path()
    except BundleError:
        raise UnsupportedLayerError(
            "this model's string preprocessing runs as onnxruntime-extensions custom ops, which are not "
            "installed; pip install 'seqdeploy[strings]' (or pip install onnxruntime-extensions)") from None


# -- converters (registry) -------------------------------------------------------------------------------------


def encoded_depth(layer: Any) -> int:
    """The last axis of a non-``int`` output (call outside a trace: the vocabulary size is a tensor there)."""
    return int(layer.max_tokens if layer.pad_to_max_tokens else layer.vocabulary_size())


def lookup_output_spec(layer: Any, depth: int, input_shape: tuple) -> tuple[tuple, str]:
    """Keras's output shape (``None`` for dynamic axes) and dtype name of a lookup layer on ``input_shape``."""
    mode = layer.output_mode
    dtype = output_dtype(layer)
    dtype = "string" if dtype == "object" else dtype
    if mode == "int":
        return input_shape, dtype
    if mode == "one_hot":
        lead = input_shape[:-1] if len(input_shape) > 1 and input_shape[-1] == 1 else input_shape
        return (*lead, depth), dtype
    return ((depth,) if len(input_shape) == 1 else (input_shape[0], depth)), dtype


class FragmentConverter(LayerConverter):
    """Cuts each call of a claimed layer out of the trace and builds it with ``builder``."""

    builder: Any = None

    def spec(self, layer: Any, depth: int, input_shape: tuple) -> tuple[tuple, str]:
        return lookup_output_spec(layer, depth, input_shape)

    def prepare(self, layer: Any) -> int:
        self.check(layer)
        return encoded_depth(layer)

    def check(self, layer: Any) -> None:
        check_lookup_layer(layer)

    def record(self, layer: Any, state: Any, arguments: dict) -> Any:
        x = arguments["inputs"]
        shape, dtype = self.spec(layer, state, tuple(x.shape))
        return Cut(inputs={"x": x}, outputs=(OutputSpec(tuple(shape), dtype),))

    def build(self, call: Any) -> Any:
        out = f"{call.prefix}/output"
        frag = type(self).builder(call.layer, call.inputs["x"], out, opset=call.opset, prefix=call.prefix)
        what = "ONNX LabelEncoder table" + (" + onnxruntime-extensions string ops" if frag.needs_extensions else "")
        return Built(nodes=frag.nodes, initializers=frag.initializers, outputs=(out,),
                     description=f"{call.layer.name}: {what}")


class StringLookupConverter(FragmentConverter):
    name, classes, domains = "string_lookup", ("StringLookup",), {ML_DOMAIN: 2}
    builder = staticmethod(build_string_lookup)


class IntegerLookupConverter(FragmentConverter):
    name, classes, domains = "integer_lookup", ("IntegerLookup",), {ML_DOMAIN: 2}
    builder = staticmethod(build_integer_lookup)


class HashingConverter(LayerConverter):
    name, classes = "hashing", ("Hashing",)

    def prepare(self, layer: Any) -> None:
        build_hashing(layer, "", "")


class DiscretizationConverter(LayerConverter):
    name, classes = "discretization", ("Discretization",)

    def prepare(self, layer: Any) -> None:
        build_discretization(layer, "x", "y")  # refuses early what cannot be built

    def record(self, layer: Any, state: Any, arguments: dict) -> Any:
        x = arguments["inputs"]
        depth = len(layer.bin_boundaries) + 1
        shape = tuple(x.shape)
        if layer.output_mode == "one_hot":
            shape = (*(shape[:-1] if len(shape) > 1 and shape[-1] == 1 else shape), depth)
        elif layer.output_mode != "int":
            shape = (depth,) if len(shape) == 1 else (shape[0], depth)
        return Cut(inputs={"x": x}, outputs=(OutputSpec(shape, np.dtype(layer.output_dtype).name),))

    def build(self, call: Any) -> Any:
        out = f"{call.prefix}/output"
        frag = build_discretization(call.layer, call.inputs["x"], out, opset=call.opset, prefix=call.prefix)
        return Built(nodes=frag.nodes, initializers=frag.initializers, outputs=(out,),
                     description=f"{call.layer.name}: ONNX Less/ReduceSum over {len(call.layer.bin_boundaries)} "
                                 f"boundaries")


for _conv in (StringLookupConverter(), IntegerLookupConverter(), HashingConverter(),
              DiscretizationConverter()):
    REGISTRY.add(_conv.name, _conv)

"""The one preprocessing definition: raw inputs -> model inputs, model outputs -> answers.

Every preprocessing *kind* (``standardize``, ``scale``, ``window``, ``tokenize``,
``none``) is one frozen dataclass registered in :data:`KINDS`. Each kind has

* ``fit(...)`` (classmethod): the record, from training data only;
* ``to_record()`` / ``from_record(d)``: the JSON record in ``train.json`` and
  ``manifest.json`` (validated on the way in);
* ``coerce(raw)``: what a user hands in (lists of dicts, DataFrames, arrays,
  strings) -> the canonical raw array the portable ONNX graph takes, or an
  :class:`~seqdeploy.errors.InputValidationError` saying what was expected;
* ``apply(raw)``: the canonical raw array -> the model-ready array (numpy);
* ``postprocess(y)``: model output -> target units (window de-normalisation);
* ``to_onnx(g, ...)`` / ``postprocess_onnx(g, ...)``: the same computation as
  ONNX nodes, used by :mod:`seqdeploy.portable` to build the deployment graph.

Arithmetic is float32 throughout, in the order the ONNX nodes compute it, so
``apply`` and the ONNX graph agree bit for bit (held by property tests).

Task outputs (probabilities, class ids, labels, values) are defined once too:
:func:`task_outputs` (numpy) and :mod:`seqdeploy.portable` (ONNX).

This module imports numpy only; ONNX nodes are made through the builder that
:mod:`seqdeploy.portable` passes in.

    >>> k = from_record({"kind": "window", "window": 3, "mean": 1.0, "std": 2.0})
    >>> k.apply(np.array([[1.0, 3.0, 5.0]], np.float32))[0, :, 0].tolist()
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from seqdeploy.errors import BundleError, InputValidationError

#: vocabulary ids with a fixed meaning
PAD_ID, OOV_ID = 0, 1
PAD, OOV = "<pad>", "<oov>"
#: the default token pattern: runs of ASCII letters, digits and apostrophes (everything else separates).
#: Tokens are matched on the text as given and then ASCII-lowercased, which every onnxruntime binding
#: computes identically (Unicode case mapping differs between C libraries and locales).
TOKEN_PATTERN = "[A-Za-z0-9']+"
_LEGACY_TOKEN_PATTERN = "[a-z0-9']+"  # records before the portable graph: matched on lowercased text
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

KINDS: dict[str, type["Kind"]] = {}


def register(cls: type["Kind"]) -> type["Kind"]:
    """Class decorator: add a preprocessing kind to :data:`KINDS` under its ``kind`` name."""
    KINDS[cls.kind] = cls
    return cls


def from_record(d: Mapping[str, Any] | None, where: str = "preprocessing") -> "Kind":
    """Validate a preprocessing record (docs/CONTRACTS.md) into its kind.

    >>> from_record({"kind": "scale", "scale": 0.5, "offset": 0.0, "raw_shape": [2]}).kind
    'scale'
    """
    if d is None:
        return NoPreprocessing()
    if not isinstance(d, Mapping):
        raise _err(where, f"{d!r} (expected an object with a 'kind')")
    kind = d.get("kind", "none") or "none"
    cls = KINDS.get(kind)
    if cls is None:
        raise _err(where, f"kind = {kind!r} (expected one of {', '.join(KINDS)}); this seqdeploy may be too "
                          f"old for the bundle: upgrade seqdeploy")
    return cls.from_record(d, where)


class Kind:
    """Base of the preprocessing kinds (see the module docstring for the contract)."""

    kind: ClassVar[str]
    #: the portable graph's raw input name
    raw_name: ClassVar[str] = "inputs"

    def to_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for k, v in self.__dict__.items():
            if k != "kind" and v is not None:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Kind":  # pragma: no cover - abstract
        raise NotImplementedError

    # raw input of the portable graph: (numpy dtype name, shape without the batch axis)
    def raw_spec(self, model_shape: Sequence[Any], model_dtype: str) -> tuple[str, tuple[Any, ...]]:
        raise NotImplementedError  # pragma: no cover

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def apply(self, raw: np.ndarray, model_dtype: Any = np.float32,
              model_shape: Sequence[Any] | None = None) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        """Model output -> target units (identity except for kinds that normalise the target)."""
        return y

    def to_onnx(self, g: Any, raw: str, out: str, model_dtype: Any, model_shape: Sequence[Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    def postprocess_onnx(self, g: Any, y: str, out: str) -> None:
        g.node("Identity", [y], [out])


# --------------------------------------------------------------------------- kinds


@register
@dataclass(frozen=True)
class Standardize(Kind):
    """``(x - mean) / std`` per feature, float32; raw rows may be keyed by feature name."""

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: ClassVar[str] = "standardize"
    raw_name: ClassVar[str] = "features"

    @classmethod
    def fit(cls, x_train: np.ndarray, feature_names: Sequence[str]) -> "Standardize":
        x = np.asarray(x_train, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std == 0] = 1.0  # constant columns stay at zero instead of dividing by zero
        return cls(tuple(feature_names), tuple(float(v) for v in mean), tuple(float(v) for v in std))

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Standardize":
        names = d.get("feature_names")
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise _err(where, f"feature_names = {names!r} (expected a non-empty list of strings)")
        if len(set(names)) != len(names):
            raise _err(where, "feature_names has duplicates; feature names must be unique")
        n = len(names)
        return cls(tuple(names), _floats(d.get("mean"), where, "mean", n),
                   _floats(d.get("std"), where, "std", n, positive=True))

    @property
    def _mean32(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float32)

    @property
    def _std32(self) -> np.ndarray:
        return np.asarray(self.std, dtype=np.float32)

    def raw_spec(self, model_shape, model_dtype):
        return "float32", (len(self.feature_names),)

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        names = self.feature_names
        n_feat = len(names)
        if type(raw) is np.ndarray and raw.ndim == 2 and raw.shape[1] == n_feat and raw.dtype.kind in "iuf" \
                and raw.shape[0] > 0:
            x = raw  # fast path: already an (n, F) numeric array
        elif isinstance(raw, Mapping):
            raise InputValidationError("received one dict (expected a list of dicts keyed by feature name, "
                                       "or an (n, F) array); wrap a single row in a list: [row]")
        elif hasattr(raw, "columns") and hasattr(raw, "to_numpy"):  # a DataFrame, without importing pandas
            missing = [f for f in names if f not in set(raw.columns)]
            if missing:
                raise InputValidationError(f"the table is missing feature column(s) {missing} (expected columns "
                                           f"{list(names)}; extra columns are ignored)")
            x = _numeric_array(raw[list(names)].to_numpy(), "numeric feature columns")
        elif isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], Mapping):
            x = np.empty((len(raw), n_feat), dtype=np.float64)
            for i, row in enumerate(raw):
                if not isinstance(row, Mapping):
                    raise InputValidationError(f"row {i + offset} is {type(row).__name__} (expected a dict keyed by "
                                               f"feature name like rows before it)")
                for j, f in enumerate(names):
                    if f not in row:
                        raise InputValidationError(f"row {i + offset} is missing feature {f!r} (expected keys "
                                                   f"{_short(names)}; got {list(row)[:10]})")
                    v = row[f]
                    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                        raise InputValidationError(f"row {i + offset} feature {f!r} = {v!r} (expected a number)")
                    x[i, j] = float(v)
        else:
            x = _numeric_array(raw, lambda: f"an (n, {n_feat}) array of features {_short(names)} or a list of dicts")
        if x.ndim != 2 or x.shape[1] != n_feat:
            hint = "; for one sample use x.reshape(1, -1)" if x.ndim == 1 and x.shape[0] == n_feat else ""
            cols = f"; each row has {x.shape[1]} values, not {n_feat}" if x.ndim == 2 else ""
            raise InputValidationError(f"received shape {x.shape} (expected (n, {n_feat}) with features "
                                       f"{_short(names)}){cols}{hint}")
        _check_nonempty(x)
        return _finite_float32(x, offset)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x = np.asarray(raw, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return ((x - self._mean32) / self._std32).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        z = g.node("Div", [g.node("Sub", [raw, g.const("mean", self._mean32)]), g.const("std", self._std32)])
        g.cast(z, model_dtype, out)


@register
@dataclass(frozen=True)
class Scale(Kind):
    """``x * scale + offset`` in float32, reshaped to the model input (images); raw may be uint8."""

    scale: float
    offset: float
    raw_shape: tuple[int, ...]
    raw_dtype: str = "float32"
    model_shape: tuple[int, ...] | None = None  # per sample; None: the raw shape
    kind: ClassVar[str] = "scale"
    raw_name: ClassVar[str] = "image"

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Scale":
        raw_shape = d.get("raw_shape")
        if not isinstance(raw_shape, (list, tuple)) or not raw_shape or not all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in raw_shape):
            raise _err(where, f"raw_shape = {raw_shape!r} (expected a list of positive integers)")
        scale, offset = _floats([d.get("scale"), d.get("offset")], where, "scale/offset")
        raw_dtype = d.get("raw_dtype", "float32")
        if raw_dtype not in ("float32", "uint8"):
            raise _err(where, f"raw_dtype = {raw_dtype!r} (expected 'float32' or 'uint8')")
        model_shape = d.get("model_shape")
        if model_shape is not None:
            if not isinstance(model_shape, (list, tuple)) or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in model_shape) \
                    or math.prod(model_shape) != math.prod(raw_shape):
                raise _err(where, f"model_shape = {model_shape!r} (expected positive integers with as many values "
                                  f"as raw_shape {list(raw_shape)})")
            model_shape = tuple(model_shape)
        return cls(scale, offset, tuple(raw_shape), raw_dtype, model_shape)

    def raw_spec(self, model_shape, model_dtype):
        return self.raw_dtype, tuple(self.raw_shape)

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        shape = ", ".join(map(str, self.raw_shape))
        x = _numeric_array(raw, f"images of shape (n, {shape})")
        size = math.prod(self.raw_shape)
        if x.ndim < 1 or not (tuple(x.shape[1:]) == self.raw_shape or tuple(x.shape[1:]) == (size,)):
            raise InputValidationError(f"received shape {x.shape} (expected (n, {shape}) or (n, {size}))")
        _check_nonempty(x)
        x = x.reshape((x.shape[0], *self.raw_shape))
        if self.raw_dtype == "uint8":
            if x.dtype == np.uint8:
                return x
            if x.dtype.kind == "f":
                _check_finite(x, offset, "raw input")
            bad = (x < 0) | (x > 255) | ((x != np.floor(x)) if x.dtype.kind == "f" else False)
            if bad.any():
                row = int(np.flatnonzero(bad.reshape(x.shape[0], -1).any(axis=1))[0])
                val = x.reshape(x.shape[0], -1)[row][bad.reshape(x.shape[0], -1)[row]][0]
                raise InputValidationError(f"row {row + offset} has pixel value {val} (expected integers 0..255 "
                                           f"for uint8 pixels)")
            return x.astype(np.uint8)
        return _finite_float32(x, offset)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x = np.asarray(raw).astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):
            z = x * np.float32(self.scale)
            if self.offset != 0.0:
                z = z + np.float32(self.offset)
        target = _target_shape(model_shape or self.model_shape, self.raw_shape)
        return z.reshape((z.shape[0], *target)).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        z = g.node("Mul", [g.cast(raw, np.float32), g.const("scale", np.float32(self.scale))])
        if self.offset != 0.0:
            z = g.node("Add", [z, g.const("offset", np.float32(self.offset))])
        target = _target_shape(model_shape or self.model_shape, self.raw_shape)
        z = g.node("Reshape", [z, g.const("shape", np.asarray([-1, *target], np.int64))])
        g.cast(z, model_dtype, out)


@register
@dataclass(frozen=True)
class Window(Kind):
    """``(x - mean) / std`` over a window of a series (float32); outputs are de-normalised ``y * std + mean``."""

    window: int
    mean: float
    std: float
    kind: ClassVar[str] = "window"
    raw_name: ClassVar[str] = "window"

    @classmethod
    def fit(cls, series_train: np.ndarray, window: int) -> "Window":
        s = np.asarray(series_train, dtype=np.float64)
        return cls(int(window), float(s.mean()), float(s.std()) or 1.0)

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Window":
        window = d.get("window")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise _err(where, f"window = {window!r} (expected an integer >= 1)")
        mean, std = _floats([d.get("mean"), d.get("std")], where, "mean/std")
        if std <= 0:
            raise _err(where, f"std = {std} (expected > 0)")
        return cls(window, mean, std)

    def raw_spec(self, model_shape, model_dtype):
        return "float32", (self.window,)

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        x = _numeric_array(raw, f"(n, {self.window}) raw series windows")
        if x.ndim != 2 or x.shape[1] != self.window:
            raise InputValidationError(f"received shape {x.shape} (expected (n, {self.window}): one row of "
                                       f"{self.window} raw series values per sample)")
        _check_nonempty(x)
        return _finite_float32(x, offset)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x = np.asarray(raw, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (x - np.float32(self.mean)) / np.float32(self.std)
        if model_shape is None or len(model_shape) == 2:  # (window, 1) per sample
            z = z[..., None]
        return z.astype(model_dtype, copy=False)

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float32) * np.float32(self.std) + np.float32(self.mean)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        z = g.node("Div", [g.node("Sub", [raw, g.const("mean", np.float32(self.mean))]),
                           g.const("std", np.float32(self.std))])
        if model_shape is None or len(model_shape) == 2:
            z = g.node("Unsqueeze", [z, g.const("axis", np.asarray([2], np.int64))])
        g.cast(z, model_dtype, out)

    def postprocess_onnx(self, g, y, out):
        y = g.cast(y, np.float32)
        g.node("Add", [g.node("Mul", [y, g.const("std", np.float32(self.std))]),
                       g.const("mean", np.float32(self.mean))], [out])


@register
@dataclass(frozen=True)
class Tokenize(Kind):
    """Text -> vocabulary ids (0 = ``<pad>``, 1 = ``<oov>``), truncated and right-padded to ``sequence_length``.

    Tokens are the matches of ``token_pattern`` in the text as given (leftmost,
    non-overlapping); with ``lowercase`` each token is then ASCII-lowercased.
    The portable graph computes the same with onnxruntime's ``Tokenizer``
    (com.microsoft, RE2), ``StringNormalizer`` (locale ``C``) and ``LabelEncoder``
    (ai.onnx.ml), which the Python, Node and web bindings all carry.
    """

    vocabulary: tuple[str, ...]
    sequence_length: int
    lowercase: bool = True
    token_pattern: str = TOKEN_PATTERN
    padding: str = "right"
    kind: ClassVar[str] = "tokenize"
    raw_name: ClassVar[str] = "text"

    @classmethod
    def fit(cls, texts: Sequence[str], vocabulary_size: int, sequence_length: int,
            lowercase: bool = True, token_pattern: str = TOKEN_PATTERN) -> "Tokenize":
        """Vocabulary = the most frequent training tokens (ties by text), after ``<pad>`` and ``<oov>``."""
        probe = cls((PAD, OOV), sequence_length, lowercase, token_pattern)
        counts: dict[str, int] = {}
        for text in texts:
            for tok in probe.tokens(text):
                counts[tok] = counts.get(tok, 0) + 1
        ranked = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        return cls((PAD, OOV, *ranked[: max(0, vocabulary_size - 2)]), sequence_length, lowercase, token_pattern)

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Tokenize":
        vocab = d.get("vocabulary")
        if not isinstance(vocab, (list, tuple)) or len(vocab) < 2 or not all(isinstance(v, str) for v in vocab):
            raise _err(where, "vocabulary must be a list of strings with '<pad>' at 0 and '<oov>' at 1")
        if len(set(vocab)) != len(vocab):
            raise _err(where, "vocabulary has duplicate tokens; each token needs one id")
        length = d.get("sequence_length")
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise _err(where, f"sequence_length = {length!r} (expected an integer >= 1)")
        pattern = d.get("token_pattern", TOKEN_PATTERN)
        if not isinstance(pattern, str):
            raise _err(where, f"token_pattern = {pattern!r} (expected a regex string)")
        lowercase = bool(d.get("lowercase", True))
        if lowercase and pattern == _LEGACY_TOKEN_PATTERN:
            pattern = TOKEN_PATTERN  # the same tokens on ASCII text, matched before lowercasing
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _err(where, f"token_pattern {pattern!r} is not a valid regex ({exc})") from None
        padding = d.get("padding", "right")
        if padding != "right":
            raise _err(where, f"padding = {padding!r} (expected 'right': token ids are right-padded with 0)")
        return cls(tuple(vocab), length, lowercase, pattern, padding)

    @property
    def _regex(self) -> "re.Pattern[str]":
        return _compiled(self.token_pattern)

    def tokens(self, text: str) -> list[str]:
        """The tokens of one text, before the vocabulary lookup."""
        toks = self._regex.findall(text)
        return [t.translate(_ASCII_LOWER) for t in toks] if self.lowercase else toks

    def raw_spec(self, model_shape, model_dtype):
        return "str", ()

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        if isinstance(raw, (str, bytes)):
            raise InputValidationError(f"received one string {raw[:40]!r} (expected a list of strings); "
                                       f"wrap it in a list: [text]")
        if isinstance(raw, np.ndarray):
            if raw.ndim != 1:
                raise InputValidationError(f"received an array of shape {raw.shape} (expected a 1-D list of strings)")
            if raw.dtype.kind == "U":
                if not raw.size:
                    raise InputValidationError("received an empty array (expected at least one string)")
                return raw.astype(object)
            raw = raw.tolist()
        if not isinstance(raw, (list, tuple)):
            raise InputValidationError(f"received {type(raw).__name__} (expected a list of strings)")
        if not raw:
            raise InputValidationError("received an empty list (expected at least one string)")
        for i, text in enumerate(raw):
            if type(text) is not str:
                if not isinstance(text, str):
                    raise InputValidationError(f"item {i + offset} is {type(text).__name__} {text!r:.40} "
                                               f"(expected a string)")
        out = np.empty(len(raw), dtype=object)
        out[:] = raw
        return out

    def apply(self, raw, model_dtype=np.int32, model_shape=None):
        index = {tok: i for i, tok in enumerate(self.vocabulary)}
        length = self.sequence_length
        out = np.zeros((len(raw), length), dtype=np.int64)
        for i, text in enumerate(raw):
            ids = [index.get(t, OOV_ID) for t in self.tokens(text)[:length]]
            out[i, : len(ids)] = ids
        return out.astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        pad = ""  # never a token (tokens have at least one character)
        tok = g.node("Tokenizer", [raw], domain="com.microsoft", mark=0, mincharnum=1, pad_value=pad,
                     tokenexp=self.token_pattern)
        if self.lowercase:
            # StringNormalizer takes 1-D input and refuses an empty one: flatten, append a sentinel, drop it after
            flat = g.node("Reshape", [tok, g.const("flat", np.asarray([-1], np.int64))])
            flat = g.node("Concat", [flat, g.const("sentinel", np.asarray(["x"], dtype=object))], axis=0)
            low = g.node("StringNormalizer", [flat], case_change_action="LOWER", locale="C")
            low = g.node("Slice", [low, g.const("zero", np.asarray([0], np.int64)),
                                   g.const("minus1", np.asarray([-1], np.int64)), g.const("axis0", np.asarray([0], np.int64))])
            tok = g.node("Reshape", [low, g.node("Shape", [tok])], allowzero=1)
        keys = [pad] + [t for t in self.vocabulary[2:]]
        ids = g.node("LabelEncoder", [tok], domain="ai.onnx.ml", keys_strings=keys,
                     values_int64s=[PAD_ID] + list(range(2, len(self.vocabulary))), default_int64=OOV_ID)
        n = self.sequence_length
        ids = g.node("Pad", [ids, g.const("pads", np.asarray([0, 0, 0, n], np.int64))])
        ids = g.node("Slice", [ids, g.const("zero", np.asarray([0], np.int64)), g.const("len", np.asarray([n], np.int64)),
                               g.const("axis1", np.asarray([1], np.int64))])
        g.cast(ids, model_dtype, out)


@register
@dataclass(frozen=True)
class NoPreprocessing(Kind):
    """Raw inputs are model inputs."""

    kind: ClassVar[str] = "none"

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "NoPreprocessing":
        return cls()

    def raw_spec(self, model_shape, model_dtype):
        return model_dtype, tuple(model_shape)

    def coerce(self, raw: Any, offset: int = 0, dtype: Any = np.float32,
               shape: Sequence[Any] | None = None, name: str = "inputs") -> np.ndarray:
        x = _numeric_array(raw, f"{name}: {_fmt_shape(shape or ())}")
        if shape is not None and not _shape_ok(x.shape[1:], shape):
            raise InputValidationError(f"input {name!r} has shape {x.shape} (expected {_fmt_shape(('n', *shape))})")
        _check_nonempty(x)
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            return _finite_float32(x, offset, dtype)
        if x.dtype.kind == "f":
            _check_finite(x, offset, f"input {name!r}")
            if not np.all(np.mod(x, 1) == 0):
                raise InputValidationError(f"input {name!r} has non-integer values (expected {dtype.name})")
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise InputValidationError(f"input {name!r} has values outside the {dtype.name} range")
        return x.astype(dtype, copy=False)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        return np.asarray(raw).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        g.node("Identity", [raw], [out])


Preprocessing = Kind


# --------------------------------------------------------------------------- task outputs (numpy definition)


def task_outputs(y: np.ndarray, task: str, labels: Sequence[str] | None, pre: Kind) -> dict[str, np.ndarray]:
    """The portable graph's outputs computed in numpy from the model's first output ``y``.

    Classifiers: ``probabilities`` float32 (n, C) (binary sigmoid: ``[1 - p, p]``),
    ``class_id`` int64 (n,) (binary: ``p >= 0.5``; multiclass: first argmax) and
    ``label`` (n,) strings (``labels[class_id]``, or the id as text without names).
    Regression: ``prediction`` float32 in target units, (n,) for one output unit.
    """
    y = np.asarray(y)
    n = y.shape[0]
    y = y.reshape(n, -1)
    if task == "regression":
        v = pre.postprocess(y.astype(np.float32, copy=False)).astype(np.float32, copy=False)
        return {"prediction": v[:, 0] if v.shape[1] == 1 else v}
    y = y.astype(np.float32, copy=False)
    if y.shape[1] == 1:  # one sigmoid unit = probability of class 1
        p = y[:, 0]
        probs = np.stack([np.float32(1.0) - p, p], axis=1)
        ids = (p >= np.float32(0.5)).astype(np.int64)
    else:
        probs = y
        ids = np.argmax(y, axis=1).astype(np.int64)
    names = np.asarray(class_names(labels, probs.shape[1]), dtype=object)
    return {"probabilities": probs, "class_id": ids, "label": names[ids]}


def class_names(labels: Sequence[str] | None, n_classes: int) -> list[str]:
    """Class names by id: the spec's labels, or the ids as text."""
    if labels is not None and len(labels) == n_classes:
        return [str(v) for v in labels]
    return [str(i) for i in range(n_classes)]


# --------------------------------------------------------------------------- validation helpers


def _err(where: str, msg: str) -> BundleError:
    return BundleError(f"{where}: {msg}")


def _floats(v: Any, where: str, key: str, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise _err(where, f"{key} = {v!r} (expected numbers)")
    out = tuple(float(x) for x in v)
    if n is not None and len(out) != n:
        raise _err(where, f"{key} has {len(out)} values (expected {n}, one per feature)")
    if not all(math.isfinite(x) for x in out):
        raise _err(where, f"{key} contains NaN or inf; retrain with finite data")
    if positive and any(x <= 0 for x in out):
        raise _err(where, f"{key} contains values <= 0 (expected std > 0); retrain or fix the record")
    return out


_REGEX_CACHE: dict[str, "re.Pattern[str]"] = {}


def _compiled(pattern: str) -> "re.Pattern[str]":
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def _target_shape(model_shape: Sequence[Any] | None, raw_shape: Sequence[int]) -> tuple[int, ...]:
    if model_shape and all(isinstance(d, int) and d > 0 for d in model_shape):
        return tuple(int(d) for d in model_shape)
    return tuple(raw_shape)


def _short(names: Sequence[str], k: int = 6) -> str:
    names = list(names)
    return str(names) if len(names) <= k else f"[{', '.join(map(repr, names[:k]))}, ... {len(names)} in all]"


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("n" if not isinstance(d, int) or d <= 0 else str(d) for d in shape) + ")"


def _shape_ok(got: Sequence[int], want: Sequence[Any]) -> bool:
    return len(got) == len(want) and all(not isinstance(w, int) or w <= 0 or g == w for g, w in zip(got, want))


def _numeric_array(raw: Any, expected: str | Callable[[], str]) -> np.ndarray:
    """``raw`` as a numeric ndarray; ``expected`` (text or a callable making it) is used in errors only."""
    if isinstance(raw, np.ndarray):
        x = raw
    else:
        if isinstance(raw, (str, bytes, Mapping)) or raw is None:
            raise InputValidationError(f"received {type(raw).__name__} (expected {_text(expected)})")
        try:
            x = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise InputValidationError(f"received a ragged or mixed sequence ({exc}) "
                                       f"(expected {_text(expected)})") from None
    if x.dtype.kind not in "iuf":
        raise InputValidationError(f"received dtype {x.dtype} (expected numbers: int or float; {_text(expected)})")
    if x.ndim == 0:
        raise InputValidationError(f"received a scalar (expected {_text(expected)})")
    return x


def _text(expected: str | Callable[[], str]) -> str:
    return expected() if callable(expected) else expected


def _check_nonempty(x: np.ndarray) -> None:
    if x.shape[0] == 0 or x.size == 0:
        raise InputValidationError(f"received an empty array of shape {x.shape} (expected at least one sample)")


def _check_finite(x: np.ndarray, offset: int, what: str) -> None:
    if x.dtype.kind != "f":
        return
    finite = np.isfinite(x)
    if not finite.all():
        flat = finite.reshape(x.shape[0], -1)
        row = int(np.flatnonzero(~flat.all(axis=1))[0])
        bad = x.reshape(x.shape[0], -1)[row][~flat[row]][0]
        raise InputValidationError(f"{what} row {row + offset} contains {bad} (expected finite numbers); "
                                   f"impute or drop rows with missing values before predicting")


def _finite_float32(x: np.ndarray, offset: int, dtype: Any = np.float32) -> np.ndarray:
    """``x`` as float32 (or ``dtype``), refusing NaN/inf and values that overflow it."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(dtype, copy=False)
        bad = not math.isfinite(float(np.add.reduce(out, axis=None, dtype=np.float64)))
    if bad:  # NaN/inf anywhere make the float64 sum non-finite: diagnose only then
        _check_finite(x, offset, "raw input")
        row = int(np.flatnonzero(~np.isfinite(out).reshape(out.shape[0], -1).all(axis=1))[0])
        raise InputValidationError(f"row {row + offset} overflows {np.dtype(dtype).name} (a value is too large; "
                                   f"expected magnitudes below {np.finfo(dtype).max:.3g})")
    return out

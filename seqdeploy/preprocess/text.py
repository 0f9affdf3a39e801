"""Text: ``tokenize`` (the in-graph tokenizer every onnxruntime binding runs alike)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seqdeploy.errors import InputValidationError
from seqdeploy.preprocess.base import Kind, register
from seqdeploy.preprocess.checks import (  # noqa: F401
    check_finite, check_nonempty, _compiled, _err, _finite_float32, _floats, fmt_shape, numeric_array,
    shape_ok, short_list, _target_shape,
)

#: vocabulary ids with a fixed meaning
PAD_ID, OOV_ID = 0, 1
PAD, OOV = "<pad>", "<oov>"
#: the default token pattern: runs of ASCII letters, digits and apostrophes (everything else separates).
#: Tokens are matched on the text as given and then ASCII-lowercased, which every onnxruntime binding
#: computes identically (Unicode case mapping differs between C libraries and locales).
TOKEN_PATTERN = "[A-Za-z0-9']+"
_LEGACY_TOKEN_PATTERN = "[a-z0-9']+"  # records before the portable graph: matched on lowercased text
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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
    #: the table column the texts came from in training (``seqdeploy predict`` reads the same column)
    column: str | None = None
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
        column = d.get("column")
        if column is not None and (not isinstance(column, str) or not column):
            raise _err(where, f"column = {column!r} (expected the name of the text column)")
        return cls(tuple(vocab), length, lowercase, pattern, padding, column)

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

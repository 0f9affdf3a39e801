"""The preprocessing registry and the base class every kind implements (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from seqdeploy.preprocess.checks import _err

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
        return KINDS["none"]()
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

    def raw_inputs(self, model_shape: Sequence[Any], model_dtype: str) -> list[tuple[str, str, tuple[Any, ...]]]:
        """Every raw input of the portable graph: ``(name, numpy dtype name or "str", shape without batch)``.

        One input (``raw_name``) unless a kind takes several (numeric and categorical columns).
        """
        return [(self.raw_name, *self.raw_spec(model_shape, model_dtype))]

    def feeds(self, x: Any, name: str | None = None) -> dict[str, np.ndarray]:
        """The coerced raw input as ``{raw input name: array}`` (``name`` overrides a single input's name)."""
        return {name or self.raw_name: x}

    @property
    def target_scale(self) -> float:
        """Size of one standard deviation of the regression target in its units (tolerances scale with it)."""
        return 1.0

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

"""What verify feeds a model: its declared inputs, user data checked against them, generated inputs.

A model trained in a notebook may take several inputs, variable-length axes (``Input(shape=(None,))``),
token ids or strings. :func:`input_specs` reads every input's name (the ONNX name export gives it),
shape, dtype and, for integer inputs, the id range (``input_dim`` of the ``Embedding`` the input feeds,
also inside a custom layer). :func:`check_data` turns user data (one array, or a mapping keyed by input
name) into one checked array per input. :func:`make_feeds` builds the feeds: the real samples at several
batch sizes, then random and edge inputs per input (ids within the vocabulary, padding patterns, zeros,
extremes), at a second length for every variable-length axis.

    >>> specs = input_specs(model)                                  # doctest: +SKIP
    >>> [(s.name, s.shape, s.dtype, s.id_range) for s in specs]     # doctest: +SKIP
    [('ids', (None,), 'int32', 2000)]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seqdeploy.errors import InputFileNotFound, VerifyInputError, first_line

DEFAULT_LENGTH = 12  # a variable-length axis without data to take its length from
FLOAT_EXTREME = 3.0  # generated float edges without data: +-3 (the tails of the seeded normal inputs)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: ``shape`` without the batch axis (None = any length); dtype a numpy name or "str"."""

    name: str
    shape: tuple
    dtype: str
    id_range: int | None = None  # integer inputs: ids must be < this (the largest Embedding input_dim it feeds)
    length_cap: int | None = None  # the smallest such input_dim (a position embedding bounds the length)

    @property
    def is_string(self) -> bool:
        return self.dtype in ("str", "string", "object")


def input_specs(model: Any) -> list[InputSpec]:
    """Every Keras input as an :class:`InputSpec`, named as the exported ONNX graph names it."""
    from seqdeploy.export.convert import keras_input_names

    specs = []
    for t, name in zip(model.inputs, keras_input_names(model)):
        shape = tuple(None if d is None or (isinstance(d, int) and d < 0) else int(d) for d in t.shape[1:])
        dtype = str(getattr(t.dtype, "name", t.dtype))
        dtype = "str" if dtype in ("string", "object") else str(np.dtype(dtype))
        dims = _embedding_dims(model, t) if np.dtype(dtype if dtype != "str" else object).kind in "iu" else []
        specs.append(InputSpec(name, shape, dtype, max(dims) if dims else None, min(dims) if dims else None))
    return specs


def _embedding_dims(model: Any, tensor: Any) -> list[int]:
    """``input_dim`` of the Embedding layers (also nested in custom layers) the input feeds directly."""
    import keras

    dims: list[int] = []
    for layer in getattr(model, "layers", []):
        try:
            inp = layer.input
        except (AttributeError, ValueError):  # shared layers have no single input
            continue
        flat = keras.tree.flatten(inp) if not isinstance(inp, list) else list(inp)
        if not any(x is tensor for x in flat):
            continue
        dims += [int(e.input_dim) for e in _walk_layers(layer, keras) if isinstance(e, keras.layers.Embedding)]
    return dims


def _walk_layers(layer: Any, keras: Any, depth: int = 0) -> list[Any]:
    out = [layer]
    if depth > 3:
        return out
    for v in vars(layer).values():
        items = v if isinstance(v, (list, tuple)) else [v]
        for item in items:
            if isinstance(item, keras.layers.Layer) and item is not layer:
                out += _walk_layers(item, keras, depth + 1)
    return out


def check_data(data: Any, specs: Sequence[InputSpec], where: str = "the data") -> dict[str, np.ndarray]:
    """User data -> ``{input name: array}``, checked against ``specs`` (names, ranks, fixed axes, rows, dtypes)."""
    names = [s.name for s in specs]
    if isinstance(data, Mapping):
        items = dict(data)
        if len(specs) == 1 and len(items) == 1 and names[0] not in items:
            items = {names[0]: next(iter(items.values()))}  # one input: its one array, whatever its key
        missing = [n for n in names if n not in items]
        if missing:
            raise VerifyInputError(f"{where} has no array for input(s) {missing} (it has {sorted(items)}); "
                                   f"key the arrays by the model's input names {names}")
    else:
        if len(specs) != 1:
            raise VerifyInputError(f"{where} is one array but the model has inputs {names}; pass one array per "
                                   "input keyed by input name (an .npz file, or table columns named like the inputs)")
        items = {names[0]: data}
    out: dict[str, np.ndarray] = {}
    rows = None
    for s in specs:
        x = np.asarray(items[s.name])
        if x.ndim == len(s.shape) and all(d is None or d == got for d, got in zip(s.shape, x.shape)):
            x = x[None]  # one sample without its batch axis
        if x.ndim != len(s.shape) + 1 or any(d is not None and d != got for d, got in zip(s.shape, x.shape[1:])):
            shape = ["any" if d is None else d for d in s.shape]
            raise VerifyInputError(f"{where}: input {s.name!r} samples have shape {list(x.shape[1:])}; the model "
                                   f"expects {shape} ('any' = any length); pass model-ready inputs")
        if len(x) == 0:
            raise VerifyInputError(f"{where}: input {s.name!r} has no samples; expected at least one")
        if rows is not None and len(x) != rows:
            raise VerifyInputError(f"{where}: input {s.name!r} has {len(x)} rows, the other inputs {rows}; "
                                   "give every input the same rows")
        rows = len(x)
        out[s.name] = _cast(x, s, where)
    return out


def _cast(x: np.ndarray, s: InputSpec, where: str) -> np.ndarray:
    if s.is_string:
        if x.dtype.kind not in "OUS":
            raise VerifyInputError(f"{where}: input {s.name!r} is text but the data holds {x.dtype} values")
        return x.astype(object)
    if x.dtype.kind not in "biuf":
        raise VerifyInputError(f"{where}: input {s.name!r} expects {s.dtype} numbers, the data holds "
                               f"{x.dtype} values; pass numeric model-ready inputs")
    kind = np.dtype(s.dtype).kind
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise VerifyInputError(f"{where}: input {s.name!r} contains NaN or inf values; verify needs finite "
                               "inputs (clean the data or drop those rows)")
    if kind in "iu" and x.dtype.kind == "f" and not np.all(np.mod(x, 1) == 0):
        raise VerifyInputError(f"{where}: input {s.name!r} expects integer ids ({s.dtype}), the data has "
                               "fractional values")
    if kind in "iu" and s.id_range is not None and x.size and (x.min() < 0 or x.max() >= s.id_range):
        raise VerifyInputError(f"{where}: input {s.name!r} has ids in [{int(x.min())}, {int(x.max())}] but its "
                               f"Embedding takes ids in [0, {s.id_range - 1}]")
    return x.astype(s.dtype)


def load_data_file(path: str | Path) -> np.ndarray | dict[str, np.ndarray]:
    """Model-ready inputs from a file: .npy (one input), .npz (arrays keyed by input name; 'x' for one
    input), or a numeric .csv (one input, a header row)."""
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"data file {str(path)!r} does not exist; expected .npy, .npz or .csv model inputs")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if path.suffix == ".csv":
            return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    except (ValueError, OSError) as exc:
        raise VerifyInputError(f"data file {path}: unreadable ({first_line(exc, limit=300)}); expected numeric "
                               "model inputs") from None
    raise VerifyInputError(f"data file {path}: unsupported type {path.suffix!r}; expected .npy, .npz or .csv")


Feed = tuple[str, dict[str, np.ndarray]]


def make_feeds(real: Mapping[str, np.ndarray] | None, train: Mapping[str, np.ndarray] | None,
               specs: Sequence[InputSpec], samples: int, training_batch: int = 32,
               vocab: int | None = None) -> list[Feed]:
    """Real samples at batch sizes n, 1, 7 and 2 * training batch + 1; then generated inputs."""
    strings = [s.name for s in specs if s.is_string]
    if strings and real is None:
        raise VerifyInputError(f"input(s) {strings} take text, which verify cannot make up; pass samples")
    rng = np.random.default_rng(0)
    feeds: list[Feed] = []
    odd_large = training_batch * 2 + 1
    if real is not None:
        feeds.append(("real", dict(real)))
        for b in (1, 7, odd_large):
            feeds.append((f"real[b={b}]" if b != 1 else "real[b=1]",
                          {k: np.resize(v, (b, *v.shape[1:])) if b > 1 else v[:1] for k, v in real.items()}))
    if strings:
        return feeds
    n = min(samples, 64)
    ref = train if train is not None else real
    lengths = _lengths(specs, real)
    generated = [_generate(specs, ref, rng, n, lengths, vocab)]
    if any(None in s.shape for s in specs):  # a second length for every variable-length axis
        short = {k: tuple(max(1, d // 2 + 1) if s is None else d for d, s in zip(v, sp.shape))
                 for (k, v), sp in zip(lengths.items(), specs)}
        if short != lengths:
            generated.append([(f"{kind}[len={_len_text(short)}]", f)
                              for kind, f in _generate(specs, ref, rng, min(n, 9), short, vocab)])
    for group in generated:
        feeds.extend(group)
    if real is None:  # batch sizes on generated inputs too (the dynamic batch axis)
        base = generated[0][0][1]
        feeds.append(("random[b=1]", {k: v[:1] for k, v in base.items()}))
        feeds.append(("random[b=7]", {k: np.resize(v, (7, *v.shape[1:])) for k, v in base.items()}))
    return feeds


def _len_text(lengths: Mapping[str, tuple]) -> str:
    return ",".join(str(d) for v in lengths.values() for d in v)


def _lengths(specs: Sequence[InputSpec], real: Mapping[str, np.ndarray] | None) -> dict[str, tuple]:
    """Concrete per-sample shapes: the data's where there is data, else the declared ones (any length ->
    :data:`DEFAULT_LENGTH`, at most the smallest Embedding range so that position embeddings fit)."""
    out = {}
    for s in specs:
        if real is not None:
            out[s.name] = tuple(real[s.name].shape[1:])
        else:
            cap = DEFAULT_LENGTH if s.length_cap is None else max(1, min(DEFAULT_LENGTH, s.length_cap))
            out[s.name] = tuple(cap if d is None else d for d in s.shape)
    return out


def _generate(specs: Sequence[InputSpec], ref: Mapping[str, np.ndarray] | None, rng: Any, n: int,
              lengths: Mapping[str, tuple], vocab: int | None) -> list[Feed]:
    """random and edge feeds, each with one array per input (the same kinds for every input)."""
    per_input: list[list[tuple[str, np.ndarray]]] = []
    for s in specs:
        shape = lengths[s.name]
        r = ref.get(s.name) if ref is not None else None
        if r is not None and tuple(r.shape[1:]) != shape:
            r = None  # statistics per position only apply at the data's own length
        per_input.append(_generate_one(s, shape, r, rng, n, vocab))
    kinds = [k for k, _ in per_input[0]]
    return [(kind, {s.name: arrays[i][1] for s, arrays in zip(specs, per_input)}) for i, kind in enumerate(kinds)]


def _generate_one(s: InputSpec, shape: tuple, ref: np.ndarray | None, rng: Any, n: int,
                  vocab: int | None) -> list[tuple[str, np.ndarray]]:
    dtype = np.dtype(s.dtype)
    if dtype.kind in "iu" or dtype.kind == "b":
        hi = s.id_range or vocab or (int(ref.max()) + 1 if ref is not None else 10)
        hi = max(hi, 2)
        ids = rng.integers(1, hi, size=(n, *shape)).astype(dtype)
        if len(shape) == 1 and shape[0] > 1:  # token ids: right-padded, like real text
            lengths = rng.integers(1, shape[0] + 1, size=n)
            ids[np.arange(shape[0])[None, :] >= lengths[:, None]] = 0
        out = [("random", ids)]
        out += _padding_probes(ids, rng) if len(shape) >= 1 else [("edge:left-padded", ids), ("edge:holes", ids)]
        out.append(("edge:vocab-max", np.full((3, *shape), hi - 1, dtype)))
        out.append(("edge:vocab-min", np.full((3, *shape), 1, dtype)))
        out.append(("edge:zeros", np.zeros((3, *shape), dtype)))
        return out
    if ref is not None:
        lo, hi = ref.min(axis=0), ref.max(axis=0)
        random = rng.uniform(lo, hi, size=(n, *shape)).astype(dtype)
    else:
        lo, hi = np.full(shape, -FLOAT_EXTREME), np.full(shape, FLOAT_EXTREME)
        random = rng.standard_normal((n, *shape)).astype(dtype)
    out = [("random", random)]
    out += _padding_probes(random, rng) if len(shape) == 2 else [("edge:left-padded", random), ("edge:holes", random)]
    edge = "edge:train-" if ref is not None else "edge:"
    out.append((edge + "max", np.broadcast_to(hi, (3, *shape)).astype(dtype)))
    out.append((edge + "min", np.broadcast_to(lo, (3, *shape)).astype(dtype)))
    out.append(("edge:zeros", np.zeros((3, *shape), dtype)))
    return out


def _padding_probes(x: np.ndarray, rng: Any) -> list[tuple[str, np.ndarray]]:
    """Sequences padded on the LEFT (``pad_sequences`` default) and with holes (padding inside a
    sequence, one all-padding row): masks of every pattern must match Keras, not only right padding."""
    steps = x.shape[1]
    pad = np.zeros_like(x[0, 0])
    lengths = rng.integers(1, steps + 1, size=len(x))
    left = np.empty_like(x)
    for i, k in enumerate(lengths):
        left[i, : steps - k] = pad
        left[i, steps - k:] = x[i, :k]
    holes = x.copy()
    holes[rng.random(x.shape[:2]) < 0.3] = pad
    holes[0] = pad
    return [("edge:left-padded", left), ("edge:holes", holes)]

"""QuantizeSettings: everything ``quantize_model`` needs besides data, and the checks the recipe settings share.

The recipe-specific parts come from the recipe registry (:mod:`seqdeploy.quantize.recipes`): the
modes ``mode`` accepts, and one keyword per recipe (its ``override_field``: ``static=``, ``dynamic=``,
``qgemm=``, ``fp16=`` for the built-in ones) that takes a full settings object for that recipe, read
back as ``settings.<field>`` or ``settings.<field>_settings()``. A new recipe file gets all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Literal, Mapping

from seqdeploy.errors import QuantizeError

Task = Literal["binary", "multiclass", "regression"]
Mode = str  # "auto" or a registered recipe's mode (modes())
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]
QuantTypeName = Literal["int8", "uint8"]

TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
QUANT_TYPES: tuple[str, ...] = ("int8", "uint8")
RecipeSettings = Any  # the settings dataclass of a recipe (seqdeploy.quantize.recipes)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise QuantizeError(f"{name} = {value!r} (expected one of {', '.join(choices)}); pick one of those")


def check_nodes(name: str, nodes: Any) -> None:
    if not isinstance(nodes, tuple) or not all(isinstance(n, str) for n in nodes):
        raise QuantizeError(f"{name} = {nodes!r} (expected a tuple of node-name strings); pass e.g. ('dense/MatMul',)")


def check_calibration(settings: Any) -> None:
    """The calibration fields the static recipes share: method, sample and batch counts, percentile."""
    check_choice("calibration_method", settings.calibration_method, CALIBRATION_METHODS)
    for name in ("calibration_samples", "calibration_batch_size"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QuantizeError(f"{name} = {value!r} (expected an integer >= 1); e.g. {name}=256")
    p = settings.percentile
    if not (isinstance(p, (int, float)) and 50.0 < float(p) <= 100.0):
        raise QuantizeError(f"percentile = {p!r} (expected 50 < p <= 100); e.g. 99.999")


_check_choice, _check_nodes, _check_calibration = check_choice, check_nodes, check_calibration  # names inside this package


def modes() -> tuple[str, ...]:
    """``auto`` and the mode of every registered recipe.

        >>> modes()
        ('auto', 'static', 'dynamic', 'qgemm', 'fp16')
    """
    from seqdeploy.quantize.recipes import recipes

    return ("auto",) + tuple(r.mode for r in recipes().values())


@dataclass(frozen=True)
class QuantizeSettings:
    """Everything ``quantize_model`` needs besides data.

    ``calibration_samples``, ``calibration_method`` and ``per_channel`` fill the
    recipe settings unless a full settings object is given for a recipe: by its keyword (the recipe's
    ``override_field``: ``static=``, ``dynamic=``, ``qgemm=``, ``fp16=``, and that of any recipe added
    later) or in ``overrides`` (recipe name -> settings object). ``per_channel=None`` keeps each recipe's default
    (static: per channel, dynamic: per tensor; qgemm is always per tensor).

    ``min_speedup`` is the smallest accepted gain (0.05 = 5 % faster);
    ``noise_multiplier`` scales the measured noise that the gain must also beat.
    ``exclude_worst_layers`` nodes are left in float32 on the automatic retry
    (0 disables diagnosis and retry).

        >>> QuantizeSettings(mode="static", max_metric_drop=0.005).mode
        'static'
    """

    mode: Mode = "auto"
    max_metric_drop: float = 0.01
    calibration_samples: int = 256
    calibration_method: CalibrationMethodName = "minmax"
    per_channel: bool | None = None
    reduce_range: bool | None = None
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    latency_rounds: int = 7
    latency_round_seconds: float = 0.2
    latency_warmup: int = 5
    latency_min_calls: int = 10
    min_speedup: float = 0.05
    noise_multiplier: float = 1.0
    intra_op_num_threads: int | None = None
    exclude_worst_layers: int = 2
    diagnosis_samples: int = 64
    seed: int = 0
    #: (recipe name, full settings object) of each recipe given one, in registry order (a mapping is accepted)
    overrides: Any = ()

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, modes())
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        drop = self.max_metric_drop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not math.isfinite(drop) or drop < 0:
            raise QuantizeError(
                f"max_metric_drop = {drop!r} (expected a finite number >= 0: 0.01 = one accuracy point, "
                "or a 1 % relative MAE increase for regression); set e.g. max_metric_drop = 0.01"
            )
        for name, low in (("calibration_samples", 1), ("latency_rounds", 2), ("latency_warmup", 0),
                          ("exclude_worst_layers", 0), ("diagnosis_samples", 1), ("latency_min_calls", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise QuantizeError(f"{name} = {value!r} (expected an integer >= {low}); e.g. {name}={max(low, 3)}")
        sizes = self.latency_batch_sizes
        if (not isinstance(sizes, tuple) or not sizes
                or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes)):
            raise QuantizeError(f"latency_batch_sizes = {sizes!r} (expected a non-empty tuple of integers >= 1); e.g. (1, 64)")
        for name in ("latency_round_seconds", "min_speedup", "noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise QuantizeError(f"{name} = {value!r} (expected a finite number >= 0)")
        if self.intra_op_num_threads is not None and (not isinstance(self.intra_op_num_threads, int) or self.intra_op_num_threads < 1):
            raise QuantizeError(f"intra_op_num_threads = {self.intra_op_num_threads!r} (expected None for the onnxruntime default, or an integer >= 1)")
        from seqdeploy.quantize.recipes import recipes

        known = recipes()
        given = _as_dict(self.overrides)
        for name, value in given.items():
            r = known.get(name)
            if r is None:
                raise QuantizeError(f"overrides[{name!r}] (expected a recipe name: one of {', '.join(known)})")
            if value is not None and not isinstance(value, r.settings_type):
                field = r.override_field or f"overrides[{name!r}]"
                raise QuantizeError(f"{field} = {value!r} (expected a {r.settings_type.__name__} or None)")
        object.__setattr__(self, "overrides", tuple((n, given[n]) for n in known if given.get(n) is not None))

    def override(self, recipe: str) -> "RecipeSettings | None":
        """The full settings object given for ``recipe`` (None: its defaults are filled from these settings)."""
        return dict(self.overrides).get(recipe)

    def __getattr__(self, name: str) -> Any:
        # settings.<override_field> and settings.<override_field>_settings() of every registered recipe
        if name.startswith("_"):
            raise AttributeError(name)
        recipe = _recipe_by_field(name.removesuffix("_settings"))
        if recipe is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name.endswith("_settings"):
            return lambda: self.recipe_settings(recipe)
        return self.override(recipe)

    def effective_reduce_range(self) -> bool:
        """``reduce_range`` as given, else :func:`default_reduce_range` for this CPU."""
        return default_reduce_range() if self.reduce_range is None else bool(self.reduce_range)

    def recipe_settings(self, recipe: str) -> "RecipeSettings":
        """The settings ``recipe`` runs with: the full object given for it, else its defaults filled from these."""
        from seqdeploy.quantize.recipes import get_recipe

        return get_recipe(recipe).settings_for(self)


def _as_dict(overrides: Any) -> dict[str, Any]:
    return dict(overrides.items() if isinstance(overrides, Mapping) else overrides or ())


def _recipe_by_field(field: str) -> str | None:
    """The name of the recipe whose ``override_field`` is ``field``."""
    from seqdeploy.quantize.recipes import recipes

    return next((name for name, r in recipes().items() if r.override_field and r.override_field == field), None)


_FIELDS = frozenset(f.name for f in fields(QuantizeSettings))
_dataclass_init: Callable[..., None] = QuantizeSettings.__init__


def _init(self: QuantizeSettings, *args: Any, **kwargs: Any) -> None:
    """The dataclass's ``__init__``, plus one keyword per registered recipe (its ``override_field``)."""
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in _FIELDS}
    if extra:
        given = _as_dict(kwargs.get("overrides", ()))
        for key, value in extra.items():
            recipe = _recipe_by_field(key)
            if recipe is None:
                raise TypeError(f"QuantizeSettings() got an unexpected keyword argument {key!r}")
            if value is not None:
                given[recipe] = value
        kwargs["overrides"] = given
    _dataclass_init(self, *args, **kwargs)


_init.__doc__ = _dataclass_init.__doc__
QuantizeSettings.__init__ = _init  # type: ignore[method-assign]


def default_reduce_range(cpuinfo: str | None = None) -> bool:
    """7-bit weights on x86 CPUs without VNNI/AMX, 8-bit elsewhere.

    Without VNNI onnxruntime's int8 GEMM/Conv kernels use ``vpmaddubsw``, whose
    16-bit intermediate sums saturate with full-range weights. Measured on the
    AVX2 build machine: static QDQ on the 32/64/128 conv net lost 5.8 accuracy
    points with 8-bit weights and none with ``reduce_range``, at the same speed.

        >>> default_reduce_range("flags : avx2 avx512_vnni")
        False
    """
    import platform

    from seqdeploy.cpu import cpu_flags

    flags = cpu_flags(cpuinfo)
    if not any(flags.values()) or (cpuinfo is None and platform.machine().lower() not in ("x86_64", "amd64")):
        return False
    return not (flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"))


def default_pad_input_channels(cpuinfo: str | None = None) -> bool:
    """Pad the input channels of a first Conv to a multiple of 4 on x86 CPUs with VNNI/AMX.

    onnxruntime's VNNI int8 convolution (MLAS ``ConvSym``, indirect conv) needs input channels
    divisible by 4; an RGB (3-channel) first layer otherwise runs as im2col + a K=27 GEMM.
    Measured on an AVX-512 VNNI EPYC (onnxruntime 1.32), 32/64/128 conv net on 32x32x3: that
    first QLinearConv cost 37 of 97 us at batch 1; padded, the whole model ran 17 % faster at
    batch 1 and 10-17 % at batch 64. Not measured on AVX2-only or ARM CPUs: off there.
    The same rule turns on the int8-static recipe's ``unfold_input_conv`` (a one-channel first Conv as a
    float tap-copying Conv + a 1 x 1 int8 Conv; measured in benchmarks/conv_int8_zoo.py).

        >>> default_pad_input_channels("flags : avx2 avx512_vnni")
        True
        >>> default_pad_input_channels("flags : avx2 fma")
        False
    """
    import platform

    from seqdeploy.cpu import cpu_flags

    flags = cpu_flags(cpuinfo)
    if cpuinfo is None and platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return bool(flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"))


def default_activation_type(cpuinfo: str | None = None) -> str:
    """Static int8's activation type: ``uint8`` on x86 CPUs with VNNI/AMX, else ``int8``.

    VNNI's int8 dot product (``vpdpbusd``) multiplies unsigned by signed bytes: onnxruntime's u8s8 kernels
    run it directly, s8s8 does not. Measured on an AVX-512 VNNI EPYC (onnxruntime 1.32, QDQ per channel, one
    thread, benchmarks/real_zoo.py's models): uint8 activations ran the Xception-like CNN 1.56x faster than
    float32 at batch 1 where int8 ran 0.8x, and 1.9x vs 1.0x at batch 32; the FCN Conv1D net 12 % and MNIST
    convnet 15-30 % faster than with int8; same answers on the test rows. Without VNNI (AVX2's ``vpmaddubsw``
    saturates u8s8 sums) and on ARM: int8.

        >>> default_activation_type("flags : avx2 avx512_vnni")
        'uint8'
        >>> default_activation_type("flags : avx2 fma")
        'int8'
    """
    return "uint8" if default_pad_input_channels(cpuinfo) else "int8"


__all__ = ["CALIBRATION_METHODS", "QUANT_TYPES", "TASKS", "QuantizeSettings", "check_calibration", "check_choice",
           "check_nodes", "default_activation_type", "default_pad_input_channels", "default_reduce_range", "modes"]

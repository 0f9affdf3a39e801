"""Custom Keras objects a saved model needs: import them from a Python file or module.

A model trained in a notebook often uses its own layers (``class TransformerBlock(keras.layers.Layer)``)
or functions (a custom activation). Loading the ``.keras`` file needs those definitions: pass the file
(or importable module) that defines them, and :func:`load_custom_objects` imports it and collects

* every object registered with ``@keras.saving.register_keras_serializable`` while it was imported
  (under its registered name, e.g. ``"demo>TokenAndPositionEmbedding"``, and under its class name);
* every ``keras.layers.Layer`` / ``keras.Model`` subclass, ``keras.losses.Loss`` / ``metrics.Metric`` /
  ``initializers`` / ``regularizers`` / ``constraints`` subclass and every plain function *defined* in it
  (not merely imported into it), under its own name.

:func:`missing_object` reads Keras's load error (whose first line is a generic "could not be
deserialized") and names the class or function that was not found.

    >>> objs = load_custom_objects(["my_layers.py"])  # doctest: +SKIP
    >>> sorted(objs)                                   # doctest: +SKIP
    ['TokenAndPositionEmbedding', 'TransformerBlock', 'demo>TokenAndPositionEmbedding', ...]
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from seqdeploy.errors import InputFileNotFound, ModelLoadError, first_line

__all__ = ["load_custom_objects", "custom_objects_scope", "missing_object", "custom_objects_hint"]

_MISSING = re.compile(r"Could not locate (class|function) '([^']+)'")
_UNKNOWN = re.compile(r"Unknown (layer|activation|loss|metric|initializer|regularizer|constraint|object)[^:]*:\s*'?([\w>.]+)'?")


def _keras_bases() -> tuple[type, ...]:
    import keras

    return (keras.layers.Layer, keras.Model, keras.losses.Loss, keras.metrics.Metric,
            keras.initializers.Initializer, keras.regularizers.Regularizer, keras.constraints.Constraint)


def _import(source: str | Path) -> Any:
    """Import a ``.py`` file (by path) or a module (by dotted name); errors name the source and the fix."""
    text = str(source)
    path = Path(text)
    if text.endswith(".py") or path.is_file():
        if not path.is_file():
            raise InputFileNotFound(f"custom objects file {text!r} does not exist; expected a .py file that "
                                    "defines the model's custom layers or functions, or an importable module name")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"seqdeploy_custom_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"custom objects file {text}: cannot be imported as Python; expected a .py file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - user code: any error, even SystemExit, is reported
            sys.modules.pop(name, None)
            line = _user_line(exc, path)
            raise ModelLoadError(f"custom objects file {text}{line} raised {type(exc).__name__}: "
                                 f"{first_line(exc, limit=300)}; fix the file so that `python {path.name}` "
                                 "runs without errors") from None
        return module
    try:
        return importlib.import_module(text)
    except ModuleNotFoundError as exc:
        if exc.name and text.startswith(exc.name):
            raise InputFileNotFound(f"custom objects module {text!r} is not importable (no module {exc.name!r}); "
                                    "expected a .py file path or a module on the Python path") from None
        raise ModelLoadError(f"custom objects module {text} raised ModuleNotFoundError: {exc}; install the "
                             "missing package") from None
    except BaseException as exc:  # noqa: BLE001 - user code
        raise ModelLoadError(f"custom objects module {text} raised {type(exc).__name__}: "
                             f"{first_line(exc, limit=300)}; fix the module so that it imports") from None


def _user_line(exc: BaseException, path: Path) -> str:
    """``:LINE`` of the deepest traceback frame inside the user's file (empty when there is none)."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    return f":{line}" if line else ""


def load_custom_objects(sources: Iterable[str | Path] | None) -> dict[str, Any]:
    """Import each file/module in ``sources`` and return the Keras custom objects they define (name -> object)."""
    sources = [s for s in (sources or []) if str(s)]
    if not sources:
        return {}
    import keras

    registry = keras.saving.get_custom_objects()
    out: dict[str, Any] = {}
    bases = _keras_bases()
    for source in sources:
        before = dict(registry)
        module = _import(source)
        for key, obj in registry.items():  # registered while importing (or earlier, by the same module)
            if before.get(key) is not obj or getattr(obj, "__module__", None) == module.__name__:
                out[key] = obj
                out.setdefault(getattr(obj, "__name__", key.rpartition(">")[2]), obj)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__ or name.startswith("_"):
                continue  # imported into the file, not defined there
            if inspect.isclass(obj) and issubclass(obj, bases):
                out.setdefault(name, obj)
            elif inspect.isfunction(obj):
                out.setdefault(name, obj)
    return out


def missing_object(message: str) -> tuple[str, str] | None:
    """``("class", "TransformerBlock")`` from Keras's load error text, or None when it names nothing."""
    m = _MISSING.search(message)
    if m:
        return m.group(1), m.group(2)
    m = _UNKNOWN.search(message)
    if m:
        return m.group(1), m.group(2)
    return None


def unresolved_classes(config: Any, custom_objects: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(class name, layer name) of every non-Keras class in a saved model config that neither
    ``custom_objects`` nor Keras's registry provides."""
    import keras

    known = set(keras.saving.get_custom_objects()) | set(custom_objects or {})
    found: list[tuple[str, str]] = []

    def walk(c: Any) -> None:
        if isinstance(c, dict):
            module = str(c.get("module") or "")
            cls, reg = c.get("class_name"), c.get("registered_name")
            if isinstance(cls, str) and module and not module.startswith("keras") and cls not in known \
                    and reg not in known and isinstance(c.get("config"), dict):
                found.append((cls, str(c["config"].get("name", "?"))))
            for v in c.values():
                walk(v)
        elif isinstance(c, list):
            for v in c:
                walk(v)

    walk(config)
    return list(dict.fromkeys(found))


def custom_objects_hint(message: str, config: Any = None, custom_objects: dict[str, Any] | None = None) -> str | None:
    """One sentence naming what Keras could not find (every such class when the config shows them) and how
    to provide it; None when the error names nothing."""
    found = missing_object(message)
    if found is None:
        return None
    kind, name = found
    missing = unresolved_classes(config, custom_objects) if config is not None else []
    if kind == "class" and missing:
        what = ", ".join(f"{c!r} (layer {n!r})" for c, n in missing)
        return (f"the model uses custom class{'es' if len(missing) > 1 else ''} {what}, not defined here; pass "
                "the Python file or module that defines them as custom objects")
    return (f"the model uses the custom {kind} {name!r}, which is not defined here; pass the Python file "
            f"or module that defines it as custom objects")


@contextlib.contextmanager
def custom_objects_scope(sources: Iterable[str | Path] | None) -> Iterator[dict[str, Any]]:
    """:func:`load_custom_objects`, known to every Keras load inside the ``with`` block (Keras's
    ``custom_object_scope``), so that stages loading the model by path find them too."""
    objs = load_custom_objects(sources)
    if not objs:
        yield objs
        return
    import keras

    with keras.saving.custom_object_scope(objs):
        yield objs

"""onnxruntime runners: every ONNX artifact as a plain ``session.run`` (``ort:<precision>``), and the
deployed artifact through ``seqdeploy.runtime.predictor`` the way an application calls it (``deployed:<precision>``).

Every session comes from :func:`seqdeploy.runtime.session.make_session`: with :class:`OrtSettings` (a
:class:`~seqdeploy.runtime.session.SessionSettings` plus how the runners call and cache) for the plain runners,
with the runtime's own settings for the deployed artifact.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from seqdeploy.layout import MANIFEST_FILE
from seqdeploy.bench.runners import BuildContext, Family, Reference, register
from seqdeploy.errors import BenchError, InputValidationError
from seqdeploy.runtime.session import ORT_TYPES, SessionSettings, make_session


def graph_libraries(path: str | os.PathLike) -> list[str]:
    """The custom-op libraries a plain session of the ONNX file at ``path`` needs (onnxruntime-extensions for a
    ``TextVectorization``'s ``ai.onnx.contrib`` string ops; none for core + ``ai.onnx.ml`` graphs), from its
    opset imports, as an application registers them (``SessionOptions.register_custom_ops_library``)."""
    from seqdeploy.runtime.extensions import LIBRARIES, library_paths

    try:
        import onnx
    except ImportError:  # a runtime-only install: no graph to read (onnxruntime then names the missing op)
        return []
    if not Path(path).is_file():
        return []  # make_session reports the missing file
    model = onnx.load(str(path), load_external_data=False)
    return library_paths([o.domain for o in model.opset_import if o.domain in LIBRARIES], str(path))


@dataclass(frozen=True)
class OrtSettings(SessionSettings):
    """The ONNX runners' settings: the session settings (their ``threads`` is replaced by each measured thread
    count) plus how the runners call and cache (defaults: see benchmarks/README.md).

    ``per_call`` is ``"run"`` (plain ``session.run``, what Predictor users pay) or
    ``"iobinding"`` (inputs bound per call, outputs written into pre-allocated buffers, copied out).
    ``cache_dir`` keeps the optimized graph on disk (``make_session(cache_dir=...)``) keyed by
    the model's sha256, ORT version and level; later sessions load it with optimizations off.
    ``deployed_fastpaths`` adds a deployed runner per named per-call path of
    :mod:`seqdeploy.runtime.fastpath` besides the default one (e.g. ``("capi",)`` gives ``deployed-capi:<precision>``).

    >>> OrtSettings().per_call, OrtSettings().graph_optimization
    ('run', 'all')
    """

    per_call: str = "run"
    cache_dir: str | None = None
    deployed_fastpaths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from seqdeploy.runtime.fastpath import FASTPATHS

        try:
            super().__post_init__()
        except InputValidationError as exc:
            raise BenchError(str(exc)) from None
        bad = [f for f in self.deployed_fastpaths if f not in FASTPATHS]
        if bad:
            raise BenchError(f"deployed_fastpaths = {list(self.deployed_fastpaths)} (expected names from "
                             f"{', '.join(FASTPATHS)})")
        if self.per_call not in ("iobinding", "run"):
            raise BenchError(f"per_call = {self.per_call!r} (expected 'iobinding' or 'run')")

    def to_record(self) -> dict[str, Any]:
        """Every field but ``threads`` (the thread counts are the benchmark's own setting)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "threads"}


class OrtRunner:
    """onnxruntime on one ONNX artifact.

    >>> r = OrtRunner("runs/x/model.onnx", precision="fp32")   # doctest: +SKIP
    >>> r.prepare(1); r.set_batch(1); r.infer({"features": x})  # doctest: +SKIP
    """

    family = "onnxruntime"

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", *, settings: OrtSettings = OrtSettings(),
                 deployed: bool = False, session_factory: Callable[[Path, int], Any] | None = None,
                 name: str | None = None):
        self.path = Path(path)
        self.precision = precision
        self.name = name or f"ort:{precision}"
        self.artifact = str(self.path)
        self.artifact_bytes = self.path.stat().st_size if self.path.exists() else None
        self.deployed = deployed
        self.threads_apply = True
        self.settings = settings
        self.notes: list[str] = []
        self._factory = session_factory
        self._sess: Any = None
        self._binding: Any = None
        self._out_bufs: list[np.ndarray] = []
        self._out_names: list[str] = []
        self._in: list[tuple[str, Any]] = []
        self._per_call = settings.per_call
        self._fixed_batch: int | None = None
        self._ready_feeds: Any = None  # the last feeds dict that needed no conversion (reused as is)

    @property
    def session(self) -> Any:
        return self._sess

    @property
    def inputs(self) -> list[Any]:
        return self._sess.get_inputs()

    @property
    def outputs(self) -> list[Any]:
        return self._sess.get_outputs()

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self._in]

    @property
    def output_names(self) -> list[str]:
        return list(self._out_names)

    def prepare(self, threads: int | None) -> None:
        """Create the session with ``threads`` intra-op threads (None: the settings' own count)."""
        self.close()
        if self._factory is not None:
            self._sess = self._factory(self.path, threads)
        else:
            self._sess = make_session(self.path, self.settings, threads=threads, cache_dir=self.settings.cache_dir,
                                      custom_ops_libraries=graph_libraries(self.path))
        self._describe()

    def _describe(self) -> None:
        self._in = [(i.name, ORT_TYPES.get(i.type, np.float32)) for i in self._sess.get_inputs()]
        self._out_names = [o.name for o in self._sess.get_outputs()]
        first = self._sess.get_inputs()[0].shape
        self._fixed_batch = first[0] if first and isinstance(first[0], int) else None

    def set_batch(self, batch: int) -> str | None:
        if self._fixed_batch is not None and self._fixed_batch != batch:
            return f"the ONNX input has a fixed batch of {self._fixed_batch}"
        self._binding = None
        self._out_bufs = []
        return None

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feeds is self._ready_feeds:  # the harness passes the same dict every call: check it once
            return feeds  # type: ignore[return-value]
        out = {}
        for name, dtype in self._in:
            if name in feeds:
                a = feeds[name]
            elif len(self._in) == 1 and len(feeds) == 1:
                a = next(iter(feeds.values()))
            else:
                raise BenchError(f"{self.path.name}: no feed for input {name!r} (received {sorted(feeds)})")
            out[name] = a if a.dtype == dtype else a.astype(dtype)
        if type(feeds) is dict and len(feeds) == len(out) and all(feeds.get(k) is v for k, v in out.items()):
            self._ready_feeds = feeds
            return feeds
        return out

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        f = self._feeds(feeds)
        if self._per_call == "run":
            return self._sess.run(self._out_names, f)
        if self._binding is None:
            return self._init_binding(f)
        b = self._binding
        for name, a in f.items():
            b.bind_cpu_input(name, a)
        self._sess.run_with_iobinding(b)
        return [o.copy() for o in self._out_bufs]

    def infer_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``infer`` with the outputs keyed by their graph names."""
        return dict(zip(self._out_names, self.infer(feeds)))

    def _init_binding(self, f: dict[str, np.ndarray]) -> Sequence[np.ndarray]:
        import onnxruntime as ort

        outs = self._sess.run(self._out_names, f)
        try:
            b = self._sess.io_binding()
            self._out_bufs = [np.empty_like(o) for o in outs]
            for name, buf in zip(self._out_names, self._out_bufs):
                b.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
            self._binding = b
        except Exception as exc:  # outputs whose shape depends on the data: fall back to run()
            self._per_call = "run"
            self.notes.append(f"IOBinding unavailable ({type(exc).__name__}); timed session.run instead")
        return outs

    def input_specs(self) -> list[tuple[str, list[Any], Any]]:
        return [(i.name, list(i.shape), ORT_TYPES.get(i.type, np.float32)) for i in self._sess.get_inputs()]

    def close(self) -> None:
        self._binding = None
        self._sess = None
        self._ready_feeds = None


class DeployedRunner(OrtRunner):
    """The deployed artifact called the way an application calls it (model-ready feeds in, numpy out).

    With a bundle (``manifest.json`` next to the artifact): ``Predictor.from_bundle(...).run``.
    For a bare ONNX file, or a manifest that does not load: ``seqdeploy.runtime.predictor.FastSession``
    on ``make_session``, the same per-call path without the manifest. Its family is
    ``"seqdeploy"`` so the plain ``ort:*`` runners stay the onnxruntime columns.

    >>> r = DeployedRunner("runs/x/model.onnx", "fp32")            # doctest: +SKIP
    >>> r.prepare(1); r.set_batch(1); r.infer({"features": x})     # doctest: +SKIP
    """

    family = "seqdeploy"

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", *, bundle: str | os.PathLike | None = None,
                 name: str | None = None, fastpath: str | None = None):
        default = f"deployed:{precision}" if fastpath is None else f"deployed-{fastpath}:{precision}"
        super().__init__(path, precision, deployed=True, name=name or default)
        self.bundle = Path(bundle) if bundle is not None else None
        self.fastpath = fastpath
        self._call: Callable[[Mapping[str, np.ndarray]], Any] | None = None
        self._as_list = False
        self.via: str | None = None

    def prepare(self, threads: int) -> None:
        self.close()
        rt = importlib.import_module("seqdeploy.runtime.predictor")
        why = None
        fast: Any = None
        if self.bundle is not None and (self.bundle / MANIFEST_FILE).is_file():
            try:
                pred = rt.Predictor.from_bundle(self.bundle, artifact=self.path.name, threads=threads,
                                                fastpath=self.fastpath)
            except Exception as exc:  # a stale or partial bundle: time the same path without it, and say so
                why = f"Predictor.from_bundle failed ({type(exc).__name__}: {str(exc)[:200]})"
            else:
                self._sess, self._call, self._as_list = pred.session, pred.run, False
                self.via, fast = "Predictor.run", pred.fast_session
        if self._call is None:
            fs = rt.FastSession(make_session(self.path, threads=threads, custom_ops_libraries=graph_libraries(self.path)),
                                fastpath=self.fastpath)
            self._sess, self._call, self._as_list = fs.session, fs.run, True
            self.via, fast = "FastSession.run", fs
        used = fast.path + (f" (asked for {fast.requested}: {fast.fallback_reason})" if fast.fallback_reason else "")
        settings = ("the bundle's chosen session settings" if self.via == "Predictor.run"
                    else "make_session options")
        note = (f"seqdeploy.runtime.predictor {self.via} per call ({used} fast path; {settings}, threads as the column says): "
                f"what users get" + (f"; {why}" if why else ""))
        if note not in self.notes:
            self.notes.append(note)
        self._describe()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        assert self._call is not None, "prepare() first"
        out = self._call(self._feeds(feeds))
        return out if self._as_list else list(out.values())

    def close(self) -> None:
        super().close()
        self._call = None


def _runtime_session(path: Path, threads: int) -> Any:
    return make_session(path, threads=threads)  # the runtime's own settings


def build(ctx: BuildContext) -> list[Any]:
    """A plain ``ort:<precision>`` runner per artifact; the deployed artifact also as ``deployed:<precision>``
    (second in the list), its plain runner on a ``make_session`` session."""
    target = ctx.target
    runners: list[Any] = []
    deployed_runner = None
    for precision, path in target.artifacts:
        deployed = target.deployed is not None and path.resolve() == target.deployed.resolve()
        r = OrtRunner(path, precision, settings=ctx.settings, session_factory=_runtime_session if deployed else None)
        r.notes.append("plain InferenceSession.run(output_names, feeds) per call"
                       + (" on a seqdeploy.runtime.predictor.make_session session" if deployed else ""))
        runners.append(r)
        if deployed:  # the same artifact through seqdeploy.runtime.predictor's per-call path(s)
            deployed_runner = [DeployedRunner(path, precision, bundle=target.root)] + [
                DeployedRunner(path, precision, bundle=target.root, fastpath=f) for f in ctx.settings.deployed_fastpaths]
    if deployed_runner is not None:
        runners[1:1] = deployed_runner
    return runners


register(Family(
    name="onnxruntime", label="ONNX Runtime", build=build, order=10,
    references=(Reference("onnx_fp32", "vs ONNX fp32", "vs ORT", "fp32", runner="ort:fp32"),),
))

__all__ = ["DeployedRunner", "OrtRunner", "OrtSettings"]

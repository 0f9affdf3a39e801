"""``seqdeploy serve``: bundles on the Open Inference Protocol v2 (REST + gRPC) and KServe's v1 route.

    >>> from seqdeploy.serve import ServeOptions, serve
    >>> serve(["runs/breast_cancer_mlp"], ServeOptions(http_port=8080, grpc_port=8081))  # doctest: +SKIP

Routes (KServe's Python server, ``kserve`` in the ``serve`` extra):

* ``GET /v2/models/{name}``: metadata, the served graph's real input/output names, datatypes, shapes
* ``POST /v2/models/{name}/infer`` (and gRPC ``ModelInfer``): tensors in, tensors out. The served graph
  is the bundle's portable graph (raw inputs) when the manifest has one, else the deployment artifact
  (model-ready inputs)
* ``POST /v1/models/{name}:predict``: ``{"instances": [raw rows]}`` -> ``{"predictions": [...]}``,
  the answers of :meth:`seqdeploy.runtime.predictor.Predictor.predict`
* ``GET /v2/health/ready``, ``/v2/health/live``, ``/metrics`` (Prometheus)

Concurrent requests for one model are coalesced into one onnxruntime call (up to
``max_batch_size`` rows, waiting at most ``max_delay_ms`` for more), run in a
thread pool off the event loop, and split back. Bad requests get 400 (413 over
the size limits, 404 for an unknown model) with a message, and the server keeps
serving. Every bundle file's sha256 is checked before the server listens.
SIGTERM (or Ctrl-C) stops accepting, answers what was accepted and returns.

This module imports nothing heavy; kserve is imported only by :func:`serve`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from seqdeploy.errors import UsageError

__all__ = ["ServeOptions", "ServeResult", "serve", "load_models"]


@dataclass(frozen=True)
class ServeOptions:
    """How to serve. Ports 0 pick free ports; ``grpc_port=None`` serves REST only."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int | None = 8081
    batching: bool = True
    max_batch_size: int = 64
    max_delay_ms: float = 1.0
    workers: int = 1
    max_request_rows: int = 4096
    max_body_bytes: int = 16 * 1024 * 1024
    grace_seconds: float = 30.0
    threads: int | None = None
    kserve_routes: bool = False  # infer/predict through KServe's FastAPI endpoints and gRPC dataplane (slower)

    def check(self) -> "ServeOptions":
        def bad(what: str, got: object, expected: str) -> UsageError:
            return UsageError(f"{what} = {got!r} (expected {expected})")

        for what, port in (("http_port", self.http_port), ("grpc_port", self.grpc_port)):
            if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
                raise bad(what, port, "an integer from 0 to 65535; 0 picks a free port")
        if self.grpc_port is not None and self.grpc_port == self.http_port and self.http_port != 0:
            raise bad("grpc_port", self.grpc_port, "a port other than the HTTP port")
        for what, v, lo in (("max_batch_size", self.max_batch_size, 1), ("workers", self.workers, 1),
                            ("max_request_rows", self.max_request_rows, 1), ("max_body_bytes", self.max_body_bytes, 1024)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise bad(what, v, f"an integer >= {lo}")
        for what, v in (("max_delay_ms", self.max_delay_ms), ("grace_seconds", self.grace_seconds)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1e6:
                raise bad(what, v, "a number of at least 0")
        if not self.host or any(c.isspace() for c in self.host):
            raise bad("host", self.host, "an address to listen on, e.g. 127.0.0.1 (0.0.0.0 = every interface)")
        return self


@dataclass(frozen=True)
class ServeResult:
    """What a server did once it stopped."""

    models: tuple[str, ...]
    host: str
    http_port: int
    grpc_port: int | None
    seconds_served: float
    drained_requests: int
    drain_seconds: float


def load_models(bundles: Sequence[str | os.PathLike], names: Sequence[str] | None = None,
                threads: int | None = None) -> list:
    """Load and check every bundle (sha256 of every file) before anything listens."""
    from seqdeploy.serve.model import ServedModel

    if not bundles:
        raise UsageError("no bundle given (expected one or more run directories with a manifest.json)")
    if names and len(names) != len(bundles):
        raise UsageError(f"{len(names)} model name(s) for {len(bundles)} bundle(s) (expected one name per bundle, "
                         f"or none to use each manifest's name)")
    models = [ServedModel.load(b, name=(names[i] if names else None), threads=threads) for i, b in enumerate(bundles)]
    seen: dict[str, str] = {}
    for m, b in zip(models, bundles):
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", m.name):
            raise UsageError(f"model name {m.name!r} (for {b}) cannot appear in a URL path (expected letters, digits, "
                             f"'_', '.', '-'); give it another name")
        if m.name in seen:
            raise UsageError(f"two bundles are both named {m.name!r} ({seen[m.name]} and {b}); give each a distinct "
                             f"model name")
        seen[m.name] = str(b)
    return models


def serve(bundles: Sequence[str | os.PathLike], options: ServeOptions = ServeOptions(),
          names: Sequence[str] | None = None,
          on_ready: Callable[[list, int, int | None], None] | None = None) -> ServeResult:
    """Load, check and serve ``bundles`` until SIGTERM/SIGINT; returns after draining.

    ``on_ready(models, http_port, grpc_port)`` is called once both ports listen.
    """
    options.check()
    models = load_models(bundles, names, options.threads)
    from seqdeploy.serve import kserve_app  # heavy: kserve, fastapi, grpc

    return kserve_app.run(models, options, None if on_ready is None else (lambda h, g: on_ready(models, h, g)))

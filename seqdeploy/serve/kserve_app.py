"""The server process: KServe's Open Inference Protocol dataplane (REST v1 + v2, gRPC v2) over seqdeploy bundles.

This is the one module that imports kserve and the one place that leans on its
internals (the compat notes below give the reason for each):

* ``kserve.model_server`` parses ``sys.argv`` with argparse when imported; the
  import runs with a bare argv so seqdeploy's own options are not read as KServe's.
* ``kserve.ModelServer.start`` binds REST to 0.0.0.0 and gRPC to [::] and replaces
  the signal handlers with one that does not wait for in-flight requests; this
  module composes the same public parts (``DataPlane``, ``ModelRepository``,
  ``RESTServer``'s application, ``InferenceServicer``) itself, binds to the host
  asked for, and drains on SIGTERM.
* uvicorn re-raises a captured SIGTERM after a graceful shutdown, which would make
  the exit status "killed by SIGTERM"; ``capture_signals`` is a no-op here and
  this module owns the signals.
* ``InferResponse.to_grpc`` tests an ndarray's truth value when raw outputs are
  due; gRPC responses are built with their outputs already in raw form.
* The REST infer and predict routes are answered by :meth:`_Guard._direct` with
  KServe's ``InferRequest.from_bytes`` / ``InferResponse.to_rest`` (JSON and the
  binary tensor extension) instead of KServe's FastAPI endpoints, whose routing,
  pydantic validation and timing middleware measured 1.8-3.9x slower per request
  (``benchmarks/serve_load.py --kserve-routes``); every other route (metadata,
  health, /metrics, v1 model list) is KServe's. gRPC ``ModelInfer`` likewise goes
  straight to the model (:class:`DirectServicer`: 1.36x req/s at concurrency 1,
  equal at 32). ``--kserve-routes`` restores KServe's endpoints and dataplane.

KServe's Python server does no batching of its own and runs a synchronous
``predict`` on the event loop; here ``predict`` is async and hands the rows to a
:class:`~seqdeploy.serve.batching.MicroBatcher`, which runs onnxruntime in a
thread pool.

Importing kserve and ``tritonclient.grpc`` in one process clashes (both define the
protobuf package ``inference``); the server therefore runs in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve.model_server as _kserve_model_server
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from grpc import aio as grpc_aio
    from kserve import Model
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer
    import orjson
    import uvicorn
finally:
    sys.argv = _argv
# kserve's routes use fastapi's ORJSONResponse, which fastapi now flags on every request
warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated.*")

from seqdeploy.errors import InputValidationError, RequestTooLarge
from seqdeploy.serve import ServeOptions, ServeResult
from seqdeploy.serve.batching import MicroBatcher
from seqdeploy.serve.metrics import ServeMetrics
from seqdeploy.serve.model import ServedModel

log = logging.getLogger("seqdeploy.serve")


class PayloadTooLarge(InvalidInput):
    """A request over the row limit: HTTP 413 (gRPC keeps KServe's INVALID_ARGUMENT for InvalidInput)."""


# --------------------------------------------------------------------------- the KServe model


class BundleModel(Model):
    """One bundle as a KServe model: v2 tensors and v1 raw ``instances``, both micro-batched."""

    def __init__(self, served: ServedModel, options: ServeOptions, metrics: ServeMetrics, executor: ThreadPoolExecutor):
        super().__init__(served.name)
        self.served = served
        self.options = options
        self.metrics = metrics
        kw = dict(max_batch_rows=options.max_batch_size, max_delay=options.max_delay_ms / 1000.0,
                  executor=executor, workers=options.workers, enabled=options.batching)
        self.v2 = MicroBatcher(served.run_v2, observer=metrics.observer(served.name, "v2"), **kw)
        self.v1 = MicroBatcher(served.run_v1, observer=metrics.observer(served.name, "v1"), **kw)
        self._inflight = metrics.inflight.labels(served.name)
        self.ready = True

    def get_input_types(self) -> list[dict]:
        return [t.as_dict() for t in self.served.inputs]

    def get_output_types(self) -> list[dict]:
        return [t.as_dict() for t in self.served.outputs]

    async def predict(self, payload: Any, headers: dict | None = None) -> Any:
        route = "v2" if isinstance(payload, InferRequest) else "v1"
        self._inflight.inc()
        try:
            if route == "v2":
                result, rows = await self._v2(payload)
            else:
                result, rows = await self._v1(payload)
        except PayloadTooLarge:
            self.metrics.done(self.name, route, "too_large", code=413)
            raise
        except InvalidInput:
            self.metrics.done(self.name, route, "invalid", code=400)
            raise
        except Exception:
            self.metrics.done(self.name, route, "error", code=500)
            raise
        finally:
            self._inflight.dec()
        self.metrics.done(self.name, route, "ok", rows=rows)
        return result

    async def _v2(self, req: InferRequest) -> tuple[InferResponse, int]:
        served = self.served
        try:
            tensors = []
            for i in req.inputs:
                try:
                    tensors.append((i.name, i.datatype, i.as_numpy()))
                except (ValueError, TypeError, KeyError) as exc:
                    raise InputValidationError(f"input {i.name!r} ({i.datatype}, shape {list(i.shape)}) cannot be "
                                               f"read: {str(exc)[:200]}; send shape-many values of that datatype")
            feeds, rows = served.check_v2(tensors, self.options.max_request_rows)
            wanted = served.requested_outputs([o.name for o in req.request_outputs or []])
        except RequestTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except InputValidationError as exc:
            raise InvalidInput(str(exc)) from None
        try:
            outs = await self.v2.submit(feeds, rows)
        except InputValidationError as exc:
            raise InvalidInput(str(exc)) from None
        by_name = {t.name: t for t in served.outputs}
        if req.from_grpc:
            # compat: kserve's to_grpc tests an ndarray's truth value when raw outputs are due (ValueError);
            # outputs already in raw form take its other branch and are what Triton sends anyway
            outputs = []
            for n in wanted:
                o = InferOutput(n, list(outs[n].shape), by_name[n].datatype)
                o.set_data_from_numpy(outs[n], binary_data=True)
                outputs.append(o)
        else:
            outputs = [InferOutput(n, list(outs[n].shape), by_name[n].datatype, data=outs[n]) for n in wanted]
        return InferResponse(req.id or "", self.name, outputs, use_binary_outputs=req.use_binary_outputs,
                             requested_outputs=req.request_outputs or None), rows

    async def _v1(self, body: Any) -> tuple[dict, int]:
        try:
            if not isinstance(body, dict) or "instances" not in body:
                keys = list(body)[:5] if isinstance(body, dict) else type(body).__name__
                raise InputValidationError(f"v1 predict body has {keys} (expected an object with 'instances': a list "
                                           f"of raw rows)")
            raw, rows = self.served.check_instances(body["instances"], self.options.max_request_rows)
        except RequestTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except InputValidationError as exc:
            raise InvalidInput(str(exc)) from None
        try:
            pred = await self.v1.submit(raw, rows)
        except InputValidationError as exc:
            raise InvalidInput(str(exc)) from None
        return {"predictions": pred.tolist()}, rows


class FixedRepository(ModelRepositoryExtension):
    """The repository extension without load/unload: anyone who can reach the port could otherwise unload a model."""

    async def load(self, model_name: str) -> None:
        raise NotImplementedError(f"this server serves the bundles it was started with; loading {model_name!r} "
                                  f"is not supported: restart it with the bundles to serve")

    async def unload(self, model_name: str) -> None:
        raise NotImplementedError(f"this server serves the bundles it was started with; unloading {model_name!r} "
                                  f"is not supported: stop it with SIGTERM instead")


class DirectServicer(InferenceServicer):
    """gRPC ``ModelInfer`` straight to the model, as the REST direct handler does (every other RPC is KServe's).

    KServe's ``DataPlane.infer`` adds a registry lookup with readiness checks and ``Model.__call__``'s
    pre/post-process hooks and latency histograms around ``predict``; errors still map through KServe's
    interceptor (``InvalidInput`` -> INVALID_ARGUMENT, ``ModelNotFound`` -> NOT_FOUND).
    """

    def __init__(self, dataplane: DataPlane, extension: ModelRepositoryExtension, repo: ModelRepository):
        super().__init__(dataplane, extension)
        self._repo = repo

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        self.validate_grpc_request(request)
        model = self._repo.get_model(request.model_name)
        if model is None:
            raise ModelNotFound(request.model_name)
        if not model.ready:
            raise ModelNotReady(request.model_name)
        return (await model.predict(InferRequest.from_grpc(request))).to_grpc()


# --------------------------------------------------------------------------- HTTP extras


_JSON_TYPES = {b"application/json", b"application/cloudevents+json", b"application/ld+json"}


class _Guard:
    """ASGI middleware: 413 for bodies over the limit (never buffered), JSON by default, counts every status code."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: ServeMetrics, repo: ModelRepository | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.repo = repo  # set: answer the infer/predict routes here (see _direct), not through FastAPI

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            self.metrics.http_responses.labels("413").inc()
            more = True
            while more:  # discard the body without keeping it, so the client can read the answer
                message = await receive()
                more = message.get("type") == "http.request" and message.get("more_body", False)
            body = json.dumps({"error": f"request body has {int(length)} bytes (the server takes at most "
                                        f"{self.max_body_bytes}); split it into smaller requests"}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return

        if self.repo is not None and scope.get("method") == "POST":
            m = _INFER_PATH.match(scope.get("path", ""))
            if m is not None:
                await self._direct(receive, send, headers, "v2" if m.group(1) else "v1", m.group(1) or m.group(2))
                return

        if scope.get("method") == "POST" and b"inference-header-content-length" not in headers \
                and headers.get(b"content-type", b"").split(b";")[0].strip() not in _JSON_TYPES:
            # compat: Triton reads a body without the binary-extension header as JSON whatever its content type
            # (tritonclient and curl send none or form-encoded); kserve would take it for binary tensors
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k != b"content-type"]
                         + [(b"content-type", b"application/json")])

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.metrics.http_responses.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


    async def _direct(self, receive: Callable, send: Callable, headers: dict, route: str, name: str) -> None:
        """The infer and predict routes without FastAPI: KServe's own request/response types, the same model.

        Measured: FastAPI routing, pydantic validation of the body and of the response, and KServe's timing
        middleware cost more per request than the inference itself (README, "Serving"). Requests are decoded
        with ``InferRequest.from_bytes`` (JSON, or JSON + the binary tensor extension), answered by the same
        :class:`BundleModel`, encoded with ``InferResponse.to_rest``; errors map as KServe's handlers map them.
        """
        chunks, more, size = [], True, 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body_bytes:  # a chunked body has no content-length to refuse it up front
                chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        extra: list[tuple[bytes, bytes]] = []
        content_type = b"application/json"
        try:
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body has {size} bytes (the server takes at most "
                                      f"{self.max_body_bytes}); split it into smaller requests")
            model = self.repo.get_model(name)
            if model is None:
                raise ModelNotFound(name)
            if not model.ready:
                raise ModelNotReady(name)
            if route == "v2":
                hdr = headers.get(b"inference-header-content-length", b"")
                try:
                    req = InferRequest.from_bytes(body, int(hdr) if hdr.isdigit() else len(body), name)
                except InvalidInput as exc:
                    if "Unrecognized request format" not in str(exc):
                        raise
                    raise InvalidInput(f"request body is not valid JSON ({str(exc).split(': ', 1)[-1]}); expected "
                                       f"an Open Inference Protocol request: see GET /v2/models/{name}") from None
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise InvalidInput(f"request body does not follow the Open Inference Protocol ({type(exc).__name__}: "
                                       f"{str(exc)[:120]}); expected {{\"inputs\": [{{\"name\", \"datatype\", "
                                       f"\"shape\", \"data\"}}]}}: see GET /v2/models/{name}") from None
                res, json_size = (await model.predict(req)).to_rest()
                if json_size is not None:
                    payload = res
                    content_type = b"application/octet-stream"
                    extra.append((b"inference-header-content-length", str(json_size).encode()))
                else:
                    payload = orjson.dumps(res)
            else:
                try:
                    data = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise InvalidInput(f"request body is not valid JSON ({exc}); expected "
                                       f"{{\"instances\": [raw rows]}}") from None
                payload = orjson.dumps(await model.predict(data))
            status = 200
        except PayloadTooLarge as exc:
            status, payload = 413, orjson.dumps({"error": str(exc)})
        except InvalidInput as exc:
            status, payload = 400, orjson.dumps({"error": str(exc)})
        except ModelNotFound as exc:
            status, payload = 404, orjson.dumps({"error": str(exc)})
        except ModelNotReady as exc:
            status, payload = 503, orjson.dumps({"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
            log.exception("internal error answering %s for %s", route, name)
            status, payload = 500, orjson.dumps({"error": f"internal server error: {type(exc).__name__}"})
        self.metrics.http_responses.labels(str(status)).inc()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
                    + extra})
        await send({"type": "http.response.body", "body": payload})


_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/infer$|^/v1/models/([^/:]+):predict$")


async def _payload_too_large(_request: Any, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=413, content={"error": str(exc)})


async def _bad_request_body(_request: Any, exc: Exception) -> JSONResponse:
    errors = getattr(exc, "errors", lambda: [])()
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:3]]
    return JSONResponse(status_code=400, content={"error": "request body does not follow the Open Inference "
                                                           "Protocol (" + "; ".join(parts) + "); see "
                                                           "GET /v2/models/{name} for the expected inputs"})


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # compat: this module owns SIGTERM/SIGINT (see the module docstring)
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputValidationError(f"cannot listen on {host}:{port} for HTTP ({exc.strerror}); pick a free port "
                                   f"(0 = any free port) or another host") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------- the process


async def serve_async(models: list[ServedModel], options: ServeOptions,
                      on_ready: Callable[[int, int | None], None] | None = None) -> ServeResult:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting, answer what was accepted, return."""
    for name in ("kserve", "kserve.trace", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = [logging.NullHandler()]
        lg.propagate = False
    loop = asyncio.get_running_loop()
    metrics = ServeMetrics()
    executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="seqdeploy-infer")
    repo = ModelRepository()
    kmodels = [BundleModel(m, options, metrics, executor) for m in models]
    for km in kmodels:
        repo.update(km)
    dataplane = DataPlane(model_registry=repo)
    extension = FixedRepository(model_registry=repo)

    sock = _listen(options.host, options.http_port)
    http_port = sock.getsockname()[1]
    rest = RESTServer("kserve.model_server:app", dataplane, extension, http_port,
                      grace_period=int(options.grace_seconds), timeout_keep_alive=65)
    rest.config.host = options.host
    rest.create_application()
    app = _kserve_model_server.app
    app.add_exception_handler(PayloadTooLarge, _payload_too_large)
    app.add_exception_handler(RequestValidationError, _bad_request_body)
    app.add_middleware(_Guard, max_body_bytes=options.max_body_bytes, metrics=metrics,
                       repo=None if options.kserve_routes else repo)
    http = _Uvicorn(rest.config)

    grpc_server = None
    grpc_port = None
    if options.grpc_port is not None:
        grpc_server = grpc_aio.server(
            ThreadPoolExecutor(max_workers=4), interceptors=(ExceptionToStatusInterceptor(),),
            options=[("grpc.max_send_message_length", options.max_body_bytes),
                     ("grpc.max_receive_message_length", options.max_body_bytes),
                     ("grpc.so_reuseport", 0)])
        servicer = InferenceServicer(dataplane, extension) if options.kserve_routes else \
            DirectServicer(dataplane, extension, repo)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, grpc_server)
        addr = f"[{options.host}]" if ":" in options.host else options.host
        try:
            grpc_port = grpc_server.add_insecure_port(f"{addr}:{options.grpc_port}")
        except RuntimeError:
            grpc_port = 0
        if not grpc_port:
            sock.close()
            raise InputValidationError(f"cannot listen on {options.host}:{options.grpc_port} for gRPC (port in use "
                                       f"or not allowed); pick a free port (0 = any free port) or another host")
        await grpc_server.start()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = loop.create_task(http.serve(sockets=[sock]))
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():  # startup failed: surface its error
        await http_task
    started = time.time()
    if on_ready is not None:
        on_ready(http_port, grpc_port)
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({stopper, http_task}, return_when=asyncio.FIRST_COMPLETED)

    # Drain: stop accepting; requests already accepted are answered (up to grace_seconds).
    t0 = time.perf_counter()
    pending = sum(km.v1.waiting + km.v2.waiting for km in kmodels)
    http.should_exit = True
    waits = [http_task]
    if grpc_server is not None:
        waits.append(loop.create_task(grpc_server.stop(options.grace_seconds)))
    await asyncio.gather(*waits, return_exceptions=True)
    for km in kmodels:
        await km.v1.close()
        await km.v2.close()
    executor.shutdown(wait=True)
    stopper.cancel()
    return ServeResult(models=tuple(m.name for m in models), host=options.host, http_port=http_port,
                       grpc_port=grpc_port, seconds_served=round(time.time() - started, 3),
                       drained_requests=pending, drain_seconds=round(time.perf_counter() - t0, 3))


def run(models: list[ServedModel], options: ServeOptions,
        on_ready: Callable[[int, int | None], None] | None = None) -> ServeResult:
    """Blocking entry point (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - kserve depends on uvloop on Linux
        return asyncio.run(serve_async(models, options, on_ready))
    return uvloop.run(serve_async(models, options, on_ready))

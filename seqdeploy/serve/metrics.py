"""Prometheus metrics of ``seqdeploy serve`` (served at ``/metrics`` beside KServe's own).

Names (counters get ``_total`` in the exposition):

* ``seqdeploy_requests_total{model, route, outcome}``: requests by route (``v1`` / ``v2``) and outcome
  (``ok``, ``invalid``, ``too_large``, ``error``)
* ``seqdeploy_rows_total{model, route}``: rows answered
* ``seqdeploy_errors_total{model, route, code}``: failed requests by HTTP status (400, 413, 500)
* ``seqdeploy_http_responses_total{code}``: every HTTP response, including 404 for unknown models
* ``seqdeploy_batch_rows{model, route}``: rows per onnxruntime call (histogram)
* ``seqdeploy_batch_requests{model, route}``: requests coalesced into one call (histogram)
* ``seqdeploy_queue_seconds{model, route}``: time a request waited for its batch to start
* ``seqdeploy_inference_seconds{model, route}``: time of one batched call (off the event loop)
* ``seqdeploy_inflight_requests{model}``: requests being answered now
"""

from __future__ import annotations

import math
from typing import Sequence

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, math.inf)
_TIME_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)


class ServeMetrics:
    """The server's metrics, registered once per process in prometheus_client's default registry."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they double the exposition and nothing reads them

        self.requests = Counter("seqdeploy_requests", "Inference requests by model, route and outcome",
                                ["model", "route", "outcome"])
        self.rows = Counter("seqdeploy_rows", "Rows answered", ["model", "route"])
        self.errors = Counter("seqdeploy_errors", "Failed inference requests by HTTP status",
                              ["model", "route", "code"])
        self.http_responses = Counter("seqdeploy_http_responses", "HTTP responses by status code", ["code"])
        self.batch_rows = Histogram("seqdeploy_batch_rows", "Rows per onnxruntime call", ["model", "route"],
                                    buckets=_BATCH_BUCKETS)
        self.batch_requests = Histogram("seqdeploy_batch_requests", "Requests coalesced into one onnxruntime call",
                                        ["model", "route"], buckets=_BATCH_BUCKETS)
        self.queue_seconds = Histogram("seqdeploy_queue_seconds", "Wait from arrival to the start of its batch",
                                       ["model", "route"], buckets=_TIME_BUCKETS)
        self.inference_seconds = Histogram("seqdeploy_inference_seconds", "Duration of one batched onnxruntime call",
                                           ["model", "route"], buckets=_TIME_BUCKETS)
        self.inflight = Gauge("seqdeploy_inflight_requests", "Inference requests being answered", ["model"])

    def observer(self, model: str, route: str) -> "_Observer":
        return _Observer(self, model, route)

    def done(self, model: str, route: str, outcome: str, rows: int = 0, code: int | None = None) -> None:
        self.requests.labels(model, route, outcome).inc()
        if rows:
            self.rows.labels(model, route).inc(rows)
        if code is not None:
            self.errors.labels(model, route, str(code)).inc()


class _Observer:
    """The batcher's hook for one (model, route)."""

    def __init__(self, metrics: ServeMetrics, model: str, route: str):
        self._rows = metrics.batch_rows.labels(model, route)
        self._reqs = metrics.batch_requests.labels(model, route)
        self._queue = metrics.queue_seconds.labels(model, route)
        self._run = metrics.inference_seconds.labels(model, route)

    def batch(self, rows: int, requests: int, queue_seconds: Sequence[float], run_seconds: float) -> None:
        self._rows.observe(rows)
        self._reqs.observe(requests)
        for q in queue_seconds:
            self._queue.observe(q)
        self._run.observe(run_seconds)

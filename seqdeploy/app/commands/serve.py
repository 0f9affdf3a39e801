"""`seqdeploy serve`: bundles on the Open Inference Protocol v2 (REST + gRPC) and the v1 predict route."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from seqdeploy.app.cli import JSON_OPTION, app, console, handle_errors


@app.command("serve")
def serve(
    bundles: List[Path] = typer.Argument(..., help="One or more bundle (run) directories with a manifest.json."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 = every interface)."),
    http_port: int = typer.Option(8080, "--http-port", help="REST port (0 = any free port)."),
    grpc_port: int = typer.Option(8081, "--grpc-port", help="gRPC port (0 = any free port)."),
    no_grpc: bool = typer.Option(False, "--no-grpc", help="Serve REST only."),
    name: Optional[List[str]] = typer.Option(None, "--name", help="Model name per bundle (default: the manifest's)."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Coalesce concurrent requests per model."),
    max_batch_size: int = typer.Option(64, "--max-batch-size", help="Rows per onnxruntime call at most."),
    max_delay_ms: float = typer.Option(1.0, "--max-delay-ms", help="Wait at most this long for a batch to fill."),
    workers: int = typer.Option(1, "--workers", help="onnxruntime calls running at once (threads)."),
    max_request_rows: int = typer.Option(4096, "--max-request-rows", help="Rows per request at most (413 above)."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Request body size limit in MiB (413 above)."),
    grace: float = typer.Option(30.0, "--grace", help="Seconds to finish accepted requests after SIGTERM."),
    kserve_routes: bool = typer.Option(False, "--kserve-routes", hidden=True,
                                       help="Answer infer/predict through KServe's own endpoints and dataplane (slower; for comparison)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve bundles over REST (v1 + v2) and gRPC (v2) with micro-batching and Prometheus /metrics."""
    with handle_errors(as_json=as_json):
        from seqdeploy.serve import ServeOptions
        from seqdeploy.serve import serve as run_server

        options = ServeOptions(host=host, http_port=http_port, grpc_port=None if no_grpc else grpc_port,
                               batching=batching, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                               workers=workers, max_request_rows=max_request_rows,
                               max_body_bytes=int(max_body_mb * 1024 * 1024), grace_seconds=grace,
                               kserve_routes=kserve_routes)

        def ready(models, http, grpc) -> None:
            where = host if ":" not in host else f"[{host}]"
            if as_json:
                sys.stdout.write(json.dumps({"event": "ready", "models": [m.name for m in models], "host": host,
                                             "http_port": http, "grpc_port": grpc}) + "\n")
                sys.stdout.flush()
            for m in models:
                kind = "portable graph (raw inputs)" if m.portable else "model-ready graph"
                console.print(f"model {escape(m.name)}: {escape(m.graph_file)}, {kind}; inputs "
                              + ", ".join(f"{t.name} {t.datatype} {t.shape}" for t in m.inputs), soft_wrap=True)
            console.print(f"serving on http://{where}:{http} (v1 + v2, /metrics)"
                          + (f" and grpc {where}:{grpc}" if grpc else "") + "; SIGTERM or Ctrl-C drains and stops",
                          soft_wrap=True)

        result = run_server(bundles, options, names=name or None, on_ready=ready)
        console.print(f"stopped after {result.seconds_served:.1f}s; drained {result.drained_requests} request(s) "
                      f"in {result.drain_seconds:.2f}s")
        if as_json:
            sys.stdout.write(json.dumps({"event": "stopped", "drained_requests": result.drained_requests,
                                         "drain_seconds": result.drain_seconds}) + "\n")
            sys.stdout.flush()

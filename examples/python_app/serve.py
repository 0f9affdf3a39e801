"""A standalone prediction server for a seqdeploy bundle (standard library + the base install).

Needs only ``pip install seqdeploy`` (numpy + onnxruntime): no TensorFlow, no
toolchain, no web framework.

    python serve.py runs/breast_cancer_mlp --port 8000
    curl -s localhost:8000/predict -d '{"inputs": [{"mean radius": 14.1, ...}]}'

Endpoints:

* ``POST /predict`` with ``{"inputs": [...], "probabilities": false}``: rows as
  lists of numbers or objects keyed by feature name, or strings for text
  models. Answers ``{"predictions": [...]}`` (plus ``"probabilities"`` for
  classifiers when asked). Bad inputs answer 400 with the runtime's message.
* ``GET /health``: ``{"status": "ok", ...}``; ``GET /manifest``: the manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from seqdeploy.errors import SeqdeployError
from seqdeploy.runtime import Predictor

MAX_BODY = 16 * 1024 * 1024  # bytes; larger requests get 413


def make_handler(predictor: Predictor) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one (thread-safe) predictor."""
    manifest_json = json.dumps(dataclasses.asdict(predictor.manifest), default=str).encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "seqdeploy-serve/0.1"

        def _send(self, status: int, body: bytes | dict) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            if self.path == "/health":
                self._send(200, {"status": "ok", "model": predictor.manifest.name,
                                 "artifact": predictor.info.artifact, "task": predictor.manifest.task})
            elif self.path == "/manifest":
                self._send(200, manifest_json)
            else:
                self._send(404, {"error": f"no route {self.path}; use POST /predict, GET /health or GET /manifest"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/predict":
                self._send(404, {"error": f"no route {self.path}; use POST /predict"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, {"error": f"request body is {length} bytes (limit {MAX_BODY}); send fewer rows"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._send(400, {"error": f"body is not JSON ({exc}); expected {{\"inputs\": [...]}}"})
                return
            if not isinstance(body, dict) or "inputs" not in body:
                self._send(400, {"error": "expected a JSON object {\"inputs\": [...], \"probabilities\": false}"})
                return
            try:
                preds = predictor.predict(body["inputs"])
                answer = {"predictions": preds.tolist()}
                if body.get("probabilities") and predictor.manifest.task != "regression":
                    answer["probabilities"] = predictor.predict_proba(body["inputs"]).tolist()
            except SeqdeployError as exc:  # bad inputs: tell the client what was expected
                self._send(400, {"error": str(exc)})
                return
            self._send(200, answer)

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle (run) directory with manifest.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--artifact", default=None, help="artifact file or precision (default: the deployed one)")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor.from_bundle(args.bundle, artifact=args.artifact)
    except SeqdeployError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    server = ThreadingHTTPServer((args.host, args.port), make_handler(predictor))
    host, port = server.server_address[:2]
    sys.stderr.write(f"serving {predictor.manifest.name} ({predictor.info.artifact}) on http://{host}:{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`seqdeploy serve` as a real process on loopback ports, driven by tritonclient (HTTP and gRPC) and plain HTTP.

The test process never imports kserve (it clashes with tritonclient.grpc's protobuf
package); the server runs in a subprocess, as it would in production.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def serve_bundle(trained_mlp_run, tmp_path_factory) -> Path:
    """The seed spec (trained briefly) exported, verified and bundled: what `seqdeploy pipeline` ships."""
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.verify.parity import verify_run

    run = tmp_path_factory.mktemp("serve") / "breast_cancer_mlp"
    shutil.copytree(trained_mlp_run, run)
    export_onnx(run)
    verify_run(run, samples=40)
    write_bundle_manifest(run)
    return run


class Server:
    def __init__(self, bundle: Path, *args: str):
        cmd = [sys.executable, "-m", "seqdeploy", "serve", str(bundle), "--http-port", "0", "--grpc-port", "0",
               "--json", *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=SERVER_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self._readline(timeout=90)
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["host"] == "127.0.0.1", ready
        self.http_port, self.grpc_port = ready["http_port"], ready["grpc_port"]
        self.model = ready["models"][0]  # the first bundle's model
        self.http = f"127.0.0.1:{self.http_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"

    def _readline(self, timeout: float) -> str:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not out or not out[0]:
            self.proc.kill()
            raise AssertionError(f"server did not start: {self.proc.stderr.read()[-3000:]}")
        return out[0]

    def stop(self, timeout: float = 60) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"server did not stop within {timeout}s after SIGTERM: {err[-2000:]}")
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory) -> Path:
    """A second, tiny text model (onnx.helper weights, no training): the same server serves both."""
    from test_manifest import build_bundle

    return build_bundle(tmp_path_factory.mktemp("text"), "text")


@pytest.fixture(scope="module")
def server(serve_bundle, text_bundle):
    s = Server(serve_bundle, str(text_bundle), "--max-request-rows", "256", "--max-body-mb", "1",
               "--max-delay-ms", "2")
    yield s
    rc, out, err = s.stop()
    assert rc == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["event"] == "stopped"


@pytest.fixture(scope="module")
def predictor(serve_bundle):
    from seqdeploy.runtime.predictor import Predictor

    return Predictor.from_bundle(serve_bundle)


@pytest.fixture(scope="module")
def golden(serve_bundle):
    return dict(np.load(serve_bundle / "golden.npz"))


@pytest.fixture(scope="module")
def graph(serve_bundle):
    """The graph the v2 route serves, read independently: the portable file when the manifest names one."""
    import onnxruntime as ort

    m = json.loads((serve_bundle / "manifest.json").read_text())
    portable = (m.get("portable") or {}).get("file") if isinstance(m.get("portable"), dict) else None
    if portable is None:
        dep = next(a for a in m["artifacts"] if a["file"] == m["deployment_artifact"])
        portable = dep.get("portable", {}).get("file") if isinstance(dep.get("portable"), dict) else None
    file = portable or m["deployment_artifact"]
    return ort.InferenceSession(str(serve_bundle / file)), portable is not None


def post(server, path, body, headers=None, raw=False):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"content-type": "application/json", **(headers or {})})
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, (payload if raw else json.loads(payload))


def expected_v2(graph, predictor, golden, raw: np.ndarray) -> dict[str, np.ndarray]:
    """What the v2 route must answer: Predictor's results for the portable graph, Predictor.run otherwise."""
    sess, portable = graph
    if portable:
        out = {"probabilities": predictor.predict_proba(raw).astype(np.float32), "label": predictor.predict(raw)}
        return {k: v for k, v in out.items() if k in {o.name for o in sess.get_outputs()}}
    feeds = {sess.get_inputs()[0].name: golden[f"input__{sess.get_inputs()[0].name}"][: len(raw)]}
    return predictor.run(feeds)


def v2_inputs(graph, golden, n):
    sess, portable = graph
    name = sess.get_inputs()[0].name
    x = golden["raw"][:n] if portable else golden[f"input__{name}"][:n]
    return name, np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- protocol


def test_metadata_has_the_graphs_real_names_datatypes_and_shapes(server, graph):
    import tritonclient.http as httpclient

    sess, _ = graph
    c = httpclient.InferenceServerClient(server.http)
    assert c.is_server_ready() and c.is_model_ready(server.model)
    meta = c.get_model_metadata(server.model)
    types = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(string)": "BYTES"}
    want_in = [{"name": i.name, "datatype": types[i.type], "shape": [-1 if not isinstance(d, int) else d for d in i.shape]}
               for i in sess.get_inputs()]
    want_out = [{"name": o.name, "datatype": types[o.type], "shape": [-1 if not isinstance(d, int) else d for d in o.shape]}
                for o in sess.get_outputs()]
    assert meta["inputs"] == want_in
    assert meta["outputs"] == want_out


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_infer_equals_predictor(server, graph, predictor, golden, binary):
    import tritonclient.http as httpclient

    name, x = v2_inputs(graph, golden, 7)
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(o.name, binary_data=binary) for o in graph[0].get_outputs()]
    res = httpclient.InferenceServerClient(server.http).infer(server.model, [inp], outputs=outs)
    for k, want in expected_v2(graph, predictor, golden, golden["raw"][:7]).items():
        got = res.as_numpy(k)
        if want.dtype.kind in "US":
            assert [g.decode() if isinstance(g, bytes) else g for g in got.tolist()] == want.tolist()
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_tritonclient_grpc_metadata_and_infer_equal_predictor(server, graph, predictor, golden):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(server.grpc)
    meta = c.get_model_metadata(server.model, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == [i.name for i in graph[0].get_inputs()]
    name, x = v2_inputs(graph, golden, 5)
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer(server.model, [inp])
    for k, want in expected_v2(graph, predictor, golden, golden["raw"][:5]).items():
        got = res.as_numpy(k)
        if want.dtype.kind in "US":
            assert [g.decode() for g in got.tolist()] == want.tolist()
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # a bad request is INVALID_ARGUMENT, and the server keeps answering
    bad = grpcclient.InferInput(name, [2, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 3), np.float32))
    with pytest.raises(grpcclient.InferenceServerException, match="shape"):
        c.infer(server.model, [bad])
    assert c.infer(server.model, [inp]).as_numpy(graph[0].get_outputs()[0].name).shape[0] == 5


def test_v1_predict_takes_raw_rows_and_equals_predictor(server, predictor, golden, serve_bundle):
    raw = golden["raw"][:9]
    status, body = post(server, f"/v1/models/{server.model}:predict", {"instances": raw.tolist()})
    assert status == 200, body
    assert body["predictions"] == predictor.predict(raw).tolist()
    names = json.loads((serve_bundle / "manifest.json").read_text())["preprocessing"]["feature_names"]
    rows = [dict(zip(names, map(float, r))) for r in raw]  # rows keyed by feature name
    status, body2 = post(server, f"/v1/models/{server.model}:predict", {"instances": rows})
    assert status == 200 and body2 == body


def _v2_body(name, x, datatype="FP32"):
    return {"inputs": [{"name": name, "datatype": datatype, "shape": list(np.shape(x)),
                        "data": np.asarray(x).ravel().tolist()}]}


BAD = [
    # (route, body maker, status, message fragment)
    ("v2", lambda n, x: _v2_body("nope", x), 400, "do not match"),
    ("v2", lambda n, x: _v2_body(n, x, "FP64"), 400, "datatype FP64"),
    ("v2", lambda n, x: _v2_body(n, x[:, :7]), 400, "shape"),
    ("v2", lambda n, x: {"inputs": [{"name": n, "datatype": "FP32", "shape": [2, 30], "data": [1.0, 2.0]}]}, 400,
     "cannot be read"),
    ("v2", lambda n, x: {"inputs": []}, 400, "missing"),
    ("v2", lambda n, x: {"outputs": []}, 400, "Open Inference Protocol"),
    ("v2", lambda n, x: b"{not json", 400, "JSON"),
    ("v2", lambda n, x: _v2_body(n, np.repeat(x, 200, axis=0)[:300]), 413, "at most 256"),
    ("v1", lambda n, x: {"instances": x[:, :5].tolist()}, 400, "expected"),
    ("v1", lambda n, x: {"instances": "row"}, 400, "instances"),
    ("v1", lambda n, x: {"rows": []}, 400, "instances"),
    ("v1", lambda n, x: {"instances": [["a"] * 30]}, 400, ""),
    ("v1", lambda n, x: {"instances": np.repeat(x, 200, axis=0)[:257].tolist()}, 413, "at most 256"),
    ("v1", lambda n, x: b"{not json", 400, ""),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_requests_get_a_status_and_a_message_and_the_server_keeps_serving(server, graph, golden, case):
    route, make, status, fragment = BAD[case]
    name, x = v2_inputs(graph, golden, 2)
    path = f"/v2/models/{server.model}/infer" if route == "v2" else f"/v1/models/{server.model}:predict"
    got, body = post(server, path, make(name, x))
    assert got == status, body
    assert fragment in body["error"] and len(body["error"]) > 10
    ok, _ = post(server, f"/v2/models/{server.model}/infer", _v2_body(name, x))
    assert ok == 200


def test_unknown_model_is_404_and_oversized_body_is_413(server, graph, golden):
    name, x = v2_inputs(graph, golden, 2)
    got, body = post(server, "/v2/models/nope/infer", _v2_body(name, x))
    assert got == 404 and "nope" in body["error"]
    got, body = post(server, "/v1/models/nope:predict", {"instances": golden["raw"][:1].tolist()})
    assert got == 404
    big = json.dumps(_v2_body(name, np.repeat(x, 3000, axis=0))).encode()  # > the 1 MiB limit
    assert len(big) > 1024 * 1024
    got, body = post(server, f"/v2/models/{server.model}/infer", big)
    assert got == 413 and "at most" in body["error"]
    # the same body sent chunked (no content-length to refuse it up front)
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("POST", f"/v2/models/{server.model}/infer", iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 {"content-type": "application/json"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "at most" in json.loads(r.read())["error"]
    conn.close()
    assert post(server, f"/v2/models/{server.model}/infer", _v2_body(name, x))[0] == 200


def test_models_cannot_be_unloaded_over_the_network(server, graph, golden):
    name, x = v2_inputs(graph, golden, 1)
    got, body = post(server, f"/v2/repository/models/{server.model}/unload", {})
    assert got == 501 and "SIGTERM" in body["error"]
    assert post(server, f"/v2/models/{server.model}/infer", _v2_body(name, x))[0] == 200


def test_kserve_fastapi_routes_answer_the_same(serve_bundle, graph, predictor, golden):
    """--kserve-routes sends infer/predict through KServe's own FastAPI endpoints and gRPC dataplane (the
    default answers them directly with KServe's request/response types): same answers, same refusals."""
    import tritonclient.http as httpclient

    import tritonclient.grpc as grpcclient

    s = Server(serve_bundle, "--kserve-routes")
    try:
        name, x = v2_inputs(graph, golden, 4)
        for module, url in ((httpclient, s.http), (grpcclient, s.grpc)):
            inp = module.InferInput(name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            res = module.InferenceServerClient(url).infer(s.model, [inp])
            for k, want in expected_v2(graph, predictor, golden, golden["raw"][:4]).items():
                got = res.as_numpy(k)
                if want.dtype.kind in "US":
                    assert [g.decode() for g in got.tolist()] == want.tolist()
                else:
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        status, body = post(s, f"/v1/models/{s.model}:predict", {"instances": golden["raw"][:4].tolist()})
        assert status == 200 and body["predictions"] == predictor.predict(golden["raw"][:4]).tolist()
        status, body = post(s, f"/v2/models/{s.model}/infer", _v2_body(name, x, "FP64"))
        assert status == 400 and "datatype FP64" in body["error"]
    finally:
        rc, _, err = s.stop()
    assert rc == 0, err[-2000:]


def test_a_second_model_with_string_inputs_on_the_same_server(server, text_bundle):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from seqdeploy.runtime.predictor import Predictor
    from test_manifest import sample_raw

    p = Predictor.from_bundle(text_bundle)
    texts = sample_raw("text", n=6, seed=5)
    want = p.predict(texts).tolist()
    meta = httpclient.InferenceServerClient(server.http).get_model_metadata("tiny_text")
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("text", "BYTES", [-1])]
    arr = np.asarray([t.encode() for t in texts], dtype=object)
    for module, url in ((httpclient, server.http), (grpcclient, server.grpc)):
        inp = module.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(arr)
        res = module.InferenceServerClient(url).infer("tiny_text", [inp])
        assert [b.decode() for b in res.as_numpy("label").tolist()] == want
        np.testing.assert_allclose(res.as_numpy("probabilities"), p.predict_proba(texts), rtol=1e-6, atol=1e-7)
    status, body = post(server, "/v1/models/tiny_text:predict", {"instances": list(texts)})
    assert status == 200 and body["predictions"] == want
    status, body = post(server, "/v1/models/tiny_text:predict", {"instances": ["fine", 3]})
    assert status == 400 and "expected a string" in body["error"]


# --------------------------------------------------------------------------- load


def _metrics(server) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^(seqdeploy_\w+)(\{[^}]*\})? ([0-9.e+-]+|NaN|\+Inf)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _metric(ms: dict[str, float], name: str, **labels) -> float:
    total = 0.0
    for k, v in ms.items():
        if k.split("{")[0] == name and all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
            total += v
    return total


def test_64_threads_x_50_requests_distinct_rows_no_errors_and_batches_form(server, graph, predictor, golden):
    sess, portable = graph
    name = sess.get_inputs()[0].name
    base = golden["raw"] if portable else golden[f"input__{name}"]
    rng = np.random.default_rng(0)
    n_threads, n_requests = 64, 50
    # every request gets its own rows (1-3 of them), different from every other request's
    inputs = [[(base[rng.integers(len(base), size=1 + (t * n_requests + i) % 3)]
                * (1 + 1e-3 * (t * n_requests + i))).astype(np.float32) for i in range(n_requests)]
              for t in range(n_threads)]
    out_name = "probabilities" if portable else sess.get_outputs()[0].name
    before = _metrics(server)
    errors: list[str] = []

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        got = []
        for x in inputs[t]:
            conn.request("POST", f"/v2/models/{server.model}/infer", json.dumps(_v2_body(name, x)).encode(),
                         {"content-type": "application/json"})
            r = conn.getresponse()
            body = json.loads(r.read())
            if r.status != 200:
                errors.append(f"{r.status}: {body}")
                got.append(None)
                continue
            o = next(o for o in body["outputs"] if o["name"] == out_name)
            got.append(np.asarray(o["data"], np.float32).reshape(o["shape"]))
        conn.close()
        return got

    with ThreadPoolExecutor(n_threads) as ex:
        results = list(ex.map(worker, range(n_threads)))
    assert errors == []
    for t in range(n_threads):
        xs = inputs[t]
        if portable:
            want = [predictor.predict_proba(x).astype(np.float32) for x in xs]
        else:
            want = [predictor.run({name: x})[sess.get_outputs()[0].name] for x in xs]
        for g, w in zip(results[t], want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)  # its own rows, in its own order
    after = _metrics(server)
    requests = _metric(after, "seqdeploy_batch_requests_sum", route="v2") - _metric(before, "seqdeploy_batch_requests_sum", route="v2")
    calls = _metric(after, "seqdeploy_batch_requests_count", route="v2") - _metric(before, "seqdeploy_batch_requests_count", route="v2")
    rows = _metric(after, "seqdeploy_rows_total", route="v2") - _metric(before, "seqdeploy_rows_total", route="v2")
    assert requests == n_threads * n_requests
    assert rows == sum(len(x) for xs in inputs for x in xs)
    assert calls < requests / 2, (calls, requests)  # requests were coalesced: on average > 2 per onnxruntime call
    assert _metric(after, "seqdeploy_batch_rows_bucket", route="v2", le="1.0") < calls  # some batches > 1 row
    assert _metric(after, "seqdeploy_errors_total", code="500") == 0
    assert _metric(after, "seqdeploy_queue_seconds_count", route="v2") >= requests
    assert _metric(after, "seqdeploy_inference_seconds_count", route="v2") >= calls


# --------------------------------------------------------------------------- lifecycle


def test_sigterm_during_load_answers_what_was_accepted_then_exits_0(serve_bundle, graph, predictor, golden):
    # a long batching delay keeps requests queued in the server when SIGTERM lands
    s = Server(serve_bundle, "--max-delay-ms", "300", "--max-batch-size", "4096", "--no-grpc")
    name, x = v2_inputs(graph, golden, 3)
    sess, portable = graph
    out_name = "probabilities" if portable else sess.get_outputs()[0].name
    want = expected_v2(graph, predictor, golden, golden["raw"][:3])[out_name]
    stop_at: list[float] = []
    log: list[tuple[float, str]] = []
    lock = threading.Lock()

    def worker():
        for _ in range(40):
            if stop_at and time.perf_counter() > stop_at[0] + 5:
                return
            try:
                status, body = post(s, f"/v2/models/{s.model}/infer", _v2_body(name, x))
            except (ConnectionError, OSError, http.client.HTTPException):
                with lock:
                    log.append((time.perf_counter(), "refused"))
                time.sleep(0.05)
                continue
            done = time.perf_counter()
            if status == 200:
                o = next(o for o in body["outputs"] if o["name"] == out_name)
                ok = np.allclose(np.asarray(o["data"], np.float32).reshape(o["shape"]), want, rtol=1e-5, atol=1e-6)
                with lock:
                    log.append((done, "ok" if ok else "WRONG"))
            else:
                with lock:
                    log.append((done, f"status {status}"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop_at.append(time.perf_counter())
    s.proc.send_signal(signal.SIGTERM)
    rc, out, err = s.stop(timeout=60)
    for t in threads:
        t.join(60)
    assert rc == 0, err[-2000:]
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped"
    kinds = {k for _, k in log}
    assert kinds <= {"ok", "refused"}, kinds  # no wrong answer, no 5xx: only answered or not accepted
    answered_after = [t for t, k in log if k == "ok" and t > stop_at[0]]
    assert stopped["drained_requests"] >= 1 and len(answered_after) >= 1  # queued at SIGTERM, still answered
    assert sum(k == "ok" for _, k in log) >= 8


def test_tampered_bundle_is_refused_before_listening(serve_bundle, tmp_path):
    bad = tmp_path / "b"
    shutil.copytree(serve_bundle, bad)
    m = json.loads((bad / "manifest.json").read_text())
    f = bad / m["deployment_artifact"]
    data = bytearray(f.read_bytes())
    data[-20] ^= 0xFF
    f.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "seqdeploy", "serve", str(bad), "--http-port", "0", "--grpc-port", "0"],
                       cwd=REPO, env=SERVER_ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "sha256" in r.stderr and "Traceback" not in r.stderr
    assert "serving on" not in r.stderr


def test_missing_bundle_and_busy_port_are_one_line_errors(serve_bundle, tmp_path):
    import socket

    r = subprocess.run([sys.executable, "-m", "seqdeploy", "serve", str(tmp_path / "nope")], cwd=REPO, env=SERVER_ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "seqdeploy", "serve", str(serve_bundle), "--http-port", str(port),
                            "--no-grpc"], cwd=REPO, env=SERVER_ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_options_are_checked():
    from seqdeploy.errors import UsageError
    from seqdeploy.serve import ServeOptions

    assert ServeOptions().host == "127.0.0.1"
    with pytest.raises(UsageError, match="http_port"):
        ServeOptions(http_port=70000).check()
    with pytest.raises(UsageError, match="max_batch_size"):
        ServeOptions(max_batch_size=0).check()
    with pytest.raises(UsageError, match="grpc_port"):
        ServeOptions(http_port=9000, grpc_port=9000).check()

"""Load on `seqdeploy serve`: requests/s and p50/p99 latency by concurrency, batching on/off, REST vs gRPC.

One bundle (default: the seed spec, trained briefly into a temporary directory, or
``--bundle DIR``), one server process per batching setting, on 127.0.0.1 ports.
The clients are asyncio tasks in this process (aiohttp for REST, tritonclient's
gRPC asyncio client), each sending one distinct row per request for ``--seconds``
after a short warm-up; the in-process ``Predictor`` (no network) on the same rows
at concurrency 1 is the floor. Both servers run at once and the cells are
interleaved over ``--rounds`` rounds (medians reported). Client and server share
the machine's cores, so read ratios within one run, not absolute numbers.

    .venv/bin/python benchmarks/serve_load.py [--bundle runs/breast_cancer_mlp | --spec SPEC] [--seconds 3]
                     [--concurrency 1,8,32,128] [--rounds 3] [--kserve-routes] [--lean] [--json out.json]

``--kserve-routes`` adds a server answering infer/predict through KServe's FastAPI
endpoints (pydantic models, routing, timing middleware) and gRPC dataplane instead of
seqdeploy's direct handlers; ``--lean`` adds a bare ASGI app (uvicorn + httptools,
orjson) around the same ServedModel and MicroBatcher (REST only). Both measure
KServe's per-request cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_bundle(tmp: Path, spec: Path) -> Path:
    from seqdeploy.app.pipeline import PipelineOptions, run_pipeline

    res = run_pipeline(spec, out=tmp / spec.stem, stages="train,export,verify", options=PipelineOptions(epochs=2))
    return res.run_dir


class Server:
    def __init__(self, bundle: Path, batching: bool, delay_ms: float, *extra: str):
        cmd = [sys.executable, "-m", "seqdeploy", "serve", str(bundle), "--http-port", "0", "--grpc-port", "0",
               "--json", "--max-delay-ms", str(delay_ms), "--batching" if batching else "--no-batching", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        ready = json.loads(self.proc.stdout.readline())
        self.model, self.http_port, self.grpc_port = ready["models"][0], ready["http_port"], ready["grpc_port"]

    def metrics(self) -> dict[str, float]:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10).read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("seqdeploy_batch_requests_") and 'route="v2"' in line:
                out[line.split("{")[0]] = out.get(line.split("{")[0], 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


class LeanServer:
    """The same ServedModel + MicroBatcher behind a bare ASGI app on uvicorn (REST v2 JSON only): no KServe.

    Benchmark-only: it measures what KServe's dataplane (FastAPI routing, pydantic models,
    InferRequest/InferResponse conversions, middleware) costs per request.
    """

    def __init__(self, bundle: Path, batching: bool, delay_ms: float):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.http_port = sock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, __file__, "--lean-server", str(bundle), str(self.http_port),
                                      "on" if batching else "off", str(delay_ms)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.model = self.proc.stdout.readline().strip()

    def metrics(self) -> dict[str, float]:
        return {}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def run_lean_server(bundle: str, port: int, batching: bool, delay_ms: float) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import orjson
    import uvicorn

    from seqdeploy.serve.batching import MicroBatcher
    from seqdeploy.serve.model import ServedModel

    model = ServedModel.load(bundle)
    batcher = MicroBatcher(model.run_v2, max_batch_rows=64, max_delay=delay_ms / 1000, enabled=batching,
                           executor=ThreadPoolExecutor(1))
    np_types = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": object}
    specs = {t.name: t for t in model.outputs}
    path = f"/v2/models/{model.name}/infer"

    async def app(scope, receive, send):
        body, more = b"", True
        while more:
            m = await receive()
            body += m.get("body", b"")
            more = m.get("more_body", False)
        if scope["path"] != path:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        req = orjson.loads(body)
        tensors = [(i["name"], i["datatype"], np.asarray(i["data"], dtype=np_types[i["datatype"]]).reshape(i["shape"]))
                   for i in req["inputs"]]
        feeds, rows = model.check_v2(tensors, 4096)
        outs = await batcher.submit(feeds, rows)
        resp = orjson.dumps({"model_name": model.name, "outputs": [
            {"name": n, "datatype": specs[n].datatype, "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in outs.items()]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(resp)).encode())]})
        await send({"type": "http.response.body", "body": resp})

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", loop="uvloop",
                            http="httptools", access_log=False)
    server = uvicorn.Server(config)

    async def main():
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print(model.name, flush=True)
        await task

    asyncio.run(main())


def _summary(lat: list[float], seconds: float, errors: int) -> dict:
    lat_ms = np.asarray(lat) * 1e3
    return {"requests": len(lat), "errors": errors, "rps": round(len(lat) / seconds, 1),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 3) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 3) if len(lat) else None}


async def _closed_loop(send: Callable[[int], Awaitable[bool]], conc: int, seconds: float, warmup: float) -> dict:
    """``conc`` workers each sending request ``i, i + conc, ...`` back to back (``send(i)`` -> ok) for ``warmup``
    then ``seconds``; latencies and errors of the requests started after the warm-up."""
    lat: list[float] = []
    errors = 0
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds

    async def worker(k: int) -> None:
        nonlocal errors
        i = k
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            ok = await send(i)
            t1 = time.perf_counter()
            if t0 >= t_measure:
                if ok:
                    lat.append(t1 - t0)
                else:
                    errors += 1
            i += conc

    await asyncio.gather(*(worker(k) for k in range(conc)))
    return _summary(lat, seconds, errors)


async def _load_rest(server: Server, name: str, rows: np.ndarray, conc: int, seconds: float, warmup: float) -> dict:
    import aiohttp

    url = f"http://127.0.0.1:{server.http_port}/v2/models/{server.model}/infer"
    bodies = [json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [1, *r.shape],
                                      "data": r.ravel().tolist()}]}).encode() for r in rows]
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn, headers={"content-type": "application/json"}) as s:
        async def send(i: int) -> bool:
            async with s.post(url, data=bodies[i % len(bodies)]) as r:
                await r.read()
                return r.status == 200

        return await _closed_loop(send, conc, seconds, warmup)


async def _load_grpc(server: Server, name: str, rows: np.ndarray, conc: int, seconds: float, warmup: float) -> dict:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    inputs = []
    for r in rows:
        inp = grpcclient.InferInput(name, [1, *r.shape], "FP32")
        inp.set_data_from_numpy(r[None].astype(np.float32))
        inputs.append(inp)

    async def send(i: int) -> bool:
        try:
            await client.infer(server.model, [inputs[i % len(inputs)]])
            return True
        except Exception:  # noqa: BLE001 - counted
            return False

    try:
        return await _closed_loop(send, conc, seconds, warmup)
    finally:
        await client.close()


def _median(runs: list[dict]) -> dict:
    out = {"rounds": len(runs), "errors": sum(r["errors"] for r in runs)}
    for k in ("rps", "p50_ms", "p99_ms", "requests_per_call"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = round(statistics.median(vals), 3) if vals else None
    return out


def _predictor_floor(bundle: Path, rows: np.ndarray, seconds: float) -> dict:
    from seqdeploy.runtime.predictor import Predictor

    p = Predictor.from_bundle(bundle)
    lat = []
    t_end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end:
        x = rows[i % len(rows)][None]
        t0 = time.perf_counter()
        p.predict_proba(x)
        lat.append(time.perf_counter() - t0)
        i += 1
    return _summary(lat, seconds, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a bundle to serve (default: --spec trained for 2 epochs)")
    ap.add_argument("--spec", type=Path, default=ROOT / "models" / "breast_cancer_mlp.toml")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--delay-ms", type=float, default=1.0, help="max batching delay of the batching-on server")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--kserve-routes", action="store_true",
                    help="also time a server answering through KServe's FastAPI endpoints and gRPC dataplane")
    ap.add_argument("--lean", action="store_true", help="also time a bare ASGI app with the same batcher (REST)")
    ap.add_argument("--lean-server", nargs=4, metavar=("BUNDLE", "PORT", "BATCHING", "DELAY_MS"), help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.lean_server:
        b, port, batching, delay = args.lean_server
        return run_lean_server(b, int(port), batching == "on", float(delay))
    concs = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    try:
        bundle = args.bundle or build_bundle(tmp, args.spec)
        from seqdeploy.serve.model import ServedModel

        served = ServedModel.load(bundle)
        if len(served.inputs) != 1 or served.inputs[0].datatype != "FP32":
            raise SystemExit(f"{bundle}: this benchmark sends one FP32 input; the served graph takes "
                             f"{[t.as_dict() for t in served.inputs]}")
        name = served.inputs[0].name
        golden = np.load(bundle / "golden.npz")
        raw = golden["raw"].astype(np.float32)
        rng = np.random.default_rng(0)
        scale = rng.uniform(0.95, 1.05, (512,) + (1,) * (raw.ndim - 1))
        rows = (raw[rng.integers(len(raw), size=512)] * scale).astype(np.float32)
        floor = [_predictor_floor(bundle, rows, args.seconds) for _ in range(args.rounds)]
        results: list[dict] = [{"runner": "in-process Predictor.predict_proba", "protocol": "-", "batching": "-",
                                "concurrency": 1, **_median(floor)}]
        # both servers stay up; cells are interleaved (on/off alternate, order flips every round) so drift on a
        # shared machine hits both alike; each cell's numbers are medians over rounds
        servers = {"on": Server(bundle, True, args.delay_ms), "off": Server(bundle, False, args.delay_ms)}
        if args.kserve_routes:
            servers["kserve-on"] = Server(bundle, True, args.delay_ms, "--kserve-routes")
        if args.lean:
            servers["lean-on"] = LeanServer(bundle, True, args.delay_ms)
        cells: dict[tuple[str, int, str], list[dict]] = {}
        try:
            for rnd in range(args.rounds):
                order = tuple(servers) if rnd % 2 == 0 else tuple(reversed(servers))
                for conc in concs:
                    for proto, fn in (("rest", _load_rest), ("grpc", _load_grpc)):
                        for mode in order:
                            if mode.startswith("lean") and proto != "rest":
                                continue
                            server = servers[mode]
                            before = server.metrics()
                            r = asyncio.run(fn(server, name, rows, conc, args.seconds, args.warmup))
                            after = server.metrics()
                            calls = after.get("seqdeploy_batch_requests_count", 0) - before.get("seqdeploy_batch_requests_count", 0)
                            reqs = after.get("seqdeploy_batch_requests_sum", 0) - before.get("seqdeploy_batch_requests_sum", 0)
                            r["requests_per_call"] = round(reqs / calls, 2) if calls else None
                            cells.setdefault((proto, conc, mode), []).append(r)
                            print(json.dumps({"round": rnd, "protocol": proto, "concurrency": conc, "batching": mode,
                                              **r}), file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                rc = server.stop()
                assert rc == 0 or isinstance(server, LeanServer), f"server exited {rc}"  # seqdeploy serve drains, exits 0
        for conc in concs:
            for proto in ("rest", "grpc"):
                for mode in servers:
                    if (proto, conc, mode) in cells:
                        runner = {"lean": "bare ASGI + same batcher (no KServe)",
                                  "kserve": "seqdeploy serve --kserve-routes (KServe's endpoints)"}.get(
                            mode.split("-")[0], "seqdeploy serve")
                        results.append({"runner": runner,
                                        "protocol": proto, "batching": mode.split("-")[-1], "concurrency": conc,
                                        **_median(cells[(proto, conc, mode)])})
        hdr = "| runner | protocol | batching | concurrency | req/s | p50 ms | p99 ms | requests per onnxruntime call | errors |"
        print(f"medians of {args.rounds} interleaved rounds x {args.seconds:g} s per cell; 1 row per request")
        print(hdr)
        print("|" + "---|" * 9)
        for r in results:
            print(f"| {r['runner']} | {r['protocol']} | {r['batching']} | {r['concurrency']} | {r['rps']:,.0f} | "
                  f"{r['p50_ms']} | {r['p99_ms']} | {r.get('requests_per_call') or '-'} | {r['errors']} |")
        if args.json:
            args.json.write_text(json.dumps({"results": results}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

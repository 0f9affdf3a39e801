"""examples/web in a real headless Chromium: the page runs the portable ONNX file with onnxruntime-web (wasm).

The page, onnxruntime-web's dist directory and the bundles are served from 127.0.0.1;
Chromium prints the DOM once the page is done (``--dump-dom`` with a virtual-time
budget) and the test reads the JSON the page writes into ``<pre id="result">``.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from portable_bundles import GOLDEN, write_golden
from seqdeploy.runtime.predictor import Predictor
from test_manifest import build_bundle, sample_raw

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "examples/web"
DIST = WEB / "node_modules/onnxruntime-web/dist"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=30000")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("BROWSER NOT TESTED: no Chromium on PATH (Debian: `apt-get install chromium`, or `make js` as root)")


class Site(NamedTuple):
    browser: str
    url: str  # the page
    profiles: Path  # one fresh Chromium profile per page load goes in here
    bundles: dict[str, Path]  # served at bundles/<kind>/


class Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".onnx": "application/octet-stream"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")  # session scope: checked before the bundles are trained
def browser() -> str:
    exe = chromium_path()
    if not (DIST / "ort.wasm.min.js").is_file():
        pytest.skip(f"BROWSER NOT TESTED: onnxruntime-web is not installed in {WEB.relative_to(REPO)}: run `make js`")
    return exe


@pytest.fixture(scope="module")
def site(browser, portable_bundles, tmp_path_factory):
    """http://127.0.0.1:PORT/ serving the page, its node_modules and bundles/<kind>/."""
    bundles = dict(portable_bundles)
    bundles["window"] = build_bundle(tmp_path_factory.mktemp("series"), "window")  # regression: a prediction
    write_golden(bundles["window"], sample_raw("window", n=5, seed=7))
    bundles["tampered"] = shutil.copytree(portable_bundles["tabular"], tmp_path_factory.mktemp("bad") / "b")
    with open(bundles["tampered"] / "model.portable.onnx", "ab") as fh:
        fh.write(b"\0")
    root = tmp_path_factory.mktemp("site")
    for name in ("index.html", "app.js", "node_modules"):
        (root / name).symlink_to(WEB / name)
    (root / "bundles").mkdir()
    for kind, path in bundles.items():
        (root / "bundles" / kind).symlink_to(path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(browser, f"http://127.0.0.1:{server.server_address[1]}/index.html",
                   tmp_path_factory.mktemp("chrome"), bundles)
    finally:
        server.shutdown()
        server.server_close()


def page(site: Site, **query: str) -> tuple[dict, str]:
    """Load the page with ``query`` in Chromium; return the JSON in #result and the page's text."""
    profile = site.profiles / f"p{len(os.listdir(site.profiles))}"
    url = f"{site.url}?{urllib.parse.urlencode(query)}"
    proc = subprocess.Popen([site.browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        dom, _ = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the browser's own session: helpers it left, or all on a timeout
        except ProcessLookupError:
            pass
        proc.wait()
    m = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert m and m.group(1), f"the page wrote no result; DOM starts: {dom[:1500]}"
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    return json.loads(html.unescape(m.group(1))), " ".join(text.split())


@pytest.mark.parametrize("kind", ["text", "tabular", "window", "int8"])
def test_self_check_shows_golden_answers(site, kind):
    result, text = page(site, bundle=f"bundles/{kind}", check="1")
    assert result["ok"] is True and result["mode"] == "check", result
    golden = json.loads((site.bundles[kind] / GOLDEN).read_text())["outputs"]
    got = result["outputs"]
    assert set(got) == set(golden) == ({"prediction"} if kind == "window" else {"label", "class_id", "probabilities"})
    for name, want in golden.items():
        assert got[name]["shape"] == want["shape"]
        if want["dtype"] in ("str", "int64"):
            assert got[name]["data"] == want["data"], name
        else:
            np.testing.assert_allclose(got[name]["data"], want["data"], atol=1e-4, rtol=1e-6)
    assert f"Self-check passed: {want['shape'][0]} rows" in text


def test_typed_review_and_pasted_row_give_python_answers(site):
    portable_bundles = site.bundles
    review = "The acting was GREAT, the plot… not so much 😀 — still, I loved the ending!!!"
    result, text = page(site, bundle="bundles/text", input=review)
    want = Predictor.from_bundle(portable_bundles["text"]).answers([review])
    assert result["ok"] and result["input"]["data"] == [review]
    assert result["outputs"]["label"]["data"] == [want["label"][0]]
    np.testing.assert_allclose(result["outputs"]["probabilities"]["data"], want["probabilities"][0], atol=1e-5)
    assert f"{want['label'][0]} negative" in text  # the label, then the bars from the first class

    p = Predictor.from_bundle(portable_bundles["tabular"])
    golden = json.loads((portable_bundles["tabular"] / GOLDEN).read_text())["inputs"]["features"]
    row = np.asarray(golden["data"][30:60], np.float32)
    result, _ = page(site, bundle="bundles/tabular", input=", ".join(repr(float(v)) for v in row))
    want = p.answers(row[None])
    assert result["ok"] and result["outputs"]["label"]["data"] == [want["label"][0]]
    np.testing.assert_allclose(result["outputs"]["probabilities"]["data"], want["probabilities"][0], atol=1e-5)

    # pasted from a spreadsheet: a header line (other column order, an extra column) and tab-separated rows
    names = p.pre.feature_names
    rows = np.asarray(golden["data"], np.float32).reshape(golden["shape"])[:3]
    pasted = "\n".join(["id\t" + "\t".join(names[::-1])] + [f"{i}\t" + "\t".join(repr(float(v)) for v in r[::-1])
                                                           for i, r in enumerate(rows)])
    result, text = page(site, bundle="bundles/tabular", input=pasted)
    want = p.answers(rows)
    assert result["ok"] and result["outputs"]["label"]["data"] == list(want["label"]), result
    np.testing.assert_allclose(np.reshape(result["outputs"]["probabilities"]["data"], (3, 2)), want["probabilities"],
                               atol=1e-5)
    assert f"{want['label'][0]} (first of 3 rows)" in text

    result, text = page(site, bundle="bundles/tabular", input="1,2,abc")  # a typo, not a header
    assert result == {"ok": False, "mode": "predict", "error": "the row has 3 values; expected 30 "
                                                             "(mean_radius, mean_texture, mean_perimeter, ...)"}
    assert "the row has 3 values" in text


def test_missing_or_tampered_bundle_is_refused(site):
    result, _ = page(site, bundle="bundles/missing", check="1")
    assert not result["ok"] and "manifest.json answered HTTP 404" in result["error"]
    result, text = page(site, bundle="bundles/tampered", check="1")
    assert not result["ok"] and "model.portable.onnx: sha256" in result["error"], result
    assert "differs from the manifest" in text and "The bundle could not be loaded." in text


def test_numeric_and_categorical_bundle_in_the_browser(browser, customers_bundle, tmp_path):
    """Two raw inputs (numeric features + categories): the self-check and a pasted row with an unseen category."""
    from portable_bundles import customer_rows, typed_customers

    run = customers_bundle
    rows = customer_rows(6)
    rows[2]["region"] = "atlantis"  # never seen in training
    want = Predictor.from_bundle(run).answers(typed_customers(rows))
    header = list(rows[0])
    pasted = "\n".join([", ".join(header)] + [", ".join(r[h] for h in header) for r in rows])
    root = tmp_path / "site"
    root.mkdir()
    for name in ("index.html", "app.js", "node_modules"):
        (root / name).symlink_to(WEB / name)
    (root / "bundles").mkdir()
    (root / "bundles" / "customers").symlink_to(run)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        site = Site(browser, f"http://127.0.0.1:{server.server_address[1]}/index.html", tmp_path / "chrome",
                    {"customers": run})
        site.profiles.mkdir()
        result, text = page(site, bundle="bundles/customers", input=pasted)
    finally:
        server.shutdown()
        server.server_close()
    assert result["ok"], result
    assert result["outputs"]["label"]["data"] == [str(v) for v in want["label"]]
    np.testing.assert_allclose(np.reshape(result["outputs"]["probabilities"]["data"], want["probabilities"].shape),
                               want["probabilities"], atol=1e-5)



@pytest.fixture(scope="module")
def string_site(browser, string_bundles, tmp_path_factory):
    """The page and the string-model bundles (string_bundles.py) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("strings_site")
    for name in ("index.html", "app.js", "node_modules"):
        (root / name).symlink_to(WEB / name)
    (root / "bundles").mkdir()
    for kind, path in string_bundles.items():
        (root / "bundles" / kind).symlink_to(path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Site(browser, f"http://127.0.0.1:{server.server_address[1]}/index.html",
                   tmp_path_factory.mktemp("chrome_strings"), dict(string_bundles))
    finally:
        server.shutdown()
        server.server_close()


def test_string_lookup_model_in_the_browser(string_site):
    """A Keras model taking raw strings (StringLookup: ai.onnx.ml LabelEncoder) answers like Python in onnxruntime-web."""
    bundle = string_site.bundles["lookup"]
    result, text = page(string_site, bundle="bundles/lookup", check="1")
    assert result["ok"] is True and result["mode"] == "check", result
    golden = json.loads((bundle / GOLDEN).read_text())["outputs"]
    assert result["outputs"]["label"]["data"] == golden["label"]["data"]
    np.testing.assert_allclose(result["outputs"]["probabilities"]["data"], golden["probabilities"]["data"], atol=1e-5)
    result, _ = page(string_site, bundle="bundles/lookup", input="blue")
    want = Predictor.from_bundle(bundle).answers(["blue"])
    assert result["ok"] and result["outputs"]["label"]["data"] == [want["label"][0]]
    np.testing.assert_allclose(result["outputs"]["probabilities"]["data"], want["probabilities"][0], atol=1e-5)


def test_contrib_ops_model_is_refused_in_the_browser(string_site):
    """TextVectorization's regex ops (onnxruntime-extensions) do not exist in onnxruntime-web: the page says what to do."""
    result, text = page(string_site, bundle="bundles/text", check="1")
    assert not result["ok"], result
    assert "cannot run here" in result["error"] and "StringRegexReplace" in result["error"], result
    assert "seqdeploy serve" in result["error"]


def test_feature_space_bundle_in_the_browser(string_site):
    """FeatureSpace inside the model (int, string and float raw inputs, one per feature): the golden rows."""
    result, text = page(string_site, bundle="bundles/features", check="1")
    assert result["ok"] is True, result
    golden = json.loads((string_site.bundles["features"] / GOLDEN).read_text())["outputs"]
    assert result["outputs"]["label"]["data"] == golden["label"]["data"]
    np.testing.assert_allclose(result["outputs"]["probabilities"]["data"], golden["probabilities"]["data"], atol=1e-5)

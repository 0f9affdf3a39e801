"""examples/kserve: the manifests and the Dockerfile only use options `seqdeploy serve` has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seqdeploy.app.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "kserve"


def _serve_options() -> set[str]:
    res = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return set(re.findall(r"--[a-z][a-z-]+", res.output))


@pytest.mark.parametrize("name", ["inferenceservice-rest.yaml", "inferenceservice-grpc.yaml"])
def test_inferenceservice_args_are_serve_options_and_ports_match(name):
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    (container,) = doc["spec"]["predictor"]["containers"]
    args = container["args"]
    flags = [a for a in args if a.startswith("--")]
    assert set(flags) <= _serve_options(), set(flags) - _serve_options()
    (port,) = container["ports"]
    if port.get("name") == "h2c":  # gRPC
        assert args[args.index("--grpc-port") + 1] == str(port["containerPort"])
    else:
        assert args[args.index("--http-port") + 1] == str(port["containerPort"])
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_triton_inferenceservice_and_dockerfile():
    doc = yaml.safe_load((EXAMPLES / "inferenceservice-triton.yaml").read_text())
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["protocolVersion"] == "v2"
    text = (EXAMPLES / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert entry[:2] == ["seqdeploy", "serve"] and entry[entry.index("--host") + 1] == "0.0.0.0"
    assert {a for a in entry + cmd if a.startswith("--")} <= _serve_options()
    assert "[cli,serve]" in text  # the image installs no TensorFlow

"""Shared fixtures: tiny trained run directories, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
# exports keep every exact graph cleanup without timing it (timing decides nothing in tests; the check itself is
# tested with injected times in test_export_optimize.py)
os.environ["SEQDEPLOY_CLEANUP_CHECK_S"] = "0"

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


@pytest.fixture(scope="session")
def trained_mlp_run(tmp_path_factory) -> Path:
    """The seed spec trained for 3 epochs: a real run directory for downstream stages."""
    from seqdeploy.train.local import train

    out = tmp_path_factory.mktemp("runs") / "breast_cancer_mlp"
    train(MODELS / "breast_cancer_mlp.toml", out=out, epochs=3)
    return out


@pytest.fixture(scope="session")
def portable_bundles(trained_mlp_run, tmp_path_factory) -> dict[str, Path]:
    """``{"tabular", "text"}``: exported bundles with golden_portable.json (the Node and browser clients' tests)."""
    from portable_bundles import build

    return build(tmp_path_factory.mktemp("portable"), trained_mlp_run)


@pytest.fixture(scope="session")
def customers_bundle(tmp_path_factory) -> Path:
    """A bundle with two raw inputs (numeric columns + categories), for the Node and browser clients' tests."""
    from portable_bundles import customers

    return customers(tmp_path_factory.mktemp("customers"))


@pytest.fixture(scope="session")
def keras_zoo(tmp_path_factory) -> dict[str, Path]:
    """keras-io-style models trained elsewhere (tests/keras_zoo.py), saved once: name -> .keras path, plus
    ``"layers"`` -> the custom-objects file that defines the Transformer's layers."""
    from keras_zoo import build_zoo

    root = tmp_path_factory.mktemp("zoo")
    paths = build_zoo(root)
    return paths | {"layers": root / "zoo_layers.py"}


@pytest.fixture(scope="session")
def string_bundles(tmp_path_factory) -> dict[str, Path]:
    """``{"lookup", "text", "features"}``: Keras models taking raw strings, bundled (string_bundles.py)."""
    from string_bundles import build

    root = tmp_path_factory.mktemp("strings")
    return {kind: build(root, kind) for kind in ("lookup", "text", "features")}


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for every Ray test (scoring and training): 2 CPUs, a small object store, no dashboard."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()

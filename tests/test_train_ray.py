"""`seqdeploy train --engine ray`: data-parallel training on Ray Train workers.

The refusals run in the default suite (no Ray is started). The training runs start
a real local Ray (2 CPUs) and two workers that each import TensorFlow: a minute or
more on a 2-core machine, so they are marked slow. They compare the Ray run with
local training of the same spec and epochs, and kill one worker mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train")
from typer.testing import CliRunner  # noqa: E402

from seqdeploy.app.cli import app  # noqa: E402
from seqdeploy.errors import UsageError  # noqa: E402
from seqdeploy.train import ENGINES, train_with  # noqa: E402
from seqdeploy.train.ray import train_ray  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "models" / "breast_cancer_mlp.toml"
EPOCHS = 12
runner = CliRunner()


def test_engines_are_local_and_ray():
    assert set(ENGINES) == {"local", "ray"}
    with pytest.raises(UsageError, match="'spark' is not known; expected one of local, ray"):
        train_with("spark", SPEC)


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, r"workers = 0; expected a whole number >= 1"),
    ({"workers": 2, "max_failures": -1}, r"max_failures = -1"),
    ({"workers": 10_000}, r"training rows cannot be shared by 10000 workers"),
])
def test_refused_before_ray_starts(tmp_path, kwargs, message):
    was_running = ray.is_initialized()
    with pytest.raises(UsageError, match=message):
        train_ray(SPEC, out=tmp_path / "run", epochs=1, **kwargs)
    assert ray.is_initialized() == was_running
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark"], "--engine 'spark' (expected local or ray)"),
    (["--workers", "2"], "--workers need --engine ray"),
    (["--address", "auto", "--storage", "/x"], "--address, --storage need --engine ray"),
])
def test_cli_refuses_bad_engine_options(tmp_path, args, message):
    result = runner.invoke(app, ["train", str(SPEC), "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from seqdeploy.train.local import train

    return train(SPEC, out=tmp_path_factory.mktemp("local") / "run", epochs=EPOCHS)


@pytest.mark.slow
def test_two_workers_match_local_training(local_ray, local_run, tmp_path):
    """Through the command line: `seqdeploy train SPEC --engine ray --workers 2 --json`."""
    import keras
    import numpy as np

    cli = runner.invoke(app, ["train", str(SPEC), "--engine", "ray", "--workers", "2", "--epochs", str(EPOCHS),
                              "--out", str(tmp_path / "run"), "--storage", str(tmp_path / "ray"), "--json"])
    assert cli.exit_code == 0, cli.output
    result = json.loads(cli.stdout)  # nothing but the result on stdout
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    local_info = json.loads((local_run.run_dir / "train.json").read_text())
    # the local run directory contract, plus the engine's own fields
    assert set(local_info) <= set(info)
    assert (info["engine"], info["workers"], info["restarts"]) == ("ray", 2, 0)
    assert (result["engine"], result["workers"], result["restarts"]) == ("ray", 2, 0)
    assert info["rows_per_worker"]["train"] == info["data"]["n_train"] // 2 == result["rows_per_worker"]
    assert info["data"]["n_train"] == local_info["data"]["n_train"]
    assert info["preprocessing"] == local_info["preprocessing"]
    assert info["epochs_run"] == len(info["history"]["loss"]) == len(info["history"]["val_loss"])
    assert info["history"]["loss"][-1] < info["history"]["loss"][0]
    # the same accuracy as local training, within noise
    assert result["test_metrics"] == info["test_metrics"]
    assert abs(result["test_metrics"]["accuracy"] - local_run.test_metrics["accuracy"]) <= 0.05
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.count_params() == local_run.parameters
    assert (tmp_path / "run" / "spec.toml").read_bytes() == SPEC.read_bytes()
    # each worker recorded its own process and every epoch it finished
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "ray").glob("*/workers/rank-*.json"))]
    assert [r["rank"] for r in records] == [0, 1]
    assert records[0]["pid"] != records[1]["pid"] and {r["epoch"] for r in records} == {info["epochs_run"]}
    assert np.isfinite(info["test_metrics"]["loss"])


@pytest.mark.slow
def test_killed_worker_resumes_from_its_last_checkpoint(local_ray, local_run, tmp_path):
    storage, killed = tmp_path / "ray", {}

    def kill_rank_1_after_epoch_2():
        deadline = time.monotonic() + 600
        while not killed and time.monotonic() < deadline:
            for record in storage.glob("*/workers/rank-1.json"):
                try:
                    rec = json.loads(record.read_text())
                except (OSError, ValueError):
                    continue
                if rec["epoch"] >= 2:
                    os.kill(rec["pid"], signal.SIGKILL)  # mid-epoch 3: the record is written at each epoch end
                    killed.update(rec)
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_rank_1_after_epoch_2, daemon=True)
    watcher.start()
    result = train_ray(SPEC, workers=2, out=tmp_path / "run", epochs=EPOCHS, storage=storage, max_failures=1)
    watcher.join(timeout=1)
    assert killed, "the worker was never seen finishing epoch 2"
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert result.restarts == info["restarts"] == 1
    # resumed from the newest checkpoint that was persisted when the worker died (epoch 1 or 2)
    assert 1 <= info["resumed_from_epochs"][0] <= killed["epoch"]
    assert info["epochs_run"] == EPOCHS and len(info["history"]["loss"]) == EPOCHS
    assert abs(result.test_metrics["accuracy"] - local_run.test_metrics["accuracy"]) <= 0.05
    new = json.loads(next(storage.glob("*/workers/rank-1.json")).read_text())
    assert new["pid"] != killed["pid"] and new["epoch"] == EPOCHS

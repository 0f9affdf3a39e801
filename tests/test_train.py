from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app
from seqdeploy.errors import DataError, SpecError
from seqdeploy.train.local import train

MODELS = Path(__file__).resolve().parent.parent / "models"
runner = CliRunner()


def test_run_directory_contract(trained_mlp_run):
    run = trained_mlp_run
    assert {"spec.toml", "model.keras", "train.json"} <= {p.name for p in run.iterdir()}
    info = json.loads((run / "train.json").read_text())
    assert info["task"] == "binary" and info["labels"] == ["malignant", "benign"]
    assert info["input"] == {"name": "features", "shape": [None, 30], "dtype": "float32"}
    assert info["preprocessing"]["kind"] == "standardize" and len(info["preprocessing"]["mean"]) == 30
    assert len(info["data"]["fingerprint"]) == 64 and info["seed"] == 42
    assert len(info["history"]["loss"]) == info["epochs_run"] == 3
    assert 0.0 <= info["test_metrics"]["accuracy"] <= 1.0
    assert {"tensorflow", "keras", "seqdeploy"} <= set(info["versions"])
    assert not list(run.glob("*.tmp*")) and not list(run.glob(".*"))


def test_training_is_deterministic_with_a_seed(tmp_path):
    a = train(MODELS / "breast_cancer_mlp.toml", out=tmp_path / "a", epochs=2, seed=3)
    b = train(MODELS / "breast_cancer_mlp.toml", out=tmp_path / "b", epochs=2, seed=3)
    assert a.history == b.history and a.test_metrics == b.test_metrics


@pytest.mark.parametrize("spec", sorted(p.stem for p in MODELS.glob("*.toml")))
def test_every_shipped_spec_trains_from_the_cli(spec, tmp_path):
    out = tmp_path / spec
    res = runner.invoke(app, ["train", str(MODELS / f"{spec}.toml"), "--out", str(out), "--epochs", "1", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["epochs_run"] == 1 and result["test_metrics"]
    assert (out / "model.keras").exists()


def _write_spec(tmp_path, layers: str, extra: str = "", data='source = "breast_cancer"') -> Path:
    p = tmp_path / "s.toml"
    p.write_text(f'name = "s"\n{extra}\n[data]\n{data}\n{layers}\n[compile]\nloss = "binary_crossentropy"\n'
                 '[fit]\nepochs = 1\n')
    return p


DENSE1 = '[[layers]]\ntype = "Dense"\nunits = 1\nactivation = "sigmoid"\n'


@pytest.mark.parametrize("layers, extra, message", [
    ('[[layers]]\ntype = "Dense1"\nunits = 1\n', "", "did you mean Dense"),
    ('[[layers]]\ntype = "Dense"\nunits = 1\nactivation = "sigmoidz"\n', "", r"layers\[0\] \(Dense\).*Keras says"),
    ('[[layers]]\ntype = "Dense"\nunitz = 1\n', "", r"layers\[0\] \(Dense\) rejected its arguments"),
    ('[[layers]]\ntype = "Conv2D"\nfilters = 2\nkernel_size = 3\n' + DENSE1, "", r"layers\[0\] \(Conv2D\) does not fit"),
    ('[[layers]]\ntype = "Dense"\nunits = 3\n', "", "outputs 3 values per sample"),
    (DENSE1, "[input]\nshape = [8, 8]", "does not fit the data"),
])
def test_bad_specs_fail_before_touching_the_run_dir(tmp_path, layers, extra, message):
    spec = _write_spec(tmp_path, layers, extra)
    with pytest.raises(SpecError, match=message):
        train(spec, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_nan_in_data_is_refused_before_training(tmp_path):
    rows = "\n".join(f"{i},{'nan' if i == 7 else i},{i % 2}" for i in range(30))
    (tmp_path / "d.csv").write_text("a,b,y\n" + rows + "\n")
    spec = _write_spec(tmp_path, DENSE1, data='source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"')
    with pytest.raises(DataError, match="non-finite"):
        train(spec, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_bad_spec_is_one_line_exit_2(tmp_path):
    spec = _write_spec(tmp_path, '[[layers]]\ntype = "Dense1"\nunits = 1\n')
    res = runner.invoke(app, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "Traceback" not in res.output and "did you mean Dense" in res.output
    res = runner.invoke(app, ["train", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_help_does_not_import_tensorflow_and_is_fast():
    code = ("import sys, time; t = time.perf_counter(); from seqdeploy.app.cli import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(time.perf_counter() - t, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"], out
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "seqdeploy", "--help"], capture_output=True, check=True)
    # generous bound for a loaded 2-core machine; typically ~0.3 s
    assert time.perf_counter() - start < 5.0


def test_a_missing_toolchain_module_is_an_install_hint_not_a_traceback(monkeypatch, tmp_path):
    import seqdeploy.train.local as train_mod

    def no_keras(*a, **k):
        raise ModuleNotFoundError("No module named 'keras'", name="keras")

    monkeypatch.setattr(train_mod, "train", no_keras)
    res = runner.invoke(app, ["train", str(MODELS / "breast_cancer_mlp.toml"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "pip install 'seqdeploy[toolchain]'" in res.output
    assert "Traceback" not in res.output


def test_console_script_without_the_cli_extra_prints_the_install_hint():
    """The base install has no typer: `seqdeploy --help` says which extra to install (exit 2), no traceback."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['typer'] = None; sys.argv = ['seqdeploy', '--help']; "
            "from seqdeploy.app.console import main; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "pip install 'seqdeploy[cli]'" in out.stderr and "Traceback" not in out.stderr
    ok = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['seqdeploy', '--help']; "
                         "from seqdeploy.app.console import main; main()"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "train" in ok.stdout

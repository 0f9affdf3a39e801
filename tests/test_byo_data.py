"""Bring your own data: text columns, image folders, categorical columns, scaled regression targets.

Each example spec in models/ trains (1 epoch here), verifies (the portable graph on raw rows included), and
``seqdeploy predict`` on the raw files equals Keras on the inputs preprocessed as in training. Bad data is a
one-line error (exit 2) naming the file, row or column and the fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app
from seqdeploy.data import load_dataset
from seqdeploy.errors import DataError
from seqdeploy.preprocess import Categorical, Scale, Standardize, Tokenize, from_record
from seqdeploy.preprocess.image_files import BadImage, ImageLoader
from seqdeploy.spec import DataSpec

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
runner = CliRunner()


# --------------------------------------------------------------------------- helpers


def _spec(tmp: Path, data: str, layers: str = "", loss: str = "binary_crossentropy", name: str = "s") -> Path:
    layers = layers or '[[layers]]\ntype = "Dense"\nunits = 1\nactivation = "sigmoid"\n'
    p = tmp / f"{name}.toml"
    p.write_text(f'name = "{name}"\n[data]\n{data}\n{layers}\n[compile]\noptimizer = "adam"\nloss = "{loss}"\n'
                 f'metrics = ["accuracy"]\n[fit]\nepochs = 1\n', encoding="utf-8")
    return p


def _train_error(spec: Path, out: Path) -> str:
    res = runner.invoke(app, ["train", str(spec), "--out", str(out)])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in line, line
    return line


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            px = (rng.random((size, size)) * 60 + 150 * c).astype(np.uint8)
            Image.fromarray(px, mode="L").save(root / name / f"{i}.png")
    return root


# --------------------------------------------------------------------------- bad data: one line, exit 2


def test_bad_text_tables_are_one_line_errors(tmp_path):
    rows = [[f"r{i}", "" if i % 2 else "", "pos" if i % 2 else "neg"] for i in range(20)]
    _write_csv(tmp_path / "empty.csv", ["id", "review", "label"], rows)
    msg = _train_error(_spec(tmp_path, 'source = "csv"\npath = "empty.csv"\ntext = "review"\ntarget = "label"\n'
                                       'task = "binary"'), tmp_path / "r1")
    assert "text column 'review' is empty in all 20 rows" in msg and "empty.csv" in msg
    msg = _train_error(_spec(tmp_path, 'source = "csv"\npath = "empty.csv"\ntext = "comment"\ntarget = "label"\n'
                                       'task = "binary"'), tmp_path / "r2")
    assert "text column 'comment' not found" in msg and "['id', 'review', 'label']" in msg and "set [data] text" in msg
    # non-UTF-8 text: the line is named
    body = "id,review,label\n" + "".join(f"r{i},good film,pos\nq{i},bad film,neg\n" for i in range(6))
    (tmp_path / "latin.csv").write_bytes((body + "x,caf\xe9 cr\xe8me,pos\n").encode("latin-1"))
    msg = _train_error(_spec(tmp_path, 'source = "csv"\npath = "latin.csv"\ntext = "review"\ntarget = "label"\n'
                                       'task = "binary"'), tmp_path / "r3")
    assert "latin.csv: not UTF-8 text" in msg and "at line 14" in msg and "save the CSV as UTF-8" in msg


def _folder_error(tmp_path: Path, root: Path, extra: str = "", name: str = "img") -> str:
    spec = _spec(tmp_path, f'source = "images"\npath = "{root.name}"\nimage_size = 8\n{extra}',
                 '[[layers]]\ntype = "Flatten"\n[[layers]]\ntype = "Dense"\nunits = 2\nactivation = "softmax"\n',
                 loss="sparse_categorical_crossentropy", name=name)
    return _train_error(spec, tmp_path / f"run_{name}")


def test_bad_image_folders_are_one_line_errors(tmp_path):
    root = _image_folder(tmp_path / "photos")
    (root / "bird").mkdir()
    msg = _folder_error(tmp_path, root)
    assert "photos/bird: class folder has no images" in msg
    (root / "bird").rmdir()
    single = _image_folder(tmp_path / "single", classes=("cat",))
    msg = _folder_error(tmp_path, single, name="single")
    assert "only one class folder 'cat'" in msg and "at least two" in msg

    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    msg = _folder_error(tmp_path, root, name="corrupt")
    assert "dog/broken.png: not a readable image" in msg and "skip_bad_files = true" in msg
    bad.unlink()
    (root / "dog" / "notes.txt").write_text("not an image")
    msg = _folder_error(tmp_path, root, name="txt")
    assert "notes.txt: not an image file (suffix '.txt'" in msg
    # skip_bad_files skips and counts (train.json notes)
    res = runner.invoke(app, ["train", str(_spec(tmp_path, 'source = "images"\npath = "photos"\nimage_size = 8\n'
                                                           'skip_bad_files = true',
                                                 '[[layers]]\ntype = "Flatten"\n[[layers]]\ntype = "Dense"\nunits = 2'
                                                 '\nactivation = "softmax"\n', loss="sparse_categorical_crossentropy",
                                                 name="skip")), "--out", str(tmp_path / "skip"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["notes"] == [f"skipped 1 bad file(s), e.g. {root / 'dog' / 'notes.txt'}"]
    (root / "dog" / "notes.txt").unlink()

    for mode, expect in (("CMYK", "colour mode CMYK"), ("I;16", "mode I;16 (16-bit pixels"),
                         ("RGBA", "mode RGBA has transparency")):
        f = root / "cat" / f"odd_{mode.replace(';', '')}.png" if mode != "CMYK" else root / "cat" / "odd.jpg"
        Image.new(mode, (8, 8)).save(f)
        msg = _folder_error(tmp_path, root, 'alpha = "error"', name=f"mode{len(expect)}")
        assert f"{f}: " in msg and expect in msg, msg
        f.unlink()


def test_image_loading_rule_exif_palette_alpha(tmp_path):
    loader = ImageLoader(4, 6, 1, "nearest", "white")
    px = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    up = Image.fromarray(px, mode="L")
    # stored turned with an EXIF orientation tag: loads upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    up.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "exif.png", exif=exif)
    np.testing.assert_array_equal(loader.load(tmp_path / "exif.png"), px)
    # palette: expanded to its colours; RGB -> luma
    up.convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(loader.load(tmp_path / "p.png"), px)
    rgb = Image.new("RGB", (6, 4), (255, 0, 0))
    rgb.save(tmp_path / "red.png")
    assert loader.load(tmp_path / "red.png").tolist() == [[76] * 6] * 4  # 255 * 299/1000
    # alpha: composited over white (default) or black; fully transparent pixels become the background
    rgba = Image.new("RGBA", (6, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 10, 10, 255))
    rgba.save(tmp_path / "a.png")
    a = loader.load(tmp_path / "a.png")
    assert a[0, 0] == 10 and (a.reshape(-1)[1:] == 255).all()
    assert (ImageLoader(4, 6, 1, "nearest", "black").load(tmp_path / "a.png").reshape(-1)[1:] == 0).all()
    with pytest.raises(BadImage, match="has transparency"):
        ImageLoader(4, 6, 1, "nearest", "error").load(tmp_path / "a.png")
    # BMP and GIF (first frame) load like PNG
    up.save(tmp_path / "b.bmp")
    frames = [up.convert("P"), Image.fromarray(255 - px, mode="L").convert("P")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(loader.load(tmp_path / "b.bmp"), px)
    np.testing.assert_array_equal(loader.load(tmp_path / "anim.gif"),
                                  np.asarray(Image.open(tmp_path / "anim.gif").convert("L")))
    # resize with the recorded filter, RGB kept as 3 channels; greyscale replicated to RGB
    big = ImageLoader(2, 3, 3, "bilinear").load(tmp_path / "exif.png")
    assert big.shape == (2, 3, 3) and big.dtype == np.uint8 and (big[..., 0] == big[..., 2]).all()
    want = np.asarray(Image.fromarray(px, mode="L").convert("RGB").resize((3, 2), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(big, want)


def test_image_folder_source_rgb_non_square(tmp_path):
    root = _image_folder(tmp_path / "photos", classes=("b", "a", "c"), per_class=5)
    s = load_dataset(DataSpec(source="images", path=root, image_size=(6, 10), channels=3, task="multiclass"), seed=0)
    assert s.labels == ("a", "b", "c") and s.raw_test.dtype == np.uint8 and s.raw_test.shape[1:] == (6, 10, 3)
    k = from_record(s.preprocessing)
    assert isinstance(k, Scale) and k.model_shape == (6, 10, 3) and k.scale == pytest.approx(1 / 255)
    assert s.x_train.shape[1:] == (6, 10, 3) and float(s.x_train.max()) <= 1.0
    # the training pixels are the loader's pixels of the files, class ids in folder-name order
    loader = ImageLoader.from_scale(k)
    files = [(f, c) for c, name in enumerate(s.labels) for f in sorted((root / name).iterdir())]
    every = np.stack([k.apply(loader.load(f)[None])[0] for f, _ in files])
    ys = np.asarray([c for _, c in files])
    for x, y in zip(s.x_train, s.y_train):
        match = np.flatnonzero((every == x).reshape(len(every), -1).all(axis=1))
        assert len(match) >= 1 and y in ys[match]


def test_table_sources_infer_categorical_and_scale_regression_targets(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[float(rng.normal()), ["red", "blue", "green"][i % 3], 10 + 4 * rng.normal()] for i in range(60)]
    p = _write_csv(tmp_path / "t.csv", ["x", "colour", "y"], rows)
    s = load_dataset(DataSpec(source="csv", path=p, target="y", task="regression"), seed=0)
    assert any("['colour'] hold text: treated as categorical" in n for n in s.notes)
    k = from_record(s.preprocessing)
    assert isinstance(k, Categorical) and k.categorical_names == ("colour",) and k.width == 1 + 4
    y_train_units = np.asarray(k.postprocess(s.y_train.reshape(-1, 1))).reshape(-1)
    assert abs(float(np.mean(s.y_train))) < 1e-5 and abs(float(np.std(s.y_train)) - 1) < 1e-3  # standardised
    assert k.target_mean == pytest.approx(float(np.mean(y_train_units)), abs=1e-4)
    # numeric-only tables: Standardize with the target statistics
    p2 = _write_csv(tmp_path / "n.csv", ["x", "y"], [[r[0], r[2]] for r in rows])
    k2 = from_record(load_dataset(DataSpec(source="csv", path=p2, target="y", task="regression"), seed=0).preprocessing)
    assert isinstance(k2, Standardize) and k2.target_std > 1
    # JSONL and Parquet give the same splits as the CSV
    jl = tmp_path / "t.jsonl"
    jl.write_text("".join(json.dumps(dict(zip(["x", "colour", "y"], r))) + "\n" for r in rows))
    s_jl = load_dataset(DataSpec(source="jsonl", path=jl, target="y", task="regression"), seed=0)
    np.testing.assert_allclose(s_jl.x_train, s.x_train, rtol=1e-6)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [r[0] for r in rows], "colour": [r[1] for r in rows], "y": [r[2] for r in rows]}),
                   tmp_path / "t.parquet")
    s_pq = load_dataset(DataSpec(source="parquet", path=tmp_path / "t.parquet", target="y", task="regression"), seed=0)
    np.testing.assert_allclose(s_pq.x_train, s.x_train, rtol=1e-6)
    # a numeric column with a stray word is an error, not a category
    rows[5][0] = "oops"
    with pytest.raises(DataError, match="line 7, column 'x': 'oops' is not a number.*categorical"):
        load_dataset(DataSpec(source="csv", path=_write_csv(tmp_path / "b.csv", ["x", "colour", "y"], rows),
                              target="y", task="regression"), seed=0)


def test_text_column_tokenizer_is_fitted_on_the_training_split_only(tmp_path):
    rows = [[f"word{i} common", "a" if i % 2 else "b"] for i in range(40)]
    p = _write_csv(tmp_path / "t.csv", ["review", "label"], rows)
    s = load_dataset(DataSpec(source="csv", path=p, target="label", task="binary", text="review",
                              vocabulary_size=1000, sequence_length=3), seed=0)
    k = from_record(s.preprocessing)
    assert isinstance(k, Tokenize) and k.column == "review" and k.sequence_length == 3
    test_words = {t.split()[0] for t in s.raw_test.tolist()}
    assert not test_words & set(k.vocabulary)  # test-only words are OOV
    assert "common" in k.vocabulary and s.x_test[:, 0].tolist() == [1] * len(s.x_test)
    # the same column from JSONL gives the same record; a non-string cell names its line
    jl = tmp_path / "t.jsonl"
    jl.write_text("".join(json.dumps({"review": t, "label": y}) + "\n" for t, y in rows))
    s_jl = load_dataset(DataSpec(source="jsonl", path=jl, target="label", task="binary", text="review",
                                 vocabulary_size=1000, sequence_length=3), seed=0)
    assert s_jl.preprocessing == s.preprocessing
    jl.write_text(jl.read_text() + json.dumps({"review": 5, "label": "a"}) + "\n")
    with pytest.raises(DataError, match="t.jsonl: line 41, column 'review': 5 is not text"):
        load_dataset(DataSpec(source="jsonl", path=jl, target="label", task="binary", text="review"), seed=0)


# --------------------------------------------------------------------------- the example specs end to end


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from seqdeploy.app.pipeline import PipelineOptions, run_pipeline

    out = {}
    base = tmp_path_factory.mktemp("byo")
    for spec in ("reviews_csv_text", "digit_folders_cnn", "customers_mixed_mlp"):
        run_pipeline(MODELS / f"{spec}.toml", out=base / spec, stages="train,export,verify",
                     options=PipelineOptions(epochs=1))
        from seqdeploy.bundle.write import write_bundle_manifest

        write_bundle_manifest(base / spec)
        out[spec] = base / spec
    return out


def _keras(run: Path, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.models.load_model(run / "model.keras")(x, training=False))


def _probs(path: Path, classes: list[str]) -> tuple[list[dict], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return rows, np.asarray([[float(r[f"p_{c}"]) for c in classes] for r in rows])


def test_predict_on_a_text_csv_column_equals_keras(bundles, tmp_path):
    run = bundles["reviews_csv_text"]
    k = from_record(json.loads((run / "train.json").read_text())["preprocessing"])
    texts = ["The plot was not bad at all!", "the acting was terrible", "", "Émile said: GREAT ending 😀"]
    src = _write_csv(tmp_path / "new.csv", ["id", "review"], [[i, t] for i, t in enumerate(texts)])
    res = runner.invoke(app, ["predict", str(run), "--input", str(src), "--output", str(tmp_path / "p.csv"),
                              "--keep", "id", "--json"])
    assert res.exit_code == 0, res.output
    rows, probs = _probs(tmp_path / "p.csv", ["negative", "positive"])
    p = _keras(run, k.apply(k.coerce(texts)))[:, 0]
    np.testing.assert_allclose(probs[:, 1], p, atol=2e-6)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["prediction"] for r in rows] == ["positive" if v >= 0.5 else "negative" for v in p]
    # a file without the training column or a 'text' column names what it has
    bad = _write_csv(tmp_path / "bad.csv", ["id", "body"], [[1, "x"]])
    res = runner.invoke(app, ["predict", str(run), "--input", str(bad)])
    assert res.exit_code == 2 and "not the text column 'review'" in res.output
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,review\n1,fine\n2,tr\xe8s bien\n".encode("latin-1"))
    res = runner.invoke(app, ["predict", str(run), "--input", str(latin)])
    assert res.exit_code == 2 and "latin.csv: line 3 is not UTF-8 text" in res.output.strip()


def test_predict_on_an_image_folder_equals_keras(bundles, tmp_path):
    run = bundles["digit_folders_cnn"]
    folder = MODELS / "data" / "digit_images" / "3"
    res = runner.invoke(app, ["predict", str(run), "--input", str(folder), "--output", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    classes = [str(i) for i in range(10)]
    rows, probs = _probs(tmp_path / "p.csv", classes)
    files = sorted(folder.iterdir())
    assert [r["path"] for r in rows] == [str(f) for f in files]
    pre = from_record(json.loads((run / "train.json").read_text())["preprocessing"])
    assert isinstance(pre, Scale) and pre.raw_dtype == "uint8" and pre.resize == "bilinear"
    loader = ImageLoader.from_scale(pre)
    x = pre.apply(np.stack([loader.load(f) for f in files]), np.float32, (16, 16, 1))
    want = _keras(run, x)
    np.testing.assert_allclose(probs, want, atol=2e-6)
    assert [r["prediction"] for r in rows] == [classes[i] for i in want.argmax(axis=1)]
    # one image file; a corrupt file stops with its path, or is skipped and counted
    one = runner.invoke(app, ["predict", str(run), "--input", str(files[0])])
    assert one.exit_code == 0 and one.stdout.splitlines()[1].startswith(str(files[0]))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in files[:3]:
        (mixed / f.name).write_bytes(f.read_bytes())
    (mixed / "zz.png").write_bytes(b"garbage")
    res = runner.invoke(app, ["predict", str(run), "--input", str(mixed)])
    assert res.exit_code == 2 and "zz.png: not a readable image" in res.output.strip()
    res = runner.invoke(app, ["predict", str(run), "--input", str(mixed), "--output", str(tmp_path / "m.csv"),
                              "--on-bad-row", "skip", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"] == 3 and out["skipped"] == 1 and out["skipped_files"] == [str(mixed / "zz.png")]


def test_predict_on_a_categorical_csv_equals_keras_and_counts_oov(bundles, tmp_path):
    run = bundles["customers_mixed_mlp"]
    k = from_record(json.loads((run / "train.json").read_text())["preprocessing"])
    assert isinstance(k, Categorical) and k.categorical_names == ("plan", "region", "contract")
    rows = [["c1", 12, 55.5, "standard", "north", "monthly"], ["c2", 60, 19.9, "basic", "mars", "yearly"],
            ["c3", 3, 99.0, "enterprise", "south", "weekly"]]
    src = _write_csv(tmp_path / "new.csv", ["customer", "tenure_months", "monthly_charges", "plan", "region",
                                            "contract"], rows)
    res = runner.invoke(app, ["predict", str(run), "--input", str(src), "--output", str(tmp_path / "p.csv"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["oov_counts"] == {"plan": 1, "region": 1, "contract": 1}
    got_rows, probs = _probs(tmp_path / "p.csv", ["no", "yes"])
    dicts = [dict(zip(["tenure_months", "monthly_charges", "plan", "region", "contract"], r[1:])) for r in rows]
    p = _keras(run, k.apply(k.coerce(dicts)))[:, 0]
    np.testing.assert_allclose(probs[:, 1], p, atol=2e-6)
    # unseen categories are the OOV one-hot column
    x = k.apply(k.coerce(dicts))
    region = 2 + (len(k.vocabularies[0]) + 1)  # after 2 numeric columns and the plan block
    assert x[1, region] == 1 and x[1, region + 1:region + 1 + len(k.vocabularies[1])].sum() == 0  # 'mars' -> OOV
    # Predictor on rows keyed by column name equals the file answers
    from seqdeploy.runtime.predictor import Predictor

    pred = Predictor.from_bundle(run)
    np.testing.assert_allclose(pred.predict_proba(dicts)[:, 1], p, atol=2e-6)
    assert set(pred.raw_input_names) == {"features", "categories"}
    # the model-ready artifact with the same definition in numpy gives the same answers
    ready = Predictor.from_bundle(run, graph="model-ready")
    np.testing.assert_allclose(ready.predict_proba(dicts), pred.predict_proba(dicts), atol=1e-6)
    from seqdeploy.data import apply_preprocessing

    np.testing.assert_array_equal(apply_preprocessing(k.to_record(), dicts), k.apply(k.coerce(dicts)))
    # a folder of tables: every file in name order, a bad row named by its file and line
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_bytes(src.read_bytes())
    (folder / "b.jsonl").write_text("".join(json.dumps({"customer": f"j{i}", **d}) + "\n" for i, d in enumerate(dicts)))
    res = runner.invoke(app, ["predict", str(run), "--input", str(folder), "--output", str(tmp_path / "d.csv"),
                              "--keep", "customer", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"] == 2 and json.loads(res.stdout)["oov_counts"]["plan"] == 2
    d_rows, d_probs = _probs(tmp_path / "d.csv", ["no", "yes"])
    assert [r["customer"] for r in d_rows] == ["c1", "c2", "c3", "j0", "j1", "j2"]
    np.testing.assert_allclose(d_probs[:, 1], np.concatenate([p, p]), atol=2e-6)
    (folder / "c.csv").write_text("tenure_months,monthly_charges,plan,region,contract\n1,2,basic,north,monthly\n"
                                  "x,2,basic,north,monthly\n")
    res = runner.invoke(app, ["predict", str(run), "--input", str(folder)])
    assert res.exit_code == 2 and "c.csv: row 1 column 'tenure_months' = 'x' is not a number" in res.output
    bad = _write_csv(tmp_path / "bad.csv", ["tenure_months", "plan"], [[1, "basic"]])
    res = runner.invoke(app, ["predict", str(run), "--input", str(bad)])
    assert res.exit_code == 2 and "missing column(s) ['monthly_charges', 'region', 'contract']" in res.output


def test_verify_checked_the_portable_graph_on_raw_rows(bundles):
    for run in bundles.values():
        doc = json.loads((run / "verify.json").read_text())
        assert doc["passed"] is True
        golden = json.loads((run / "golden_portable.json").read_text())
        assert golden["graph"] == "portable"
    names = json.loads((bundles["customers_mixed_mlp"] / "golden_portable.json").read_text())["inputs"]
    assert set(names) == {"features", "categories"}


def test_tokenizer_matches_keras_text_vectorization_on_plain_text():
    """The reference behaviour: Keras TextVectorization (lowercase, whitespace split, 0 = pad, 1 = OOV,
    max_tokens counting both, vocabulary by frequency) gives the same vocabulary and ids on text of ASCII
    words and spaces. (Keras also strips punctuation and keeps non-ASCII letters; seqdeploy splits on them.)"""
    import keras

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    weights = np.arange(30, 0, -1) ** 2.0  # distinct frequencies: no ties to order
    corpus = [" ".join(rng.choice(words, size=rng.integers(0, 12), p=weights / weights.sum())).upper()
              if i % 7 == 0 else " ".join(rng.choice(words, size=rng.integers(0, 12), p=weights / weights.sum()))
              for i in range(400)]
    ours = Tokenize.fit(corpus, vocabulary_size=12, sequence_length=9)
    tv = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=9)
    tv.adapt(corpus)
    counts: dict[str, int] = {}
    for t in corpus:
        for w in t.lower().split():
            counts[w] = counts.get(w, 0) + 1
    assert len(set(sorted(counts.values(), reverse=True)[:11])) == 11  # the first 10 ranks have no ties
    assert list(tv.get_vocabulary()) == ["", "[UNK]", *ours.vocabulary[2:]]
    probe = corpus[:50] + ["w0 unseen W1", "", "w29 w28 w27 w26 w25 w24 w23 w22 w21 w20 w19"]
    np.testing.assert_array_equal(np.asarray(tv(probe)), ours.apply(ours.coerce(probe), np.int64))


def test_tabular_regression_learns_the_standardised_target_and_reports_target_units(tmp_path):
    from seqdeploy.data import load_run_splits
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.app.pipeline import PipelineOptions, run_pipeline
    from seqdeploy.runtime.predictor import Predictor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = 10 + x @ np.array([1.5, -2.0, 1.0, 2.5, -1.0]) + rng.normal(scale=0.3, size=300)
    _write_csv(tmp_path / "lin.csv", ["f1", "f2", "f3", "f4", "f5", "y"], np.column_stack([x, y]).tolist())
    spec = _spec(tmp_path, 'source = "csv"\npath = "lin.csv"\ntarget = "y"\ntask = "regression"',
                 '[[layers]]\ntype = "Dense"\nunits = 8\nactivation = "relu"\n[[layers]]\ntype = "Dense"\nunits = 1\n',
                 loss="mse", name="lin")
    run = tmp_path / "run"
    run_pipeline(spec, out=run, stages="train,export,verify", options=PipelineOptions(epochs=3))
    write_bundle_manifest(run)
    info = json.loads((run / "train.json").read_text())
    rec = info["preprocessing"]
    assert rec["kind"] == "standardize" and rec["target_mean"] == pytest.approx(10, abs=0.5)
    assert {"mae", "mse", "rmse", "loss_standardised"} <= set(info["test_metrics"])
    splits = load_run_splits(run)
    got = Predictor.from_bundle(run).predict(splits.raw_test)  # raw rows in, target units out
    truth = splits.y_test * np.float32(rec["target_std"]) + np.float32(rec["target_mean"])
    assert info["test_metrics"]["mae"] == pytest.approx(float(np.mean(np.abs(got - truth))), rel=1e-4)
    want = _keras(run, splits.x_test)[:, 0] * np.float32(rec["target_std"]) + np.float32(rec["target_mean"])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert json.loads((run / "verify.json").read_text())["passed"] is True


@pytest.mark.parametrize("data, match", [
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"\ntext = 3', "text = 3; expected the name"),
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"\ntext = "t"\ncategorical = ["a"]',
     "remove features / categorical"),
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "regression"\ntext = "t"', "text columns feed classifiers"),
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"\ncategorical = "plan"', "list of distinct column"),
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"\nencoding = "hash"', "encoding = 'hash'"),
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"\ntoken_pattern = "("', "is not a regex"),
    ('source = "csv"\npath = "d.csv"\ntarget = "y"\ntask = "binary"\nresize = "nearest"',
     "resize applies to source = \"images\""),
    ('source = "images"\npath = "p"\nimage_size = [8]', "image_size = \\[8\\]; expected an integer or"),
    ('source = "images"\npath = "p"\nchannels = 4', "channels = 4; expected 1"),
    ('source = "images"\npath = "p"\nalpha = "grey"', "alpha = 'grey'"),
    ('source = "images"\npath = "p"\ntask = "regression"', "one class per folder"),
    ('source = "images"', "needs path = \"photos/\""),
    ('source = "digits"\ntext = "x"', "text applies to table sources"),
    ('source = "parquet"\npath = "d.parquet"\ntask = "binary"', "needs target"),
])
def test_spec_data_fields_are_validated(data, match):
    from seqdeploy.errors import SpecError
    from seqdeploy.spec import parse_spec_text

    text = f'name = "s"\n[data]\n{data}\n[[layers]]\ntype = "Dense"\nunits = 1\n[compile]\nloss = "mse"\n'
    with pytest.raises(SpecError, match=match):
        parse_spec_text(text)

"""keras-io-style string models trained elsewhere, for ``pipeline MODEL.keras --data SAMPLE`` end to end.

* ``imdb``: keras-io "Text classification from scratch": ``Input(shape=(1,), dtype="string")`` ->
  ``TextVectorization(standardize=custom_standardization)`` (``tf.strings.lower`` + ``regex_replace("<br />", " ")``
  + ``regex_replace`` of punctuation, registered with ``keras.saving.register_keras_serializable`` in a
  custom-objects file) -> Embedding -> Conv1D -> GlobalMaxPool -> Dense(sigmoid);
* ``structured``: keras-io "Structured data classification" with preprocessing layers inside the model: a dict of
  raw features (a string category through StringLookup, an integer category through IntegerLookup, a float
  through Normalization and one through Discretization) -> Dense(sigmoid).

Both are built with fixed seeds (untrained weights are as good as trained ones for parity) and adapted on a few
rows; :data:`HOSTILE` holds the strings users send that break naive exports.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

STANDARDIZE = '''
import re
import string

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable()
def custom_standardization(input_data):
    lowercase = tf.strings.lower(input_data)
    stripped_html = tf.strings.regex_replace(lowercase, "<br />", " ")
    return tf.strings.regex_replace(stripped_html, f"[{re.escape(string.punctuation)}]", "")
'''

REVIEWS = ["This movie was GREAT!<br />Loved the acting.", "terrible plot, bad acting... a waste of time",
           "An amazing film; the best of the year", "boring<br /><br />boring and slow", "I liked it, mostly.",
           "worst movie ever!!!", "great great great film", "not bad at all, fine acting"]
HOSTILE = ["", " ", "   \t ", "<br />", "<br /><br />", "Café déjà vu, naïve ÉLAN", "🎬🍿 great film 🎉",
           "THIS WAS AWFUL!!!", " ".join(["great film acting plot"] * 30), "zzzz unseen qqqq words",
           "It's a \"movie\" (sort of)...", "tab\tseparated\nnew line"]
SEQ_LEN = 12

COLOURS = ["red", "green", "blue"]
FEATURES = {"colour": ["red", "green", "blue", "red", "green", "blue", "red", "blue"],
            "rooms": [1, 2, 3, 4, 2, 3, 1, 5],
            "price": [10.0, 250.5, 33.3, 99.9, 120.0, 75.25, 15.5, 300.0],
            "age": [1.0, 15.0, 30.0, 45.0, 60.0, 75.0, 22.0, 8.0]}
HOSTILE_FEATURES = {"colour": ["", " ", "RED", "rouge", "🎨", "red", "green ", "blue"],
                    "rooms": [0, 99, -1, 2, 3, 1000, 4, 1],
                    "price": [0.0, -5.0, 1e6, 10.0, 250.5, 33.3, 99.9, 120.0],
                    "age": [-10.0, 0.0, 200.0, 15.0, 30.0, 45.0, 60.0, 75.0]}


def load_standardize(path: Path) -> None:
    """Import the custom-objects file, as the user's training script does (registers the function)."""
    spec = importlib.util.spec_from_file_location("string_zoo_standardize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def imdb_model(objects: Path):
    import keras

    load_standardize(objects)
    keras.utils.set_random_seed(0)
    standardize = keras.saving.get_registered_object("Custom>custom_standardization")
    vectorize = keras.layers.TextVectorization(max_tokens=60, output_mode="int", output_sequence_length=SEQ_LEN,
                                               standardize=standardize, name="vectorize")
    vectorize.adapt(np.asarray(REVIEWS))
    inp = keras.Input(shape=(1,), dtype="string", name="review")
    x = vectorize(inp)
    x = keras.layers.Embedding(60, 8)(x)
    x = keras.layers.Conv1D(8, 3, padding="valid", activation="relu", strides=1)(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="predictions")(x))


def structured_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = {"colour": keras.Input(shape=(1,), dtype="string", name="colour"),
              "rooms": keras.Input(shape=(1,), dtype="int64", name="rooms"),
              "price": keras.Input(shape=(1,), dtype="float32", name="price"),
              "age": keras.Input(shape=(1,), dtype="float32", name="age")}
    colour = keras.layers.StringLookup(vocabulary=COLOURS, output_mode="one_hot", name="colour_lookup")
    rooms = keras.layers.IntegerLookup(vocabulary=[1, 2, 3, 4], output_mode="one_hot", name="rooms_lookup")
    price = keras.layers.Normalization(name="price_norm")
    price.adapt(np.asarray(FEATURES["price"], np.float32).reshape(-1, 1))
    age = keras.layers.Discretization(bin_boundaries=[18.0, 35.0, 50.0, 65.0], name="age_bins")
    age_onehot = keras.layers.CategoryEncoding(num_tokens=5, output_mode="one_hot", name="age_onehot")
    x = keras.layers.concatenate([colour(inputs["colour"]), rooms(inputs["rooms"]), price(inputs["price"]),
                                  age_onehot(age(inputs["age"]))])
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def build(root: Path) -> dict[str, Path]:
    """``{"imdb", "structured"}`` -> .keras, plus ``"objects"`` -> the custom-objects file and SAMPLE CSVs."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    objects = root / "standardize.py"
    objects.write_text(STANDARDIZE)
    imdb_model(objects).save(root / "imdb.keras")
    structured_model().save(root / "structured.keras")
    write_csv(root / "imdb_sample.csv", {"review": REVIEWS})
    write_csv(root / "structured_sample.csv", FEATURES)
    return {"imdb": root / "imdb.keras", "structured": root / "structured.keras", "objects": objects,
            "imdb_sample": root / "imdb_sample.csv", "structured_sample": root / "structured_sample.csv"}


def write_csv(path: Path, columns: dict[str, list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(list(columns))
        w.writerows(zip(*columns.values()))

"""A tiny keras-io-style model zoo (Functional models as users train them in notebooks), built untrained.

* ``bilstm``: token ids of any length (``Input(shape=(None,))``) -> Embedding(mask_zero) -> Bidirectional LSTM
  -> softmax over 3 classes (keras-io "Bidirectional LSTM on IMDB");
* ``transformer``: the keras-io "Text classification with Transformer" model with its custom
  ``TokenAndPositionEmbedding`` and ``TransformerBlock`` layers, defined in a custom-objects file;
* ``fcn``: the keras-io "Timeseries classification from scratch" fully convolutional network (Conv1D,
  BatchNormalization, ReLU, global average pooling);
* ``two_inputs``: numeric features plus variable-length token ids -> one regression value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB = 40
MAXLEN = 10

CUSTOM_LAYERS = '''
import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoo")
class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = ops.shape(x)[-1]
        positions = ops.arange(start=0, stop=maxlen, step=1)
        return self.token_emb(x) + self.pos_emb(positions)

    def get_config(self):
        return super().get_config() | {"maxlen": self.maxlen, "vocab_size": self.vocab_size,
                                       "embed_dim": self.embed_dim}


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.num_heads, self.ff_dim, self.rate = embed_dim, num_heads, ff_dim, rate
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output, training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output, training=training)
        return self.layernorm2(out1 + ffn_output)

    def get_config(self):
        return super().get_config() | {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                                       "ff_dim": self.ff_dim, "rate": self.rate}
'''


def import_file(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"zoo_layers_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bilstm():
    import keras
    from keras import layers

    inputs = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = layers.Embedding(VOCAB, 8, mask_zero=True)(inputs)
    x = layers.Bidirectional(layers.LSTM(8))(x)
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="bilstm")


def transformer(custom_file: Path):
    import keras
    from keras import layers

    mod = import_file(custom_file)
    inputs = keras.Input(shape=(MAXLEN,), dtype="int32", name="tokens")
    x = mod.TokenAndPositionEmbedding(MAXLEN, VOCAB, 8)(inputs)
    x = mod.TransformerBlock(8, 2, 8)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(8, activation="relu")(x)
    outputs = layers.Dense(2, activation="softmax", name="sentiment")(x)
    return keras.Model(inputs, outputs, name="transformer")


def fcn(steps: int = 16):
    import keras
    from keras import layers

    inputs = keras.Input(shape=(steps, 1), name="series")
    x = inputs
    for _ in range(2):
        x = layers.Conv1D(8, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(2, activation="softmax", name="label_probs")(x)
    return keras.Model(inputs, outputs, name="fcn")


def two_inputs():
    import keras
    from keras import layers

    num = keras.Input(shape=(4,), name="num")
    ids = keras.Input(shape=(None,), dtype="int32", name="words")
    e = layers.GlobalAveragePooling1D()(layers.Embedding(VOCAB, 4)(ids))
    x = layers.Concatenate()([layers.Dense(4, activation="relu")(num), e])
    outputs = layers.Dense(1, name="value")(x)
    return keras.Model([num, ids], outputs, name="two_inputs")


def sample(name: str, n: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """Model-ready inputs for a zoo model, keyed by input name."""
    rng = np.random.default_rng(seed)
    if name == "bilstm":
        ids = rng.integers(1, VOCAB, size=(n, 7)).astype(np.int32)
        ids[:, 5:][rng.random((n, 2)) < 0.5] = 0
        return {"ids": ids}
    if name == "transformer":
        return {"tokens": rng.integers(0, VOCAB, size=(n, MAXLEN)).astype(np.int32)}
    if name == "fcn":
        return {"series": rng.standard_normal((n, 16, 1)).astype(np.float32)}
    if name == "two_inputs":
        return {"num": rng.standard_normal((n, 4)).astype(np.float32),
                "words": rng.integers(1, VOCAB, size=(n, 6)).astype(np.int32)}
    raise KeyError(name)


def build_zoo(root: Path) -> dict[str, Path]:
    """Save every zoo model under ``root`` (and the custom-objects file); returns name -> .keras path."""
    import keras

    keras.utils.set_random_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    custom = root / "zoo_layers.py"
    custom.write_text(CUSTOM_LAYERS, encoding="utf-8")
    paths = {}
    for name, make in (("bilstm", bilstm), ("transformer", lambda: transformer(custom)), ("fcn", fcn),
                       ("two_inputs", two_inputs)):
        model = make()
        model(sample(name, 2) if len(model.inputs) > 1 else next(iter(sample(name, 2).values())))
        paths[name] = root / f"{name}.keras"
        model.save(paths[name])
    return paths

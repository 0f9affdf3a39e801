"""Lookup-table preprocessing family: Keras layers backed by a TF hash table (tf2onnx cannot convert those)
are refused, naming the layer. It claims at ``order`` 100, so a converter module that claims one of these
classes at the default order takes the class over.
"""

from __future__ import annotations

from typing import Any

from seqdeploy.errors import UnsupportedLayerError
from seqdeploy.export.layers import REGISTRY, LayerConverter

#: Keras preprocessing layers backed by a lookup table
LOOKUP_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup", "Hashing", "HashedCrossing")


class LookupRefusal(LayerConverter):
    name = "lookup_refusal"
    classes = LOOKUP_LAYERS
    order = 100

    def prepare(self, layer: Any) -> None:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} ({type(layer).__name__}) keeps a lookup table that the ONNX export cannot carry; "
            f"remove it from the model and feed the ids it produces, or train from a seqdeploy spec that names the "
            f"text/categorical columns in [data], which puts the tokenizer or category lookup inside the "
            f"portable deployment graph")


REGISTRY.add(LookupRefusal.name, LookupRefusal())

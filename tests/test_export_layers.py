"""The layer converter registry of `seqdeploy.export.layers` and the generic cut/stitch of `seqdeploy.export.native`:
a converter registered in a test (one registration, nothing else) is cut out of the trace and its ONNX nodes
stitched back, a string graph input reaches a converter's nodes, and a converter takes a class over from the
lookup-table refusal.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _session(proto):
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture
def register(monkeypatch):
    """Register a converter for one test only."""
    from seqdeploy.export.layers import REGISTRY

    REGISTRY.all()  # load the package's families first

    def add(converter):
        monkeypatch.setitem(REGISTRY.entries, converter.name, converter)
        return converter

    return add


def _scale2_class():
    import keras

    class Scale2(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    return Scale2


def _scale2_converter():
    from seqdeploy.export.layers import Cut, LayerConverter, NodeBuilder, OutputSpec

    class Scale2Converter(LayerConverter):
        name, classes = "test_scale2", ("Scale2",)

        def record(self, layer, state, arguments):
            x = arguments["inputs"]
            return Cut(inputs={"x": x}, outputs=(OutputSpec(tuple(x.shape), "float32"),))

        def build(self, call):
            b = NodeBuilder(call.prefix)
            y = b.node("Mul", [call.inputs["x"], b.const("two", np.array(2, np.float32))], "y")
            return b.built([y], description=f"{call.layer.name}: Mul")

    return Scale2Converter()


def _scale2_model():
    import keras

    keras.utils.set_random_seed(0)
    scale = _scale2_class()(name="scale2")
    x = keras.Input((4,), name="features")
    h = scale(keras.layers.Dense(3, name="d1")(x))
    y = keras.layers.Dense(2, name="d2")(scale(h))  # the same layer called twice: one cut per call
    return keras.Model(x, y)


def test_a_new_converter_is_one_registration_and_matches_keras(register):
    from seqdeploy.export.convert import convert_model, op_counts

    model = _scale2_model()
    plain = convert_model(model)
    assert plain.native_layers == () and plain.strategy == "tf2onnx"

    register(_scale2_converter())
    conv = convert_model(model)
    assert conv.native_layers == ("scale2: Mul", "scale2: Mul") and conv.native_recurrent == ()
    assert conv.strategy == "tf2onnx+native" and conv.opset_domains == {} and not conv.needs_extensions
    mul_nodes = [n.name for n in conv.model.graph.node if n.op_type == "Mul"]
    assert sorted(mul_nodes) == ["scale2_call0/native/y", "scale2_call1/native/y"], mul_nodes
    assert op_counts(conv.model)["MatMul"] == 2
    assert [i.name for i in conv.model.graph.input] == ["features"]
    x = np.random.RandomState(0).randn(5, 4).astype("float32")
    got = _session(conv.model).run(None, {"features": x})[0]
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-6, atol=1e-6)


def _lookup_converter():
    from seqdeploy.export.layers import Cut, LayerConverter, NodeBuilder, OutputSpec

    class CategoryLookup(LayerConverter):  # StringLookup as one ai.onnx.ml CategoryMapper (OOV -> 0)
        name, classes, domains = "test_string_lookup", ("StringLookup",), {"ai.onnx.ml": 2}
        order = -1  # before the built-in StringLookup converter

        def prepare(self, layer):
            return [str(v) for v in layer.get_vocabulary()]

        def record(self, layer, state, arguments):
            x = arguments["inputs"]
            return Cut(inputs={"x": x}, outputs=(OutputSpec(tuple(x.shape), "int64"),))

        def build(self, call):
            b = NodeBuilder(call.prefix)
            ids = b.node("CategoryMapper", [call.inputs["x"]], "ids", domain="ai.onnx.ml", cats_strings=call.state,
                         cats_int64s=list(range(len(call.state))), default_int64=0)
            return b.built([ids], description=f"{call.layer.name}: CategoryMapper")

    return CategoryLookup()


def _string_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,), dtype="string", name="words"),
                             keras.layers.StringLookup(vocabulary=["red", "green", "blue"], name="colours"),
                             keras.layers.Embedding(4, 3), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])


def test_a_string_graph_input_reaches_a_converter_that_takes_over_by_order(register, tmp_path):
    import json

    from seqdeploy.export.convert import convert_model, export_onnx, op_counts

    model = _string_model()
    assert convert_model(model).native_layers == ("colours: ONNX LabelEncoder table",)

    register(_lookup_converter())
    conv = convert_model(model)
    assert conv.native_layers == ("colours: CategoryMapper",)
    assert conv.opset_domains == {"ai.onnx.ml": 2} and not conv.needs_extensions
    assert {o.domain: o.version for o in conv.model.opset_import}["ai.onnx.ml"] >= 2
    ops = op_counts(conv.model)
    assert ops["ai.onnx.ml.CategoryMapper"] == 1 and "Identity" not in ops, ops
    mapper = next(n for n in conv.model.graph.node if n.op_type == "CategoryMapper")
    assert list(mapper.input) == ["words"]  # the string graph input flows straight into the stitched node
    x = np.array([["red", "blue", "mauve"], ["green", "green", "red"], ["", "blue", "blue"]], dtype=object)
    got = _session(conv.model).run(None, {"words": x})[0]
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-6, atol=1e-6)

    model.save(tmp_path / "colours.keras")  # the export report records the converter and its domain
    result = export_onnx(tmp_path / "colours.keras")
    report = json.loads(result.report_path.read_text())
    assert report["native_layers"] == ["colours: CategoryMapper"] and report["native_recurrent"] == []
    assert report["opset_domains"] == {"ai.onnx.ml": 2} and report["needs_extensions"] is False


def test_registry_holds_the_families_and_resolves_by_order():
    import keras

    from seqdeploy.export.layers import REGISTRY, converter_for

    names = list(REGISTRY.all())
    assert {"recurrent", "time_distributed", "text_vectorization", "string_lookup", "integer_lookup", "hashing",
            "hashed_crossing"} <= set(names)
    L = keras.layers
    assert converter_for(L.GRU(2)).name == "recurrent"
    assert converter_for(L.Bidirectional(L.LSTM(2))).name == "recurrent"
    assert converter_for(L.TimeDistributed(L.Dense(2))).name == "time_distributed"
    assert converter_for(L.IntegerLookup(vocabulary=[3, 4])).name == "integer_lookup"
    assert converter_for(L.StringLookup(vocabulary=["a"])).name == "string_lookup"
    assert converter_for(L.TextVectorization(vocabulary=["a"])).name == "text_vectorization"
    assert converter_for(L.Hashing(num_bins=4)).name == "hashing"  # refused with its reason
    assert converter_for(L.HashedCrossing(num_bins=4)).name == "hashed_crossing"  # integers exact, strings refused
    assert converter_for(L.Dense(2)) is None


def test_a_converter_can_leave_a_layer_to_tf2onnx_with_a_note(register):
    from seqdeploy.export.convert import convert_model
    from seqdeploy.export.layers import NotNative

    conv_cls = type(_scale2_converter())

    class Declines(conv_cls):
        def prepare(self, layer):
            raise NotNative("no native form for this one")

    register(Declines())
    model = _scale2_model()
    conv = convert_model(model)
    assert conv.native_layers == () and conv.notes == ("layer 'scale2' is left to tf2onnx: no native form for this one",)
    x = np.random.RandomState(1).randn(2, 4).astype("float32")
    np.testing.assert_allclose(_session(conv.model).run(None, {"features": x})[0], np.asarray(model(x)), atol=1e-6)


def test_an_extension_domain_needs_its_package(monkeypatch):
    from onnx import helper

    from seqdeploy.errors import ExportError
    from seqdeploy.export import opsets

    graph = helper.make_graph([], "g", [], [])
    standard = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    contrib = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)])
    assert opsets.extension_domains(standard) == () and opsets.custom_ops_libraries(standard) == []
    assert opsets.extension_domains(contrib) == ("ai.onnx.contrib",)
    monkeypatch.setitem(opsets.EXTENSION_DOMAINS, "ai.onnx.contrib", "seqdeploy_missing_extension_module")
    with pytest.raises(ExportError, match="pip install seqdeploy-missing-extension-module"):
        opsets.custom_ops_libraries(contrib)

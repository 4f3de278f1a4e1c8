"""Arithmetic written on tensors in functional code, from files real Keras wrote: tf.keras 2's
TFOpLambda layers and Keras 3's keras.ops operations (models/layers_tensor_ops_{k3,tfk2}, made by
models/make_layer_models.py). Every whitelisted function used there loads, and the float path
matches Keras branch by branch; anything outside the whitelist is refused, naming the layer and
the function. (int8 against TFLite: tests/test_model_fixtures.py picks these fixtures up.)"""
import json
import os
import re

import numpy as np
import pytest

import fixnet
from conftest import MODELS, edit_config, fixture_data, fixture_path

FILES = [("layers_tensor_ops_k3", ".h5"), ("layers_tensor_ops_k3", ".keras"),
         ("layers_tensor_ops_tfk2", ".h5")]

# what each writer stores for the fixture's arithmetic
TF_FUNCTIONS = {"math.truediv", "math.multiply", "math.subtract", "__operators__.add", "nn.relu6",
                "math.negative", "nn.relu", "math.sigmoid", "math.tanh", "nn.silu", "nn.leaky_relu",
                "math.maximum", "math.minimum"}
K3_OPS = {"TrueDivide", "Multiply", "Subtract", "Add", "Relu6", "Negative", "Relu", "Sigmoid", "Tanh",
          "Silu", "LeakyRelu", "Maximum", "Minimum", "HardSigmoid"}


def _config(name):
    import h5py
    with h5py.File(fixture_path(name)) as f:
        return json.loads(f.attrs["model_config"])


def _layers(cfg):
    return cfg["config"]["layers"]


@pytest.mark.parametrize("name,ext", FILES)
def test_every_branch_matches_keras_float(name, ext):
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name, ext))
    got = fm.predict(d["x_test"]).astype(np.float64)
    ref = d["keras_float"]
    assert got.shape == ref.shape
    branches = json.loads(str(d["output_slices"]))
    assert len(branches) >= 16
    for b in branches:
        g, r = got[:, b["start"]:b["stop"]], ref[:, b["start"]:b["stop"]]
        err = np.abs(g - r).max() / max(np.abs(r).max(), 1e-30)
        assert err <= 1e-5, f"{name}{ext}: branch {b['branch']}: error {err:.2e}"


@pytest.mark.parametrize("name,ext", FILES)
def test_arithmetic_becomes_existing_ir_ops(name, ext):
    fm = fixnet.load(fixture_path(name, ext))
    by_class = {}
    for n in fm.graph.nodes:
        by_class.setdefault(n.keras_class, set()).add(n.op)
    if "tfk2" in name:
        assert set(by_class) == {"Conv2D", "Flatten", "Concatenate", "TFOpLambda"}
        assert by_class["TFOpLambda"] == {"affine", "binary", "activation"}
    else:
        assert K3_OPS <= set(by_class)
        assert by_class["Relu6"] == {"activation"} and by_class["TrueDivide"] == {"affine"}
        assert by_class["Multiply"] == {"affine", "binary"}       # x * 2.0 and h * hard_sigmoid(h)


def test_the_fixtures_hold_what_each_writer_stores():
    tf_layers = [l for l in _layers(_config("layers_tensor_ops_tfk2")) if l["class_name"] == "TFOpLambda"]
    assert {l["config"]["function"] for l in tf_layers} == TF_FUNCTIONS
    # the reversed operand of 1. - g: a constant first argument
    assert any(l["inbound_nodes"][0][0] == "_CONSTANT_VALUE" for l in tf_layers)
    k3 = [l for l in _layers(_config("layers_tensor_ops_k3"))
          if l["class_name"] not in ("InputLayer", "Conv2D", "Flatten", "Concatenate")]
    assert {l["class_name"] for l in k3} == K3_OPS
    assert all("trainable" not in l["config"] for l in k3)


def _close(a, b):
    b = np.asarray(b)
    return (b.ndim == 0 or b.shape == np.shape(a)) and np.allclose(a, b)


def test_reversed_and_scalar_operands_become_affine_nodes():
    for name in ("layers_tensor_ops_k3", "layers_tensor_ops_tfk2"):
        fm = fixnet.load(fixture_path(name))
        affine = {n.layer: n for n in fm.graph.nodes if n.op == "affine"}
        one_minus = [n for n in affine.values() if _close(n.weights["scale"], -1)
                     and _close(n.weights["offset"], 1.0)]
        negative = [n for n in affine.values() if _close(n.weights["scale"], -1)
                    and _close(n.weights["offset"], 0.0)]
        div255 = [n for n in affine.values() if _close(n.weights["scale"], 1 / 255.0)]
        vec = [n for n in affine.values() if _close(n.weights["scale"], np.array([0.5, -1, 2, 1.5, -0.25, 3]))]
        assert len(one_minus) == 1 and len(negative) == 1 and len(div255) == 1 and len(vec) == 1, name


@pytest.mark.parametrize("writer", ["k3", "tfk2"])
def test_mobilenetv3_small_loads_and_matches_keras(writer):
    """keras.applications.MobileNetV3Small: hard-sigmoid as `ReLU(6.)(x + 3.) * (1. / 6.)` (tf.keras
    2: TFOpLambda layers; Keras 3: Add / Multiply operations) and squeeze-and-excitation
    Multiply layers of (H, W, C) by (1, 1, C), broadcast by a nearest up-sampling node."""
    name = f"layers_mobilenetv3_small_{writer}"
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    got = fm.predict(d["x_test"]).astype(np.float64)
    ref = d["keras_float"]
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-5
    se = [n for n in fm.graph.nodes if n.keras_class == "Multiply" and n.op == "upsample"]
    assert len(se) == 9                                    # one per squeeze-and-excitation block
    if writer == "tfk2":
        assert any(n.keras_class == "TFOpLambda" for n in fm.graph.nodes)
    else:
        assert {"Add", "Multiply"} <= {l["class_name"] for l in _layers(_config(name))
                                        if "trainable" not in l["config"] and "dtype" not in l["config"]}


def test_shapes_that_do_not_broadcast_per_channel_are_refused(copy_fixture):
    path = copy_fixture("layers_tensor_ops_tfk2")
    # h * hard_sigmoid(h) turned into h * s, s the scaled input: (8, 8, 8) by (8, 8, 3)
    _edit_layer(path, lambda l: l["config"].get("function") == "math.multiply"
                and isinstance(_tf_node(l)[3].get("y"), list) and _tf_node(l)[3]["y"][0] == "tf.math.multiply_1",
                lambda l: _tf_node(l)[3].update(y=["tf.math.subtract", 0, 0]))
    with pytest.raises(fixnet.UnsupportedLayerError,
                       match=r"'tf.math.multiply_2' \(TFOpLambda\): TensorFlow function 'tf.math.multiply' of "
                             r"tensors of shapes \(8, 8, 8\), \(8, 8, 3\)"):
        fixnet.load(path)


# --- refusals --------------------------------------------------------------------------------

def _edit_layer(path, pick, change):
    def edit(cfg):
        hits = [l for l in _layers(cfg) if pick(l)]
        assert hits
        for l in hits:
            change(l)
        return cfg
    edit_config(path, edit)


def test_unknown_tf_function_is_refused_naming_layer_and_function(copy_fixture):
    path = copy_fixture("layers_tensor_ops_tfk2")
    _edit_layer(path, lambda l: l["name"] == "tf.nn.relu6",
                lambda l: l["config"].update(function="math.reciprocal"))
    _edit_layer(path, lambda l: l["name"] == "tf.math.tanh",
                lambda l: l["config"].update(function="io.write_file"))
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(path)
    msg = str(e.value)
    assert "2 layer(s)" in msg                       # every refusal in the one error
    assert re.search(r"'tf.nn.relu6' \(TFOpLambda\): TensorFlow function 'tf.math.reciprocal' is not supported", msg)
    assert re.search(r"'tf.math.tanh' \(TFOpLambda\): TensorFlow function 'tf.io.write_file'", msg)


def test_unknown_keras3_op_is_refused_naming_layer_and_function(copy_fixture):
    path = copy_fixture("layers_tensor_ops_k3")
    _edit_layer(path, lambda l: l["name"] == "relu6", lambda l: l.update(class_name="Erf"))
    with pytest.raises(fixnet.UnsupportedLayerError,
                       match=r"'relu6' \(Erf\): keras.ops operation 'Erf' is not supported"):
        fixnet.load(path)


def test_keras3_ops_named_like_layers_are_not_read_as_layers(copy_fixture):
    # keras.ops.softmax(x, axis=1) is stored as class "Softmax" with config {"name", "axis"};
    # keras.ops.concatenate as "Concatenate": neither may pass for the layer of that name
    path = copy_fixture("layers_tensor_ops_k3")
    _edit_layer(path, lambda l: l["name"] == "sigmoid",
                lambda l: l.update(class_name="Softmax", config={"name": "sigmoid", "axis": 1}))
    _edit_layer(path, lambda l: l["name"] == "tanh",
                lambda l: l.update(class_name="Concatenate", config={"name": "tanh", "axis": 0}))
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(path)
    msg = str(e.value)
    assert "'tanh' (Concatenate): keras.ops operation 'Concatenate' is not supported" in msg


def test_keras3_softmax_op_over_another_axis_is_refused(copy_fixture):
    path = copy_fixture("layers_tensor_ops_k3")
    _edit_layer(path, lambda l: l["name"] == "sigmoid",
                lambda l: l.update(class_name="Softmax", config={"name": "sigmoid", "axis": 1}))
    with pytest.raises(fixnet.UnsupportedLayerError,
                       match=r"'sigmoid' \(Softmax\): keras.ops operation 'Softmax' over axis 1"):
        fixnet.load(path)


def _tf_node(l):
    return l["inbound_nodes"][0]


def test_tf_arguments_that_change_semantics_are_refused(copy_fixture):
    path = copy_fixture("layers_tensor_ops_tfk2")
    # a constant that does not broadcast per channel (g has 6 channels)
    _edit_layer(path, lambda l: l["config"].get("function") == "math.multiply"
                and _tf_node(l)[3].get("y") == [0.5, -1.0, 2.0, 1.5, -0.25, 3.0],
                lambda l: _tf_node(l)[3].update(y=[1.0, 2.0, 3.0, 4.0, 5.0]))
    # an extra keyword argument
    _edit_layer(path, lambda l: l["name"] == "tf.nn.silu", lambda l: _tf_node(l)[3].update(foo=1))
    # 1. - g turned into 1. / g: a reciprocal
    _edit_layer(path, lambda l: l["config"].get("function") == "math.subtract"
                and _tf_node(l)[0] == "_CONSTANT_VALUE",
                lambda l: l["config"].update(function="math.truediv"))
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(path)
    msg = str(e.value)
    assert "3 layer(s)" in msg
    assert "constant operand of shape (5,) does not broadcast per channel" in msg
    assert "'tf.nn.silu' (TFOpLambda): TensorFlow function 'tf.nn.silu' with argument 'foo'" in msg
    assert "TensorFlow function 'tf.math.truediv' of a constant by a tensor (a reciprocal)" in msg


def test_keras3_constant_with_a_tensor_shape_is_refused(copy_fixture):
    path = copy_fixture("layers_tensor_ops_k3")

    def change(l):
        l["inbound_nodes"][0]["args"][1] = {"class_name": "__numpy__",
                                            "config": {"value": [[1.0] * 6] * 4, "dtype": "float32"}}
    _edit_layer(path, lambda l: l["class_name"] == "Multiply"
                and isinstance(l["inbound_nodes"][0]["args"][1], dict)
                and l["inbound_nodes"][0]["args"][1].get("class_name") == "__numpy__", change)
    with pytest.raises(fixnet.UnsupportedLayerError, match=r"constant operand of shape \(4, 6\)"):
        fixnet.load(path)


def test_lambda_and_slicing_stay_refused_with_the_ops_in_one_error(copy_fixture):
    path = copy_fixture("layers_tensor_ops_tfk2")
    _edit_layer(path, lambda l: l["name"] == "tf.math.sigmoid",
                lambda l: l.update(class_name="SlicingOpLambda"))
    _edit_layer(path, lambda l: l["name"] == "tf.math.tanh",
                lambda l: l["config"].update(function="math.pow"))
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(path)
    msg = str(e.value)
    assert "'tf.math.sigmoid' (SlicingOpLambda): it runs Python code" in msg
    assert "'tf.math.tanh' (TFOpLambda): TensorFlow function 'tf.math.pow'" in msg


def test_no_fixture_file_is_larger_than_2_mb():
    for f in os.listdir(MODELS):
        if f.startswith("layers_tensor_ops"):
            assert os.path.getsize(os.path.join(MODELS, f)) < 2 << 20, f

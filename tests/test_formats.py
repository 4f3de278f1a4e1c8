"""The other ways people hold Keras models, and graph structures beyond a chain: the Keras 3
.keras archive, an architecture JSON with a weights-only file, several inputs and outputs, a
model nested in a model, a layer called twice. All from files real Keras wrote."""
import json
import os

import h5py
import numpy as np
import pytest

import fixnet
from conftest import MODELS, as_list, fixture_data, fixture_path, fixtures

REQUIRED_CLASSES = {
    "Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "ZeroPadding1D", "ZeroPadding2D", "Add", "Subtract", "Multiply", "Average", "Maximum",
    "Concatenate", "Reshape", "Flatten", "Permute", "ReLU", "LeakyReLU", "ELU", "PReLU",
    "Activation", "Softmax", "Rescaling", "Normalization", "Dropout", "GaussianNoise",
    "BatchNormalization", "Dense", "UpSampling1D", "UpSampling2D", "Cropping1D", "Cropping2D",
    "Conv1DTranspose", "Conv2DTranspose",
}
# arithmetic on tensors: tf.keras 2 stores TFOpLambda layers, Keras 3 keras.ops operations
REQUIRED_BY_WRITER = {
    "tfk2": {"TFOpLambda"},
    "k3": {"TrueDivide", "Negative", "Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "LeakyRelu", "HardSigmoid"},
}


def _keras_classes(path):
    with h5py.File(path) as f:
        cfg = json.loads(f.attrs["model_config"])
    out = set()

    def walk(c):
        layers = c["config"] if isinstance(c["config"], list) else c["config"].get("layers", [])
        for l in layers:
            out.add(l["class_name"])
            if l["class_name"] in ("Sequential", "Functional", "Model"):
                walk(l)
    walk(cfg)
    return out


@pytest.mark.parametrize("writer", ["k3", "tfk2"])
def test_every_required_layer_is_loaded_from_a_real_file_of_each_writer(writer):
    seen = set()
    files = [n + ".h5" for n in fixtures(exclude=["layers_channels_first"]) if n.endswith(f"_{writer}")]
    for f in files:
        classes = _keras_classes(os.path.join(MODELS, f))
        fixnet.load(os.path.join(MODELS, f))          # every one of them loads
        seen |= classes
    missing = (REQUIRED_CLASSES | REQUIRED_BY_WRITER[writer]) - seen
    assert not missing, f"no {writer} fixture holds {sorted(missing)}"


@pytest.mark.parametrize("name", ["cnn_digits_k3", "multi_io_k3"])
def test_keras3_archive_matches_keras(name):
    d = fixture_data(name)
    fm = fixnet.load(os.path.join(MODELS, name + ".keras"))
    xs = as_list(d, "x_test")
    ys = fm.predict(xs[0] if len(xs) == 1 else xs)
    for y, ref in zip(ys if isinstance(ys, list) else [ys], as_list(d, "keras_float")):
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("writer, weights", [("k3", "cnn_digits_k3.weights.h5"),
                                             ("tfk2", "cnn_digits_tfk2.weights.h5"),
                                             ("k3", "cnn_digits_k3.h5")])
def test_json_architecture_with_weights_file(writer, weights):
    d = fixture_data(f"cnn_digits_{writer}")
    fm = fixnet.load(os.path.join(MODELS, f"cnn_digits_{writer}.json"),
                     weights=os.path.join(MODELS, weights))
    np.testing.assert_allclose(fm.predict(d["x_test"]), d["keras_float"], rtol=1e-5, atol=1e-7)


def test_json_without_weights_is_a_clear_error():
    with pytest.raises(fixnet.FixnetError, match="needs its weights"):
        fixnet.load(os.path.join(MODELS, "cnn_digits_k3.json"))


def test_weights_only_file_is_refused_with_a_hint():
    with pytest.raises(fixnet.ModelFileError, match="weights only"):
        fixnet.load(os.path.join(MODELS, "cnn_digits_tfk2.weights.h5"))


@pytest.mark.parametrize("writer", ["k3", "tfk2"])
def test_multi_input_multi_output_nested_and_shared(writer):
    name = f"multi_io_{writer}"
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    g = fm.graph
    assert len(g.inputs) == 2 and len(g.outputs) == 2
    # the shared Dense is one Keras layer run at two places, with one set of weights
    shared = [n for n in g.nodes if n.layer == "shared_dense" and n.op == "dense"]
    assert len(shared) == 2 and shared[0].weights["kernel"] is shared[1].weights["kernel"]
    # the nested Sequential's layers are inlined under its name
    assert any(n.name.startswith("feature_mlp/") for n in g.nodes)
    xs, calib = as_list(d, "x_test"), as_list(d, "x_calib")
    for y, ref in zip(fm.predict(xs), as_list(d, "keras_float")):
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    qm = fm.quantize(calib)
    outs = qm.predict(xs)
    assert [o.shape for o in outs] == [r.shape for r in as_list(d, "keras_float")]

"""The HDF5 loader across Keras generations, read with h5py only."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import fixnet
from conftest import FIXTURES, edit_config, fixture_data, fixture_path
from keras20 import to_keras20


def test_loader_never_imports_tensorflow(tmp_path):
    code = ("import sys, fixnet, numpy as np; fm = fixnet.load(sys.argv[1]);"
            "d = np.load(sys.argv[2]); fm.quantize(d['x_calib']).predict(d['x_test']);"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'torch')];"
            "print(bad); sys.exit(1 if bad else 0)")
    # the subprocess imports the same fixnet this test process imported
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    r = subprocess.run([sys.executable, "-c", code, fixture_path("mlp_func_k3"),
                        fixture_path("mlp_func_k3", ".npz")], capture_output=True, text=True,
                       cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", FIXTURES)
def test_graph_structure(name):
    fm = fixnet.load(fixture_path(name))
    g = fm.graph
    ops = [n.op for n in g.nodes]
    assert ops.count("dense") == (3 if "seq" in name else 2)
    assert ops[-1] in ("softmax",)
    assert all(n.layer and n.keras_class for n in g.nodes)
    assert fm.output_shapes == [(10,)]
    assert fm.input_shapes == ([(64,)] if "seq" in name else [(8, 8)])


@pytest.mark.parametrize("name", ["mlp_seq_tfk2", "mlp_func_tfk2"])
def test_keras_2_0_era_file(tmp_path, name):
    p = to_keras20(fixture_path(name), str(tmp_path / "old.h5"))
    with h5py.File(p) as f:
        cfg = json.loads(f.attrs["model_config"])
        assert cfg["class_name"] in ("Model", "Sequential")
        if cfg["class_name"] == "Sequential":
            assert isinstance(cfg["config"], list)
    d = fixture_data(name)
    fm = fixnet.load(p)
    assert "dense_1" in [n.layer for n in fm.graph.nodes]
    np.testing.assert_allclose(fm.predict(d["x_test"]), d["keras_float"], rtol=1e-5, atol=0)
    qm = fm.quantize(d["x_calib"])
    assert (qm.predict(d["x_test"]).argmax(1) == d["tflite_int8"].argmax(1)).mean() >= 0.99


def test_weight_names_without_known_suffixes_fall_back_to_file_order(copy_fixture):
    # some writers name weights W/b or by variable ids; order is what Keras itself relies on
    p = copy_fixture("mlp_seq_tfk2")
    d = fixture_data("mlp_seq_tfk2")
    with h5py.File(p, "r+") as f:
        g = f["model_weights/dense"]
        k, b = np.array(g["dense/kernel:0"]), np.array(g["dense/bias:0"])
        del g["dense/kernel:0"], g["dense/bias:0"]
        g["dense/W:0"], g["dense/b:0"] = k, b
        g.attrs["weight_names"] = np.array([b"dense/W:0", b"dense/b:0"])
    np.testing.assert_allclose(fixnet.load(p).predict(d["x_test"]), d["keras_float"], rtol=1e-5)


def test_bytes_attributes_are_read(copy_fixture):
    p = copy_fixture("mlp_func_k3")
    d = fixture_data("mlp_func_k3")
    with h5py.File(p, "r+") as f:
        f.attrs["model_config"] = np.bytes_(f.attrs["model_config"].encode())
    np.testing.assert_allclose(fixnet.load(p).predict(d["x_test"]), d["keras_float"], rtol=1e-5)


def test_sequential_without_input_layer_uses_batch_input_shape(copy_fixture):
    p = copy_fixture("mlp_seq_tfk2")
    d = fixture_data("mlp_seq_tfk2")

    def edit(cfg):
        layers = cfg["config"]["layers"]
        shape = layers.pop(0)["config"]["batch_input_shape"]
        layers[0]["config"]["batch_input_shape"] = shape
        return cfg
    edit_config(p, edit)
    np.testing.assert_allclose(fixnet.load(p).predict(d["x_test"]), d["keras_float"], rtol=1e-5)


def test_sequential_built_without_input_shape_uses_build_input_shape(copy_fixture):
    p = copy_fixture("mlp_seq_k3")
    d = fixture_data("mlp_seq_k3")

    def edit(cfg):
        cfg["config"]["layers"].pop(0)
        cfg["config"]["build_input_shape"] = [None, 64]
        return cfg
    edit_config(p, edit)
    np.testing.assert_allclose(fixnet.load(p).predict(d["x_test"]), d["keras_float"], rtol=1e-5)


def test_unbuilt_sequential_is_a_clear_error(copy_fixture):
    p = copy_fixture("mlp_seq_k3")

    def edit(cfg):
        cfg["config"]["layers"].pop(0)
        cfg["config"].pop("build_input_shape", None)
        return cfg
    edit_config(p, edit)
    with pytest.raises(fixnet.ModelFileError, match="no input shape"):
        fixnet.load(p)


def test_dense_with_softmax_activation_is_split(copy_fixture):
    fm = fixnet.load(fixture_path("mlp_seq_k3"))
    last = fm.graph.nodes[-2:]
    assert [n.op for n in last] == ["dense", "softmax"]
    assert {n.layer for n in last} == {"dense_2"}


def test_batchnorm_without_scale_and_center(copy_fixture):
    # BatchNormalization(scale=False, center=False) stores only the moving statistics
    p = copy_fixture("mlp_seq_tfk2")
    d = fixture_data("mlp_seq_tfk2")
    with h5py.File(p, "r+") as f:
        g = f["model_weights/batch_normalization"]
        gamma = np.array(g["batch_normalization/gamma:0"])
        beta = np.array(g["batch_normalization/beta:0"])
        del g["batch_normalization/gamma:0"], g["batch_normalization/beta:0"]
        g.attrs["weight_names"] = np.array([b"batch_normalization/moving_mean:0",
                                            b"batch_normalization/moving_variance:0"])

    def edit(cfg):
        for l in cfg["config"]["layers"]:
            if l["class_name"] == "BatchNormalization":
                l["config"]["scale"] = l["config"]["center"] = False
        return cfg
    edit_config(p, edit)
    fm = fixnet.load(p)
    # the reference is the same network with gamma=1, beta=0: recompute it from the original
    orig = fixnet.load(fixture_path("mlp_seq_tfk2"))
    bn = [n for n in orig.graph.nodes if n.op == "affine"][0]
    bn.weights["scale"] = bn.weights["scale"] / gamma
    bn.weights["offset"] = (bn.weights["offset"] - beta) / gamma
    np.testing.assert_allclose(fm.predict(d["x_test"]), orig.predict(d["x_test"]), rtol=1e-5)

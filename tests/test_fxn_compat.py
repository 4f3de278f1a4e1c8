""".fxn files written by an earlier fixnet load and predict exactly what that fixnet predicted.

tests/data/fxn_094588e/ holds four models saved by fixnet at commit 094588e (before issue 17's
kernels and issue 18's restructuring): a Dense MLP, a DepthwiseConv2D model, an Add/merge model
with two outputs and a recurrent (LSTM) model, with the int8 outputs that fixnet computed on the
first 16 test samples of each fixture (int8_outputs.npz, written by that fixnet). Whatever the
code becomes, these files must keep loading and give those bits."""
import os

import numpy as np
import pytest

import fixnet
from conftest import fixture_data

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fxn_094588e")
SAVED = ["mlp_func_k3", "layers_depthwise_k3", "layers_merge_k3", "rnn_sensor_k3"]


def _inputs(name):
    d = fixture_data(name)
    if "x_test" in d:
        return d["x_test"][:16]
    n = sum(1 for k in d if k.startswith("x_test_"))
    assert n > 1
    return [d[f"x_test_{i}"][:16] for i in range(n)]


def test_the_saved_files_are_all_there():
    assert sorted(f[:-4] for f in os.listdir(DATA) if f.endswith(".fxn")) == sorted(SAVED)


@pytest.mark.parametrize("name", SAVED)
def test_an_earlier_fixnet_file_predicts_its_saved_bits(name):
    qm = fixnet.load(os.path.join(DATA, name + ".fxn"))
    with np.load(os.path.join(DATA, "int8_outputs.npz")) as d:
        want = [d[k] for k in sorted(k for k in d.files if k.startswith(name + "__y"))]
    assert want
    got = qm.predict(_inputs(name), output="int8")
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)

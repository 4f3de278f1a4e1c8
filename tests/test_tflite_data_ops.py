"""TFLite's data-movement operators (SLICE, STRIDED_SLICE with strides and shrinking, SPLIT,
SPLIT_V, UNPACK, GATHER, DEPTH_TO_SPACE, SPACE_TO_DEPTH, REVERSE_V2; and PADV2, and Keras'
PReLU as the converter writes it: RELU, MUL, ADD and a float NEG): each fixture of
models/tflite/data_ops/ (models/make_tflite_data_ops.py: the converter's file of a small model
on the digits, with TFLite's outputs) gives TFLite's outputs bit for bit; the steps equal their
oracle and survive a .fxn round trip; what moves codes across the batch axis is refused."""
import glob
import os

import numpy as np
import pytest

import fixnet
from conftest import fixture_path
from fixnet.tflite.steps import TfliteGatherStep

import tflite  # noqa: E402,F401  (the test extra's parser: a missing one fails here, not skips)

DIR = os.path.dirname(fixture_path("tflite/data_ops/x"))
CASES = sorted(os.path.basename(p)[:-7] for p in glob.glob(os.path.join(DIR, "*.tflite")))


def test_every_case_is_here():
    assert CASES == ["depth_to_space", "gather", "padv2", "prelu", "reverse", "slice",
                     "space_to_depth", "split", "split_v", "strided", "unpack"]


def outputs(qm, x, names):
    got = qm.predict(x, output="int8")
    got = got if isinstance(got, list) else [got]
    by_name = dict(zip(qm.outputs, got))
    return [by_name[n] for n in names]


@pytest.mark.parametrize("name", CASES)
def test_data_ops_give_tflite_outputs(name, tmp_path):
    qm = fixnet.load(os.path.join(DIR, name + ".tflite"))
    with np.load(os.path.join(DIR, name + ".npz")) as z:
        x, names = z["x"], [str(n) for n in z["output_names"]]
        want = [z[f"ref_{k}"] for k in range(len(names))]
        ops = set(str(o) for o in z["ops"])
    assert any(isinstance(s, TfliteGatherStep) for s in qm.steps) or ops & {"STRIDED_SLICE",
                                                                              "PADV2", "MUL"}
    got = outputs(qm, x, names)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.reshape(g.shape))
    oracle = qm.predict_oracle(x)
    oracle = oracle if isinstance(oracle, list) else [oracle]
    for g, o in zip(qm.predict(x, output="int8") if len(got) > 1 else [got[0]], oracle):
        np.testing.assert_array_equal(g, o)
    qm.save(tmp_path / "m.fxn")
    back = fixnet.load(tmp_path / "m.fxn")
    for g, b in zip(got, outputs(back, x, names)):
        np.testing.assert_array_equal(g, b)


def test_a_gather_step_refuses_an_index_outside_the_sample():
    with pytest.raises(ValueError, match="outside"):
        TfliteGatherStep("g", "g", ["x"], ["y"], np.array([0, 5]), 5)

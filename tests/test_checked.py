"""Checked execution: the oracle with int64 accumulators, bit-identical to the kernels, raising
AccumulatorOverflowError naming the layer when an int32 accumulator would wrap."""

import numpy as np
import pytest

import fixnet
from conftest import fixture_data, fixture_path


@pytest.mark.parametrize("name", ["mlp_func_k3", "resnet_small_k3", "concat_branches_tfk2"])
def test_checked_run_is_bit_identical_and_reports_every_layer(name):
    d = fixture_data(name)
    qm = fixnet.load(fixture_path(name)).quantize(d["x_calib"])
    x = d["x_test"][:40]
    assert np.array_equal(qm.predict(x, output="int8", check_overflow=True), qm.predict(x, output="int8"))
    assert np.array_equal(qm.predict(x, check_overflow=True), qm.predict(x))
    rep = qm.last_check
    assert qm.steps and [r["layer"] for r in rep] == [s.layer for s in qm.steps]
    # the static bound is never below what a real run sees
    bounds = {(b.layer, b.op): int(b.worst.max()) for b in qm.overflow_bounds()}
    compared = 0
    for r in rep:
        if r["max_abs_accumulator"] is not None and (r["layer"], r["op"]) in bounds:
            assert r["max_abs_accumulator"] <= bounds[r["layer"], r["op"]]
            compared += 1
    assert compared > 0, f"{name}: no step with both a measured accumulator and a static bound"
    assert "checked execution" in str(rep)


def test_crafted_model_trips_checked_execution():
    # dense_2's channel 3 gets an int32 bias just below 2^31: any positive dot product wraps
    # int32. (Set on the step: quantize() itself widens a channel whose bias is that large,
    # see tests/test_dead_channels.py, so a model file cannot make it.)
    d = fixture_data("mlp_seq_tfk2")
    qm = fixnet.load(fixture_path("mlp_seq_tfk2")).quantize(d["x_calib"])
    s = qm.steps[2]
    assert s.layer == "dense_2"
    bias = s.bias.copy()
    bias[3] = 2 ** 31 - 2
    s.bias = bias
    with pytest.raises(fixnet.AccumulatorOverflowError, match=r"layer 'dense_2' \(dense\).*wrap"):
        qm.predict(d["x_test"], check_overflow=True)

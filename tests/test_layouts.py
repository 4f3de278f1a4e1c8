"""fixnet.layouts: each weight layout's conversions are inverses of each other and agree with
the float ops (a Keras kernel's rows, run as the op's float reference, give its outputs)."""
import numpy as np
import pytest

from fixnet import layouts

SHAPES = {"dense": (7, 5), "conv2d": (3, 2, 4, 6), "depthwise_conv2d": (3, 3, 4, 2),
          "rnn": (5, 12), "affine": (6,)}


@pytest.mark.parametrize("op", sorted(SHAPES))
def test_rows_and_step_layouts_round_trip(op):
    k = np.random.default_rng(0).normal(size=SHAPES[op])
    rows = layouts.rows_from_keras(op, k)
    m = k.shape[3] if op == "depthwise_conv2d" else 1
    np.testing.assert_array_equal(layouts.keras_from_rows(op, rows, m), k)
    step = layouts.step_from_rows(op, rows)
    assert step.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(layouts.rows_from_step(op, step), rows)
    assert rows.shape[0] == layouts.out_channels(op, k)
    assert layouts.flat_rows(rows).shape == (rows.shape[0], layouts.taps(op, k))
    assert layouts.step_taps(op, step) == layouts.taps(op, k)


def test_the_layouts_are_the_documented_ones():
    dk = np.arange(3 * 3 * 4 * 2).reshape(3, 3, 4, 2)            # [KH, KW, C, M]
    rows = layouts.rows_from_keras("depthwise_conv2d", dk)
    assert rows.shape == (8, 3, 3)                                # [C*M, KH, KW]
    np.testing.assert_array_equal(rows[1 * 2 + 1], dk[:, :, 1, 1])   # channel o = c*M + m
    assert layouts.step_from_rows("depthwise_conv2d", rows).shape == (3, 3, 8)   # [KH, KW, C*M]
    ck = np.arange(2 * 2 * 3 * 5).reshape(2, 2, 3, 5)            # [KH, KW, Cin, Cout]
    np.testing.assert_array_equal(layouts.rows_from_keras("conv2d", ck)[4], ck[..., 4])
    assert layouts.taps("conv2d", ck) == 12 and layouts.taps("depthwise_conv2d", dk) == 9


def test_scaling_output_channels_scales_each_one():
    dk = np.ones((3, 3, 4, 2))
    s = np.arange(8.0)
    out = layouts.scale_output_channels("depthwise_conv2d", dk, s)
    np.testing.assert_array_equal(layouts.flat_rows(layouts.rows_from_keras(
        "depthwise_conv2d", out)).max(axis=1), s)


def test_an_op_without_a_layout_is_an_error():
    assert not layouts.has_rows("global_average_pool")
    with pytest.raises(ValueError, match="no weight layout for op 'global_average_pool'"):
        layouts.rows_from_step("global_average_pool", np.ones((3, 3, 4)))

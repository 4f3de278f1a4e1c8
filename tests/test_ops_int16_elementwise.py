"""The activation and softmax ops on int16 tensors (fixnet/ops/activation.py,
fixnet/ops/softmax.py): what their quantize builds for an int16 node, and the steps (bound to
the kernels of the build in use) bit-exact with their oracle; RescaleStep as the conversion
between int8 and int16 tensors; the overflow bounds in the input's type."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fixnet.activations import activation
from fixnet.errors import UnsupportedLayerError
from fixnet.graph import Node
from fixnet.ops.activation import Activation, LookupStep, RescaleStep
from fixnet.ops.softmax import Softmax, SoftmaxStep, exp_table16, softmax_qparams
from fixnet.quant.qparams import QParams

X16 = QParams(8.0 / 32767, 0, 16)               # logits / activations in [-8, 8]
CODES16 = np.arange(-32768, 32768).astype(np.int16)


class FakeQuantContext:
    """What an op's quantize reads of the quantizer: qparams and shapes per tensor, and the
    int8 softmax's levels."""

    def __init__(self, qparams, shapes, softmax_levels=255):
        self._qparams, self._shapes, self.softmax_levels = qparams, shapes, softmax_levels

    def qparams(self, tensor):
        return self._qparams[tensor]

    def shape(self, tensor):
        return self._shapes[tensor]


def quantized_step(op, node, q):
    """op.quantize's step with its activation type set, as the quantizer does."""
    step = op.quantize(node, q)
    step.bits = q.qparams(node.outputs[0]).bits
    return step


def run_bound_and_oracle(step, x, out_dtype):
    """(the step's kernel output, its oracle output) on input x."""
    out = np.empty(x.shape, out_dtype)
    step.bind({step.inputs[0]: x, step.outputs[0]: out})()
    return out, step.oracle([x])[0]


@pytest.mark.parametrize("fn", ["sigmoid", "tanh", "swish", "gelu"])
def test_int16_activation_is_a_65536_entry_table_exact_for_every_code(fn):
    y_qp = QParams(1.0 / 32767 if fn in ("sigmoid", "tanh") else 8.0 / 32767, 0, 16)
    node = Node("act", "activation", ["x"], ["y"], attrs={"fn": fn}, layer="act")
    step = quantized_step(Activation(), node, FakeQuantContext({"x": X16, "y": y_qp}, {}))
    assert isinstance(step, LookupStep) and step.table.dtype == np.int16
    assert step.table.shape == (65536,)
    out, expected = run_bound_and_oracle(step, CODES16, np.int16)
    np.testing.assert_array_equal(out, expected)
    # every code has its own entry: the output is the float function rounded once
    f, _ = activation(fn)
    np.testing.assert_array_equal(out, y_qp.quantize(f(X16.dequantize(CODES16).astype(np.float64))))


def test_int16_relu_is_a_rescale_with_int16_bounds():
    y_qp = QParams(6.0 / 32767, 0, 16)
    node = Node("act", "activation", ["x"], ["y"], attrs={"fn": "relu6"}, layer="act")
    step = quantized_step(Activation(), node, FakeQuantContext({"x": X16, "y": y_qp}, {}))
    assert isinstance(step, RescaleStep) and step.input_bits == 16
    assert (step.in_zp, step.out_zp, step.act_min, step.act_max) == (0, 0, 0, 32767)
    out, expected = run_bound_and_oracle(step, CODES16, np.int16)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 32767
    bound = step.overflow_bound()
    assert bound.worst.tolist() == [32768 << max(step.shift, 0)] and bound.proven


@pytest.mark.parametrize("in_qp, out_qp", [
    (QParams(0.05, -20), QParams(0.05 * 255 / 65535, 0, 16)),     # int8 -> int16
    (QParams(8.0 / 32767, 0, 16), QParams(16.0 / 255, -1)),       # int16 -> int8
    (QParams(0.05, 3), QParams(0.07, -9)),                        # int8 -> int8
    (QParams(8.0 / 32767, 0, 16), QParams(3.0 / 32767, 0, 16)),   # int16 -> int16
])
def test_rescale_step_converts_between_any_types(in_qp, out_qp):
    # What the quantizer inserts where an int8 tensor meets an int16 layer, and back: the
    # real factor in_scale / out_scale, the output's full range; in_bits the input's type,
    # bits the output's. (int8 -> int16 over the same range is a factor near 2 * 32767 / 255
    # = 257: quantize_multiplier's, not requant_multipliers', which saturates factors at 256,
    # a rule made for int8 outputs.)
    from fixnet.oracle import quantize_multiplier
    m0, shift = quantize_multiplier(in_qp.scale / out_qp.scale)
    step = RescaleStep("c", "c", ["x"], ["y"], in_qp.zero_point, m0, shift,
                       out_qp.zero_point, out_qp.qmin, out_qp.qmax, in_bits=in_qp.bits)
    step.bits = out_qp.bits
    x = np.arange(in_qp.qmin, in_qp.qmax + 1).astype(in_qp.dtype)
    out, expected = run_bound_and_oracle(step, x, out_qp.dtype)
    assert expected.dtype == out_qp.dtype
    np.testing.assert_array_equal(out, expected)
    # each code within range lands within half a step of its real value, give or take the
    # double rounding (the first rounding's unit is a small fraction of a step) and the
    # float32 scales
    real = in_qp.dequantize(x).astype(np.float64)
    inside = (real >= out_qp.real_range[0]) & (real <= out_qp.real_range[1])
    err = np.abs(out_qp.dequantize(out).astype(np.float64) - real)[inside]
    assert err.max() <= 0.5 * out_qp.scale * (1 + 2.0 ** -6)
    worst = max(abs(in_qp.qmin - in_qp.zero_point), abs(in_qp.qmax - in_qp.zero_point))
    assert step.overflow_bound().worst.tolist() == [worst << max(shift, 0)]


def test_rescale_step_from_a_file_written_before_int16_is_int8_to_int8():
    step = RescaleStep.__new__(RescaleStep)
    step.__dict__.update(dict(name="r", layer="r", inputs=["x"], outputs=["y"], in_zp=-128,
                              m0=2 ** 30, shift=1, out_zp=3, act_min=-128, act_max=127))
    assert step.input_bits == 8 and step.bits == 8
    assert step.overflow_bound().worst.tolist() == [255 << 1]


def test_int16_softmax_output_is_scale_1_over_32767_and_the_step_matches_its_oracle():
    node = Node("sm", "softmax", ["x"], ["y"], layer="sm")
    q = FakeQuantContext({"x": X16}, {"x": (10,)})
    (y_qp,) = Softmax().output_qparams(node, q)
    assert y_qp == QParams(float(np.float32(1 / 32767)), 0, 16)
    q._qparams["y"] = y_qp
    step = quantized_step(Softmax(), node, q)
    assert isinstance(step, SoftmaxStep) and step.levels == 32767 and step.bits == 16
    np.testing.assert_array_equal(step.table, exp_table16(X16.scale, 10))
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32768, (7, 10)).astype(np.int16)
    out, expected = run_bound_and_oracle(step, x, np.int16)
    np.testing.assert_array_equal(out, expected)
    # the overflow proof: the int32 row sum only (the numerator is formed in double)
    bound = step.overflow_bound()
    assert bound.worst.tolist() == [10 * int(step.table[0])] and bound.proven


def test_int8_softmax_is_unchanged():
    node = Node("sm", "softmax", ["x"], ["y"], layer="sm")
    q = FakeQuantContext({"x": QParams(0.1, 5)}, {"x": (10,)}, softmax_levels=256)
    assert Softmax().output_qparams(node, q) == [softmax_qparams(256)]
    q._qparams["y"] = softmax_qparams(256)
    step = quantized_step(Softmax(), node, q)
    assert step.table.shape == (256,) and step.levels == 256
    assert step.overflow_bound().worst.tolist() == [10 * 2 ** 22, 256 * 2 ** 22]


@pytest.mark.parametrize("scale, channels", [(1e-6, 10), (2.4e-4, 10), (0.05, 1000), (40.0, 3),
                                             (1e-3, 1), (1e-3, 2 ** 22)])
def test_exp_table16_ends_where_its_entries_round_to_zero(scale, channels):
    t = exp_table16(scale, channels)
    k = round(math.log2(int(t[0])))
    assert t[0] == 2 ** k and channels * 2 ** k <= 2 ** 30 and channels * 2 ** (k + 1) > 2 ** 30
    assert t.dtype == np.int32 and 1 <= t.size <= 65536 and (np.diff(t) <= 0).all()
    assert t[-1] > 0
    if t.size < 65536:      # the next entry rounds to 0: differences past the end take 0
        assert round(2.0 ** k * math.exp(-scale * t.size)) == 0
    np.testing.assert_array_equal(t, np.round(2.0 ** k * np.exp(-scale * np.arange(t.size))))


def test_exp_table16_refuses_more_classes_than_int32_sums_allow():
    with pytest.raises(UnsupportedLayerError, match="too wide"):
        exp_table16(0.01, 2 ** 23)

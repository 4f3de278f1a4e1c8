"""The integer rules of TFLite's 16x8 kernels that no fixnet kernel computes, as NumPy oracles,
and the steps that run them (fixnet/tflite/int16.py says which TFLite op maps where):

* softmax16_reference: reference_ops::SoftmaxInt16, with TFLite's two 513-entry int16 tables
  (lut_populate16: LUTPopulateInt16<double>; lut_lookup16: LUTLookup) -> Tflite16SoftmaxStep.
* dense16_reference: FULLY_CONNECTED on int16 with an int64 bias and per-channel weights
  (reference_integer_ops::FullyConnectedPerChannel, the float-scale variant) ->
  Tflite16DenseStep.

Both steps run in NumPy (bind returns a Python callable): they are small in the models 16x8
files hold (a classifier head, a softmax over the classes). A .fxn file stores them by class
name and state; fixnet imports this module so that its registry finds them.
"""
import math

import numpy as np

from ..oracle.core import quantize_multiplier
from ..oracle.tflite import multiply_by_quantized_multiplier
from ..step import OverflowBound, Step

INT16_MIN, INT16_MAX = -32768, 32767
LUT_SIZE = 513                  # LUTSize<int16_t>(): 512 steps and one more to interpolate
SOFTMAX_MAX_CLASSES = 65536     # the int32 sum of at most 32767 per class


# ---- TFLite's int16 lookup tables (common.h LUTPopulateInt16<double>, LUTLookup) -------------

def c_round(v):
    """C round() of a double: nearest integer, ties away from zero (exact, as a float)."""
    r = math.floor(abs(v))
    if abs(v) - r >= 0.5:
        r += 1
    return math.copysign(r, v)


def lut_populate16(transform, input_scale, input_zp, output_scale, output_zp):
    """The 513-entry int16 table of ``transform`` (a double -> double function) as TFLite's
    LUTPopulateInt16<double> makes it: 512 samples over the input range, each corrected by
    half the error of linear interpolation at the step's midpoint, and the value at the top.
    Python floats are C doubles and math.exp is the C library's exp, so this is TFLite's
    arithmetic operation for operation."""
    input_min = input_scale * (INT16_MIN - input_zp)
    input_max = input_scale * (INT16_MAX - input_zp)
    output_min = output_scale * (INT16_MIN - output_zp)
    output_max = output_scale * (INT16_MAX - output_zp)
    steps = 512
    step = (input_max - input_min) / steps
    half_step = step / 2
    inv = float(INT16_MAX - INT16_MIN + 1) / (output_max - output_min)
    lut = np.empty(LUT_SIZE, np.int16)
    for i in range(steps):
        val = transform(input_min + i * step)
        val_mid = transform(input_min + i * step + half_step)
        val_next = transform(input_min + (i + 1) * step)
        sample = c_round(val * inv)
        mid_interp = c_round((val_next * inv + c_round(val * inv)) / 2)
        mid = c_round(val_mid * inv)
        bias = c_round((mid_interp - mid) / 2)
        lut[i] = int(min(max(sample - bias, float(INT16_MIN)), float(INT16_MAX)))
    lut[steps] = int(min(max(c_round(transform(input_max) * inv), float(INT16_MIN)),
                         float(INT16_MAX)))
    return lut


_LUTS = {}


def softmax16_tables():
    """(exp table, 1 / (1 + x) table) of TFLite's int16 SOFTMAX (activations.cc
    SoftmaxPrepare: input ranges [-10, 0] and [0, 1], output range [-1, 1], in double)."""
    if not _LUTS:
        rng = INT16_MAX - INT16_MIN
        _LUTS["exp"] = lut_populate16(math.exp, 10.0 / rng, INT16_MAX, 2.0 / rng, 0)
        _LUTS["recip"] = lut_populate16(lambda v: 1.0 / (1.0 + v), 1.0 / rng, INT16_MIN,
                                        2.0 / rng, 0)
    return _LUTS["exp"], _LUTS["recip"]


def lut_lookup16(x, lut):
    """TFLite's LUTLookup(int16, lut): the table at the top 9 bits, interpolated linearly by
    the low 7 bits, rounded half up; int16 in, int16 out (int64 arrays)."""
    x = np.asarray(x, np.int64)
    index = 256 + (x >> 7)
    offset = x & 0x7F
    lut = np.asarray(lut, np.int64)
    base = lut[index]
    slope = lut[index + 1] - base
    v = base + ((slope * offset + 64) >> 7)
    return ((v + 32768) & 0xFFFF) - 32768          # static_cast<int16_t>


def softmax16_params(input_scale, beta=1.0):
    """(input_multiplier, input_left_shift) of TFLite's int16 SOFTMAX: QuantizeMultiplier of
    float(input_scale * beta) / (10 / 65535) (the input difference scaled so that [-65535, 0]
    is [-10, 0])."""
    real = float(np.float32(np.float32(input_scale) * np.float32(beta))) / (10.0 / 65535.0)
    return quantize_multiplier(real)


def softmax16_reference(x, input_multiplier, input_left_shift):
    """TFLite's reference_ops::SoftmaxInt16 over the last axis of int16 codes ``x`` [N, C]:
    int16 probabilities at scale 1/32768 (int64 array)."""
    exp_lut, recip_lut = softmax16_tables()
    x = np.asarray(x, np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    scaled = multiply_by_quantized_multiplier(diff, int(input_multiplier), int(input_left_shift))
    e = lut_lookup16(np.clip(np.asarray(scaled, np.int64) + 32767, INT16_MIN, INT16_MAX),
                     exp_lut)
    total = e.sum(axis=-1, keepdims=True)          # int32 in TFLite: C * 32767 < 2^31
    # CountLeadingZeros of the uint32 sum (> 0: the row's maximum gives exp(0))
    headroom = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)
    shifted = ((total << (headroom - 1)) + (1 << 13)) >> 14
    recip = lut_lookup16(np.clip(shifted - ((1 << 15) + (1 << 16)), INT16_MIN, INT16_MAX),
                         recip_lut)
    right = 31 - headroom
    y = (e * recip + (np.int64(1) << (right - 1))) >> right
    return np.clip(y, 0, INT16_MAX)


def dense16_reference(x, w, bias, scales, act_min, act_max):
    """TFLite's reference FullyConnectedPerChannel on int16 ``x`` [N, K] with int8 ``w``
    [C, K] and int64 ``bias`` [C]: acc exact in int64, y = (int32) round(double(acc) *
    scales[c]) (``scales``: float64 per channel, double(in) * double(w[c]) / double(out)),
    clamped to [act_min, act_max]. int64 array [N, C]."""
    acc = np.asarray(x, np.int64) @ np.asarray(w, np.int64).T + np.asarray(bias, np.int64)
    v = acc.astype(np.float64) * np.asarray(scales, np.float64)
    t = np.trunc(v)
    r = t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)
    return np.clip(r, act_min, act_max).astype(np.int64)


# ---- steps whose run is NumPy ----------------------------------------------------------------

class Tflite16DenseStep(Step):
    """FULLY_CONNECTED of a 16x8 file: int16 [..., K] -> int16 [..., C] (dense16_reference).
    ``w_q`` int8 [C, K], ``bias`` int64 [C], ``scales`` float64 [C]. Runs in NumPy."""
    op = "tflite_dense16"
    bits = 16

    def __init__(self, name, layer, inputs, outputs, w_q, bias, scales, act_min, act_max):
        super().__init__(name, layer, inputs, outputs)
        self.w_q = np.ascontiguousarray(w_q, np.int8)
        self.bias = np.ascontiguousarray(bias, np.int64)
        self.scales = np.ascontiguousarray(scales, np.float64)
        self.act_min, self.act_max = int(act_min), int(act_max)

    def run(self, x):
        c, k = self.w_q.shape
        y = dense16_reference(x.reshape(-1, k), self.w_q, self.bias, self.scales,
                              self.act_min, self.act_max)
        return y.astype(np.int16)

    def bind(self, bufs):
        x, y = bufs[self.inputs[0]], bufs[self.outputs[0]]
        flat = y.reshape(-1, self.w_q.shape[0])

        def call():
            flat[...] = self.run(x)
        return call

    def oracle(self, ins):
        x = np.asarray(ins[0])
        y = self.run(x)
        return [y.reshape(x.shape[:-1] + (self.w_q.shape[0],)) if x.shape[-1] == self.w_q.shape[1]
                else y.reshape(x.shape[0], -1)]

    def accumulators(self, ins):
        k = self.w_q.shape[1]
        return (np.asarray(ins[0], np.int64).reshape(-1, k) @ self.w_q.astype(np.int64).T
                + self.bias)

    def overflow_bound(self):
        # the int64 accumulator, converted to double exactly while below 2^53
        worst = (np.abs(self.bias) + 32768 * np.abs(self.w_q.astype(np.int64)).sum(axis=1))
        return OverflowBound(self.layer, self.op, worst, limit_bits=53)


class Tflite16SoftmaxStep(Step):
    """SOFTMAX of a 16x8 file: int16 [..., C] -> int16 probabilities (scale 1/32768, zero
    point 0) over the last axis (softmax16_reference). Runs in NumPy."""
    op = "tflite_softmax16"
    bits = 16

    def __init__(self, name, layer, inputs, outputs, input_multiplier, input_left_shift,
                 channels):
        super().__init__(name, layer, inputs, outputs)
        self.input_multiplier = int(input_multiplier)
        self.input_left_shift = int(input_left_shift)
        self.channels = int(channels)

    def run(self, x):
        y = softmax16_reference(x.reshape(-1, self.channels), self.input_multiplier,
                                self.input_left_shift)
        return y.astype(np.int16)

    def bind(self, bufs):
        x, y = bufs[self.inputs[0]], bufs[self.outputs[0]]
        flat = y.reshape(-1, self.channels)

        def call():
            flat[...] = self.run(x)
        return call

    def oracle(self, ins):
        x = np.asarray(ins[0])
        return [self.run(x).reshape(x.shape)]

    def overflow_bound(self):
        # the int32 row sum of the exp table's values, each at most 32767
        return OverflowBound(self.layer, self.op, np.array([self.channels * INT16_MAX], np.int64),
                             what="exp sum")

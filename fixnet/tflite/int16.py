"""TFLite's 16x8 files (int16 activations, symmetric, zero point 0; int8 weights per channel;
int64 biases: what TFLiteConverter writes with ``supported_ops = [EXPERIMENTAL_TFLITE_BUILTINS_
ACTIVATIONS_INT16_WEIGHTS_INT8]``) as fixnet steps giving TFLite's reference kernels' integers.

A file is in 16x8 mode when one of its activation tensors is INT16 (Converter.int16); each
operator is then converted by the ``op16_<name>`` method of Int16Rules, and an op without one
is refused ("not implemented for 16x8 files"): the int8 rules assume int8 ranges and int32
biases. TFLite's integer rule per op (TensorFlow 2.21 reference kernels, BUILTIN_REF), and the
step that computes it:

* CONV_2D (reference_integer_ops::ConvPerChannel, int16 input, int64 bias): acc = bias +
  sum x * w in int64; y = MultiplyByQuantizedMultiplier(int64 acc, m, shift): the multiplier
  rounded to 16 bits r = (m + 2^15) >> 16, then (acc * r + 2^(t-1)) >> t, t = 15 - shift;
  m, shift from double(in_scale) * double(w_scale) / double(out_scale) as for int8. ->
  fixnet's wide conv2d (ConvStep with acc_bits 64: _wide.Conv2dWideCall, oracle.conv2d_wide),
  which is that rule. The int64 bias must fit int32 (the wide kernel's bias), else refused.
* DEPTHWISE_CONV_2D (DepthwiseConvPerChannel, int16): the same int64 accumulator and rule ->
  the same wide conv2d as a grouped convolution (one group per input channel, the depth
  multiplier's output channels in it: weights [C * M, KH, KW, 1], groups C).
* FULLY_CONNECTED (fully_connected.cc, int16 input with an int64 bias:
  reference_integer_ops::FullyConnectedPerChannel, the float-scale variant): acc = bias +
  sum x * w in int64, y = (int32) round(double(acc) * (double(in_scale) * double(w_scale[c])
  / double(out_scale))), C round() (half away from zero), clamped -> Tflite16DenseStep, run in
  NumPy (an int64 matrix product, then the double rounding; no fixnet kernel rounds so).
  Weights with one scale go through another kernel there: refused.
* MAX_POOL_2D, AVERAGE_POOL_2D (reference_integer_ops pooling int16): the int8 rules on int16
  codes (average: the in-bounds sum rounded half away from zero by the count) -> PoolStep.
* MEAN over H and W (reference_ops::QuantizedMeanOrSum<int16_t>, int32 sum): the int8 rule ->
  GlobalAveragePoolStep on int16 (int32 sum, gemmlowp MultiplyByQuantizedMultiplier).
* ADD with pot_scale_int16 false (add.cc general int16 path): the int8 rule with the inputs
  shifted left 15 bits instead of 20 -> BinaryStep "add" on int16 (left_shift 15).
* SOFTMAX (reference_ops::SoftmaxInt16): TFLite's two 513-entry int16 tables (exp on
  [-10, 0], 1 / (1 + x) on [0, 1], LUTPopulate<int16_t> in double) with 7-bit interpolation
  -> Tflite16SoftmaxStep, run in NumPy.
* RESHAPE / SQUEEZE / EXPAND_DIMS (views), PAD (zero point 0), CONCATENATION (one
  quantization): the int8 rules, on int16 codes.
* QUANTIZE (float -> int16) at the input and DEQUANTIZE at the output: predict takes floats
  (quantized with the input scale) or int16 codes, and gives floats or ``output="int16"``.
"""
import numpy as np

from ..ops.conv import ConvStep
from ..ops.merge import BinaryStep
from ..ops.pool import GlobalAveragePoolStep
from ..oracle.core import quantize_multiplier
from .op_rules import INT32_MAX, OpRules, _f32, _fault
from .steps16 import (INT16_MAX, INT16_MIN, SOFTMAX_MAX_CLASSES, Tflite16DenseStep,
                      Tflite16SoftmaxStep, softmax16_params)

ADD_LEFT_SHIFT_16 = 15          # add.cc: general int16 ADD shifts its inputs left by 15 bits


def depthwise_as_grouped(w):
    """DEPTHWISE_CONV_2D weights [1, KH, KW, C * M] as the weights [C * M, KH, KW, 1] of a
    convolution with C groups: output channel c * M + m reads input channel c alone in both
    (group c holds output channels c * M ... c * M + M - 1), so the sums are the same."""
    return np.ascontiguousarray(np.asarray(w)[0].transpose(2, 0, 1)[..., None])


# ---- the converter's 16x8 rules --------------------------------------------------------------

class Int16Rules:
    """The op16_<name> handlers of Converter for 16x8 files (see the module docstring)."""

    def operator16(self, op):
        handler = getattr(self, "op16_" + op.op.lower(), None)
        if handler is None:
            _fault("not implemented for 16x8 files (int16 activations)")
        first = len(self.steps)
        OpRules.run_handler(self, op, handler)
        for s in self.steps[first:]:
            s.bits = 16

    def activation_range16(self, op, out_qp):
        return OpRules.activation_range(self, op, out_qp, INT16_MIN, INT16_MAX)

    def bias64(self, op, index, channels):
        """The int64 bias operand of a 16x8 op (zeros when absent)."""
        if len(op.inputs) <= index or op.inputs[index] < 0:
            return np.zeros(channels, np.int64)
        t = self.tensor(op.inputs[index])
        if t.type != "INT64":
            _fault(f"bias '{t.name}' is {t.type}: only the int64 biases of 16x8 files run here "
                   "(TFLite's int32-bias 16x8 kernels accumulate differently)")
        b = self.constant(op.inputs[index], "bias").astype(np.int64).reshape(-1)
        if b.shape != (channels,):
            _fault(f"bias '{t.name}' has {b.size} values for {channels} channels")
        return b

    def wide_conv(self, op, x, y, w, groups, strides, dilation, pads, nhwc_in, nhwc_out,
                  scales, bias):
        """A ConvStep with int64 accumulators for a 16x8 CONV_2D or DEPTHWISE_CONV_2D."""
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if np.any(np.abs(bias) > INT32_MAX):
            _fault("its int64 bias holds values beyond int32 (fixnet's wide kernel adds an "
                   "int32 bias)")
        m0, shift = self.multipliers(x_qp, scales, y_qp)
        if shift.size and int(shift.max()) > ConvStep.SHIFT_MAX_WIDE:
            _fault(f"requantization shift {int(shift.max())} (the int64 rule needs <= 14)")
        lo, hi = self.activation_range16(op, y_qp)
        step = ConvStep(self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)],
                        np.ascontiguousarray(w), strides, dilation, groups,
                        bias=bias.astype(np.int32), m0=m0, shift=shift, pad_value=0, out_zp=0,
                        act_min=lo, act_max=hi, pads=pads, nhwc_in=nhwc_in, nhwc_out=nhwc_out)
        step.bits, step.acc_bits = 16, 64
        if not step.overflow_bound().proven:
            _fault("its int64 accumulator can reach 2^47 (TFLite's int64 requantization "
                   "assumes less)")
        self.steps.append(step)

    def op16_conv_2d(self, op):
        x, y = op.inputs[0], op.outputs[0]
        w, scales = self.weights(op.inputs[1], 0)               # [Cout, KH, KW, Cin/groups]
        nhwc_in, nhwc_out = self.nhwc(x), self.nhwc(y)
        strides, dilation, pads = self.window(op, x, y, w.shape[1], w.shape[2])
        if nhwc_in[2] % w.shape[3]:
            _fault(f"filter depth {w.shape[3]} does not divide the {nhwc_in[2]} input channels")
        bias = self.bias64(op, 2, w.shape[0])
        self.wide_conv(op, x, y, w, nhwc_in[2] // w.shape[3], strides, dilation, pads, nhwc_in,
                       nhwc_out, scales, bias)

    def op16_depthwise_conv_2d(self, op):
        x, y = op.inputs[0], op.outputs[0]
        w, scales = self.weights(op.inputs[1], 3)               # [1, KH, KW, C * M]
        nhwc_in, nhwc_out = self.nhwc(x), self.nhwc(y)
        c = nhwc_in[2]
        if w.shape[0] != 1 or w.shape[3] != nhwc_out[2] or w.shape[3] % max(c, 1):
            _fault(f"filter shape {w.shape} does not fit {c} input channels")
        strides, dilation, pads = self.window(op, x, y, w.shape[1], w.shape[2])
        bias = self.bias64(op, 2, w.shape[3])
        self.wide_conv(op, x, y, depthwise_as_grouped(w), c, strides, dilation, pads, nhwc_in,
                       nhwc_out, scales, bias)

    def op16_fully_connected(self, op):
        o = op.options
        if o.get("weights_format", "DEFAULT") != "DEFAULT":
            _fault(f"weights format {o['weights_format']}")
        x, y = op.inputs[0], op.outputs[0]
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        w, scales = self.weights(op.inputs[1], 0)              # [C, K]
        c, k = w.shape
        if self.tensor(op.inputs[1]).quantization.scale.shape[0] == 1 or c == 1:
            _fault("weights with one scale (TFLite's per-tensor 16x8 kernel is not mapped)")
        xs, ys = self.sample_shape(x), self.sample_shape(y)
        if o.get("keep_num_dims") and xs and xs[-1] == k and ys == xs[:-1] + (c,):
            pass
        elif int(np.prod(xs)) != k or ys != (c,):
            _fault(f"input {self.tensor(x).shape} does not flatten to {k} features per sample")
        bias = self.bias64(op, 2, c)
        eff = np.array([x_qp.scale * _f32(s) / y_qp.scale for s in scales], np.float64)
        lo, hi = self.activation_range16(op, y_qp)
        step = Tflite16DenseStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                 [self.define(y)], w, bias, eff, lo, hi)
        if not step.overflow_bound().proven:
            _fault("its int64 accumulator can reach 2^53 (no longer exact as a double)")
        self.steps.append(step)

    def op16_max_pool_2d(self, op):
        self.pool16(op, "max")

    def op16_average_pool_2d(self, op):
        self.pool16(op, "avg")

    def pool16(self, op, kind):
        if op.options.get("fused_activation_function", "NONE") != "NONE":
            _fault(f"fused activation {op.options['fused_activation_function']}")
        kh, kw = int(op.options["filter_height"]), int(op.options["filter_width"])
        if kind == "avg" and kh * kw * 32768 + kh * kw // 2 > INT32_MAX:
            _fault("the window is too large for an int32 sum")
        self.pool(op, kind)

    def op16_mean(self, op):
        """MEAN over H and W: QuantizedMeanOrSum<int16_t> (see OpRules.op_mean: the same
        multiplier folding the division, here with int16 bounds and a zero point of 0)."""
        x, y = op.inputs[0], op.outputs[0]
        h, w_, c = self.global_window(op, "MEAN")
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if int(np.prod(self.sample_shape(y))) != c:
            _fault(f"output shape {self.tensor(y).shape} is not one value per channel")
        n = h * w_
        if n * 32768 > INT32_MAX:
            _fault(f"a window of {n} values is too large for TFLite's int32 sum")
        m, s = quantize_multiplier(x_qp.scale / y_qp.scale)
        k = min(n.bit_length() - 1, 32, 31 + s)
        m0, shift = int((m << k) // n), s - k
        self.steps.append(GlobalAveragePoolStep(
            self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)],
            np.ones((h, w_, c), np.int8), (1, 1), (1, 1), 1, bias=np.zeros(c, np.int32),
            m0=np.full(c, m0, np.int32), shift=np.full(c, shift, np.int32), pad_value=0,
            out_zp=0, act_min=INT16_MIN, act_max=INT16_MAX, pads=((0, 0), (0, 0)),
            nhwc_in=(h, w_, c), nhwc_out=(1, 1, c)))

    def op16_add(self, op):
        """ADD (add.cc, int16 with pot_scale_int16 false: the general path): the int8 rule
        with a left shift of 15."""
        if op.options.get("pot_scale_int16", True):
            _fault("pot_scale_int16 (TFLite's power-of-two int16 ADD) is not mapped")
        a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
        if any(self.tensor(i).data is not None for i in (a, b)):
            _fault("a constant operand (16x8: only two activations of one shape)")
        shapes = [self.sample_shape(a), self.sample_shape(b), self.sample_shape(y)]
        if not shapes[0] == shapes[1] == shapes[2]:
            _fault(f"operands of shapes {self.tensor(a).shape} and {self.tensor(b).shape} "
                   "(16x8: only equal shapes)")
        aq, bq, oq = self.qparams(a), self.qparams(b), self.qparams(y)
        lo, hi = self.activation_range16(op, oq)
        twice_max = 2.0 * max(aq.scale, bq.scale)
        (ma, sa), (mb, sb) = (quantize_multiplier(aq.scale / twice_max),
                              quantize_multiplier(bq.scale / twice_max))
        mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT_16) * oq.scale))
        params = dict(x_zp=0, x_m0=ma, x_shift=sa, y_zp=0, y_m0=mb, y_shift=sb,
                      left_shift=ADD_LEFT_SHIFT_16, out_m0=mo, out_shift=so, out_zp=0,
                      act_min=lo, act_max=hi, subtract=0)
        self.steps.append(BinaryStep(self.names[y], self.layer_name(y),
                                     [self.name_of(a), self.name_of(b)], [self.define(y)], "add",
                                     {k: int(v) for k, v in params.items()}))

    def op16_softmax(self, op):
        x, y = op.inputs[0], op.outputs[0]
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if abs(y_qp.scale - 1.0 / 32768) > 0.001 / 32768:
            _fault(f"output scale {y_qp.scale} (TFLite's int16 softmax writes 1/32768)")
        channels = self.sample_shape(x)[-1] if self.sample_shape(x) else 1
        if not 1 <= channels <= SOFTMAX_MAX_CLASSES:
            _fault(f"{channels} classes (at most {SOFTMAX_MAX_CLASSES})")
        m, shift = softmax16_params(x_qp.scale, float(op.options.get("beta", 1.0)))
        if m == 0 or 65535 * 2 ** max(shift, 0) > INT32_MAX:
            _fault(f"input scale {x_qp.scale}: the scaled differences leave int32")
        self.steps.append(Tflite16SoftmaxStep(self.names[y], self.layer_name(y),
                                              [self.name_of(x)], [self.define(y)], m, shift,
                                              channels))

    def op16_reshape(self, op):
        self.view(op)

    op16_squeeze = op16_expand_dims = op16_reshape

    def op16_pad(self, op):
        self.op_pad(op)

    def op16_concatenation(self, op):
        self.op_concatenation(op)

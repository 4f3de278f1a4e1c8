"""How each TFLite operator becomes fixnet steps: the op_<name> methods of OpRules (one per
builtin op, named as TFLite names it, lower case), mixed into fixnet.tflite.convert.Converter,
which calls them in the file's order. Each reads the operator's tensors and options, derives
the integers TFLite's kernel would (its Prepare), and appends the step that computes them; a
case it cannot run raises _Fault with the reason (the converter lists them all). The ops that
only move codes, and the dilated-convolution pattern, are in op_rules_layout.py."""
import numpy as np

from .. import layouts
from ..ops.activation import LookupStep, RescaleStep
from ..ops.conv import ConvStep, DepthwiseStep
from ..ops.conv_transpose import ZeroInsertStep
from ..ops.dense import DenseStep
from ..ops.merge import BinaryStep, ConcatStep
from ..ops.pool import GlobalAveragePoolStep, PadStep, PoolStep
from ..ops.reshape import AliasStep
from ..oracle.core import quantize_multiplier, round_half_away
from ..quant.qparams import QParams
from ..step import TensorSpec
from .steps import TfliteBroadcastBinaryStep, TfliteConstantBinaryStep, TfliteSoftmaxStep
from .tables import table_for

INT32_MAX = 2 ** 31 - 1
ADD_LEFT_SHIFT = 20         # TFLite's int8 ADD/SUB: inputs shifted left by 20 bits first
SOFTMAX_MAX_CLASSES = 4095      # the int32 row sum of TfliteSoftmaxStep


def _f32(x):
    """A float32 value as the Python float TFLite's double arithmetic sees."""
    return float(np.float32(x))


class _Fault(Exception):
    """One operator that cannot be converted (collected, then raised together)."""


def _fault(why):
    raise _Fault(why)


class OpRules:
    """The operator handlers of Converter (see the module docstring)."""
    def operator(self, op):
        if getattr(self, "int16", False):
            return self.operator16(op)      # a 16x8 file: fixnet/tflite/int16.py
        handler = getattr(self, "op_" + op.op.lower(), None)
        if handler is None:
            _fault("not supported")
        self.run_handler(op, handler)

    def run_handler(self, op, handler):
        try:
            handler(op)
        except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as e:
            # an operator whose options, operands or shapes are not what the op has (a
            # damaged or hand-made file): refused, naming it
            _fault(f"malformed ({type(e).__name__}: {e}): its options, operands or shapes "
                   "are not those of a " + op.op)

    def activation_range(self, op, out_qp, lo=-128, hi=127):
        """The clamp of the op's fused activation on output codes in [lo, hi] (int8 by
        default; the 16x8 rules pass int16's bounds)."""
        fn = op.options.get("fused_activation_function", "NONE")

        def code(real):         # TFLite: zero_point + round(real / scale) in float32
            return out_qp.zero_point + int(round_half_away(np.float32(real)
                                                           / np.float32(out_qp.scale)))
        if fn == "NONE":
            return lo, hi
        if fn == "RELU":
            return max(lo, code(0.0)), hi
        if fn == "RELU6":
            return max(lo, code(0.0)), min(hi, code(6.0))
        if fn == "RELU_N1_TO_1":
            return max(lo, code(-1.0)), min(hi, code(1.0))
        _fault(f"fused activation {fn}")

    def weights(self, i, axis):
        """int8 weight codes and per-output-channel float32 scales (axis: the channel axis)."""
        t = self.tensor(i)
        if t.type == "UINT8":
            _fault(f"weights '{t.name}' are UINT8 with a zero point (the older uint8 "
                   "quantization of TensorFlow 1's converter): only symmetric int8 weights "
                   "run here; convert the model again with int8 quantization")
        if t.type != "INT8":
            _fault(f"weights '{t.name}' are {t.type} (a float or hybrid model): only int8 "
                   "weights run here")
        w = self.constant(i, "weights").astype(np.int8)
        q = t.quantization
        if q is None:
            _fault(f"weights '{t.name}' have no scale")
        if np.any(q.zero_point != 0):
            _fault(f"weights '{t.name}' are asymmetric (zero point != 0): only symmetric int8 "
                   "weights run here")
        if w.size and int(w.min()) < -127:
            _fault(f"weights '{t.name}' hold -128 (fixnet's weights are in [-127, 127], as "
                   "TFLite's int8 quantization specification asks)")
        channels = w.shape[axis]
        if q.scale.shape[0] == 1:
            scales = np.full(channels, q.scale[0], np.float32)
        elif q.quantized_dimension == axis and q.scale.shape[0] == channels:
            scales = q.scale.astype(np.float32)
        else:
            _fault(f"weights '{t.name}' are quantized per channel along axis "
                   f"{q.quantized_dimension}, expected axis {axis}")
        return w, scales

    def bias(self, op, channels, x_qp, w_scales):
        return self.bias_operand(op, 2, channels)

    def multipliers(self, x_qp, w_scales, y_qp, product_in_float32=False):
        """Per channel (m0, shift) of double(input_scale) * double(filter_scale) /
        double(output_scale), as TFLite's PopulateConvolutionQuantizationParams; with
        ``product_in_float32`` the product is rounded to float32 first, as
        GetQuantizedConvolutionMultipler (FULLY_CONNECTED with one weight scale) forms it."""
        def real(s):
            if product_in_float32:
                return _f32(np.float32(x_qp.scale) * np.float32(s)) / y_qp.scale
            return x_qp.scale * _f32(s) / y_qp.scale
        m0, shift = zip(*[quantize_multiplier(real(s)) for s in w_scales])
        return np.array(m0, np.int32), np.array(shift, np.int32)

    def folded_bias(self, bias, w_rows, x_zp, where):
        eff = bias - int(x_zp) * w_rows.astype(np.int64).sum(axis=1)
        if np.any(np.abs(eff) > INT32_MAX):
            _fault(f"{where}: the bias with the input zero point folded in leaves int32")
        return eff.astype(np.int32)

    def op_fully_connected(self, op):
        o = op.options
        if o.get("weights_format", "DEFAULT") != "DEFAULT":
            _fault(f"weights format {o['weights_format']}")
        x, y = op.inputs[0], op.outputs[0]
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        w, scales = self.weights(op.inputs[1], 0)              # [C, K]
        c, k = w.shape
        xs, ys = self.sample_shape(x), self.sample_shape(y)
        if o.get("keep_num_dims") and xs and xs[-1] == k and ys == xs[:-1] + (c,):
            pass            # dense over the last axis, the others kept: the same rows
        elif int(np.prod(xs)) != k or ys != (c,):
            _fault(f"input {self.tensor(x).shape} does not flatten to {k} features per sample")
        xin = self.name_of(x)
        if len(xs) > 1 and not o.get("keep_num_dims"):
            # TFLite flattens a higher-rank input to [batch, K] itself (no RESHAPE in the file)
            flat = self.names[y] + "/flatten"
            self.specs[flat] = TensorSpec((k,), x_qp)
            self.steps.append(AliasStep(flat, self.layer_name(y), [xin], [flat], "reshape"))
            xin = flat
        bias = self.folded_bias(self.bias(op, c, x_qp, scales), w, x_qp.zero_point, "dense")
        per_tensor = self.tensor(op.inputs[1]).quantization.scale.shape[0] == 1
        m0, shift = self.multipliers(x_qp, scales, y_qp, product_in_float32=per_tensor)
        lo, hi = self.activation_range(op, y_qp)
        step = DenseStep(self.names[y], self.layer_name(y), [xin], [self.define(y)],
                         layouts.step_from_rows("dense", w), bias, m0, shift, y_qp.zero_point,
                         lo, hi)
        step.rounding = "single"     # TFLite's reference FULLY_CONNECTED rounds once
        self.steps.append(step)

    def window(self, op, x, y, kh, kw):
        o = op.options
        h, w_, _ = self.nhwc(x)
        oh, ow, _ = self.nhwc(y)
        sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
        dh, dw = int(o.get("dilation_h_factor", 1)), int(o.get("dilation_w_factor", 1))
        if o.get("padding") == "SAME":
            def pad(n_in, n_out, k, s, d):
                total = max((n_out - 1) * s + (k - 1) * d + 1 - n_in, 0)
                return total // 2, total - total // 2
            pads = (pad(h, oh, kh, sh, dh), pad(w_, ow, kw, sw, dw))
        elif o.get("padding") == "VALID":
            pads = ((0, 0), (0, 0))
        else:
            _fault(f"padding {o.get('padding')}")
        # the padded image the oracle (int64) and the kernels' window walk over must fit the
        # memory limit: a damaged stride or dilation can ask for millions of padded rows
        padded = (h + sum(pads[0])) * (w_ + sum(pads[1])) * self.nhwc(x)[2] * 8
        if padded > self.max_memory:
            _fault(f"padding {pads} (strides {sh}x{sw}, dilation {dh}x{dw}) makes a padded "
                   f"image of {padded} bytes, past the memory limit")
        return (sh, sw), (dh, dw), pads

    def nhwc(self, i, rank3=False):
        """A tensor's sample shape as (H, W, C); with ``rank3``, a rank-3 tensor [N, L, C] (a
        Conv1D model's) is (L, 1, C)."""
        s = self.sample_shape(i)
        if rank3 and len(s) == 2:
            return (s[0], 1, s[1])
        if len(s) != 3:
            _fault(f"tensor '{self.tensor(i).name}' has shape {self.tensor(i).shape}, not NHWC")
        return s

    def conv_geometry(self, op, w, fold):
        """(x, y, nhwc_in, nhwc_out, strides, dilation, pads) of a CONV_2D or
        DEPTHWISE_CONV_2D with weights ``w`` ([., KH, KW, .]): its own, or those of the
        dilated convolution ``fold`` (op_space_to_batch_nd) it is the middle of."""
        x, y = op.inputs[0], op.outputs[0]
        if fold is None:
            return (x, y, self.nhwc(x), self.nhwc(y)) + self.window(op, x, y, w.shape[1],
                                                                      w.shape[2])
        x, y, nhwc_in, nhwc_out, dilation, pads = fold
        return x, y, nhwc_in, nhwc_out, (1, 1), dilation, pads

    def op_conv_2d(self, op, fold=None):
        """``fold``: the SPACE_TO_BATCH_ND -> ... -> BATCH_TO_SPACE_ND around this op as one
        dilated convolution (see op_space_to_batch_nd): its x, y, nhwc_in, nhwc_out, dilation
        and pads replace the op's own."""
        x, y = op.inputs[0], op.outputs[0]
        w, scales = self.weights(op.inputs[1], 0)               # [Cout, KH, KW, Cin/groups]
        x, y, nhwc_in, nhwc_out, strides, dilation, pads = self.conv_geometry(op, w, fold)
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        cin = nhwc_in[2]
        if cin % w.shape[3]:
            _fault(f"filter depth {w.shape[3]} does not divide the {cin} input channels")
        groups = cin // w.shape[3]
        rows = w.reshape(w.shape[0], -1)
        bias = self.folded_bias(self.bias(op, w.shape[0], x_qp, scales), rows, x_qp.zero_point,
                                "conv2d")
        m0, shift = self.multipliers(x_qp, scales, y_qp)
        lo, hi = self.activation_range(op, y_qp)
        self.steps.append(ConvStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                   [self.define(y)], np.ascontiguousarray(w), strides, dilation,
                                   groups, bias=bias, m0=m0, shift=shift,
                                   pad_value=x_qp.zero_point, out_zp=y_qp.zero_point,
                                   act_min=lo, act_max=hi, pads=pads, nhwc_in=nhwc_in,
                                   nhwc_out=nhwc_out))

    def op_depthwise_conv_2d(self, op, fold=None):
        """``fold``: as op_conv_2d's."""
        x, y = op.inputs[0], op.outputs[0]
        w, scales = self.weights(op.inputs[1], 3)               # [1, KH, KW, C * M]
        x, y, nhwc_in, nhwc_out, strides, dilation, pads = self.conv_geometry(op, w, fold)
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        c = nhwc_in[2]
        if w.shape[0] != 1 or w.shape[3] != nhwc_out[2] or w.shape[3] % max(c, 1):
            _fault(f"filter shape {w.shape} does not fit {c} input channels")
        mult = w.shape[3] // c
        w3 = np.ascontiguousarray(w[0])                          # [KH, KW, C * M]
        rows = w3.reshape(-1, w3.shape[2]).T
        bias = self.folded_bias(self.bias(op, w3.shape[2], x_qp, scales), rows,
                                x_qp.zero_point, "depthwise_conv2d")
        m0, shift = self.multipliers(x_qp, scales, y_qp)
        lo, hi = self.activation_range(op, y_qp)
        self.steps.append(DepthwiseStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                        [self.define(y)], w3, strides, dilation, mult,
                                        bias=bias, m0=m0, shift=shift,
                                        pad_value=x_qp.zero_point, out_zp=y_qp.zero_point,
                                        act_min=lo, act_max=hi, pads=pads,
                                        nhwc_in=nhwc_in, nhwc_out=nhwc_out))

    def pool(self, op, kind):
        x, y = op.inputs[0], op.outputs[0]
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if x_qp != y_qp:
            _fault("input and output are quantized differently (TFLite pools keep them equal)")
        if op.options.get("fused_activation_function", "NONE") != "NONE":
            lo, hi = self.activation_range(op, y_qp)
            if (lo, hi) != (-128, 127):
                _fault(f"fused activation {op.options['fused_activation_function']} that clamps")
        kh, kw = int(op.options["filter_height"]), int(op.options["filter_width"])
        strides, _, pads = self.window(op, x, y, kh, kw)
        step = PoolStep(self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)],
                        kind, (kh, kw), strides, (pads[0][0], pads[1][0]), self.nhwc(x),
                        self.nhwc(y))
        self.steps.append(step)

    def op_max_pool_2d(self, op):
        self.pool(op, "max")

    def op_average_pool_2d(self, op):
        self.pool(op, "avg")

    def binary(self, op, kind):
        a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
        aq, bq, oq = self.qparams(a), self.qparams(b), self.qparams(y)
        lo, hi = self.activation_range(op, oq)
        if kind in ("add", "subtract"):
            twice_max = 2.0 * max(aq.scale, bq.scale)
            (ma, sa), (mb, sb) = (quantize_multiplier(aq.scale / twice_max),
                                  quantize_multiplier(bq.scale / twice_max))
            mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * oq.scale))
            params = dict(x_zp=aq.zero_point, x_m0=ma, x_shift=sa, y_zp=bq.zero_point, y_m0=mb,
                          y_shift=sb, left_shift=ADD_LEFT_SHIFT, out_m0=mo, out_shift=so,
                          out_zp=oq.zero_point, act_min=lo, act_max=hi,
                          subtract=int(kind == "subtract"))
        else:
            # TFLite's MUL: the real multiplier in float32 arithmetic
            real = float(np.float32(np.float32(aq.scale) * np.float32(bq.scale))
                         / np.float32(oq.scale))
            m, s = quantize_multiplier(real)
            params = dict(x_zp=aq.zero_point, y_zp=bq.zero_point, m0=m, shift=s,
                          out_zp=oq.zero_point, act_min=lo, act_max=hi)
        self.binary_step(op, kind, params)

    def binary_step(self, op, kind, params):
        """The step of a two-operand op: BinaryStep when both operands are activations of the
        output's shape; TfliteConstantBinaryStep when one is a constant of the file that
        broadcasts to the other's shape (TFLite's broadcast kernels compute each element by
        the same rule, with the constant's element at that position)."""
        a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
        params = {k: int(v) for k, v in params.items()}
        const = [i for i in (a, b) if self.tensor(i).data is not None]
        out_shape = tuple(int(d) for d in self.tensor(y).shape)
        if not const:
            shapes = [self.sample_shape(a), self.sample_shape(b)]
            ys = self.sample_shape(y)
            inputs = [self.name_of(a), self.name_of(b)]
            if shapes[0] == shapes[1] == ys:
                self.steps.append(BinaryStep(self.names[y], self.layer_name(y), inputs,
                                             [self.define(y)], kind, params))
                return
            if len(shapes[0]) != len(shapes[1]) or \
                    tuple(np.broadcast_shapes(*shapes)) != ys:
                _fault(f"operands of shapes {self.tensor(a).shape} and {self.tensor(b).shape} "
                       f"do not broadcast to {self.tensor(y).shape}")
            self.steps.append(TfliteBroadcastBinaryStep(self.names[y], self.layer_name(y), inputs,
                                                        [self.define(y)], kind, params, shapes,
                                                        ys))
            return
        if len(const) == 2:
            _fault("both operands are constants")
        c = const[0]
        x = b if c == a else a
        x_shape = tuple(int(d) for d in self.tensor(x).shape)
        c_shape = tuple(int(d) for d in self.tensor(c).shape)
        if x_shape != out_shape or tuple(np.broadcast_shapes(x_shape, c_shape)) != out_shape:
            _fault(f"operands of shapes {x_shape} and {c_shape}: the constant must broadcast "
                   f"to the activation's shape {out_shape}")
        t = self.tensor(c)
        if t.type not in ("INT8", "UINT8"):
            _fault(f"constant operand '{t.name}' is {t.type}")
        codes = self.constant(c, "constant operand").astype(np.int64).reshape(c_shape)
        codes = codes - (128 if t.type == "UINT8" else 0)
        sample = np.broadcast_to(codes, out_shape)[0].astype(np.int8)
        self.steps.append(TfliteConstantBinaryStep(
            self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)], kind, params,
            sample, constant_first=(c == a)))

    def op_maximum(self, op):
        """MAXIMUM / MINIMUM: TFLite's int8 kernel compares the codes as they are (no
        rescaling); fixnet's maximum with every multiplier 1 (exact) is the same when both
        inputs and the output share one scale and zero point, as the converter writes them."""
        a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
        qp = self.qparams(y)
        if self.qparams(a) != qp or self.qparams(b) != qp:
            _fault("inputs and output quantized differently (TFLite compares raw codes)")
        m, s = quantize_multiplier(1.0)
        params = dict(x_zp=qp.zero_point, x_m0=m, x_shift=s, y_zp=qp.zero_point, y_m0=m,
                      y_shift=s, out_zp=qp.zero_point, act_min=-128, act_max=127,
                      take_min=int(op.op == "MINIMUM"))
        self.binary_step(op, "minimum" if op.op == "MINIMUM" else "maximum", params)

    op_minimum = op_maximum

    def op_transpose_conv(self, op):
        """TRANSPOSE_CONV (operands: output shape, weights [Cout, KH, KW, Cin], x, bias):
        TFLite's reference kernel adds (x - x_zp) * w[t] into y[i * s + t - pad], pad its
        forward-convolution padding of the output (SAME: half the total, rounded down), then
        requantizes as CONV_2D does. The same sums: x with s - 1 zero points between values
        (zero_insert), then a stride-1 conv2d with the kernel flipped, padded by k - 1 - pad
        before (fixnet/ops/conv_transpose.py)."""
        x, y = op.inputs[2], op.outputs[0]
        o = op.options
        w, scales = self.weights(op.inputs[1], 0)               # [Cout, KH, KW, Cin]
        (h, w_, c), (oh, ow, cout) = self.nhwc(x), self.nhwc(y)
        if w.shape[0] != cout or w.shape[3] != c:
            _fault(f"filter shape {w.shape} does not fit {c} input and {cout} output channels")
        strides = (int(o.get("stride_h", 1)), int(o.get("stride_w", 1)))
        if min(strides) < 1:
            _fault(f"strides {strides}")
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        pads = []
        for n_in, n_out, k, st in ((h, oh, w.shape[1], strides[0]),
                                   (w_, ow, w.shape[2], strides[1])):
            if o.get("padding") == "SAME":
                fwd = -(-n_out // st)
                before = max((fwd - 1) * st + k - n_out, 0) // 2
            elif o.get("padding") == "VALID":
                before = 0
            else:
                _fault(f"padding {o.get('padding')}")
            inserted = (n_in - 1) * st + 1
            lead = k - 1 - before
            if lead < 0:
                _fault("padding larger than the kernel")
            pads.append((lead, max(n_out + k - 1 - inserted - lead, 0)))
        xd = self.names[y] + "/zero_insert"
        inserted_shape = ((h - 1) * strides[0] + 1, (w_ - 1) * strides[1] + 1, c)
        self.specs[xd] = TensorSpec(inserted_shape, x_qp)
        self.steps.append(ZeroInsertStep(xd, self.layer_name(y), [self.name_of(x)], [xd],
                                         strides, x_qp.zero_point, (h, w_, c)))
        flipped = np.ascontiguousarray(w[:, ::-1, ::-1, :])
        bias = self.folded_bias(self.bias_operand(op, 3, cout), flipped.reshape(cout, -1),
                                x_qp.zero_point, "transpose_conv")
        m0, shift = self.multipliers(x_qp, scales, y_qp)
        lo, hi = self.activation_range(op, y_qp)
        self.steps.append(ConvStep(self.names[y], self.layer_name(y), [xd], [self.define(y)],
                                   flipped, (1, 1), (1, 1), 1, bias=bias, m0=m0, shift=shift,
                                   pad_value=x_qp.zero_point, out_zp=y_qp.zero_point,
                                   act_min=lo, act_max=hi, pads=tuple(pads),
                                   nhwc_in=inserted_shape, nhwc_out=(oh, ow, cout)))

    def bias_operand(self, op, index, channels):
        """The int32 bias operand ``index`` of ``op`` (zeros when absent)."""
        if len(op.inputs) <= index or op.inputs[index] < 0:
            return np.zeros(channels, np.int64)
        t = self.tensor(op.inputs[index])
        if t.type != "INT32":
            _fault(f"bias '{t.name}' is {t.type}, not int32")
        b = self.constant(op.inputs[index], "bias").astype(np.int64).reshape(-1)
        if b.shape != (channels,):
            _fault(f"bias '{t.name}' has {b.size} values for {channels} channels")
        return b

    def op_add(self, op):
        self.binary(op, "add")

    def op_sub(self, op):
        self.binary(op, "subtract")

    def op_mul(self, op):
        self.binary(op, "multiply")

    def view(self, op):
        x, y = op.inputs[0], op.outputs[0]
        if self.qparams(x) != self.qparams(y):
            _fault("a reshape that requantizes")
        if int(np.prod(self.sample_shape(x))) != int(np.prod(self.sample_shape(y))):
            _fault(f"reshape of {self.tensor(x).shape} to {self.tensor(y).shape} moves values "
                   "across the batch axis")
        self.steps.append(AliasStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                    [self.define(y)], "reshape"))

    op_reshape = op_squeeze = op_expand_dims = view

    def op_pad(self, op):
        """PAD with the zero point over H and W of NHWC, or over L of a rank-3 [N, L, C] tensor
        (held as (L, 1, C)); PADV2 likewise with its constant's code."""
        x, y = op.inputs[0], op.outputs[0]
        x_qp = self.qparams(x)
        if x_qp != self.qparams(y):
            _fault("input and output are quantized differently")
        value = x_qp.zero_point
        if op.op == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            c = self.constant(op.inputs[2], "constant value").reshape(-1)
            if (c.size != 1 or c.dtype not in (np.int8, np.uint8)
                    or self.qparams(op.inputs[2]) != x_qp):
                _fault("its constant value is not one code quantized as the input")
            value = int(c[0]) - (128 if c.dtype == np.uint8 else 0)
        p = self.constant(op.inputs[1], "paddings").astype(np.int64)
        rank = len(self.tensor(x).shape)
        if rank == 3 and p.shape == (3, 2):
            p = np.array([p[0], p[1], [0, 0], p[2]])
        if p.shape != (4, 2) or np.any(p[0] != 0) or np.any(p[3] != 0) or np.any(p < 0):
            _fault(f"paddings {p.tolist()}: only the H and W axes of NHWC (L of a rank-3 tensor)")
        pads = ((int(p[1, 0]), int(p[1, 1])), (int(p[2, 0]), int(p[2, 1])))
        self.steps.append(PadStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                  [self.define(y)], pads, value,
                                  self.nhwc(x, rank3=True), self.nhwc(y, rank3=True)))

    op_padv2 = op_pad

    def op_concatenation(self, op):
        """TFLite's int8 CONCATENATION keeps every input's scale and zero point equal to the
        output's (its Prepare checks it): the values are copied."""
        y = op.outputs[0]
        oq = self.qparams(y)
        if op.options.get("fused_activation_function", "NONE") != "NONE":
            _fault(f"fused activation {op.options['fused_activation_function']}")
        rank = len(self.tensor(y).shape)
        axis = int(op.options.get("axis", 0))
        axis = axis + rank if axis < 0 else axis
        if not 1 <= axis < rank:
            _fault(f"axis {op.options.get('axis')} (the batch axis, or outside the rank)")
        parts, offset = [], 0
        for i in op.inputs:
            if self.qparams(i) != oq:
                _fault("inputs quantized differently from the output")
            inner = int(np.prod(self.sample_shape(i)[axis - 1:]))
            parts.append((oq.zero_point, 0, 0, inner, offset))
            offset += inner
        if offset != int(np.prod(self.sample_shape(y)[axis - 1:])):
            _fault("input shapes do not add up to the output's")
        self.steps.append(ConcatStep(self.names[y], self.layer_name(y),
                                     [self.name_of(i) for i in op.inputs], [self.define(y)],
                                     parts, offset, oq.zero_point, self.sample_shape(y)))

    def op_quantize(self, op):
        """QUANTIZE between int8 and uint8 tensors: a view where both mean the same reals (uint8
        codes are held as int8 codes - 128), else TFLite's Requantize: out_zp +
        MBQM(x - x_zp, input_scale / output_scale), clamped (fixnet's rescale)."""
        x, y = op.inputs[0], op.outputs[0]
        if self.tensor(x).type == "FLOAT32":
            _fault("a float tensor inside the model (float or hybrid ops)")
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if x_qp == y_qp:
            self.steps.append(AliasStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                        [self.define(y)], "reshape"))
            return
        m0, shift = quantize_multiplier(x_qp.scale / y_qp.scale)
        self.steps.append(RescaleStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                      [self.define(y)], x_qp.zero_point, m0, shift,
                                      y_qp.zero_point, -128, 127))

    def op_mean(self, op):
        """MEAN over H and W (Keras' global average pooling): TFLite's reference kernel
        (QuantizedMeanOrSum) sums x - x_zp over the window of n = H * W values and
        requantizes the sum once, plus the output zero point, with the multiplier (m, s) of
        input_scale / output_scale divided by n in integers: k = min(floor(log2 n), 32,
        31 + s), m' = (m << k) // n (truncated), s' = s - k. That is a depthwise convolution
        with weights 1 and bias -x_zp * n (global_average_pool) at (m', s'); m' may lie below
        2^30 (any m0 in [0, 2^31) gives the same rule)."""
        x, y = op.inputs[0], op.outputs[0]
        h, w_, c = self.global_window(op, "MEAN")
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if int(np.prod(self.sample_shape(y))) != c:
            _fault(f"output shape {self.tensor(y).shape} is not one value per channel")
        n = h * w_
        m, s = quantize_multiplier(x_qp.scale / y_qp.scale)
        k = min(n.bit_length() - 1, 32, 31 + s)
        m0, shift = int((m << k) // n), s - k
        ones = np.ones((h, w_, c), np.int8)
        bias = np.full(c, -x_qp.zero_point * h * w_, np.int64)
        if np.any(np.abs(bias) > INT32_MAX):
            _fault("the window is too large for an int32 sum")
        self.steps.append(GlobalAveragePoolStep(
            self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)], ones,
            (1, 1), (1, 1), 1, bias=bias.astype(np.int32), m0=np.full(c, m0, np.int32),
            shift=np.full(c, shift, np.int32), pad_value=x_qp.zero_point,
            out_zp=y_qp.zero_point, act_min=-128, act_max=127, pads=((0, 0), (0, 0)),
            nhwc_in=(h, w_, c), nhwc_out=(1, 1, c)))

    def global_window(self, op, what):
        """(H, W, C) of a reduction over H and W of NHWC, or over L of a rank-3 [N, L, C]
        tensor (held as (L, 1, C)): Keras' global pooling."""
        x = op.inputs[0]
        rank = len(self.tensor(x).shape)
        axes = sorted(int(a) % max(rank, 1)
                      for a in np.asarray(self.constant(op.inputs[1], "axes")).reshape(-1))
        if (rank, axes) not in ((4, [1, 2]), (3, [1])):
            _fault(f"{what} over axes {axes} of a rank-{rank} tensor (only H and W of NHWC, "
                   "or L of [N, L, C]: global pooling)")
        return self.nhwc(x, rank3=True)

    def op_reduce_max(self, op):
        """REDUCE_MAX over H and W (or L): TFLite's int8 kernel takes the largest code, the
        output keeping the input's scale and zero point; fixnet's max pooling over the whole
        window is the same."""
        x, y = op.inputs[0], op.outputs[0]
        h, w_, c = self.global_window(op, "REDUCE_MAX")
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently (the max of codes needs them equal)")
        if int(np.prod(self.sample_shape(y))) != c:
            _fault(f"output shape {self.tensor(y).shape} is not one value per channel")
        self.steps.append(PoolStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                   [self.define(y)], "max", (h, w_), (1, 1), (0, 0), (h, w_, c),
                                   (1, 1, c)))

    def op_softmax(self, op):
        """TFLite's reference int8 SOFTMAX (gemmlowp fixed-point exp and reciprocal; output
        scale 1/256, zero point -128): fixnet.tflite.steps.TfliteSoftmaxStep."""
        x, y = op.inputs[0], op.outputs[0]
        self.int8_only(x, y)
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        if y_qp != QParams(_f32(1.0 / 256), -128):
            _fault(f"output quantized at scale {y_qp.scale}, zero point {y_qp.zero_point} "
                   "(TFLite's int8 softmax writes 1/256 and -128)")
        channels = self.sample_shape(x)[-1] if self.sample_shape(x) else 1
        if not 1 <= channels <= SOFTMAX_MAX_CLASSES:
            _fault(f"{channels} classes (at most {SOFTMAX_MAX_CLASSES})")
        self.steps.append(TfliteSoftmaxStep.from_scales(
            self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)],
            x_qp.scale, channels, float(op.options.get("beta", 1.0))))

    def int8_only(self, *tensors):
        for i in tensors:
            if self.tensor(i).type != "INT8":
                _fault(f"tensor '{self.tensor(i).name}' is {self.tensor(i).type} (int8 only here)")

    def table(self, op):
        """An elementwise op as its 256-entry table of TFLite's integer results
        (fixnet.tflite.tables.table_for), run by fixnet's lookup step."""
        x, y = op.inputs[0], op.outputs[0]
        self.int8_only(x, y)
        options = {}
        if op.op == "LEAKY_RELU":
            options["alpha"] = float(op.options.get("alpha", 0.2))
        if op.op == "GELU":
            options["approximate"] = bool(op.options.get("approximate", False))
        table = table_for(op.op, self.qparams(x), self.qparams(y), options)
        self.steps.append(LookupStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                     [self.define(y)], np.asarray(table, np.int8)))

    op_logistic = op_tanh = op_elu = op_gelu = op_hard_swish = op_leaky_relu = table
    op_relu = op_relu6 = op_relu_n1_to_1 = op_relu_0_to_1 = table

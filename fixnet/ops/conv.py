"""conv2d and depthwise_conv2d (NHWC; 1D layers are the H = 1 case). Keras Conv1D/Conv2D,
DepthwiseConv1D/2D and the two halves of SeparableConv1D/2D.

int8, per output channel c: acc = bias_eff[c] + sum over the window of x_q * w_q[c]
(int32; padded taps read the input zero point, and bias_eff holds -x_zp * sum w_q[c], so
padding contributes exactly 0), y_q = clamp(y_zp + multiply_by_quantized_multiplier(acc)).
"""
import numpy as np

from .. import layouts, oracle
from .._kernels import _conv, _dense, _wide
from ..errors import UnsupportedLayerError
from ..quant.qparams import INT32_MAX, acc_input_max, activation_bounds
from ..step import OverflowBound, Step
from .base import KeepsWidened, Op, WideAccumulators, register
from .dense import apply_clamp
from .spatial import geometry, windows


def as_nhwc_shape(shape, rank):
    """(H, W, C) of a rank-1 (L, C) or rank-2 (H, W, C) feature map."""
    return (1,) + tuple(shape) if rank == 1 else tuple(shape)


def window_geometry(node, in_shape):
    """(in_hw, out_hw, pads) for a window op node; pads = ((top, bottom), (left, right))."""
    h, w, _ = as_nhwc_shape(in_shape, node.attrs["rank"])
    try:
        oh, ow, ph, pw = geometry((h, w), node.attrs["kernel_size"], node.attrs["strides"],
                                  node.attrs.get("dilation", (1, 1)), node.attrs["padding"])
    except ValueError as e:
        raise UnsupportedLayerError(f"{node.describe()}: {e}") from None
    return (h, w), (oh, ow), (ph, pw)


def _out_shape(node, oh, ow, c):
    return (ow, c) if node.attrs["rank"] == 1 else (oh, ow, c)


class _WindowOp(Op):
    """Shared by conv2d and depthwise_conv2d."""

    def float_windows(self, node, x):
        n = x.shape[0]
        _, (oh, ow), pads = window_geometry(node, x.shape[1:])
        x4 = np.asarray(x, np.float64).reshape((n,) + as_nhwc_shape(x.shape[1:], node.attrs["rank"]))
        return windows(x4, node.attrs["kernel_size"], node.attrs["strides"], node.attrs["dilation"],
                       pads, 0.0), (oh, ow)

    def finish(self, node, y, n, oh, ow):
        if "bias" in node.weights:
            y = y + node.weights["bias"]
        y = apply_clamp(y, node.attrs.get("clamp"))
        return [y.reshape((n,) + _out_shape(node, oh, ow, y.shape[-1]))]

    def quantize_common(self, node, q, rows):
        """Weights, bias, multipliers and clamp for per-output-channel weight rows [C, ...]:
        (int8 rows, keyword arguments of the step, widened channels)."""
        x_qp, y_qp = q.qparams(node.inputs[0]), q.qparams(node.outputs[0])
        cq = q.quantize_channels(node, rows, node.weights.get("bias"))
        lo, hi = activation_bounds(node.attrs.get("clamp"), y_qp)
        _, (oh, ow), pads = window_geometry(node, q.shape(node.inputs[0]))
        return cq.w_q, dict(bias=cq.bias, m0=cq.m0, shift=cq.shift, pad_value=x_qp.zero_point,
                            out_zp=y_qp.zero_point, act_min=lo, act_max=hi, pads=pads,
                            nhwc_in=as_nhwc_shape(q.shape(node.inputs[0]), node.attrs["rank"]),
                            nhwc_out=(oh, ow, cq.w_q.shape[0])), cq.widened


@register
class Conv2D(_WindowOp):
    name = "conv2d"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        kh, kw, cin_g, cout = node.weights["kernel"].shape
        groups = node.attrs.get("groups", 1)
        if len(s) != node.attrs["rank"] + 1 or s[-1] != cin_g * groups:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {s} does not match the "
                                        f"kernel's {cin_g * groups} input channels")
        _, (oh, ow), _ = window_geometry(node, s)
        return [_out_shape(node, oh, ow, cout)]

    def run_float(self, node, inputs):
        x = inputs[0]
        win, (oh, ow) = self.float_windows(node, x)            # [N, OH, OW, KH, KW, Cin]
        k = node.weights["kernel"].astype(np.float64)          # [KH, KW, Cin_g, Cout]
        g = node.attrs.get("groups", 1)
        cin_g, cout = k.shape[2], k.shape[3]
        cout_g = cout // g
        parts = [np.einsum("nhwijc,ijco->nhwo", win[..., i * cin_g:(i + 1) * cin_g],
                           k[..., i * cout_g:(i + 1) * cout_g], optimize=True) for i in range(g)]
        y = parts[0] if g == 1 else np.concatenate(parts, axis=-1)
        return self.finish(node, y, x.shape[0], oh, ow)

    def quantize(self, node, q):
        rows = layouts.rows_from_keras("conv2d", node.weights["kernel"])
        w_q, p, widened = self.quantize_common(node, q, rows)
        step = ConvStep(node.name, node.layer, node.inputs, node.outputs,
                        layouts.step_from_rows("conv2d", w_q), node.attrs["strides"],
                        node.attrs["dilation"],
                        node.attrs.get("groups", 1), **p)
        step.widened = widened
        return step


@register
class DepthwiseConv2D(_WindowOp):
    name = "depthwise_conv2d"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        kh, kw, c, m = node.weights["kernel"].shape
        if len(s) != node.attrs["rank"] + 1 or s[-1] != c:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {s} does not match the "
                                        f"kernel's {c} channels")
        _, (oh, ow), _ = window_geometry(node, s)
        return [_out_shape(node, oh, ow, c * m)]

    def run_float(self, node, inputs):
        x = inputs[0]
        win, (oh, ow) = self.float_windows(node, x)
        k = node.weights["kernel"].astype(np.float64)          # [KH, KW, C, M]
        y = np.einsum("nhwijc,ijcm->nhwcm", win, k, optimize=True)
        y = y.reshape(y.shape[:3] + (-1,))
        return self.finish(node, y, x.shape[0], oh, ow)

    def quantize(self, node, q):
        k = node.weights["kernel"]
        rows = layouts.rows_from_keras("depthwise_conv2d", k)
        w_q, p, widened = self.quantize_common(node, q, rows)
        step = DepthwiseStep(node.name, node.layer, node.inputs, node.outputs,
                             layouts.step_from_rows("depthwise_conv2d", w_q),
                             node.attrs["strides"], node.attrs["dilation"], k.shape[3], **p)
        step.widened = widened
        return step


class _WindowStep(KeepsWidened, Step):
    def __init__(self, name, layer, inputs, outputs, w_q, strides, dilation, bias, m0, shift,
                 pad_value, out_zp, act_min, act_max, pads, nhwc_in, nhwc_out):
        super().__init__(name, layer, inputs, outputs)
        self.w_q, self.bias, self.m0, self.shift = w_q, bias, m0, shift
        self.strides, self.dilation = tuple(strides), tuple(dilation)
        self.pad_value, self.out_zp = int(pad_value), int(out_zp)
        self.act_min, self.act_max = int(act_min), int(act_max)
        self.pads = pads
        self.nhwc_in, self.nhwc_out = tuple(nhwc_in), tuple(nhwc_out)

    def views(self, x, y):
        return x.reshape((-1,) + self.nhwc_in), y.reshape((-1,) + self.nhwc_out)

    def window_params(self, **fields):
        """The params mapping of a convolution kernel and its oracle (_conv.CONV2D_PARAMS /
        DEPTHWISE_PARAMS): the window geometry, ``fields`` (groups or depth_multiplier), the
        padding value and the output's quantization, from the attributes the step stores
        (the .fxn format saves those, not this mapping)."""
        (pad_top, _), (pad_left, _) = self.pads
        return dict(stride_h=self.strides[0], stride_w=self.strides[1],
                    dilation_h=self.dilation[0], dilation_w=self.dilation[1], pad_top=pad_top,
                    pad_left=pad_left, **fields, pad_value=self.pad_value, out_zp=self.out_zp,
                    act_min=self.act_min, act_max=self.act_max)

    def adjust_bias(self, delta):
        """Add ``delta`` (int per output channel, bias codes) to the int32 bias: the bias
        correction of fixnet.quant.bias_correction. A channel whose bias would leave int32
        keeps its bias. Call at quantize time (overflow_bound reads the adjusted bias)."""
        b = self.bias.astype(np.int64) + np.asarray(delta, np.int64)
        self.bias = np.where(np.abs(b) <= INT32_MAX, b, self.bias).astype(np.int32)

    def channel_weights(self):
        """|w_q| summed per output channel (for the overflow bound)."""
        raise NotImplementedError

    def worst_accumulators(self):
        """The exact worst-case |accumulator| per output channel, over every input."""
        return np.abs(self.bias.astype(np.int64)) + acc_input_max(self.bits) * self.channel_weights()

    def overflow_bound(self):
        worst = self.worst_accumulators()
        return OverflowBound(self.layer, self.op, worst << np.maximum(self.shift.astype(np.int64), 0))


class ConvStep(WideAccumulators, _WindowStep):
    op = "conv2d"

    def __init__(self, name, layer, inputs, outputs, w_q, strides, dilation, groups, **p):
        super().__init__(name, layer, inputs, outputs, w_q, strides, dilation, **p)
        self.groups = int(groups)
        self.packed_weights()       # at quantize time, once, shared by every arena

    def kernel_params(self):
        """The params of _conv.conv2d and oracle.conv2d (CONV2D_PARAMS)."""
        return self.window_params(groups=self.groups)

    def overflow_bound(self):
        return self.accumulator_bound(self.worst_accumulators())

    def is_pointwise(self):
        """A 1x1 kernel at stride 1 over one group, without padding: a dense layer applied to
        every pixel (the same integers: conv2d's accumulator is then the dense one, see
        tests/test_kernels_conv.py::test_conv2d_oracle_1x1_is_dense_on_pixels). MobileNet-style
        networks spend most of their multiply-adds here."""
        return (self.w_q.shape[1:3] == (1, 1) and self.strides == (1, 1) and self.groups == 1
                and all(p == 0 for pair in self.pads for p in pair))

    def is_strided_pointwise(self):
        """A 1x1 kernel over one group without padding, at any strides: dense on the pixels
        the strides pick (a ResNet-style shortcut)."""
        return (self.w_q.shape[1:3] == (1, 1) and self.groups == 1 and self.dilation == (1, 1)
                and all(p == 0 for pair in self.pads for p in pair))

    def kernel(self):
        """The kernel bind runs, all of them bit-exact with oracle.conv2d:
        "dense" for a 1x1 conv without padding (every output pixel a row of one GEMM over the
        batch, the strides picking its input pixel: no tile straddles an image, no tap
        table, a single row takes the GEMV kernel);
        "depthwise" for one input channel and one group (a grayscale first layer: the sums
        of a conv over one input channel are those of a depthwise conv with depth multiplier
        Cout, whose row driver fills its vector lanes with pixels times channels where the
        GEMM would pad 9 taps of one channel to 16);
        "conv2d" (the indirect GEMM) for the rest."""
        if self.is_strided_pointwise():
            return "dense"
        if self.groups == 1 and self.w_q.shape[3] == 1:
            return "depthwise"
        return "conv2d"

    def packed_weights(self):
        """w_q and bias in the layout of self.kernel() (its pack_* function), packed once and
        shared by every arena's Call; packed again only if w_q or bias was replaced by another
        array (adjust_bias does that; changing them in place is not noticed) or the step's
        activation type changed (the quantizer sets ``bits`` after building the step)."""
        p = self.__dict__.get("_packed")
        if p is None or p[0] is not self.w_q or p[1] is not self.bias or p[3] != self.bits:
            cout = self.w_q.shape[0]
            kind = self.kernel()
            if kind == "dense":         # [Cout, Cin]
                packed = _dense.pack_dense_weights(
                    np.ascontiguousarray(self.w_q.reshape(cout, -1)), self.bias, bits=self.bits)
            elif kind == "depthwise":   # [KH, KW, Cout]
                packed = _conv.pack_depthwise_weights(
                    np.ascontiguousarray(self.w_q[..., 0].transpose(1, 2, 0)), self.bias,
                    bits=self.bits)
            else:
                packed = _conv.pack_conv_weights(self.w_q, self.bias, self.groups, bits=self.bits)
            p = self._packed = (self.w_q, self.bias, packed, self.bits)
        return p[2]

    def __getstate__(self):
        # the packed weights are derived data of this build: not saved
        state = super().__getstate__()
        state.pop("_packed", None)
        return state

    def bind(self, bufs):
        x4, y4 = self.views(bufs[self.inputs[0]], bufs[self.outputs[0]])
        if self.is_wide():
            return _wide.Conv2dWideCall(x4, self.w_q, self.bias, self.m0, self.shift,
                                        self.kernel_params(), y4)
        packed = self.packed_weights()
        kind = self.kernel()
        if kind == "dense":
            cin, cout = packed.depth, packed.channels
            pixels = None
            if self.strides != (1, 1):
                pixels = self.nhwc_in[:2] + self.nhwc_out[:2] + tuple(self.strides)
            return _dense.DenseCall(x4.reshape(-1, cin), packed.source, self.bias, self.m0,
                                    self.shift, self.out_zp, self.act_min, self.act_max,
                                    y4.reshape(-1, cout), packed=packed, pixels=pixels)
        if kind == "depthwise":    # one input channel: depth multiplier Cout
            return _conv.DepthwiseConv2dCall(
                x4, packed.w, self.bias, self.m0, self.shift,
                self.window_params(depth_multiplier=self.w_q.shape[0]), y4, packed=packed)
        return _conv.Conv2dCall(x4, self.w_q, self.bias, self.m0, self.shift,
                                self.kernel_params(), y4, packed=packed)

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        run = oracle.conv2d_wide if self.is_wide() else oracle.conv2d
        y = run(x4, self.w_q, self.bias, self.m0, self.shift, self.kernel_params(),
                out_h=self.nhwc_out[0], out_w=self.nhwc_out[1])
        return [y]

    def accumulators(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return oracle.conv2d_accumulators(x4, self.w_q, self.bias, self.kernel_params(),
                                          out_h=self.nhwc_out[0], out_w=self.nhwc_out[1])

    def channel_weights(self):
        return np.abs(self.w_q.astype(np.int64)).reshape(self.w_q.shape[0], -1).sum(axis=1)


class DepthwiseStep(_WindowStep):
    op = "depthwise_conv2d"

    def __init__(self, name, layer, inputs, outputs, w_q, strides, dilation, depth_multiplier, **p):
        super().__init__(name, layer, inputs, outputs, w_q, strides, dilation, **p)
        self.depth_multiplier = int(depth_multiplier)

    def kernel_params(self):
        """The params of _conv.depthwise_conv2d and oracle.depthwise_conv2d
        (DEPTHWISE_PARAMS)."""
        return self.window_params(depth_multiplier=self.depth_multiplier)

    def packed_weights(self):
        """w_q and bias in the depthwise kernel's tile layout (_conv.pack_depthwise_weights),
        packed once and shared read-only by every arena's Call; packed again if w_q or bias
        is replaced (adjust_bias makes a new bias array)."""
        p = self.__dict__.get("_packed")
        if p is None or p.w is not self.w_q or p.bias is not self.bias or p.bits != self.bits:
            p = self._packed = _conv.pack_depthwise_weights(self.w_q, self.bias, bits=self.bits)
        return p

    def __getstate__(self):
        # the packing is derived data of this build's kernels: not saved, packed again
        state = super().__getstate__()
        state.pop("_packed", None)
        return state

    def bind(self, bufs):
        x4, y4 = self.views(bufs[self.inputs[0]], bufs[self.outputs[0]])
        return _conv.DepthwiseConv2dCall(x4, self.w_q, self.bias, self.m0, self.shift,
                                         self.kernel_params(), y4, packed=self.packed_weights())

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return [oracle.depthwise_conv2d(x4, self.w_q, self.bias, self.m0, self.shift,
                                        self.kernel_params(), out_h=self.nhwc_out[0],
                                        out_w=self.nhwc_out[1])]

    def accumulators(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return oracle.depthwise_conv2d_accumulators(
            x4, self.w_q, self.bias, self.kernel_params(), out_h=self.nhwc_out[0],
            out_w=self.nhwc_out[1])

    def channel_weights(self):
        return np.abs(self.w_q.astype(np.int64)).reshape(-1, self.w_q.shape[-1]).sum(axis=0)

"""Pooling and padding: max_pool, avg_pool, global_pool, pad (NHWC; 1D is the H = 1 case).

int8 or int16 (the kernels take either; a step's tensors are all of one type): max pooling
and padding move codes (output scale and zero point = input's; padding writes the zero point,
i.e. real 0.0, which is 0 for int16). Average pooling averages the codes of the in-bounds
elements with round-half-away division (same scale in and out), summing in int32. Global average pooling is a
requantized mean: a depthwise convolution whose H x W weights are all 127 at weight scale
1 / (127 * H * W), so its output gets its own calibrated range, as TFLite's MEAN does.
"""
import numpy as np

from .. import layouts, oracle
from .._kernels import _layout, _pool
from ..errors import UnsupportedLayerError
from ..quant.qparams import acc_input_max
from ..step import OverflowBound, Step
from .base import Op, register
from .conv import DepthwiseStep, as_nhwc_shape, window_geometry
from .spatial import windows


def _pool_out_shape(node, oh, ow, c):
    return (ow, c) if node.attrs["rank"] == 1 else (oh, ow, c)


@register
class Pool(Op):
    """attrs: kind ("max" | "avg"), rank, kernel_size, strides, padding."""
    name = "pool"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        if len(s) != node.attrs["rank"] + 1:
            raise UnsupportedLayerError(f"{node.describe()}: expects a rank-{node.attrs['rank'] + 2} "
                                        f"input (with batch), got shape {s}")
        _, (oh, ow), pads = window_geometry(node, s)
        for (before, after), k in zip(pads, node.attrs["kernel_size"]):
            if before >= k or after >= k:
                raise UnsupportedLayerError(f"{node.describe()}: padding {pads} leaves windows "
                                            "without any input element")
        return [_pool_out_shape(node, oh, ow, s[-1])]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        n = x.shape[0]
        x4 = x.reshape((n,) + as_nhwc_shape(x.shape[1:], node.attrs["rank"]))
        _, (oh, ow), pads = window_geometry(node, x.shape[1:])
        k, s = node.attrs["kernel_size"], node.attrs["strides"]
        if node.attrs["kind"] == "max":
            y = windows(x4, k, s, (1, 1), pads, -np.inf).max(axis=(3, 4))
        else:
            total = windows(x4, k, s, (1, 1), pads, 0.0).sum(axis=(3, 4))
            count = windows(np.ones((1,) + x4.shape[1:3] + (1,)), k, s, (1, 1), pads, 0.0).sum(axis=(3, 4))
            y = total / count
        return [y.reshape((n,) + _pool_out_shape(node, oh, ow, x.shape[-1]))]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        in_shape = q.shape(node.inputs[0])
        _, (oh, ow), pads = window_geometry(node, in_shape)
        nhwc_in = as_nhwc_shape(in_shape, node.attrs["rank"])
        return PoolStep(node.name, node.layer, node.inputs, node.outputs, node.attrs["kind"],
                        node.attrs["kernel_size"], node.attrs["strides"], (pads[0][0], pads[1][0]),
                        nhwc_in, (oh, ow, in_shape[-1]))


@register
class GlobalPool(Op):
    """attrs: kind ("max" | "avg"), rank, keepdims."""
    name = "global_pool"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        if len(s) != node.attrs["rank"] + 1:
            raise UnsupportedLayerError(f"{node.describe()}: expects a rank-{node.attrs['rank'] + 2} "
                                        f"input (with batch), got shape {s}")
        return [(1,) * node.attrs["rank"] + (s[-1],) if node.attrs.get("keepdims") else (s[-1],)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        axes = tuple(range(1, x.ndim - 1))
        y = x.max(axis=axes, keepdims=True) if node.attrs["kind"] == "max" else x.mean(axis=axes, keepdims=True)
        return [y.reshape((x.shape[0],) + self.infer_shapes(node, [x.shape[1:]])[0])]

    def output_qparams(self, node, q):
        if node.attrs["kind"] == "max":
            return [q.qparams(node.inputs[0])]
        return [q.preferred_qparams(node.outputs[0])]

    def quantize(self, node, q):
        in_shape = q.shape(node.inputs[0])
        nhwc_in = as_nhwc_shape(in_shape, node.attrs["rank"])
        h, w, c = nhwc_in
        if node.attrs["kind"] == "max":
            return PoolStep(node.name, node.layer, node.inputs, node.outputs, "max", (h, w), (1, 1),
                            (0, 0), nhwc_in, (1, 1, c))
        x_qp, y_qp = q.qparams(node.inputs[0]), q.qparams(node.outputs[0])
        from ..quant.qparams import requant_multipliers
        # weights of 127 (the multiplier then divides by 127 * H * W); int16 inputs (|x| up to
        # 2^15) over more than 516 pixels take the largest weight that keeps the int32 sum
        # proven, down to 1 (65535 pixels): the multiplier's 31 bits carry the division
        weight = 127
        if x_qp.bits == 16:
            weight = int(min(127, max(1, (2 ** 31 - 1) // (32768 * h * w))))
        w_scale = 1.0 / (weight * h * w)
        w_q = layouts.step_from_rows("depthwise_conv2d", np.full((c, h, w), weight, np.int8))
        bias = (-x_qp.zero_point * weight * h * w) * np.ones(c, np.int64)
        m0, shift = requant_multipliers(np.full(c, x_qp.scale * w_scale / y_qp.scale), node.describe(),
                                        y_qp.bits)
        return GlobalAveragePoolStep(node.name, node.layer, node.inputs, node.outputs, w_q, (1, 1),
                                     (1, 1), 1, bias=bias.astype(np.int32), m0=m0, shift=shift,
                                     pad_value=x_qp.zero_point, out_zp=y_qp.zero_point,
                                     act_min=y_qp.qmin, act_max=y_qp.qmax, pads=((0, 0), (0, 0)),
                                     nhwc_in=nhwc_in, nhwc_out=(1, 1, c))


class GlobalAveragePoolStep(DepthwiseStep):
    """A global average pooling: the mean over the whole window, run on the depthwise kernel as
    a depthwise convolution whose weights are all 127 and whose multiplier divides by
    127 * H * W (int16 over more than 516 pixels: a smaller weight, see GlobalPool.quantize). Its own op: reports label it, and it counts no multiply-adds (fixnet.cost
    counts pooling as none, as benchmarks do). A .fxn file written before it existed holds
    such a step as a DepthwiseStep (labelled depthwise_conv2d); it runs the same."""
    op = "global_average_pool"


@register
class Pad(Op):
    """attrs: pads = ((top, bottom), (left, right)), rank. Pads with real 0.0."""
    name = "pad"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        h, w, c = as_nhwc_shape(s, node.attrs["rank"])
        (t, b), (l, r) = node.attrs["pads"]
        return [(w + l + r, c) if node.attrs["rank"] == 1 else (h + t + b, w + l + r, c)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        (t, b), (l, r) = node.attrs["pads"]
        widths = [(0, 0), (l, r), (0, 0)] if node.attrs["rank"] == 1 else [(0, 0), (t, b), (l, r), (0, 0)]
        return [np.pad(x, widths)]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        s = q.shape(node.inputs[0])
        out = self.infer_shapes(node, [s])[0]
        return PadStep(node.name, node.layer, node.inputs, node.outputs, node.attrs["pads"],
                       q.qparams(node.inputs[0]).zero_point,
                       as_nhwc_shape(s, node.attrs["rank"]), as_nhwc_shape(out, node.attrs["rank"]))


class PoolStep(Step):
    def __init__(self, name, layer, inputs, outputs, kind, pool, strides, pad_tl, nhwc_in, nhwc_out):
        super().__init__(name, layer, inputs, outputs)
        self.op = f"{kind}_pool"
        self.kind = kind
        self.pool, self.strides, self.pad_tl = tuple(pool), tuple(strides), tuple(pad_tl)
        self.nhwc_in, self.nhwc_out = tuple(nhwc_in), tuple(nhwc_out)

    def kernel_params(self):
        """The params of the pooling kernel and its oracle (_pool.POOL_PARAMS), from the
        attributes the step stores."""
        return dict(pool_h=self.pool[0], pool_w=self.pool[1], stride_h=self.strides[0],
                    stride_w=self.strides[1], pad_top=self.pad_tl[0], pad_left=self.pad_tl[1])

    def bind(self, bufs):
        x4 = bufs[self.inputs[0]].reshape((-1,) + self.nhwc_in)
        y4 = bufs[self.outputs[0]].reshape((-1,) + self.nhwc_out)
        call = _pool.MaxPool2dCall if self.kind == "max" else _pool.AvgPool2dCall
        return call(x4, self.kernel_params(), y4)

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        f = oracle.max_pool2d if self.kind == "max" else oracle.avg_pool2d
        return [f(x4, self.kernel_params(), out_h=self.nhwc_out[0], out_w=self.nhwc_out[1])]

    def overflow_bound(self):
        if self.kind != "avg":
            return None
        # the window sum of |x| <= 128 (int8) or 32768 (int16) codes, and the rounding term
        # (half the count) the kernel adds to it in int32
        n = self.pool[0] * self.pool[1]
        worst = acc_input_max(self.bits) * n + n // 2
        return OverflowBound(self.layer, self.op, np.array([worst], np.int64), what="window sum")


class PadStep(Step):
    op = "pad"

    def __init__(self, name, layer, inputs, outputs, pads, value, nhwc_in, nhwc_out):
        super().__init__(name, layer, inputs, outputs)
        self.pads, self.value = pads, int(value)
        self.nhwc_in, self.nhwc_out = tuple(nhwc_in), tuple(nhwc_out)

    def kernel_params(self):
        """The params of _layout.pad_nhwc and oracle.pad_nhwc (PAD_PARAMS)."""
        (top, bottom), (left, right) = self.pads
        return dict(top=top, bottom=bottom, left=left, right=right, value=self.value)

    def bind(self, bufs):
        x4 = bufs[self.inputs[0]].reshape((-1,) + self.nhwc_in)
        y4 = bufs[self.outputs[0]].reshape((-1,) + self.nhwc_out)
        return _layout.PadNhwcCall(x4, self.kernel_params(), y4)

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return [oracle.pad_nhwc(x4, self.kernel_params())]

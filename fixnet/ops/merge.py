"""Ops with several inputs: binary (add, subtract, multiply, average, maximum, minimum) and
concat.

add/subtract/average (TFLite's scheme): each input is shifted left by 20 bits (int8; 15 for
int16 tensors: |x| * 2^15 <= 2^30) and scaled to a common scale 2 * max(s_x, s_y) with a
fixed-point multiplier (< 1), the two are added in int32, and the sum is requantized to the
output scale. multiply: (x - x_zp) * (y - y_zp) requantized by s_x * s_y / s_out.
maximum/minimum: both rescaled to the output scale, then compared. concat: each input
requantized (or copied, when its scale and zero point are the output's) into its slice of the
output.

A node's tensors are all int8 or all int16 (the quantizer makes them so); the kernels run
either, and the overflow bounds take |x - x_zp| up to 255 (int8) or 32768 (int16).
"""
import numpy as np

from .. import oracle
from .._kernels import _merge, _layout
from ..errors import UnsupportedLayerError
from ..quant.qparams import activation_bounds, requant_multipliers
from ..step import OverflowBound, Step
from .base import Op, register
from .dense import apply_clamp

# add's left shift by activation bits: TFLite's 20 for int8 and 15 for int16 (the int32
# intermediate then holds 2^12 (int8) or 2^0 (int16) times the largest |x - x_zp| << shift
# with room for the sum)
ADD_LEFT_SHIFT = {8: 20, 16: 15}
FLOAT_BINARY = {
    "add": lambda x, y: x + y,
    "subtract": lambda x, y: x - y,
    "multiply": lambda x, y: x * y,
    "average": lambda x, y: (x + y) / 2.0,
    "maximum": np.maximum,
    "minimum": np.minimum,
}


@register
class Binary(Op):
    """attrs: kind (a key of FLOAT_BINARY), clamp."""
    name = "binary"

    def infer_shapes(self, node, in_shapes):
        a, b = in_shapes
        if tuple(a) != tuple(b):
            raise UnsupportedLayerError(f"{node.describe()}: inputs of shapes {a} and {b}; fixnet "
                                        "merges tensors of equal shape only (no broadcasting)")
        return [tuple(a)]

    def run_float(self, node, inputs):
        x, y = (np.asarray(v, np.float64) for v in inputs)
        return [apply_clamp(FLOAT_BINARY[node.attrs["kind"]](x, y), node.attrs.get("clamp"))]

    def output_qparams(self, node, q):
        """maximum/minimum only select values: when both inputs share one scale and zero point,
        the output keeps them (each output code is one of the input codes, no rounding, no
        range to calibrate); so the AND/OR of two 0/1 sequence masks stays an exact mask."""
        xq, yq = (q.qparams(t) for t in node.inputs)
        if node.attrs["kind"] in ("maximum", "minimum") and xq == yq:
            return [xq]
        return super().output_qparams(node, q)

    def quantize(self, node, q):
        kind = node.attrs["kind"]
        xq, yq, oq = (q.qparams(t) for t in (node.inputs[0], node.inputs[1], node.outputs[0]))
        lo, hi = activation_bounds(node.attrs.get("clamp"), oq)
        where = node.describe()
        if kind in ("add", "subtract", "average"):
            left_shift = ADD_LEFT_SHIFT[xq.bits]
            twice_max = 2.0 * max(xq.scale, yq.scale)
            (mx,), (sx,) = requant_multipliers(xq.scale / twice_max, where)
            (my,), (sy,) = requant_multipliers(yq.scale / twice_max, where)
            out_real = twice_max / ((1 << left_shift) * oq.scale)
            if kind == "average":
                out_real /= 2.0
            (mo,), (so,) = requant_multipliers(out_real, where, oq.bits)
            params = dict(x_zp=xq.zero_point, x_m0=mx, x_shift=sx, y_zp=yq.zero_point, y_m0=my,
                          y_shift=sy, left_shift=left_shift, out_m0=mo, out_shift=so,
                          out_zp=oq.zero_point, act_min=lo, act_max=hi,
                          subtract=int(kind == "subtract"))
        elif kind == "multiply":
            (m,), (s,) = requant_multipliers(xq.scale * yq.scale / oq.scale, where, oq.bits)
            params = dict(x_zp=xq.zero_point, y_zp=yq.zero_point, m0=m, shift=s,
                          out_zp=oq.zero_point, act_min=lo, act_max=hi)
        else:
            (mx,), (sx,) = requant_multipliers(xq.scale / oq.scale, where, oq.bits)
            (my,), (sy,) = requant_multipliers(yq.scale / oq.scale, where, oq.bits)
            params = dict(x_zp=xq.zero_point, x_m0=mx, x_shift=sx, y_zp=yq.zero_point, y_m0=my,
                          y_shift=sy, out_zp=oq.zero_point, act_min=lo, act_max=hi,
                          take_min=int(kind == "minimum"))
        return BinaryStep(node.name, node.layer, node.inputs, node.outputs, kind,
                          {k: int(v) for k, v in params.items()})


class BinaryStep(Step):
    KERNELS = {"add": "add", "subtract": "add", "average": "add", "multiply": "mul",
               "maximum": "maximum", "minimum": "maximum"}

    def __init__(self, name, layer, inputs, outputs, kind, params):
        super().__init__(name, layer, inputs, outputs)
        self.op = kind
        self.kernel = self.KERNELS[kind]
        self.params = params          # the kernel's params mapping (ADD_PARAMS, ...)

    def kernel_params(self):
        """The params of the kernel and its oracle (_merge.ADD_PARAMS, MUL_PARAMS or
        MAXIMUM_PARAMS, as self.kernel says): the stored mapping, passed by name."""
        return dict(self.params)

    def bind(self, bufs):
        call = getattr(_merge, self.kernel.capitalize() + "Call")
        return call(bufs[self.inputs[0]].reshape(-1), bufs[self.inputs[1]].reshape(-1),
                    self.kernel_params(), bufs[self.outputs[0]].reshape(-1))

    def oracle(self, ins):
        x, y = ins
        return [getattr(oracle, self.kernel)(x.reshape(-1), y.reshape(-1),
                                             self.kernel_params()).reshape(x.shape)]

    def overflow_bound(self):
        p = self.params
        diff = diff_max(self.bits)
        if self.kernel == "add":
            worst = diff << p["left_shift"]
        elif self.kernel == "mul":
            worst = diff * diff << max(p["shift"], 0)
        else:
            worst = diff << max(p["x_shift"], p["y_shift"], 0)
        return OverflowBound(self.layer, self.op, np.array([worst], np.int64))


def diff_max(bits):
    """The largest |x - x_zp| of an activation type: 255 for int8 (any zero point), 32768
    for int16 (zero point 0)."""
    return 255 if bits == 8 else 32768


def _concat_axis(node, shapes):
    axis = node.attrs["axis"]
    rank = len(shapes[0]) + 1
    a = axis if axis >= 0 else rank + axis
    if not 1 <= a < rank:
        raise UnsupportedLayerError(f"{node.describe()}: cannot concatenate along axis {axis} "
                                    "(the batch axis or beyond the rank)")
    return a


@register
class Concat(Op):
    """attrs: axis (Keras numbering, counting the batch axis)."""
    name = "concat"

    def infer_shapes(self, node, in_shapes):
        a = _concat_axis(node, in_shapes)
        first = list(in_shapes[0])
        for s in in_shapes[1:]:
            if len(s) != len(first) or any(d != e for i, (d, e) in enumerate(zip(s, first)) if i != a - 1):
                raise UnsupportedLayerError(f"{node.describe()}: shapes {in_shapes} do not agree "
                                            f"outside axis {node.attrs['axis']}")
        first[a - 1] = sum(s[a - 1] for s in in_shapes)
        return [tuple(first)]

    def run_float(self, node, inputs):
        a = _concat_axis(node, [v.shape[1:] for v in inputs])
        return [np.concatenate([np.asarray(v, np.float64) for v in inputs], axis=a)]

    def quantize(self, node, q):
        shapes = [q.shape(t) for t in node.inputs]
        a = _concat_axis(node, shapes)
        oq = q.qparams(node.outputs[0])
        parts = []
        offset = 0
        for t, s in zip(node.inputs, shapes):
            iq = q.qparams(t)
            inner = int(np.prod(s[a - 1:]))
            if iq == oq:
                m0, shift = 0, 0                    # same quantization: the kernel copies bytes
            else:
                (m0,), (shift,) = requant_multipliers(iq.scale / oq.scale, node.describe(),
                                                      oq.bits)
                if m0 == 0:
                    # a factor below 2^-32 (requant_multipliers' 0) maps every code of this input
                    # to the output zero point; m0 = 0 means "copy bytes" to the kernel, so use
                    # the smallest factor it takes, 2^-32, which rounds |x - zp| <= 255 (int8),
                    # 32768 (int16) to 0 too
                    m0, shift = 1 << 30, -31
            parts.append((int(iq.zero_point), int(m0), int(shift), inner, offset))
            offset += inner
        return ConcatStep(node.name, node.layer, node.inputs, node.outputs, parts, offset,
                          int(oq.zero_point), q.shape(node.outputs[0]))


class ConcatStep(Step):
    op = "concat"

    def __init__(self, name, layer, inputs, outputs, parts, total, out_zp, out_shape):
        super().__init__(name, layer, inputs, outputs)
        self.parts = parts            # (in_zp, m0, shift, inner length, offset) per input
        self.total, self.out_zp = total, out_zp
        self.out_shape = tuple(out_shape)

    def bind(self, bufs):
        out = bufs[self.outputs[0]].reshape(-1, self.total)
        calls = [_layout.RequantizeIntoCall(bufs[t].reshape(-1, inner), zp, m0, shift, self.out_zp,
                                            out, offset)
                 for t, (zp, m0, shift, inner, offset) in zip(self.inputs, self.parts)]

        def run():
            for c in calls:
                c()
        return run

    def oracle(self, ins):
        outer = ins[0].size // self.parts[0][3]
        out = np.empty((outer, self.total), ins[0].dtype)
        for x, (zp, m0, shift, inner, offset) in zip(ins, self.parts):
            out[:, offset:offset + inner] = oracle.requantize_into(
                x.reshape(outer, inner), zp, m0, shift, self.out_zp)
        return [out.reshape((-1,) + self.out_shape)]

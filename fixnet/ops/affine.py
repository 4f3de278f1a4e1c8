"""affine: y = clamp(x * scale[c] + offset[c]) over the last axis. What a BatchNormalization
becomes when there is no Dense before it to fold into, and what Rescaling and Normalization
layers become.

int8 or int16 activations: the per-channel scale is a one-tap symmetric int8 weight w_q[c] in
{-127, 0, 127}; acc = bias_eff[c] + x_q * w_q[c] in int32 (|x_q| <= 128, or 32768 for int16);
y_q = clamp(y_zp + multiply_by_quantized_multiplier(acc, ...))

Folded into the input quantization: an affine that reads a model input, with one scale a > 0
and one offset b for all channels and no clamp (Rescaling(1/255), Rescaling(1/255, offset=1),
...), is no step at all when b is a whole number of steps of y: y takes the scale a * s_x and
the zero point zp_x - b / (a * s_x), so the input's int8 codes are y's codes unchanged (a
uint8 camera frame goes straight into the first conv). An int16 input (zero point 0) folds only
an affine without offset (b = 0): y keeps zero point 0. Other input affines (per-channel
Normalization, offsets between grid steps) run as the step above.
"""
import numpy as np

from .. import layouts, oracle
from .._kernels import _affine
from ..quant.qparams import INT8_MAX, INT8_MIN, QParams, acc_input_max, activation_bounds
from ..step import OverflowBound, Step
from .base import KeepsWidened, Op, register
from .dense import apply_clamp
from .reshape import AliasStep

FOLD_TOLERANCE = 1e-4       # how far b / (a * s_x) may be from a whole number (float32 scales)


def input_fold_qparams(node, q):
    """y's QParams under which this affine leaves its input's int8 codes unchanged, or None
    (see the module docstring)."""
    if node.inputs[0] not in q.graph.inputs or node.attrs.get("clamp") is not None:
        return None
    a, b = np.asarray(node.weights["scale"], np.float64), np.asarray(node.weights["offset"], np.float64)
    if a.size == 0 or not (np.all(a == a[0]) and np.all(b == b[0]) and a[0] > 0):
        return None
    x_qp = q.qparams(node.inputs[0])
    steps = b[0] / (a[0] * x_qp.scale)
    k = round(steps)
    if abs(steps - k) > FOLD_TOLERANCE:
        return None
    if x_qp.bits == 16:     # symmetric: only a zero offset keeps the zero point 0
        return QParams(float(np.float32(a[0] * x_qp.scale)), 0, 16) if k == 0 else None
    if not INT8_MIN <= x_qp.zero_point - k <= INT8_MAX:
        return None
    return QParams(float(np.float32(a[0] * x_qp.scale)), int(x_qp.zero_point - k))


@register
class Affine(Op):
    name = "affine"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        c = node.weights["scale"].shape[0]
        if not s or s[-1] != c:
            from ..errors import UnsupportedLayerError
            raise UnsupportedLayerError(f"{node.describe()}: acts on {c} channels of the last "
                                        f"axis, but its input has shape {s}")
        return [tuple(s)]

    def run_float(self, node, inputs):
        (x,) = inputs
        y = np.asarray(x, np.float64) * node.weights["scale"] + node.weights["offset"]
        return [apply_clamp(y, node.attrs.get("clamp"))]

    def output_qparams(self, node, q):
        fold = input_fold_qparams(node, q)
        return [fold] if fold is not None else super().output_qparams(node, q)

    def quantize(self, node, q):
        if input_fold_qparams(node, q) is not None:
            return AliasStep(node.name, node.layer, node.inputs, node.outputs, "affine (folded)")
        y_qp = q.qparams(node.outputs[0])
        # the per-channel scale is a one-tap weight row per channel, the offset its bias
        cq = q.quantize_channels(node, layouts.rows_from_keras("affine", node.weights["scale"]),
                                 node.weights["offset"], per_channel=True, adaptive=False)
        lo, hi = activation_bounds(node.attrs.get("clamp"), y_qp)
        step = AffineStep(node.name, node.layer, node.inputs, node.outputs,
                          layouts.step_from_rows("affine", cq.w_q), cq.bias, cq.m0, cq.shift,
                          y_qp.zero_point, lo, hi)
        step.widened = cq.widened
        return step


class AffineStep(KeepsWidened, Step):
    op = "affine"

    def __init__(self, name, layer, inputs, outputs, w_q, bias, m0, shift, out_zp, act_min, act_max):
        super().__init__(name, layer, inputs, outputs)
        self.w_q, self.bias, self.m0, self.shift = w_q, bias, m0, shift     # all [C]
        self.out_zp, self.act_min, self.act_max = int(out_zp), int(act_min), int(act_max)

    def bind(self, bufs):
        c = self.w_q.shape[0]
        return _affine.ChannelAffineCall(
            bufs[self.inputs[0]].reshape(-1, c), self.w_q, self.bias, self.m0, self.shift,
            self.out_zp, self.act_min, self.act_max, bufs[self.outputs[0]].reshape(-1, c))

    def oracle(self, ins):
        x = ins[0]
        c = self.w_q.shape[0]
        y = oracle.channel_affine(x.reshape(-1, c), self.w_q, self.bias, self.m0, self.shift,
                                  self.out_zp, self.act_min, self.act_max)
        return [y.reshape(x.shape)]

    def accumulators(self, ins):
        c = self.w_q.shape[0]
        x = ins[0].reshape(-1, c).astype(np.int64)
        return self.bias.astype(np.int64) + x * self.w_q.astype(np.int64)

    def overflow_bound(self):
        worst = (np.abs(self.bias.astype(np.int64))
                 + acc_input_max(self.bits) * np.abs(self.w_q.astype(np.int64)))
        worst = worst << np.maximum(self.shift.astype(np.int64), 0)
        return OverflowBound(self.layer, self.op, worst)

"""prelu: y = x where x >= 0, alpha * x elsewhere; alpha learned per element (broadcast over
Keras PReLU's shared axes). Keras PReLU.

int8 or int16 activations (int16: zero points 0): v = x_q - x_zp; y_q = clamp(y_zp + MBQM(v,
s_x / s_y)) for v >= 0 and clamp(y_zp + MBQM(v * alpha_q, s_x * s_alpha / s_y)) for v < 0,
with alpha symmetric int8 (|v * alpha_q| <= 255 * 127, or 32768 * 127 for int16).
"""
import numpy as np

from .. import oracle
from .._kernels import _prelu
from ..quant.qparams import activation_bounds, quantize_weights, requant_multipliers
from ..step import OverflowBound, Step
from .base import Op, register


@register
class PReLU(Op):
    name = "prelu"

    def infer_shapes(self, node, in_shapes):
        return [tuple(in_shapes[0])]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        return [np.where(x >= 0, x, node.weights["alpha"] * x)]

    def quantize(self, node, q):
        x_qp, y_qp = q.qparams(node.inputs[0]), q.qparams(node.outputs[0])
        shape = q.shape(node.inputs[0])
        alpha = np.broadcast_to(node.weights["alpha"], shape).reshape(1, -1)
        a_q, (a_scale,) = quantize_weights(alpha, per_channel=True)     # one scale for all
        (pm,), (ps,) = requant_multipliers(x_qp.scale / y_qp.scale, node.describe(), y_qp.bits)
        (nm,), (ns,) = requant_multipliers(x_qp.scale * a_scale / y_qp.scale, node.describe(),
                                           y_qp.bits)
        lo, hi = activation_bounds(None, y_qp)
        return PReLUStep(node.name, node.layer, node.inputs, node.outputs, a_q[0], x_qp.zero_point,
                         int(pm), int(ps), int(nm), int(ns), y_qp.zero_point, lo, hi)


class PReLUStep(Step):
    op = "prelu"
    # the names of the values in self.params, in order: the kernel's PRELU_PARAMS
    PARAM_NAMES = ("in_zp", "pos_m0", "pos_shift", "neg_m0", "neg_shift", "out_zp", "act_min",
                   "act_max")

    def __init__(self, name, layer, inputs, outputs, alpha_q, in_zp, pos_m0, pos_shift, neg_m0,
                 neg_shift, out_zp, act_min, act_max):
        super().__init__(name, layer, inputs, outputs)
        self.alpha_q = np.ascontiguousarray(alpha_q, np.int8)
        self.params = (int(in_zp), pos_m0, pos_shift, neg_m0, neg_shift, int(out_zp),
                       int(act_min), int(act_max))

    def kernel_params(self):
        """The params of _prelu.prelu and oracle.prelu (PRELU_PARAMS), named from the tuple
        the step stores (.fxn files hold that tuple)."""
        return dict(zip(self.PARAM_NAMES, self.params))

    def bind(self, bufs):
        inner = self.alpha_q.shape[0]
        return _prelu.PreluCall(bufs[self.inputs[0]].reshape(-1, inner), self.alpha_q,
                                self.kernel_params(), bufs[self.outputs[0]].reshape(-1, inner))

    def oracle(self, ins):
        x = ins[0]
        return [oracle.prelu(x.reshape(-1, self.alpha_q.shape[0]), self.alpha_q,
                             self.kernel_params()).reshape(x.shape)]

    def accumulators(self, ins):
        return oracle.prelu_accumulators(ins[0].reshape(-1, self.alpha_q.shape[0]), self.alpha_q,
                                         self.kernel_params())

    def overflow_bound(self):
        p = self.kernel_params()
        if self.bits == 8:
            worst = 255 * 127 << max(p["neg_shift"], 0)
        else:   # |v| <= 32768: the negative side's product, or v itself on the positive side
            worst = max(32768 * 127 << max(p["neg_shift"], 0), 32768 << max(p["pos_shift"], 0))
        return OverflowBound(self.layer, self.op, np.array([worst], np.int64))

"""softmax over the last axis.

int8: logits in (any scale s), probabilities out with scale 1/L and zero point -128, where L
(``softmax_levels`` of quantize) is 255 by default, so that 0 and 1 are both exact codes; 256
is TFLite's fixed output scale, whose top code is 255/256 (a confident prediction's 1.0 is
then off by a whole step, the largest error a confident classifier's int8 output has).
e_i = table[max(x) - x_i] with table[d] = round(2^K * exp(-s * d)) built at quantize time;
y_i = clamp(round(L * e_i / sum(e)) - 128). K is chosen so that the row sum (at most
C * 2^K) and L * e_i both stay below 2^31: the overflow proof is by construction.
"""
import math

import numpy as np

from .. import oracle
from .._kernels import _softmax
from ..errors import UnsupportedLayerError
from ..quant.qparams import QParams
from ..step import OverflowBound, Step
from .base import Op, register

EXP_BITS_MAX = 22       # 256 * 2^22 = 2^30


def exp_table(input_scale, channels):
    """int32 [256]: entry d is 2^K * exp(-input_scale * d), with K as large as the sums allow."""
    k = min(EXP_BITS_MAX, 30 - max(0, math.ceil(math.log2(max(channels, 1)))))
    if k < 8:
        raise UnsupportedLayerError(f"softmax over {channels} classes is too wide for int32 sums")
    d = np.arange(256, dtype=np.float64)
    return np.round(np.exp(-input_scale * d) * 2.0 ** k).astype(np.int32)


@register
class Softmax(Op):
    name = "softmax"

    def infer_shapes(self, node, in_shapes):
        return [tuple(in_shapes[0])]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return [e / e.sum(axis=-1, keepdims=True)]

    def output_qparams(self, node, q):
        return [softmax_qparams(q.softmax_levels)]

    def quantize(self, node, q):
        x_qp = q.qparams(node.inputs[0])
        channels = q.shape(node.inputs[0])[-1]
        return SoftmaxStep(node.name, node.layer, node.inputs, node.outputs,
                           exp_table(x_qp.scale, channels), channels, q.softmax_levels)


def softmax_qparams(levels):
    """Probabilities in [0, 1] as int8: scale 1/levels, code -128 is 0.0."""
    return QParams(float(np.float32(1.0 / levels)), -128)


class SoftmaxStep(Step):
    op = "softmax"
    levels = 256            # what .fxn files written before the levels option hold

    def __init__(self, name, layer, inputs, outputs, table, channels, levels=255):
        super().__init__(name, layer, inputs, outputs)
        self.table = np.ascontiguousarray(table, np.int32)
        self.channels = int(channels)
        self.levels = int(levels)

    def bind(self, bufs):
        c = self.channels
        return _softmax.SoftmaxCall(bufs[self.inputs[0]].reshape(-1, c), self.table,
                                    bufs[self.outputs[0]].reshape(-1, c), self.levels)

    def oracle(self, ins):
        x = ins[0]
        return [oracle.softmax(x.reshape(-1, self.channels), self.table,
                               self.levels).reshape(x.shape)]

    def overflow_bound(self):
        # row sum of table entries, and levels * the largest entry
        worst = np.array([self.channels * int(self.table[0]), self.levels * int(self.table[0])],
                         np.int64)
        return OverflowBound(self.layer, self.op, worst, what="exp sum")

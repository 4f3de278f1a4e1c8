"""softmax over the last axis.

int8: logits in (any scale s), probabilities out with scale 1/256 and zero point -128.
e_i = table[max(x) - x_i] with table[d] = round(2^K * exp(-s * d)) built at quantize time;
y_i = clamp(round(256 * e_i / sum(e)) - 128). K is chosen so that the row sum (at most
C * 2^K) and 256 * e_i both stay below 2^31: the overflow proof is by construction.
"""
import math

import numpy as np

from .. import oracle
from .._kernels import _softmax
from ..errors import UnsupportedLayerError
from ..quant.qparams import SOFTMAX_QPARAMS
from ..runtime import OverflowBound, Step
from . import Op, register

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
        return [SOFTMAX_QPARAMS]

    def quantize(self, node, q):
        x_qp = q.qparams(node.inputs[0])
        channels = q.shape(node.inputs[0])[-1]
        return SoftmaxStep(node.name, node.layer, node.inputs, node.outputs,
                           exp_table(x_qp.scale, channels), channels)


class SoftmaxStep(Step):
    op = "softmax"

    def __init__(self, name, layer, inputs, outputs, table, channels):
        super().__init__(name, layer, inputs, outputs)
        self.table = np.ascontiguousarray(table, np.int32)
        self.channels = int(channels)

    def bind(self, bufs):
        c = self.channels
        return _softmax.SoftmaxCall(bufs[self.inputs[0]].reshape(-1, c), self.table,
                                    bufs[self.outputs[0]].reshape(-1, c))

    def oracle(self, ins):
        x = ins[0]
        return [oracle.softmax(x.reshape(-1, self.channels), self.table).reshape(x.shape)]

    def overflow_bound(self):
        # row sum of table entries, and 256 * the largest entry
        worst = np.array([self.channels * int(self.table[0]), 256 * int(self.table[0])], np.int64)
        return OverflowBound(self.layer, self.op, worst, what="exp sum")

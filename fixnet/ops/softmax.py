"""softmax over the last axis.

int8: logits in (any scale s), probabilities out with scale 1/L and zero point -128, where L
(``softmax_levels`` of quantize) is 255 by default, so that 0 and 1 are both exact codes; 256
is TFLite's fixed output scale, whose top code is 255/256 (a confident prediction's 1.0 is
then off by a whole step, the largest error a confident classifier's int8 output has).
e_i = table[max(x) - x_i] with table[d] = round(2^K * exp(-s * d)) built at quantize time;
y_i = clamp(round(L * e_i / sum(e)) - 128). K is chosen so that the row sum (at most
C * 2^K) and L * e_i both stay below 2^31: the overflow proof is by construction.

int16: logits in (any scale s), probabilities out with scale 1/32767 and zero point 0 (0 and 1
exact); the table has one entry per difference max(x) - x up to where its entries round to 0
(at most 65536), a longer difference taking 0; y_i = round(32767 * e_i / sum(e)). Only the
row sum is an int32 (C * 2^K < 2^31 by construction); the numerator 32767 * e_i + sum // 2 is
formed exactly in the kernel's double arithmetic (below 2^46), so K is as large as the sum
allows: with K up to 30 - ceil(log2 C), the table's rounding moves a probability by at most
about C / 2^(K+1), far below the output step 1/32767 for the usual class counts.
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
EXP_BITS_MIN = 8        # fewer bits than this: too coarse a table to be worth running
SOFTMAX16_LEVELS = 32767
SOFTMAX16_TABLE_MAX = 65536


def _exp_bits(channels, most):
    """The largest K <= most with channels * 2^K <= 2^30 (so the int32 row sum has room)."""
    k = min(most, 30 - max(0, math.ceil(math.log2(max(channels, 1)))))
    if k < EXP_BITS_MIN:
        raise UnsupportedLayerError(f"softmax over {channels} classes is too wide for int32 sums")
    return k


def exp_table(input_scale, channels):
    """int32 [256]: entry d is 2^K * exp(-input_scale * d), with K as large as the sums allow."""
    k = _exp_bits(channels, EXP_BITS_MAX)
    d = np.arange(256, dtype=np.float64)
    return np.round(np.exp(-input_scale * d) * 2.0 ** k).astype(np.int32)


def exp_table16(input_scale, channels):
    """int32 [L] for int16 logits: entry d is round(2^K * exp(-input_scale * d)), K as large
    as the int32 row sum allows (C * 2^K <= 2^30), L the first d whose entry rounds to 0
    (at most 65536: every difference of two int16 codes)."""
    k = _exp_bits(channels, 30)
    # entries below 1/2 round to 0: d > (K + 1) ln 2 / s
    reach = (k + 1) * math.log(2.0) / float(input_scale)
    length = SOFTMAX16_TABLE_MAX if reach >= SOFTMAX16_TABLE_MAX - 1 else int(reach) + 2
    d = np.arange(length, dtype=np.float64)
    table = np.round(np.exp(-input_scale * d) * 2.0 ** k)
    nonzero = int(np.count_nonzero(table))       # exp decreases: the zeros are at the end
    return table[:max(nonzero, 1)].astype(np.int32)


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
        if q.qparams(node.inputs[0]).bits == 16:
            return [softmax16_qparams()]
        return [softmax_qparams(q.softmax_levels)]

    def quantize(self, node, q):
        x_qp = q.qparams(node.inputs[0])
        channels = q.shape(node.inputs[0])[-1]
        if x_qp.bits == 16:
            return SoftmaxStep(node.name, node.layer, node.inputs, node.outputs,
                               exp_table16(x_qp.scale, channels), channels, SOFTMAX16_LEVELS)
        return SoftmaxStep(node.name, node.layer, node.inputs, node.outputs,
                           exp_table(x_qp.scale, channels), channels, q.softmax_levels)


def softmax_qparams(levels):
    """Probabilities in [0, 1] as int8: scale 1/levels, code -128 is 0.0."""
    return QParams(float(np.float32(1.0 / levels)), -128)


def softmax16_qparams():
    """Probabilities in [0, 1] as int16: scale 1/32767, code 0 is 0.0 and 32767 is 1.0."""
    return QParams(float(np.float32(1.0 / SOFTMAX16_LEVELS)), 0, 16)


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
        # int8: the row sum of table entries, and levels * the largest entry (the int32
        # numerator); int16: the row sum only (the numerator is formed in double, exactly)
        worst = [self.channels * int(self.table[0])]
        if self.bits == 8:
            worst.append(self.levels * int(self.table[0]))
        return OverflowBound(self.layer, self.op, np.array(worst, np.int64), what="exp sum")

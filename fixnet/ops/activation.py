"""activation: an elementwise function (relu, sigmoid, tanh, ...; see fixnet.activations).

int8: a plain clamp (relu, relu6) is a rescale from the input's to the output's scale with the
clamp as bounds (``requantize`` kernel); any other function is a 256-entry int8 lookup table
built at quantize time (``lookup`` kernel): an int8 input has only 256 possible values.
"""
import numpy as np

from .. import oracle
from .._kernels import _elementwise
from ..activations import activation
from ..quant.qparams import activation_bounds, requant_multipliers
from ..step import OverflowBound, Step
from .base import Op, register


def activation_function(attrs):
    """(function, clamp) for an activation node's attrs."""
    params = dict(attrs.get("params", {}))
    offset = params.pop("input_offset", 0.0)      # set by passes.clamp_before_saturating_activations
    f, clamp = activation(attrs["fn"], **params)
    if offset:
        return (lambda y: f(y + offset)), None
    return f, clamp


@register
class Activation(Op):
    name = "activation"

    def infer_shapes(self, node, in_shapes):
        return [tuple(in_shapes[0])]

    def run_float(self, node, inputs):
        f, _ = activation_function(node.attrs)
        return [f(np.asarray(inputs[0], np.float64))]

    def quantize(self, node, q):
        x_qp, y_qp = q.qparams(node.inputs[0]), q.qparams(node.outputs[0])
        f, clamp = activation_function(node.attrs)
        if clamp is not None:
            m0, shift = requant_multipliers(x_qp.scale / y_qp.scale, node.describe())
            lo, hi = activation_bounds(clamp, y_qp)
            return RescaleStep(node.name, node.layer, node.inputs, node.outputs, x_qp.zero_point,
                               int(m0[0]), int(shift[0]), y_qp.zero_point, lo, hi)
        codes = np.arange(-128, 128)
        table = y_qp.quantize(f(x_qp.dequantize(codes).astype(np.float64)))
        return LookupStep(node.name, node.layer, node.inputs, node.outputs, table)


class RescaleStep(Step):
    """y_q = clamp(y_zp + multiply_by_quantized_multiplier(x_q - x_zp, m0, shift), lo, hi)."""
    op = "rescale"

    def __init__(self, name, layer, inputs, outputs, in_zp, m0, shift, out_zp, act_min, act_max):
        super().__init__(name, layer, inputs, outputs)
        self.in_zp, self.m0, self.shift = int(in_zp), int(m0), int(shift)
        self.out_zp, self.act_min, self.act_max = int(out_zp), int(act_min), int(act_max)

    def bind(self, bufs):
        return _elementwise.RequantizeCall(
            bufs[self.inputs[0]].reshape(-1), self.in_zp, self.m0, self.shift, self.out_zp,
            self.act_min, self.act_max, bufs[self.outputs[0]].reshape(-1))

    def oracle(self, ins):
        x = ins[0]
        y = oracle.requantize(x.reshape(-1), self.in_zp, self.m0, self.shift, self.out_zp,
                              self.act_min, self.act_max)
        return [y.reshape(x.shape)]

    def accumulators(self, ins):
        return ins[0].astype(np.int64) - self.in_zp

    def overflow_bound(self):
        worst = np.array([max(abs(-128 - self.in_zp), abs(127 - self.in_zp))], np.int64)
        return OverflowBound(self.layer, self.op, worst << max(self.shift, 0))


class LookupStep(Step):
    """y_q = table[x_q + 128]."""
    op = "lookup"

    def __init__(self, name, layer, inputs, outputs, table):
        super().__init__(name, layer, inputs, outputs)
        self.table = np.ascontiguousarray(table, np.int8)

    def bind(self, bufs):
        return _elementwise.LookupCall(bufs[self.inputs[0]].reshape(-1), self.table,
                                       bufs[self.outputs[0]].reshape(-1))

    def oracle(self, ins):
        x = ins[0]
        return [oracle.lookup(x.reshape(-1), self.table).reshape(x.shape)]

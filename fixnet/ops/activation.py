"""activation: an elementwise function (relu, sigmoid, tanh, ...; see fixnet.activations).

A plain clamp (relu, relu6) is a rescale from the input's to the output's scale with the
clamp as bounds (``requantize`` kernel); any other function is a lookup table built at
quantize time (``lookup`` kernel) with one entry per input code: 256 int8 entries for an int8
node, 65536 int16 entries for an int16 one (exact: no interpolation between entries).

RescaleStep is also the conversion between activation types that the quantizer inserts where
an int8 tensor meets an int16 layer or back (``in_bits``: the input's type; ``bits``, the
output's).
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
            m0, shift = requant_multipliers(x_qp.scale / y_qp.scale, node.describe(), y_qp.bits)
            lo, hi = activation_bounds(clamp, y_qp)
            return RescaleStep(node.name, node.layer, node.inputs, node.outputs, x_qp.zero_point,
                               int(m0[0]), int(shift[0]), y_qp.zero_point, lo, hi,
                               in_bits=x_qp.bits)
        codes = np.arange(x_qp.qmin, x_qp.qmax + 1)      # every input code, in table order
        table = y_qp.quantize(f(x_qp.dequantize(codes).astype(np.float64)))
        return LookupStep(node.name, node.layer, node.inputs, node.outputs, table)


class RescaleStep(Step):
    """y_q = clamp(y_zp + multiply_by_quantized_multiplier(x_q - x_zp, m0, shift), lo, hi).

    Input and output may differ in type: ``in_bits`` is the input's (8 or 16; None: the
    same as ``bits``, the output's, which the quantizer sets)."""
    op = "rescale"
    in_bits = None          # what .fxn files written before int16 hold: the output's type

    def __init__(self, name, layer, inputs, outputs, in_zp, m0, shift, out_zp, act_min, act_max,
                 in_bits=None):
        super().__init__(name, layer, inputs, outputs)
        self.in_zp, self.m0, self.shift = int(in_zp), int(m0), int(shift)
        self.out_zp, self.act_min, self.act_max = int(out_zp), int(act_min), int(act_max)
        if in_bits is not None:
            self.in_bits = int(in_bits)

    @property
    def input_bits(self):
        """The input's activation type: 8 or 16."""
        return self.bits if self.in_bits is None else self.in_bits

    def bind(self, bufs):
        return _elementwise.RequantizeCall(
            bufs[self.inputs[0]].reshape(-1), self.in_zp, self.m0, self.shift, self.out_zp,
            self.act_min, self.act_max, bufs[self.outputs[0]].reshape(-1))

    def oracle(self, ins):
        x = ins[0]
        y = oracle.requantize(x.reshape(-1), self.in_zp, self.m0, self.shift, self.out_zp,
                              self.act_min, self.act_max,
                              out_dtype=np.int16 if self.bits == 16 else np.int8)
        return [y.reshape(x.shape)]

    def accumulators(self, ins):
        return ins[0].astype(np.int64) - self.in_zp

    def overflow_bound(self):
        lo, hi = (-128, 127) if self.input_bits == 8 else (-32768, 32767)
        worst = np.array([max(abs(lo - self.in_zp), abs(hi - self.in_zp))], np.int64)
        return OverflowBound(self.layer, self.op, worst << max(self.shift, 0))


class LookupStep(Step):
    """y_q = table[x_q - min]: int8, 256 entries (x_q + 128); int16, 65536 entries
    (x_q + 32768)."""
    op = "lookup"

    def __init__(self, name, layer, inputs, outputs, table):
        super().__init__(name, layer, inputs, outputs)
        table = np.asarray(table)
        self.table = np.ascontiguousarray(table, np.int16 if table.dtype == np.int16 else np.int8)

    def bind(self, bufs):
        return _elementwise.LookupCall(bufs[self.inputs[0]].reshape(-1), self.table,
                                       bufs[self.outputs[0]].reshape(-1))

    def oracle(self, ins):
        x = ins[0]
        return [oracle.lookup(x.reshape(-1), self.table).reshape(x.shape)]

"""reshape and identity: pure data moves. int8: no kernel; the output buffer is a view of the
input buffer with the same scale and zero point."""
import numpy as np

from ..errors import UnsupportedLayerError
from ..step import Step
from .base import Op, register


@register
class Reshape(Op):
    name = "reshape"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        target = list(node.attrs["shape"])
        size = int(np.prod(s))
        if target.count(-1) == 1:
            known = int(np.prod([d for d in target if d != -1]))
            if known == 0 or size % known:
                raise UnsupportedLayerError(f"{node.describe()}: cannot reshape {s} to {tuple(target)}")
            target[target.index(-1)] = size // known
        if int(np.prod(target)) != size:
            raise UnsupportedLayerError(f"{node.describe()}: cannot reshape {s} to {tuple(target)}")
        return [tuple(target)]

    def run_float(self, node, inputs):
        x = inputs[0]
        return [x.reshape((x.shape[0],) + tuple(node.attrs["shape"]))]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        return AliasStep(node.name, node.layer, node.inputs, node.outputs, "reshape")


@register
class Identity(Reshape):
    name = "identity"

    def infer_shapes(self, node, in_shapes):
        return [tuple(in_shapes[0])]

    def run_float(self, node, inputs):
        return [inputs[0]]

    def quantize(self, node, q):
        return AliasStep(node.name, node.layer, node.inputs, node.outputs, "identity")


class AliasStep(Step):
    alias = True

    def __init__(self, name, layer, inputs, outputs, op):
        super().__init__(name, layer, inputs, outputs)
        self.op = op

    def oracle(self, ins):
        return [ins[0]]


@register
class Transpose(Op):
    """attrs: perm, a permutation of the non-batch axes (0-based). A pure data move: int8 codes
    are copied in the new order, scale and zero point unchanged."""
    name = "transpose"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        perm = node.attrs["perm"]
        if sorted(perm) != list(range(len(s))):
            raise UnsupportedLayerError(f"{node.describe()}: {tuple(p + 1 for p in perm)} is not a "
                                        f"permutation of the {len(s)} non-batch axes")
        return [tuple(s[p] for p in perm)]

    def run_float(self, node, inputs):
        return [np.transpose(inputs[0], (0,) + tuple(p + 1 for p in node.attrs["perm"]))]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        return TransposeStep(node.name, node.layer, node.inputs, node.outputs, node.attrs["perm"])


class TransposeStep(Step):
    op = "transpose"

    def __init__(self, name, layer, inputs, outputs, perm):
        super().__init__(name, layer, inputs, outputs)
        self.axes = (0,) + tuple(p + 1 for p in perm)

    def bind(self, bufs):
        src, dst = bufs[self.inputs[0]].transpose(self.axes), bufs[self.outputs[0]]
        return lambda: np.copyto(dst, src)

    def oracle(self, ins):
        return [np.ascontiguousarray(ins[0].transpose(self.axes))]

"""What every op module builds on: the Op base class (the three stages of an IR op), the
KeepsWidened and WideAccumulators step mixins, and the registry of ops by name (OPS,
register, op_for)."""
import numpy as np

from ..errors import FixnetError
from ..step import OverflowBound


class Op:
    """An IR op. Subclasses set ``name`` and implement the three stages."""
    name = ""

    def infer_shapes(self, node, in_shapes):
        """Output shapes (without batch) from input shapes."""
        raise NotImplementedError

    def run_float(self, node, inputs):
        """Float reference: list of float arrays (with batch) -> list of outputs."""
        raise NotImplementedError

    def output_qparams(self, node, q):
        """QParams of each output; default: from the calibrated range of the tensor."""
        return [q.preferred_qparams(t) for t in node.outputs]

    def input_qparams(self, node, index):
        """QParams this node needs on its input ``index`` when that input is a model input
        (Embedding: token ids held exactly), or None (no requirement). The quantizer gives a
        model input these, whatever its calibrated range, when every node reading it asks
        for the same ones (fixnet.quant.quantizer.fixed_input_qparams)."""
        return None

    def quantize(self, node, q):
        """Build the runtime Step for this node (see fixnet.step.Step)."""
        raise NotImplementedError

    def reference_bytes(self, node, in_shapes):
        """Bytes the float reference needs at batch 1 beyond the node's inputs and outputs
        (counted in the load's memory budget, fixnet.limits); a None dimension counts as 1."""
        return 0

    def int8_unsupported(self, node):
        """Why this node cannot be quantized (quantize() refuses the graph, naming the
        layer), or None."""
        return None


class KeepsWidened:
    """A Step mixin for layers with weights: ``widened`` holds the channels whose weight scale
    quantize() widened for their bias (qparams.WidenedChannel records; qm.report() lists
    them). It is quantize-time information: kept on the step in memory, left out of the
    saved state (the .fxn file stores the integers; fixnet.report derives what it can from
    them for a loaded model)."""
    widened = ()

    def __getstate__(self):
        state = dict(super().__getstate__() or {})
        state.pop("widened", None)
        return state


class WideAccumulators:
    """A Step mixin for the int16 layers that can accumulate in int64 (dense, conv2d): a step
    whose ``acc_bits`` is 64 (a "wide" step) binds the kernels of fixnet/_kernels/_wide.pyx
    and runs the oracle's ``*_wide`` functions; its proof bounds |acc| by 2^47 instead of
    2^31. The quantizer widens an int16 step only when its int32 proof fails (``widen``)."""
    acc_bits = 32
    SHIFT_MAX_WIDE = 14     # the int64 requantization shifts right by 15 - shift >= 1

    def is_wide(self):
        """True for int64 accumulators; ValueError for an acc_bits that is not 32 or 64, or
        64 on a step that is not int16 (a damaged file: its bind names the step)."""
        bits = self.acc_bits
        if isinstance(bits, bool) or bits not in (32, 64):
            raise ValueError(f"acc_bits {bits!r} is not 32 or 64")
        if bits == 64 and self.bits != 16:
            raise ValueError(f"int64 accumulators are for int16 steps; this one is int{self.bits}")
        return bits == 64

    def accumulator_bound(self, worst):
        """The OverflowBound of the exact worst-case |accumulator| per channel ``worst``:
        int32 steps shift it left as their requantization does (shift > 0), wide steps
        compare it with 2^47."""
        if self.is_wide():
            return OverflowBound(self.layer, self.op, worst, limit_bits=47)
        return OverflowBound(self.layer, self.op,
                             worst << np.maximum(self.shift.astype(np.int64), 0))

    def widen(self):
        """Make this int16 step accumulate in int64 when its proof then holds and its shifts
        suit the int64 requantization; returns whether it did (else it is unchanged)."""
        if self.bits != 16 or (self.shift.size and int(self.shift.max()) > self.SHIFT_MAX_WIDE):
            return False
        self.acc_bits = 64
        if not self.overflow_bound().proven:
            del self.acc_bits
            return False
        return True


OPS = {}


def register(cls):
    OPS[cls.name] = cls()
    return cls


def op_for(node):
    try:
        return OPS[node.op]
    except KeyError:
        raise FixnetError(f"{node.describe()}: internal op '{node.op}' has no implementation") from None

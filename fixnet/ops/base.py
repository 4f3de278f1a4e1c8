"""What every op module builds on: the Op base class (the three stages of an IR op), the
KeepsWidened step mixin, and the registry of ops by name (OPS, register, op_for)."""
from ..errors import FixnetError


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


OPS = {}


def register(cls):
    OPS[cls.name] = cls()
    return cls


def op_for(node):
    try:
        return OPS[node.op]
    except KeyError:
        raise FixnetError(f"{node.describe()}: internal op '{node.op}' has no implementation") from None

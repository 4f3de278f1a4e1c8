"""The quantizer: float Graph + calibration ranges -> QuantizedModel (the numeric contract)."""
import warnings

from ..errors import CalibrationError, OverflowRiskError
from ..ops import op_for
from ..passes import optimize
from ..runtime import QuantizedModel, TensorSpec
from .calibrate import DEFAULT_BATCH, collect_ranges
from .qparams import qparams_from_range


class QuantContext:
    """What an op's ``quantize`` may ask about tensors."""

    def __init__(self, graph, ranges, per_channel):
        self.graph = graph
        self.ranges = ranges
        self.per_channel = per_channel
        self.qp = {}

    def qparams(self, tensor):
        return self.qp[tensor]

    def qparams_from_stats(self, tensor):
        if tensor not in self.ranges:
            raise CalibrationError(f"tensor '{tensor}' was never seen during calibration")
        return qparams_from_range(*self.ranges[tensor])

    def shape(self, tensor):
        return self.graph.shapes[tensor]


def quantize_graph(graph, calibration, per_channel=True, on_overflow_risk="error",
                   batch_size=DEFAULT_BATCH):
    """Quantize a float graph.

    calibration: sample inputs (see fixnet.quant.calibrate.iter_batches) that the activation
        ranges are measured on.
    per_channel: per-output-channel weight scales (True) or one scale per tensor.
    on_overflow_risk: "error" raises OverflowRiskError naming the layer when no proof exists
        that its int32 accumulator cannot wrap; "warn" issues a warning instead.
    """
    if on_overflow_risk not in ("error", "warn"):
        raise ValueError("on_overflow_risk must be 'error' or 'warn'")
    if calibration is None:
        raise CalibrationError(
            "quantize() needs calibration data: a few hundred representative inputs, e.g. "
            "quantize(x_train[:500]); data-free quantization is not available yet")
    g = optimize(graph)
    ranges, _ = collect_ranges(g, calibration, batch_size)
    q = QuantContext(g, ranges, per_channel)
    for t in g.inputs:
        q.qp[t] = q.qparams_from_stats(t)
    steps = []
    for n in g.nodes:
        op = op_for(n)
        for t, qp in zip(n.outputs, op.output_qparams(n, q)):
            q.qp[t] = qp
        steps.append(op.quantize(n, q))
    tensors = {t: TensorSpec(g.shapes[t], qp) for t, qp in q.qp.items()}
    qm = QuantizedModel(steps, tensors, g.inputs, g.outputs, g.name, g.source)
    risky = [b for b in qm.overflow_bounds() if not b.proven]
    if risky:
        msg = "; ".join(f"layer '{b.layer}' ({b.op}): worst-case |{b.what}| {int(b.worst.max())} "
                        f">= 2^31 in channel {int(b.worst.argmax())}" for b in risky)
        msg = ("cannot prove that every int32 accumulator stays in range: " + msg +
               ". Retrain with weight decay or smaller biases, or pass on_overflow_risk='warn'")
        if on_overflow_risk == "error":
            raise OverflowRiskError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return qm

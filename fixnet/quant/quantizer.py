"""The quantizer: float Graph + calibration ranges -> QuantizedModel (the numeric contract)."""
import warnings

from ..errors import CalibrationError, OverflowRiskError
from ..ops import op_for
from ..passes import optimize
from ..runtime import QuantizedModel, TensorSpec
from .calibrate import DEFAULT_BATCH, collect_ranges
from .qparams import qparams_from_range


# ops whose output keeps its input's scale and zero point (they move codes, not values)
SAME_QPARAMS_OPS = {"reshape", "identity", "transpose", "pad", "pool"}


def shared_ranges(graph, ranges):
    """{tensor: (lo, hi)}: the range each tensor is quantized with.

    Tensors that must (or had better) share one scale and zero point are grouped: the input and
    output of every code-moving op (reshape, transpose, padding, pooling), and the inputs and
    output of every concat, so that the concat is a plain byte copy and each producer rounds
    once, straight to the final scale (TFLite's converter does the same). A group is quantized
    with the union of its members' ranges, or with its concat's output range if it has one.
    """
    parent = {}

    def find(t):
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a, b):
        parent[find(a)] = find(b)

    for n in graph.nodes:
        if n.op in SAME_QPARAMS_OPS or (n.op == "global_pool" and n.attrs.get("kind") == "max"):
            union(n.outputs[0], n.inputs[0])
        elif n.op == "concat":
            for t in n.inputs:
                union(t, n.outputs[0])
    # a group that ends in a concat takes the concat's output range: values beyond it in the
    # inputs never reach the output that matters (TFLite's converter does the same)
    sinks = {n.outputs[0] for n in graph.nodes if n.op == "concat"}
    group, from_sink = {}, set()
    for t, (lo, hi) in ranges.items():
        g = find(t)
        if t in sinks and g not in from_sink:
            group[g] = (lo, hi)
            from_sink.add(g)
        elif g in from_sink and t not in sinks:
            continue
        else:
            a, b = group.get(g, (lo, hi))
            group[g] = (min(a, lo), max(b, hi))
    return {t: group[find(t)] for t in ranges}


class QuantContext:
    """What an op's ``quantize`` may ask about tensors."""

    def __init__(self, graph, ranges, per_channel):
        self.graph = graph
        self.ranges = ranges
        self.per_channel = per_channel
        self.qp = {}
        self.shared = shared_ranges(graph, ranges)

    def preferred_qparams(self, tensor):
        """QParams for a tensor from calibration: the range of its group (see shared_ranges)."""
        if tensor not in self.shared:
            raise CalibrationError(f"tensor '{tensor}' was never seen during calibration")
        return qparams_from_range(*self.shared[tensor])

    def qparams(self, tensor):
        return self.qp[tensor]

    def qparams_from_stats(self, tensor):
        """QParams from the tensor's own calibrated range only."""
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
        q.qp[t] = q.preferred_qparams(t)
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

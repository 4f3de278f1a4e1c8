"""The quantizer: float Graph + calibration ranges -> QuantizedModel (the numeric contract)."""
import warnings

from ..errors import CalibrationError, OverflowRiskError, QuantizationError
from ..errors import UnsupportedLayerError
from ..lengths import at_length, length_symbols, tensor_lengths
from ..ops import op_for
from ..passes import optimize
from ..runtime import QuantizedModel
from ..step import TensorSpec
from .bias_correction import correct_bias
from .calibrate import DEFAULT_BATCH, calibrated_ranges, collect_statistics
from .datafree import datafree_ranges, datafree_statistics
from .histogram import DEFAULT_BINS
from .qparams import qparams_from_range, quantize_channels
from .ranges import DEFAULT_PERCENTILE, METHODS
from .rounding import round_rows, row_groups


# ops whose output keeps its input's scale and zero point (they move codes, not values)
SAME_QPARAMS_OPS = {"reshape", "identity", "transpose", "pad", "pool", "upsample", "crop", "zero_insert",
                    "masking"}


def shared_ranges(graph, ranges):
    """{tensor: (lo, hi)}: the range each tensor is quantized with.

    Tensors that must (or had better) share one scale and zero point are grouped: the input and
    output of every code-moving op (reshape, transpose, padding, pooling), and the inputs and
    output of every concat, so that the concat is a plain byte copy and each producer rounds
    once, straight to the final scale (TFLite's converter does the same). A group is quantized
    with the union of its members' ranges, or with its concat's output range if it has one.

    A concat input that something else reads too (or that is a model output) keeps its own
    range, and the concat requantizes it: its other readers keep the resolution of its own
    range instead of the concat's wider one (TFLite's converter gives them a separately
    quantized tensor, too).
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

    users = graph.consumers()
    for n in graph.nodes:
        if n.op in SAME_QPARAMS_OPS or (n.op == "global_pool" and n.attrs.get("kind") == "max"):
            union(n.outputs[0], n.inputs[0])
        elif n.op == "concat":
            for t in n.inputs:
                if len(users.get(t, [])) == 1 and t not in graph.outputs:
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

    def __init__(self, graph, ranges, per_channel, weight_clipping=None, moments=None,
                 softmax_levels=255):
        self.graph = graph
        self.softmax_levels = softmax_levels        # softmax output scale 1/levels
        self.ranges = ranges
        self.per_channel = per_channel
        self.weight_clipping = weight_clipping      # None or "mse" (see qparams.quantize_weights)
        self.moments = moments or {}                # node name -> SecondMoment of its input
        self.weights = {}                           # node name -> (w_q, scale) as quantized
        self.qp = {}
        self.shared = shared_ranges(graph, ranges)

    def quantize_channels(self, node, rows, bias, per_channel=None, adaptive=True):
        """Weights, int32 bias and multipliers of ``node`` (qparams.quantize_channels) from
        weight rows [C, ...] (output channel first) and bias [C] (or None), between its input
        and output qparams: scales by max |w| (or MSE clipping), widened for channels whose
        bias cannot be held otherwise (dead filters); codes rounded to nearest, or adaptively
        (fixnet.quant.rounding) at those scales when the layer's input moment is known.
        Keeps (w_q, scale) for bias correction and returns the ChannelQuant."""
        m = self.moments.get(node.name) if adaptive else None
        round_codes = None
        if m is not None and m.count:
            def round_codes(flat, scale):
                return round_rows(flat, scale, m.moment, row_groups(node, flat.shape[0]))
        cq = quantize_channels(rows, bias, self.qparams(node.inputs[0]), self.qparams(node.outputs[0]),
                               node.describe(),
                               per_channel=self.per_channel if per_channel is None else per_channel,
                               clipping=self.weight_clipping, round_codes=round_codes)
        self.weights[node.name] = (cq.w_q, cq.scale)
        return cq

    def preferred_qparams(self, tensor):
        """QParams for a tensor from calibration: the range of its group (see shared_ranges)."""
        if tensor not in self.shared:
            raise CalibrationError(f"tensor '{tensor}' was never seen during calibration")
        return self._from_range(tensor, self.shared[tensor])

    def qparams(self, tensor):
        return self.qp[tensor]

    def _from_range(self, tensor, lo_hi):
        try:
            return qparams_from_range(*lo_hi)
        except QuantizationError as e:          # a range that is not finite: name the layer
            node = self.graph.producers().get(tensor)
            who = f"{node.describe()}, output '{tensor}'" if node is not None else f"input '{tensor}'"
            raise QuantizationError(f"{who}: {e}") from None

    def shape(self, tensor):
        return self.graph.shapes[tensor]


DEFAULT_METHOD = "auto"


def refuse_unquantizable(graph):
    """UnsupportedLayerError listing every layer whose op has no int8 execution yet
    (Op.int8_unsupported), and, for inputs of any length (a None dimension), the first layer
    whose output shape is not fixed or that length (fixnet/lengths.py); the float model
    still predicts."""
    problems, seen = [], set()
    for n in graph.nodes:
        reason = op_for(n).int8_unsupported(n)
        if reason and (n.layer, reason) not in seen:
            seen.add((n.layer, reason))
            problems.append((n.layer or n.name, n.keras_class or n.op, reason))
    if length_symbols(graph.inputs, graph.shapes):
        try:
            tensor_lengths(graph)
        except UnsupportedLayerError as e:
            problems.extend(e.layers or [(graph.inputs[0], "InputLayer", str(e))])
    if problems:
        lines = "\n".join(f"  - '{n}' ({c}): {r}" for n, c, r in problems)
        raise UnsupportedLayerError(f"{graph.source or graph.name}: cannot quantize "
                                    f"{len(problems)} layer(s):\n{lines}", problems)


def quantize_graph(graph, calibration=None, method=DEFAULT_METHOD, *, percentile=DEFAULT_PERCENTILE,
                   per_channel=True, weight_clipping=None, weight_rounding="adaptive",
                   bias_correction=True,
                   input_range=None, on_overflow_risk="error", batch_size=DEFAULT_BATCH,
                   nbins=DEFAULT_BINS, progress="auto", softmax_window=True, softmax_levels=255):
    """Quantize a float graph. See FloatModel.quantize for the arguments; besides:

    nbins: bins of each tensor's calibration histogram.
    softmax_window: a softmax's input range covers only what can change its probabilities
        (see calibrate.SoftmaxWindow), for every method but minmax.
    """
    if on_overflow_risk not in ("error", "warn"):
        raise ValueError("on_overflow_risk must be 'error' or 'warn'")
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    if weight_clipping not in (None, "mse"):
        raise ValueError("weight_clipping must be None or 'mse'")
    if weight_rounding not in ("nearest", "adaptive"):
        raise ValueError("weight_rounding must be 'nearest' or 'adaptive'")
    if softmax_levels not in (255, 256):
        raise ValueError(f"softmax_levels must be 255 or 256, not {softmax_levels!r}")
    refuse_unquantizable(graph)
    g = optimize(graph)
    if calibration is None:
        # per-element statistics: inputs of any length at lengths.ANY_LENGTH steps
        stats = datafree_statistics(at_length(graph), at_length(g), input_range)
        means = {t: st.mean for t, st in stats.items()} if bias_correction else None
        return build_quantized_model(g, datafree_ranges(stats), per_channel, weight_clipping,
                                     means, on_overflow_risk, softmax_levels=softmax_levels)
    obs = collect_statistics(g, calibration, batch_size, nbins, progress,
                             second_moments=weight_rounding == "adaptive")
    users = g.consumers()
    recurrent_inputs = {t for t in g.inputs if any(n.op == "rnn" for n in users.get(t, ()))}
    ranges = calibrated_ranges(obs, method, percentile, skip=set(g.inputs),
                               softmax_window=softmax_window, widen=recurrent_inputs)
    means = {t: st.mean for t, st in obs.stats.items()} if bias_correction else None
    return build_quantized_model(g, ranges, per_channel, weight_clipping, means, on_overflow_risk,
                                 moments=obs.moments, softmax_levels=softmax_levels)


def fixed_input_qparams(g, tensor):
    """The QParams the nodes reading model input ``tensor`` need it to have (Op.input_qparams:
    token ids for Embedding), when every reader asks for the same ones; else None (the input
    is quantized from its calibrated range)."""
    asked = {op_for(n).input_qparams(n, i) for n in g.consumers().get(tensor, [])
             for i, t in enumerate(n.inputs) if t == tensor}
    return asked.pop() if len(asked) == 1 else None


def build_quantized_model(g, ranges, per_channel=True, weight_clipping=None, input_means=None,
                          on_overflow_risk="error", moments=None, softmax_levels=255):
    """The QuantizedModel of an optimized graph ``g`` given every tensor's range.

    input_means: {tensor: mean value per element} of the float tensors, or None; with it, the
        bias of every dense/conv layer is corrected for the mean output shift its weight
        rounding causes on that mean input (see fixnet.quant.bias_correction).
    """
    lengths = tensor_lengths(g)       # {tensor: (shape, length_of)}: inputs of any length
    any_length = bool(length_symbols(g.inputs, g.shapes))
    q = QuantContext(g, ranges, per_channel, weight_clipping, moments, softmax_levels)
    for t in g.inputs:
        fixed = fixed_input_qparams(g, t)
        q.qp[t] = fixed if fixed is not None else q.preferred_qparams(t)
    steps = []
    for n in g.nodes:
        op = op_for(n)
        for t, qp in zip(n.outputs, op.output_qparams(n, q)):
            q.qp[t] = qp
        try:
            step = op.quantize(n, q)
        except TypeError as e:     # arithmetic on a None (any-length) dimension
            if not any_length:
                raise
            raise UnsupportedLayerError(
                f"{g.source or g.name}: cannot quantize for inputs of any length: "
                f"{n.describe()} computes its int8 parameters from a dimension of any length "
                f"({e}); give the input a fixed length", [(n.layer or n.name, n.keras_class or n.op,
                                                          "int8 parameters depend on the length")]) from None
        if input_means is not None:
            correct_bias(n, step, q, input_means.get(n.inputs[0]))
        steps.append(step)
    tensors = {t: TensorSpec(lengths[t][0], qp, lengths[t][1]) for t, qp in q.qp.items()}
    qm = QuantizedModel(steps, tensors, g.inputs, g.outputs, g.name, g.source)
    risky = [b for b in qm.overflow_bounds() if not b.proven]
    if risky:
        msg = "; ".join(f"layer '{b.layer}' ({b.op}): worst-case |{b.what}| {int(b.worst.max())} "
                        f">= 2^31 in channel {int(b.worst.argmax())}" for b in risky)
        msg = ("cannot prove that every int32 accumulator stays in range: " + msg +
               ". Retrain with weight decay or smaller biases, or pass on_overflow_risk='warn'")
        if on_overflow_risk == "error":
            raise OverflowRiskError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
    return qm

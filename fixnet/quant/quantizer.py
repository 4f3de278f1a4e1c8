"""The quantizer: float Graph + calibration ranges -> QuantizedModel (the numeric contract).

Activation types: every node gets one (QuantConfig.activations, or its override): int8 or
int16. A node's inputs and outputs are all of its type (one type per kernel call); where a
tensor of one type feeds a node of the other, a requantize step converts it (int8 -> int16
exactly, at the int8 tensor's scale; int16 -> int8 rounding to the tensor's int8 range).
"""
import copy
import dataclasses
import warnings

from ..errors import CalibrationError, OverflowRiskError, QuantizationError
from ..errors import UnsupportedLayerError
from ..lengths import at_length, length_symbols, tensor_lengths
from ..ops import op_for
from ..passes import optimize
from ..runtime import QuantizedModel
from ..ops.activation import RescaleStep
from ..ops.mask import MASK16_QPARAMS, MASK_QPARAMS
from ..step import TensorSpec
from .bias_correction import correct_bias
from .calibrate import DEFAULT_BATCH, calibrated_ranges, collect_statistics
from .config import INT16_OPS, ConfigError, QuantConfig, exact_pattern
from .datafree import datafree_ranges, datafree_statistics
from .histogram import DEFAULT_BINS
from .qparams import QParams, qparams_from_range, quantize_channels, requant_multipliers
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

    def __init__(self, graph, ranges, config, moments=None):
        self.graph = graph
        self.config = config
        self.softmax_levels = config.softmax_levels  # softmax output scale 1/levels
        self.ranges = ranges
        self.per_channel = config.per_channel
        self.weight_clipping = config.weight_clipping  # None or "mse" (qparams.quantize_weights)
        self.moments = moments or {}                # node name -> SecondMoment of its input
        self.weights = {}                           # node name -> (w_q, scale) as quantized
        self.qp = {}
        self.shared = shared_ranges(graph, ranges)
        self.bits = 8                               # the type of the node being quantized
        self.shapes = dict(graph.shapes)            # with the converted tensors' shapes

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
            def round_codes(flat, scale, levels=None):
                return round_rows(flat, scale, m.moment, row_groups(node, flat.shape[0]),
                                  levels=levels)
        if per_channel is None:
            per_channel = self.config.layer_value("per_channel", node.layer, node.name)
        cq = quantize_channels(rows, bias, self.qparams(node.inputs[0]), self.qparams(node.outputs[0]),
                               node.describe(), per_channel=per_channel,
                               clipping=self.weight_clipping, round_codes=round_codes,
                               weights=self.config.layer_value("weights", node.layer, node.name))
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
            return qparams_from_range(*lo_hi, bits=self.bits)
        except QuantizationError as e:          # a range that is not finite: name the layer
            node = self.graph.producers().get(tensor)
            who = f"{node.describe()}, output '{tensor}'" if node is not None else f"input '{tensor}'"
            raise QuantizationError(f"{who}: {e}") from None

    def shape(self, tensor):
        return self.shapes[tensor]


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


CONFIG_KEYWORDS = {f for f in QuantConfig.__dataclass_fields__}


def make_config(config=None, where="quantize", **shorthands):
    """The QuantConfig of ``config`` (a QuantConfig, a mapping of its fields, a range method
    name, or None for the defaults) with the keyword shorthands set on it; ConfigError naming
    an unknown keyword."""
    if isinstance(config, str):
        shorthands = {"method": config, **shorthands}
        config = None
    if config is None:
        config = QuantConfig()
    elif not isinstance(config, QuantConfig):
        config = QuantConfig.from_dict(config)
    unknown = [k for k in shorthands if k not in CONFIG_KEYWORDS]
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                          f"the settings are {', '.join(sorted(CONFIG_KEYWORDS))}")
    given = dict(shorthands)
    if "overrides" in given:
        more = given.pop("overrides")
        config = config.with_overrides(more)
    try:
        return dataclasses.replace(config, **given) if given else config
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


class Calibrated:
    """What calibration measured, kept so that one calibration serves many builds (the adjust
    step quantizes the same graph with other activation types): the optimized graph, its
    ranges per method, the mean inputs for bias correction and the second moments for
    adaptive rounding."""

    def __init__(self, g, ranges_by, means, moments=None):
        self.g = g
        self.ranges_by = ranges_by      # method -> {tensor: (lo, hi)}
        self.means = means
        self.moments = moments
        self._ranges = {}
        self.steps = {}                 # build key -> step (see build_quantized_model)

    def ranges(self, method):
        if method not in self._ranges:
            self._ranges[method] = self.ranges_by(method)
        return self._ranges[method]

    def int16_gains(self, qm, xs):
        """The report's adjust records for ``qm`` (built from this calibration) on inputs
        ``xs``: per layer that runs int8 and could run int16, the output SQNR with that layer
        alone in int16, best first (fixnet.quant.adjust.int16_gains)."""
        from .adjust import Scorer, candidate_layers, int16_gains
        score = Scorer(self.g, xs, "sqnr")
        base = score(qm)
        gains = int16_gains(self, qm.config, candidate_layers(self.g, qm), score)
        return [{"layer": name, "sqnr_db": s, "gain_db": s - base, "base_db": base}
                for name, s in sorted(gains, key=lambda kv: -kv[1])]

    def build(self, config):
        """The QuantizedModel of the graph under ``config``."""
        ranges = dict(self.ranges(config.method))
        ranges.update(override_ranges(self.g, config, self.ranges))
        means = self.means if config.bias_correction else None
        return build_quantized_model(self.g, ranges, input_means=means, moments=self.moments,
                                     config=config, step_cache=self.steps)


def calibrate_graph(graph, calibration, config, input_range=None, batch_size=DEFAULT_BATCH,
                    nbins=DEFAULT_BINS, progress="auto", softmax_window=True):
    """Calibrated statistics of ``graph`` (data-free ones when ``calibration`` is None)."""
    refuse_unquantizable(graph)
    g = optimize(graph)
    check_override_names(g, config)
    if calibration is None:
        # per-element statistics: inputs of any length at lengths.ANY_LENGTH steps
        stats = datafree_statistics(at_length(graph), at_length(g), input_range)
        ranges = datafree_ranges(stats)
        return Calibrated(g, lambda method: ranges, {t: st.mean for t, st in stats.items()})
    obs = collect_statistics(g, calibration, batch_size, nbins, progress,
                             second_moments=config.weight_rounding == "adaptive")
    users = g.consumers()
    recurrent_inputs = {t for t in g.inputs if any(n.op == "rnn" for n in users.get(t, ()))}

    def ranges_by(method):
        return calibrated_ranges(obs, method, config.percentile, skip=set(g.inputs),
                                 softmax_window=softmax_window, widen=recurrent_inputs)

    return Calibrated(g, ranges_by, {t: st.mean for t, st in obs.stats.items()}, obs.moments)


def quantize_graph(graph, calibration=None, config=None, *, validation=None, input_range=None,
                   batch_size=DEFAULT_BATCH, nbins=DEFAULT_BINS, progress="auto",
                   softmax_window=True, **shorthands):
    """Quantize a float graph with ``config`` (see make_config; FloatModel.quantize documents
    the settings); besides:

    validation: inputs the accuracy target is measured on (default: the calibration data,
        when it is an array or a list of arrays).
    nbins: bins of each tensor's calibration histogram.
    softmax_window: a softmax's input range covers only what can change its probabilities
        (see calibrate.SoftmaxWindow), for every method but minmax.
    """
    from .adjust import adjust_to_target
    config = make_config(config, **shorthands)
    cal = calibrate_graph(graph, calibration, config, input_range, batch_size, nbins, progress,
                          softmax_window)
    qm = cal.build(config)
    if config.target_sqnr is not None or config.target_agreement is not None:
        qm = adjust_to_target(cal, config, qm, validation if validation is not None else calibration)
    qm.calibrated = cal       # for qm.report's adjust section; never saved
    return qm


def override_ranges(g, config, ranges_by):
    """{tensor: (lo, hi)} of the outputs of nodes whose override sets a range method
    (``ranges_by(method)`` gives every tensor's range by that method)."""
    out = {}
    for n in g.nodes:
        method = config.for_layer(n.layer, n.name).get("method")
        if method is None or method == config.method:
            continue
        ranges = ranges_by(method)
        out.update({t: ranges[t] for t in n.outputs if t in ranges})
    return out


def check_override_names(g, config):
    """ConfigError for an override pattern that matches no layer (it lists the layers), or
    one asking int16 of a layer whose op has no int16 kernels."""
    names = sorted({n.layer or n.name for n in g.nodes} | {n.name for n in g.nodes})
    bad = config.unmatched_patterns(names)
    if bad:
        layers = sorted({n.layer or n.name for n in g.nodes})
        raise ConfigError(f"override(s) {', '.join(map(repr, bad))} match no layer; the layers "
                          f"are: {', '.join(layers)}")
    for n in g.nodes:
        if config.for_layer(n.layer, n.name).get("activations") == "int16" and n.op not in INT16_OPS:
            raise ConfigError(f"{n.describe()}: op '{n.op}' has no int16 kernels yet; int16 runs "
                              f"{', '.join(sorted(INT16_OPS))}")


def fixed_input_qparams(g, tensor):
    """The QParams the nodes reading model input ``tensor`` need it to have (Op.input_qparams:
    token ids for Embedding), when every reader asks for the same ones; else None (the input
    is quantized from its calibrated range)."""
    asked = {op_for(n).input_qparams(n, i) for n in g.consumers().get(tensor, [])
             for i, t in enumerate(n.inputs) if t == tensor}
    return asked.pop() if len(asked) == 1 else None


def node_bits(n, config):
    """16 if node ``n`` runs int16 activations under ``config``, else 8."""
    want = config.layer_value("activations", n.layer, n.name)
    return 16 if want == "int16" and n.op in INT16_OPS else 8


def input_bits(g, tensor, bits_of_node):
    """A model input is int16 when every node reading it is (and none needs fixed qparams)."""
    readers = g.consumers().get(tensor, [])
    return 16 if readers and all(bits_of_node[n.name] == 16 for n in readers) else 8


class Converts:
    """The requantize steps where a tensor of one type feeds a node of the other: one per
    (tensor, type), made where the first such node reads it."""

    def __init__(self, q, lengths):
        self.q = q
        self.lengths = lengths          # tensor -> (shape, length_of)
        self.made = {}                  # (tensor, bits) -> converted tensor name

    def typed_node(self, n, bits, steps):
        """``n`` itself, or a copy reading converted tensors where its inputs are of the
        other type (the convert steps are appended to ``steps``)."""
        names = [self.tensor_as(t, bits, n, steps) for t in n.inputs]
        if names == list(n.inputs):
            return n
        typed = copy.copy(n)
        typed.inputs = names
        return typed

    def is_mask(self, t, src):
        """True for an int16 mask (fixnet/ops/mask.py: codes 0 and 1 at scale 1.0, values in
        [0, 1] in calibration): its int8 readers (recurrent layers, masked means) need it as
        an int8 mask, MASK_QPARAMS, not at its calibrated range."""
        lo, hi = self.q.shared.get(t, (0.0, 1.0))
        return src == MASK16_QPARAMS and 0.0 <= lo and hi <= 1.0

    def tensor_as(self, t, bits, reader, steps):
        src = self.q.qp[t]
        if src.bits == bits:
            return t
        key = (t, bits)
        if key not in self.made:
            name = f"{t}:int{bits}"
            if bits == 16:      # exact: the int8 codes minus their zero point, same scale
                dst = QParams(src.scale, 0, 16)
            elif self.is_mask(t, src):  # exact: codes 0 and 1 stay 0 and 1
                dst = MASK_QPARAMS
            else:               # rounds: to the int8 range of the tensor's group
                self.q.bits = 8
                dst = self.q.preferred_qparams(t)
            m0, shift = requant_multipliers(src.scale / dst.scale, reader.describe(), dst.bits)
            step = RescaleStep(f"{name}/convert", reader.layer, [t], [name], src.zero_point,
                               int(m0[0]), int(shift[0]), dst.zero_point, dst.qmin, dst.qmax,
                               in_bits=src.bits)
            step.bits = bits
            steps.append(step)
            self.q.qp[name] = dst
            self.q.shapes[name] = self.q.shapes[t]
            self.lengths[name] = self.lengths[t]
            self.made[key] = name
        return self.made[key]


def build_quantized_model(g, ranges, per_channel=True, weight_clipping=None, input_means=None,
                          on_overflow_risk="error", moments=None, softmax_levels=255, config=None,
                          step_cache=None, _kept=None):
    """The QuantizedModel of an optimized graph ``g`` given every tensor's range.

    config: the QuantConfig (None: one from per_channel, weight_clipping, on_overflow_risk and
        softmax_levels, as before configs existed).
    input_means: {tensor: mean value per element} of the float tensors, or None; with it, the
        bias of every dense/conv layer is corrected for the mean output shift its weight
        rounding causes on that mean input (see fixnet.quant.bias_correction).
    step_cache: a dict kept between builds of the same graph with the same ranges, means and
        moments (quantizer.Calibrated): a node whose settings and input and output qparams
        are those of an earlier build reuses its step (steps are not changed after a build),
        so a build that moves one layer to int16 re-derives that layer and its neighbours only.
    """
    if config is None:
        config = make_config(per_channel=per_channel, weight_clipping=weight_clipping,
                             on_overflow_risk=on_overflow_risk, softmax_levels=softmax_levels)
    lengths = dict(tensor_lengths(g))   # {tensor: (shape, length_of)}: inputs of any length
    any_length = bool(length_symbols(g.inputs, g.shapes))
    q = QuantContext(g, ranges, config, moments)
    bits_of_node = {n.name: node_bits(n, config) for n in g.nodes}
    # what else a step depends on: the settings that are not per layer
    base_key = dataclasses.replace(config, overrides=(), activations="int8", target_sqnr=None,
                                   target_agreement=None)
    for t in g.inputs:
        fixed = fixed_input_qparams(g, t)
        q.bits = input_bits(g, t, bits_of_node) if fixed is None else 8
        q.qp[t] = fixed if fixed is not None else q.preferred_qparams(t)
    steps = []
    converts = Converts(q, lengths)
    kept_int8 = []          # (layer, why): int16 asked, int8 kept
    for n in g.nodes:
        bits = bits_of_node[n.name]
        mark = (len(steps), dict(converts.made))
        step = _node_step(n, bits, q, converts, steps, step_cache, base_key, input_means,
                          any_length, g)
        bound = step.overflow_bound() if bits == 16 else None
        if bound is not None and not bound.proven and hasattr(step, "widen") and step.widen():
            bound = None    # dense / conv2d: int64 accumulators, proven below 2^47
        if bound is not None and not bound.proven:
            # int16 inputs break this layer's int32 proof (|x| up to 32768 instead of 128)
            # and it has no int64 kernel (only dense and conv2d do), or even int64 cannot be
            # proven: it runs int8, converted at both ends, rather than wrap
            del steps[mark[0]:]
            for key, name in converts.made.items():
                if key not in mark[1]:
                    q.qp.pop(name, None)
            converts.made = mark[1]
            bits_of_node[n.name] = 8
            kept_int8.append((n.layer or n.name, f"int16 inputs could overflow its int32 "
                              f"accumulator (worst case {int(bound.worst.max())} >= 2^31)"))
            step = _node_step(n, 8, q, converts, steps, step_cache, base_key, input_means,
                              any_length, g)
        steps.append(step)
    if kept_int8 and _kept is None:
        # build again with those layers int8 from the start, so that no tensor (a model input)
        # is made int16 only to be converted back for them
        forced = config.with_overrides({exact_pattern(name): {"activations": "int8"}
                                        for name, _ in kept_int8})
        qm = build_quantized_model(g, ranges, input_means=input_means, moments=moments,
                                   config=forced, step_cache=step_cache, _kept=kept_int8)
        qm.config = config
        return qm
    tensors = {t: TensorSpec(lengths[t][0], qp, lengths[t][1]) for t, qp in q.qp.items()}
    qm = QuantizedModel(steps, tensors, g.inputs, g.outputs, g.name, g.source)
    qm.config = config
    qm.kept_int8 = list(_kept or ()) + kept_int8
    risky = [b for b in qm.overflow_bounds() if not b.proven]
    if risky:
        msg = "; ".join(f"layer '{b.layer}' ({b.op}): worst-case |{b.what}| {int(b.worst.max())} "
                        f">= 2^31 in channel {int(b.worst.argmax())}" for b in risky)
        msg = ("cannot prove that every int32 accumulator stays in range: " + msg +
               ". Retrain with weight decay or smaller biases, or pass on_overflow_risk='warn'")
        if config.on_overflow_risk == "error":
            raise OverflowRiskError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
    return qm


def _node_step(n, bits, q, converts, steps, step_cache, base_key, input_means, any_length, g):
    """The step of node ``n`` with activation type ``bits`` (converts of its inputs appended
    to ``steps``; its outputs' qparams set in ``q``), from ``step_cache`` when an earlier
    build made the same one."""
    op = op_for(n)
    typed = converts.typed_node(n, bits, steps)
    q.bits = bits
    for t, qp in zip(n.outputs, op.output_qparams(typed, q)):
        q.qp[t] = qp
    key = None
    if step_cache is not None:
        key = (n.name, bits, base_key, tuple(sorted(q.config.for_layer(n.layer, n.name).items())),
               tuple(typed.inputs), tuple(q.qp[t] for t in typed.inputs),
               tuple(q.qp[t] for t in n.outputs))
        if key in step_cache:
            return step_cache[key]
    try:
        step = op.quantize(typed, q)
    except TypeError as e:     # arithmetic on a None (any-length) dimension
        if not any_length:
            raise
        raise UnsupportedLayerError(
            f"{g.source or g.name}: cannot quantize for inputs of any length: "
            f"{n.describe()} computes its int8 parameters from a dimension of any length "
            f"({e}); give the input a fixed length", [(n.layer or n.name, n.keras_class or n.op,
                                                      "int8 parameters depend on the length")]) from None
    if bits != 8:
        step.bits = bits
    if input_means is not None:
        correct_bias(typed, step, q, input_means.get(n.inputs[0]))
    if key is not None:
        step_cache[key] = step
    return step

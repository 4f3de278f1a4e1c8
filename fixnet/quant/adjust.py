"""The adjust step: after analysing the error, change what costs the most until an accuracy
target is met (``quantize(calib, target_sqnr=DB)`` or ``target_agreement=FRACTION``).

1. Measure the model as configured (int8 unless told otherwise) on the validation inputs:
   output SQNR against the float graph, or top-1 agreement with it.
2. For every layer that runs int16 kernels, the same measure with that one layer in int16
   (``int16_gains``; the report's "adjust" section prints it): what moving it alone buys.
3. The cheaper remedy first: for the layers at the top of that ranking (METHOD_TRIALS), try
   the other range methods of their int8 output (minmax, percentile, mse, entropy), which
   cost no time at run time; keep a method where it raises the measure, one layer after
   the other. If that meets the target, no layer moves to int16.
4. Otherwise rank the layers by their int16 gain and take the shortest prefix of the ranking
   whose model (with the kept range methods) meets the target (bisection over the prefix
   length: about log2(layers) more builds).
5. If even every layer in int16 misses the target, aim at 0.5 dB below all-int16 (or 0.5
   point of agreement) instead and say so: the int8 weights are then the limit, and the
   fewest int16 layers that come that close are kept.

One calibration serves every build (quantizer.Calibrated): a build re-derives scales, weights
and steps from the stored ranges, it does not re-run the float network on the calibration set.
"""
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .. import reference
from ..errors import ConfigError
from ..metrics import sqnr_db
from .config import INT16_OPS, exact_pattern

VALIDATION_LIMIT = 512          # samples measured per build
METHOD_TRIALS = 6               # layers (best int16 gain first) whose range method is tried
RANGE_METHODS = ("minmax", "percentile", "mse", "entropy")
# a range method is kept when it raises the measure by more than this (noise of one build)
METHOD_MIN_GAIN = {"sqnr": 0.05, "agreement": 0.002}
MISS_MARGIN_DB = 0.5            # when the target is out of reach: this close to all-int16
MISS_MARGIN_AGREEMENT = 0.005
# Predicted cost of an int16 layer relative to its int8 time, per kernel type: int16 time /
# int8 time of the kernels at batch 1 on MobileNetV2 shapes, measured on x86-64 (AVX2 and
# the baseline build: 0.8-1.0 for dense and conv, 0.9-1.1 for depthwise; issue 19's notes).
# On arm64 the int16 GEMM is slower than this (llvm-mca: about 2x int8 on a Cortex-A72, 2.5x
# against sdot on a Cortex-A76); the measured time in Adjustment is the machine's own.
INT16_TIME_FACTOR = {"dense": 1.0, "conv2d": 1.0, "depthwise_conv2d": 1.05,
                     "global_average_pool": 1.05}
INT16_TIME_FACTOR_OTHER = 1.5   # memory-bound steps move twice the bytes


@dataclass
class Adjustment:
    """What the adjust step did (``qm.adjustment``)."""
    metric: str                     # "sqnr" (dB) or "agreement" (fraction)
    target: float
    before: float                   # the measure as configured
    after: float                    # the measure of the model returned
    all_int16: float                # the measure with every int16-capable layer in int16
    reached: bool                   # the target was met
    int16_layers: List[str]         # the layers moved to int16
    range_methods: dict = field(default_factory=dict)  # {layer: range method} changed (int8)
    gains: List[tuple] = field(default_factory=list)  # (layer, measure with it alone in int16)
    predicted_time: Optional[float] = None   # predicted time relative to as-configured
    measured_ms: dict = field(default_factory=dict)  # batch-1 ms: configured, result, all_int16
    arena_bytes: dict = field(default_factory=dict)  # batch-1 arena bytes of the same three
    candidates: int = 0

    def unit(self):
        return "dB" if self.metric == "sqnr" else ""

    def summary(self):
        u = self.unit()
        head = (f"target {self.metric} {self.target:g}{u}: " +
                ("met" if self.reached else
                 f"NOT reachable (all-int16 gives {self.all_int16:.2f}{u}; the int8 weights are "
                 f"the limit: see the report's weight SQNR); kept within "
                 f"{MISS_MARGIN_DB if self.metric == 'sqnr' else MISS_MARGIN_AGREEMENT:g}{u} of all-int16"))
        lines = [head,
                 f"  {self.metric} before {self.before:.2f}{u}, after {self.after:.2f}{u} "
                 f"(all-int16 {self.all_int16:.2f}{u})",
                 f"  {len(self.int16_layers)} of {self.candidates} layers moved to int16: "
                 + (", ".join(self.int16_layers) or "none")]
        if self.range_methods:
            lines.insert(2, "  range method changed (no run-time cost): " + ", ".join(
                f"{name} -> {method}" for name, method in self.range_methods.items()))
        if self.predicted_time is not None:
            lines.append(f"  time: predicted {self.predicted_time:.2f}x the configured model's")
        if self.measured_ms:
            m = self.measured_ms
            lines.append("  measured at batch 1: " + ", ".join(f"{k} {v:.3f} ms" for k, v in m.items()))
        if self.arena_bytes:
            lines.append("  arena bytes at batch 1: " + ", ".join(f"{k} {v}" for k, v in self.arena_bytes.items()))
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def validation_inputs(data, graph):
    """The validation inputs as a list of arrays (one per model input), at most
    VALIDATION_LIMIT samples; ConfigError when ``data`` is not arrays (an iterator of batches
    is read once, by calibration: pass validation= then)."""
    n_inputs = len(graph.inputs)
    if isinstance(data, np.ndarray) and n_inputs == 1:
        xs = [data]
    elif isinstance(data, (list, tuple)) and len(data) == n_inputs and \
            all(isinstance(d, np.ndarray) for d in data):
        xs = list(data)
    else:
        raise ConfigError("an accuracy target is measured on arrays: pass validation= (an array, "
                          "or a list of arrays, one per input) when the calibration data is an "
                          "iterator or is not given")
    return [np.asarray(x)[:VALIDATION_LIMIT] for x in xs]


class Scorer:
    """The measure of a model on fixed validation inputs against the float graph."""

    def __init__(self, g, xs, metric):
        self.xs = xs
        self.metric = metric
        ref = reference.run(g, xs)
        self.ref = [np.asarray(r, np.float64) for r in ref]

    def __call__(self, qm):
        out = qm.predict(self.xs if len(self.xs) > 1 else self.xs[0])
        outs = out if isinstance(out, list) else [out]
        if self.metric == "sqnr":
            return sqnr_db(np.concatenate([r.ravel() for r in self.ref]),
                           np.concatenate([np.asarray(o, np.float64).ravel() for o in outs]))
        r, o = self.ref[0], np.asarray(outs[0])
        return float(np.mean(r.reshape(len(r), -1).argmax(-1) == o.reshape(len(o), -1).argmax(-1)))


def candidate_layers(g, qm):
    """Layers (Keras names, in graph order) with int16 kernels that run int8 in ``qm``."""
    kept = {name for name, _ in getattr(qm, "kept_int8", ())}   # int16 cannot be proven safe
    int8_layers = {s.layer for s in qm.steps if s.bits == 8} - kept
    out = []
    for n in g.nodes:
        name = n.layer or n.name
        if n.op in INT16_OPS and name in int8_layers and name not in out:
            out.append(name)
    return out


def with_int16(config, layers):
    return config.with_overrides({exact_pattern(name): {"activations": "int16"} for name in layers})


def int16_gains(cal, config, names, score):
    """[(layer, measure with only that layer moved to int16)] for each layer in ``names``."""
    return [(name, score(cal.build(with_int16(config, [name])))) for name in names]


def try_range_methods(cal, config, names, score, start, goal, metric):
    """(config, measure, model or None, {layer: method}): for each layer of ``names`` in turn,
    the range method of its output that raises the measure most over ``start`` (by more than
    METHOD_MIN_GAIN), kept before the next layer is tried; stops once ``goal`` is met."""
    changed, best_qm, best = {}, None, start
    for name in names:
        current = config.layer_value("method", name)
        pick = None
        for method in RANGE_METHODS:
            if method == current:
                continue
            trial = config.with_overrides({exact_pattern(name): {"method": method}})
            m = cal.build(trial)
            s = score(m)
            if s > best + METHOD_MIN_GAIN[metric] and (pick is None or s > pick[1]):
                pick = (trial, s, m, method)
        if pick is not None:
            config, best, best_qm, changed[name] = pick
            if best >= goal:
                break
    return config, best, best_qm, changed


def predicted_time(qm_before, qm_after):
    """Time of ``qm_after`` relative to ``qm_before`` from MACs per kernel type (a step
    without MACs counts its output values / 8: memory-bound steps are cheap per value)."""
    from ..cost import step_macs

    def cost(qm):
        shapes = qm.shapes_for(())
        total = 0.0
        for s in qm.steps:
            if s.alias:
                continue
            out = shapes[s.outputs[0]]
            macs = step_macs(s, out, shapes[s.inputs[0]] if s.inputs else None)
            work = macs if macs else float(np.prod(out)) / 8.0
            if s.bits == 16:
                work *= INT16_TIME_FACTOR.get(s.op, INT16_TIME_FACTOR_OTHER)
            total += work
        return total

    return cost(qm_after) / max(cost(qm_before), 1e-9)


def measured_ms(qm, xs, rounds=20):
    """Median batch-1 predict time in ms on the first validation sample, after one untimed
    call. (fixnet.cli.measure.time_calls is the same loop; importing the cli package from
    here would close an import cycle through fixnet.api.)"""
    x1 = [x[:1] for x in xs]
    arg = x1 if len(x1) > 1 else x1[0]
    qm.predict(arg)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        qm.predict(arg)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def adjust_to_target(cal, config, qm, data):
    """The model meeting config's target with the fewest layers moved to int16 (see the
    module docstring); ``qm.adjustment`` records what was done."""
    g = cal.g
    metric = "sqnr" if config.target_sqnr is not None else "agreement"
    target = config.target_sqnr if metric == "sqnr" else config.target_agreement
    margin = MISS_MARGIN_DB if metric == "sqnr" else MISS_MARGIN_AGREEMENT
    xs = validation_inputs(data, g)
    score = Scorer(g, xs, metric)
    before = score(qm)
    candidates = candidate_layers(g, qm)
    qm_all = cal.build(with_int16(config, candidates)) if candidates else qm
    # a layer whose int16 inputs break its int32 proof stays int8 even when asked (kept_int8):
    # no candidate, so the ranking builds no model for it
    kept = {name for name, _ in qm_all.kept_int8} if candidates else set()
    candidates = [name for name in candidates if name not in kept]
    all16 = score(qm_all) if candidates else before
    result = Adjustment(metric, target, before, before, all16, before >= target, [],
                        candidates=len(candidates))
    chosen, best, best_score, base = [], qm, before, config
    if before < target and candidates:
        goal = target if all16 >= target else all16 - margin
        gains = int16_gains(cal, config, candidates, score)
        result.gains = sorted(gains, key=lambda kv: -kv[1])
        order = [name for name, _ in result.gains]
        # the cheaper remedy first: range methods, no run-time cost
        base, s, m, result.range_methods = try_range_methods(
            cal, config, order[:METHOD_TRIALS], score, before, target, metric)
        if result.range_methods:
            best, best_score = m, s
        if best_score < target:
            # the kept range methods under int16 too, unless all-int16 is better without them
            if result.range_methods:
                m_all = cal.build(with_int16(base, order))
                s_all = score(m_all)
                if s_all >= all16:
                    all16, qm_all = s_all, m_all
                    result.all_int16 = s_all
                    goal = target if all16 >= target else all16 - margin
                else:
                    base, result.range_methods = config, {}
            # the prefix of length hi meets the goal (all-int16)
            lo, hi = 1, len(order)
            found = {len(order): (qm_all, all16)}
            while lo < hi:
                mid = (lo + hi) // 2
                m = cal.build(with_int16(base, order[:mid]))
                s = score(m)
                if s >= goal:
                    hi = mid
                    found[mid] = (m, s)
                else:
                    lo = mid + 1
            best, best_score = found[hi]
            chosen = order[:hi]
        result.reached = best_score >= target
    result.after = best_score
    # the layers that run int16 in the result (a proof that fails there keeps a layer int8)
    int16_now = {s.layer for s in best.steps if s.bits == 16 and s.op != "rescale"}
    result.int16_layers = [name for name in chosen if name in int16_now]
    result.predicted_time = predicted_time(qm, best)
    result.measured_ms = {"configured": measured_ms(qm, xs), "result": measured_ms(best, xs),
                          "all_int16": measured_ms(qm_all, xs)}
    result.arena_bytes = {name: m.memory_plan(1).peak_bytes if not m.length_symbols else None
                          for name, m in (("configured", qm), ("result", best), ("all_int16", qm_all))}
    best.config = with_int16(base, chosen) if chosen else base
    best.adjustment = result
    return best

"""Data-free quantization: activation ranges derived from the model itself, without samples.

Every tensor gets per-element statistics (mean, variance, and hard bounds lo <= x <= hi),
propagated through the graph from the input's:

- the input: uniform over ``input_range=(lo, hi)`` if given; else what a Rescaling layer at the
  input implies (it maps [0, (1 - offset) / scale] onto [offset, 1]: [0, 255] for 1/255 or for
  1/127.5 - 1); else the mean and variance of a Normalization layer at the input; else a
  CalibrationError asking for ``input_range``.
- dense and convolutions: mean through the layer exactly (W E[x] + b); the variance between
  the independent-inputs value (sum W^2 Var[x]) and the fully correlated bound
  ((sum |W| sd[x])^2), see propagate; bounds by interval arithmetic. Where a
  BatchNormalization was folded into the layer and the loader recorded its moving statistics,
  they replace the propagated mean and variance of the output: they are the measured statistics
  of exactly that tensor on the training data (this is what makes data-free quantization work on
  BN networks).
- elementwise functions and fused clamps: mean and variance of f(X) for a Gaussian X by
  Gauss-Hermite quadrature; bounds through f.
- adds, multiplies, maximum/minimum: moment rules for independent inputs (Clark's formulas for
  the maximum); data moves, padding, pooling and concatenation act on the statistics as on data.

A tensor's range is then the union over its elements of mean -/+ K_SIGMA standard deviations,
cut to its bounds (and widened to hold 0.0, as every range is). K_SIGMA = 5 rather than the
Gaussian MSE optimum (about 4 at 8 bits): activations after ReLU have heavier tails than the
Gaussian model, and a clipped winning logit costs more than a coarser grid.
"""
import copy
import math
import warnings

import numpy as np

from .. import layouts
from ..errors import CalibrationError
from ..ops import op_for
from ..ops.activation import activation_function

K_SIGMA = 5.0
_HERMITE = np.polynomial.hermite.hermgauss(32)
CODE_MOVING = ("reshape", "identity")


class DataFreeWarning(UserWarning):
    """quantize() ran without calibration data."""


class Stats:
    """Per-element statistics of one tensor (arrays of its shape, without batch): mean and
    variance, hard bounds lo <= x <= hi, and optionally the likely interval [r_lo, r_hi] when
    it is not mean -/+ k sd (after a clamp or another nonlinearity: the interval then is the
    function of its input's likely interval, not of its own, skewed, moments)."""

    __slots__ = ("mean", "var", "lo", "hi", "r_lo", "r_hi")

    def __init__(self, mean, var, lo=None, hi=None, r_lo=None, r_hi=None):
        self.mean = np.asarray(mean, np.float64)
        self.var = np.maximum(np.broadcast_to(np.asarray(var, np.float64), self.mean.shape), 0.0)
        self.lo = np.broadcast_to(-np.inf if lo is None else np.asarray(lo, np.float64), self.mean.shape)
        self.hi = np.broadcast_to(np.inf if hi is None else np.asarray(hi, np.float64), self.mean.shape)
        self.r_lo, self.r_hi = r_lo, r_hi

    def likely(self, k):
        """Per-element interval the values fall in, bar outliers: [r_lo, r_hi] if set, else
        mean -/+ k sd; within the hard bounds."""
        if self.r_lo is not None:
            lo, hi = self.r_lo, self.r_hi
        else:
            sd = np.sqrt(self.var)
            lo, hi = self.mean - k * sd, self.mean + k * sd
        return np.clip(lo, self.lo, self.hi), np.clip(hi, self.lo, self.hi)

    def range(self, k):
        lo, hi = self.likely(k)
        return float(np.min(lo)), float(np.max(hi))


# --------------------------------------------------------------------------- the input
def _uniform(lo, hi, shape):
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise CalibrationError(f"input_range ({lo}, {hi}) is not a finite (low, high) pair")
    return Stats(np.full(shape, (lo + hi) / 2), np.full(shape, (hi - lo) ** 2 / 12.0), lo, hi)


def _first_reader(graph, tensor):
    """The first node that reads ``tensor`` by value, looking through reshapes."""
    users = graph.consumers()
    while True:
        nodes = users.get(tensor, [])
        if len(nodes) != 1:
            return None
        n = nodes[0]
        if n.op in CODE_MOVING:
            tensor = n.outputs[0]
            continue
        return n


def input_statistics(graph, input_range=None):
    """{input tensor: Stats} from ``input_range`` or the layer at the input (see module doc).
    ``graph`` is the graph as loaded (before BatchNorm folding)."""
    shapes = [graph.shapes[t] for t in graph.inputs]
    if input_range is not None:
        ranges = list(input_range)
        if all(np.ndim(r) == 1 and len(r) == 2 for r in ranges):
            pairs = ranges                                  # one pair per input
        elif len(ranges) == 2 and all(np.ndim(r) == 0 for r in ranges):
            pairs = [ranges] * len(graph.inputs)            # one pair for every input
        else:
            pairs = []
        if len(pairs) != len(graph.inputs):
            raise CalibrationError(f"input_range: pass a (low, high) pair, or one per input (the "
                                   f"model has {len(graph.inputs)}), got {input_range!r}")
        return {t: _uniform(lo, hi, s) for t, s, (lo, hi) in zip(graph.inputs, shapes, pairs)}
    out = {}
    for t, s in zip(graph.inputs, shapes):
        n = _first_reader(graph, t)
        st = _stats_from_input_layer(n, s)
        if st is None:
            raise CalibrationError(
                f"data-free quantization needs the range of input '{t}': the model does not start "
                "with a Rescaling or Normalization layer, so pass "
                "input_range=(low, high) in the units the model is fed (e.g. (0.0, 1.0) for "
                "images scaled to [0, 1]), or better, calibration data: quantize(x_calib)")
        out[t] = st
    return out


def _stats_from_input_layer(n, shape):
    """Stats of a model input of ``shape`` implied by the layer ``n`` that reads it (perhaps
    behind reshapes), or None."""
    if n is None or n.op != "affine":
        return None
    scale = np.asarray(n.weights["scale"], np.float64)
    offset = np.asarray(n.weights["offset"], np.float64)
    if n.keras_class == "Rescaling":
        with np.errstate(divide="ignore", invalid="ignore"):
            hi = (1.0 - offset) / scale
        if not np.all(np.isfinite(hi)):
            return None
        return _uniform(min(0.0, float(hi.min())), max(0.0, float(hi.max())), shape)
    if n.keras_class != "Normalization" or not np.all(scale > 0):
        return None
    std = 1.0 / scale
    mean = -offset * std
    # per channel of the reader's input; the reader may sit behind a reshape (Flatten ->
    # BatchNormalization), whose input has as many elements
    size = int(np.prod(shape))
    if size % mean.size:
        return None
    reps = size // mean.size
    return Stats(np.tile(mean, reps).reshape(shape), np.tile(std ** 2, reps).reshape(shape))


# --------------------------------------------------------------------------- propagation
def _gauss_moments(f, st):
    """Mean and variance of f(X), X ~ N(mean, var) elementwise (Gauss-Hermite quadrature)."""
    t, w = _HERMITE
    sd = np.sqrt(st.var)
    pts = st.mean[None] + math.sqrt(2.0) * sd[None] * t.reshape((-1,) + (1,) * st.mean.ndim)
    pts = np.clip(pts, st.lo[None], st.hi[None])
    y = f(pts)
    wn = (w / math.sqrt(math.pi)).reshape((-1,) + (1,) * st.mean.ndim)
    m = np.sum(wn * y, axis=0)
    return m, np.maximum(np.sum(wn * y * y, axis=0) - m * m, 0.0)


def _bounds_through(f, lo, hi, monotone=False, n=65):
    """Elementwise [min, max] of f over [lo, hi]: from the ends for a nondecreasing f, else
    sampled at n points (the non-monotone activations, swish, gelu, mish, have one minimum)."""
    lo_f = np.where(np.isfinite(lo), lo, -1e6)
    hi_f = np.where(np.isfinite(hi), hi, 1e6)
    with np.errstate(over="ignore", invalid="ignore"):
        if monotone:
            return f(lo_f), f(hi_f)
        s = np.linspace(0.0, 1.0, n).reshape((-1,) + (1,) * np.ndim(lo))
        y = f(lo_f[None] + s * (hi_f - lo_f)[None])
    return y.min(axis=0), y.max(axis=0)


def _apply(f, st, k, monotone=False):
    """Stats of f(x) for an elementwise f."""
    with np.errstate(over="ignore", invalid="ignore"):
        m, v = _gauss_moments(f, st)
    lo, hi = _bounds_through(f, st.lo, st.hi, monotone)
    r_lo, r_hi = _bounds_through(f, *st.likely(k), monotone)
    return Stats(m, v, lo, hi, r_lo, r_hi)


def _clamp(st, clamp, k):
    lo = -np.inf if clamp[0] is None else clamp[0]
    hi = np.inf if clamp[1] is None else clamp[1]
    return _apply(lambda x: np.clip(x, lo, hi), st, k, monotone=True)


def _run(node, arrays):
    """The node's float op on per-element arrays (one batch row each)."""
    return op_for(node).run_float(node, [a[None] for a in arrays])[0][0]


def _linear(node, st, output_stats=None, variance_model="geometric"):
    """dense/conv statistics before the clamp. The output variance lies between the
    independent-inputs value and the fully-correlated bound; ``variance_model`` picks one of
    them or (``geometric``) their geometric mean."""
    plain = copy.copy(node)
    plain.attrs = dict(node.attrs, clamp=None)
    mean = _run(plain, [st.mean])
    k = np.asarray(node.weights["kernel"], np.float64)
    sq = copy.copy(plain)
    sq.weights = {"kernel": k * k}
    var_indep = _run(sq, [st.var])                  # uncorrelated inputs: a lower estimate
    ab = copy.copy(plain)
    ab.weights = {"kernel": np.abs(k)}
    sd_corr = _run(ab, [np.sqrt(st.var)])           # sd of a sum <= sum of sds: an upper bound
    if variance_model == "independent":
        var = var_indep
    elif variance_model == "correlated":
        var = sd_corr ** 2
    else:
        var = np.sqrt(var_indep) * sd_corr
    # bounds: positive weights take the input's hi, negative ones its lo
    lo_in = np.where(np.isfinite(st.lo), st.lo, -1e30)
    hi_in = np.where(np.isfinite(st.hi), st.hi, 1e30)
    pos, neg = copy.copy(plain), copy.copy(plain)
    pos.weights = {"kernel": np.maximum(k, 0.0)}
    neg.weights = {"kernel": np.minimum(k, 0.0)}
    bias = np.asarray(node.weights.get("bias", 0.0), np.float64)
    hi = _run(pos, [hi_in]) + _run(neg, [lo_in]) + bias
    lo = _run(pos, [lo_in]) + _run(neg, [hi_in]) + bias
    lo = np.where(np.abs(lo) > 1e20, -np.inf, lo)
    hi = np.where(np.abs(hi) > 1e20, np.inf, hi)
    if output_stats is not None:
        m_c, v_c = output_stats
        mean = np.broadcast_to(np.asarray(m_c, np.float64), mean.shape)
        var = np.broadcast_to(np.asarray(v_c, np.float64), mean.shape)
    return Stats(mean, var, lo, hi)


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _Phi(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _binary(kind, a, b):
    if kind in ("add", "subtract", "average"):
        sign = -1.0 if kind == "subtract" else 1.0
        k = 0.5 if kind == "average" else 1.0
        m = k * (a.mean + sign * b.mean)
        v = k * k * (a.var + b.var)
        if kind == "subtract":
            lo, hi = a.lo - b.hi, a.hi - b.lo
        else:
            lo, hi = k * (a.lo + b.lo), k * (a.hi + b.hi)
        return Stats(m, v, lo, hi)
    if kind == "multiply":
        m = a.mean * b.mean
        v = a.var * b.var + a.var * b.mean ** 2 + b.var * a.mean ** 2
        f = [np.clip(x, -1e30, 1e30) for x in (a.lo, a.hi, b.lo, b.hi)]
        with np.errstate(over="ignore"):
            c = np.stack([f[0] * f[2], f[0] * f[3], f[1] * f[2], f[1] * f[3]])
        lo, hi = c.min(0), c.max(0)
        return Stats(m, v, np.where(lo < -1e29, -np.inf, lo), np.where(hi > 1e29, np.inf, hi))
    # maximum / minimum of independent Gaussians (Clark, 1961)
    s = -1.0 if kind == "minimum" else 1.0
    m1, m2 = s * a.mean, s * b.mean
    theta = np.sqrt(np.maximum(a.var + b.var, 1e-30))
    al = (m1 - m2) / theta
    e1 = m1 * _Phi(al) + m2 * _Phi(-al) + theta * _phi(al)
    e2 = ((m1 ** 2 + a.var) * _Phi(al) + (m2 ** 2 + b.var) * _Phi(-al)
          + (m1 + m2) * theta * _phi(al))
    if kind == "minimum":
        return Stats(-e1, e2 - e1 ** 2, np.minimum(a.lo, b.lo), np.minimum(a.hi, b.hi))
    return Stats(e1, e2 - e1 ** 2, np.maximum(a.lo, b.lo), np.maximum(a.hi, b.hi))


def _generic(node, ins, k):
    """Ops that move or average data: act on means, variances, bounds and likely intervals
    alike."""
    fields = [[s.mean for s in ins], [s.var for s in ins], [s.lo for s in ins], [s.hi for s in ins],
              [s.likely(k)[0] for s in ins], [s.likely(k)[1] for s in ins]]
    outs = []
    for i, arrays in enumerate(fields):
        arrays = [np.asarray(a, np.float64) for a in arrays]
        if i >= 2:
            arrays = [np.clip(a, -1e30, 1e30) for a in arrays]
        outs.append(_run(node, arrays))
    m, v, lo, hi, r_lo, r_hi = outs
    return Stats(m, v, np.where(lo < -1e29, -np.inf, lo), np.where(hi > 1e29, np.inf, hi), r_lo, r_hi)


def has_batchnorm_statistics(g):
    """Whether the graph carries BatchNormalization moving statistics (folded or not)."""
    return any(k in n.attrs for n in g.nodes for k in ("output_stats", "input_stats", "input_mean"))


def propagate(g, inputs, k=None, variance_model=None):
    """{tensor: Stats} for every tensor of the optimized graph ``g``, from the inputs' Stats.

    variance_model: how a dense/conv output's variance is estimated from its input's (see
    _linear). By default "geometric" when the graph carries BatchNormalization statistics: real
    inputs are correlated (neighbouring pixels, features of one class), so the independent
    estimate is too small, and every BatchNormalization resets the estimate so that a too large
    one does not compound; "independent" otherwise, the estimate that does not grow with depth.
    """
    k = K_SIGMA if k is None else k
    if variance_model is None:
        variance_model = "geometric" if has_batchnorm_statistics(g) else "independent"
    stats = dict(inputs)
    for n in g.nodes:
        ins = [stats[t] for t in n.inputs]
        clamp = n.attrs.get("clamp")
        if n.op in layouts.KERNEL_OPS:
            x = ins[0]
            if "input_stats" in n.attrs:                   # a BatchNormalization folded in before
                m_c, v_c = n.attrs["input_stats"]
                x = Stats(np.broadcast_to(m_c, x.mean.shape), np.broadcast_to(v_c, x.mean.shape),
                          x.lo, x.hi)
            out = _linear(n, x, n.attrs.get("output_stats"), variance_model)
            out = _clamp(out, clamp, k) if clamp is not None else out
        elif n.op == "affine":
            s, o = n.weights["scale"], n.weights["offset"]
            x = ins[0]
            if "input_mean" in n.attrs and "input_var" in n.attrs:     # BatchNormalization
                x = Stats(np.broadcast_to(n.attrs["input_mean"], x.mean.shape),
                          np.broadcast_to(n.attrs["input_var"], x.mean.shape), x.lo, x.hi)
            lo = np.where(s >= 0, x.lo * s, x.hi * s) + o
            hi = np.where(s >= 0, x.hi * s, x.lo * s) + o
            out = Stats(x.mean * s + o, x.var * s * s, np.nan_to_num(lo, nan=-np.inf),
                        np.nan_to_num(hi, nan=np.inf))
            out = _clamp(out, clamp, k) if clamp is not None else out
        elif n.op == "activation":
            f, clamp = activation_function(n.attrs)
            out = _clamp(ins[0], clamp, k) if clamp is not None else _apply(f, ins[0], k)
        elif n.op == "prelu":
            alpha = np.broadcast_to(n.weights["alpha"], ins[0].mean.shape)
            out = _apply(lambda y: np.where(y >= 0, y, alpha * y), ins[0], k)
        elif n.op == "softmax":
            m = ins[0].mean
            e = np.exp(m - m.max(axis=-1, keepdims=True))
            out = Stats(e / e.sum(axis=-1, keepdims=True), 0.0, 0.0, 1.0)
        elif n.op == "binary":
            out = _binary(n.attrs["kind"], *ins)
            out = _clamp(out, clamp, k) if clamp is not None else out
        elif hasattr(op_for(n), "run_float_observed"):
            for t, st in zip(n.outputs, _sampled(n, ins, k, stats)):
                stats[t] = st
            continue
        else:
            out = _generic(n, ins, k)
        for t in n.outputs:
            stats[t] = out
    return stats


def datafree_statistics(original, g, input_range=None, k=None):
    """Stats of every tensor of ``g`` (the optimized form of ``original``), warning that a
    calibration set usually does better."""
    inputs = input_statistics(original, input_range)
    warnings.warn("quantize() without calibration data: activation ranges are derived from the "
                  "model (BatchNormalization statistics, the input range) instead of measured; "
                  "a few hundred representative inputs, quantize(x_calib), usually give a more "
                  "accurate int8 model", DataFreeWarning, stacklevel=4)
    return propagate(g, inputs, k)


def datafree_ranges(stats, k=None):
    """{tensor: (lo, hi)}: mean -/+ k (default K_SIGMA) standard deviations, within bounds."""
    k = K_SIGMA if k is None else k
    return {t: st.range(k) for t, st in stats.items()}


INTERNAL_SAMPLES = 256


def _sampled(n, ins, k, stats, seed=0):
    """Stats of the outputs of ``n`` (an op with run_float_observed: a recurrent layer) from a
    run on INTERNAL_SAMPLES inputs drawn from its inputs' statistics (Gaussian per element,
    within their likely intervals); the values the op shows inside (its gates and states)
    are added to ``stats`` as "<node>/<name>" (scalar Stats: their mean, spread and min/max),
    so datafree_ranges gives them ranges as calibration would."""
    rng = np.random.default_rng(seed)
    xs = []
    for st in ins:
        lo, hi = st.likely(k)
        sd = np.sqrt(st.var)
        v = st.mean + sd * rng.standard_normal((INTERNAL_SAMPLES,) + st.mean.shape)
        xs.append(np.clip(v, lo, hi))
    seen = {}

    def show(name, v):
        seen.setdefault(name, []).append(np.asarray(v, np.float64).ravel())
    outs = op_for(n).run_float_observed(n, xs, show)
    for name, parts in seen.items():
        if name.endswith("/xh"):
            continue
        v = np.concatenate(parts)
        stats[name] = Stats(v.mean(), v.var(), v.min(), v.max())
    return [Stats(o.mean(axis=0), o.var(axis=0), o.min(axis=0), o.max(axis=0)) for o in outs]

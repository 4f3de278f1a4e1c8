"""Calibration methods: from a tensor's histogram (fixnet.quant.histogram) to the range [lo, hi]
its int8 codes cover (always lo <= 0 <= hi, as the numeric contract wants).

- ``minmax``: the smallest and largest value seen. Nothing is clipped; a single outlier
  stretches the grid for every other value.
- ``percentile``: the ``100 - p`` and ``p`` percentiles (p = 99.99 by default): a fixed share of
  values is clipped on each side.
- ``mse``: the range minimising the expected squared error of int8 quantization, estimated from
  the histogram: values inside the range get rounding noise step^2 / 12 (step = (hi - lo) / 255;
  exact zeros get none, 0.0 is a code), values outside it get clipped to its edge.
- ``entropy``: TensorRT's KL-divergence calibration: the threshold whose 8-bit quantized
  histogram is closest (KL) to the clipped reference histogram; on |x| with 128 levels for
  tensors of both signs (giving [-t, t] cut to the observed [min, max]), on x with 256 levels
  for one-sided ones.

- ``auto``: per tensor, the ranges of the four methods above are scored by
  ``quantization_mse`` and the widest range whose score is within AUTO_TOLERANCE (10%, 0.4 dB)
  of the best is taken. Reasoning: the four ranges trade clipping against rounding in different
  ways, and the histogram MSE is only an estimate of what the error costs downstream: rounding
  noise is independent from value to value and averages out in the next layer's sums, while
  clipping removes exactly the large activations that often carry the decision. So among ranges
  the estimate cannot tell apart, the one that clips least.

``quantization_mse(hist, lo, hi)`` is the estimate ``mse`` minimises, exposed so that methods
can be compared on it.
"""
import numpy as np

INT8_LEVELS = 255          # steps between the lowest and the highest int8 code
METHODS = ("minmax", "percentile", "mse", "entropy", "auto")
AUTO_TOLERANCE = 0.10
DEFAULT_PERCENTILE = 99.99


def _cumulative(hist):
    """Left edges, right edges, counts, and prefix sums of n, n*c, n*(c^2 + w^2/12)."""
    left, right, n = hist.bins()
    c = 0.5 * (left + right)
    w2 = (right - left) ** 2 / 12.0
    return left, right, n, c, w2


def quantization_mse(hist, lo, hi):
    """Estimated mean squared error of quantizing the histogrammed values to int8 over [lo, hi]:
    rounding noise step^2/12 for the (nonzero) values inside, squared distance to the nearest
    edge for values outside (each bin's mass spread evenly over the bin)."""
    if hist.total == 0:
        return 0.0
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    left, right, n, _, _ = _cumulative(hist)
    step = (hi - lo) / INT8_LEVELS
    err = 0.0
    # split each bin into the parts below lo, inside, and above hi (uniform density in the bin)
    width = np.maximum(right - left, 1e-300)
    below = np.clip((np.minimum(right, lo) - left) / width, 0.0, 1.0)
    above = np.clip((right - np.maximum(left, hi)) / width, 0.0, 1.0)
    inside = 1.0 - below - above
    err += step * step / 12.0 * float(np.sum(n * inside))
    # clipped mass: E[(x - edge)^2] over the clipped part of each bin
    a_lo, b_lo = left, np.minimum(right, lo)
    m = b_lo > a_lo
    if np.any(m):
        d1, d2 = a_lo[m] - lo, b_lo[m] - lo
        err += float(np.sum(n[m] / width[m] * (d2 ** 3 - d1 ** 3) / 3.0))
    a_hi, b_hi = np.maximum(left, hi), right
    m = b_hi > a_hi
    if np.any(m):
        d1, d2 = a_hi[m] - hi, b_hi[m] - hi
        err += float(np.sum(n[m] / width[m] * (d2 ** 3 - d1 ** 3) / 3.0))
    return err / hist.total


def minmax_range(hist):
    return min(hist.min, 0.0), max(hist.max, 0.0)


def _quantile(hist, q):
    """The q-quantile (0 <= q <= 1) of the histogrammed values, linear within a bin, zeros
    counted as a point mass at 0.0."""
    left, right, n = hist.bins()
    # insert the zeros as a bin of zero width at 0.0, keeping the bins sorted
    k = int(np.searchsorted(left, 0.0))
    left = np.insert(left, k, 0.0)
    right = np.insert(right, k, 0.0)
    n = np.insert(n, k, float(hist.zeros))
    # the outermost bins end at the exact min and max, not at the grid's edges
    if left.size:
        left[0] = max(left[0], hist.min)
        right[-1] = min(right[-1], hist.max)
    cum = np.cumsum(n)
    target = q * cum[-1]
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, n.size - 1)
    before = cum[i] - n[i]
    frac = 0.0 if n[i] == 0 else (target - before) / n[i]
    return float(left[i] + np.clip(frac, 0.0, 1.0) * (right[i] - left[i]))


def percentile_range(hist, percentile=DEFAULT_PERCENTILE):
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    if hist.exp is None:
        return minmax_range(hist)
    p = percentile / 100.0
    lo, hi = _quantile(hist, 1.0 - p), _quantile(hist, p)
    return min(lo, 0.0), max(hi, 0.0)


def mse_range(hist, max_candidates=1024):
    """The [lo, hi] (lo, hi on bin edges, within [min, max]) of least ``quantization_mse``.

    Computed for all candidate pairs at once from prefix sums: with the bins beyond [lo, hi]
    clipped whole, the error is step^2/12 * inside mass + sum over clipped bins of
    n * ((c - edge)^2 + w^2/12).
    """
    if hist.exp is None:
        return minmax_range(hist)
    left, right, n, c, w2 = _cumulative(hist)
    edges = np.concatenate([left, right[-1:]])
    lo_c = edges[edges <= 0.0]
    hi_c = edges[edges >= 0.0]
    lo_c = np.unique(np.concatenate([lo_c[lo_c > hist.min], [min(hist.min, 0.0)]]))
    hi_c = np.unique(np.concatenate([hi_c[hi_c < hist.max], [max(hist.max, 0.0)]]))
    if lo_c.size > max_candidates:       # keep the exact extremes, thin the rest evenly
        lo_c = np.unique(np.concatenate([lo_c[np.linspace(0, lo_c.size - 1, max_candidates).astype(int)]]))
    if hi_c.size > max_candidates:
        hi_c = np.unique(np.concatenate([hi_c[np.linspace(0, hi_c.size - 1, max_candidates).astype(int)]]))
    # clipping error above hi: bins with c > hi (bins entirely above hi when hi is an edge)
    m2 = n * (c * c + w2)
    m1 = n * c
    # suffix sums over bins whose left edge >= hi
    suf0 = np.concatenate([np.cumsum(n[::-1])[::-1], [0.0]])
    suf1 = np.concatenate([np.cumsum(m1[::-1])[::-1], [0.0]])
    suf2 = np.concatenate([np.cumsum(m2[::-1])[::-1], [0.0]])
    ih = np.searchsorted(left, hi_c, side="left")          # first bin entirely above hi
    clip_hi = suf2[ih] - 2 * hi_c * suf1[ih] + hi_c * hi_c * suf0[ih]
    mass_hi = suf0[ih]
    # prefix sums over bins whose right edge <= lo
    pre0 = np.concatenate([[0.0], np.cumsum(n)])
    pre1 = np.concatenate([[0.0], np.cumsum(m1)])
    pre2 = np.concatenate([[0.0], np.cumsum(m2)])
    il = np.searchsorted(right, lo_c, side="right")        # bins [0, il) entirely below lo
    clip_lo = pre2[il] - 2 * lo_c * pre1[il] + lo_c * lo_c * pre0[il]
    mass_lo = pre0[il]
    nonzero = float(n.sum())
    step = (hi_c[None, :] - lo_c[:, None]) / INT8_LEVELS
    inside = nonzero - mass_lo[:, None] - mass_hi[None, :]
    err = step * step / 12.0 * inside + clip_lo[:, None] + clip_hi[None, :]
    err = np.where(step > 0, err, np.inf)
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    if not np.isfinite(err[i, j]):
        return minmax_range(hist)
    return float(lo_c[i]), float(hi_c[j])


def _kl_threshold(counts, levels, stride):
    """TensorRT's entropy calibration on a histogram of |x| (or of x >= 0) whose bin i is
    [i*w, (i+1)*w): the number of bins to keep (>= levels) whose ``levels``-level quantization
    diverges least (KL) from the reference with the clipped tail folded into its last bin."""
    nb = counts.size
    if nb <= levels:
        return nb
    best, best_kl = nb, np.inf
    candidates = list(range(levels, nb + 1, stride))
    if candidates[-1] != nb:
        candidates.append(nb)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    for i in candidates:
        p = counts[:i].astype(np.float64).copy()
        p[-1] += tail[i]
        if p.sum() == 0:
            continue
        # quantize the i reference bins to `levels` groups, spreading each group's mass over its
        # nonzero bins (as TensorRT does)
        group = (np.arange(i) * levels) // i
        nonzero = (counts[:i] > 0).astype(np.float64)
        gsum = np.bincount(group, weights=counts[:i], minlength=levels)
        gcnt = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero > 0, gsum[group] / np.maximum(gcnt[group], 1.0), 0.0)
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-300)
        m = ps > 0
        kl = np.sum(ps[m] * np.log(ps[m] / np.maximum(qs[m], 1e-12)))   # smoothed where q = 0
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def entropy_range(hist, stride=None):
    if hist.exp is None:
        return minmax_range(hist)
    left, right, n = hist.bins()
    w = hist.width
    j = np.round(left / w).astype(np.int64)            # bin indices
    two_sided = hist.min < 0.0 and hist.max > 0.0
    idx = np.where(j >= 0, j, -j - 1)                 # bin of |x| (one-sided: of x or -x)
    # exact zeros (ReLU's spike) are left out, as TensorRT-style calibrators flatten the zero bin:
    # they are exact in any range and would otherwise dominate the divergence
    counts = np.bincount(idx, weights=n)
    levels = 128 if two_sided else 256
    if stride is None:
        stride = max(1, (counts.size - levels) // 256)
    t = _kl_threshold(counts, levels, stride) * w
    if two_sided:
        return max(hist.min, -t), min(hist.max, t)
    if hist.max > 0.0:
        return 0.0, min(hist.max, t)
    return max(hist.min, -t), 0.0


def auto_range(hist, percentile=DEFAULT_PERCENTILE, tolerance=AUTO_TOLERANCE):
    """The widest of the minmax/percentile/mse/entropy ranges whose estimated quantization MSE
    is within ``tolerance`` (relative) of the smallest of them."""
    cands = [choose_range(hist, m, percentile) for m in METHODS if m != "auto"]
    errs = [quantization_mse(hist, lo, hi) for lo, hi in cands]
    best = min(errs)
    ok = [c for c, e in zip(cands, errs) if e <= best * (1.0 + tolerance)]
    return max(ok, key=lambda c: c[1] - c[0])


def choose_range(hist, method, percentile=DEFAULT_PERCENTILE):
    """[lo, hi] of one tensor by ``method`` (one of METHODS)."""
    if hist.total == 0:
        return 0.0, 0.0
    if method == "minmax":
        return minmax_range(hist)
    if method == "percentile":
        return percentile_range(hist, percentile)
    if method == "mse":
        return mse_range(hist)
    if method == "entropy":
        return entropy_range(hist)
    if method == "auto":
        return auto_range(hist, percentile)
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")

"""Weights with fewer levels than int8, still as int8 codes: 16-level k-means codebooks and
uniform int4.

Both give int8 codes in [-126, 126] at a per-channel (or per-layer) scale, so the kernels,
the oracle and the overflow proof see ordinary int8 weights; they differ from int8 weights
only in how many distinct codes a layer (or a channel) uses: at most 16, which the .fxn file
stores as 4-bit indices into a table of int8 codes (fixnet/fxn/palette.py).

- **int4** (uniform, symmetric): scale4 = max|w| / 7, codes4 = round(w / scale4) in [-7, 7]
  (never -8, as int8 weights never use -128). Exactly as int8: code = 18 * code4 at the int8
  scale scale4 / 18 = max|w| / 126 (18 * 7 = 126 <= 127), so code * scale = code4 * scale4.
- **codebooks**: 16 levels fitted to the weights by k-means (Lloyd's algorithm in one
  dimension), each level an int8 code of the grid max|w| / 126, for one row (an output
  channel) or shared by the rows of a layer (the weights in units of each row's scale).
  The grid is int4's (126 = 7 * 18), so int4's 15 levels are one of the codebooks the search
  may return: it starts from them, and from the weights' quantiles and an even spread between
  their extremes, and keeps the result of least squared error. Lloyd's steps never increase
  that error (a cluster's mean is rounded to the nearest code, which minimises its error among
  codes), so a codebook never does worse than int4 on the values it was fitted to, in units
  of the grid. Deterministic: no random initialisation, a fixed number of iterations.

Pure NumPy on arrays in units of the int8 grid (weights divided by their scale); it knows
nothing of layers. fixnet.quant.qparams applies these to a layer (nearest levels), and
fixnet.quant.gptq rounds to a table of levels when the quantizer rounds adaptively.
"""
import numpy as np

from ..oracle import round_half_away

LEVELS = 16                 # a codebook's levels: 4-bit indices
INT4_MAX = 7                # int4 codes in [-7, 7]
INT4_STEP = 18              # int4 code k is the int8 code 18 * k
GRID_MAX = INT4_MAX * INT4_STEP     # 126: codes of both options lie in [-126, 126]
ITERATIONS = 40             # Lloyd steps per initial codebook (most converge in fewer)


def grid_scale(absmax):
    """The int8 scale of the codebook and int4 options for largest |w| ``absmax`` (per
    channel or per layer): absmax / 126, or 1.0 where absmax is 0 (any scale holds zeros)."""
    absmax = np.asarray(absmax, np.float64)
    return np.where(absmax > 0, absmax / GRID_MAX, 1.0)


def int4_codes(u):
    """Uniform int4 weights as int8 codes: ``u`` [..] (weights in int8 steps of the grid scale,
    see grid_scale) -> 18 * round(u / 18), clipped to [-126, 126] (float64 integers)."""
    u = np.asarray(u, np.float64)
    return INT4_STEP * np.clip(round_half_away(u / INT4_STEP), -INT4_MAX, INT4_MAX)


def int4_table():
    """int4's 15 levels as int8 codes [1, 15]: 18 * k, k in [-7, 7] (a shared table)."""
    return INT4_STEP * np.arange(-INT4_MAX, INT4_MAX + 1, dtype=np.float64)[None, :]


def codebook_codes(u, shared=False, row_weight=None, keep_zero=False):
    """k-means codebook weights as int8 codes (float64 integers) [R, K] of ``u`` [R, K]: each
    value its nearest level of codebook_table's table."""
    u = np.asarray(u, np.float64)
    if u.size == 0:
        return np.zeros(u.shape)
    return nearest_levels(u, codebook_table(u, shared, row_weight, keep_zero))


def codebook_table(u, shared=False, row_weight=None, keep_zero=False, levels=LEVELS,
                   iterations=ITERATIONS):
    """The k-means codebook of ``u`` [R, K] (weights in int8 steps; clipped to [-126, 126]):
    integer levels [R, levels] ascending, one row per row of ``u``, or [1, levels] when
    ``shared`` (one codebook for every row, e.g. per layer).
    row_weight: [R] or None, how much a unit of error costs in each row (with rows at
    different scales s, s^2: the codebook then minimises the error in real units; 0: the row
    does not shape the codebook).
    keep_zero: 0 is one of the levels (zero weights stay zero)."""
    u = np.clip(np.asarray(u, np.float64), -GRID_MAX, GRID_MAX)
    weight = None if row_weight is None else np.broadcast_to(
        np.asarray(row_weight, np.float64)[:, None], u.shape)
    rows = u.reshape(1, -1) if shared else u
    h = HalfSteps(rows, None if weight is None else weight.reshape(rows.shape))
    return codebook_levels(h, levels, iterations, keep_zero)


def nearest_levels(u, table):
    """Each value of ``u`` [..., K] replaced by its nearest level of ``table`` [..., L]
    (ascending; leading axes broadcast, e.g. one shared table [1, L] for rows [R, K]; a value
    halfway between two levels takes the lower)."""
    u = np.asarray(u, np.float64)
    table = np.asarray(table, np.float64)
    mid = (table[..., 1:] + table[..., :-1]) / 2.0
    idx = np.zeros(np.broadcast_shapes(u.shape, mid.shape[:-1] + (1,)), np.int64)
    for j in range(mid.shape[-1]):         # L - 1 comparisons of the whole array, no [.., K, L]
        idx += u > mid[..., j:j + 1]
    return np.take_along_axis(np.broadcast_to(table, idx.shape[:-1] + table.shape[-1:]), idx, -1)


class HalfSteps:
    """Rows of values in [-126, 126] binned by ceil(2 v): which side of a level midpoint (an
    integer or half-integer, the levels being integers) a value lies on depends on its bin
    alone, so cluster counts, sums and squared errors come from prefix sums over the 505 bins
    of each row, exactly, whatever the row's length."""
    BINS = 4 * GRID_MAX + 1
    BINS_PLUS_ONE = BINS + 1                # a prefix row's length

    def __init__(self, rows, weight=None):
        self.rows = rows
        r = rows.shape[0]
        self.bin = (np.ceil(2.0 * rows) + 2 * GRID_MAX).astype(np.int64)          # [R, K] in [0, 504]
        at = (self.bin + self.BINS * np.arange(r)[:, None]).ravel()
        w = np.ones(rows.size) if weight is None else np.asarray(weight, np.float64).ravel()
        v = rows.ravel()
        # weighted count, sum and sum of squares of the bins < i: [R, 506]
        self.prefix = []
        for wts in (w, w * v, w * v * v):
            per_bin = np.bincount(at, wts, minlength=r * self.BINS).reshape(r, self.BINS)
            self.prefix.append(np.concatenate([np.zeros((r, 1)), np.cumsum(per_bin, axis=1)], axis=1))

    def cuts(self, table):
        """[R, L + 1]: level j of a row takes the bins cuts[j] .. cuts[j + 1] - 1 (the values
        nearest to it; a value halfway between two levels goes to the lower)."""
        mid2 = table[:, 1:] + table[:, :-1]                  # twice the midpoints: integers
        inner = np.clip(mid2 + 2 * GRID_MAX + 1, 0, self.BINS).astype(np.int64)
        r = table.shape[0]
        return np.concatenate([np.zeros((r, 1), np.int64), inner,
                               np.full((r, 1), self.BINS, np.int64)], axis=1)

    def clusters(self, table):
        """(count, sum, sum of squares) [R, L] of the values nearest to each level."""
        c = self.cuts(table) + self.BINS_PLUS_ONE * np.arange(table.shape[0])[:, None]
        return [p.ravel()[c[:, 1:]] - p.ravel()[c[:, :-1]] for p in self.prefix]

    def errors(self, table):
        """Squared error [R, L] of each level's cluster replaced by the level."""
        n, s1, s2 = self.clusters(table)
        return np.maximum(s2 - 2.0 * table * s1 + table * table * n, 0.0)


def codebook_levels(h, levels=LEVELS, iterations=ITERATIONS, keep_zero=False):
    """The codebook of each row of HalfSteps ``h``: integer levels [R, levels], ascending, the
    best (least squared error) of Lloyd's algorithm from each initial codebook
    (initial_levels; with ``keep_zero``, each holds 0, which stays)."""
    best, best_err = None, None
    for init in initial_levels(np.sort(h.rows, axis=1), levels):
        if keep_zero:           # the level nearest 0 becomes 0
            init = init.copy()
            np.put_along_axis(init, np.argmin(np.abs(init), axis=1)[:, None], 0.0, 1)
        table = lloyd(h, init, iterations, keep_zero)
        err = h.errors(table).sum(axis=1)
        if best is None:
            best, best_err = table, err
            continue
        better = err < best_err
        best = np.where(better[:, None], table, best)
        best_err = np.where(better, err, best_err)
    return best


def initial_levels(srt, levels):
    """Initial codebooks [R, levels] of sorted rows ``srt`` [R, K], all on the integer grid:
    the rows' quantiles at (j + 1/2) / levels; ``levels`` levels spread evenly from each row's
    minimum to its maximum; and for 16 levels, int4's 15 plus one at +-9 (on the side holding
    more weights between int4's first levels), so that the search starts from int4."""
    k = srt.shape[1]
    at = ((np.arange(levels) + 0.5) / levels * k).astype(np.int64)
    quantiles = round_half_away(srt[:, np.minimum(at, k - 1)])
    spread = round_half_away(srt[:, :1] + (srt[:, -1:] - srt[:, :1]) * np.linspace(0.0, 1.0, levels))
    if levels != 2 * INT4_MAX + 2:
        return quantiles, spread
    int4 = INT4_STEP * np.arange(-INT4_MAX, INT4_MAX + 1, dtype=np.float64)
    plus = ((srt > 0) & (srt < INT4_STEP)).sum(axis=1) >= ((srt < 0) & (srt > -INT4_STEP)).sum(axis=1)
    extra = np.where(plus, INT4_STEP // 2, -(INT4_STEP // 2))[:, None]
    int4 = np.concatenate([np.broadcast_to(int4, (srt.shape[0], int4.size)), extra], axis=1)
    return quantiles, spread, int4


def lloyd(h, table, iterations, keep_zero=False):
    """Lloyd's algorithm on HalfSteps ``h`` from integer levels ``table`` [R, L]: assign each
    value to its nearest level, move each level to its cluster's mean rounded to the nearest
    integer (an empty cluster keeps its level; with ``keep_zero``, a level 0 stays), and move
    a level that repeats another (a wasted level: rounding makes them) to split the cluster
    of largest error (reseed). No step increases the squared error. Stops early once no
    level moves."""
    table = np.sort(table, axis=1)
    for _ in range(iterations):
        n, s1, _ = h.clusters(table)
        mean = _ratio(s1, n)
        moved = np.where(n > 0, np.clip(round_half_away(mean), -GRID_MAX, GRID_MAX), table)
        if keep_zero:
            moved = np.where(table == 0, 0.0, moved)
        moved = reseed(h, np.sort(moved, axis=1))
        if np.array_equal(moved, table):
            break
        table = moved
    return table


def reseed(h, table):
    """``table`` [R, L] (ascending) with, in each row that repeats a level, one repeat moved
    one standard deviation from the mean of the cluster of largest squared error, on the side
    of its level that holds more of it. A repeated level holds no value, so moving it cannot
    increase the error; the next assignment splits that cluster."""
    repeat = np.diff(table, axis=1) == 0                       # level j + 1 repeats level j
    todo = repeat.any(axis=1)
    if not todo.any():
        return table
    n, s1, s2 = h.clusters(table)
    worst = np.argmax(h.errors(table), axis=1)[:, None]
    n, s1, s2 = (np.take_along_axis(a, worst, 1) for a in (n, s1, s2))
    mean = _ratio(s1, n)
    std = np.sqrt(np.maximum(_ratio(s2, n) - mean * mean, 0.0))
    target = round_half_away(np.clip(mean + np.where(mean >= np.take_along_axis(table, worst, 1),
                                                     std, -std), -GRID_MAX, GRID_MAX))
    spare = 1 + np.argmax(repeat, axis=1)[:, None]             # the first repeat
    new = table.copy()
    np.put_along_axis(new, spare, np.where(todo[:, None], target, np.take_along_axis(table, spare, 1)), 1)
    return np.sort(new, axis=1)


def _ratio(a, n):
    """a / n where the (weighted) count n > 0, else 0."""
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)

"""A streaming histogram of one tensor's values, in fixed memory, exact under merging.

Bins have width ``2**k`` and sit on a grid anchored at 0.0: positive values x fall in bin
``ceil(x / w) - 1`` (the bin (j*w, (j+1)*w]), negative values in bin ``floor(x / w)`` (the bin
[j*w, (j+1)*w)); exact zeros are counted apart (ReLU outputs hold many, and 0.0 is always exactly
representable, so they never carry rounding error). When a value falls outside the ``nbins``
bins, the width doubles as often as needed and pairs of neighbouring bins merge (bin j becomes
bin j // 2, on both sides of zero): nothing is lost but resolution, and the histogram after any
sequence of batches is the one the whole data would have given at once (the final width is the
smallest power of two for which all values seen fit in ``nbins`` bins).
"""
import math

import numpy as np

DEFAULT_BINS = 2048
_MIN_EXP = -126            # width 2**-126: float32's smallest normal, a floor for all-tiny tensors


class StreamingHistogram:
    """Counts of one tensor's values over a grid of ``nbins`` bins of width ``2**exp``.

    Memory: ``nbins`` float64 counts and a few scalars, whatever the amount of data.
    """

    def __init__(self, nbins=DEFAULT_BINS):
        if nbins < 16 or nbins % 2:
            raise ValueError("nbins must be an even number >= 16")
        self.nbins = int(nbins)
        self.counts = np.zeros(self.nbins, np.float64)   # counts[i] is bin (start + i)
        self.start = 0             # index of the first stored bin
        self.exp = None            # bin width 2**exp; None until a nonzero value arrives
        self.zeros = 0             # values exactly 0.0
        self.total = 0             # all values, zeros included
        self.min = math.inf
        self.max = -math.inf

    # -- the grid -----------------------------------------------------------------------
    @property
    def width(self):
        return 0.0 if self.exp is None else math.ldexp(1.0, self.exp)

    def _fits(self, lo, hi, exp):
        """Whether the grid of width 2**exp holds [lo, hi] (lo <= 0 <= hi) in nbins bins."""
        w = math.ldexp(1.0, exp)
        first = math.floor(lo / w) if lo < 0 else 0
        last = math.ceil(hi / w) - 1 if hi > 0 else -1
        return last - first + 1 <= self.nbins

    def _smallest_exp(self, lo, hi):
        """The smallest exponent whose grid holds [lo, hi] in nbins bins."""
        span = max(hi - lo, 1e-300)
        exp = max(_MIN_EXP, math.frexp(span / self.nbins)[1] - 1)
        while not self._fits(lo, hi, exp):
            exp += 1
        while exp > _MIN_EXP and self._fits(lo, hi, exp - 1):
            exp -= 1
        return exp

    @staticmethod
    def _bin_index(x, exp):
        """Bin index of each nonzero value of x (float64 array) on the grid of width 2**exp."""
        s = np.ldexp(x, -exp)               # exact: a power-of-two rescale
        return np.where(x > 0, np.ceil(s) - 1, np.floor(s)).astype(np.int64)

    def _coarsen(self, exp):
        """Merge bins until the width is 2**exp."""
        if self.exp is None:
            self.exp = exp
            return
        while self.exp < exp:
            idx = (self.start + np.arange(self.nbins)) // 2
            new_start = self.start // 2
            merged = np.zeros(self.nbins, np.float64)
            np.add.at(merged, idx - new_start, self.counts)
            self.counts, self.start, self.exp = merged, new_start, self.exp + 1

    def _recenter(self, first, last):
        """Move the window of stored bins so that it covers [first, last] (same width)."""
        if first >= self.start and last < self.start + self.nbins:
            return
        new_start = first
        shifted = np.zeros(self.nbins, np.float64)
        nz = np.nonzero(self.counts)[0]
        if nz.size:
            j = nz + self.start - new_start
            shifted[j] = self.counts[nz]           # fits: the exponent was chosen for it
        self.counts, self.start = shifted, new_start

    # -- adding data --------------------------------------------------------------------
    def add(self, values):
        """Count every value of ``values`` (any shape; must be finite)."""
        x = np.asarray(values, np.float64).ravel()
        if x.size == 0:
            return
        self.total += x.size
        nonzero = x[x != 0.0]
        self.zeros += x.size - nonzero.size
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        if nonzero.size == 0:
            return
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if self.exp is None or not self._fits(lo, hi, self.exp):
            self._coarsen(self._smallest_exp(lo, hi))
        w = self.width
        first = math.floor(lo / w) if lo < 0 else 0
        self._recenter(first, first + self.nbins - 1)
        idx = self._bin_index(nonzero, self.exp) - self.start
        self.counts += np.bincount(idx, minlength=self.nbins)[:self.nbins]

    def merge(self, other):
        """Add another histogram's counts into this one (both end up as if fed all the data)."""
        if other.total == 0:
            return
        self.total += other.total
        self.zeros += other.zeros
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        if other.exp is None:
            return
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        exp = max(self._smallest_exp(lo, hi), other.exp, self.exp if self.exp is not None else other.exp)
        self._coarsen(exp)
        src = StreamingHistogram(other.nbins)
        src.counts, src.start, src.exp = other.counts.copy(), other.start, other.exp
        src._coarsen(exp)
        w = self.width
        first = math.floor(lo / w) if lo < 0 else 0
        self._recenter(first, first + self.nbins - 1)
        nz = np.nonzero(src.counts)[0]
        self.counts[nz + src.start - self.start] += src.counts[nz]

    # -- reading ------------------------------------------------------------------------
    def bins(self):
        """(left edges, right edges, counts) of the nonempty stretch of bins (zeros excluded)."""
        if self.exp is None:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        nz = np.nonzero(self.counts)[0]
        a, b = nz[0], nz[-1] + 1
        j = self.start + np.arange(a, b)
        w = self.width
        return j * w, (j + 1) * w, self.counts[a:b].copy()

    def __repr__(self):
        return (f"<StreamingHistogram {self.total} values in [{self.min:.4g}, {self.max:.4g}], "
                f"{self.zeros} zeros, bin width 2^{self.exp}>")

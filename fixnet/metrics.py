"""How close two outputs are: the one definition of SQNR used by the reports, the command line,
the tests, the benchmarks and the fixture scripts (models/ load this file by path, so they need
no built fixnet). A leaf: NumPy only."""
import numpy as np


def sqnr_db(ref, test):
    """Signal-to-quantization-noise ratio of ``test`` against ``ref``, in dB: 10 log10 of
    sum(ref^2) / sum((ref - test)^2) over all elements (inf when equal, -inf for an all-zero
    ``ref`` with noise)."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")

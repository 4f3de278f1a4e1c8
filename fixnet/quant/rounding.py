"""Adaptive weight rounding: int8 weight codes chosen for the layer's output, not weight by weight.

Rounding every weight to its nearest code (``nearest``) makes errors e (per output channel) whose
effect on the output, e . x, is not small when the inputs x are strongly correlated (neighbouring
pixels, a folded BatchNormalization): the errors of the 9 taps of a 3x3 filter add up on a
smooth image. ``adaptive`` rounding minimises the expected squared output error e^T H e, with
H = E[x x^T] the second moment of the layer's input (patches) over the calibration data, by
rounding one input column at a time and spreading its error over the columns not yet rounded
(the optimal-brain-quantization update of GPTQ, Frantar et al., ICLR 2023). The scales (and so
the numeric contract: symmetric int8 in [-127, 127], per output channel) do not change: codes
are chosen at the scales qparams.quantize_channels settled on, widened ones included (which
keeps a widened channel's codes only while its overflow proof holds); only the choice between
the two codes around each weight does, mostly.

H is accumulated during the one calibration pass: K x K numbers per input group of each layer
(K = kernel taps x input channels of a group), whatever the amount of data. Layers with more
than MAX_INPUTS inputs per group keep nearest rounding. Bias correction (applied after) removes
what mean error is left.
"""
import numpy as np

from .. import layouts
from ..ops.conv import as_nhwc_shape, window_geometry
from ..ops.spatial import windows
from .gptq import DAMPING, MAX_INPUTS, _round_groups

ROUNDED_OPS = ("dense", "conv2d", "depthwise_conv2d")
_CHUNK = 1 << 22            # float32 elements of patches gathered at once (16 MiB)


def input_groups(node):
    """(G, K): the layer's output channels read G disjoint groups of K input values each."""
    k = node.weights["kernel"]
    taps = layouts.taps(node.op, k)                 # the inputs one output channel reads
    if node.op == "dense":
        return 1, taps
    if node.op == "conv2d":
        return node.attrs.get("groups", 1), taps
    return k.shape[2], taps                         # depthwise [KH, KW, C, M]: per channel


def row_groups(node, n_rows):
    """The input group each output channel (weight row) reads."""
    g, _ = input_groups(node)
    return np.arange(n_rows) // (n_rows // g)


def input_patches(node, x):
    """The layer's input vectors for a batch ``x``: [G, P, K] (P = samples x output positions),
    K in the order of the weight rows' flattening ([C, KH, KW, Cin_g] or [C, KH, KW])."""
    x = np.asarray(x)
    g, k = input_groups(node)
    if node.op == "dense":
        return x.reshape(1, -1, k)
    n = x.shape[0]
    _, _, pads = window_geometry(node, x.shape[1:])
    x4 = x.reshape((n,) + as_nhwc_shape(x.shape[1:], node.attrs["rank"]))
    kh, kw = node.attrs["kernel_size"]
    win = windows(x4, (kh, kw), node.attrs["strides"], node.attrs["dilation"], pads,
                  x.dtype.type(0))                                  # [N, OH, OW, KH, KW, C]
    c = x4.shape[-1]
    if node.op == "depthwise_conv2d":
        return np.moveaxis(win, 5, 0).reshape(c, -1, kh * kw)       # [C, P, taps]
    win = win.reshape(win.shape[:5] + (g, c // g))
    return np.moveaxis(win, 5, 0).reshape(g, -1, k)                 # [G, P, taps * Cin_g]


class SecondMoment:
    """Running sum of x x^T of one layer's input vectors, per input group: [G, K, K]."""

    __slots__ = ("sum", "count")

    def __init__(self, node):
        g, k = input_groups(node)
        self.sum = np.zeros((g, k, k), np.float64)
        self.count = 0

    @staticmethod
    def wanted(node):
        return node.op in ROUNDED_OPS and input_groups(node)[1] <= MAX_INPUTS

    def add(self, node, x):
        g, k = input_groups(node)
        per_sample = max(1, int(np.prod(x.shape[1:])) * (k if node.op != "dense" else 1))
        step = max(1, _CHUNK // per_sample)
        for i in range(0, x.shape[0], step):
            # float32 products (BLAS), summed per chunk into the float64 total
            p = input_patches(node, np.asarray(x[i:i + step], np.float32))    # [G, P, K]
            with np.errstate(all="ignore"):
                prod = np.matmul(p.transpose(0, 2, 1), p)
            if not np.all(np.isfinite(prod)) and np.all(np.isfinite(p)):
                # A BLAS gave non-finite sums of finite products (seen with NumPy's OpenBLAS
                # under arm64 emulation): the same sums in float64 without BLAS.
                p = p.astype(np.float64)
                prod = np.einsum("gpk,gpl->gkl", p, p)
            self.sum += prod
            self.count += p.shape[1]

    @property
    def moment(self):
        return self.sum / max(self.count, 1)


def round_rows(rows, scale, moment, groups, damping=DAMPING, levels=None):
    """int8 codes [C, K] for float weight rows [C, K] at fixed per-row ``scale`` [C], chosen to
    minimise sum over rows of e^T H e (H = ``moment[groups[row]]``, e the rows' real errors).
    Rows must come in equal-sized runs per group (as output channels do).
    levels: None (any code in [-127, 127]) or [C, L], the codes each row may take, ascending
    (a codebook or int4's levels, fixnet/quant/codebook.py)."""
    rows = np.asarray(rows, np.float64)
    c, k = rows.shape
    g = moment.shape[0]
    order = np.argsort(groups, kind="stable")
    per = c // g
    w = rows[order].reshape(g, per, k)
    s = np.asarray(scale, np.float64)[order].reshape(g, per)
    if levels is not None:
        levels = np.asarray(levels, np.float64)[order].reshape(g, per, -1)
    codes = _round_groups(w, s, moment, damping, levels).reshape(c, k)
    out = np.empty_like(codes)
    out[order] = codes
    return out


class VectorMoment:
    """Running sum of v v^T of a layer's input vectors v [N, K] (one group): a recurrent layer's
    step inputs [x_t, h_(t-1)] (fixnet/ops/recurrent.py)."""

    __slots__ = ("sum", "count")

    def __init__(self):
        self.sum = None
        self.count = 0

    def add(self, v):
        v = np.asarray(v, np.float64)
        prod = v.T @ v
        self.sum = prod if self.sum is None else self.sum + prod
        self.count += v.shape[0]

    @property
    def moment(self):
        return self.sum / max(self.count, 1)

"""Oracle for the spatial data moves of up-sampling and cropping (zero insertion, the
transposed convolution's: conv_transpose.py).

Pure NumPy, written element by element from index arithmetic (not from the slicing the runtime
steps use): the bit-exact ground truth for ``fixnet/ops/resize.py`` and
``fixnet/ops/conv_transpose.py``. Every tensor is NHWC [N, H, W, C] (a 1D layer is H = 1), of
one activation type: int8, or int16 (symmetric, zero point 0); the output has the input's type.
Nearest up-sampling, cropping and zero insertion only move codes, so input and output share
one scale and zero point; bilinear up-sampling averages codes with integer weights (its output
lies between its inputs, so it keeps the scale and zero point too).
"""
import numpy as np

from .core import _act

__all__ = [
    "upsample_nearest",
    "bilinear_taps",
    "upsample_bilinear",
    "crop_nhwc",
]


def _nhwc(x, what):
    """(int64 copy of the int8 or int16 NHWC array x, its dtype)."""
    x, dtype = _act(x, f"{what}: x")
    if x.ndim != 4:
        raise ValueError(f"{what}: x has shape {x.shape}, expected NHWC [N, H, W, C]")
    return x, dtype


def _positive(what, **values):
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{what}: {name} = {v} must be >= 1")


def upsample_nearest(x, size_h, size_w):
    """Repeat every row size_h times and every column size_w times (Keras UpSampling1D/2D,
    interpolation='nearest'): out[n, i, j, c] = x[n, i // size_h, j // size_w, c].
    Returns x's type [N, H * size_h, W * size_w, C]."""
    x, dtype = _nhwc(x, "upsample_nearest")
    _positive("upsample_nearest", size_h=size_h, size_w=size_w)
    n, h, w, c = x.shape
    rows = np.arange(h * size_h) // size_h
    cols = np.arange(w * size_w) // size_w
    return x[:, rows[:, None], cols[None, :], :].astype(dtype)


def bilinear_taps(n_in, scale):
    """Integer bilinear taps along one axis for an integer up-sampling factor ``scale``, with
    TensorFlow's half-pixel centres (``tf.image.resize``, the rule Keras's UpSampling2D
    'bilinear' uses): output o reads input coordinate (o + 1/2) / scale - 1/2.

    In units of 1 / (2 * scale) that coordinate is the integer 2o + 1 - scale, so the taps are
    exact: returns (lo, hi, w_lo, w_hi), int64 arrays of n_in * scale, with w_lo + w_hi =
    2 * scale; positions outside [0, n_in - 1] are clamped to the edge."""
    _positive("bilinear_taps", n_in=n_in, scale=scale)
    o = np.arange(n_in * scale, dtype=np.int64)
    num = 2 * o + 1 - scale
    den = 2 * scale
    f = num // den                      # floor of the coordinate
    r = num - f * den                   # its fractional part, in 1/den units, in [0, den)
    lo = np.clip(f, 0, n_in - 1)
    hi = np.clip(f + 1, 0, n_in - 1)
    return lo, hi, den - r, r


def upsample_bilinear(x, size_h, size_w):
    """Bilinear up-sampling by integer factors, integer only.

    With the taps of ``bilinear_taps`` along H (weights summing to 2 * size_h) and W (summing
    to 2 * size_w), acc = sum of w_h * w_w * x over the four neighbours (exact, |acc| <= 128 *
    D for int8, 32768 * D for int16, with D = 4 * size_h * size_w) and out = floor((acc + D / 2)
    / D): the weighted mean of the codes rounded to nearest, ties up. The zero point cancels
    because the weights sum to D. Returns x's type [N, H * size_h, W * size_w, C]."""
    x, dtype = _nhwc(x, "upsample_bilinear")
    _positive("upsample_bilinear", size_h=size_h, size_w=size_w)
    n, h, w, c = x.shape
    lo_h, hi_h, a_lo, a_hi = bilinear_taps(h, size_h)
    lo_w, hi_w, b_lo, b_hi = bilinear_taps(w, size_w)
    d = 4 * size_h * size_w
    out = np.empty((n, h * size_h, w * size_w, c), dtype)
    for i in range(h * size_h):
        for j in range(w * size_w):
            acc = (a_lo[i] * b_lo[j] * x[:, lo_h[i], lo_w[j], :]
                   + a_lo[i] * b_hi[j] * x[:, lo_h[i], hi_w[j], :]
                   + a_hi[i] * b_lo[j] * x[:, hi_h[i], lo_w[j], :]
                   + a_hi[i] * b_hi[j] * x[:, hi_h[i], hi_w[j], :])
            out[:, i, j, :] = np.floor_divide(acc + d // 2, d)
    return out


def crop_nhwc(x, top, bottom, left, right):
    """Drop top/bottom rows and left/right columns (Keras Cropping1D/2D). Crops >= 0 and
    leaving at least one row and column. Returns x's type [N, H - top - bottom, W - left - right,
    C]."""
    x, dtype = _nhwc(x, "crop_nhwc")
    for name, p in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if int(p) < 0:
            raise ValueError(f"crop_nhwc: {name} = {p} must be >= 0")
    n, h, w, c = x.shape
    oh, ow = h - int(top) - int(bottom), w - int(left) - int(right)
    if oh < 1 or ow < 1:
        raise ValueError(f"crop_nhwc: cropping ({top}, {bottom}), ({left}, {right}) leaves "
                         f"nothing of {h} x {w}")
    out = np.empty((n, oh, ow, c), dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = x[:, i + int(top), j + int(left), :]
    return out

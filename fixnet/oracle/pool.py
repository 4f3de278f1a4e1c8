"""Oracle of pooling and padding (fixnet/ops/pool.py; kernels in fixnet/_kernels/_pool.pyx
and _layout.pyx). Pure NumPy with int64 inside; every tensor is NHWC [N, H, W, C], int8 or
int16 (one activation type per call: the output has the input's type).

Each function takes the arrays and one ``params`` mapping, the one its kernel takes: exactly
the keys POOL_PARAMS (pooling) or PAD_PARAMS (pad_nhwc); a missing or unknown key is an error
naming it."""
import numpy as np

from .core import ACTIVATION_RANGES, _act, _params

__all__ = [
    "POOL_PARAMS",
    "PAD_PARAMS",
    "pool_windows",
    "max_pool2d",
    "avg_pool2d",
    "avg_pool2d_sums",
    "window_sum_limit",
    "pad_nhwc",
]


# The keys of the params mappings (the fields of the kernels' structs, _kernels/params.pxd).
POOL_PARAMS = ("pool_h", "pool_w", "stride_h", "stride_w", "pad_top", "pad_left")
PAD_PARAMS = ("top", "bottom", "left", "right", "value")


# ---- pooling -------------------------------------------------------------------------------

def _window_bounds(n_out, pool, stride, pad, length, kernel, axis):
    """[lo, hi) of the in-bounds input positions of each of n_out windows along one axis."""
    pool_name, stride_name, pad_name = f"pool_{axis}", f"stride_{axis}", \
        "pad_top" if axis == "h" else "pad_left"
    for name, value, least in ((pool_name, pool, 1), (stride_name, stride, 1), (pad_name, pad, 0)):
        if int(value) < least:
            raise ValueError(f"{kernel}: {name} = {value} must be >= {least}")
    start = np.arange(n_out, dtype=np.int64) * stride - pad
    lo, hi = np.maximum(start, 0), np.minimum(start + pool, length)
    if n_out and (hi <= lo).any():
        i = int(np.argmax(hi <= lo))
        raise ValueError(f"{kernel}: the window of output {'row' if axis == 'h' else 'column'} "
                         f"{i} covers input positions [{start[i]}, {start[i] + pool}), none in "
                         f"[0, {length}): check {pad_name}, {pool_name}, {stride_name} "
                         f"and out_{axis}")
    return lo, hi


def pool_windows(in_h, in_w, params, *, out_h, out_w, kernel="pool"):
    """In-bounds window bounds of every output position: (h_lo, h_hi, w_lo, w_hi).

    Output (oh, ow) pools input rows [h_lo[oh], h_hi[oh]) and columns [w_lo[ow], w_hi[ow]),
    i.e. rows oh * stride_h - pad_top + [0, pool_h) clipped to [0, in_h), columns likewise.
    params: the pooling mapping (POOL_PARAMS): pool, stride >= 1, pads >= 0. Raises
    ValueError if a window has no in-bounds element.
    """
    pool_h, pool_w, stride_h, stride_w, pad_top, pad_left = _params(params, POOL_PARAMS, kernel)
    if int(out_h) < 0 or int(out_w) < 0:
        raise ValueError(f"{kernel}: out_h = {out_h}, out_w = {out_w} must be >= 0")
    h_lo, h_hi = _window_bounds(int(out_h), int(pool_h), int(stride_h), int(pad_top), int(in_h),
                                kernel, "h")
    w_lo, w_hi = _window_bounds(int(out_w), int(pool_w), int(stride_w), int(pad_left), int(in_w),
                                kernel, "w")
    return h_lo, h_hi, w_lo, w_hi


def _pool_input(x, kernel):
    """(int64 copy of x, its activation dtype), x NHWC."""
    x, dtype = _act(x, "x")
    if x.ndim != 4:
        raise ValueError(f"{kernel}: x has shape {x.shape}, expected NHWC [N, H, W, C]")
    return x, dtype


def window_sum_limit(dtype):
    """The largest n = pool_h * pool_w whose int32 window sum, with the rounding term n // 2
    added, cannot wrap: n * 2^(bits - 1) + n // 2 <= 2^31 - 1, i.e. n (2 * 2^(bits - 1) + 1)
    <= 2^32 - 1: 16711935 for int8, 65535 for int16."""
    magnitude = -ACTIVATION_RANGES[np.dtype(dtype)][0]
    return (2 ** 32 - 1) // (2 * magnitude + 1)


def max_pool2d(x, params, *, out_h, out_w):
    """Max over each window's in-bounds elements (padding never wins: TensorFlow semantics).

    x: int8 or int16 [N, H, W, C]; params (POOL_PARAMS): pool_h, pool_w, stride_h,
    stride_w >= 1; pad_top, pad_left >= 0 (input positions before the first); out_h, out_w:
    output size. Returns x's type [N, out_h, out_w, C]. Global max pooling: pool (H, W),
    stride 1, no padding.
    """
    x, dtype = _pool_input(x, "max_pool2d")
    h_lo, h_hi, w_lo, w_hi = pool_windows(x.shape[1], x.shape[2], params, out_h=out_h,
                                          out_w=out_w, kernel="max_pool2d")
    out = np.empty((x.shape[0], int(out_h), int(out_w), x.shape[3]), dtype)
    lowest = ACTIVATION_RANGES[dtype][0]
    for oh in range(int(out_h)):
        for ow in range(int(out_w)):
            window = x[:, h_lo[oh]:h_hi[oh], w_lo[ow]:w_hi[ow], :]
            out[:, oh, ow, :] = window.max(axis=(1, 2), initial=lowest)
    return out


def avg_pool2d_sums(x, params, *, out_h, out_w):
    """Exact window sums and in-bounds counts of avg_pool2d.

    Returns (sums int64 [N, out_h, out_w, C], counts int64 [out_h, out_w]); the int32 kernel
    holds the sums, which with their rounding term cannot wrap while pool_h * pool_w <=
    window_sum_limit(x.dtype) (avg_pool2d checks).
    """
    x, _ = _pool_input(x, "avg_pool2d")
    h_lo, h_hi, w_lo, w_hi = pool_windows(x.shape[1], x.shape[2], params, out_h=out_h,
                                          out_w=out_w, kernel="avg_pool2d")
    sums = np.zeros((x.shape[0], int(out_h), int(out_w), x.shape[3]), np.int64)
    for oh in range(int(out_h)):
        for ow in range(int(out_w)):
            sums[:, oh, ow, :] = x[:, h_lo[oh]:h_hi[oh], w_lo[ow]:w_hi[ow], :].sum(axis=(1, 2))
    counts = (h_hi - h_lo)[:, None] * (w_hi - w_lo)[None, :]
    return sums, counts


def avg_pool2d(x, params, *, out_h, out_w):
    """Rounded mean of each window's in-bounds elements (padding is not counted).

    With s the sum and n the count: (s + n // 2) // n for s >= 0, -((-s + n // 2) // n) for
    s < 0, i.e. round half away from zero (TFLite's reference average pool). Input and output
    share scale and zero point, so there is no requantization. Arguments as max_pool2d;
    pool_h * pool_w <= window_sum_limit(x.dtype) (16711935 for int8, 65535 for int16: the
    int32 window sum and its rounding term cannot wrap). Returns x's type [N, out_h, out_w, C].
    """
    pool_h, pool_w, *_ = _params(params, POOL_PARAMS, "avg_pool2d")
    _, dtype = _act(x, "x")
    size = int(pool_h) * int(pool_w)
    if size > window_sum_limit(dtype):
        magnitude = -ACTIVATION_RANGES[dtype][0]
        raise ValueError(f"avg_pool2d: pool_h * pool_w = {size} is too large: the int32 window "
                         f"sum of {dtype} values and its rounding term need pool_h * pool_w * "
                         f"{magnitude} + pool_h * pool_w // 2 < 2^31")
    sums, counts = avg_pool2d_sums(x, params, out_h=out_h, out_w=out_w)
    n = counts[None, :, :, None]
    mean = np.where(sums >= 0, (sums + n // 2) // n, -((-sums + n // 2) // n))
    return mean.astype(dtype)


# ---- layout --------------------------------------------------------------------------------


def pad_nhwc(x, params):
    """Pad the H and W axes of NHWC x (int8 or int16) with `value` (the zero point, so the
    padding is real 0.0: 0 for int16). params (PAD_PARAMS): top, bottom, left, right >= 0;
    value a code of x's type. Returns x's type [N, H + top + bottom, W + left + right, C]."""
    top, bottom, left, right, value = _params(params, PAD_PARAMS, "pad_nhwc")
    x, dtype = _act(x, "x")
    if x.ndim != 4:
        raise ValueError(f"pad_nhwc: x has shape {x.shape}, expected NHWC [N, H, W, C]")
    for name, p in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if int(p) < 0:
            raise ValueError(f"pad_nhwc: {name} = {p} must be >= 0")
    lo, hi = ACTIVATION_RANGES[dtype]
    if not lo <= int(value) <= hi:
        raise ValueError(f"value = {value} is outside the {dtype} range [{lo}, {hi}]")
    n, h, w, c = x.shape
    out = np.full((n, h + int(top) + int(bottom), w + int(left) + int(right), c), int(value),
                  dtype)
    out[:, int(top):int(top) + h, int(left):int(left) + w, :] = x
    return out

"""Oracle for pooling, binary elementwise ops, concatenation and padding.

Pure NumPy with int64 inside: the bit-exact ground truth for ``fixnet/_kernels/_pool.pyx``,
``_binary.pyx`` and ``_layout.pyx``. Every tensor is int8; pooling and padding work on NHWC
[N, H, W, C]; the binary ops work elementwise on arrays of one shape (the kernels take them
flattened). MBQM below is ``multiply_by_quantized_multiplier`` (m0 in [2^30, 2^31) or 0,
shift in [-31, 30]).
"""
import numpy as np

from .core import (
    INT32_MAX,
    INT32_MIN,
    _check_output_range,
    _check_zero_point,
    _clamp_to_int8,
    _int64,
    _wrap_int32,
    multiply_by_quantized_multiplier,
)

__all__ = [
    "pool_windows",
    "max_pool2d",
    "avg_pool2d",
    "avg_pool2d_sums",
    "add",
    "add_accumulators",
    "mul",
    "maximum",
    "requantize_into",
    "concatenate",
    "pad_nhwc",
]


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


def pool_windows(in_h, in_w, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, *,
                 out_h, out_w, kernel="pool"):
    """In-bounds window bounds of every output position: (h_lo, h_hi, w_lo, w_hi).

    Output (oh, ow) pools input rows [h_lo[oh], h_hi[oh]) and columns [w_lo[ow], w_hi[ow]),
    i.e. rows oh * stride_h - pad_top + [0, pool_h) clipped to [0, in_h), columns likewise.
    pool, stride >= 1, pads >= 0. Raises ValueError if a window has no in-bounds element.
    """
    if int(out_h) < 0 or int(out_w) < 0:
        raise ValueError(f"{kernel}: out_h = {out_h}, out_w = {out_w} must be >= 0")
    h_lo, h_hi = _window_bounds(int(out_h), int(pool_h), int(stride_h), int(pad_top), int(in_h),
                                kernel, "h")
    w_lo, w_hi = _window_bounds(int(out_w), int(pool_w), int(stride_w), int(pad_left), int(in_w),
                                kernel, "w")
    return h_lo, h_hi, w_lo, w_hi


def _pool_input(x, kernel):
    x = _int64(x, "x", -128, 127)
    if x.ndim != 4:
        raise ValueError(f"{kernel}: x has shape {x.shape}, expected NHWC [N, H, W, C]")
    return x


def max_pool2d(x, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, *, out_h, out_w):
    """Max over each window's in-bounds elements (padding never wins: TensorFlow semantics).

    x: int8 [N, H, W, C]; pool_h, pool_w, stride_h, stride_w >= 1; pad_top, pad_left >= 0
    (input positions before the first); out_h, out_w: output size. Returns int8
    [N, out_h, out_w, C]. Global max pooling: pool (H, W), stride 1, no padding.
    """
    x = _pool_input(x, "max_pool2d")
    h_lo, h_hi, w_lo, w_hi = pool_windows(x.shape[1], x.shape[2], pool_h, pool_w, stride_h,
                                          stride_w, pad_top, pad_left, out_h=out_h, out_w=out_w,
                                          kernel="max_pool2d")
    out = np.empty((x.shape[0], int(out_h), int(out_w), x.shape[3]), np.int8)
    for oh in range(int(out_h)):
        for ow in range(int(out_w)):
            window = x[:, h_lo[oh]:h_hi[oh], w_lo[ow]:w_hi[ow], :]
            out[:, oh, ow, :] = window.max(axis=(1, 2), initial=-128)
    return out


def avg_pool2d_sums(x, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, *, out_h, out_w):
    """Exact window sums and in-bounds counts of avg_pool2d.

    Returns (sums int64 [N, out_h, out_w, C], counts int64 [out_h, out_w]); the int32 kernel
    holds the sums, which cannot wrap while pool_h * pool_w * 128 < 2^31 (avg_pool2d checks).
    """
    x = _pool_input(x, "avg_pool2d")
    h_lo, h_hi, w_lo, w_hi = pool_windows(x.shape[1], x.shape[2], pool_h, pool_w, stride_h,
                                          stride_w, pad_top, pad_left, out_h=out_h, out_w=out_w,
                                          kernel="avg_pool2d")
    sums = np.zeros((x.shape[0], int(out_h), int(out_w), x.shape[3]), np.int64)
    for oh in range(int(out_h)):
        for ow in range(int(out_w)):
            sums[:, oh, ow, :] = x[:, h_lo[oh]:h_hi[oh], w_lo[ow]:w_hi[ow], :].sum(axis=(1, 2))
    counts = (h_hi - h_lo)[:, None] * (w_hi - w_lo)[None, :]
    return sums, counts


def avg_pool2d(x, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, *, out_h, out_w):
    """Rounded mean of each window's in-bounds elements (padding is not counted).

    With s the sum and n the count: (s + n // 2) // n for s >= 0, -((-s + n // 2) // n) for
    s < 0, i.e. round half away from zero (TFLite's reference average pool). Input and output
    share scale and zero point, so there is no requantization. Arguments as max_pool2d;
    pool_h * pool_w * 128 < 2^31 (the int32 window sum cannot wrap). Returns int8
    [N, out_h, out_w, C].
    """
    if int(pool_h) * int(pool_w) * 128 >= 2 ** 31:
        raise ValueError(f"avg_pool2d: pool_h * pool_w = {int(pool_h) * int(pool_w)} is too "
                         f"large: the int32 window sum needs pool_h * pool_w * 128 < 2^31")
    sums, counts = avg_pool2d_sums(x, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left,
                                   out_h=out_h, out_w=out_w)
    n = counts[None, :, :, None]
    mean = np.where(sums >= 0, (sums + n // 2) // n, -((-sums + n // 2) // n))
    return mean.astype(np.int8)


# ---- binary elementwise --------------------------------------------------------------------

def _binary_inputs(x, y, kernel):
    x = _int64(x, "x", -128, 127)
    y = _int64(y, "y", -128, 127)
    if x.shape != y.shape:
        raise ValueError(f"{kernel}: x has shape {x.shape} but y has shape {y.shape}; "
                         f"broadcast them before the kernel")
    return x, y


def _check_flag(value, name, kernel):
    if int(value) not in (0, 1):
        raise ValueError(f"{kernel}: {name} = {value} must be 0 or 1")


def _check_left_shift(left_shift, zps):
    """left_shift in [0, 24] and (x - zp) * 2^left_shift in int32 for every int8 x."""
    left_shift = int(left_shift)
    if not 0 <= left_shift <= 24:
        raise ValueError(f"add: left_shift = {left_shift} must be in [0, 24]")
    for name, zp in zps:
        if (127 - int(zp)) << left_shift > INT32_MAX or -(int(zp) + 128) << left_shift < INT32_MIN:
            raise ValueError(f"add: left_shift = {left_shift} with {name} = {zp}: "
                             f"(x - {name}) * 2^left_shift can leave int32")


def add_accumulators(x, y, x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, left_shift, subtract):
    """Exact int64 value of add's int32 intermediate r = sx + sy (sx - sy if subtract).

    sx = MBQM((x - x_zp) * 2^left_shift, x_m0, x_shift), sy likewise. A value outside int32
    means the kernel's r wraps modulo 2^32 (checked mode raises on it).
    """
    x, y = _binary_inputs(x, y, "add")
    _check_zero_point(x_zp, "x_zp")
    _check_zero_point(y_zp, "y_zp")
    _check_left_shift(left_shift, (("x_zp", x_zp), ("y_zp", y_zp)))
    _check_flag(subtract, "subtract", "add")
    sx = multiply_by_quantized_multiplier((x - int(x_zp)) << int(left_shift), x_m0, x_shift)
    sy = multiply_by_quantized_multiplier((y - int(y_zp)) << int(left_shift), y_m0, y_shift)
    sx, sy = sx.astype(np.int64), sy.astype(np.int64)
    return sx - sy if int(subtract) else sx + sy


def add(x, y, x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, left_shift, out_m0, out_shift,
        out_zp, act_min, act_max, subtract):
    """TFLite's quantized add (or subtract) of two int8 tensors of the same shape.

    Both inputs go to a common fine scale: sx = MBQM((x - x_zp) * 2^left_shift, x_m0,
    x_shift), sy likewise (real factors x_scale / (2 max scale), ...); r = sx + sy, or
    sx - sy if subtract (int32, wrapping modulo 2^32); out = clamp(out_zp + MBQM(r, out_m0,
    out_shift), act_min, act_max). Zero points int8; left_shift in [0, 24] with
    (x - zp) * 2^left_shift in int32 for every int8 x (TFLite uses 20). Returns int8.
    """
    _check_output_range(out_zp, act_min, act_max)
    r = _wrap_int32(add_accumulators(x, y, x_zp, x_m0, x_shift, y_zp, y_m0, y_shift,
                                     left_shift, subtract))
    return _clamp_to_int8(out_zp, multiply_by_quantized_multiplier(r, out_m0, out_shift),
                          act_min, act_max)


def mul(x, y, x_zp, y_zp, m0, shift, out_zp, act_min, act_max):
    """Quantized elementwise product: clamp(out_zp + MBQM((x - x_zp) * (y - y_zp), m0,
    shift), act_min, act_max); real factor x_scale * y_scale / out_scale. The product is at
    most 255^2 in magnitude (fits int32). Returns int8."""
    x, y = _binary_inputs(x, y, "mul")
    _check_zero_point(x_zp, "x_zp")
    _check_zero_point(y_zp, "y_zp")
    _check_output_range(out_zp, act_min, act_max)
    product = (x - int(x_zp)) * (y - int(y_zp))
    return _clamp_to_int8(out_zp, multiply_by_quantized_multiplier(product, m0, shift),
                          act_min, act_max)


def maximum(x, y, x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, out_zp, act_min, act_max, take_min):
    """Elementwise max (min if take_min) of two int8 tensors after moving both to the output
    quantization: rx = out_zp + MBQM(x - x_zp, x_m0, x_shift), ry likewise (exact, before
    the clamp; real factors x_scale / out_scale, y_scale / out_scale);
    out = clamp(max(rx, ry), act_min, act_max). Returns int8."""
    x, y = _binary_inputs(x, y, "maximum")
    _check_zero_point(x_zp, "x_zp")
    _check_zero_point(y_zp, "y_zp")
    _check_output_range(out_zp, act_min, act_max)
    _check_flag(take_min, "take_min", "maximum")
    rx = int(out_zp) + multiply_by_quantized_multiplier(x - int(x_zp), x_m0, x_shift).astype(
        np.int64)
    ry = int(out_zp) + multiply_by_quantized_multiplier(y - int(y_zp), y_m0, y_shift).astype(
        np.int64)
    r = np.minimum(rx, ry) if int(take_min) else np.maximum(rx, ry)
    return np.clip(r, act_min, act_max).astype(np.int8)


# ---- layout --------------------------------------------------------------------------------

def requantize_into(x, in_zp, m0, shift, out_zp):
    """The block requantize_into writes into out[:, offset:offset + n]: int8 [outer, n].

    x: int8 [outer, n]. m0 == 0 means "same quantization" (then in_zp must equal out_zp): the
    block is x itself. Otherwise clamp(out_zp + MBQM(x - in_zp, m0, shift), -128, 127), real
    factor in_scale / out_scale.
    """
    x = _int64(x, "x", -128, 127)
    if x.ndim != 2:
        raise ValueError(f"requantize_into: x has shape {x.shape}, expected [outer, n]")
    _check_zero_point(in_zp, "in_zp")
    _check_zero_point(out_zp, "out_zp")
    if int(m0) == 0:
        if int(in_zp) != int(out_zp):
            raise ValueError(f"requantize_into: m0 = 0 means a plain copy, but in_zp = {in_zp} "
                             f"!= out_zp = {out_zp}")
        return x.astype(np.int8)
    return _clamp_to_int8(out_zp, multiply_by_quantized_multiplier(x - int(in_zp), m0, shift),
                          -128, 127)


def concatenate(blocks, out_zp):
    """Concatenate [outer, n_i] int8 blocks along axis 1 into the output quantization.

    blocks: iterable of (x, in_zp, m0, shift), each as requantize_into's arguments. Any
    Keras Concatenate is this after viewing each input as [outer, axis_len * inner].
    Returns int8 [outer, sum n_i].
    """
    parts = [requantize_into(x, in_zp, m0, shift, out_zp) for x, in_zp, m0, shift in blocks]
    if not parts:
        raise ValueError("concatenate: no blocks")
    if len({p.shape[0] for p in parts}) != 1:
        raise ValueError(f"concatenate: blocks have different outer sizes "
                         f"{[p.shape[0] for p in parts]}")
    return np.concatenate(parts, axis=1)


def pad_nhwc(x, top, bottom, left, right, value):
    """Pad the H and W axes of int8 NHWC x with `value` (the zero point, so the padding is
    real 0.0). Pads >= 0; value int8. Returns int8 [N, H + top + bottom, W + left + right, C]."""
    x = _int64(x, "x", -128, 127)
    if x.ndim != 4:
        raise ValueError(f"pad_nhwc: x has shape {x.shape}, expected NHWC [N, H, W, C]")
    for name, p in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if int(p) < 0:
            raise ValueError(f"pad_nhwc: {name} = {p} must be >= 0")
    _check_zero_point(value, "value")
    n, h, w, c = x.shape
    out = np.full((n, h + int(top) + int(bottom), w + int(left) + int(right), c), int(value),
                  np.int8)
    out[:, int(top):int(top) + h, int(left):int(left) + w, :] = x
    return out

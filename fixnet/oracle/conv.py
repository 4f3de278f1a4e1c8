"""Oracle for convolutions (conv2d with groups, depthwise_conv2d), NHWC, on int8 or int16
activations (output dtype = input dtype; int16 symmetric), weights int8.

Geometry shared by both: output pixel (oh, ow) with kernel tap (kh, kw) reads input pixel
ih = oh * stride_h - pad_top + kh * dilation_h, iw = ow * stride_w - pad_left + kw * dilation_w,
and ``pad_value`` wherever (ih, iw) lies outside the input: on the top/left as given by the
pads, on the bottom/right as implied by the output size (out_h, out_w), which the caller
computes. The caller passes the input zero point as pad_value, so padding means real 0.0.
Accumulators are exact int64 here; the int8 results take them modulo 2^32 as the int32
kernels do.

Each function takes the arrays and one ``params`` mapping, the one its kernel takes
(fixnet/_kernels/_conv.pyx): exactly the keys CONV2D_PARAMS (conv2d) or DEPTHWISE_PARAMS
(depthwise_conv2d); a missing or unknown key is an error naming it.
"""
import numpy as np

from .core import (
    ACTIVATION_RANGES,
    _act,
    _check_act_output_range,
    _check_act_zero_point,
    _check_output_range,
    _check_zero_point,
    _clamp_to,
    _int64,
    _params,
    _wrap_int32,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_wide,
)

__all__ = [
    "CONV2D_PARAMS",
    "DEPTHWISE_PARAMS",
    "conv2d",
    "conv2d_accumulators",
    "conv2d_wide",
    "depthwise_conv2d",
    "depthwise_conv2d_accumulators",
]


# The keys of the params mappings (the fields of the kernels' structs, _kernels/params.pxd).
CONV2D_PARAMS = ("stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left",
                 "groups", "pad_value", "out_zp", "act_min", "act_max")
DEPTHWISE_PARAMS = ("stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left",
                    "depth_multiplier", "pad_value", "out_zp", "act_min", "act_max")


def _check_window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, out_h, out_w):
    for name, value, low in (("stride_h", stride_h, 1), ("stride_w", stride_w, 1),
                             ("dilation_h", dilation_h, 1), ("dilation_w", dilation_w, 1),
                             ("pad_top", pad_top, 0), ("pad_left", pad_left, 0),
                             ("out_h", out_h, 0), ("out_w", out_w, 0)):
        if int(value) < low:
            raise ValueError(f"{name} = {value} must be >= {low}")


def _taps(x, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top,
          pad_left, pad_value, out_h, out_w):
    """Yield (kh, kw, x_tap) with x_tap[n, oh, ow, c] = the input value tap (kh, kw) of output
    pixel (oh, ow) reads (pad_value outside x). x: int64 [N, H, W, C], out_h, out_w >= 1."""
    n, h, w, c = x.shape
    # Padded input big enough for every tap: x sits at [pad_top:, pad_left:].
    rows = max(pad_top + h, (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1)
    cols = max(pad_left + w, (out_w - 1) * stride_w + (kernel_w - 1) * dilation_w + 1)
    padded = np.full((n, rows, cols, c), pad_value, dtype=np.int64)
    padded[:, pad_top:pad_top + h, pad_left:pad_left + w, :] = x
    for kh in range(kernel_h):
        top = kh * dilation_h
        for kw in range(kernel_w):
            left = kw * dilation_w
            yield kh, kw, padded[:, top:top + (out_h - 1) * stride_h + 1:stride_h,
                                 left:left + (out_w - 1) * stride_w + 1:stride_w, :]


def _bias_accumulators(kernel, x, bias, cout, stride_h, stride_w, dilation_h, dilation_w,
                       pad_top, pad_left, pad_value, out_h, out_w, dtype=np.int8):
    """int64 [N, out_h, out_w, cout] holding the bias, after the checks both convolutions
    share (bias shape, window, pad_value: a value of the activation type ``dtype``)."""
    if bias.shape != (cout,):
        raise ValueError(f"{kernel}: bias has shape {bias.shape}, expected ({cout},)")
    _check_window(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, out_h, out_w)
    if np.dtype(dtype) == np.int8:
        _check_zero_point(pad_value, "pad_value")
    else:
        lo, hi = ACTIVATION_RANGES[np.dtype(dtype)]
        if not lo <= int(pad_value) <= hi:
            raise ValueError(f"pad_value = {pad_value} is outside the {np.dtype(dtype)} range "
                             f"[{lo}, {hi}]")
    acc = np.empty((x.shape[0], out_h, out_w, cout), dtype=np.int64)
    acc[...] = bias
    return acc


def conv2d_accumulators(x, w, bias, params, *, out_h, out_w):
    """Exact int64 accumulators of conv2d:
    acc[n, oh, ow, co] = bias[co] + sum_{kh, kw, ci} x[n, ih, iw, g * Cin_g + ci] * w[co, kh, kw, ci]
    with g = co // (Cout // groups), Cin_g = Cin // groups; taps outside x read pad_value.

    x: int8 or int16 [N, H, W, Cin] (activations); w: int8 [Cout, KH, KW, Cin // groups],
    KH, KW >= 1; bias: int32 [Cout]; params: conv2d's mapping (CONV2D_PARAMS; out_zp,
    act_min and act_max are not read here): strides, dilations >= 1; pads >= 0; groups >= 1
    divides Cin and Cout; pad_value: the input zero point (int8 x: in int8; int16 x: 0);
    out_h, out_w >= 0: the output size.
    Returns int64 [N, out_h, out_w, Cout]; a value outside int32 means the kernel would wrap.
    """
    (stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, groups, pad_value,
     _, _, _) = _params(params, CONV2D_PARAMS, "conv2d")
    x, dtype = _act(x, "x")
    _check_act_zero_point(pad_value, dtype, "pad_value")
    w = _int64(w, "w", -128, 127)
    bias = _int64(bias, "bias")
    if x.ndim != 4:
        raise ValueError(f"conv2d: x has shape {x.shape}, expected [N, H, W, Cin]")
    groups = int(groups)
    cin, cout = x.shape[3], w.shape[0] if w.ndim == 4 else -1
    if groups < 1:
        raise ValueError(f"conv2d: groups = {groups} must be >= 1")
    if cin % groups or (cout >= 0 and cout % groups):
        raise ValueError(f"conv2d: groups = {groups} must divide Cin = {cin} and Cout = {cout}")
    if w.ndim != 4 or w.shape[1] < 1 or w.shape[2] < 1 or w.shape[3] != cin // groups:
        raise ValueError(f"conv2d: w has shape {w.shape}, expected "
                         f"[Cout, KH >= 1, KW >= 1, Cin // groups = {cin // groups}]")
    acc = _bias_accumulators("conv2d", x, bias, cout, stride_h, stride_w, dilation_h,
                             dilation_w, pad_top, pad_left, pad_value, out_h, out_w)
    if acc.size == 0:
        return acc
    cin_g, cout_g = cin // groups, cout // groups
    for kh, kw, x_tap in _taps(x, w.shape[1], w.shape[2], stride_h, stride_w, dilation_h,
                               dilation_w, pad_top, pad_left, pad_value, out_h, out_w):
        for g in range(groups):
            x_g = x_tap[..., g * cin_g:(g + 1) * cin_g]            # [N, OH, OW, Cin_g]
            w_g = w[g * cout_g:(g + 1) * cout_g, kh, kw, :]        # [Cout_g, Cin_g]
            # int64 matmul is exact: |sum| <= KH * KW * Cin_g * 2^22 + 2^31, far below 2^63.
            acc[..., g * cout_g:(g + 1) * cout_g] += x_g @ w_g.T
    return acc


def conv2d(x, w, bias, m0, shift, params, *, out_h, out_w):
    """2-D convolution on int8 or int16 activations, NHWC, with groups.

    out[n, oh, ow, co] = clamp(out_zp + multiply_by_quantized_multiplier(acc, m0[co],
    shift[co]), act_min, act_max), acc = conv2d_accumulators(...) taken modulo 2^32.
    m0, shift: int32 [Cout] (m0 in [2^30, 2^31) or 0, shift in [-31, 30]); params: conv2d's
    mapping (CONV2D_PARAMS), with out_zp, act_min, act_max in x's type (int8: out_zp int8,
    -128 <= act_min <= act_max <= 127; int16: out_zp = 0, -32768 <= act_min <= act_max <=
    32767). Returns [N, out_h, out_w, Cout] of x's dtype.
    """
    *_, out_zp, act_min, act_max = _params(params, CONV2D_PARAMS, "conv2d")
    dtype = _act(x, "x")[1]
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    acc = conv2d_accumulators(x, w, bias, params, out_h=out_h, out_w=out_w)
    return _requantize_channels(acc, m0, shift, out_zp, act_min, act_max, dtype)


def conv2d_wide(x, w, bias, m0, shift, params, *, out_h, out_w):
    """conv2d with int64 accumulators (a "wide" step), as dense_wide is to dense: acc =
    conv2d_accumulators(...) exact, |acc| < 2^47, requantized by
    multiply_by_quantized_multiplier_wide (shift in [-31, 14]). Arguments and result as for
    conv2d."""
    *_, out_zp, act_min, act_max = _params(params, CONV2D_PARAMS, "conv2d")
    dtype = _act(x, "x")[1]
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    acc = conv2d_accumulators(x, w, bias, params, out_h=out_h, out_w=out_w)
    channels = acc.shape[-1]
    for name, values in (("m0", m0), ("shift", shift)):
        if np.shape(values) != (channels,):
            raise ValueError(f"{name} has shape {np.shape(values)}, expected ({channels},)")
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier_wide(acc, m0, shift),
                     act_min, act_max)


def depthwise_conv2d_accumulators(x, w, bias, params, *, out_h, out_w):
    """Exact int64 accumulators of depthwise_conv2d:
    acc[n, oh, ow, o] = bias[o] + sum_{kh, kw} x[n, ih, iw, o // M] * w[kh, kw, o],
    M = depth_multiplier >= 1; taps outside x read pad_value.

    x: int8 or int16 [N, H, W, C]; w: int8 [KH, KW, C * M], KH, KW >= 1; bias: int32 [C * M];
    params: depthwise_conv2d's mapping (DEPTHWISE_PARAMS), read as conv2d_accumulators reads
    conv2d's, pad_value a value of x's type. Returns int64 [N, out_h, out_w, C * M] (int16 x:
    |x * w| <= 2^22 per product, exact here as every sum is).
    """
    (stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, depth_multiplier,
     pad_value, _, _, _) = _params(params, DEPTHWISE_PARAMS, "depthwise_conv2d")
    x, dtype = _act(x, "x")
    w = _int64(w, "w", -128, 127)
    bias = _int64(bias, "bias")
    if x.ndim != 4:
        raise ValueError(f"depthwise_conv2d: x has shape {x.shape}, expected [N, H, W, C]")
    mult = int(depth_multiplier)
    if mult < 1:
        raise ValueError(f"depthwise_conv2d: depth_multiplier = {mult} must be >= 1")
    cout = x.shape[3] * mult
    if w.ndim != 3 or w.shape[0] < 1 or w.shape[1] < 1 or w.shape[2] != cout:
        raise ValueError(f"depthwise_conv2d: w has shape {w.shape}, expected "
                         f"[KH >= 1, KW >= 1, C * depth_multiplier = {cout}]")
    acc = _bias_accumulators("depthwise_conv2d", x, bias, cout, stride_h, stride_w, dilation_h,
                             dilation_w, pad_top, pad_left, pad_value, out_h, out_w, dtype)
    if acc.size == 0:
        return acc
    for kh, kw, x_tap in _taps(x, w.shape[0], w.shape[1], stride_h, stride_w, dilation_h,
                               dilation_w, pad_top, pad_left, pad_value, out_h, out_w):
        # Output channel o = c * M + m reads input channel c: repeat each channel M times.
        acc += np.repeat(x_tap, mult, axis=3) * w[kh, kw, :]
    return acc


def depthwise_conv2d(x, w, bias, m0, shift, params, *, out_h, out_w):
    """Depthwise 2-D convolution on int8 or int16 activations, NHWC: each input channel c has
    its own depth_multiplier filters, output channel o = c * M + m.

    out = clamp(out_zp + multiply_by_quantized_multiplier(acc, m0[o], shift[o]), act_min,
    act_max), acc = depthwise_conv2d_accumulators(...) taken modulo 2^32; m0, shift: int32
    [C * M]; params: depthwise_conv2d's mapping (DEPTHWISE_PARAMS), out_zp and the clamp
    bounds of x's type (int16: out_zp 0, symmetric). Returns [N, out_h, out_w, C * M] of x's
    type (int8 or int16).
    """
    *_, out_zp, act_min, act_max = _params(params, DEPTHWISE_PARAMS, "depthwise_conv2d")
    dtype = _act(x, "x")[1]
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    acc = depthwise_conv2d_accumulators(x, w, bias, params, out_h=out_h, out_w=out_w)
    return _requantize_channels(acc, m0, shift, out_zp, act_min, act_max, dtype)


def _requantize_channels(acc, m0, shift, out_zp, act_min, act_max, dtype=np.int8):
    """int64 accumulators [..., C] -> activations of type dtype (int8 or int16) with
    per-channel (m0, shift) [C], like dense."""
    channels = acc.shape[-1]
    for name, values in (("m0", m0), ("shift", shift)):
        if np.shape(values) != (channels,):
            raise ValueError(f"{name} has shape {np.shape(values)}, expected ({channels},)")
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier(_wrap_int32(acc), m0, shift),
                     act_min, act_max)

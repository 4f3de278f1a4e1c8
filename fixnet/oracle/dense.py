"""Oracle of dense (fixnet/ops/dense.py; kernel fixnet/_kernels/_dense.pyx)."""
import numpy as np

from .core import (_act, _check_act_output_range, _clamp_to, _int64, _wrap_int32,
                   multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_single,
                   multiply_by_quantized_multiplier_wide)

__all__ = [
    "dense_accumulators",
    "dense",
    "dense_wide",
]


def dense_accumulators(x, w, bias):
    """Exact int64 accumulators of dense: bias[c] + sum_k x[n, k] * w[c, k].

    x: int8 or int16 [N, K] (activations); w: int8 [C, K]; bias: int32 [C]. Returns int64
    [N, C]; a value outside int32 means the int32 kernel would wrap (checked mode raises on
    it).
    """
    x, _ = _act(x, "x")
    w = _int64(w, "w", -128, 127)
    bias = _int64(bias, "bias")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"dense: x {x.shape} and w {w.shape} must be [N, K] and [C, K]")
    if bias.shape != (w.shape[0],):
        raise ValueError(f"dense: bias has shape {bias.shape}, expected ({w.shape[0]},)")
    # int64 matmul is exact here: |sum| <= K * 2^22 + 2^31, far below 2^63.
    return bias[None, :] + x @ w.T


def dense(x, w, bias, m0, shift, out_zp, act_min, act_max, rounding="double"):
    """Fully connected layer on int8 or int16 activations.

    out[n, c] = clamp(out_zp + multiply_by_quantized_multiplier(acc[n, c], m0[c], shift[c]),
    act_min, act_max), acc = dense_accumulators(x, w, bias) taken modulo 2^32 as int32.
    x: int8 [N, K] (input zero point folded into bias) or int16 [N, K] (zero point 0);
    w: int8 [C, K] in [-127, 127]; bias, m0, shift: int32 [C]; out_zp, act_min, act_max in
    x's type (int16: out_zp = 0). Returns [N, C] of x's dtype.
    rounding: "double" (multiply_by_quantized_multiplier, gemmlowp's two roundings: fixnet's
    rule, and TFLite's CONV_2D / DEPTHWISE_CONV_2D) or "single"
    (multiply_by_quantized_multiplier_single: TFLite's per-channel FULLY_CONNECTED; int8
    only, kernel _dense.DenseCall(..., rounding="single")).
    """
    dtype = _act(x, "x")[1]
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    acc = _wrap_int32(dense_accumulators(x, w, bias))
    if rounding == "single":
        if dtype != np.int8:
            raise ValueError("dense: single rounding is for int8 activations")
        return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier_single(acc, m0, shift),
                         act_min, act_max)
    if rounding != "double":
        raise ValueError(f"dense: rounding {rounding!r} is not 'double' or 'single'")
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier(acc, m0, shift),
                     act_min, act_max)


def dense_wide(x, w, bias, m0, shift, out_zp, act_min, act_max):
    """Fully connected layer with int64 accumulators (a "wide" step): for int16 layers whose
    int32 accumulators cannot be proven safe (TFLite's 16x8 kernels accumulate in int64 too).

    out[n, c] = clamp(out_zp + multiply_by_quantized_multiplier_wide(acc[n, c], m0[c],
    shift[c]), act_min, act_max), acc = dense_accumulators(x, w, bias) exact (no wrap), which
    must stay below 2^47 in magnitude (the overflow proof of a wide step says it does).
    Arguments as for dense; shift in [-31, 14]. Returns [N, C] of x's dtype.
    """
    dtype = _act(x, "x")[1]
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    acc = dense_accumulators(x, w, bias)
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier_wide(acc, m0, shift),
                     act_min, act_max)

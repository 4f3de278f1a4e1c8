"""Oracle of the mask ops (fixnet/ops/mask.py; kernels in fixnet/_kernels/_mask.pyx):
masking (Keras Masking), masked_mean (GlobalAveragePooling1D of a masked sequence). token_mask
is a 256-entry ``lookup`` (fixnet/oracle/activation.py) and needs nothing here.

Masks are tensors of codes 0 (padding step) and 1 (present step), scale 1.0, zero point 0;
a step counts as present when its code is not 0. Shapes carry the batch axis first:
sequences are (N, T, C), masks (N, T). One activation type per call: the sequences and masks
of a call are all int8, or all int16 (zero points 0).
"""
import numpy as np

from .core import (ACTIVATION_RANGES, _act, _check_act_output_range, _check_act_zero_point,
                   _clamp_to, _same_act, multiply_by_quantized_multiplier)

__all__ = [
    "MASKED_MEAN_MAX_STEPS",
    "MASKED_MEAN_SCALE_BITS",
    "masking",
    "rounding_divide",
    "masked_mean_sums",
    "masked_mean",
]

# masked_mean keeps 2^MASKED_MEAN_SCALE_BITS fractional steps of the mean before it requantizes
# (see masked_mean), and holds sum * 2^MASKED_MEAN_SCALE_BITS in int32: |sum| <= 255 T, so T
# may be at most MASKED_MEAN_MAX_STEPS (255 * 256 * 32767 < 2^31 <= 255 * 256 * 32896). An
# int16 call holds the sum itself in int32 (|sum| <= 32768 T < 2^30) and the mean times 256 in
# int32 (|a| <= 32768 * 256 = 2^23); the sum times 256 is formed in int64, as in int8's kernel.
MASKED_MEAN_SCALE_BITS = 8
MASKED_MEAN_MAX_STEPS = 32767


def _sequence(x, name, rank=3):
    """(int64 copy of the int8 or int16 array x of ``rank`` dimensions, its dtype)."""
    arr, dtype = _act(x, name)
    if arr.ndim != rank:
        raise ValueError(f"{name}: expected {rank} dimensions, got shape {arr.shape}")
    return arr, dtype


def masking(x, mask_code, in_zp):
    """Keras Masking on int8 or int16: step t of a row is padding when every feature's code
    equals ``mask_code`` (the code of mask_value at x's quantization, a code of x's type).

    x: int8 or int16 (N, T, F); in_zp: x's zero point (0 for int16). Returns (y of x's type
    (N, T, F): x on present steps, the zero point in_zp (real 0.0) on padding steps; mask of
    x's type (N, T): 1 present, 0 padding)."""
    x, dtype = _sequence(x, "x")
    lo, hi = ACTIVATION_RANGES[dtype]
    if not lo <= int(mask_code) <= hi:
        raise ValueError(f"mask_code = {mask_code} is outside the {dtype} range [{lo}, {hi}]")
    _check_act_zero_point(in_zp, dtype, "in_zp")
    present = np.any(x != int(mask_code), axis=-1)
    y = np.where(present[:, :, None], x, int(in_zp))
    return y.astype(dtype), present.astype(dtype)


def rounding_divide(p, n):
    """p / n rounded to the nearest integer, ties away from zero, in integers:
    sign(p) * ((|p| + n // 2) // n). p: integers; n: integers >= 1 (arrays broadcast).
    (For even n, (|p| + n/2) // n rounds halves up; an odd n has no halves.)"""
    p = np.asarray(p, np.int64)
    n = np.asarray(n, np.int64)
    if np.any(n < 1):
        raise ValueError("rounding_divide: n must be >= 1")
    return np.sign(p) * ((np.abs(p) + n // 2) // n)


def masked_mean_sums(x, mask, in_zp):
    """(S int64 (N, C), n int64 (N,)): S[c] = sum over present steps t of (x[t, c] - in_zp),
    n = the number of present steps (mask code != 0). The int32 accumulator of masked_mean:
    |S| <= 255 T (int8), 32768 T (int16). x and mask: one type, int8 or int16."""
    x, dtype = _sequence(x, "x")
    _same_act(dtype, (mask, "mask"))
    mask, _ = _sequence(mask, "mask", 2)
    _check_act_zero_point(in_zp, dtype, "in_zp")
    if mask.shape != x.shape[:2]:
        raise ValueError(f"masked_mean: mask has shape {mask.shape}, expected {x.shape[:2]}")
    present = (mask != 0).astype(np.int64)
    return ((x - int(in_zp)) * present[:, :, None]).sum(axis=1), present.sum(axis=1)


def masked_mean(x, mask, in_zp, m0, shift, out_zp):
    """Mean over the present steps of each row of x, requantized:

        S = masked_mean_sums(...)                        int32, |S| <= 255 T (int16:
                                                         32768 T)
        a = rounding_divide(S * 2^8, n)                  the mean in 1/256 input steps,
                                                         |a| <= 255 * 256 (int16: 2^23)
        y = clamp(out_zp + multiply_by_quantized_multiplier(a, m0, shift)) to x's type's range

    with (m0, shift) the real factor in_scale / (256 * out_scale). A row whose every step is
    masked (n = 0; Keras gives NaN) gives out_zp (real 0.0). T <= MASKED_MEAN_MAX_STEPS keeps
    S * 256 in int32 for int8 and S in int32 for int16. x: int8 or int16 (N, T, C); mask: the
    same type (N, T); zero points 0 for int16. Returns x's type (N, C)."""
    dtype = np.asarray(x).dtype
    s, n = masked_mean_sums(x, mask, in_zp)
    lo, hi = ACTIVATION_RANGES[dtype]
    _check_act_output_range(dtype, out_zp, lo, hi)
    if x.shape[1] > MASKED_MEAN_MAX_STEPS:
        raise ValueError(f"masked_mean: {x.shape[1]} steps, at most {MASKED_MEAN_MAX_STEPS}")
    a = rounding_divide(s << MASKED_MEAN_SCALE_BITS, np.maximum(n, 1)[:, None])
    v = multiply_by_quantized_multiplier(a, m0, shift).astype(np.int64)
    y = _clamp_to(dtype, out_zp, v, lo, hi)
    return np.where(n[:, None] > 0, y, out_zp).astype(dtype)

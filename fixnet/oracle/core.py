"""The oracle's fixed-point core: the rounding, multiplier and quantization rules every op's
oracle (one module per op beside this one) is written with, in plain NumPy.

The Cython kernels in ``fixnet/_kernels`` must agree with the oracle bit for bit, and
checked execution runs them (with int64 accumulators) to prove no int32 accumulator wraps.
Arithmetic is done in int64 throughout, so nothing here can overflow silently; inputs that
the contract says are int32 are checked to be int32.

Conventions (gemmlowp / TFLite, Jacob et al. CVPR 2018):

* a quantized tensor holds int8 ``q`` and means ``scale * (q - zero_point)``;
* a real multiplier ``M`` in (0, 2^30) is stored as ``m0 * 2^(shift - 31)`` with ``m0`` in
  [2^30, 2^31) (or ``m0 = 0`` for M = 0) and ``shift`` in [-31, 30];
* int32 accumulators that leave int32 wrap modulo 2^32 (the kernels define it that way; the
  quantizer's overflow proof says it never happens, ``dense_accumulators`` (dense.py) checks it).
"""
import math

import numpy as np

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1

# activation types: int8 tensors are asymmetric (any zero point in int8); int16 tensors are
# symmetric (zero point 0), as TFLite's 16x8 mode. Weights are int8 in both.
ACTIVATION_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.int16): (-32768, 32767)}

__all__ = [
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_wide",
    "multiply_by_quantized_multiplier_single",
    "WIDE_ACC_LIMIT",
    "quantize_multiplier",
    "round_half_away",
    "quantize",
    "dequantize",
]


# ---- helpers -------------------------------------------------------------------------------

def _int64(a, name, lo=INT32_MIN, hi=INT32_MAX):
    """a as an int64 array, after checking every value lies in [lo, hi]."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name}: values must lie in [{lo}, {hi}], "
                         f"got [{arr.min()}, {arr.max()}]")
    return arr


def _params(params, fields, kernel):
    """The values of ``params`` (a mapping, the op's params as its kernel takes them) for the
    keys ``fields``, in that order. TypeError if params is not a mapping, ValueError naming
    every missing and every unknown key (as the kernels' entry checks do)."""
    try:
        keys = list(params.keys())
    except AttributeError:
        raise TypeError(f"{kernel}: params must be a mapping with the keys {', '.join(fields)}; "
                        f"got {type(params).__name__}") from None
    missing = [repr(f) for f in fields if f not in keys]
    unknown = [repr(key) for key in keys if key not in fields]
    if missing or unknown:
        found = ([f"no key {', '.join(missing)}"] if missing else []) + (
            [f"unknown key {', '.join(unknown)}"] if unknown else [])
        raise ValueError(f"{kernel}: params has {'; '.join(found)} (its keys are exactly "
                         f"{', '.join(fields)})")
    return tuple(params[f] for f in fields)


def _check_zero_point(zp, name):
    if not -128 <= int(zp) <= 127:
        raise ValueError(f"{name} = {zp} is outside the int8 range [-128, 127]")


def _act(a, name):
    """(int64 copy of the activation array ``a``, its dtype): ``a`` must be an int8 or an
    int16 array (the two activation types); its values are then in range by construction."""
    arr = np.asarray(a)
    if arr.dtype not in ACTIVATION_RANGES:
        raise TypeError(f"{name}: expected an int8 or int16 activation array, got dtype {arr.dtype}")
    return arr.astype(np.int64), arr.dtype


def _same_act(dtype, *arrays_and_names):
    """TypeError unless every (array, name) pair has activation dtype ``dtype`` (one call
    takes one activation type: int8 in, int8 out; int16 in, int16 out)."""
    for a, name in arrays_and_names:
        if np.asarray(a).dtype != dtype:
            raise TypeError(f"{name}: dtype {np.asarray(a).dtype}, but this call's activations "
                            f"are {np.dtype(dtype)} (one activation type per call)")


def _check_act_zero_point(zp, dtype, name):
    """int8: zp in [-128, 127]; int16: zp == 0 (int16 tensors are symmetric)."""
    if np.dtype(dtype) == np.int16:
        if int(zp) != 0:
            raise ValueError(f"{name} = {zp}: int16 tensors are symmetric, their zero point is 0")
    else:
        _check_zero_point(zp, name)


def _check_act_output_range(dtype, out_zp, act_min, act_max):
    """out_zp and the clamp bounds valid for outputs of activation type ``dtype``."""
    lo, hi = ACTIVATION_RANGES[np.dtype(dtype)]
    _check_act_zero_point(out_zp, dtype, "out_zp")
    if not lo <= int(act_min) <= int(act_max) <= hi:
        raise ValueError(f"act_min = {act_min}, act_max = {act_max} must satisfy "
                         f"{lo} <= act_min <= act_max <= {hi}")


def _clamp_to(dtype, out_zp, value, act_min, act_max):
    """clamp(out_zp + value, act_min, act_max) as an array of activation type ``dtype``."""
    return np.clip(np.int64(out_zp) + value, act_min, act_max).astype(dtype)


def _check_scale(scale):
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale = {scale!r} must be finite and positive")


# ---- fixed-point arithmetic ----------------------------------------------------------------

def saturating_rounding_doubling_high_mul(a, b):
    """High 32 bits of 2*a*b, i.e. round(a * b / 2^31), ties toward +inf.

    a, b: int32 values (arrays broadcast). The one result beyond int32, a = b = -2^31, is
    saturated to 2^31 - 1. Returns int32.
    """
    a = _int64(a, "a")
    b = _int64(b, "b")
    ab = a * b  # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    t = ab + nudge
    quotient = np.sign(t) * (np.abs(t) >> 31)  # C division: truncates toward zero
    result = np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), quotient)
    return result.astype(np.int32)


def rounding_divide_by_pot(x, exponent):
    """x / 2^exponent rounded to nearest, ties away from zero.

    x: int32 values; exponent: integers in [0, 31] (arrays broadcast). Returns int32.
    """
    x = _int64(x, "x")
    exponent = _int64(exponent, "exponent", 0, 31)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> exponent) + (remainder > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(acc, m0, shift):
    """acc * m0 * 2^(shift - 31), in integer arithmetic with two roundings (TFLite's).

    acc: int32 values; m0: int32, normally in [2^30, 2^31) or 0; shift: in [-31, 30]
    (arrays broadcast). For shift > 0, acc is first multiplied by 2^shift and saturated to
    int32 (defined here; C++ TFLite leaves that overflow undefined); for shift < 0 the
    product is divided by 2^-shift with rounding_divide_by_pot. Returns int32.
    """
    acc = _int64(acc, "acc")
    m0 = _int64(m0, "m0")
    shift = _int64(shift, "shift", -31, 30)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.clip(acc * (np.int64(1) << left), INT32_MIN, INT32_MAX)  # |acc * 2^30| < 2^62
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m0), right)


def multiply_by_quantized_multiplier_single(acc, m0, shift):
    """acc * m0 * 2^(shift - 31) with one rounding of the exact int64 product, ties away from
    zero: sign(p) * ((|p| + 2^(30 - shift)) >> (31 - shift)), p = acc * m0. This is what
    TFLite 2.21's reference FULLY_CONNECTED computes (measured: models/tflite/ROUNDING.md; the
    gemmlowp rule rounds twice, TFLITE_SINGLE_ROUNDING's ties go toward +inf). acc: int32
    values; m0: in [0, 2^31); shift: in [-31, 30] (no left shift of acc, so no saturation).
    Returns int64 (the caller clamps)."""
    acc = _int64(acc, "acc")
    m0 = _int64(m0, "m0", 0, INT32_MAX)
    shift = _int64(shift, "shift", -31, 30)
    total = 31 - shift
    p = acc * m0                                   # |p| < 2^62
    half = np.int64(1) << (total - 1)
    return np.where(p >= 0, (p + half) >> total, -((-p + half) >> total))


# int64 accumulators ("wide" steps): |acc| below 2^47, so that acc times a 16-bit multiplier
# stays inside int64 (TFLite's 16x8 kernels take the same bound)
WIDE_ACC_LIMIT = 2 ** 47


def multiply_by_quantized_multiplier_wide(acc, m0, shift):
    """acc * m0 * 2^(shift - 31) for int64 accumulators, with one rounding: TFLite's rule for
    the int64 accumulators of its 16x8 kernels (MultiplyByQuantizedMultiplier of an int64).

    The multiplier is first rounded to 16 bits, r = (m0 + 2^15) >> 16 (0x7FFF when m0 >=
    0x7FFF0000), then result = (acc * r + 2^(t - 1)) >> t with t = 15 - shift (an arithmetic
    shift: the rounding is half up, toward +inf). acc: int64 integers, first saturated to
    [-(2^47 - 1), 2^47 - 1] (defined here, as the int32 rule defines its left shift's
    overflow; TFLite assumes |acc| < 2^47, which a wide step's overflow proof shows); m0: in
    [0, 2^31); shift: in [-31, 14] (t >= 1). Returns int64 (|acc * r| < 2^62; the caller
    clamps to its output type).
    """
    acc = np.clip(_int64(acc, "acc", -2 ** 63, 2 ** 63 - 1), -WIDE_ACC_LIMIT + 1,
                  WIDE_ACC_LIMIT - 1)
    m0 = _int64(m0, "m0", 0, INT32_MAX)
    shift = _int64(shift, "shift", -31, 14)
    reduced = np.where(m0 < 0x7FFF0000, (m0 + (1 << 15)) >> 16, np.int64(0x7FFF))
    total = 15 - shift
    return (acc * reduced + (np.int64(1) << (total - 1))) >> total


def quantize_multiplier(real):
    """Split a real multiplier into (m0, shift) with real ~= m0 * 2^(shift - 31).

    real: float >= 0, < 2^30. m0 in [2^30, 2^31) and shift in [-31, 30], relative error at
    most 2^-31; (0, 0) for real == 0 or real too small to represent (shift would be < -31).
    Raises ValueError for negative, non-finite or too large (>= 2^30, shift > 30) values.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"quantize_multiplier: real = {real!r} must be finite and >= 0")
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)  # real = fraction * 2^shift, fraction in [0.5, 1)
    # fraction * 2^31 is exact in double; +0.5 is exact too (at most 22 fraction bits left),
    # so this is round half away from zero (as C round()) on a positive value.
    m0 = math.floor(fraction * 2.0 ** 31 + 0.5)
    if m0 == 2 ** 31:
        m0 //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"quantize_multiplier: real = {real!r} is too large "
                         f"(needs shift {shift} > 30)")
    return int(m0), int(shift)


# ---- float boundaries ----------------------------------------------------------------------

def round_half_away(v):
    """Round float64 values to the nearest integer, ties away from zero (C round()).

    Returns float64 (values may exceed every integer type); NaN and inf pass through.
    """
    v = np.asarray(v, dtype=np.float64)
    t = np.trunc(v)
    with np.errstate(invalid="ignore"):  # inf - inf
        frac = v - t  # exact: t and v share the exponent or t == 0
        return np.where(np.abs(frac) >= 0.5, t + np.sign(v), t)


def quantize(x, scale, zp, dtype=np.int8):
    """Real values -> codes: clamp(round_half_away(float64(x) / scale) + zp, lo, hi), with
    [lo, hi] the range of ``dtype`` (int8: [-128, 127]; int16: [-32768, 32767], zp 0).

    x: float array (any shape); scale: real units per step, finite > 0. Non-finite x map to
    zp (count them with ``~np.isfinite(x)``). Returns ``dtype`` of x's shape.
    """
    _check_scale(scale)
    dtype = np.dtype(dtype)
    if dtype not in ACTIVATION_RANGES:
        raise TypeError(f"quantize: dtype must be int8 or int16, not {dtype}")
    _check_act_zero_point(zp, dtype, "zp")
    lo, hi = ACTIVATION_RANGES[dtype]
    x = np.asarray(x)
    v = x.astype(np.float64)
    finite = np.isfinite(v)
    with np.errstate(over="ignore", invalid="ignore"):
        q = round_half_away(np.where(finite, v, 0.0) / scale) + zp
    q = np.clip(q, lo, hi)
    return np.where(finite, q, zp).astype(dtype)


def dequantize(q, scale, zp):
    """int8 or int16 codes -> real values: float32(float64(q - zp) * scale). Returns float32."""
    _check_scale(scale)
    q, dtype = _act(q, "q")
    _check_act_zero_point(zp, dtype, "zp")
    return ((q - zp).astype(np.float64) * scale).astype(np.float32)


# ---- layers --------------------------------------------------------------------------------


def _check_output_range(out_zp, act_min, act_max):
    _check_zero_point(out_zp, "out_zp")
    if not -128 <= int(act_min) <= int(act_max) <= 127:
        raise ValueError(f"act_min = {act_min}, act_max = {act_max} must satisfy "
                         f"-128 <= act_min <= act_max <= 127")


def _clamp_to_int8(out_zp, value, act_min, act_max):
    return np.clip(np.int64(out_zp) + value, act_min, act_max).astype(np.int8)


def _wrap_int32(a):
    """int64 values modulo 2^32, as two's complement int32 values (still int64 dtype)."""
    return ((a + 2 ** 31) & 0xFFFFFFFF) - 2 ** 31

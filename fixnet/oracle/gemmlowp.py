"""gemmlowp's fixed-point arithmetic (fixedpoint/fixedpoint.h), bit for bit, in NumPy: the
helpers TensorFlow Lite's integer kernels are written with (fixnet/oracle/tflite.py).

A fixed-point value is its raw integer: ``FixedPoint<int32, m>`` (bits=32) or
``FixedPoint<int16, m>`` (bits=16) holds ``raw / 2^(bits - 1 - m)``, m the integer bits.
Values are int64 NumPy arrays holding the C values; where gemmlowp's C++ adds without
saturating (Add, Sub, a left shift) the result wraps to the C type here, as it does on every
machine TFLite runs on. Multiplication is the saturating rounding doubling high multiply
(VQRDMULH); the functions (exp, 1 / (1 + x), logistic, tanh) are gemmlowp's polynomial,
barrel-shifter and Newton-Raphson evaluations, step for step.
"""
import numpy as np

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1
INT16_MIN = -(2 ** 15)
INT16_MAX = 2 ** 15 - 1

__all__ = [
    "wrap", "saturating_rounding_doubling_high_mul", "saturating_doubling_high_mul",
    "rounding_divide_by_pot", "saturating_rounding_multiply_by_pot", "rescale",
    "exp_on_interval_between_negative_one_quarter_and_0_excl", "exp_on_negative_values",
    "one_over_one_plus_x_for_x_in_0_1", "one_minus_x_over_one_plus_x_for_x_in_0_1",
    "logistic", "tanh", "get_reciprocal", "count_leading_zeros32",
]


# ---- integer types ---------------------------------------------------------------------------

def wrap(x, bits=32):
    """x (int64 array) as the two's complement integer of ``bits`` bits it wraps to in C."""
    x = np.asarray(x, np.int64)
    half = np.int64(1) << (bits - 1)
    return ((x + half) & ((np.int64(1) << bits) - 1)) - half


def _limits(bits):
    return (INT32_MIN, INT32_MAX) if bits == 32 else (INT16_MIN, INT16_MAX)


def _div_trunc(n, d):
    """n / d rounded toward zero (C's integer division), d > 0."""
    n = np.asarray(n, np.int64)
    q = np.abs(n) // d
    return np.where(n < 0, -q, q)


# ---- gemmlowp primitives (fixedpoint.h, Part 1) ----------------------------------------------

def saturating_rounding_doubling_high_mul(a, b, bits=32):
    """round(a * b / 2^(bits-1)), ties away from zero, on int32 (bits=32) or int16 values;
    the one overflowing case (both the type's minimum) saturates to its maximum (VQRDMULH)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    lo, hi = _limits(bits)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1) << (bits - 2), 1 - (np.int64(1) << (bits - 2)))
    out = wrap(_div_trunc(ab + nudge, np.int64(1) << (bits - 1)), bits)
    return np.where((a == lo) & (b == lo), hi, out)


def saturating_doubling_high_mul(a, b, bits=16):
    """trunc(a * b / 2^(bits-1)) (toward zero, no rounding: SQDMULH), saturating min * min;
    TFLite's reference HardSwish uses it on int16."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    lo, hi = _limits(bits)
    out = wrap(_div_trunc(a * b, np.int64(1) << (bits - 1)), bits)
    return np.where((a == lo) & (b == lo), hi, out)


def rounding_divide_by_pot(x, exponent, bits=32):
    """x / 2^exponent rounded to nearest, ties away from zero (gemmlowp RoundingDivideByPOT),
    0 <= exponent <= 31, on values of the C type of ``bits`` bits (the mask wraps to that type
    as in the C++: for int16 and exponent >= 16 the result is that of the C++ too)."""
    x = np.asarray(x, np.int64)
    exponent = int(exponent)
    if not 0 <= exponent <= 31:
        raise ValueError(f"rounding_divide_by_pot: exponent {exponent} outside [0, 31]")
    mask = int(wrap((1 << exponent) - 1, bits))
    remainder = wrap(x & mask, bits)
    threshold = wrap((mask >> 1) + (x < 0).astype(np.int64), bits)
    return wrap((x >> exponent) + (remainder > threshold).astype(np.int64), bits)


def saturating_rounding_multiply_by_pot(x, exponent, bits=32):
    """x * 2^exponent: a saturating left shift (exponent > 0) or a rounding right shift."""
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent, bits)
    lo, hi = _limits(bits)
    threshold = (1 << (bits - 1 - exponent)) - 1
    out = wrap(x << exponent, bits)
    out = np.where(x > threshold, hi, out)
    return np.where(x < -threshold, lo, out)


def rescale(x, src_integer_bits, dst_integer_bits, bits=32):
    """gemmlowp Rescale: a fixed-point raw value from Q(src) to Q(dst) integer bits."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits, bits)


def _constant(raw32, bits):
    """A gemmlowp fixed-point constant given as its int32 raw value, in the type of ``bits``
    (int16: rounded right by 16, RescaleConstantInitializer)."""
    if bits == 32:
        return np.int64(raw32)
    return np.int64(rounding_divide_by_pot(np.int64(raw32), 32 - bits, 32))


def _one(integer_bits, bits):
    """FixedPoint::One(): the type's maximum for 0 integer bits, else 2^fractional_bits."""
    if integer_bits == 0:
        return np.int64(_limits(bits)[1])
    return np.int64(1) << (bits - 1 - integer_bits)


def _mul(a, b, bits):
    return saturating_rounding_doubling_high_mul(a, b, bits)


def _add(a, b, bits):
    """gemmlowp Add (FixedPoint +, -): plain, wrapping in the C type."""
    return wrap(np.asarray(a, np.int64) + b, bits)


def _add_saturating_if_16(a, b, bits):
    """gemmlowp AddSaturatingIf16Bit: saturating for int16, plain for int32."""
    s = np.asarray(a, np.int64) + b
    if bits == 16:
        return np.clip(s, INT16_MIN, INT16_MAX)
    return wrap(s, bits)


# ---- gemmlowp functions (fixedpoint.h, Part 3) -----------------------------------------------

def exp_on_interval_between_negative_one_quarter_and_0_excl(a, bits=32):
    """exp(a) for a in [-1/4, 0), a and result raw Q0 values (Taylor series around -1/8)."""
    a = np.asarray(a, np.int64)
    constant_term = _constant(1895147668, bits)      # exp(-1/8)
    constant_1_over_3 = _constant(715827883, bits)
    x = _add(a, np.int64(1) << (bits - 1 - 3), bits)  # a + 1/8
    x2 = _mul(x, x, bits)
    x3 = _mul(x2, x, bits)
    x4 = _mul(x2, x2, bits)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2, bits)
    inner = _add(_mul(_add(x4_over_4, x3, bits), constant_1_over_3, bits), x2, bits)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = saturating_rounding_multiply_by_pot(inner, -1, bits)
    return _add_saturating_if_16(
        constant_term,
        _mul(constant_term, _add(x, x4_over_24_plus_x3_over_6_plus_x2_over_2, bits), bits), bits)


# (exponent, raw int32 multiplier exp(-2^exponent)) of exp_on_negative_values' barrel shifter
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits, bits=32):
    """exp(a) for a <= 0: ``a`` raw with ``integer_bits`` integer bits, result raw Q0."""
    a = np.asarray(a, np.int64)
    fractional_bits = bits - 1 - integer_bits
    one_quarter = np.int64(1) << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _add(a & mask, -one_quarter, bits)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0, bits), bits)
    remainder = _add(a_mod_quarter_minus_one_quarter, -a, bits)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            shift = fractional_bits + exponent
            hit = (remainder & (np.int64(1) << shift)) != 0
            result = np.where(hit, _mul(result, _constant(multiplier, bits), bits), result)
    if integer_bits > 5:
        clamp = _constant(-(1 << (36 - integer_bits)), bits)
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, _one(0, bits), result)


def _newton_reciprocal_f2(half_denominator, bits):
    """x ~ 1 / half_denominator in Q2 (gemmlowp's three Newton-Raphson steps from 48/17 -
    32/17 * d)."""
    constant_48_over_17 = _constant(1515870810, bits)
    constant_neg_32_over_17 = _constant(-1010580540, bits)
    one_f2 = _one(2, bits)
    x = _add(constant_48_over_17, _mul(half_denominator, constant_neg_32_over_17, bits), bits)
    for _ in range(3):
        half_denominator_times_x = _mul(half_denominator, x, bits)
        one_minus = _add(one_f2, -half_denominator_times_x, bits)
        x = _add(x, rescale(_mul(x, one_minus, bits), 2 + 2, 2, bits), bits)
    return x


def _rounding_half_sum(a, b, bits):
    """(a + b) / 2 rounded to nearest, ties away from zero (VRHADD)."""
    s = np.asarray(a, np.int64) + b
    sign = np.where(s >= 0, 1, -1)
    return wrap(_div_trunc(s + sign, 2), bits)


def one_over_one_plus_x_for_x_in_0_1(a, bits=32):
    """1 / (1 + a) for a in [0, 1), raw Q0 in and out (Newton-Raphson division)."""
    half_denominator = _rounding_half_sum(a, _one(0, bits), bits)
    x = _newton_reciprocal_f2(half_denominator, bits)
    return rescale(x, 2 - 1, 0, bits)            # Rescale<0>(ExactMulByPot<-1>(x))


def one_minus_x_over_one_plus_x_for_x_in_0_1(a, bits=32):
    """(1 - a) / (1 + a) for a in (0, 1), raw Q0 in and out."""
    half_denominator = _rounding_half_sum(a, _one(0, bits), bits)
    x = _newton_reciprocal_f2(half_denominator, bits)
    return rescale(_add(x, -_one(2, bits), bits), 2, 0, bits)


def logistic(a, integer_bits, bits=32):
    """gemmlowp logistic: 1 / (1 + exp(-a)), ``a`` raw with ``integer_bits``, result raw Q0."""
    a = np.asarray(a, np.int64)
    abs_input = np.where(a > 0, a, wrap(-a, bits))
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(wrap(-abs_input, bits), integer_bits, bits), bits)
    result_if_negative = _add(_one(0, bits), -result_if_positive, bits)
    out = np.where(a > 0, result_if_positive, result_if_negative)
    return np.where(a == 0, _constant(1 << 30, bits), out)


def tanh(a, integer_bits, bits=32):
    """gemmlowp tanh: ``a`` raw with ``integer_bits``, result raw Q0."""
    a = np.asarray(a, np.int64)
    negative = a < 0
    n = np.where(negative, a, wrap(-a, bits))
    # neg_tanh_on_negative_values: ExactMulByPot<1> keeps the raw value, one more integer bit
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1, bits),
                                                 bits)
    out = np.where(negative, wrap(-t, bits), t)
    return np.where(a == 0, 0, out)


def count_leading_zeros32(x):
    """Leading zero bits of x as a uint32 (32 for 0)."""
    u = np.asarray(x, np.int64) & 0xFFFFFFFF
    _, bit_length = np.frexp(u.astype(np.float64))     # exact: a uint32 is exact in double
    return 32 - bit_length.astype(np.int64)


def get_reciprocal(x, x_integer_digits):
    """TFLite GetReciprocal: (raw Q0 of 1 / (x normalised to [1, 2)), num_bits_over_unit) for
    x > 0 raw with ``x_integer_digits`` integer bits."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF
    shifted_sum_minus_one = wrap(shifted - (np.int64(1) << 31), 32)
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one, 32), num_bits_over_unit

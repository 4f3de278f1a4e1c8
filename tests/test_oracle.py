"""The oracle's fixed-point arithmetic against independent exact arithmetic (Python ints,
Fractions, Decimals), and its layers against straightforward per-element Python loops.

The oracle is the ground truth the Cython kernels are compared with, so it is itself checked
here against formulations that share no code with it: floor/Fraction/Decimal maths instead
of nudges, masks and truncating division.
"""
import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from fixnet import oracle

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1

int32s = st.integers(INT32_MIN, INT32_MAX)
multipliers = st.integers(2 ** 30, 2 ** 31 - 1)
shifts = st.integers(-31, 30)


# ---- independent references (Python ints / Fractions only) ---------------------------------

def exact_round_half_away(q):
    """Nearest integer to the rational q, ties away from zero."""
    q = Fraction(q)
    magnitude = math.floor(abs(q) + Fraction(1, 2))
    return magnitude if q >= 0 else -magnitude


def ref_high_mul(a, b):
    """round(a * b / 2^31) with ties toward +inf, saturating the single overflow."""
    if a == b == INT32_MIN:
        return INT32_MAX
    return (a * b + 2 ** 30) // 2 ** 31  # Python // is floor division


def ref_mbqm(acc, m0, shift):
    """TFLite's MultiplyByQuantizedMultiplier written with floor and Fractions."""
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(acc * 2 ** left, INT32_MIN), INT32_MAX)
    return exact_round_half_away(Fraction(ref_high_mul(x, m0), 2 ** right))


def scalar(f, *args):
    return int(np.asarray(f(*args)).item())


# ---- saturating_rounding_doubling_high_mul -------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    (2 ** 30, 2 ** 30, 2 ** 29),                   # 2^60 / 2^31
    (INT32_MIN, INT32_MIN, INT32_MAX),             # the one overflow: saturates
    (INT32_MIN, INT32_MAX, -(2 ** 31 - 1)),        # exact: -2^31 (2^31 - 1) / 2^31
    (INT32_MAX, INT32_MAX, 2 ** 31 - 2),           # (2^31-1)^2 / 2^31 = 2^31 - 2 + 2^-31
    (1, 2 ** 30, 1),                               # +0.5 rounds up
    (-1, 2 ** 30, 0),                              # -0.5 rounds up too (toward +inf)
    (3, 2 ** 30, 2),                               # +1.5 -> 2
    (-3, 2 ** 30, -1),                             # -1.5 -> -1
    (-5, 2 ** 29, -1),                             # -1.25 -> -1
    (-7, 2 ** 29, -2),                             # -1.75 -> -2
    (0, INT32_MIN, 0),
])
def test_high_mul_hand_checked(a, b, expected):
    assert scalar(oracle.saturating_rounding_doubling_high_mul, a, b) == expected


@settings(max_examples=500, deadline=None)
@given(int32s, int32s)
@example(INT32_MIN, INT32_MIN)
@example(INT32_MIN, 1)
@example(INT32_MAX, INT32_MIN)
def test_high_mul_is_round_half_up_of_product(a, b):
    got = scalar(oracle.saturating_rounding_doubling_high_mul, a, b)
    assert got == ref_high_mul(a, b)
    # The spec's own formulation: nudge, then C division (truncation toward zero).
    if not a == b == INT32_MIN:
        ab = a * b
        nudge = 2 ** 30 if ab >= 0 else 1 - 2 ** 30
        assert got == math.trunc(Fraction(ab + nudge, 2 ** 31))
        assert abs(got - Fraction(ab, 2 ** 31)) <= Fraction(1, 2)


def test_high_mul_broadcasts_and_returns_int32():
    a = np.array([[1], [-3], [2 ** 30]])
    b = np.array([2 ** 30, 2 ** 29])
    got = oracle.saturating_rounding_doubling_high_mul(a, b)
    assert got.dtype == np.int32 and got.shape == (3, 2)
    expected = [[ref_high_mul(int(x), int(y)) for y in b] for x in a[:, 0]]
    assert got.tolist() == expected


def test_high_mul_rejects_values_outside_int32():
    with pytest.raises(ValueError, match="a"):
        oracle.saturating_rounding_doubling_high_mul(2 ** 31, 1)


# ---- rounding_divide_by_pot ----------------------------------------------------------------

@pytest.mark.parametrize("x, exponent, expected", [
    (-3, 1, -2),     # -1.5 -> -2 (away from zero)
    (-5, 2, -1),     # -1.25 -> -1
    (-6, 2, -2),     # -1.5 -> -2
    (-7, 2, -2),     # -1.75 -> -2
    (-2, 2, -1),     # -0.5 -> -1
    (-1, 2, 0),      # -0.25 -> 0
    (3, 1, 2),       # 1.5 -> 2
    (5, 2, 1),       # 1.25 -> 1
    (6, 2, 2),       # 1.5 -> 2
    (2, 2, 1),       # 0.5 -> 1
    (7, 0, 7),       # exponent 0 is the identity
    (-7, 0, -7),
    (-1, 31, 0),
    (INT32_MIN, 31, -1),           # exactly -1
    (INT32_MAX, 31, 1),            # 0.99999... -> 1
    (-(2 ** 30), 31, -1),          # -0.5 -> -1
    (2 ** 30, 31, 1),              # 0.5 -> 1
    (-(2 ** 30) + 1, 31, 0),       # just above -0.5 -> 0
])
def test_rounding_divide_by_pot_hand_checked(x, exponent, expected):
    assert scalar(oracle.rounding_divide_by_pot, x, exponent) == expected


@settings(max_examples=500, deadline=None)
@given(int32s, st.integers(0, 31))
def test_rounding_divide_by_pot_is_round_half_away(x, exponent):
    got = scalar(oracle.rounding_divide_by_pot, x, exponent)
    assert got == exact_round_half_away(Fraction(x, 2 ** exponent))


def test_rounding_divide_by_pot_rejects_bad_exponent():
    with pytest.raises(ValueError, match="exponent"):
        oracle.rounding_divide_by_pot(5, 32)
    with pytest.raises(ValueError, match="exponent"):
        oracle.rounding_divide_by_pot(5, -1)


# ---- multiply_by_quantized_multiplier ------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(int32s, st.one_of(multipliers, st.just(0)), shifts)
@example(INT32_MIN, 2 ** 31 - 1, 0)
@example(INT32_MAX, 2 ** 31 - 1, 30)
@example(-(2 ** 30), 2 ** 30, 1)
@example(1, 2 ** 30, -31)
def test_mbqm_matches_independent_reference(acc, m0, shift):
    assert scalar(oracle.multiply_by_quantized_multiplier, acc, m0, shift) == ref_mbqm(acc, m0, shift)


@settings(max_examples=500, deadline=None)
@given(int32s, multipliers, shifts)
def test_mbqm_double_rounding_error_is_bounded(acc, m0, shift):
    left, right = max(shift, 0), max(-shift, 0)
    assume(INT32_MIN <= acc * 2 ** left <= INT32_MAX)  # no saturation of the left shift
    got = scalar(oracle.multiply_by_quantized_multiplier, acc, m0, shift)
    exact = Fraction(acc * m0 * 2 ** left, 2 ** (31 + right))
    # First rounding (high mul) is off by <= 1/2 unit of 2^-right of the result; the second
    # (divide by 2^right) by <= 1/2. With right == 0 there is only the first.
    bound = Fraction(1, 2) + (Fraction(1, 2 ** (right + 1)) if right else 0)
    assert abs(got - exact) <= bound
    assert abs(got - exact_round_half_away(exact)) <= 1
    if right == 0:
        # A single rounding: nearest, ties toward +inf.
        assert got == math.floor(exact + Fraction(1, 2))
    if (acc * 2 ** left * m0) % 2 ** 31 == 0:
        # The high mul is exact, so only the rounding divide rounds: exact half-away.
        assert got == exact_round_half_away(exact)


def test_mbqm_saturates_the_left_shift():
    # 2^30 * 2^2 = 2^32 saturates to 2^31 - 1 before the multiply (TFLite: undefined).
    got = scalar(oracle.multiply_by_quantized_multiplier, 2 ** 30, 2 ** 30, 2)
    assert got == ref_high_mul(INT32_MAX, 2 ** 30) == 2 ** 30
    got = scalar(oracle.multiply_by_quantized_multiplier, INT32_MIN, 2 ** 30, 1)
    assert got == ref_high_mul(INT32_MIN, 2 ** 30) == -(2 ** 30)


def test_mbqm_int32_min_corner():
    # acc = m0 = INT32_MIN is the high mul's one overflow; it saturates to INT32_MAX.
    assert scalar(oracle.multiply_by_quantized_multiplier, INT32_MIN, INT32_MIN, 0) == INT32_MAX
    # Reached through the left shift: -2^30 * 2 = INT32_MIN exactly.
    assert scalar(oracle.multiply_by_quantized_multiplier, -(2 ** 30), INT32_MIN, 1) == INT32_MAX


def test_mbqm_with_multiplier_one_half_times_power_of_two():
    # m0 = 2^30 with shift s means a factor of exactly 2^(s - 1).
    acc = np.arange(-1000, 1001)
    assert np.array_equal(oracle.multiply_by_quantized_multiplier(acc, 2 ** 30, 1), acc)
    assert np.array_equal(oracle.multiply_by_quantized_multiplier(acc, 2 ** 30, 3), 4 * acc)
    halves = oracle.multiply_by_quantized_multiplier(acc, 2 ** 30, -1)  # acc / 4
    assert halves.tolist() == [ref_mbqm(int(a), 2 ** 30, -1) for a in acc]


def test_mbqm_rejects_shift_out_of_range():
    with pytest.raises(ValueError, match="shift"):
        oracle.multiply_by_quantized_multiplier(1, 2 ** 30, 31)
    with pytest.raises(ValueError, match="shift"):
        oracle.multiply_by_quantized_multiplier(1, 2 ** 30, -32)


# ---- quantize_multiplier -------------------------------------------------------------------

@pytest.mark.parametrize("real, expected", [
    (1.0, (2 ** 30, 1)),
    (0.5, (2 ** 30, 0)),
    (0.75, (3 * 2 ** 29, 0)),
    (2.0 ** -32, (2 ** 30, -31)),                   # smallest representable power of two
    (2.0 ** -33, (0, 0)),                           # would need shift -32
    (1e-12, (0, 0)),
    (0.0, (0, 0)),
    (1.0 - 2.0 ** -40, (2 ** 30, 1)),               # mantissa rounds up to 2^31: renormalised
    (2.0 ** -32 * (1 - 2.0 ** -40), (2 ** 30, -31)),  # ... and that brings it back in range
    (2.0 ** 29, (2 ** 30, 30)),
])
def test_quantize_multiplier_hand_checked(real, expected):
    assert oracle.quantize_multiplier(real) == expected


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=2.0 ** -31, max_value=2.0 ** 30 - 1,
                 allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_round_trips(real):
    m0, shift = oracle.quantize_multiplier(real)
    assert isinstance(m0, int) and isinstance(shift, int)
    assert 2 ** 30 <= m0 < 2 ** 31
    assert -31 <= shift <= 30
    represented = Fraction(m0) * Fraction(2) ** (shift - 31)
    assert abs(represented - Fraction(real)) <= Fraction(real) * Fraction(1, 2 ** 31)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-6, max_value=100.0), st.integers(-(2 ** 20), 2 ** 20))
def test_quantized_multiplier_scales_accumulators(real, acc):
    m0, shift = oracle.quantize_multiplier(real)
    got = scalar(oracle.multiply_by_quantized_multiplier, acc, m0, shift)
    # Representation error (2^-31 relative) plus the two roundings (<= 3/4).
    assert abs(got - Fraction(acc) * Fraction(real)) <= Fraction(3, 4) + abs(acc) * Fraction(real) / 2 ** 31 + Fraction(1, 2 ** 20)


@pytest.mark.parametrize("real", [-1.0, -1e-30, float("nan"), float("inf"), 2.0 ** 30, 1e12])
def test_quantize_multiplier_rejects(real):
    with pytest.raises(ValueError):
        oracle.quantize_multiplier(real)


# ---- round_half_away, quantize, dequantize -------------------------------------------------

def test_round_half_away_ties_and_edges():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994, -0.49999999999999994,
                  2.0 ** 52 + 1, -(2.0 ** 52) - 1, 2.0 ** 52 - 0.5, 1e300, -1e300, 0.0, -0.0])
    expected = [1, 2, 3, -1, -2, -3, 0, 0, 2 ** 52 + 1, -(2 ** 52) - 1, 2 ** 52, 1e300, -1e300, 0, 0]
    got = oracle.round_half_away(v)
    assert got.dtype == np.float64
    assert got.tolist() == expected
    assert np.isnan(oracle.round_half_away(np.nan))
    assert oracle.round_half_away(np.array([np.inf, -np.inf])).tolist() == [np.inf, -np.inf]


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_round_half_away_is_decimal_round_half_up(v):
    # Decimal's ROUND_HALF_UP rounds ties away from zero; Decimal(v) is v exactly.
    expected = int(Decimal(v).to_integral_value(rounding=ROUND_HALF_UP))
    assert float(oracle.round_half_away(v)) == expected


def ref_quantize(v, scale, zp):
    if not math.isfinite(v):
        return zp
    r = int(Decimal(v / scale).to_integral_value(rounding=ROUND_HALF_UP))  # v / scale: double
    return min(max(r + zp, -128), 127)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32), max_size=40),
       st.floats(min_value=1e-6, max_value=1e3), st.integers(-128, 127))
def test_quantize_against_decimal(values, scale, zp):
    x = np.array(values, dtype=np.float32)
    got = oracle.quantize(x, scale, zp)
    assert got.dtype == np.int8
    assert got.tolist() == [ref_quantize(float(v), scale, zp) for v in x]


def test_quantize_ties_round_away_from_zero():
    scale = 0.25
    x = np.array([0.125, -0.125, 0.375, -0.375, 31.875, -32.125], dtype=np.float32)
    assert oracle.quantize(x, scale, 0).tolist() == [1, -1, 2, -2, 127, -128]
    assert oracle.quantize(x, scale, 3).tolist() == [4, 2, 5, 1, 127, -126]


def test_quantize_non_finite_map_to_zero_point():
    x = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    assert oracle.quantize(x, 0.5, -7).tolist() == [-7, -7, -7, -5]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-128, 127), max_size=40),
       st.floats(min_value=1e-30, max_value=1e30), st.integers(-128, 127))
def test_dequantize_is_float32_of_exact_double_product(values, scale, zp):
    got = oracle.dequantize(np.array(values, dtype=np.int8), scale, zp)
    assert got.dtype == np.float32
    expected = [np.float32(float(q - zp) * scale) for q in values]
    assert np.array_equal(got, np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_quantize_and_dequantize_reject_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        oracle.quantize(np.zeros(3, np.float32), scale, 0)
    with pytest.raises(ValueError, match="scale"):
        oracle.dequantize(np.zeros(3, np.int8), scale, 0)


# ---- layers against per-element Python loops -----------------------------------------------

def wrap_int32(v):
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


@st.composite
def dense_cases(draw):
    n, k, c = draw(st.integers(0, 4)), draw(st.integers(0, 12)), draw(st.integers(0, 6))
    x = draw(st.lists(st.lists(st.integers(-128, 127), min_size=k, max_size=k), min_size=n, max_size=n))
    w = draw(st.lists(st.lists(st.integers(-127, 127), min_size=k, max_size=k), min_size=c, max_size=c))
    bias = draw(st.lists(int32s, min_size=c, max_size=c))
    m0 = draw(st.lists(multipliers, min_size=c, max_size=c))
    shift = draw(st.lists(st.integers(-31, 8), min_size=c, max_size=c))
    lo, hi = sorted(draw(st.tuples(st.integers(-128, 127), st.integers(-128, 127))))
    return n, k, c, x, w, bias, m0, shift, draw(st.integers(-128, 127)), lo, hi


@settings(max_examples=200, deadline=None)
@given(dense_cases())
def test_dense_against_python_loops(case):
    n, k, c, x, w, bias, m0, shift, out_zp, lo, hi = case
    as2d = lambda rows, cols, dtype: np.array(rows, dtype=dtype).reshape(len(rows), cols)
    xa, wa = as2d(x, k, np.int8), as2d(w, k, np.int8)
    args = (xa, wa, np.array(bias, np.int32), np.array(m0, np.int32), np.array(shift, np.int32))
    got = oracle.dense(*args, out_zp, lo, hi)
    acc64 = oracle.dense_accumulators(*args[:3])
    assert got.dtype == np.int8 and got.shape == (n, c)
    for i in range(n):
        for j in range(c):
            acc = bias[j] + sum(x[i][t] * w[j][t] for t in range(k))
            assert acc64[i, j] == acc
            expected = min(max(out_zp + ref_mbqm(wrap_int32(acc), m0[j], shift[j]), lo), hi)
            assert got[i, j] == expected


@settings(max_examples=200, deadline=None)
@given(dense_cases(), st.integers(0, 2 ** 32 - 1))
def test_channel_affine_against_python_loops(case, seed):
    n, _, c, _, _, bias, m0, shift, out_zp, lo, hi = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 127, size=(n, c), endpoint=True).astype(np.int8)
    w = rng.integers(-128, 127, size=c, endpoint=True).astype(np.int8)
    got = oracle.channel_affine(x, w, np.array(bias, np.int32), np.array(m0, np.int32),
                                np.array(shift, np.int32), out_zp, lo, hi)
    for i in range(n):
        for j in range(c):
            acc = wrap_int32(bias[j] + int(x[i, j]) * int(w[j]))
            assert got[i, j] == min(max(out_zp + ref_mbqm(acc, m0[j], shift[j]), lo), hi)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-128, 127), max_size=30), st.integers(-128, 127), multipliers,
       st.integers(-31, 30), st.integers(-128, 127))
def test_requantize_against_python_loop(x, in_zp, m0, shift, out_zp):
    got = oracle.requantize(np.array(x, np.int8), in_zp, m0, shift, out_zp, -128, 127)
    assert got.tolist() == [min(max(out_zp + ref_mbqm(v - in_zp, m0, shift), -128), 127) for v in x]


def test_lookup_indexes_by_value_plus_128():
    table = np.arange(127, -129, -1).astype(np.int8)  # table[i] = 127 - i, so out = -1 - x
    x = np.array([[-128, 0], [127, -1]], dtype=np.int8)
    got = oracle.lookup(x, table)
    assert got.dtype == np.int8
    assert got.tolist() == [[127, -1], [-128, 0]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-128, 127), min_size=1, max_size=10), min_size=0, max_size=4),
       st.floats(min_value=0.01, max_value=1.0), st.integers(4, 20), st.sampled_from([255, 256]))
def test_softmax_against_python_loops(rows, input_scale, k, levels):
    width = min(len(r) for r in rows) if rows else 1
    x = np.array([r[:width] for r in rows], dtype=np.int8).reshape(len(rows), width)
    table = [round(2 ** k * math.exp(-input_scale * d)) for d in range(256)]
    got = oracle.softmax(x, np.array(table, np.int32), levels)
    for i, row in enumerate(x.tolist()):
        e = [table[max(row) - v] for v in row]
        s = sum(e)
        for j in range(width):
            assert got[i, j] == min(max((levels * e[j] + s // 2) // s - 128, -128), 127)
        # Probabilities: the row sums to about 1 (levels steps of 1/levels), within rounding.
        assert abs(sum(int(v) + 128 for v in got[i]) - levels) <= width


def test_softmax_rejects_tables_that_could_overflow():
    table = np.full(256, 2 ** 23, np.int32)
    with pytest.raises(ValueError, match="2\\^31"):
        oracle.softmax(np.zeros((1, 4), np.int8), table)  # 256 * 2^23 = 2^31
    table = np.full(256, 2 ** 20, np.int32)
    oracle.softmax(np.zeros((1, 2047), np.int8), table)  # 2047 * 2^20 < 2^31: accepted
    with pytest.raises(ValueError, match="2\\^31"):
        oracle.softmax(np.zeros((1, 2048), np.int8), table)  # 2048 * 2^20 = 2^31
    table[5] = 2 ** 20 + 1
    with pytest.raises(ValueError, match="exp_table"):
        oracle.softmax(np.zeros((1, 4), np.int8), table)


# ---- int16 activations: requantize between types, lookup, softmax ---------------------------

ACT_RANGES = {8: (-128, 127), 16: (-32768, 32767)}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([8, 16]), st.sampled_from([8, 16]), st.data(),
       st.one_of(multipliers, st.just(0)), shifts)
def test_requantize_between_types_against_python_loop(in_bits, out_bits, data, m0, shift):
    lo, hi = ACT_RANGES[in_bits]
    x = data.draw(st.lists(st.integers(lo, hi), max_size=30))
    in_zp = data.draw(st.integers(-128, 127)) if in_bits == 8 else 0
    out_zp = data.draw(st.integers(-128, 127)) if out_bits == 8 else 0
    out_lo, out_hi = ACT_RANGES[out_bits]
    in_dtype, out_dtype = (np.int8 if b == 8 else np.int16 for b in (in_bits, out_bits))
    got = oracle.requantize(np.array(x, in_dtype), in_zp, m0, shift, out_zp, out_lo, out_hi,
                            out_dtype=out_dtype)
    assert got.dtype == out_dtype
    assert got.tolist() == [min(max(out_zp + ref_mbqm(v - in_zp, m0, shift), out_lo), out_hi)
                            for v in x]


def test_requantize_int16_hand_checked():
    # factor 1/256 (m0 = 2^30, shift = -7), two roundings: 127 / 2 = 63.5 -> 64 (ties up),
    # 64 / 128 = 0.5 -> 1 (ties away); -32768 / 256 = -128; 32767 -> 16384 / 128 = 128 -> 127
    x = np.array([127, -32768, 32767, -384], np.int16)
    assert oracle.requantize(x, 0, 2 ** 30, -7, 0, -128, 127, out_dtype=np.int8).tolist() == \
        [1, -128, 127, -2]
    # int8 -> int16 by 2^8 exactly (m0 = 2^30, shift = 9): (x - in_zp) * 256, clamped
    x8 = np.array([-128, 0, 127], np.int8)
    got = oracle.requantize(x8, 5, 2 ** 30, 9, 0, -32768, 32767, out_dtype=np.int16)
    assert got.dtype == np.int16 and got.tolist() == [-32768, -5 * 256, 122 * 256]  # -34048
    # int16 -> int16 (default out_dtype: x's), clamped to a ReLU bound
    got = oracle.requantize(np.array([-5, 7], np.int16), 0, 2 ** 30, 1, 0, 0, 32767)
    assert got.dtype == np.int16 and got.tolist() == [0, 7]


@pytest.mark.parametrize("call, match", [
    (lambda: oracle.requantize(np.zeros(2, np.int16), 1, 2 ** 30, 0, 0, -128, 127), "in_zp"),
    (lambda: oracle.requantize(np.zeros(2, np.int8), 0, 2 ** 30, 0, 1, -5, 5, np.int16), "out_zp"),
    (lambda: oracle.requantize(np.zeros(2, np.int16), 0, 2 ** 30, 0, 0, -200, 5, np.int8), "act_min"),
    (lambda: oracle.requantize(np.zeros(2, np.int8), 0, 2 ** 30, 0, 0, -40000, 5, np.int16), "act_min"),
])
def test_requantize_int16_rejects(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_lookup_int16_indexes_by_value_plus_32768():
    table = np.arange(32767, -32769, -1).astype(np.int16)  # table[i] = 32767 - i: -1 - x
    x = np.array([[-32768, 0], [32767, -1]], dtype=np.int16)
    got = oracle.lookup(x, table)
    assert got.dtype == np.int16
    assert got.tolist() == [[32767, -1], [-32768, 0]]
    with pytest.raises(ValueError, match="65536"):
        oracle.lookup(x, np.zeros(256, np.int16))


def test_softmax_int16_hand_checked():
    table = np.array([4, 2], np.int32)                 # d = 0 -> 4, d = 1 -> 2, d >= 2 -> 0
    # e = [4, 2], s = 6: (32767 * 4 + 3) // 6 = 21845, (32767 * 2 + 3) // 6 = 10922
    got = oracle.softmax(np.array([[0, -1], [9, 2]], np.int16), table)
    assert got.dtype == np.int16 and got.tolist() == [[21845, 10922], [32767, 0]]
    # levels 4: (4 * 4 + 3) // 6 = 3, (4 * 2 + 3) // 6 = 1
    assert oracle.softmax(np.array([[0, -1]], np.int16), table, 4).tolist() == [[3, 1]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-32768, 32767), min_size=1, max_size=8), min_size=0,
                max_size=4),
       st.floats(min_value=1e-4, max_value=1.0), st.integers(4, 26), st.integers(1, 400),
       st.sampled_from([32767, 1000, 1]))
def test_softmax_int16_against_python_loops(rows, input_scale, k, length, levels):
    width = min(len(r) for r in rows) if rows else 1
    x = np.array([r[:width] for r in rows], dtype=np.int16).reshape(len(rows), width)
    table = [round(2 ** k * math.exp(-input_scale * d)) for d in range(length)]
    got = oracle.softmax(x, np.array(table, np.int32), levels)
    assert got.dtype == np.int16
    for i, row in enumerate(x.tolist()):
        e = [table[max(row) - v] if max(row) - v < length else 0 for v in row]
        s = sum(e)
        for j in range(width):
            assert got[i, j] == (levels * e[j] + s // 2) // s
        assert abs(sum(int(v) for v in got[i]) - levels) <= width

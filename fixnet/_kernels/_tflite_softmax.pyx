# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Softmax on int8 logits exactly as TensorFlow Lite's reference kernel computes it
(reference_ops::Softmax, OpResolverType.BUILTIN_REF): gemmlowp's fixed-point exp of each
difference from the row's maximum, summed in Q12.19, its fixed-point reciprocal, one rounding
shift per row. Output: int8 probabilities with scale 1/256, zero point -128.

Bit-exact with ``fixnet.oracle.tflite.softmax_reference``, which takes the same ``params``
mapping (TFLITE_SOFTMAX_PARAMS: input_multiplier, input_left_shift, diff_min, as TFLite's
Prepare computes them: ``fixnet.oracle.tflite.softmax_params``). Private: fixnet.runtime plans
the calls through fixnet.tflite.steps.TfliteSoftmaxStep.

A difference d = x_i - max(x) takes only 256 values (-255..0), so the call tabulates, once,
each difference's exp (raw Q0.31) and its Q12.19 term of the sum with the integer code of
the kernel below; a row is then a table lookup, an int32 sum, a reciprocal and a multiply.

TFLite's reference kernel aborts the process (TFLITE_CHECK) on a row whose exponentials sum
to 512 or more (more than 511 classes near the row's maximum): its output shift would exceed
31. Here such a row gets the exact value of the same formula, a rounding shift by more than
31 of an int32 below 2^31: 0, so every output is -128.
"""
cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t, INT32_MAX, INT32_MIN

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport (
    check_params,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

import numpy as np

cdef enum:
    # Release the GIL only for calls over at least this many elements.
    NOGIL_MIN_ELEMENTS = 16384
    # The sum of a row is C terms of at most 2^19 (exp(0) in Q12.19): int32 needs C < 4096.
    MAX_CLASSES = 4095

ctypedef struct tflite_softmax_params:
    int32_t input_multiplier, input_left_shift, diff_min

cdef tflite_softmax_params _fields
TFLITE_SOFTMAX_PARAMS = tuple(<dict>_fields)


# ---- gemmlowp fixed point on int32 raw values (fixedpoint.h) --------------------------------

cdef inline int32_t add32(int32_t a, int32_t b) noexcept nogil:
    """gemmlowp Add: a + b wrapping modulo 2^32 (defined here; undefined in the C++)."""
    return <int32_t>(<uint32_t>a + <uint32_t>b)


cdef inline int32_t sub32(int32_t a, int32_t b) noexcept nogil:
    """gemmlowp Sub: a - b wrapping modulo 2^32."""
    return <int32_t>(<uint32_t>a - <uint32_t>b)


cdef inline int32_t mul_by_pot_saturating(int32_t x, int exponent) noexcept nogil:
    """SaturatingRoundingMultiplyByPOT with 0 < exponent < 31: x * 2^exponent, saturated."""
    cdef int32_t threshold = (<int32_t>1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return <int32_t>(<uint32_t>x << exponent)


cdef inline int32_t exp_on_quarter_interval(int32_t a) noexcept nogil:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    cdef int32_t constant_term = 1895147668        # exp(-1/8)
    cdef int32_t constant_1_over_3 = 715827883
    cdef int32_t x = add32(a, <int32_t>1 << 28)    # a + 1/8
    cdef int32_t x2 = saturating_rounding_doubling_high_mul(x, x)
    cdef int32_t x3 = saturating_rounding_doubling_high_mul(x2, x)
    cdef int32_t x4 = saturating_rounding_doubling_high_mul(x2, x2)
    cdef int32_t x4_over_4 = rounding_divide_by_pot(x4, 2)
    cdef int32_t inner = add32(saturating_rounding_doubling_high_mul(add32(x4_over_4, x3),
                                                                     constant_1_over_3), x2)
    cdef int32_t poly = rounding_divide_by_pot(inner, 1)
    return add32(constant_term,
                 saturating_rounding_doubling_high_mul(constant_term, add32(x, poly)))


cdef inline int32_t exp_on_negative_values_q5(int32_t a) noexcept nogil:
    """exp(a) for a <= 0 in Q5.26 (5 integer bits), result Q0.31."""
    cdef int32_t one_quarter = <int32_t>1 << 24
    cdef int32_t a_mod = sub32(a & (one_quarter - 1), one_quarter)
    cdef int32_t result = exp_on_quarter_interval(mul_by_pot_saturating(a_mod, 5))
    cdef int32_t remainder = sub32(a_mod, a)
    # barrel shifter: remainder bit 26 + k selects a factor exp(-2^k), k = -2..4
    if remainder & (<int32_t>1 << 24):
        result = saturating_rounding_doubling_high_mul(result, 1672461947)
    if remainder & (<int32_t>1 << 25):
        result = saturating_rounding_doubling_high_mul(result, 1302514674)
    if remainder & (<int32_t>1 << 26):
        result = saturating_rounding_doubling_high_mul(result, 790015084)
    if remainder & (<int32_t>1 << 27):
        result = saturating_rounding_doubling_high_mul(result, 290630308)
    if remainder & (<int32_t>1 << 28):
        result = saturating_rounding_doubling_high_mul(result, 39332535)
    if remainder & (<int32_t>1 << 29):
        result = saturating_rounding_doubling_high_mul(result, 720401)
    if remainder & (<int32_t>1 << 30):
        result = saturating_rounding_doubling_high_mul(result, 242)
    if a == 0:
        return INT32_MAX                          # One() of Q0.31
    return result


cdef inline int32_t one_over_one_plus_x(int32_t a) noexcept nogil:
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out (three Newton-Raphson steps in Q2.29)."""
    cdef int64_t s = <int64_t>a + INT32_MAX
    cdef int32_t half_denominator = <int32_t>((s + (1 if s >= 0 else -1)) // 2)
    cdef int32_t x = add32(1515870810,            # 48/17 - 32/17 * d
                           saturating_rounding_doubling_high_mul(half_denominator, -1010580540))
    cdef int32_t one_minus
    cdef int i
    for i in range(3):
        one_minus = sub32(<int32_t>1 << 29,
                          saturating_rounding_doubling_high_mul(half_denominator, x))
        x = add32(x, mul_by_pot_saturating(saturating_rounding_doubling_high_mul(x, one_minus), 2))
    return mul_by_pot_saturating(x, 1)


cdef inline int count_leading_zeros(uint32_t v) noexcept nogil:
    cdef int n = 0
    if v == 0:
        return 32
    while not (v & 0x80000000u):
        v <<= 1
        n += 1
    return n


# ---- the kernel ------------------------------------------------------------------------------

cdef void tflite_softmax_impl(const int8_t* x, int8_t* out, Py_ssize_t n_rows,
                              Py_ssize_t n_cols, const int32_t* exp_of, const int32_t* term_of,
                              int32_t* e) noexcept nogil:
    """Per row: m = max(x), e_i = exp_of[m - x_i], s = sum term_of[m - x_i] (Q12.19, int32 by
    C <= 4095), (r, k) = GetReciprocal(s, 12), out_i = clamp(RDBP(SRDHM(r, e_i), k + 23)
    - 128); exp_of and term_of are 0 where m - x_i > -diff_min, so those give -128."""
    cdef Py_ssize_t r, i
    cdef const int8_t* row
    cdef int8_t* out_row
    cdef int32_t row_max, total, recip, v, q
    cdef int headroom_plus_one, exponent
    for r in range(n_rows):
        row = x + r * n_cols
        out_row = out + r * n_cols
        row_max = row[0]
        for i in range(1, n_cols):
            row_max = row[i] if row[i] > row_max else row_max
        total = 0
        for i in range(n_cols):
            e[i] = exp_of[row_max - row[i]]
            total += term_of[row_max - row[i]]
        headroom_plus_one = count_leading_zeros(<uint32_t>total)
        recip = one_over_one_plus_x(<int32_t>((<uint32_t>total << headroom_plus_one)
                                              - (<uint32_t>1 << 31)))
        exponent = 12 - headroom_plus_one + 31 - 8
        if exponent > 31:
            for i in range(n_cols):
                out_row[i] = -128
            continue
        for i in range(n_cols):
            v = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(recip, e[i]),
                                       exponent)
            q = v - 128
            out_row[i] = <int8_t>(q if q < 127 else 127)    # q >= -128: v >= 0


@cython.auto_pickle(False)
cdef class TfliteSoftmaxCall(KernelCall):
    """tflite_softmax with its arguments checked once and its per-difference tables made."""
    cdef object arrays
    cdef const int8_t* x
    cdef int8_t* out
    cdef Py_ssize_t n_rows, n_cols
    cdef int32_t exp_of[256]
    cdef int32_t term_of[256]
    cdef object scratch
    cdef int32_t* e

    def __init__(self, x, params, out):
        cdef const int8_t[:, ::1] x8 = x
        cdef int8_t[:, ::1] out8 = out
        cdef tflite_softmax_params p
        check_params("tflite_softmax", params, TFLITE_SOFTMAX_PARAMS)
        p = params
        if out8.shape[0] != x8.shape[0] or out8.shape[1] != x8.shape[1]:
            raise ValueError(f"tflite_softmax: out has shape ({out8.shape[0]}, {out8.shape[1]}), "
                             f"expected the shape of x, ({x8.shape[0]}, {x8.shape[1]})")
        if x8.shape[1] > MAX_CLASSES:
            raise ValueError(f"tflite_softmax: {x8.shape[1]} classes: at most {MAX_CLASSES} "
                             f"(the int32 sum of a row's Q12.19 exponentials)")
        self.set_tables(p)
        self.n_rows, self.n_cols = x8.shape[0], x8.shape[1]
        self.x = &x8[0, 0] if self.n_rows * self.n_cols else NULL
        self.out = &out8[0, 0] if self.n_rows * self.n_cols else NULL
        self.arrays = (x8, out8)
        self.scratch = np.zeros(max(self.n_cols, 1), np.int32)
        self.e = <int32_t*><size_t>self.scratch.ctypes.data
        self.n_tasks = 1
        self.work_share = <double>self.n_rows * self.n_cols / NOGIL_MIN_ELEMENTS

    cdef int set_tables(self, tflite_softmax_params p) except -1:
        """exp_of[k], term_of[k] for the difference d = -k: the exp of SRDHM(d * 2^left_shift,
        multiplier) in Q5.26 and its Q12.19 rounding (0 for d < diff_min)."""
        cdef int k
        cdef int32_t d, rescaled, ex
        if p.input_multiplier < (<int32_t>1 << 30):
            raise ValueError(f"tflite_softmax: input_multiplier = {p.input_multiplier} must be "
                             f"in [2^30, 2^31)")
        if not 0 <= p.input_left_shift <= 30:
            raise ValueError(f"tflite_softmax: input_left_shift = {p.input_left_shift} must be "
                             f"in [0, 30]")
        if p.diff_min > 0 or <int64_t>(-p.diff_min) * (<int64_t>1 << p.input_left_shift) > INT32_MAX:
            raise ValueError(f"tflite_softmax: diff_min = {p.diff_min} must be <= 0 with "
                             f"-diff_min * 2^input_left_shift < 2^31")
        for k in range(256):
            d = -k
            if d < p.diff_min:
                self.exp_of[k] = 0
                self.term_of[k] = 0
                continue
            rescaled = saturating_rounding_doubling_high_mul(d * (<int32_t>1 << p.input_left_shift),
                                                             p.input_multiplier)
            ex = exp_on_negative_values_q5(rescaled)
            self.exp_of[k] = ex
            self.term_of[k] = rounding_divide_by_pot(ex, 12)
        return 0

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.n_rows == 0 or self.n_cols == 0:
            return
        tflite_softmax_impl(self.x, self.out, self.n_rows, self.n_cols, self.exp_of,
                            self.term_of, self.e)

    def tables(self):
        """(exp_of, term_of): int32 [256] each, entry k for the difference -k (tests)."""
        return (np.array(<int32_t[:256]>self.exp_of), np.array(<int32_t[:256]>self.term_of))


def tflite_softmax(x, params, out):
    """Row-wise softmax of int8 x [N, C] (C <= 4095) into int8 out [N, C] as TFLite's
    reference kernel computes it; ``params``: {input_multiplier, input_left_shift, diff_min}
    (fixnet.oracle.tflite.softmax_params). Probabilities: scale 1/256, zero point -128."""
    TfliteSoftmaxCall(x, params, out)()

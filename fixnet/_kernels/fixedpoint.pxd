# cython: language_level=3
"""Inline nogil helpers shared by the integer kernels.

Every helper here is bit-exact with the function of the same name in ``fixnet/oracle.py``,
which is the written-down contract; read the oracle for the maths, read this for the C.

Rounding conventions are those of gemmlowp / TFLite (Jacob et al., CVPR 2018), with one
deliberate difference: where TFLite's C++ has undefined behaviour on overflow (the left shift
in multiply_by_quantized_multiplier, int32 accumulators that wrap), we define the result:
the left shift saturates to int32, accumulators wrap modulo 2^32 (unsigned arithmetic, which
C defines), and the zero point is added to the requantized value in int64 before the clamp.

Right shifts of negative int32 values are arithmetic: implementation-defined in C, and
arithmetic on every compiler and target fixnet builds with (gcc, clang, MSVC).
"""
cimport cython
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t, uint64_t, INT32_MIN, INT32_MAX

# Length of the int16 copy of an input row that dense keeps on the stack (8 KiB). Within one
# block a dot product of int8 values is at most 4096 * 128 * 128 = 2^26 in magnitude, so the
# per-block int32 sums cannot overflow; blocks are combined with wrapping unsigned adds.
cdef enum:
    DOT_BLOCK = 4096


cdef inline int32_t saturate_to_int32(int64_t x) noexcept nogil:
    """Clamp an int64 to [INT32_MIN, INT32_MAX]."""
    if x > INT32_MAX:
        return INT32_MAX
    if x < INT32_MIN:
        return INT32_MIN
    return <int32_t>x


cdef inline int32_t wrapping_add_int32(int32_t a, int32_t b) noexcept nogil:
    """a + b modulo 2^32, as two's complement int32 (defined, unlike signed overflow)."""
    return <int32_t>(<uint32_t>a + <uint32_t>b)


@cython.cdivision(True)
cdef inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) noexcept nogil:
    """High 32 bits of 2*a*b, rounded to nearest (ties toward +inf); saturates the one
    overflowing case a == b == INT32_MIN to INT32_MAX."""
    cdef int64_t ab, nudge
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = <int64_t>a * <int64_t>b
    if ab >= 0:
        nudge = <int64_t>1 << 30
    else:
        nudge = 1 - (<int64_t>1 << 30)
    # C division truncates toward zero; together with the sign-dependent nudge this is
    # floor((ab + 2^30) / 2^31).
    return <int32_t>((ab + nudge) // (<int64_t>1 << 31))


cdef inline int32_t rounding_divide_by_pot(int32_t x, int exponent) noexcept nogil:
    """x / 2^exponent rounded to nearest, ties away from zero; 0 <= exponent <= 31."""
    cdef int32_t mask = <int32_t>((<int64_t>1 << exponent) - 1)
    cdef int32_t remainder = x & mask
    cdef int32_t threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


cdef inline int32_t multiply_by_quantized_multiplier(int32_t acc, int32_t m0, int shift) noexcept nogil:
    """acc * m0 * 2^(shift - 31), rounded twice as TFLite does.

    m0 in [2^30, 2^31) or 0; shift in [-31, 30] (positive: left shift before the multiply,
    saturated to int32; negative: rounding right shift after it).
    """
    cdef int left = shift if shift > 0 else 0
    cdef int right = -shift if shift < 0 else 0
    cdef int32_t x = saturate_to_int32(<int64_t>acc * (<int64_t>1 << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m0), right)


cdef inline int8_t requantize_accumulator(int32_t acc, int32_t m0, int shift, int out_zp,
                                          int act_min, int act_max) noexcept nogil:
    """clamp(out_zp + multiply_by_quantized_multiplier(acc, m0, shift), act_min, act_max).

    The zero point is added in int64: the multiplier's result may be near INT32_MAX.
    Caller guarantees -128 <= act_min <= act_max <= 127.
    """
    cdef int64_t v = <int64_t>out_zp + multiply_by_quantized_multiplier(acc, m0, shift)
    if v < act_min:
        v = act_min
    elif v > act_max:
        v = act_max
    return <int8_t>v


cdef inline bint is_valid_multiplier(int32_t m0) noexcept nogil:
    """m0 is in [0, 2^31). quantize_multiplier makes normalised mantissas, in [2^30, 2^31)
    (or 0); TFLite's MEAN divides its multiplier by the window size, which leaves it below
    2^30 (fixnet.tflite.convert): the rule is the same integers for any m0 >= 0."""
    return m0 >= 0


cdef inline bint is_valid_shift(int32_t shift) noexcept nogil:
    """shift is in [-31, 30], the range multiply_by_quantized_multiplier is defined on."""
    return -31 <= shift <= 30


cdef inline void widen_int8_to_int16(const int8_t* src, int16_t* dst, Py_ssize_t n) noexcept nogil:
    """dst[i] = src[i] for i < n (sign extension; vectorises to pmovsxbw / punpck+psraw)."""
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i]


cdef inline int32_t dot_int16_int8(const int16_t* x, const int8_t* w, Py_ssize_t n) noexcept nogil:
    """sum_k x[k] * w[k] for n <= DOT_BLOCK, x an int16 copy of int8 data.

    Why int16 x: gcc 12 has no int8 x int8 dot-product pattern on x86-64 and falls back to
    pmullw plus widening; with one operand already int16 it emits pmaddwd (2-3x faster).
    """
    cdef int32_t acc = 0
    cdef Py_ssize_t k
    for k in range(n):
        acc += x[k] * <int16_t>w[k]
    return acc


cdef inline void dot4_int16_int8(const int16_t* x, const int8_t* w0, const int8_t* w1,
                                 const int8_t* w2, const int8_t* w3, Py_ssize_t n,
                                 int32_t* acc) noexcept nogil:
    """acc[j] = sum_k x[k] * wj[k] for j = 0..3, n <= DOT_BLOCK: four output channels per
    pass so each load of x is used four times. No branches or calls in the loop."""
    cdef int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef int32_t xk
    cdef Py_ssize_t k
    for k in range(n):
        xk = x[k]
        a0 += xk * <int16_t>w0[k]
        a1 += xk * <int16_t>w1[k]
        a2 += xk * <int16_t>w2[k]
        a3 += xk * <int16_t>w3[k]
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


# ---- entry checks (with the GIL; run once per call, before the nogil block) -------------

cdef inline int check_length(str kernel, str name, Py_ssize_t actual, Py_ssize_t expected,
                             str why) except -1:
    """Raise ValueError naming `name` unless actual == expected."""
    if actual != expected:
        raise ValueError(f"{kernel}: {name} has length {actual}, expected {expected} ({why})")
    return 0


cdef inline int check_int8(str kernel, str name, int value) except -1:
    """Raise ValueError naming `name` unless value is an int8 (a zero point, a code)."""
    if not -128 <= value <= 127:
        raise ValueError(f"{kernel}: {name} = {value} is outside the int8 range [-128, 127]")
    return 0


cdef inline int check_params(str kernel, object params, tuple fields) except -1:
    """Raise unless params is a mapping whose keys are exactly ``fields`` (the field names of
    the kernel's params struct, fixnet/_kernels/params.pxd): TypeError if it is not a
    mapping, ValueError naming every missing and every unknown key. (Cython's conversion of
    the mapping to the struct names a missing key too, but ignores an unknown one: a
    misspelt key would be dropped silently.)"""
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
    return 0


cdef inline int check_output_range(str kernel, int out_zp, int act_min, int act_max) except -1:
    """Raise ValueError unless out_zp and -128 <= act_min <= act_max <= 127 are int8."""
    if not -128 <= out_zp <= 127:
        raise ValueError(f"{kernel}: out_zp = {out_zp} is outside the int8 range [-128, 127]")
    if not (-128 <= act_min <= act_max <= 127):
        raise ValueError(f"{kernel}: act_min = {act_min}, act_max = {act_max} must satisfy "
                         f"-128 <= act_min <= act_max <= 127")
    return 0


cdef inline int check_multipliers(str kernel, const int32_t* m0, const int32_t* shift,
                                  Py_ssize_t n) except -1:
    """Raise ValueError naming the first entry of m0 / shift outside the contract."""
    cdef Py_ssize_t i
    for i in range(n):
        if not is_valid_multiplier(m0[i]):
            raise ValueError(f"{kernel}: m0[{i}] = {m0[i]} must be in [0, 2^31)")
        if not is_valid_shift(shift[i]):
            raise ValueError(f"{kernel}: shift[{i}] = {shift[i]} must be in [-31, 30]")
    return 0


# ---- branch-free requantization over blocks (the epilogue of dense, channel_affine) -------
#
# multiply_by_quantized_multiplier rounds twice (SRDHM, then rounding_divide_by_pot). Both
# roundings fold into one arithmetic right shift of the int64 product: with m0 >= 0 and
# y = SRDHM(x, m0) = floor((x * m0 + 2^30) / 2^31) (exact whenever m0 >= 0; the one
# saturating case needs m0 = INT32_MIN), and r = max(-shift, 0),
#
#   rounding_divide_by_pot(y, r) = floor((y + half - [y < 0 and r > 0]) / 2^r),  half = 2^r / 2
#                                = floor((x * m0 + 2^30 + 2^31 * (half - [u < 0] * [r > 0]))
#                                        / 2^(31 + r)),                          u = x * m0 + 2^30
#
# (floor(floor(a / 2^31) + b) / 2^r) = floor((a + 2^31 b) / 2^(31 + r)) for integer b, and
# y < 0 exactly when u < 0.) Every term stays below 2^62 + 2^61 + 2^30 in magnitude, so
# int64 holds it. The per-channel constants are precomputed by requant_constants; the loops
# below are straight-line (selects, min/max, shifts), which gcc vectorises for AVX2 and up
# (vpmuldq, vpsravq) and keeps branch-free in scalar code.

cdef inline void requant_constants(int32_t shift, int64_t* nudge, int64_t* neg_adjust,
                                   int64_t* total_shift, int32_t* left) noexcept nogil:
    """Constants of requantize_precomputed for one (m0, shift): shift in [-31, 30]."""
    cdef int r = -shift if shift < 0 else 0
    left[0] = shift if shift > 0 else 0
    total_shift[0] = 31 + r
    nudge[0] = ((<int64_t>1 << r) >> 1) << 31            # 2^31 * half
    neg_adjust[0] = (<int64_t>1 << 31) if r > 0 else 0   # 2^31 * [r > 0]


cdef inline int32_t requantize_precomputed(int64_t x, int64_t m0, int64_t nudge,
                                           int64_t neg_adjust, int64_t total_shift) noexcept nogil:
    """multiply_by_quantized_multiplier(x, m0, shift) for x already shifted left and saturated
    to int32 (x = acc when shift <= 0), m0 in [0, 2^31), constants from requant_constants.
    Branch-free; bit-exact with the two-rounding definition (see the comment above)."""
    cdef int64_t u = x * m0 + (<int64_t>1 << 30)
    return <int32_t>((u + nudge - ((u >> 63) & neg_adjust)) >> total_shift)


cdef inline void requantize_block(const int32_t* acc, Py_ssize_t n, const int32_t* m0,
                                  const int64_t* nudge, const int64_t* neg_adjust,
                                  const int64_t* total_shift, int32_t out_zp,
                                  int32_t act_min, int32_t act_max, int8_t* out) noexcept nogil:
    """out[c] = requantize_accumulator(acc[c], m0[c], shift[c], out_zp, act_min, act_max)
    for c < n, when every shift[c] <= 0 (no left shift). Per-channel constants from
    requant_constants. One branch-free loop: vectorises (vpmuldq, vpsravq) for AVX2 and up."""
    cdef Py_ssize_t c
    cdef int32_t lo = act_min - out_zp, hi = act_max - out_zp, v
    for c in range(n):
        v = requantize_precomputed(acc[c], m0[c], nudge[c], neg_adjust[c], total_shift[c])
        v = lo if v < lo else v
        v = hi if v > hi else v
        out[c] = <int8_t>(v + out_zp)


cdef inline void requantize_block_left(const int32_t* acc, Py_ssize_t n, const int32_t* m0,
                                       const int32_t* left, const int64_t* nudge,
                                       const int64_t* neg_adjust, const int64_t* total_shift,
                                       int32_t out_zp, int32_t act_min, int32_t act_max,
                                       int8_t* out) noexcept nogil:
    """requantize_block for any shifts in [-31, 30]: the accumulator is first shifted left by
    left[c] = max(shift[c], 0) and saturated to int32 (multiply_by_quantized_multiplier)."""
    cdef Py_ssize_t c
    cdef int32_t lo = act_min - out_zp, hi = act_max - out_zp, v
    cdef int64_t x
    for c in range(n):
        x = <int64_t>(<uint64_t><int64_t>acc[c] << left[c])   # |acc| 2^left < 2^61: no wrap
        x = INT32_MAX if x > INT32_MAX else x
        x = INT32_MIN if x < INT32_MIN else x
        v = requantize_precomputed(x, m0[c], nudge[c], neg_adjust[c], total_shift[c])
        v = lo if v < lo else v
        v = hi if v > hi else v
        out[c] = <int8_t>(v + out_zp)

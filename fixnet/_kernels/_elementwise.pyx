# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise kernels on int8 or int16 codes: the activation op's table lookup and
requantize (fixnet/ops/activation.py), and the two float boundaries of a network (quantize the
input, dequantize the output). The per-channel affine op has its own module, _affine.pyx.

Activation types: int8 (asymmetric, any zero point in int8) or int16 (symmetric, zero point
0). Each call takes the type of its arrays' dtype: lookup takes one type in and out;
requantize is the one call whose input and output types may differ (it converts between them).

Bit-exact with the functions of the same names in ``fixnet.oracle``. Private: fixnet.runtime
plans the calls.

Calling pattern (shared by every kernel module): ``FooCall(...)`` takes exactly the arguments
of ``foo(...)``, checks them once and keeps the arrays; calling it runs the kernel on what the
input holds now, with no checks. ``foo(...)`` is ``FooCall(...)()``. Small parameters
(tables, multipliers) are copied or precomputed at construction; x is read on every call.

``InputStage`` and ``OutputStage`` are the float boundaries of ``QuantizedModel.predict``:
bound to an arena buffer once, they take the caller's array (or make the result array) with
a few C-level checks instead of typed-memoryview conversions.
"""
cimport cython
cimport numpy as cnp
from libc.float cimport FLT_MAX
from libc.math cimport fabsf, isfinite
from libc.stdint cimport INT32_MAX, INT32_MIN, int8_t, int16_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport (
    check_int8,
    check_length,
    check_multipliers,
    check_output_range,
    multiply_by_quantized_multiplier,
    requant_constants,
    requantize_precomputed,
)

cnp.import_array()

cdef extern from *:
    """
    #include <string.h>
    #if defined(__linux__) && defined(__aarch64__)
    #include <sys/auxv.h>
    #ifndef HWCAP_ASIMDDP
    #define HWCAP_ASIMDDP (1 << 20)
    #endif
    #endif
    /* 1 if the CPU (and the OS, for the register state) runs code built for `isa`, one of
       fixnet's ISA builds (setup.py ISA_VARIANTS); 0 if not or if it cannot be told. */
    static int fixnet_cpu_supports(const char *isa) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
        int avx2;
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2")
               && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
               && __builtin_cpu_supports("bmi2");
        if (strcmp(isa, "avx2") == 0)
            return avx2;
        if (strcmp(isa, "avx512vnni") == 0)
            return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
                   && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                   && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
        return 0;
    #elif defined(__linux__) && defined(__aarch64__)
        if (strcmp(isa, "dotprod") == 0)
            return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
        return 0;
    #else
        (void)isa;
        return 0;
    #endif
    }
    """
    int fixnet_cpu_supports(const char* isa)


def cpu_supports(str isa):
    """Whether this CPU runs fixnet's kernels built for `isa` ("avx2", "avx512vnni" on
    x86-64, "dotprod" on aarch64 Linux); False when it cannot be told. Used by
    fixnet._kernels to choose a build."""
    cdef bytes name = isa.encode("ascii")
    return fixnet_cpu_supports(name) != 0

cdef enum:
    # Release the GIL only for calls over at least this many elements: below it, releasing
    # and re-taking the GIL costs more than other threads could gain.
    NOGIL_MIN_ELEMENTS = 65536
    # Elements per task of a lookup or requantize split over threads.
    LOOKUP_TASK = 16384
    # quantize counts non-finite values in an int32 per chunk of this many elements.
    COUNT_CHUNK = 1 << 30
    # Entries of a lookup table: one per code of the input's type.
    TABLE_8 = 256
    TABLE_16 = 65536


# How a LookupCall or RequantizeCall maps x to out (see ElementwiseCall.run_range).
cdef enum:
    ROUTE_TABLE_8 = 0           # int8 x -> int8 out, 256 int8 entries
    ROUTE_TABLE_8_TO_16 = 1     # int8 x -> int16 out, 256 int16 entries
    ROUTE_TABLE_16 = 2          # int16 x -> int16 out, 65536 int16 entries
    ROUTE_REQUANT_16_TO_8 = 3   # int16 x -> int8 out, computed per element
    ROUTE_REQUANT_16_TO_16 = 4  # int16 x -> int16 out, computed per element


# The two activation types; a loop over codes is compiled for each (x's and out's apart).
ctypedef fused code_t:
    int8_t
    int16_t

ctypedef fused out_t:
    int8_t
    int16_t


# The constants of requantize for an int16 input (zero point 0). Shifts up to NARROW_SHIFT_MAX
# run in int32 lanes (requantize16_narrow), larger ones (factors >= 2^14, rare) in int64.
cdef enum:
    NARROW_SHIFT_MAX = 14

cdef struct requant16_params:
    # int32 form: m0 = m_high * 2^16 + m_low, see requantize16_narrow
    int32_t m_high
    int32_t m_low
    int32_t round_in        # 2^(14 - left)
    int32_t high_shift      # 15 - left
    int32_t right           # max(-shift, 0)
    int32_t right_mask      # 2^right - 1
    # int64 form (requant_constants), see requantize16_wide
    int64_t m0
    int64_t nudge
    int64_t neg_adjust
    int64_t total_shift
    int64_t left_factor     # 2^max(shift, 0)
    # the clamp
    int32_t lo              # act_min - out_zp
    int32_t hi              # act_max - out_zp
    int32_t out_zp
    bint narrow             # shift <= NARROW_SHIFT_MAX


# ---- entry checks --------------------------------------------------------------------------

cdef int code_bits(str kernel, str name, object a) except -1:
    """8 or 16: the activation type of the array ``a`` from its dtype (int8 or int16 codes);
    ValueError naming it for any other dtype."""
    dtype = np.asarray(a).dtype
    if dtype == np.int8:
        return 8
    if dtype == np.int16:
        return 16
    raise ValueError(f"{kernel}: {name} has dtype {dtype}, expected int8 or int16 codes")


cdef str type_name(int bits):
    return "int8" if bits == 8 else "int16"


cdef int check_zero_point(str kernel, str name, int zp, int bits) except -1:
    """int8: zp in [-128, 127]; int16: zp == 0 (int16 tensors are symmetric)."""
    if bits == 8:
        return check_int8(kernel, name, zp)
    if zp != 0:
        raise ValueError(f"{kernel}: {name} = {zp}: int16 tensors are symmetric, their zero "
                         f"point is 0")
    return 0


cdef int check_clamp(str kernel, int out_zp, int act_min, int act_max, int bits) except -1:
    """out_zp and the clamp bounds valid for an output of ``bits`` (8 or 16)."""
    if bits == 8:
        return check_output_range(kernel, out_zp, act_min, act_max)
    check_zero_point(kernel, "out_zp", out_zp, bits)
    if not (-32768 <= act_min <= act_max <= 32767):
        raise ValueError(f"{kernel}: act_min = {act_min}, act_max = {act_max} must satisfy "
                         f"-32768 <= act_min <= act_max <= 32767")
    return 0


cdef int check_scale(str kernel, double scale, int zp, int bits) except -1:
    if not (isfinite(scale) and scale > 0.0):
        raise ValueError(f"{kernel}: scale = {scale!r} must be finite and positive "
                         f"(real units per code step)")
    return check_zero_point(kernel, "zp", zp, bits)


@cython.final
@cython.auto_pickle(False)
cdef class Codes:
    """A 1-D C-contiguous array of int8 or int16 codes as a C pointer; ``view`` (a memoryview
    of the array) keeps the memory alive as long as this object."""
    cdef object view
    cdef void* address        # NULL for an empty array
    cdef Py_ssize_t size
    cdef int bits


cdef Codes codes_of(str kernel, str name, object a, bint writable):
    """The Codes of the array ``a`` (ValueError naming it unless int8 or int16, 1-D,
    C-contiguous and, if ``writable``, writeable). No copy: a call reads or writes ``a``."""
    cdef Codes c = Codes.__new__(Codes)
    cdef const int8_t[::1] r8
    cdef int8_t[::1] w8
    cdef const int16_t[::1] r16
    cdef int16_t[::1] w16
    c.bits = code_bits(kernel, name, a)
    if c.bits == 8 and writable:
        w8 = a
        c.view, c.size = w8, w8.shape[0]
        c.address = <void*>&w8[0] if c.size else NULL
    elif c.bits == 8:
        r8 = a
        c.view, c.size = r8, r8.shape[0]
        c.address = <void*>&r8[0] if c.size else NULL
    elif writable:
        w16 = a
        c.view, c.size = w16, w16.shape[0]
        c.address = <void*>&w16[0] if c.size else NULL
    else:
        r16 = a
        c.view, c.size = r16, r16.shape[0]
        c.address = <void*>&r16[0] if c.size else NULL
    return c


# ---- the loops (raw pointers, no checks) ---------------------------------------------------

cdef void lookup_impl(const code_t* x, const out_t* table, out_t* out,
                      Py_ssize_t size) noexcept nogil:
    """out[i] = table[x[i] - min]: one entry per code of x's type (int8: 256 entries indexed
    by x + 128; int16: 65536 entries indexed by x + 32768), of out's type."""
    cdef Py_ssize_t i = 0
    cdef const out_t* centred
    if code_t is int8_t:
        centred = table + 128
    else:
        centred = table + 32768
    # four per pass: the one-element loop's speed depended on where it landed in the binary
    # (1.6 or 2.2 Gelem/s as its 32-byte alignment changed; 2.8 unrolled, either build)
    while i + 4 <= size:
        out[i], out[i + 1] = centred[x[i]], centred[x[i + 1]]
        out[i + 2], out[i + 3] = centred[x[i + 2]], centred[x[i + 3]]
        i += 4
    while i < size:
        out[i] = centred[x[i]]
        i += 1


cdef void requantize16_narrow(const int16_t* x, out_t* out, Py_ssize_t size,
                              const requant16_params* p) noexcept nogil:
    """out[i] = clamp(out_zp + multiply_by_quantized_multiplier(x[i], m0, shift), act_min,
    act_max) for int16 x (zero point 0) and shift <= 14, in int32 lanes only (vectorises
    without 64-bit multiplies, which SSE2 and AVX2 lack):

    with left = max(shift, 0) <= 14, |x| 2^left < 2^31 (no saturation) and the first rounding
    is floor((x m0 2^left + 2^30) / 2^31) = floor((x m0 + 2^(30-left)) / 2^(31-left)). Split
    m0 = h 2^16 + l (h < 2^15, l < 2^16) and x l = 2^16 floor(x l / 2^16) + (x l mod 2^16):
    the low part is below 2^16 and every other term of the numerator a multiple of 2^16, so
    it never changes the floor, which is floor((x h + floor(x l / 2^16) + 2^(14-left))
    / 2^(15-left)). |x h| <= 2^30 and |x l| < 2^31: all int32. The second rounding is
    rounding_divide_by_pot by right = max(-shift, 0) (nothing when left > 0)."""
    cdef Py_ssize_t i
    cdef int32_t m_high = p.m_high, m_low = p.m_low, round_in = p.round_in
    cdef int32_t high_shift = p.high_shift, right = p.right, mask = p.right_mask
    cdef int32_t lo = p.lo, hi = p.hi, out_zp = p.out_zp, v, y
    for i in range(size):
        v = x[i]
        y = (v * m_high + ((v * m_low) >> 16) + round_in) >> high_shift
        # rounding_divide_by_pot(y, right): ties away from zero
        y = (y >> right) + ((y & mask) > (mask >> 1) + (y < 0))
        y = lo if y < lo else y
        y = hi if y > hi else y
        out[i] = <out_t>(y + out_zp)


cdef void requantize16_wide(const int16_t* x, out_t* out, Py_ssize_t size,
                            const requant16_params* p) noexcept nogil:
    """requantize16_narrow for any shift (used for shift > 14): x 2^left saturated to int32
    (|x| <= 2^15 and 2^left <= 2^30, so the int64 product is exact), then
    requantize_precomputed's one rounding shift of the int64 product."""
    cdef Py_ssize_t i
    cdef int64_t m0 = p.m0, nudge = p.nudge, neg_adjust = p.neg_adjust
    cdef int64_t total_shift = p.total_shift, factor = p.left_factor, v
    cdef int32_t lo = p.lo, hi = p.hi, out_zp = p.out_zp, r
    for i in range(size):
        v = <int64_t>x[i] * factor
        v = INT32_MAX if v > INT32_MAX else v
        v = INT32_MIN if v < INT32_MIN else v
        r = requantize_precomputed(v, m0, nudge, neg_adjust, total_shift)
        r = lo if r < lo else r
        r = hi if r > hi else r
        out[i] = <out_t>(r + out_zp)


cdef void requantize16_impl(const int16_t* x, out_t* out, Py_ssize_t size,
                            const requant16_params* p) noexcept nogil:
    if p.narrow:
        requantize16_narrow(x, out, size, p)
    else:
        requantize16_wide(x, out, size, p)


cdef inline int32_t requantize_value(int32_t acc, int32_t m0, int shift, int32_t out_zp,
                                     int32_t act_min, int32_t act_max) noexcept nogil:
    """clamp(out_zp + multiply_by_quantized_multiplier(acc, m0, shift), act_min, act_max),
    the zero point added in int64 (the product may be near INT32_MAX)."""
    cdef int64_t v = <int64_t>out_zp + multiply_by_quantized_multiplier(acc, m0, shift)
    if v < act_min:
        v = act_min
    elif v > act_max:
        v = act_max
    return <int32_t>v


cdef Py_ssize_t count_nonfinite(const float* x, Py_ssize_t size) noexcept nogil:
    """The number of NaN and +-inf among x[0:size]: one vectorised compare-and-count pass
    (|x| <= FLT_MAX is false for NaN and +-inf)."""
    cdef Py_ssize_t start = 0, stop, i, total = 0
    cdef int32_t bad
    while start < size:
        stop = start + COUNT_CHUNK if size - start > COUNT_CHUNK else size
        bad = 0
        for i in range(start, stop):
            bad += not (fabsf(x[i]) <= FLT_MAX)
        total += bad
        start = stop
    return total


cdef void quantize_finite(const float* x, double scale, int32_t zp, code_t* out,
                          Py_ssize_t size) noexcept nogil:
    """out[i] = clamp(round_half_away((double)x[i] / scale) + zp, qmin, qmax) for finite x,
    [qmin, qmax] the range of out's type ([-128, 127] or [-32768, 32767]).

    Branch-free, so gcc vectorises it (divpd, cvttpd2dq): the quotient v is first clamped to
    [qmin - 1 - zp, qmax + 1 - zp] (anything beyond rounds and clamps to the same code; the
    clamp also makes the int32 conversion defined); t = trunc(v); v - t is exact in double,
    and so is 2 (v - t), whose truncation is -1, 0 or +1 exactly when |v - t| >= 0.5: the
    rounding half away from zero, with no comparison (the bounds depend on zp, not on
    constants, so gcc cannot specialise the clamped cases into branches)."""
    cdef Py_ssize_t i
    cdef double v, frac
    cdef int32_t t, qmin, qmax
    if code_t is int8_t:
        qmin, qmax = -128, 127
    else:
        qmin, qmax = -32768, 32767
    cdef double lo = qmin - 1.0 - zp, hi = qmax + 1.0 - zp
    for i in range(size):
        v = <double>x[i] / scale
        v = v if v > lo else lo
        v = v if v < hi else hi
        t = <int32_t>v
        frac = v - <double>t
        t = t + <int32_t>(frac + frac) + zp
        t = t if t > qmin else qmin
        t = t if t < qmax else qmax
        out[i] = <code_t>t


cdef void quantize_any(const float* x, double scale, int32_t zp, code_t* out,
                       Py_ssize_t size) noexcept nogil:
    """quantize_finite, except that non-finite x[i] give out[i] = zp (the oracle's rule)."""
    cdef Py_ssize_t i
    for i in range(size):
        if fabsf(x[i]) <= FLT_MAX:
            quantize_finite(x + i, scale, zp, out + i, 1)
        else:
            out[i] = <code_t>zp


cdef Py_ssize_t quantize_impl(const float* x, double scale, int32_t zp, code_t* out,
                              Py_ssize_t size) noexcept nogil:
    """quantize: returns the number of non-finite x (those get zp). A vectorised counting
    pass first; then the vectorised quantize_finite if every value is finite, else the
    per-element loop. (Multiplying by 1 / scale instead of dividing, with an exact redo of
    the values near a rounding tie, measured slower: the division is not the bottleneck.)"""
    cdef Py_ssize_t bad = count_nonfinite(x, size)
    if bad:
        quantize_any(x, scale, zp, out, size)
    else:
        quantize_finite(x, scale, zp, out, size)
    return bad


cdef void dequantize_impl(const code_t* x, double scale, int32_t zp, float* out,
                          Py_ssize_t size) noexcept nogil:
    """out[i] = (float)((double)(x[i] - zp) * scale) (vectorises: cvtdq2pd, mulpd, cvtpd2ps)."""
    cdef Py_ssize_t i
    for i in range(size):
        out[i] = <float>(<double>(<int32_t>x[i] - zp) * scale)


cdef Py_ssize_t quantize_into(const float* x, double scale, int32_t zp, void* out, int bits,
                              Py_ssize_t size) noexcept nogil:
    """quantize_impl into int8 (bits 8) or int16 (bits 16) codes."""
    if bits == 8:
        return quantize_impl(x, scale, zp, <int8_t*>out, size)
    return quantize_impl(x, scale, zp, <int16_t*>out, size)


cdef void dequantize_from(const void* x, int bits, double scale, int32_t zp, float* out,
                          Py_ssize_t size) noexcept nogil:
    """dequantize_impl of int8 (bits 8) or int16 (bits 16) codes."""
    if bits == 8:
        dequantize_impl(<const int8_t*>x, scale, zp, out, size)
    else:
        dequantize_impl(<const int16_t*>x, scale, zp, out, size)


# ---- Call objects --------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class ElementwiseCall(KernelCall):
    """What LookupCall and RequantizeCall share: x and out as pointers (their Codes keep them
    alive), the route from x's type to out's, the table (a private copy) or the int16
    requantization constants, and the run over tasks of LOOKUP_TASK elements."""
    cdef Codes x_codes, out_codes
    cdef object table_copy
    cdef const void* x
    cdef void* out
    cdef const void* table
    cdef Py_ssize_t size
    cdef int route
    cdef requant16_params rq

    cdef int bind_arrays(self, str kernel, object x, object out) except -1:
        """Check and keep x and out (1-D, C-contiguous, int8 or int16, out as long as x)."""
        self.x_codes = codes_of(kernel, "x", x, False)
        self.out_codes = codes_of(kernel, "out", out, True)
        check_length(kernel, "out", self.out_codes.size, self.x_codes.size, "same as x")
        self.x, self.out, self.size = self.x_codes.address, self.out_codes.address, self.x_codes.size
        return 0

    cdef void set_table(self, object table):
        """The table: ``table`` is this call's own copy, of the dtype its route reads."""
        cdef cnp.ndarray t = table
        self.table_copy = t
        self.table = cnp.PyArray_DATA(t)

    cdef void set_tasks(self):
        self.n_tasks = (self.size + LOOKUP_TASK - 1) // LOOKUP_TASK   # chunks of LOOKUP_TASK
        self.splittable = True
        self.work_share = <double>self.size / NOGIL_MIN_ELEMENTS

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        """The elements of tasks [first, last), LOOKUP_TASK elements each."""
        cdef Py_ssize_t start = first * LOOKUP_TASK
        cdef Py_ssize_t stop = last * LOOKUP_TASK if last * LOOKUP_TASK < self.size else self.size
        cdef Py_ssize_t n = stop - start
        if n <= 0:
            return
        if self.route == ROUTE_TABLE_8:
            lookup_impl(<const int8_t*>self.x + start, <const int8_t*>self.table,
                        <int8_t*>self.out + start, n)
        elif self.route == ROUTE_TABLE_8_TO_16:
            lookup_impl(<const int8_t*>self.x + start, <const int16_t*>self.table,
                        <int16_t*>self.out + start, n)
        elif self.route == ROUTE_TABLE_16:
            lookup_impl(<const int16_t*>self.x + start, <const int16_t*>self.table,
                        <int16_t*>self.out + start, n)
        elif self.route == ROUTE_REQUANT_16_TO_8:
            requantize16_impl(<const int16_t*>self.x + start, <int8_t*>self.out + start, n,
                              &self.rq)
        else:
            requantize16_impl(<const int16_t*>self.x + start, <int16_t*>self.out + start, n,
                              &self.rq)


@cython.auto_pickle(False)
cdef class LookupCall(ElementwiseCall):
    """lookup with its arguments checked once; the table is copied here."""

    def __init__(self, x, table, out):
        self.bind_arrays("lookup", x, out)
        cdef int bits = self.x_codes.bits
        if self.out_codes.bits != bits:
            raise ValueError(f"lookup: out has dtype {type_name(self.out_codes.bits)} but x has "
                             f"{type_name(bits)}: one activation type per call (int8 in, int8 "
                             f"out; int16 in, int16 out)")
        codes = np.dtype(np.int8) if bits == 8 else np.dtype(np.int16)
        t = np.asarray(table)
        if t.dtype != codes:
            raise ValueError(f"lookup: table has dtype {t.dtype}, expected {codes} (x's type)")
        if t.ndim != 1:
            raise ValueError(f"lookup: table has shape {t.shape}, expected one dimension")
        check_length("lookup", "table", t.shape[0], TABLE_8 if bits == 8 else TABLE_16,
                     f"one entry per {codes} value")
        self.set_table(np.array(t, codes, copy=True, order="C"))
        self.route = ROUTE_TABLE_8 if bits == 8 else ROUTE_TABLE_16
        self.set_tasks()


@cython.auto_pickle(False)
cdef class RequantizeCall(ElementwiseCall):
    """requantize with its arguments checked once, for any input and output types. An int8
    input has 256 possible values: the constructor tabulates the result for each (in out's
    type, with the scalar reference rule) and a call is a table lookup. An int16 input is
    requantized per element (branch-free, vectorised): a 65536-entry table would be 64 or
    128 KiB per call, more than L1 holds."""

    def __init__(self, x, int in_zp, int m0, int shift, int out_zp, int act_min, int act_max,
                 out):
        cdef int32_t m0_32, shift_32
        self.bind_arrays("requantize", x, out)
        check_zero_point("requantize", "in_zp", in_zp, self.x_codes.bits)
        check_clamp("requantize", out_zp, act_min, act_max, self.out_codes.bits)
        m0_32 = m0
        shift_32 = shift
        check_multipliers("requantize", &m0_32, &shift_32, 1)
        if self.x_codes.bits == 8:
            self.tabulate(in_zp, m0_32, shift_32, out_zp, act_min, act_max)
        else:
            self.set_constants(m0_32, shift_32, out_zp, act_min, act_max)
        self.set_tasks()

    cdef void tabulate(self, int in_zp, int32_t m0, int32_t shift, int out_zp, int act_min,
                       int act_max):
        """The 256 results for an int8 input, in out's type; the route that reads them."""
        cdef int v
        cdef int8_t[::1] t8
        cdef int16_t[::1] t16
        if self.out_codes.bits == 8:
            table = np.empty(TABLE_8, np.int8)
            t8 = table
            for v in range(-128, 128):
                t8[v + 128] = <int8_t>requantize_value(v - in_zp, m0, shift, out_zp, act_min,
                                                       act_max)
            self.route = ROUTE_TABLE_8
        else:
            table = np.empty(TABLE_8, np.int16)
            t16 = table
            for v in range(-128, 128):
                t16[v + 128] = <int16_t>requantize_value(v - in_zp, m0, shift, out_zp, act_min,
                                                         act_max)
            self.route = ROUTE_TABLE_8_TO_16
        self.set_table(table)

    cdef void set_constants(self, int32_t m0, int32_t shift, int out_zp, int act_min,
                            int act_max):
        """requantize16_impl's constants for an int16 input; the route that uses them."""
        cdef int32_t left = shift if shift > 0 else 0
        cdef int32_t unused_left
        self.rq.narrow = shift <= NARROW_SHIFT_MAX
        if self.rq.narrow:
            self.rq.m_high, self.rq.m_low = m0 >> 16, m0 & 0xFFFF
            self.rq.round_in = 1 << (14 - left)
            self.rq.high_shift = 15 - left
            self.rq.right = -shift if shift < 0 else 0
            self.rq.right_mask = <int32_t>((<int64_t>1 << self.rq.right) - 1)
        requant_constants(shift, &self.rq.nudge, &self.rq.neg_adjust, &self.rq.total_shift,
                          &unused_left)
        self.rq.m0 = m0
        self.rq.left_factor = <int64_t>1 << left
        self.rq.out_zp = out_zp
        self.rq.lo = act_min - out_zp
        self.rq.hi = act_max - out_zp
        self.route = ROUTE_REQUANT_16_TO_8 if self.out_codes.bits == 8 else ROUTE_REQUANT_16_TO_16


@cython.auto_pickle(False)
cdef class QuantizeCall:
    """quantize with its arguments checked once; a call returns the non-finite count."""
    cdef const float[::1] x
    cdef Codes codes
    cdef double scale
    cdef int32_t zp
    cdef Py_ssize_t size
    cdef bint release_gil

    def __init__(self, const float[::1] x not None, double scale, int zp, out):
        self.codes = codes_of("quantize", "out", out, True)
        check_scale("quantize", scale, zp, self.codes.bits)
        check_length("quantize", "out", self.codes.size, x.shape[0], "same as x")
        self.x, self.scale, self.zp, self.size = x, scale, zp, x.shape[0]
        self.release_gil = self.size >= NOGIL_MIN_ELEMENTS

    def __call__(self):
        cdef Py_ssize_t bad
        if self.size == 0:
            return 0
        if self.release_gil:
            with nogil:
                bad = quantize_into(&self.x[0], self.scale, self.zp, self.codes.address,
                                    self.codes.bits, self.size)
        else:
            bad = quantize_into(&self.x[0], self.scale, self.zp, self.codes.address,
                                self.codes.bits, self.size)
        return bad


@cython.auto_pickle(False)
cdef class DequantizeCall:
    """dequantize with its arguments checked once."""
    cdef Codes codes
    cdef float[::1] out
    cdef double scale
    cdef int32_t zp
    cdef Py_ssize_t size
    cdef bint release_gil

    def __init__(self, x, double scale, int zp, float[::1] out not None):
        self.codes = codes_of("dequantize", "x", x, False)
        check_scale("dequantize", scale, zp, self.codes.bits)
        check_length("dequantize", "out", out.shape[0], self.codes.size, "same as x")
        self.out, self.scale, self.zp, self.size = out, scale, zp, self.codes.size
        self.release_gil = self.size >= NOGIL_MIN_ELEMENTS

    def __call__(self):
        if self.size == 0:
            return
        if self.release_gil:
            with nogil:
                dequantize_from(self.codes.address, self.codes.bits, self.scale, self.zp,
                                &self.out[0], self.size)
        else:
            dequantize_from(self.codes.address, self.codes.bits, self.scale, self.zp,
                            &self.out[0], self.size)


# ---- the float boundaries of predict -------------------------------------------------------

cdef int array_bits(cnp.ndarray a, str what) except -1:
    """8 or 16: an int8 or int16 NumPy array's activation type; ValueError naming ``what``."""
    cdef int kind = cnp.PyArray_TYPE(a)
    if kind == cnp.NPY_INT8:
        return 8
    if kind == cnp.NPY_INT16:
        return 16
    raise ValueError(f"{what} must be a C-contiguous int8 or int16 array")


@cython.auto_pickle(False)
cdef class InputStage:
    """Puts the caller's input into an arena buffer of int8 or int16 codes: ``stage(x)``
    quantizes a float32 x (as quantize) into ``out``, or copies codes of out's own type (an
    int8 x into an int8 ``out``, an int16 x into an int16 ``out``), and returns the number of
    non-finite values (0 for codes), or -1 without touching anything if x is not a
    C-contiguous NumPy array of shape ``shape`` and of dtype float32 or out's: the caller
    then converts or refuses it. int8 codes mean nothing for an int16 input (codes of
    another scale); an int16 array given to an int16 input holds its codes
    (fixnet.step.check_input_array).

    out: the arena buffer, int8 or int16, C-contiguous, shape ``shape``; scale, zp: the
    input's quantization (as quantize; zp 0 for int16)."""
    cdef object buffer
    cdef void* out
    cdef int bits
    cdef cnp.npy_intp dims[32]
    cdef int ndim
    cdef Py_ssize_t size
    cdef double scale
    cdef int32_t zp

    def __init__(self, cnp.ndarray out not None, double scale, int zp):
        cdef int d
        self.bits = array_bits(out, "InputStage: out")
        check_scale("quantize", scale, zp, self.bits)
        if not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise ValueError("InputStage: out must be a C-contiguous int8 or int16 array")
        if not cnp.PyArray_ISWRITEABLE(out):
            raise ValueError("InputStage: out must be writeable")
        if out.ndim > 32:
            raise ValueError("InputStage: out has more than 32 dimensions")
        self.buffer, self.out = out, cnp.PyArray_DATA(out)
        self.ndim, self.size = out.ndim, out.size
        for d in range(self.ndim):
            self.dims[d] = cnp.PyArray_DIM(out, d)
        self.scale, self.zp = scale, zp

    def __call__(self, x):
        cdef cnp.ndarray a
        cdef int kind, d
        cdef Py_ssize_t bad
        if type(x) is not cnp.ndarray:
            return -1
        a = <cnp.ndarray>x
        kind = cnp.PyArray_TYPE(a)
        if not (kind == cnp.NPY_FLOAT32 or (kind == cnp.NPY_INT8 and self.bits == 8)
                or (kind == cnp.NPY_INT16 and self.bits == 16)):
            return -1
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_NDIM(a) != self.ndim:
            return -1
        for d in range(self.ndim):
            if cnp.PyArray_DIM(a, d) != self.dims[d]:
                return -1
        if self.size == 0:
            return 0
        if kind != cnp.NPY_FLOAT32:     # codes of out's type
            memcpy(self.out, cnp.PyArray_DATA(a), self.size * (self.bits // 8))
            return 0
        if self.size >= NOGIL_MIN_ELEMENTS:
            with nogil:
                bad = quantize_into(<const float*>cnp.PyArray_DATA(a), self.scale, self.zp,
                                    self.out, self.bits, self.size)
        else:
            bad = quantize_into(<const float*>cnp.PyArray_DATA(a), self.scale, self.zp,
                                self.out, self.bits, self.size)
        return bad


@cython.auto_pickle(False)
cdef class OutputStage:
    """Makes predict's result from an arena buffer: ``stage()`` returns a new array (the caller
    owns it) of x's shape, float32 (dequantized, as dequantize) or a copy of the codes (int8
    or int16, x's dtype).

    x: the arena buffer, int8 or int16, C-contiguous; scale, zp: the output's quantization
    (zp 0 for int16); as_float: dequantize (True) or copy the codes (False)."""
    cdef object buffer
    cdef const void* x
    cdef int bits
    cdef int ndim
    cdef cnp.npy_intp dims[32]
    cdef Py_ssize_t size
    cdef double scale
    cdef int32_t zp
    cdef bint as_float

    def __init__(self, cnp.ndarray x not None, double scale, int zp, bint as_float):
        cdef int d
        self.bits = array_bits(x, "OutputStage: x")
        check_scale("dequantize", scale, zp, self.bits)
        if not cnp.PyArray_IS_C_CONTIGUOUS(x):
            raise ValueError("OutputStage: x must be a C-contiguous int8 or int16 array")
        if x.ndim > 32:
            raise ValueError("OutputStage: x has more than 32 dimensions")
        self.buffer, self.x = x, cnp.PyArray_DATA(x)
        self.ndim, self.size = x.ndim, x.size
        for d in range(self.ndim):
            self.dims[d] = cnp.PyArray_DIM(x, d)
        self.scale, self.zp, self.as_float = scale, zp, as_float

    def __call__(self):
        cdef cnp.ndarray result
        if not self.as_float:
            result = cnp.PyArray_EMPTY(self.ndim, self.dims,
                                       cnp.NPY_INT8 if self.bits == 8 else cnp.NPY_INT16, 0)
            memcpy(cnp.PyArray_DATA(result), self.x, self.size * (self.bits // 8))
            return result
        result = cnp.PyArray_EMPTY(self.ndim, self.dims, cnp.NPY_FLOAT32, 0)
        if self.size >= NOGIL_MIN_ELEMENTS:
            with nogil:
                dequantize_from(self.x, self.bits, self.scale, self.zp,
                                <float*>cnp.PyArray_DATA(result), self.size)
        else:
            dequantize_from(self.x, self.bits, self.scale, self.zp,
                            <float*>cnp.PyArray_DATA(result), self.size)
        return result


# ---- Python entry points -------------------------------------------------------------------

def lookup(x, table, out):
    """out[i] = table[x[i] - min]: any function of one activation type to itself as a table
    built at quantize time (sigmoid, tanh, swish, ...). int8 x: 256 int8 entries indexed by
    x + 128; int16 x: 65536 int16 entries indexed by x + 32768 (every code its own entry).
    x, out: 1-D, C-contiguous, of one type."""
    LookupCall(x, table, out)()


def requantize(x, int in_zp, int m0, int shift, int out_zp, int act_min, int act_max, out):
    """out[i] = clamp(out_zp + MBQM(x[i] - in_zp, m0, shift), act_min, act_max): move codes
    from one (scale, zero point, type) to another; real factor in_scale / out_scale. x and out
    are int8 or int16 each (the one call that converts between the types); their dtypes say
    which.

    in_zp: x's zero point (int8 x: in [-128, 127]; int16 x: 0); out_zp, act_min, act_max in
    out's type (int16: out_zp 0); m0 in [2^30, 2^31) or 0; shift in [-31, 30]. A factor of 1
    exactly is m0 = 2^30, shift = 1 (exact for every code: no rounding happens).
    """
    RequantizeCall(x, in_zp, m0, shift, out_zp, act_min, act_max, out)()


def quantize(const float[::1] x not None, double scale, int zp, out):
    """out[i] = clamp(round((double)x[i] / scale) + zp, qmin, qmax), round = half away from
    zero (C round()), [qmin, qmax] the range of out's type (int8 or int16). scale: real units
    per code step, finite and > 0; zp in [-128, 127] for int8, 0 for int16.

    Returns the number of non-finite x[i] (NaN, +-inf); those get out[i] = zp.
    """
    return QuantizeCall(x, scale, zp, out)()


def dequantize(x, double scale, int zp, float[::1] out not None):
    """out[i] = (float)((double)(x[i] - zp) * scale): int8 or int16 codes back to real units.
    scale finite and > 0; zp in [-128, 127] for int8 x, 0 for int16."""
    DequantizeCall(x, scale, zp, out)()

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise int8 kernels: the activation op's table lookup and requantize
(fixnet/ops/activation.py), and the two float boundaries of a network (quantize the input,
dequantize the output). The per-channel affine op has its own module, _affine.pyx.

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
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport (
    check_int8,
    check_length,
    check_multipliers,
    check_output_range,
    requant_constants,
    requantize_accumulator,
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
    # Elements per task of a lookup split over threads.
    LOOKUP_TASK = 16384
    # quantize counts non-finite values in an int32 per chunk of this many elements.
    COUNT_CHUNK = 1 << 30



cdef int check_scale(str kernel, double scale, int zp) except -1:
    if not (isfinite(scale) and scale > 0.0):
        raise ValueError(f"{kernel}: scale = {scale!r} must be finite and positive "
                         f"(real units per int8 step)")
    if not -128 <= zp <= 127:
        raise ValueError(f"{kernel}: zp = {zp} is outside the int8 range [-128, 127]")
    return 0


# ---- the loops (raw pointers, no checks) ---------------------------------------------------

cdef void lookup_impl(const int8_t* x, const int8_t* table, int8_t* out,
                      Py_ssize_t size) noexcept nogil:
    """out[i] = table[x[i] + 128]; table points at 256 entries."""
    cdef Py_ssize_t i
    cdef const int8_t* centred = table + 128
    for i in range(size):
        out[i] = centred[x[i]]


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


cdef void quantize_finite(const float* x, double scale, int32_t zp, int8_t* out,
                          Py_ssize_t size) noexcept nogil:
    """out[i] = clamp(round_half_away((double)x[i] / scale) + zp, -128, 127) for finite x.

    Branch-free, so gcc vectorises it (divpd, cvttpd2dq): the quotient v is first clamped to
    [-129 - zp, 128 - zp] (anything beyond rounds and clamps to the same int8; the clamp also
    makes the int32 conversion defined); t = trunc(v); v - t is exact in double, and so is
    2 (v - t), whose truncation is -1, 0 or +1 exactly when |v - t| >= 0.5: the rounding
    half away from zero, with no comparison (the bounds depend on zp, not on constants, so
    gcc cannot specialise the clamped cases into branches)."""
    cdef Py_ssize_t i
    cdef double v, frac
    cdef double lo = -129.0 - zp, hi = 128.0 - zp
    cdef int32_t t
    for i in range(size):
        v = <double>x[i] / scale
        v = v if v > lo else lo
        v = v if v < hi else hi
        t = <int32_t>v
        frac = v - <double>t
        t = t + <int32_t>(frac + frac) + zp
        t = t if t > -128 else -128
        t = t if t < 127 else 127
        out[i] = <int8_t>t


cdef void quantize_any(const float* x, double scale, int32_t zp, int8_t* out,
                       Py_ssize_t size) noexcept nogil:
    """quantize_finite, except that non-finite x[i] give out[i] = zp (the oracle's rule)."""
    cdef Py_ssize_t i
    for i in range(size):
        if fabsf(x[i]) <= FLT_MAX:
            quantize_finite(x + i, scale, zp, out + i, 1)
        else:
            out[i] = <int8_t>zp


cdef Py_ssize_t quantize_impl(const float* x, double scale, int32_t zp, int8_t* out,
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


cdef void dequantize_impl(const int8_t* x, double scale, int32_t zp, float* out,
                          Py_ssize_t size) noexcept nogil:
    """out[i] = (float)((double)(x[i] - zp) * scale) (vectorises: cvtdq2pd, mulpd, cvtpd2ps)."""
    cdef Py_ssize_t i
    for i in range(size):
        out[i] = <float>(<double>(<int32_t>x[i] - zp) * scale)


cdef void lookup_tasks(const int8_t* x, const int8_t* table, int8_t* out, Py_ssize_t size,
                       Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """lookup_impl over the elements of tasks [first, last), LOOKUP_TASK elements each."""
    cdef Py_ssize_t start = first * LOOKUP_TASK
    cdef Py_ssize_t stop = last * LOOKUP_TASK if last * LOOKUP_TASK < size else size
    if stop > start:
        lookup_impl(x + start, table, out + start, stop - start)


# ---- Call objects --------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class LookupCall(KernelCall):
    """lookup with its arguments checked once; the table is copied here."""
    cdef const int8_t[::1] x
    cdef int8_t[::1] out
    cdef int8_t table[256]
    cdef Py_ssize_t size

    def __init__(self, const int8_t[::1] x not None, const int8_t[::1] table not None,
                 int8_t[::1] out not None):
        check_length("lookup", "table", table.shape[0], 256, "one entry per int8 value")
        check_length("lookup", "out", out.shape[0], x.shape[0], "same as x")
        memcpy(self.table, &table[0], 256)
        self.set_size(x, out)

    cdef void set_size(self, const int8_t[::1] x, int8_t[::1] out):
        self.x, self.out, self.size = x, out, x.shape[0]
        self.n_tasks = (self.size + LOOKUP_TASK - 1) // LOOKUP_TASK   # chunks of LOOKUP_TASK
        self.splittable = True
        self.work_share = <double>self.size / NOGIL_MIN_ELEMENTS

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.size:
            lookup_tasks(&self.x[0], self.table, &self.out[0], self.size, first, last)


@cython.auto_pickle(False)
cdef class RequantizeCall(LookupCall):
    """requantize with its arguments checked once. An int8 input has 256 possible values: the
    constructor tabulates the result for each (with the scalar reference helper
    requantize_accumulator), and a call is LookupCall's table lookup (its run, tasks and
    step entry)."""

    def __init__(self, const int8_t[::1] x not None, int in_zp, int m0, int shift, int out_zp,
                 int act_min, int act_max, int8_t[::1] out not None):
        cdef int32_t m0_32, shift_32
        cdef int v
        check_length("requantize", "out", out.shape[0], x.shape[0], "same as x")
        check_int8("requantize", "in_zp", in_zp)
        check_output_range("requantize", out_zp, act_min, act_max)
        m0_32 = m0
        shift_32 = shift
        check_multipliers("requantize", &m0_32, &shift_32, 1)
        for v in range(-128, 128):
            self.table[v + 128] = requantize_accumulator(v - in_zp, m0_32, shift_32, out_zp,
                                                         act_min, act_max)
        self.set_size(x, out)


@cython.auto_pickle(False)
cdef class QuantizeCall:
    """quantize with its arguments checked once; a call returns the non-finite count."""
    cdef const float[::1] x
    cdef int8_t[::1] out
    cdef double scale
    cdef int32_t zp
    cdef Py_ssize_t size
    cdef bint release_gil

    def __init__(self, const float[::1] x not None, double scale, int zp,
                 int8_t[::1] out not None):
        check_scale("quantize", scale, zp)
        check_length("quantize", "out", out.shape[0], x.shape[0], "same as x")
        self.x, self.out, self.scale, self.zp, self.size = x, out, scale, zp, x.shape[0]
        self.release_gil = self.size >= NOGIL_MIN_ELEMENTS

    def __call__(self):
        cdef Py_ssize_t bad
        if self.size == 0:
            return 0
        if self.release_gil:
            with nogil:
                bad = quantize_impl(&self.x[0], self.scale, self.zp, &self.out[0], self.size)
        else:
            bad = quantize_impl(&self.x[0], self.scale, self.zp, &self.out[0], self.size)
        return bad


@cython.auto_pickle(False)
cdef class DequantizeCall:
    """dequantize with its arguments checked once."""
    cdef const int8_t[::1] x
    cdef float[::1] out
    cdef double scale
    cdef int32_t zp
    cdef Py_ssize_t size
    cdef bint release_gil

    def __init__(self, const int8_t[::1] x not None, double scale, int zp,
                 float[::1] out not None):
        check_scale("dequantize", scale, zp)
        check_length("dequantize", "out", out.shape[0], x.shape[0], "same as x")
        self.x, self.out, self.scale, self.zp, self.size = x, out, scale, zp, x.shape[0]
        self.release_gil = self.size >= NOGIL_MIN_ELEMENTS

    def __call__(self):
        if self.size == 0:
            return
        if self.release_gil:
            with nogil:
                dequantize_impl(&self.x[0], self.scale, self.zp, &self.out[0], self.size)
        else:
            dequantize_impl(&self.x[0], self.scale, self.zp, &self.out[0], self.size)


# ---- the float boundaries of predict -------------------------------------------------------

@cython.auto_pickle(False)
cdef class InputStage:
    """Puts the caller's input into an arena buffer: ``stage(x)`` copies an int8 x, or
    quantizes a float32 x (as quantize), into ``out`` and returns the number of non-finite
    values (0 for int8), or -1 without touching anything if x is not a C-contiguous NumPy
    array of dtype float32 or int8 and shape ``shape`` (the caller then converts it).

    out: the arena buffer, int8, C-contiguous, shape ``shape``; scale, zp: the input's
    quantization (as quantize)."""
    cdef object buffer
    cdef int8_t* out
    cdef cnp.npy_intp dims[32]
    cdef int ndim
    cdef Py_ssize_t size
    cdef double scale
    cdef int32_t zp

    def __init__(self, cnp.ndarray out not None, double scale, int zp):
        cdef int d
        check_scale("quantize", scale, zp)
        if cnp.PyArray_TYPE(out) != cnp.NPY_INT8 or not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise ValueError("InputStage: out must be a C-contiguous int8 array")
        if not cnp.PyArray_ISWRITEABLE(out):
            raise ValueError("InputStage: out must be writeable")
        if out.ndim > 32:
            raise ValueError("InputStage: out has more than 32 dimensions")
        self.buffer, self.out = out, <int8_t*>cnp.PyArray_DATA(out)
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
        if (kind != cnp.NPY_FLOAT32 and kind != cnp.NPY_INT8) or not cnp.PyArray_IS_C_CONTIGUOUS(a):
            return -1
        if cnp.PyArray_NDIM(a) != self.ndim:
            return -1
        for d in range(self.ndim):
            if cnp.PyArray_DIM(a, d) != self.dims[d]:
                return -1
        if self.size == 0:
            return 0
        if kind == cnp.NPY_INT8:
            memcpy(self.out, cnp.PyArray_DATA(a), self.size)
            return 0
        if self.size >= NOGIL_MIN_ELEMENTS:
            with nogil:
                bad = quantize_impl(<const float*>cnp.PyArray_DATA(a), self.scale, self.zp,
                                    self.out, self.size)
        else:
            bad = quantize_impl(<const float*>cnp.PyArray_DATA(a), self.scale, self.zp,
                                self.out, self.size)
        return bad


@cython.auto_pickle(False)
cdef class OutputStage:
    """Makes predict's result from an arena buffer: ``stage()`` returns a new array (the caller
    owns it) of x's shape, float32 (dequantized, as dequantize) or an int8 copy.

    x: the arena buffer, int8, C-contiguous; scale, zp: the output's quantization;
    as_float: dequantize (True) or copy the int8 codes (False)."""
    cdef object buffer
    cdef const int8_t* x
    cdef int ndim
    cdef cnp.npy_intp dims[32]
    cdef Py_ssize_t size
    cdef double scale
    cdef int32_t zp
    cdef bint as_float

    def __init__(self, cnp.ndarray x not None, double scale, int zp, bint as_float):
        cdef int d
        check_scale("dequantize", scale, zp)
        if cnp.PyArray_TYPE(x) != cnp.NPY_INT8 or not cnp.PyArray_IS_C_CONTIGUOUS(x):
            raise ValueError("OutputStage: x must be a C-contiguous int8 array")
        if x.ndim > 32:
            raise ValueError("OutputStage: x has more than 32 dimensions")
        self.buffer, self.x = x, <const int8_t*>cnp.PyArray_DATA(x)
        self.ndim, self.size = x.ndim, x.size
        for d in range(self.ndim):
            self.dims[d] = cnp.PyArray_DIM(x, d)
        self.scale, self.zp, self.as_float = scale, zp, as_float

    def __call__(self):
        cdef cnp.ndarray result
        if not self.as_float:
            result = cnp.PyArray_EMPTY(self.ndim, self.dims, cnp.NPY_INT8, 0)
            memcpy(cnp.PyArray_DATA(result), self.x, self.size)
            return result
        result = cnp.PyArray_EMPTY(self.ndim, self.dims, cnp.NPY_FLOAT32, 0)
        if self.size >= NOGIL_MIN_ELEMENTS:
            with nogil:
                dequantize_impl(self.x, self.scale, self.zp, <float*>cnp.PyArray_DATA(result),
                                self.size)
        else:
            dequantize_impl(self.x, self.scale, self.zp, <float*>cnp.PyArray_DATA(result),
                            self.size)
        return result


# ---- Python entry points -------------------------------------------------------------------

def lookup(const int8_t[::1] x not None, const int8_t[::1] table not None,
           int8_t[::1] out not None):
    """out[i] = table[x[i] + 128]: any int8 -> int8 function as a 256-entry table
    (sigmoid, tanh, swish, ...; built at quantize time)."""
    LookupCall(x, table, out)()


def requantize(const int8_t[::1] x not None, int in_zp, int m0, int shift, int out_zp,
               int act_min, int act_max, int8_t[::1] out not None):
    """out[i] = clamp(out_zp + MBQM(x[i] - in_zp, m0, shift), act_min, act_max): move int8
    data from one (scale, zero point) to another; real factor in_scale / out_scale.

    in_zp, out_zp: int8 zero points; m0 in [2^30, 2^31) or 0; shift in [-31, 30].
    """
    RequantizeCall(x, in_zp, m0, shift, out_zp, act_min, act_max, out)()


def quantize(const float[::1] x not None, double scale, int zp, int8_t[::1] out not None):
    """out[i] = clamp(round((double)x[i] / scale) + zp, -128, 127), round = half away from
    zero (C round()). scale: real units per int8 step, finite and > 0; zp in [-128, 127].

    Returns the number of non-finite x[i] (NaN, +-inf); those get out[i] = zp.
    """
    return QuantizeCall(x, scale, zp, out)()


def dequantize(const int8_t[::1] x not None, double scale, int zp, float[::1] out not None):
    """out[i] = (float)((double)(x[i] - zp) * scale): int8 back to real units.
    scale finite and > 0; zp in [-128, 127]."""
    DequantizeCall(x, scale, zp, out)()

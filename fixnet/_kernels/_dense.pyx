# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fully connected layer on int8: int8 x int8 products, int32 accumulators, requantized to int8.

Bit-exact with ``fixnet.oracle.dense``. Private: fixnet.runtime plans the calls.

Calling pattern (shared by every kernel module): ``DenseCall(...)`` takes exactly the
arguments of ``dense(...)``, checks them once, keeps the arrays and precomputes what does not
depend on x (packed weights, requantization constants); calling it runs the kernel on what x
holds now, with no checks. ``dense(...)`` is ``DenseCall(...)()``. A Call object owns scratch
buffers: do not run one object from two threads at once.

How the loop is laid out (see DESIGN.md, Kernels):

* Weights are packed once (``pack_dense_weights``, at quantize time) into rows of
  ``dense_elem_t``, the element type the compiler's dot-product pattern wants: int16 on
  x86-64, so that ``acc += x[k] * w[k]`` becomes pmaddwd / vpmaddwd (vpdpwssd with AVX-512
  VNNI) with no widening in the loop; int8 on ARM (smlal, or sdot with +dotprod). Each row
  is padded with zeros to a multiple of DENSE_K_ALIGN and the channels to a multiple of 4,
  so the vector loop never falls into a scalar tail and every pass computes four channels.
* Per input row: one widened, zero-padded copy of the row, four channels per pass over it
  (each load of x used four times), the int32 accumulators of the whole row collected, then
  requantized in one separate branch-free loop (``requantize_block``), which gcc vectorises
  from AVX2 up and keeps free of mispredicted branches in scalar code.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

import numpy as np

from fixnet._kernels.fixedpoint cimport (
    DOT_BLOCK,
    check_length,
    check_multipliers,
    check_output_range,
    requant_constants,
    requantize_block,
    requantize_block_left,
)

cdef extern from *:
    """
    /* The element type of packed dense weights and of the widened input row. */
    #if defined(__aarch64__) || defined(_M_ARM64) || defined(__arm__) || defined(_M_ARM)
    typedef int8_t fixnet_dense_elem_t;
    #else
    typedef int16_t fixnet_dense_elem_t;
    #endif
    """
    ctypedef signed short dense_elem_t "fixnet_dense_elem_t"

cdef enum:
    # Packed rows are padded to a multiple of this many elements (32 bytes of int16: one AVX2
    # vector, two SSE2 vectors), so gcc's vector loop covers every row without a scalar tail.
    DENSE_K_ALIGN = 16
    # Release the GIL only when a call does at least this many multiply-adds: below it,
    # releasing and re-taking the GIL costs more than other threads could gain.
    NOGIL_MIN_WORK = 32768


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t multiple) noexcept nogil:
    return (n + multiple - 1) // multiple * multiple


# ---- packed weights ------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class PackedDenseWeights:
    """Weights of one dense layer in the kernel's layout: ``dense_elem_t [Cp, Kp]``, row c the
    weights of output channel c, zero beyond K (Kp = K rounded up to DENSE_K_ALIGN) and zero
    rows beyond C (Cp = C rounded up to 4). Built by ``pack_dense_weights(w)``; read-only."""
    cdef readonly Py_ssize_t channels, depth, padded_channels, padded_depth
    cdef readonly object data       # the packed array (NumPy, int16 on x86-64, int8 on ARM)
    cdef readonly object source     # the int8 [C, K] array it was packed from (kept alive)
    cdef const int8_t* source_data
    cdef const dense_elem_t* packed

    def __repr__(self):
        return (f"<PackedDenseWeights C={self.channels} K={self.depth} "
                f"({self.data.dtype} [{self.padded_channels}, {self.padded_depth}])>")


def pack_dense_weights(w not None):
    """Pack int8 weights w [C, K] (C-contiguous, values in [-127, 127]) for dense / DenseCall.

    Do this once (at quantize time) and pass the result as ``packed=`` to DenseCall; w must
    not change afterwards (the kernel reads only the packed copy)."""
    cdef const int8_t[:, ::1] w_view = w
    cdef PackedDenseWeights p = PackedDenseWeights.__new__(PackedDenseWeights)
    cdef Py_ssize_t c_len = w_view.shape[0], k_len = w_view.shape[1]
    p.channels, p.depth = c_len, k_len
    p.padded_channels = round_up(c_len, 4)
    p.padded_depth = round_up(k_len, DENSE_K_ALIGN)
    dtype = np.int16 if sizeof(dense_elem_t) == 2 else np.int8
    data = np.zeros((max(p.padded_channels, 1), max(p.padded_depth, 1)), dtype)
    data[:c_len, :k_len] = np.asarray(w_view)
    p.data = data
    p.source = w
    p.source_data = &w_view[0, 0] if c_len > 0 and k_len > 0 else NULL
    p.packed = <const dense_elem_t*><size_t>data.ctypes.data
    return p


# ---- the loop ------------------------------------------------------------------------------

ctypedef struct DenseArgs:
    const int8_t* x             # [N, K]
    int8_t* out                 # [N, C]
    const dense_elem_t* w       # packed [Cp, Kp]
    const int32_t* bias         # [Cp], zero beyond C
    const int32_t* m0           # [C]
    const int32_t* left         # [C]   left shift before the multiply (max(shift, 0))
    const int64_t* nudge        # [C]   requant_constants
    const int64_t* neg_adjust   # [C]
    const int64_t* total_shift  # [C]
    dense_elem_t* x_row         # scratch [Kp]: the current row, widened, zero beyond K
    int32_t* acc                # scratch [Cp]: the current row's accumulators
    Py_ssize_t n_rows, depth, padded_depth, channels, padded_channels
    int32_t out_zp, act_min, act_max
    bint any_left_shift


cdef inline void dot4_packed(const dense_elem_t* x, const dense_elem_t* w, Py_ssize_t stride,
                             Py_ssize_t n, uint32_t* acc) noexcept nogil:
    """acc[j] += sum_k x[k] * w[j * stride + k] for j < 4, k < n <= DOT_BLOCK (so each int32
    partial sum is below 2^26), added modulo 2^32. One loop, no branches, four independent
    dot products: gcc's dot-product pattern (pmaddwd / vpdpwssd / sdot)."""
    cdef const dense_elem_t* w1 = w + stride
    cdef const dense_elem_t* w2 = w1 + stride
    cdef const dense_elem_t* w3 = w2 + stride
    cdef int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t k
    for k in range(n):
        a0 += <int32_t>x[k] * <int32_t>w[k]
        a1 += <int32_t>x[k] * <int32_t>w1[k]
        a2 += <int32_t>x[k] * <int32_t>w2[k]
        a3 += <int32_t>x[k] * <int32_t>w3[k]
    acc[0] += <uint32_t>a0
    acc[1] += <uint32_t>a1
    acc[2] += <uint32_t>a2
    acc[3] += <uint32_t>a3


cdef inline void widen_row(const int8_t* src, dense_elem_t* dst, Py_ssize_t n) noexcept nogil:
    """dst[k] = src[k] for k < n (sign extension: pmovsxbw / punpcklbw + psraw)."""
    cdef Py_ssize_t k
    for k in range(n):
        dst[k] = src[k]


cdef void dense_impl(const DenseArgs* a) noexcept nogil:
    # Everything in locals: with -fno-strict-aliasing every store into the scratch rows could
    # alias *a, and gcc would reload the fields inside the loops.
    cdef const int8_t* x = a.x
    cdef int8_t* out = a.out
    cdef const dense_elem_t* w = a.w
    cdef dense_elem_t* x_row = a.x_row
    cdef uint32_t* acc = <uint32_t*>a.acc
    cdef const int32_t* bias = a.bias
    cdef Py_ssize_t n_rows = a.n_rows, k_len = a.depth, kp = a.padded_depth
    cdef Py_ssize_t c_len = a.channels, cp = a.padded_channels
    cdef Py_ssize_t n, c, k0, block_len
    for n in range(n_rows):
        widen_row(x + n * k_len, x_row, k_len)      # the tail k >= K stays zero
        memcpy(acc, bias, cp * sizeof(uint32_t))
        for c in range(0, cp, 4):
            k0 = 0
            while k0 < kp:
                block_len = kp - k0 if kp - k0 < DOT_BLOCK else DOT_BLOCK
                dot4_packed(x_row + k0, w + c * kp + k0, kp, block_len, acc + c)
                k0 += DOT_BLOCK
        if a.any_left_shift:
            requantize_block_left(<const int32_t*>acc, c_len, a.m0, a.left, a.nudge,
                                  a.neg_adjust, a.total_shift, a.out_zp, a.act_min,
                                  a.act_max, out + n * c_len)
        else:
            requantize_block(<const int32_t*>acc, c_len, a.m0, a.nudge, a.neg_adjust,
                             a.total_shift, a.out_zp, a.act_min, a.act_max, out + n * c_len)


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class DenseCall:
    """dense with its arguments checked once: ``DenseCall(...)()`` runs the kernel.

    Reads x on every call and rewrites out in full; w, bias, m0 and shift are read once, here
    (packed and precomputed). ``packed``: the result of ``pack_dense_weights(w)`` for this
    very w (saves packing it again); by default w is packed here.
    """
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef PackedDenseWeights packed
    cdef object params                  # NumPy arrays the pointers in args point into
    cdef dense_elem_t* x_row
    cdef DenseArgs args
    cdef bint release_gil

    def __init__(self, const int8_t[:, ::1] x not None, const int8_t[:, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
                 int8_t[:, ::1] out not None, PackedDenseWeights packed=None):
        cdef Py_ssize_t n_rows = x.shape[0], k_len = x.shape[1], n_channels = w.shape[0]
        cdef Py_ssize_t c
        if w.shape[1] != k_len:
            raise ValueError(f"dense: w has shape ({w.shape[0]}, {w.shape[1]}), expected "
                             f"(C, {k_len}): one row of K = x.shape[1] = {k_len} weights per channel")
        check_length("dense", "bias", bias.shape[0], n_channels, "one per output channel, C = w.shape[0]")
        check_length("dense", "m0", m0.shape[0], n_channels, "one per output channel, C = w.shape[0]")
        check_length("dense", "shift", shift.shape[0], n_channels, "one per output channel, C = w.shape[0]")
        if out.shape[0] != n_rows or out.shape[1] != n_channels:
            raise ValueError(f"dense: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected (N, C) = ({n_rows}, {n_channels})")
        check_output_range("dense", out_zp, act_min, act_max)
        if n_channels:
            check_multipliers("dense", &m0[0], &shift[0], n_channels)
        if packed is None:
            packed = pack_dense_weights(w.base if w.base is not None else np.asarray(w))
        elif (packed.channels != n_channels or packed.depth != k_len
              or (n_channels and k_len and packed.source_data != &w[0, 0])):
            raise ValueError(f"dense: packed holds the weights of another array "
                             f"({packed.channels} x {packed.depth}); pass "
                             f"pack_dense_weights(w) of this w")
        self.x, self.out, self.packed = x, out, packed

        cdef Py_ssize_t cp = packed.padded_channels, kp = packed.padded_depth
        bias_p = np.zeros(max(cp, 1), np.int32)
        bias_p[:n_channels] = np.asarray(bias)
        m0_c = np.array(m0, np.int32).reshape(-1)
        left_c = np.zeros(max(n_channels, 1), np.int32)
        consts = np.zeros((3, max(n_channels, 1)), np.int64)
        cdef int32_t[::1] left_v = left_c
        cdef int64_t[:, ::1] consts_v = consts
        for c in range(n_channels):
            requant_constants(shift[c], &consts_v[0, c], &consts_v[1, c], &consts_v[2, c],
                              &left_v[c])
        x_row = np.zeros(max(kp, 1), packed.data.dtype)
        self.params = (bias_p, m0_c, left_c, consts, x_row, np.zeros(max(cp, 1), np.int32))

        cdef DenseArgs* a = &self.args
        a.x = &x[0, 0] if n_rows and k_len else NULL
        a.out = &out[0, 0] if n_rows and n_channels else NULL
        a.w = packed.packed
        a.bias = <const int32_t*><size_t>bias_p.ctypes.data
        a.m0 = <const int32_t*><size_t>m0_c.ctypes.data if n_channels else NULL
        a.left = &left_v[0]
        a.nudge = &consts_v[0, 0]
        a.neg_adjust = &consts_v[1, 0]
        a.total_shift = &consts_v[2, 0]
        a.x_row = <dense_elem_t*><size_t>x_row.ctypes.data
        a.acc = <int32_t*><size_t>self.params[5].ctypes.data
        a.n_rows = n_rows if n_channels else 0
        a.depth = k_len
        a.padded_depth = kp
        a.channels = n_channels
        a.padded_channels = cp
        a.out_zp = out_zp
        a.act_min = act_min
        a.act_max = act_max
        a.any_left_shift = bool(np.any(np.asarray(shift) > 0))
        self.release_gil = n_rows * cp * kp >= NOGIL_MIN_WORK

    def __call__(self):
        if self.release_gil:
            with nogil:
                dense_impl(&self.args)
        else:
            dense_impl(&self.args)


def dense(const int8_t[:, ::1] x not None, const int8_t[:, ::1] w not None,
          const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
          const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
          int8_t[:, ::1] out not None):
    """out[n, c] = clamp(out_zp + MBQM(bias[c] + sum_k x[n, k] * w[c, k], m0[c], shift[c]),
    act_min, act_max), MBQM = multiply_by_quantized_multiplier.

    x: int8 [N, K] activations (the input zero point is folded into bias by the quantizer).
    w: int8 [C, K] weights, one contiguous row per output channel, values in [-127, 127].
    bias, m0, shift: int32 [C]; m0 in [2^30, 2^31) or 0, shift in [-31, 30].
    out_zp, act_min, act_max: int8 output zero point and clamp bounds (fused activation).
    out: int8 [N, C], written in full. The int32 accumulator wraps modulo 2^32 if the
    quantizer's overflow proof does not hold (oracle.dense_accumulators detects that).
    """
    DenseCall(x, w, bias, m0, shift, out_zp, act_min, act_max, out)()

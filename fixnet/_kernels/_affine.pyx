# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The affine op (fixnet/ops/affine.py): a per-channel scale and offset, for example a
BatchNorm that could not be folded into a neighbouring layer; x and out int8, or both int16
(zero point 0), weights int8. The accumulator bias + x * w is int32: |x * w| <= 2^15 * 2^7.

Bit-exact with ``fixnet.oracle.affine``. Private: fixnet.runtime plans the calls. A
ChannelAffineCall has scratch space (one accumulator row): one call must not run in two
threads at once (the pass never does that: it is not split into tasks).
"""
cimport cython
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t, uint64_t, INT32_MAX, INT32_MIN

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport act_t, call_bits, check_act_output_range
from fixnet._kernels.fixedpoint cimport (
    check_length,
    check_multipliers,
    requant_constants,
    requantize_block,
    requantize_block_left,
    requantize_precomputed,
)

cdef enum:
    # Work (elements) at which releasing the GIL pays.
    NOGIL_MIN_ELEMENTS = 65536


cdef void requantize_block16(const int32_t* acc, Py_ssize_t n, const int32_t* m0,
                             const int32_t* left, const int64_t* nudge,
                             const int64_t* neg_adjust, const int64_t* total_shift,
                             bint any_left_shift, int32_t act_min, int32_t act_max,
                             int16_t* out) noexcept nogil:
    """fixedpoint.pxd's requantize_block_left (requantize_block without left shifts) with an
    int16 output, out_zp 0: out[c] = clamp(MBQM(acc[c], m0[c], shift[c]), act_min, act_max)."""
    cdef Py_ssize_t c
    cdef int64_t x
    cdef int32_t v
    for c in range(n):
        x = acc[c]
        if any_left_shift:      # the same for every c: gcc unswitches the loop
            x = <int64_t>(<uint64_t>x << left[c])   # |acc| 2^left < 2^61: no wrap
            x = INT32_MAX if x > INT32_MAX else x
            x = INT32_MIN if x < INT32_MIN else x
        v = requantize_precomputed(x, m0[c], nudge[c], neg_adjust[c], total_shift[c])
        v = act_min if v < act_min else v
        v = act_max if v > act_max else v
        out[c] = <int16_t>v


cdef void channel_affine_impl(const act_t* x, const int8_t* w, const int32_t* bias,
                              const int32_t* m0, const int32_t* left, const int64_t* nudge,
                              const int64_t* neg_adjust, const int64_t* total_shift,
                              bint any_left_shift, int32_t out_zp, int32_t act_min,
                              int32_t act_max, int32_t* acc, act_t* out, Py_ssize_t n_rows,
                              Py_ssize_t n_channels) noexcept nogil:
    """Per row: acc[c] = bias[c] + x[n, c] * w[c] modulo 2^32 (vectorises), then one
    branch-free requantize_block over the row (int16: requantize_block16)."""
    cdef Py_ssize_t n, c
    cdef const act_t* x_row
    for n in range(n_rows):
        x_row = x + n * n_channels
        for c in range(n_channels):
            acc[c] = <int32_t>(<uint32_t>bias[c] + <uint32_t>(<int32_t>x_row[c] * <int32_t>w[c]))
        if act_t is int16_t:
            requantize_block16(acc, n_channels, m0, left, nudge, neg_adjust, total_shift,
                               any_left_shift, act_min, act_max, out + n * n_channels)
        elif any_left_shift:
            requantize_block_left(acc, n_channels, m0, left, nudge, neg_adjust, total_shift,
                                  out_zp, act_min, act_max, out + n * n_channels)
        else:
            requantize_block(acc, n_channels, m0, nudge, neg_adjust, total_shift, out_zp,
                             act_min, act_max, out + n * n_channels)


@cython.auto_pickle(False)
cdef class ChannelAffineCall(KernelCall):
    """channel_affine with its arguments checked once; w and bias are copied and the
    requantization constants of m0 and shift precomputed here."""
    cdef readonly int bits              # 8 or 16: the activation type of x and out
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef const int16_t[:, ::1] x16
    cdef int16_t[:, ::1] out16
    cdef object params                  # NumPy arrays the pointers below point into
    cdef const int8_t* w
    cdef const int32_t* bias
    cdef const int32_t* m0
    cdef const int32_t* left
    cdef const int64_t* consts          # nudge, neg_adjust, total_shift: [3, C]
    cdef int32_t* acc
    cdef Py_ssize_t n_rows, n_channels
    cdef int32_t out_zp, act_min, act_max
    cdef bint any_left_shift

    def __init__(self, x, const int8_t[::1] w not None, const int32_t[::1] bias not None,
                 const int32_t[::1] m0 not None, const int32_t[::1] shift not None, int out_zp,
                 int act_min, int act_max, out):
        cdef Py_ssize_t n_rows, n_channels, out_rows, out_channels, c
        self.bits = call_bits("channel_affine", (x, out), ("x", "out"))
        if self.bits == 16:
            self.x16, self.out16 = x, out
            n_rows, n_channels = self.x16.shape[0], self.x16.shape[1]
            out_rows, out_channels = self.out16.shape[0], self.out16.shape[1]
        else:
            self.x, self.out = x, out
            n_rows, n_channels = self.x.shape[0], self.x.shape[1]
            out_rows, out_channels = self.out.shape[0], self.out.shape[1]
        check_length("channel_affine", "w", w.shape[0], n_channels, "one per channel, C = x.shape[1]")
        check_length("channel_affine", "bias", bias.shape[0], n_channels, "one per channel, C = x.shape[1]")
        check_length("channel_affine", "m0", m0.shape[0], n_channels, "one per channel, C = x.shape[1]")
        check_length("channel_affine", "shift", shift.shape[0], n_channels, "one per channel, C = x.shape[1]")
        if out_rows != n_rows or out_channels != n_channels:
            raise ValueError(f"channel_affine: out has shape ({out_rows}, {out_channels}), "
                             f"expected the shape of x, ({n_rows}, {n_channels})")
        check_act_output_range("channel_affine", out_zp, act_min, act_max, self.bits)
        if n_channels:
            check_multipliers("channel_affine", &m0[0], &shift[0], n_channels)
        cdef Py_ssize_t size = max(n_channels, 1)
        w_c = np.zeros(size, np.int8)
        bias_c = np.zeros(size, np.int32)
        m0_c = np.zeros(size, np.int32)
        left_c = np.zeros(size, np.int32)
        consts = np.zeros((3, size), np.int64)
        w_c[:n_channels] = np.asarray(w)
        bias_c[:n_channels] = np.asarray(bias)
        m0_c[:n_channels] = np.asarray(m0)
        cdef int32_t[::1] left_v = left_c
        cdef int64_t[:, ::1] consts_v = consts
        for c in range(n_channels):
            requant_constants(shift[c], &consts_v[0, c], &consts_v[1, c], &consts_v[2, c],
                              &left_v[c])
        acc = np.zeros(size, np.int32)
        self.params = (w_c, bias_c, m0_c, left_c, consts, acc)
        self.w = <const int8_t*><size_t>w_c.ctypes.data
        self.bias = <const int32_t*><size_t>bias_c.ctypes.data
        self.m0 = <const int32_t*><size_t>m0_c.ctypes.data
        self.left = &left_v[0]
        self.consts = &consts_v[0, 0]
        self.acc = <int32_t*><size_t>acc.ctypes.data
        self.any_left_shift = bool(np.any(np.asarray(shift) > 0))
        self.n_rows, self.n_channels = n_rows, n_channels
        self.out_zp, self.act_min, self.act_max = out_zp, act_min, act_max
        self.n_tasks = 1
        self.work_share = <double>n_rows * n_channels / NOGIL_MIN_ELEMENTS

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t c = self.n_channels
        if self.n_rows == 0 or c == 0 or first >= last:
            return
        if self.bits == 16:
            channel_affine_impl(&self.x16[0, 0], self.w, self.bias, self.m0, self.left,
                                self.consts, self.consts + c, self.consts + 2 * c,
                                self.any_left_shift, self.out_zp, self.act_min, self.act_max,
                                self.acc, &self.out16[0, 0], self.n_rows, c)
        else:
            channel_affine_impl(&self.x[0, 0], self.w, self.bias, self.m0, self.left,
                                self.consts, self.consts + c, self.consts + 2 * c,
                                self.any_left_shift, self.out_zp, self.act_min, self.act_max,
                                self.acc, &self.out[0, 0], self.n_rows, c)


def channel_affine(x, const int8_t[::1] w not None, const int32_t[::1] bias not None,
                   const int32_t[::1] m0 not None, const int32_t[::1] shift not None, int out_zp,
                   int act_min, int act_max, out):
    """out[n, c] = clamp(out_zp + MBQM(bias[c] + x[n, c] * w[c], m0[c], shift[c]),
    act_min, act_max): a per-channel scale and offset (e.g. a BatchNorm that could not be
    folded), MBQM = multiply_by_quantized_multiplier.

    x: int8 or int16 [N, C] (int16: out_zp 0, act_min/act_max in int16); w: int8 [C]; bias,
    m0, shift: int32 [C]; out: [N, C] of x's type. The accumulator bias + x * w wraps modulo
    2^32 if it leaves int32 (as in dense).
    """
    ChannelAffineCall(x, w, bias, m0, shift, out_zp, act_min, act_max, out)()

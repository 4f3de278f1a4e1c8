# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Softmax on int8 logits with an exp lookup table and integer normalisation.

Output is int8 probabilities with scale 1/levels and zero point -128: levels = 256 is
TFLite's output (1.0 not representable, the top code is 255/256), levels = 255 represents
both 0 and 1 exactly. Bit-exact with ``fixnet.oracle.softmax``. Private: fixnet.runtime plans the calls.

Calling pattern (shared by every kernel module): ``SoftmaxCall(x, exp_table, out)`` checks
its arguments once and copies the (checked) table; calling it runs the kernel on what x holds
now. ``softmax(...)`` is ``SoftmaxCall(...)()``. A SoftmaxCall owns a scratch row: do not run
one object from two threads at once.
"""
cimport cython
from fixnet._kernels._step cimport KernelCall
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

import numpy as np

cdef enum:
    # Release the GIL only for calls over at least this many elements.
    NOGIL_MIN_ELEMENTS = 16384
    # Rows are processed in blocks of about this many elements (see softmax_impl).
    SOFTMAX_BLOCK = 256


cdef void softmax_impl(const int8_t* x, const int32_t* exp_table, int32_t* e, double* total,
                       double* half, int8_t* out, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       Py_ssize_t block_rows, double levels) noexcept nogil:
    """Per row: m = max(x), e_i = exp_table[m - x_i], s = sum e_i,
    out_i = min((levels e_i + s // 2) // s - 128, 127).

    In blocks of block_rows rows: a first pass per row (max, table lookups, sum) leaves e_i,
    s and s // 2 for every element of the block in scratch arrays; a second pass over the
    whole block divides, so it vectorises even when rows are short (10 classes). The
    quotient is a double division, which is exact here: numerator and s are integers below
    2^53, so the correctly rounded quotient never crosses an integer it should not (a
    non-integer quotient is at least 1/s away from one, far more than its rounding error of
    quotient * 2^-53), and truncating it (>= 0) is the floor."""
    cdef Py_ssize_t r0, rows, r, i, size
    cdef const int8_t* x_row
    cdef int32_t* e_row
    cdef int32_t row_max, row_total, q
    cdef double s, h
    cdef int8_t* out_block
    r0 = 0
    while r0 < n_rows:
        rows = n_rows - r0 if n_rows - r0 < block_rows else block_rows
        for r in range(rows):
            x_row = x + (r0 + r) * n_cols
            e_row = e + r * n_cols
            row_max = x_row[0]
            for i in range(1, n_cols):
                row_max = x_row[i] if x_row[i] > row_max else row_max
            for i in range(n_cols):
                e_row[i] = exp_table[row_max - x_row[i]]
            row_total = 0  # <= C * exp_table[0] < 2^31 by the entry check; >= exp_table[0] > 0
            for i in range(n_cols):
                row_total += e_row[i]
            s = <double>row_total
            h = <double>(row_total // 2)
            for i in range(n_cols):
                total[r * n_cols + i] = s
                half[r * n_cols + i] = h
        size = rows * n_cols
        out_block = out + r0 * n_cols
        for i in range(size):
            # levels * e < 2^31 and half < 2^30: the numerator is an integer below 2^32,
            # exact in double (formed in double: int32 -> double converts in SIMD, int64
            # does not).
            q = <int32_t>((<double>e[i] * levels + half[i]) / total[i]) - 128
            out_block[i] = <int8_t>(q if q < 127 else 127)  # q >= -128 since e >= 0
        r0 += rows


@cython.auto_pickle(False)
cdef class SoftmaxCall(KernelCall):
    """softmax with its arguments checked once; the table is copied here (its checks are the
    overflow proof, so a later change to the caller's array must not reach the kernel)."""
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef int32_t exp_table[256]
    cdef object scratch
    cdef int32_t* e
    cdef double* total
    cdef double* half
    cdef Py_ssize_t n_rows, n_cols, block_rows
    cdef double levels

    def __init__(self, const int8_t[:, ::1] x not None, const int32_t[::1] exp_table not None,
                 int8_t[:, ::1] out not None, int levels=256):
        cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], d
        cdef int32_t top
        if exp_table.shape[0] != 256:
            raise ValueError(f"softmax: exp_table has length {exp_table.shape[0]}, expected 256 "
                             f"(one entry per difference max(x) - x in 0..255)")
        if out.shape[0] != n_rows or out.shape[1] != n_cols:
            raise ValueError(f"softmax: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected the shape of x, ({n_rows}, {n_cols})")
        if levels < 1 or levels > 256:
            raise ValueError(f"softmax: levels = {levels} must be in 1..256 (the output scale "
                             f"is 1/levels)")
        top = exp_table[0]
        if top <= 0:
            raise ValueError(f"softmax: exp_table[0] = {top} must be positive (it is 2^K, exp(0))")
        for d in range(256):
            if exp_table[d] < 0 or exp_table[d] > top:
                raise ValueError(f"softmax: exp_table[{d}] = {exp_table[d]} is outside "
                                 f"[0, exp_table[0]] = [0, {top}]")
        if <int64_t>n_cols * top >= (<int64_t>1 << 31):
            raise ValueError(f"softmax: C * exp_table[0] = {n_cols} * {top} >= 2^31: the int32 "
                             f"sum of a row could overflow; build the table with a smaller K")
        if <int64_t>top * levels >= (<int64_t>1 << 31):
            raise ValueError(f"softmax: levels * exp_table[0] = {levels} * {top} >= 2^31; "
                             f"build the table with a smaller K")
        self.levels = levels
        memcpy(self.exp_table, &exp_table[0], 256 * sizeof(int32_t))
        self.block_rows = max(1, min(n_rows, (SOFTMAX_BLOCK + n_cols - 1) // max(n_cols, 1)))
        size = max(self.block_rows * n_cols, 1)
        self.scratch = (np.zeros(size, np.int32), np.zeros(size, np.float64),
                        np.zeros(size, np.float64))
        self.e = <int32_t*><size_t>self.scratch[0].ctypes.data
        self.total = <double*><size_t>self.scratch[1].ctypes.data
        self.half = <double*><size_t>self.scratch[2].ctypes.data
        self.x, self.out, self.n_rows, self.n_cols = x, out, n_rows, n_cols
        self.n_tasks = 1
        self.work_share = <double>self.n_rows * self.n_cols / NOGIL_MIN_ELEMENTS

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.n_rows == 0 or self.n_cols == 0:
            return
        softmax_impl(&self.x[0, 0], self.exp_table, self.e, self.total, self.half,
                     &self.out[0, 0], self.n_rows, self.n_cols, self.block_rows, self.levels)


def softmax(const int8_t[:, ::1] x not None, const int32_t[::1] exp_table not None,
            int8_t[:, ::1] out not None, int levels=256):
    """Row-wise softmax of x [N, C] into out [N, C].

    exp_table: int32 [256], entry d ~ 2^K * exp(-input_scale * d), entry 0 = 2^K, all
    entries in [0, exp_table[0]]. Per row: e_i = exp_table[max(x) - x_i], s = sum e_i,
    out_i = clamp((levels * e_i + s // 2) // s - 128, -128, 127): probabilities with scale
    1/levels (levels in 1..256; 256 is TFLite's 1/256, 255 represents 1.0 exactly).
    Raises ValueError unless C * exp_table[0] < 2^31 and levels * exp_table[0] < 2^31, which
    (with the entry range) proves the int32 sum and the scaled numerator cannot overflow.
    """
    SoftmaxCall(x, exp_table, out, levels)()

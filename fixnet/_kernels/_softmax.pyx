# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Softmax on int8 or int16 logits with an exp lookup table and integer normalisation.

int8 logits: int8 probabilities with scale 1/levels and zero point -128: levels = 256 is
TFLite's output (1.0 not representable, the top code is 255/256), levels = 255 represents
both 0 and 1 exactly. int16 logits: int16 probabilities with scale 1/levels and zero point 0
(levels 32767 by default: 0 and 1 are both exact codes). Bit-exact with
``fixnet.oracle.softmax``. Private: fixnet.runtime plans the calls.

Calling pattern (shared by every kernel module): ``SoftmaxCall(x, exp_table, out)`` checks
its arguments once and copies the (checked) table; calling it runs the kernel on what x holds
now. ``softmax(...)`` is ``SoftmaxCall(...)()``. A SoftmaxCall owns a scratch row: do not run
one object from two threads at once.
"""
cimport cython
cimport numpy as cnp
from fixnet._kernels._step cimport KernelCall
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

import numpy as np

cnp.import_array()

cdef enum:
    # Release the GIL only for calls over at least this many elements.
    NOGIL_MIN_ELEMENTS = 16384
    # Rows are processed in blocks of about this many elements (see softmax_impl).
    SOFTMAX_BLOCK = 256
    # int16: the longest exp table, one entry per difference max(x) - x in 0..65535.
    TABLE_16_MAX = 65536
    # int16: the largest levels (output scale 1/levels), the largest int16 code.
    LEVELS_16_MAX = 32767


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


cdef void softmax16_impl(const int16_t* x, const int32_t* exp_table, int32_t last,
                         int32_t* e, double* total, double* half, int16_t* out,
                         Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t block_rows,
                         double levels) noexcept nogil:
    """softmax_impl for int16 logits: e_i = exp_table[min(m - x_i, last)] (the table holds
    ``last`` entries and a 0 after them: every difference beyond the table's length is an
    entry that rounds to 0), out_i = (levels e_i + s // 2) // s, in [0, levels] as e_i <= s.

    The numerator levels * e_i + s // 2 is below 2^15 * 2^31 + 2^30 < 2^53, an exact double;
    the quotient (at most 2^15) has a rounding error of at most 2^15 * 2^-53 = 2^-38, less
    than 1/s > 2^-31, the least distance of a non-integer quotient from an integer: the
    truncated double quotient is the floor, as in softmax_impl."""
    cdef Py_ssize_t r0, rows, r, i, size
    cdef const int16_t* x_row
    cdef int32_t* e_row
    cdef int32_t row_max, row_total, d
    cdef double s, h
    cdef int16_t* out_block
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
                d = row_max - x_row[i]              # in [0, 65535]
                e_row[i] = exp_table[d if d < last else last]
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
            out_block[i] = <int16_t>(<int32_t>((<double>e[i] * levels + half[i]) / total[i]))
        r0 += rows


cdef int code_bits(object a, str name) except -1:
    """8 or 16: the activation type of ``a`` (int8 or int16 codes); ValueError naming it."""
    dtype = np.asarray(a).dtype
    if dtype == np.int8:
        return 8
    if dtype == np.int16:
        return 16
    raise ValueError(f"softmax: {name} has dtype {dtype}, expected int8 or int16 codes")


cdef int check_table_entries(const int32_t[::1] exp_table, Py_ssize_t n_cols) except -1:
    """Entries in [0, exp_table[0]], exp_table[0] > 0 and C * exp_table[0] < 2^31: every row
    sum is then in [exp_table[0], 2^31), so the int32 sum cannot overflow and s > 0."""
    cdef int32_t top = exp_table[0]
    cdef Py_ssize_t d
    if top <= 0:
        raise ValueError(f"softmax: exp_table[0] = {top} must be positive (it is 2^K, exp(0))")
    for d in range(exp_table.shape[0]):
        if exp_table[d] < 0 or exp_table[d] > top:
            raise ValueError(f"softmax: exp_table[{d}] = {exp_table[d]} is outside "
                             f"[0, exp_table[0]] = [0, {top}]")
    if <int64_t>n_cols * top >= (<int64_t>1 << 31):
        raise ValueError(f"softmax: C * exp_table[0] = {n_cols} * {top} >= 2^31: the int32 "
                         f"sum of a row could overflow; build the table with a smaller K")
    return 0


@cython.auto_pickle(False)
cdef class SoftmaxCall(KernelCall):
    """softmax with its arguments checked once; the table is copied here (its checks are the
    overflow proof, so a later change to the caller's array must not reach the kernel)."""
    cdef object arrays          # x's and out's memoryviews: they keep the arrays alive
    cdef const void* x
    cdef void* out
    cdef int bits
    cdef int32_t exp_table[256]  # int8
    cdef object table16         # int16: the table's entries and a 0 after them
    cdef const int32_t* exp16
    cdef int32_t last16         # int16: the table's length (the index of that 0)
    cdef object scratch
    cdef int32_t* e
    cdef double* total
    cdef double* half
    cdef Py_ssize_t n_rows, n_cols, block_rows
    cdef double levels

    def __init__(self, x, const int32_t[::1] exp_table not None, out, levels=None):
        cdef const int8_t[:, ::1] x8
        cdef int8_t[:, ::1] out8
        cdef const int16_t[:, ::1] x16
        cdef int16_t[:, ::1] out16
        cdef Py_ssize_t n_rows, n_cols
        self.bits = code_bits(x, "x")
        if code_bits(out, "out") != self.bits:
            raise ValueError(f"softmax: out has dtype {np.asarray(out).dtype} but x has "
                             f"{np.asarray(x).dtype}: one activation type per call")
        if self.bits == 8:
            x8, out8 = x, out
            n_rows, n_cols = x8.shape[0], x8.shape[1]
            self.check_out_shape(out8.shape[0], out8.shape[1], n_rows, n_cols)
            self.x = <const void*>&x8[0, 0] if n_rows * n_cols else NULL
            self.out = <void*>&out8[0, 0] if n_rows * n_cols else NULL
            self.arrays = (x8, out8)
            self.set_table8(exp_table, n_cols, 256 if levels is None else levels)
        else:
            x16, out16 = x, out
            n_rows, n_cols = x16.shape[0], x16.shape[1]
            self.check_out_shape(out16.shape[0], out16.shape[1], n_rows, n_cols)
            self.x = <const void*>&x16[0, 0] if n_rows * n_cols else NULL
            self.out = <void*>&out16[0, 0] if n_rows * n_cols else NULL
            self.arrays = (x16, out16)
            self.set_table16(exp_table, n_cols, LEVELS_16_MAX if levels is None else levels)
        self.block_rows = max(1, min(n_rows, (SOFTMAX_BLOCK + n_cols - 1) // max(n_cols, 1)))
        size = max(self.block_rows * n_cols, 1)
        self.scratch = (np.zeros(size, np.int32), np.zeros(size, np.float64),
                        np.zeros(size, np.float64))
        self.e = <int32_t*><size_t>self.scratch[0].ctypes.data
        self.total = <double*><size_t>self.scratch[1].ctypes.data
        self.half = <double*><size_t>self.scratch[2].ctypes.data
        self.n_rows, self.n_cols = n_rows, n_cols
        self.n_tasks = 1
        self.work_share = <double>self.n_rows * self.n_cols / NOGIL_MIN_ELEMENTS

    cdef int check_out_shape(self, Py_ssize_t out_rows, Py_ssize_t out_cols, Py_ssize_t n_rows,
                             Py_ssize_t n_cols) except -1:
        if out_rows != n_rows or out_cols != n_cols:
            raise ValueError(f"softmax: out has shape ({out_rows}, {out_cols}), "
                             f"expected the shape of x, ({n_rows}, {n_cols})")
        return 0

    cdef int set_table8(self, const int32_t[::1] exp_table, Py_ssize_t n_cols,
                        int levels) except -1:
        """int8: 256 entries, levels in 1..256 and levels * exp_table[0] < 2^31 (the int32
        numerator of the division)."""
        if exp_table.shape[0] != 256:
            raise ValueError(f"softmax: exp_table has length {exp_table.shape[0]}, expected 256 "
                             f"(one entry per difference max(x) - x in 0..255)")
        if levels < 1 or levels > 256:
            raise ValueError(f"softmax: levels = {levels} must be in 1..256 (the output scale "
                             f"is 1/levels)")
        check_table_entries(exp_table, n_cols)
        if <int64_t>exp_table[0] * levels >= (<int64_t>1 << 31):
            raise ValueError(f"softmax: levels * exp_table[0] = {levels} * {exp_table[0]} >= "
                             f"2^31; build the table with a smaller K")
        self.levels = levels
        memcpy(self.exp_table, &exp_table[0], 256 * sizeof(int32_t))
        return 0

    cdef int set_table16(self, const int32_t[::1] exp_table, Py_ssize_t n_cols,
                         int levels) except -1:
        """int16: 1..65536 entries (differences past the end have entry 0), levels in
        1..32767; the numerator is formed in double (exact, see softmax16_impl), so only the
        int32 row sum bounds the table."""
        cdef Py_ssize_t length = exp_table.shape[0]
        cdef int32_t[::1] copy
        if not 1 <= length <= TABLE_16_MAX:
            raise ValueError(f"softmax: exp_table has length {length}, expected 1..65536 (one "
                             f"entry per difference max(x) - x, up to where they round to 0)")
        if levels < 1 or levels > LEVELS_16_MAX:
            raise ValueError(f"softmax: levels = {levels} must be in 1..32767 for int16 (the "
                             f"output scale is 1/levels)")
        check_table_entries(exp_table, n_cols)
        self.levels = levels
        self.table16 = np.zeros(length + 1, np.int32)
        copy = self.table16
        copy[:length] = exp_table
        self.exp16 = &copy[0]
        self.last16 = <int32_t>length
        return 0

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.n_rows == 0 or self.n_cols == 0:
            return
        if self.bits == 8:
            softmax_impl(<const int8_t*>self.x, self.exp_table, self.e, self.total, self.half,
                         <int8_t*>self.out, self.n_rows, self.n_cols, self.block_rows,
                         self.levels)
        else:
            softmax16_impl(<const int16_t*>self.x, self.exp16, self.last16, self.e, self.total,
                           self.half, <int16_t*>self.out, self.n_rows, self.n_cols,
                           self.block_rows, self.levels)


def softmax(x, const int32_t[::1] exp_table not None, out, levels=None):
    """Row-wise softmax of x [N, C] into out [N, C], both int8 or both int16.

    int8 x: exp_table int32 [256], entry d ~ 2^K * exp(-input_scale * d), entry 0 = 2^K, all
    entries in [0, exp_table[0]]. Per row: e_i = exp_table[max(x) - x_i], s = sum e_i,
    out_i = clamp((levels * e_i + s // 2) // s - 128, -128, 127): probabilities with scale
    1/levels, zero point -128 (levels in 1..256, default 256: TFLite's 1/256; 255 represents
    1.0 exactly). Raises ValueError unless C * exp_table[0] < 2^31 and levels * exp_table[0]
    < 2^31, which (with the entry range) proves the int32 sum and the scaled numerator cannot
    overflow.

    int16 x: exp_table int32 [L], 1 <= L <= 65536, entries as above, a difference d >= L
    taking entry 0 (the table ends where its entries round to 0). out_i = (levels * e_i +
    s // 2) // s: probabilities with scale 1/levels, zero point 0 (levels in 1..32767,
    default 32767: 0 and 1 exact). Raises ValueError unless C * exp_table[0] < 2^31 (the int32
    sum); the numerator is formed exactly in double.
    """
    SoftmaxCall(x, exp_table, out, levels)()

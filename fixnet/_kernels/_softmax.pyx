# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Softmax on int8 logits with an exp lookup table and integer normalisation.

Output is int8 probabilities with scale 1/256 and zero point -128. Bit-exact with
``fixnet.oracle.softmax``. Private: fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t


def softmax(const int8_t[:, ::1] x not None, const int32_t[::1] exp_table not None,
            int8_t[:, ::1] out not None):
    """Row-wise softmax of x [N, C] into out [N, C].

    exp_table: int32 [256], entry d ~ 2^K * exp(-input_scale * d), entry 0 = 2^K, all
    entries in [0, exp_table[0]]. Per row: e_i = exp_table[max(x) - x_i], s = sum e_i,
    out_i = clamp((256 * e_i + s // 2) // s - 128, -128, 127).
    Raises ValueError unless C * exp_table[0] < 2^31 and 256 * exp_table[0] < 2^31, which
    (with the entry range) proves the int32 sum and the scaled numerator cannot overflow.
    """
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1]
    cdef Py_ssize_t n, i, d
    cdef int32_t top
    if exp_table.shape[0] != 256:
        raise ValueError(f"softmax: exp_table has length {exp_table.shape[0]}, expected 256 "
                         f"(one entry per difference max(x) - x in 0..255)")
    if out.shape[0] != n_rows or out.shape[1] != n_cols:
        raise ValueError(f"softmax: out has shape ({out.shape[0]}, {out.shape[1]}), "
                         f"expected the shape of x, ({n_rows}, {n_cols})")
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
    if <int64_t>top * 256 >= (<int64_t>1 << 31):
        raise ValueError(f"softmax: 256 * exp_table[0] = 256 * {top} >= 2^31; "
                         f"build the table with a smaller K")
    if n_rows == 0 or n_cols == 0:
        return

    cdef const int8_t* x_row
    cdef int8_t* out_row
    cdef int8_t row_max
    cdef int32_t total, q
    cdef uint32_t half
    with nogil:
        for n in range(n_rows):
            x_row = &x[n, 0]
            out_row = &out[n, 0]
            row_max = x_row[0]
            for i in range(1, n_cols):
                if x_row[i] > row_max:
                    row_max = x_row[i]
            total = 0  # <= C * exp_table[0] < 2^31 by the entry check; >= exp_table[0] > 0
            for i in range(n_cols):
                total += exp_table[row_max - x_row[i]]
            half = <uint32_t>(total // 2)
            for i in range(n_cols):
                # 256 * e < 2^31 and total // 2 < 2^30: the numerator fits uint32.
                q = <int32_t>((<uint32_t>exp_table[row_max - x_row[i]] * 256 + half)
                              // <uint32_t>total) - 128
                out_row[i] = <int8_t>(q if q < 127 else 127)  # q >= -128 since e >= 0

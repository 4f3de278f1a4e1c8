# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fully connected layer on int8: int8 x int8 products, int32 accumulators, requantized to int8.

Bit-exact with ``fixnet.oracle.dense``. Private: fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t, int16_t, int32_t, uint32_t

from fixnet._kernels.fixedpoint cimport (
    DOT_BLOCK,
    check_length,
    check_multipliers,
    check_output_range,
    dot4_int16_int8,
    dot_int16_int8,
    requantize_accumulator,
    widen_int8_to_int16,
)


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
    cdef Py_ssize_t n_rows = x.shape[0], k_len = x.shape[1], n_channels = w.shape[0]
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
    check_multipliers("dense", &m0[0], &shift[0], n_channels)
    if n_rows == 0 or n_channels == 0:
        return

    # int16 copy of the current block of one input row: see dot_int16_int8 for why.
    cdef int16_t x16[DOT_BLOCK]
    cdef int32_t part[4]
    cdef uint32_t acc0, acc1, acc2, acc3
    cdef Py_ssize_t n, c, k0, block_len, buffered
    cdef const int8_t* x_row
    cdef const int8_t* w_row
    with nogil:
        for n in range(n_rows):
            x_row = &x[n, 0]
            buffered = -1  # start of the block of x_row now in x16 (-1: none)
            c = 0
            # Four output channels per pass; if K <= DOT_BLOCK the row is widened once.
            while c + 4 <= n_channels:
                acc0 = acc1 = acc2 = acc3 = 0
                w_row = &w[c, 0]
                k0 = 0
                while k0 < k_len:
                    block_len = min(<Py_ssize_t>DOT_BLOCK, k_len - k0)
                    if buffered != k0:
                        widen_int8_to_int16(x_row + k0, x16, block_len)
                        buffered = k0
                    dot4_int16_int8(x16, w_row + k0, w_row + k_len + k0,
                                    w_row + 2 * k_len + k0, w_row + 3 * k_len + k0,
                                    block_len, part)
                    # Blocks are combined modulo 2^32 (defined behaviour on overflow).
                    acc0 += <uint32_t>part[0]
                    acc1 += <uint32_t>part[1]
                    acc2 += <uint32_t>part[2]
                    acc3 += <uint32_t>part[3]
                    k0 += DOT_BLOCK
                out[n, c] = requantize_accumulator(<int32_t>(<uint32_t>bias[c] + acc0),
                                                   m0[c], shift[c], out_zp, act_min, act_max)
                out[n, c + 1] = requantize_accumulator(<int32_t>(<uint32_t>bias[c + 1] + acc1),
                                                       m0[c + 1], shift[c + 1], out_zp, act_min, act_max)
                out[n, c + 2] = requantize_accumulator(<int32_t>(<uint32_t>bias[c + 2] + acc2),
                                                       m0[c + 2], shift[c + 2], out_zp, act_min, act_max)
                out[n, c + 3] = requantize_accumulator(<int32_t>(<uint32_t>bias[c + 3] + acc3),
                                                       m0[c + 3], shift[c + 3], out_zp, act_min, act_max)
                c += 4
            # Remaining C % 4 channels, one at a time.
            while c < n_channels:
                acc0 = 0
                w_row = &w[c, 0]
                k0 = 0
                while k0 < k_len:
                    block_len = min(<Py_ssize_t>DOT_BLOCK, k_len - k0)
                    if buffered != k0:
                        widen_int8_to_int16(x_row + k0, x16, block_len)
                        buffered = k0
                    acc0 += <uint32_t>dot_int16_int8(x16, w_row + k0, block_len)
                    k0 += DOT_BLOCK
                out[n, c] = requantize_accumulator(<int32_t>(<uint32_t>bias[c] + acc0),
                                                   m0[c], shift[c], out_zp, act_min, act_max)
                c += 1

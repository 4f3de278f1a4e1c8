# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise int8 kernels: table lookup, per-channel affine, requantize, and the two float
boundaries of a network (quantize the input, dequantize the output).

Bit-exact with the functions of the same names in ``fixnet.oracle``. Private: fixnet.runtime
plans the calls.
"""
from libc.math cimport isfinite, round
from libc.stdint cimport int8_t, int32_t, uint32_t

from fixnet._kernels.fixedpoint cimport (
    check_length,
    check_multipliers,
    check_output_range,
    requantize_accumulator,
)


cdef int check_scale(str kernel, double scale, int zp) except -1:
    if not (isfinite(scale) and scale > 0.0):
        raise ValueError(f"{kernel}: scale = {scale!r} must be finite and positive "
                         f"(real units per int8 step)")
    if not -128 <= zp <= 127:
        raise ValueError(f"{kernel}: zp = {zp} is outside the int8 range [-128, 127]")
    return 0


def lookup(const int8_t[::1] x not None, const int8_t[::1] table not None,
           int8_t[::1] out not None):
    """out[i] = table[x[i] + 128]: any int8 -> int8 function as a 256-entry table
    (sigmoid, tanh, swish, ...; built at quantize time)."""
    cdef Py_ssize_t size = x.shape[0], i
    check_length("lookup", "table", table.shape[0], 256, "one entry per int8 value")
    check_length("lookup", "out", out.shape[0], size, "same as x")
    with nogil:
        for i in range(size):
            out[i] = table[<int>x[i] + 128]


def channel_affine(const int8_t[:, ::1] x not None, const int8_t[::1] w not None,
                   const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                   const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
                   int8_t[:, ::1] out not None):
    """out[n, c] = clamp(out_zp + MBQM(bias[c] + x[n, c] * w[c], m0[c], shift[c]),
    act_min, act_max): a per-channel scale and offset (e.g. a BatchNorm that could not be
    folded), MBQM = multiply_by_quantized_multiplier.

    x: int8 [N, C]; w: int8 [C]; bias, m0, shift: int32 [C]; out: int8 [N, C].
    The accumulator bias + x * w wraps modulo 2^32 if it leaves int32 (as in dense).
    """
    cdef Py_ssize_t n_rows = x.shape[0], n_channels = x.shape[1], n, c
    check_length("channel_affine", "w", w.shape[0], n_channels, "one per channel, C = x.shape[1]")
    check_length("channel_affine", "bias", bias.shape[0], n_channels, "one per channel, C = x.shape[1]")
    check_length("channel_affine", "m0", m0.shape[0], n_channels, "one per channel, C = x.shape[1]")
    check_length("channel_affine", "shift", shift.shape[0], n_channels, "one per channel, C = x.shape[1]")
    if out.shape[0] != n_rows or out.shape[1] != n_channels:
        raise ValueError(f"channel_affine: out has shape ({out.shape[0]}, {out.shape[1]}), "
                         f"expected the shape of x, ({n_rows}, {n_channels})")
    check_output_range("channel_affine", out_zp, act_min, act_max)
    check_multipliers("channel_affine", &m0[0], &shift[0], n_channels)
    cdef int32_t acc
    with nogil:
        for n in range(n_rows):
            for c in range(n_channels):
                acc = <int32_t>(<uint32_t>bias[c] + <uint32_t>(<int32_t>x[n, c] * <int32_t>w[c]))
                out[n, c] = requantize_accumulator(acc, m0[c], shift[c], out_zp, act_min, act_max)


def requantize(const int8_t[::1] x not None, int in_zp, int m0, int shift, int out_zp,
               int act_min, int act_max, int8_t[::1] out not None):
    """out[i] = clamp(out_zp + MBQM(x[i] - in_zp, m0, shift), act_min, act_max): move int8
    data from one (scale, zero point) to another; real factor in_scale / out_scale.

    in_zp, out_zp: int8 zero points; m0 in [2^30, 2^31) or 0; shift in [-31, 30].
    """
    cdef Py_ssize_t size = x.shape[0], i
    cdef int32_t m0_32, shift_32
    check_length("requantize", "out", out.shape[0], size, "same as x")
    if not -128 <= in_zp <= 127:
        raise ValueError(f"requantize: in_zp = {in_zp} is outside the int8 range [-128, 127]")
    check_output_range("requantize", out_zp, act_min, act_max)
    m0_32 = m0
    shift_32 = shift
    check_multipliers("requantize", &m0_32, &shift_32, 1)
    with nogil:
        for i in range(size):
            out[i] = requantize_accumulator(<int32_t>x[i] - in_zp, m0_32, shift_32,
                                            out_zp, act_min, act_max)


def quantize(const float[::1] x not None, double scale, int zp, int8_t[::1] out not None):
    """out[i] = clamp(round((double)x[i] / scale) + zp, -128, 127), round = half away from
    zero (C round()). scale: real units per int8 step, finite and > 0; zp in [-128, 127].

    Returns the number of non-finite x[i] (NaN, +-inf); those get out[i] = zp.
    """
    cdef Py_ssize_t size = x.shape[0], i, nonfinite = 0
    cdef double v
    check_scale("quantize", scale, zp)
    check_length("quantize", "out", out.shape[0], size, "same as x")
    with nogil:
        for i in range(size):
            v = x[i]
            if not isfinite(v):
                nonfinite += 1
                out[i] = <int8_t>zp
                continue
            # Clamp in double: v / scale can be far beyond any integer type.
            v = round(v / scale) + zp
            if v < -128.0:
                v = -128.0
            elif v > 127.0:
                v = 127.0
            out[i] = <int8_t>v
    return nonfinite


def dequantize(const int8_t[::1] x not None, double scale, int zp, float[::1] out not None):
    """out[i] = (float)((double)(x[i] - zp) * scale): int8 back to real units.
    scale finite and > 0; zp in [-128, 127]."""
    cdef Py_ssize_t size = x.shape[0], i
    check_scale("dequantize", scale, zp)
    check_length("dequantize", "out", out.shape[0], size, "same as x")
    with nogil:
        for i in range(size):
            out[i] = <float>(<double>(<int>x[i] - zp) * scale)

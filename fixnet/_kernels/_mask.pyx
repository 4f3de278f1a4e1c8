# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The mask ops on int8 (fixnet/ops/mask.py): masking (Keras Masking) and masked_mean
(GlobalAveragePooling1D of a masked sequence).

Bit-exact with ``fixnet.oracle.mask`` (read it for the semantics). Masks are int8 codes, 1
for a present step and 0 for padding; a step counts as present when its code is not 0.
Private: fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t, int32_t, int64_t
from libc.string cimport memcpy, memset

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport check_int8, check_multipliers, check_output_range, \
    multiply_by_quantized_multiplier

cdef enum:
    # Work (elements) at which releasing the GIL pays for these data-moving loops.
    NOGIL_MIN_ELEMENTS = 65536
    # masked_mean: fractional bits of the mean before it is requantized, and the longest
    # sequence (255 * 256 * 32767 < 2^31: the sum times 256 stays in int32). The oracle's
    # MASKED_MEAN_SCALE_BITS / MASKED_MEAN_MAX_STEPS (the tests check they agree).
    SCALE_BITS = 8
    MAX_STEPS = 32767

MASKED_MEAN_SCALE_BITS = SCALE_BITS
MASKED_MEAN_MAX_STEPS = MAX_STEPS


# ---- masking -------------------------------------------------------------------------------

cdef void masking_impl(const int8_t* x, Py_ssize_t steps, Py_ssize_t features, int mask_code,
                       int in_zp, int8_t* y, int8_t* mask) noexcept nogil:
    """For each of ``steps`` rows of ``features`` codes: present = any code != mask_code;
    y row = x row if present else in_zp; mask = present."""
    cdef Py_ssize_t t, f
    cdef bint present
    cdef const int8_t* row
    for t in range(steps):
        row = x + t * features
        present = False
        for f in range(features):
            if row[f] != mask_code:
                present = True
                break
        mask[t] = 1 if present else 0
        if present:
            memcpy(y + t * features, row, features)
        else:
            memset(y + t * features, <int8_t>in_zp, features)


cdef class MaskingCall(KernelCall):
    """y, mask = masking(x): x, y int8 [N, T, F]; mask int8 [N, T] (1 present, 0 padding);
    mask_code: the code of Keras's mask_value; in_zp: x's (and y's) zero point."""
    cdef const int8_t[:, :, ::1] x
    cdef int8_t[:, :, ::1] y
    cdef int8_t[:, ::1] mask
    cdef int mask_code, in_zp

    def __init__(self, const int8_t[:, :, ::1] x not None, int mask_code, int in_zp,
                 int8_t[:, :, ::1] y not None, int8_t[:, ::1] mask not None):
        check_int8("masking", "mask_code", mask_code)
        check_int8("masking", "in_zp", in_zp)
        if y.shape[0] != x.shape[0] or y.shape[1] != x.shape[1] or y.shape[2] != x.shape[2]:
            raise ValueError(f"masking: y has shape ({y.shape[0]}, {y.shape[1]}, {y.shape[2]}), "
                             f"expected ({x.shape[0]}, {x.shape[1]}, {x.shape[2]})")
        if mask.shape[0] != x.shape[0] or mask.shape[1] != x.shape[1]:
            raise ValueError(f"masking: mask has shape ({mask.shape[0]}, {mask.shape[1]}), "
                             f"expected ({x.shape[0]}, {x.shape[1]})")
        self.x, self.y, self.mask = x, y, mask
        self.mask_code, self.in_zp = mask_code, in_zp
        self.n_tasks = 1
        self.work_share = <double>x.shape[0] * x.shape[1] * x.shape[2] / NOGIL_MIN_ELEMENTS

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t steps = self.x.shape[0] * self.x.shape[1]
        if steps == 0:
            return
        # F == 0: no x to point at; every step is padding and y is empty
        masking_impl(&self.x[0, 0, 0] if self.x.shape[2] else NULL, steps, self.x.shape[2],
                     self.mask_code, self.in_zp, &self.y[0, 0, 0] if self.x.shape[2] else NULL,
                     &self.mask[0, 0])


def masking(x, int mask_code, int in_zp, y, mask):
    """See MaskingCall."""
    MaskingCall(x, mask_code, in_zp, y, mask)()


# ---- masked mean ---------------------------------------------------------------------------

cdef inline int32_t rounding_divide(int64_t p, int64_t n) noexcept nogil:
    """p / n rounded to nearest, ties away from zero (n >= 1, |p| + n < 2^63)."""
    if p >= 0:
        return <int32_t>((p + n // 2) // n)
    return -<int32_t>((-p + n // 2) // n)


cdef void masked_mean_impl(const int8_t* x, const int8_t* mask, Py_ssize_t rows,
                           Py_ssize_t steps, Py_ssize_t channels, int in_zp, int32_t m0, int shift,
                           int out_zp, int32_t* acc, int8_t* out) noexcept nogil:
    """oracle.masked_mean, row by row; acc: int32 scratch of ``channels``."""
    cdef Py_ssize_t r, t, c
    cdef int32_t n
    cdef int64_t v
    cdef const int8_t* xt
    for r in range(rows):
        for c in range(channels):
            acc[c] = 0
        n = 0
        for t in range(steps):
            if mask[r * steps + t] == 0:
                continue
            n += 1
            xt = x + (r * steps + t) * channels
            for c in range(channels):
                acc[c] += <int32_t>xt[c] - in_zp         # |acc| <= 255 * steps < 2^23
        for c in range(channels):
            if n == 0:
                out[r * channels + c] = <int8_t>out_zp   # every step masked: real 0.0
                continue
            v = <int64_t>out_zp + multiply_by_quantized_multiplier(
                rounding_divide(<int64_t>acc[c] * (1 << SCALE_BITS), n), m0, shift)
            v = -128 if v < -128 else v
            v = 127 if v > 127 else v
            out[r * channels + c] = <int8_t>v


cdef class MaskedMeanCall(KernelCall):
    """out = masked_mean(x, mask): x int8 [N, T, C], mask int8 [N, T], out int8 [N, C];
    (m0, shift): in_scale / (256 out_scale). T <= MASKED_MEAN_MAX_STEPS."""
    cdef const int8_t[:, :, ::1] x
    cdef const int8_t[:, ::1] mask
    cdef int8_t[:, ::1] out
    cdef int32_t[::1] acc           # scratch, one int32 per channel (this call's own)
    cdef int in_zp, shift, out_zp
    cdef int32_t m0

    def __init__(self, const int8_t[:, :, ::1] x not None, const int8_t[:, ::1] mask not None,
                 int in_zp, int m0, int shift, int out_zp, int8_t[:, ::1] out not None):
        cdef int32_t m = m0, s = shift
        check_int8("masked_mean", "in_zp", in_zp)
        check_output_range("masked_mean", out_zp, -128, 127)
        check_multipliers("masked_mean", &m, &s, 1)
        if mask.shape[0] != x.shape[0] or mask.shape[1] != x.shape[1]:
            raise ValueError(f"masked_mean: mask has shape ({mask.shape[0]}, {mask.shape[1]}), "
                             f"expected ({x.shape[0]}, {x.shape[1]})")
        if out.shape[0] != x.shape[0] or out.shape[1] != x.shape[2]:
            raise ValueError(f"masked_mean: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected ({x.shape[0]}, {x.shape[2]})")
        if x.shape[1] > MAX_STEPS:
            raise ValueError(f"masked_mean: {x.shape[1]} time steps; at most "
                             f"{MAX_STEPS} keep the sum times 256 in int32")
        self.x, self.mask, self.out = x, mask, out
        self.acc = np.zeros(max(x.shape[2], 1), np.int32)
        self.in_zp, self.m0, self.shift, self.out_zp = in_zp, m0, shift, out_zp
        self.n_tasks = 1
        self.work_share = <double>x.shape[0] * x.shape[1] * x.shape[2] / NOGIL_MIN_ELEMENTS

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.x.shape[0] == 0 or self.x.shape[2] == 0:
            return
        masked_mean_impl(&self.x[0, 0, 0] if self.x.shape[1] else NULL,
                         &self.mask[0, 0] if self.x.shape[1] else NULL, self.x.shape[0],
                         self.x.shape[1], self.x.shape[2], self.in_zp, self.m0, self.shift,
                         self.out_zp, &self.acc[0], &self.out[0, 0])


def masked_mean(x, mask, int in_zp, int m0, int shift, int out_zp, out):
    """See MaskedMeanCall."""
    MaskedMeanCall(x, mask, in_zp, m0, shift, out_zp, out)()

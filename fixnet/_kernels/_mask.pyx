# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The mask ops on int8 and int16 (fixnet/ops/mask.py): masking (Keras Masking) and
masked_mean (GlobalAveragePooling1D of a masked sequence).

Bit-exact with ``fixnet.oracle.mask`` (read it for the semantics). Masks are codes of the
call's type, 1 for a present step and 0 for padding; a step counts as present when its code is
not 0. One activation type per call (acttype.pxd): sequences and masks all int8 or all int16
(zero points 0). Private: fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy, memset

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport (act_t, call_bits, check_act_output_range, check_act_value,
                                      check_act_zp)
from fixnet._kernels.fixedpoint cimport check_multipliers, multiply_by_quantized_multiplier

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

cdef void masking_impl(const act_t* x, Py_ssize_t steps, Py_ssize_t features, int mask_code,
                       int in_zp, act_t* y, act_t* mask) noexcept nogil:
    """For each of ``steps`` rows of ``features`` codes: present = any code != mask_code;
    y row = x row if present else in_zp; mask = present."""
    cdef Py_ssize_t t, f
    cdef bint present
    cdef const act_t* row
    cdef act_t* out
    for t in range(steps):
        row = x + t * features
        out = y + t * features
        present = False
        for f in range(features):
            if row[f] != mask_code:
                present = True
                break
        mask[t] = 1 if present else 0
        if present:
            memcpy(out, row, features * sizeof(act_t))
        elif act_t is int8_t:
            memset(out, in_zp, features)
        else:
            for f in range(features):
                out[f] = <act_t>in_zp


cdef class MaskingCall(KernelCall):
    """y, mask = masking(x): x, y [N, T, F]; mask [N, T] (1 present, 0 padding), all int8 or
    all int16; mask_code: the code of Keras's mask_value (a code of the type); in_zp: x's (and
    y's) zero point (0 for int16)."""
    cdef readonly int bits                 # 8 or 16: the call's activation type
    cdef const int8_t[:, :, ::1] x
    cdef int8_t[:, :, ::1] y
    cdef int8_t[:, ::1] mask
    cdef const int16_t[:, :, ::1] x16
    cdef int16_t[:, :, ::1] y16
    cdef int16_t[:, ::1] mask16
    cdef Py_ssize_t shape[3]               # x's (N, T, F)
    cdef int mask_code, in_zp

    def __init__(self, x, int mask_code, int in_zp, y, mask):
        cdef Py_ssize_t ys[3]
        cdef Py_ssize_t ms[2]
        cdef int i
        self.bits = call_bits("masking", (x, y, mask), ("x", "y", "mask"))
        if self.bits == 16:
            self.x16, self.y16, self.mask16 = x, y, mask
            for i in range(3):
                self.shape[i], ys[i] = self.x16.shape[i], self.y16.shape[i]
            ms[0], ms[1] = self.mask16.shape[0], self.mask16.shape[1]
        else:
            self.x, self.y, self.mask = x, y, mask
            for i in range(3):
                self.shape[i], ys[i] = self.x.shape[i], self.y.shape[i]
            ms[0], ms[1] = self.mask.shape[0], self.mask.shape[1]
        check_act_value("masking", "mask_code", mask_code, self.bits)
        check_act_zp("masking", "in_zp", in_zp, self.bits)
        xs = (self.shape[0], self.shape[1], self.shape[2])
        if (ys[0], ys[1], ys[2]) != xs:
            raise ValueError(f"masking: y has shape ({ys[0]}, {ys[1]}, {ys[2]}), expected {xs}")
        if (ms[0], ms[1]) != xs[:2]:
            raise ValueError(f"masking: mask has shape ({ms[0]}, {ms[1]}), "
                             f"expected ({xs[0]}, {xs[1]})")
        self.mask_code, self.in_zp = mask_code, in_zp
        self.n_tasks = 1
        self.work_share = (<double>xs[0] * xs[1] * xs[2] * (self.bits // 8)
                           / NOGIL_MIN_ELEMENTS)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t steps = self.shape[0] * self.shape[1], f = self.shape[2]
        if steps == 0:
            return
        # F == 0: no x to point at; every step is padding and y is empty
        if self.bits == 16:
            masking_impl(&self.x16[0, 0, 0] if f else NULL, steps, f, self.mask_code,
                         self.in_zp, &self.y16[0, 0, 0] if f else NULL, &self.mask16[0, 0])
        else:
            masking_impl(&self.x[0, 0, 0] if f else NULL, steps, f, self.mask_code,
                         self.in_zp, &self.y[0, 0, 0] if f else NULL, &self.mask[0, 0])


def masking(x, int mask_code, int in_zp, y, mask):
    """See MaskingCall."""
    MaskingCall(x, mask_code, in_zp, y, mask)()


# ---- masked mean ---------------------------------------------------------------------------

cdef inline int32_t rounding_divide(int64_t p, int64_t n) noexcept nogil:
    """p / n rounded to nearest, ties away from zero (n >= 1, |p| + n < 2^63)."""
    if p >= 0:
        return <int32_t>((p + n // 2) // n)
    return -<int32_t>((-p + n // 2) // n)


cdef void masked_mean_impl(const act_t* x, const act_t* mask, Py_ssize_t rows,
                           Py_ssize_t steps, Py_ssize_t channels, int in_zp, int32_t m0, int shift,
                           int out_zp, int act_min, int act_max, int32_t* acc,
                           act_t* out) noexcept nogil:
    """oracle.masked_mean, row by row; acc: int32 scratch of ``channels``; the result clamped
    to [act_min, act_max], the type's range."""
    cdef Py_ssize_t r, t, c
    cdef int32_t n
    cdef int64_t v
    cdef const act_t* xt
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
                # |acc| <= 255 * steps < 2^23 (int16: 32768 * steps < 2^30)
                acc[c] += <int32_t>xt[c] - in_zp
        for c in range(channels):
            if n == 0:
                out[r * channels + c] = <act_t>out_zp    # every step masked: real 0.0
                continue
            v = <int64_t>out_zp + multiply_by_quantized_multiplier(
                rounding_divide(<int64_t>acc[c] * (1 << SCALE_BITS), n), m0, shift)
            v = act_min if v < act_min else v
            v = act_max if v > act_max else v
            out[r * channels + c] = <act_t>v


cdef class MaskedMeanCall(KernelCall):
    """out = masked_mean(x, mask): x [N, T, C], mask [N, T], out [N, C], all int8 or all
    int16 (zero points 0); (m0, shift): in_scale / (256 out_scale). T <= MASKED_MEAN_MAX_STEPS
    (the sum times 256 in int32 for int8; the sum in int32 for int16, its product by 256 is
    formed in int64 in both)."""
    cdef readonly int bits                 # 8 or 16: the call's activation type
    cdef const int8_t[:, :, ::1] x
    cdef const int8_t[:, ::1] mask
    cdef int8_t[:, ::1] out
    cdef const int16_t[:, :, ::1] x16
    cdef const int16_t[:, ::1] mask16
    cdef int16_t[:, ::1] out16
    cdef Py_ssize_t shape[3]               # x's (N, T, C)
    cdef int32_t[::1] acc           # scratch, one int32 per channel (this call's own)
    cdef int in_zp, shift, out_zp, act_min, act_max
    cdef int32_t m0

    def __init__(self, x, mask, int in_zp, int m0, int shift, int out_zp, out):
        cdef int32_t m = m0, s = shift
        cdef Py_ssize_t ms[2]
        cdef Py_ssize_t os[2]
        cdef int i
        self.bits = call_bits("masked_mean", (x, mask, out), ("x", "mask", "out"))
        if self.bits == 16:
            self.x16, self.mask16, self.out16 = x, mask, out
            for i in range(3):
                self.shape[i] = self.x16.shape[i]
            ms[0], ms[1] = self.mask16.shape[0], self.mask16.shape[1]
            os[0], os[1] = self.out16.shape[0], self.out16.shape[1]
            self.act_min, self.act_max = -32768, 32767
        else:
            self.x, self.mask, self.out = x, mask, out
            for i in range(3):
                self.shape[i] = self.x.shape[i]
            ms[0], ms[1] = self.mask.shape[0], self.mask.shape[1]
            os[0], os[1] = self.out.shape[0], self.out.shape[1]
            self.act_min, self.act_max = -128, 127
        check_act_zp("masked_mean", "in_zp", in_zp, self.bits)
        check_act_output_range("masked_mean", out_zp, self.act_min, self.act_max, self.bits)
        check_multipliers("masked_mean", &m, &s, 1)
        if ms[0] != self.shape[0] or ms[1] != self.shape[1]:
            raise ValueError(f"masked_mean: mask has shape ({ms[0]}, {ms[1]}), "
                             f"expected ({self.shape[0]}, {self.shape[1]})")
        if os[0] != self.shape[0] or os[1] != self.shape[2]:
            raise ValueError(f"masked_mean: out has shape ({os[0]}, {os[1]}), "
                             f"expected ({self.shape[0]}, {self.shape[2]})")
        if self.shape[1] > MAX_STEPS:
            raise ValueError(f"masked_mean: {self.shape[1]} time steps; at most "
                             f"{MAX_STEPS} keep the sum times 256 in int32")
        self.acc = np.zeros(max(self.shape[2], 1), np.int32)
        self.in_zp, self.m0, self.shift, self.out_zp = in_zp, m0, shift, out_zp
        self.n_tasks = 1
        self.work_share = (<double>self.shape[0] * self.shape[1] * self.shape[2]
                           * (self.bits // 8) / NOGIL_MIN_ELEMENTS)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t t = self.shape[1]
        if self.shape[0] == 0 or self.shape[2] == 0:
            return
        if self.bits == 16:
            masked_mean_impl(&self.x16[0, 0, 0] if t else NULL, &self.mask16[0, 0] if t else NULL,
                             self.shape[0], t, self.shape[2], self.in_zp, self.m0, self.shift,
                             self.out_zp, self.act_min, self.act_max, &self.acc[0],
                             &self.out16[0, 0])
        else:
            masked_mean_impl(&self.x[0, 0, 0] if t else NULL, &self.mask[0, 0] if t else NULL,
                             self.shape[0], t, self.shape[2], self.in_zp, self.m0, self.shift,
                             self.out_zp, self.act_min, self.act_max, &self.acc[0],
                             &self.out[0, 0])


def masked_mean(x, mask, int in_zp, int m0, int shift, int out_zp, out):
    """See MaskedMeanCall."""
    MaskedMeanCall(x, mask, in_zp, m0, shift, out_zp, out)()

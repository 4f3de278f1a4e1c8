# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""dense and conv2d with int64 accumulators ("wide" steps), on int16 activations.

An int16 layer whose int32 accumulators cannot be proven safe (|x| up to 32768 instead of
128: a long dot product of large weights, MobileNetV2's 1280-input classifier) runs here
instead of in the int32 kernels of _dense and _conv. TFLite's 16x8 kernels accumulate in int64
in the same place. Such layers are rare and small (the classifier is 12800 multiply-adds), so
these loops are plain C for every build: each dot product is summed in int32 over blocks of
WIDE_BLOCK products (|x * w| <= 2^15 * 2^7, so a block sums to at most 2^30: no int32 wrap)
and the blocks in int64. The result is requantized with TFLite's int64 rule
(oracle.multiply_by_quantized_multiplier_wide): the multiplier rounded to 16 bits, one
rounding shift.

Bit-exact with ``fixnet.oracle.dense_wide`` and ``fixnet.oracle.conv2d_wide``, which take
the same arguments. Private: fixnet/ops/dense.py and conv.py bind a step whose
``acc_bits`` is 64 to these calls.
"""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t
from libc.stdlib cimport free, malloc

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport check_act_output_range, check_act_zp
from fixnet._kernels.fixedpoint cimport check_params, dot_int16_int8, is_valid_multiplier
from fixnet._kernels.params cimport conv2d_params

cdef conv2d_params _conv2d_fields
CONV2D_PARAMS = tuple(<dict>_conv2d_fields)

cdef enum:
    WIDE_BLOCK = 256            # products per int32 partial sum: 256 * 2^15 * 2^7 = 2^30
    SHIFT_MAX = 14              # the int64 rule shifts right by 15 - shift >= 1

# |acc| at or beyond this is saturated before the multiply (the overflow proof of a wide step
# keeps it below; oracle.WIDE_ACC_LIMIT)
cdef int64_t ACC_LIMIT = (<int64_t>1 << 47) - 1
WIDE_ACC_LIMIT = 1 << 47


cdef inline int64_t dot_wide(const int16_t* x, const int8_t* w, Py_ssize_t n) noexcept nogil:
    """sum_k x[k] * w[k] in int64: fixedpoint's int32 dot product over blocks of WIDE_BLOCK
    products (each block sums to at most 2^30), the blocks added in int64."""
    cdef int64_t total = 0
    cdef Py_ssize_t k0 = 0, part
    while k0 < n:
        part = WIDE_BLOCK if n - k0 > WIDE_BLOCK else n - k0
        total += dot_int16_int8(x + k0, w + k0, part)
        k0 += part
    return total


cdef inline int16_t requantize_wide(int64_t acc, int32_t m0, int shift, int out_zp,
                                    int act_min, int act_max) noexcept nogil:
    """clamp(out_zp + (sat(acc) * r + 2^(t - 1)) >> t, act_min, act_max), r = m0 rounded to
    16 bits (0x7FFF from m0 >= 0x7FFF0000), t = 15 - shift, sat: to +-(2^47 - 1)."""
    cdef int64_t r = ((<int64_t>m0 + 32768) >> 16) if m0 < 0x7FFF0000 else 0x7FFF
    cdef int t = 15 - shift
    cdef int64_t v
    if acc > ACC_LIMIT:
        acc = ACC_LIMIT
    elif acc < -ACC_LIMIT:
        acc = -ACC_LIMIT
    v = out_zp + ((acc * r + (<int64_t>1 << (t - 1))) >> t)
    if v < act_min:
        v = act_min
    elif v > act_max:
        v = act_max
    return <int16_t>v


cdef int check_wide_multipliers(str kernel, const int32_t[::1] m0, const int32_t[::1] shift,
                                Py_ssize_t channels) except -1:
    if m0.shape[0] != channels or shift.shape[0] != channels:
        raise ValueError(f"{kernel}: m0 and shift have lengths {m0.shape[0]} and "
                         f"{shift.shape[0]}, expected {channels} (one per output channel)")
    cdef Py_ssize_t c
    for c in range(channels):
        if not is_valid_multiplier(m0[c]):
            raise ValueError(f"{kernel}: m0[{c}] = {m0[c]} must be in [0, 2^31)")
        if not -31 <= shift[c] <= SHIFT_MAX:
            raise ValueError(f"{kernel}: shift[{c}] = {shift[c]} must be in [-31, {SHIFT_MAX}] "
                             f"(the int64 requantization shifts right by 15 - shift >= 1)")
    return 0


cdef class DenseWideCall(KernelCall):
    """out[n, c] = requantize_wide(bias[c] + sum_k x[n, k] * w[c, k], m0[c], shift[c]).

    x: int16 [N, K]; w: int8 [C, K]; bias, m0, shift: int32 [C] (shift in [-31, 14]);
    out_zp = 0 and the clamp bounds in int16; out: int16 [N, C]. One task per row of x.
    """
    cdef const int16_t[:, ::1] x
    cdef const int8_t[:, ::1] w
    cdef const int32_t[::1] bias, m0, shift
    cdef int16_t[:, ::1] out
    cdef int out_zp, act_min, act_max

    def __init__(self, const int16_t[:, ::1] x not None, const int8_t[:, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
                 int16_t[:, ::1] out not None):
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"dense_wide: x has {x.shape[1]} columns, w has {w.shape[1]} "
                             f"(both K)")
        if bias.shape[0] != w.shape[0]:
            raise ValueError(f"dense_wide: bias has length {bias.shape[0]}, expected "
                             f"{w.shape[0]} (w's rows)")
        if out.shape[0] != x.shape[0] or out.shape[1] != w.shape[0]:
            raise ValueError(f"dense_wide: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected ({x.shape[0]}, {w.shape[0]})")
        check_wide_multipliers("dense_wide", m0, shift, w.shape[0])
        check_act_output_range("dense_wide", out_zp, act_min, act_max, 16)
        self.x, self.w, self.bias, self.m0, self.shift, self.out = x, w, bias, m0, shift, out
        self.out_zp, self.act_min, self.act_max = out_zp, act_min, act_max
        self.n_tasks = x.shape[0]
        self.splittable = True
        self.work_share = <double>x.shape[0] * w.shape[0] * w.shape[1] / 65536

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t n, c, k = self.w.shape[1], channels = self.w.shape[0]
        cdef int64_t acc
        if k == 0:
            for n in range(first, last):
                for c in range(channels):
                    self.out[n, c] = requantize_wide(self.bias[c], self.m0[c], self.shift[c],
                                                     self.out_zp, self.act_min, self.act_max)
            return
        for n in range(first, last):
            for c in range(channels):
                acc = self.bias[c] + dot_wide(&self.x[n, 0], &self.w[c, 0], k)
                self.out[n, c] = requantize_wide(acc, self.m0[c], self.shift[c], self.out_zp,
                                                 self.act_min, self.act_max)


cdef class Conv2dWideCall(KernelCall):
    """conv2d (NHWC, groups) with int64 accumulators: as _conv.Conv2dCall on int16, with the
    requantization of DenseWideCall.

    x: int16 [N, H, W, Cin]; w: int8 [Cout, KH, KW, Cin // groups]; bias, m0, shift: int32
    [Cout]; params: a mapping with exactly the keys CONV2D_PARAMS (pad_value and out_zp 0);
    out: int16 [N, OH, OW, Cout]. One task per output row (image n, row oh); each task
    gathers a group's patch into its own scratch.
    """
    cdef const int16_t[:, :, :, ::1] x
    cdef const int8_t[:, :, :, ::1] w
    cdef const int32_t[::1] bias, m0, shift
    cdef int16_t[:, :, :, ::1] out
    cdef readonly conv2d_params params

    def __init__(self, const int16_t[:, :, :, ::1] x not None,
                 const int8_t[:, :, :, ::1] w not None, const int32_t[::1] bias not None,
                 const int32_t[::1] m0 not None, const int32_t[::1] shift not None, params,
                 int16_t[:, :, :, ::1] out not None):
        cdef conv2d_params p
        check_params("conv2d_wide", params, CONV2D_PARAMS)
        p = params
        if p.stride_h < 1 or p.stride_w < 1 or p.dilation_h < 1 or p.dilation_w < 1:
            raise ValueError(f"conv2d_wide: strides ({p.stride_h}, {p.stride_w}) and dilations "
                             f"({p.dilation_h}, {p.dilation_w}) must be >= 1")
        if p.pad_top < 0 or p.pad_left < 0:
            raise ValueError(f"conv2d_wide: pads ({p.pad_top}, {p.pad_left}) must be >= 0")
        cin, cout = x.shape[3], w.shape[0]
        if p.groups < 1 or cin % p.groups or cout % p.groups:
            raise ValueError(f"conv2d_wide: groups = {p.groups} must be >= 1 and divide "
                             f"Cin = {cin} and Cout = {cout}")
        if w.shape[1] < 1 or w.shape[2] < 1 or w.shape[3] != cin // p.groups:
            raise ValueError(f"conv2d_wide: w has shape ({w.shape[0]}, {w.shape[1]}, "
                             f"{w.shape[2]}, {w.shape[3]}), expected [Cout, KH >= 1, KW >= 1, "
                             f"Cin // groups = {cin // p.groups}]")
        if bias.shape[0] != cout:
            raise ValueError(f"conv2d_wide: bias has length {bias.shape[0]}, expected {cout}")
        if out.shape[0] != x.shape[0] or out.shape[3] != cout:
            raise ValueError(f"conv2d_wide: out has shape ({out.shape[0]}, {out.shape[1]}, "
                             f"{out.shape[2]}, {out.shape[3]}), expected batch {x.shape[0]} "
                             f"and {cout} channels")
        check_wide_multipliers("conv2d_wide", m0, shift, cout)
        check_act_zp("conv2d_wide", "pad_value", p.pad_value, 16)
        check_act_output_range("conv2d_wide", p.out_zp, p.act_min, p.act_max, 16)
        self.x, self.w, self.bias, self.m0, self.shift, self.out = x, w, bias, m0, shift, out
        self.params = p
        self.n_tasks = out.shape[0] * out.shape[1]
        self.splittable = True
        self.work_share = (<double>out.shape[0] * out.shape[1] * out.shape[2] * cout
                           * w.shape[1] * w.shape[2] * w.shape[3] / 65536)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef const conv2d_params* p = &self.params
        cdef Py_ssize_t kh_n = self.w.shape[1], kw_n = self.w.shape[2], cin_g = self.w.shape[3]
        cdef Py_ssize_t height = self.x.shape[1], width = self.x.shape[2]
        cdef Py_ssize_t out_w = self.out.shape[2], cout = self.w.shape[0]
        cdef Py_ssize_t cout_g = cout // p.groups, length = kh_n * kw_n * cin_g
        cdef Py_ssize_t task, n, oh, ow, g, kh, kw, ci, ih, iw, co, at
        cdef int16_t* patch
        cdef int64_t acc
        if first >= last or cout == 0 or out_w == 0:
            return
        patch = <int16_t*>malloc((length if length > 0 else 1) * sizeof(int16_t))
        if patch == NULL:       # cannot happen for a plan that allocated its arena
            return
        for task in range(first, last):
            n = task // self.out.shape[1]
            oh = task % self.out.shape[1]
            for ow in range(out_w):
                for g in range(p.groups):
                    at = 0
                    for kh in range(kh_n):
                        ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h
                        for kw in range(kw_n):
                            iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w
                            if 0 <= ih < height and 0 <= iw < width:
                                for ci in range(cin_g):
                                    patch[at + ci] = self.x[n, ih, iw, g * cin_g + ci]
                            else:
                                for ci in range(cin_g):
                                    patch[at + ci] = <int16_t>p.pad_value
                            at += cin_g
                    for co in range(g * cout_g, (g + 1) * cout_g):
                        acc = self.bias[co]
                        if length > 0:
                            acc += dot_wide(patch, &self.w[co, 0, 0, 0], length)
                        self.out[n, oh, ow, co] = requantize_wide(
                            acc, self.m0[co], self.shift[co], p.out_zp, p.act_min, p.act_max)
        free(patch)


def dense_wide(x, w, bias, m0, shift, int out_zp, int act_min, int act_max, out):
    """See DenseWideCall."""
    DenseWideCall(x, w, bias, m0, shift, out_zp, act_min, act_max, out)()


def conv2d_wide(x, w, bias, m0, shift, params, out):
    """See Conv2dWideCall."""
    Conv2dWideCall(x, w, bias, m0, shift, params, out)()

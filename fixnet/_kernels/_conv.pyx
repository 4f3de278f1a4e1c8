# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""2-D convolutions on int8 (NHWC): conv2d (with groups) and depthwise_conv2d.

Bit-exact with ``fixnet.oracle.conv2d`` / ``fixnet.oracle.depthwise_conv2d``. Private:
fixnet.runtime plans the calls.

Calling pattern: ``Conv2dCall(...)`` / ``DepthwiseConv2dCall(...)`` take exactly the
arguments of ``conv2d`` / ``depthwise_conv2d``, check every shape and parameter once, keep
references to the arrays and own their per-call data; calling the object runs the kernel on
whatever x holds now, without re-checking. ``conv2d(...)`` is ``Conv2dCall(...)()``.

Padding: a tap outside the input reads ``pad_value`` (the caller passes the input zero
point, real 0.0), at the top/left (pad_top, pad_left) as at the bottom/right, which is
implied by the output size. Accumulators wrap modulo 2^32 like dense's, if the quantizer's
overflow proof does not hold (oracle.conv2d_accumulators detects that).

conv2d: the kernel collects the int32 accumulators of one output pixel (all channels) in a
row, then requantizes the row in one branch-free loop (fixedpoint.requantize_block),
bit-exact with requantize_accumulator. Its per-channel constants are derived from ``shift``
once, when the Call object is built: x, w, bias and m0 are read at every call, shift only
then. A Conv2dCall is not reentrant (its scratch buffers are shared by its calls).

depthwise_conv2d: micro-kernels in C with intrinsics, csrc/dwconv.h (SSE2, AVX2, AVX-512 on
x86-64, NEON on aarch64, chosen by the compiler flags of each ISA build, and a scalar twin
over the same packing). Channels sit in vector lanes, 16 per tile; weights and bias are
packed once (pack_depthwise_weights, cached by fixnet.ops.conv.DepthwiseStep); each Call
owns read-only per-call data: an indirection of input offsets per output pixel and tap
(padding taps read a row of pad_value bytes), a gather table for the tail tile and
depth_multiplier > 1, and the requantization constants of each tile, which the tile
epilogue applies (bit-exact with requantize_block). A DepthwiseConv2dCall has no mutable
scratch: ``run_tasks`` on disjoint row ranges may run on several threads at once.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t

import numpy as np

from fixnet._kernels.step cimport step_entry
from fixnet._kernels.fixedpoint cimport (
    DOT_BLOCK,
    check_length,
    check_multipliers,
    check_output_range,
    dot4_int16_int8,
    dot_int16_int8,
    requant_constants,
    requantize_block,
    requantize_block_left,
    widen_int8_to_int16,
)

# Release the GIL only when a call does more than about this many multiply-adds: below it,
# releasing and re-acquiring costs more than other threads could gain.
cdef enum:
    NOGIL_MIN_WORK = 20000


cdef struct ConvGeometry:
    # Shapes (elements). in_c_group = in_c // groups, out_c_group = out_c // groups;
    # patch_len = kernel_h * kernel_w * in_c_group (the length of one weight row).
    Py_ssize_t batch, in_h, in_w, in_c, out_h, out_w, out_c
    Py_ssize_t kernel_h, kernel_w, groups, in_c_group, out_c_group, patch_len
    Py_ssize_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left
    # Depthwise only: depth_multiplier (out_c = in_c * depth_multiplier).
    Py_ssize_t depth_multiplier
    int8_t pad_value


cdef struct RowRequant:
    # What requantize_block needs to requantize the accumulators of one output pixel (one
    # per channel): m0 (the caller's array) and the constants requant_constants derives
    # from shift.
    Py_ssize_t channels
    const int32_t* m0
    int32_t* left
    int64_t* nudge
    int64_t* neg_adjust
    int64_t* total_shift
    int32_t out_zp, act_min, act_max
    bint any_left_shift


cdef void* new_row_requant(RowRequant* r, const int32_t[::1] m0, const int32_t[::1] shift,
                           int out_zp, int act_min, int act_max) except NULL:
    """Fill r for m0, shift [C] (already checked); returns the memory block r points into,
    which the caller owns (PyMem_Free)."""
    cdef Py_ssize_t n = m0.shape[0], c
    cdef void* block = PyMem_Malloc(max(n, 1) * (3 * sizeof(int64_t) + sizeof(int32_t)))
    if block == NULL:
        raise MemoryError(f"cannot allocate the requantization constants of {n} channels")
    r.channels, r.m0 = n, &m0[0]
    r.nudge = <int64_t*>block
    r.neg_adjust = r.nudge + n
    r.total_shift = r.neg_adjust + n
    r.left = <int32_t*>(r.total_shift + n)
    r.any_left_shift = False
    for c in range(n):
        requant_constants(shift[c], &r.nudge[c], &r.neg_adjust[c], &r.total_shift[c], &r.left[c])
        r.any_left_shift = r.any_left_shift or r.left[c] > 0
    r.out_zp, r.act_min, r.act_max = out_zp, act_min, act_max
    return block


cdef inline void requantize_row(const RowRequant* r, const int32_t* acc,
                                int8_t* out) noexcept nogil:
    """out[c] = requantize_accumulator(acc[c], m0[c], shift[c], out_zp, act_min, act_max)."""
    if r.any_left_shift:
        requantize_block_left(acc, r.channels, r.m0, r.left, r.nudge, r.neg_adjust,
                              r.total_shift, r.out_zp, r.act_min, r.act_max, out)
    else:
        requantize_block(acc, r.channels, r.m0, r.nudge, r.neg_adjust, r.total_shift,
                         r.out_zp, r.act_min, r.act_max, out)


cdef int check_int8(str kernel, str name, int value) except -1:
    if not -128 <= value <= 127:
        raise ValueError(f"{kernel}: {name} = {value} is outside the int8 range [-128, 127]")
    return 0


cdef int check_window(str kernel, int stride_h, int stride_w, int dilation_h, int dilation_w,
                      int pad_top, int pad_left) except -1:
    """Strides and dilations >= 1, paddings >= 0; ValueError naming the first bad one."""
    for name, value, low in (("stride_h", stride_h, 1), ("stride_w", stride_w, 1),
                             ("dilation_h", dilation_h, 1), ("dilation_w", dilation_w, 1),
                             ("pad_top", pad_top, 0), ("pad_left", pad_left, 0)):
        if value < low:
            raise ValueError(f"{kernel}: {name} = {value} must be >= {low}")
    return 0


cdef inline void fill_int16(int16_t* dst, int16_t value, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = value


# ---- conv2d --------------------------------------------------------------------------------

cdef void build_patch(const ConvGeometry* g, const int8_t* image, Py_ssize_t oh,
                      Py_ssize_t ow, Py_ssize_t c0, int16_t* patch) noexcept nogil:
    """patch[(kh * KW + kw) * Cin_g + ci] = image[ih, iw, c0 + ci] widened to int16, or
    pad_value when (ih, iw) is outside the image; image is one [H, W, Cin] sample."""
    cdef Py_ssize_t cin = g.in_c, cin_g = g.in_c_group, kw_len = g.kernel_w
    cdef Py_ssize_t ih0 = oh * g.stride_h - g.pad_top
    cdef Py_ssize_t iw0 = ow * g.stride_w - g.pad_left
    cdef Py_ssize_t kh, kw, ih, iw, kw_lo, kw_hi
    cdef int16_t pad = g.pad_value
    cdef const int8_t* row
    cdef int16_t* dst = patch
    for kh in range(g.kernel_h):
        ih = ih0 + kh * g.dilation_h
        if ih < 0 or ih >= g.in_h:
            fill_int16(dst, pad, kw_len * cin_g)
        elif g.groups == 1 and g.dilation_w == 1:
            # The taps of one kernel row are adjacent pixels: one contiguous run of input.
            row = image + ih * g.in_w * cin
            kw_lo = -iw0 if iw0 < 0 else 0
            kw_hi = g.in_w - iw0 if g.in_w - iw0 < kw_len else kw_len
            if kw_lo > kw_len:
                kw_lo = kw_len
            if kw_hi < kw_lo:
                kw_hi = kw_lo
            fill_int16(dst, pad, kw_lo * cin)
            widen_int8_to_int16(row + (iw0 + kw_lo) * cin, dst + kw_lo * cin,
                                (kw_hi - kw_lo) * cin)
            fill_int16(dst + kw_hi * cin, pad, (kw_len - kw_hi) * cin)
        else:
            row = image + ih * g.in_w * cin + c0
            for kw in range(kw_len):
                iw = iw0 + kw * g.dilation_w
                if 0 <= iw < g.in_w:
                    widen_int8_to_int16(row + iw * cin, dst + kw * cin_g, cin_g)
                else:
                    fill_int16(dst + kw * cin_g, pad, cin_g)
        dst += kw_len * cin_g


cdef inline void dot_rows(const int16_t* patch, const int8_t* w_rows, Py_ssize_t n_rows,
                          Py_ssize_t row_len, uint32_t* acc) noexcept nogil:
    """acc[j] += sum_k patch[k] * w_rows[j * row_len + k] for j < n_rows (1 or 4), in blocks
    of DOT_BLOCK (no int32 overflow inside a block), combined modulo 2^32."""
    cdef int32_t part[4]
    cdef Py_ssize_t k0 = 0, block_len
    while k0 < row_len:
        block_len = min(<Py_ssize_t>DOT_BLOCK, row_len - k0)
        if n_rows == 4:
            dot4_int16_int8(patch + k0, w_rows + k0, w_rows + row_len + k0,
                            w_rows + 2 * row_len + k0, w_rows + 3 * row_len + k0,
                            block_len, part)
            acc[0] += <uint32_t>part[0]
            acc[1] += <uint32_t>part[1]
            acc[2] += <uint32_t>part[2]
            acc[3] += <uint32_t>part[3]
        else:
            acc[0] += <uint32_t>dot_int16_int8(patch + k0, w_rows + k0, block_len)
        k0 += DOT_BLOCK


cdef void conv2d_impl(const ConvGeometry* g, const RowRequant* requant, const int8_t* x,
                      const int8_t* w, const int32_t* bias, int8_t* out, int16_t* patch,
                      uint32_t* acc, bint pixel_is_patch) noexcept nogil:
    """The conv2d kernel on raw C-contiguous buffers. Scratch: patch holds in_c int16 values
    if pixel_is_patch (1x1 kernel, every tap inside the input), else patch_len; acc out_c."""
    cdef Py_ssize_t n, oh, ow, grp, c, c_end
    cdef Py_ssize_t patch_len = g.patch_len, image_len = g.in_h * g.in_w * g.in_c
    cdef const int8_t* image
    cdef const int16_t* group_patch
    cdef int8_t* out_pixel = out
    for n in range(g.batch):
        image = x + n * image_len
        for oh in range(g.out_h):
            for ow in range(g.out_w):
                if pixel_is_patch:
                    # 1x1 kernel inside the input: each group's patch is a slice of the
                    # pixel, so the pixel is widened once for all groups.
                    widen_int8_to_int16(
                        image + (oh * g.stride_h * g.in_w + ow * g.stride_w) * g.in_c,
                        patch, g.in_c)
                for c in range(g.out_c):
                    acc[c] = <uint32_t>bias[c]
                for grp in range(g.groups):
                    if pixel_is_patch:
                        group_patch = patch + grp * g.in_c_group
                    else:
                        build_patch(g, image, oh, ow, grp * g.in_c_group, patch)
                        group_patch = patch
                    c = grp * g.out_c_group
                    c_end = c + g.out_c_group
                    # Four output channels per pass: each load of the patch is used 4 times.
                    while c + 4 <= c_end:
                        dot_rows(group_patch, w + c * patch_len, 4, patch_len, acc + c)
                        c += 4
                    while c < c_end:
                        dot_rows(group_patch, w + c * patch_len, 1, patch_len, acc + c)
                        c += 1
                requantize_row(requant, <const int32_t*>acc, out_pixel)
                out_pixel += g.out_c


cdef class Conv2dCall:
    """conv2d with its arguments checked once; calling the object runs it (see conv2d)."""
    cdef const int8_t[:, :, :, ::1] x
    cdef const int8_t[:, :, :, ::1] w
    cdef const int32_t[::1] bias, m0, shift
    cdef int8_t[:, :, :, ::1] out
    cdef ConvGeometry geometry
    cdef RowRequant requant
    cdef void* requant_block      # owns the arrays of requant
    cdef int16_t* patch           # scratch: the im2col patch of one pixel and group
    cdef uint32_t* acc            # scratch: the accumulators of one pixel, [Cout]
    cdef bint pixel_is_patch, release_gil
    cdef const int8_t* x_data
    cdef const int8_t* w_data
    cdef const int32_t* bias_data
    cdef int8_t* out_data

    def __init__(self, const int8_t[:, :, :, ::1] x not None,
                 const int8_t[:, :, :, ::1] w not None, const int32_t[::1] bias not None,
                 const int32_t[::1] m0 not None, const int32_t[::1] shift not None,
                 int stride_h, int stride_w, int dilation_h, int dilation_w,
                 int pad_top, int pad_left, int groups, int pad_value, int out_zp,
                 int act_min, int act_max, int8_t[:, :, :, ::1] out not None):
        cdef str k = "conv2d"
        cdef Py_ssize_t n_in = x.shape[0], cin = x.shape[3], cout = w.shape[0]
        cdef Py_ssize_t kh = w.shape[1], kw = w.shape[2]
        cdef Py_ssize_t patch_len, patch_size
        cdef bint pixel_is_patch
        cdef RowRequant requant
        cdef void* requant_block
        cdef int16_t* patch
        cdef uint32_t* acc
        cdef ConvGeometry* g = &self.geometry
        if groups < 1:
            raise ValueError(f"{k}: groups = {groups} must be >= 1")
        if cin % groups:
            raise ValueError(f"{k}: groups = {groups} must divide the input channels "
                             f"Cin = x.shape[3] = {cin}")
        if cout % groups:
            raise ValueError(f"{k}: groups = {groups} must divide the output channels "
                             f"Cout = w.shape[0] = {cout}")
        if kh < 1 or kw < 1 or w.shape[3] != cin // groups:
            raise ValueError(f"{k}: w has shape ({cout}, {kh}, {kw}, {w.shape[3]}), expected "
                             f"(Cout, KH >= 1, KW >= 1, Cin // groups = {cin // groups})")
        check_length(k, "bias", bias.shape[0], cout, "one per output channel, Cout = w.shape[0]")
        check_length(k, "m0", m0.shape[0], cout, "one per output channel, Cout = w.shape[0]")
        check_length(k, "shift", shift.shape[0], cout, "one per output channel, Cout = w.shape[0]")
        check_window(k, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
        check_int8(k, "pad_value", pad_value)
        check_output_range(k, out_zp, act_min, act_max)
        if out.shape[0] != n_in or out.shape[3] != cout:
            raise ValueError(f"{k}: out has shape ({out.shape[0]}, {out.shape[1]}, "
                             f"{out.shape[2]}, {out.shape[3]}), expected "
                             f"(N, OH, OW, Cout) = ({n_in}, OH, OW, {cout})")
        check_multipliers(k, &m0[0], &shift[0], cout)

        # Scratch first, so that a failed (re-)initialisation leaves the object as it was.
        patch_len = kh * kw * (cin // groups)
        pixel_is_patch = (kh == 1 and kw == 1 and pad_top == 0 and pad_left == 0
                          and (out.shape[1] - 1) * <Py_ssize_t>stride_h < x.shape[1]
                          and (out.shape[2] - 1) * <Py_ssize_t>stride_w < x.shape[2])
        patch_size = cin if pixel_is_patch else patch_len
        requant_block = new_row_requant(&requant, m0, shift, out_zp, act_min, act_max)
        patch = <int16_t*>PyMem_Malloc(max(patch_size, 1) * sizeof(int16_t))
        acc = <uint32_t*>PyMem_Malloc(max(cout, 1) * sizeof(uint32_t))
        if patch == NULL or acc == NULL:
            PyMem_Free(requant_block)
            PyMem_Free(patch)
            PyMem_Free(acc)
            raise MemoryError(f"{k}: cannot allocate the scratch buffers "
                              f"({patch_size}-element patch, {cout} accumulators)")
        self.free_buffers()  # __init__ may run twice on one object
        self.requant, self.requant_block = requant, requant_block
        self.patch, self.acc, self.pixel_is_patch = patch, acc, pixel_is_patch

        self.x, self.w, self.bias, self.m0, self.shift, self.out = x, w, bias, m0, shift, out
        self.x_data, self.w_data, self.out_data = &x[0, 0, 0, 0], &w[0, 0, 0, 0], &out[0, 0, 0, 0]
        self.bias_data = &bias[0]
        g.batch, g.in_h, g.in_w, g.in_c = n_in, x.shape[1], x.shape[2], cin
        g.out_h, g.out_w, g.out_c = out.shape[1], out.shape[2], cout
        g.kernel_h, g.kernel_w, g.groups = kh, kw, groups
        g.in_c_group, g.out_c_group, g.patch_len = cin // groups, cout // groups, patch_len
        g.stride_h, g.stride_w = stride_h, stride_w
        g.dilation_h, g.dilation_w = dilation_h, dilation_w
        g.pad_top, g.pad_left, g.pad_value = pad_top, pad_left, <int8_t>pad_value
        g.depth_multiplier = 1
        self.release_gil = n_in * g.out_h * g.out_w * cout * (patch_len + 8) > NOGIL_MIN_WORK

    cdef void free_buffers(self) noexcept:
        PyMem_Free(self.requant_block)
        PyMem_Free(self.patch)
        PyMem_Free(self.acc)
        self.requant_block = self.patch = self.acc = NULL

    def __dealloc__(self):
        self.free_buffers()

    def __call__(self):
        """Run the convolution on the current contents of x; writes all of out."""
        # (Cython's `with nogil(condition)` takes compile-time conditions only.)
        if self.release_gil:
            with nogil:
                self.run()
        else:
            self.run()

    cdef inline void run(self) noexcept nogil:
        conv2d_impl(&self.geometry, &self.requant, self.x_data, self.w_data, self.bias_data,
                    self.out_data, self.patch, self.acc, self.pixel_is_patch)

    def step_entry(self):
        """For fixnet._kernels._pass: see step.pxd (no tasks yet)."""
        return step_entry(_run_conv2d, NULL, 0, 1.0 if self.release_gil else 0.0)


def conv2d(const int8_t[:, :, :, ::1] x not None, const int8_t[:, :, :, ::1] w not None,
           const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
           const int32_t[::1] shift not None, int stride_h, int stride_w, int dilation_h,
           int dilation_w, int pad_top, int pad_left, int groups, int pad_value, int out_zp,
           int act_min, int act_max, int8_t[:, :, :, ::1] out not None):
    """out[n, oh, ow, co] = clamp(out_zp + MBQM(acc, m0[co], shift[co]), act_min, act_max),
    acc = bias[co] + sum_{kh, kw, ci} x[n, ih, iw, g * Cin_g + ci] * w[co, kh, kw, ci]
    (int32, wrapping modulo 2^32), ih = oh * stride_h - pad_top + kh * dilation_h,
    iw = ow * stride_w - pad_left + kw * dilation_w, g = co // (Cout // groups);
    x[n, ih, iw, .] reads pad_value outside [0, H) x [0, W). MBQM =
    multiply_by_quantized_multiplier.

    x: int8 [N, H, W, Cin] (input zero point folded into bias by the quantizer).
    w: int8 [Cout, KH, KW, Cin // groups], values in [-127, 127]; KH, KW >= 1.
    bias, m0, shift: int32 [Cout]; m0 in [2^30, 2^31) or 0, shift in [-31, 30].
    stride_*, dilation_* >= 1; pad_top, pad_left >= 0 (bottom/right padding is implied by
    out's shape); groups >= 1 divides Cin and Cout; pad_value, out_zp: int8;
    -128 <= act_min <= act_max <= 127. out: int8 [N, OH, OW, Cout], written in full.
    """
    Conv2dCall(x, w, bias, m0, shift, stride_h, stride_w, dilation_h, dilation_w, pad_top,
               pad_left, groups, pad_value, out_zp, act_min, act_max, out)()


# ---- depthwise_conv2d ----------------------------------------------------------------------
#
# The micro-kernels are C (csrc/dwconv.h, intrinsics per ISA, chosen by the compiler's
# predefined macros, and a scalar twin over the same packing); this part packs the weights,
# builds the per-call read-only data (indirection, zero-point row, gather table, requantization
# constants) and runs tasks (one output row of one image each).

cdef extern from "csrc/dwconv.h" nogil:
    enum:
        DW_TILE
        DW_PAIRS
    ctypedef struct dw_requant:
        pass
    ctypedef struct dw_call:
        ptrdiff_t batch, in_h, in_w, in_c, out_h, out_w, out_c, taps
        ptrdiff_t n_tiles, n_direct
        const int8_t* x
        int8_t* out
        const uint8_t* packed
        const ptrdiff_t* ind
        const int8_t* zero
        const int32_t* gather
        const dw_requant* rq
        int32_t out_zp, act_min, act_max
        int any_left, pairs_ok
    size_t dw_tile_bytes(ptrdiff_t taps)
    ptrdiff_t dw_n_tiles(ptrdiff_t channels)
    void dw_pack(const int8_t* w, const int32_t* bias, ptrdiff_t taps, ptrdiff_t channels,
                 uint8_t* dst)
    void dw_requant_fill(dw_requant* r, int lane, int32_t m0, int32_t shift)
    void dw_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last)
    void dw_run_scalar(const dw_call* k, ptrdiff_t first, ptrdiff_t last)
    const char* dw_isa_name()


# The instruction set of this build's depthwise micro-kernel ("avx512", "avx2", "sse2",
# "neon" or "scalar").
DEPTHWISE_ISA = dw_isa_name().decode()


cdef class PackedDepthwiseWeights:
    """Depthwise weights and bias in this build's tile layout (csrc/dwconv.h: per 16 output
    channels, 16 int32 biases then every tap's 16 weights; int16 tap pairs on x86-64, int8 on
    ARM). Read-only once made; shared by every DepthwiseConv2dCall over the same w and bias."""
    cdef readonly object data       # the packed bytes (NumPy uint8)
    cdef readonly object w          # the int8 [KH, KW, C*M] array it was packed from
    cdef readonly object bias       # the int32 [C*M] array it was packed from
    cdef readonly Py_ssize_t taps, channels
    cdef readonly bint pairs_ok     # no weight is -128
    cdef const uint8_t* packed


def pack_depthwise_weights(w, bias):
    """PackedDepthwiseWeights of w (int8 [KH, KW, C*M]) and bias (int32 [C*M]). Do this once
    (at quantize time) and pass the result as ``packed=`` to DepthwiseConv2dCall: the kernel
    reads only the packed copy, so w and bias must not change afterwards."""
    cdef const int8_t[:, :, ::1] wv = w
    cdef const int32_t[::1] bv = bias
    cdef Py_ssize_t taps = wv.shape[0] * wv.shape[1], channels = wv.shape[2], i
    cdef PackedDepthwiseWeights p = PackedDepthwiseWeights.__new__(PackedDepthwiseWeights)
    cdef uint8_t[::1] dst
    cdef bint pairs_ok = True
    if bv.shape[0] != channels:
        raise ValueError(f"pack_depthwise_weights: bias has length {bv.shape[0]}, expected "
                         f"{channels} (one per output channel, w.shape[2])")
    data = np.zeros(max(<Py_ssize_t>(dw_n_tiles(channels) * dw_tile_bytes(taps)), 64), np.uint8)
    dst = data
    if taps > 0 and channels > 0:
        dw_pack(&wv[0, 0, 0], &bv[0], taps, channels, &dst[0])
        for i in range(taps * channels):
            if (&wv[0, 0, 0])[i] == -128:
                pairs_ok = False
                break
    data.setflags(write=False)
    p.data, p.w, p.bias, p.taps, p.channels, p.pairs_ok = data, w, bias, taps, channels, pairs_ok
    p.packed = &dst[0]
    return p


cdef class DepthwiseConv2dCall:
    """depthwise_conv2d with its arguments checked once; calling the object runs it (see
    depthwise_conv2d). x is read at every call; w and bias through their packed copy
    (``packed=``, or packed here), m0 and shift when the object is built.

    Tasks: ``n_tasks`` = N * OH (one output row of one image each); ``run_tasks(first,
    last)`` computes rows [first, last) with the stack and this object's read-only data only,
    so disjoint ranges may run on several threads at once. ``scalar=True`` runs the plain-C
    twin of the micro-kernel (the tests compare the two)."""
    cdef const int8_t[:, :, :, ::1] x
    cdef int8_t[:, :, :, ::1] out
    cdef readonly PackedDepthwiseWeights packed
    cdef dw_call k
    cdef void* block              # owns ind, zero, gather, rq (one allocation)
    cdef bint release_gil
    cdef double work_share        # (multiply-adds + epilogue) / NOGIL_MIN_WORK: see step.pxd
    cdef readonly bint scalar
    cdef readonly Py_ssize_t n_tasks

    def __init__(self, const int8_t[:, :, :, ::1] x not None, const int8_t[:, :, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int stride_h, int stride_w,
                 int dilation_h, int dilation_w, int pad_top, int pad_left,
                 int depth_multiplier, int pad_value, int out_zp, int act_min, int act_max,
                 int8_t[:, :, :, ::1] out not None, PackedDepthwiseWeights packed=None,
                 bint scalar=False):
        cdef str k = "depthwise_conv2d"
        cdef Py_ssize_t n_in = x.shape[0], cin = x.shape[3], cout, kh = w.shape[0], kw = w.shape[1]
        cdef Py_ssize_t in_h = x.shape[1], in_w = x.shape[2], out_h = out.shape[1]
        cdef Py_ssize_t out_w = out.shape[2], taps, n_tiles, o, t, lane, oh, ow, ih, iw, i, j
        cdef Py_ssize_t n_ind, zero_len, mult = depth_multiplier
        cdef size_t size
        cdef void* block
        cdef ptrdiff_t* ind
        cdef int8_t* zero
        cdef int32_t* gather
        cdef dw_requant* rq
        if depth_multiplier < 1:
            raise ValueError(f"{k}: depth_multiplier = {depth_multiplier} must be >= 1")
        cout = cin * depth_multiplier
        if kh < 1 or kw < 1 or w.shape[2] != cout:
            raise ValueError(f"{k}: w has shape ({kh}, {kw}, {w.shape[2]}), expected "
                             f"(KH >= 1, KW >= 1, C * depth_multiplier = {cout})")
        per_channel = "one per output channel, C * depth_multiplier"
        check_length(k, "bias", bias.shape[0], cout, per_channel)
        check_length(k, "m0", m0.shape[0], cout, per_channel)
        check_length(k, "shift", shift.shape[0], cout, per_channel)
        check_window(k, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left)
        check_int8(k, "pad_value", pad_value)
        check_output_range(k, out_zp, act_min, act_max)
        if out.shape[0] != n_in or out.shape[3] != cout:
            raise ValueError(f"{k}: out has shape ({out.shape[0]}, {out_h}, "
                             f"{out_w}, {out.shape[3]}), expected "
                             f"(N, OH, OW, C * depth_multiplier) = ({n_in}, OH, OW, {cout})")
        check_multipliers(k, &m0[0], &shift[0], cout)
        taps = kh * kw
        if packed is None:
            packed = pack_depthwise_weights(w.base if w.base is not None else w,
                                            bias.base if bias.base is not None else bias)
        elif packed.taps != taps or packed.channels != cout:
            raise ValueError(f"{k}: packed holds {packed.channels} channels of {packed.taps} "
                             f"taps, expected {cout} of {taps} (pack_depthwise_weights(w, bias))")

        # Per-call read-only data, in one block: the indirection [OH * OW * taps], the
        # requantization constants [tiles], the gather table [tiles * 16], the zero-point row.
        # Made before anything is replaced, so a failed (re-)initialisation leaves the object
        # as it was.
        n_tiles = dw_n_tiles(cout)
        n_ind = out_h * out_w * taps
        zero_len = max(cin, <Py_ssize_t>DW_TILE)
        size = (n_ind * sizeof(ptrdiff_t) + n_tiles * sizeof(dw_requant)
                + n_tiles * DW_TILE * sizeof(int32_t) + zero_len)
        block = PyMem_Malloc(max(size, <size_t>1))
        if block == NULL:
            raise MemoryError(f"{k}: cannot allocate {size} bytes of indirection and constants")
        rq = <dw_requant*>block
        ind = <ptrdiff_t*>(rq + n_tiles)
        gather = <int32_t*>(ind + n_ind)
        zero = <int8_t*>(gather + n_tiles * DW_TILE)
        for i in range(zero_len):
            zero[i] = <int8_t>pad_value
        i = 0
        for oh in range(out_h):
            for ow in range(out_w):
                for t in range(taps):
                    ih = oh * stride_h - pad_top + (t // kw) * dilation_h
                    iw = ow * stride_w - pad_left + (t % kw) * dilation_w
                    ind[i] = (ih * in_w + iw) * cin if 0 <= ih < in_h and 0 <= iw < in_w else -1
                    i += 1
        for t in range(n_tiles):
            for lane in range(DW_TILE):
                o = t * DW_TILE + lane
                gather[t * DW_TILE + lane] = o // mult if o < cout else 0
                dw_requant_fill(&rq[t], lane, m0[o] if o < cout else 0,
                                shift[o] if o < cout else 0)

        self.free_buffers()  # __init__ may run twice on one object
        self.block = block
        self.x, self.out, self.packed, self.scalar = x, out, packed, scalar
        self.k.batch, self.k.in_h, self.k.in_w, self.k.in_c = n_in, in_h, in_w, cin
        self.k.out_h, self.k.out_w, self.k.out_c, self.k.taps = out_h, out_w, cout, taps
        self.k.n_tiles = n_tiles
        self.k.n_direct = cout // DW_TILE if mult == 1 else 0
        self.k.x, self.k.out = &x[0, 0, 0, 0], &out[0, 0, 0, 0]
        self.k.packed, self.k.ind, self.k.zero, self.k.gather, self.k.rq = (
            packed.packed, ind, zero, gather, rq)
        self.k.out_zp, self.k.act_min, self.k.act_max = out_zp, act_min, act_max
        self.k.any_left = False
        for o in range(cout):
            self.k.any_left = self.k.any_left or shift[o] > 0
        self.k.pairs_ok = packed.pairs_ok
        self.n_tasks = n_in * out_h
        self.release_gil = n_in * out_h * out_w * cout * (taps + 8) > NOGIL_MIN_WORK
        self.work_share = <double>n_in * out_h * out_w * cout * (taps + 8) / NOGIL_MIN_WORK

    cdef void free_buffers(self) noexcept:
        PyMem_Free(self.block)
        self.block = NULL

    def __dealloc__(self):
        self.free_buffers()

    def __call__(self):
        """Run the depthwise convolution on the current contents of x; writes all of out."""
        if self.release_gil:
            with nogil:
                self.run()
        else:
            self.run()

    def call_tasks(self, Py_ssize_t first, Py_ssize_t last):
        """run_tasks(first, last) from Python (tests): output rows [first, last) of N * OH."""
        if not 0 <= first <= last <= self.n_tasks:
            raise ValueError(f"depthwise_conv2d: tasks [{first}, {last}) are not inside "
                             f"[0, {self.n_tasks})")
        with nogil:
            self.run_tasks(first, last)

    cdef void run(self) noexcept nogil:
        self.run_tasks(0, self.n_tasks)

    cdef void run_tasks(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.scalar:
            dw_run_scalar(&self.k, first, last)
        else:
            dw_run_simd(&self.k, first, last)

    def step_entry(self):
        """For fixnet._kernels._pass: see step.pxd (tasks: output rows)."""
        return step_entry(_run_depthwise_conv2d, _run_depthwise_conv2d_tasks, self.n_tasks,
                          self.work_share)


cdef void _run_conv2d(void* call) noexcept nogil:
    (<Conv2dCall>call).run()


cdef void _run_depthwise_conv2d(void* call) noexcept nogil:
    (<DepthwiseConv2dCall>call).run()


cdef void _run_depthwise_conv2d_tasks(void* call, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    (<DepthwiseConv2dCall>call).run_tasks(first, last)


def depthwise_conv2d(const int8_t[:, :, :, ::1] x not None, const int8_t[:, :, ::1] w not None,
                     const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                     const int32_t[::1] shift not None, int stride_h, int stride_w,
                     int dilation_h, int dilation_w, int pad_top, int pad_left,
                     int depth_multiplier, int pad_value, int out_zp, int act_min, int act_max,
                     int8_t[:, :, :, ::1] out not None, bint scalar=False):
    """out[n, oh, ow, o] = clamp(out_zp + MBQM(acc, m0[o], shift[o]), act_min, act_max),
    acc = bias[o] + sum_{kh, kw} x[n, ih, iw, o // M] * w[kh, kw, o] (int32, wrapping
    modulo 2^32), ih, iw and padding as in conv2d, M = depth_multiplier.

    x: int8 [N, H, W, C]; w: int8 [KH, KW, C * M] in [-127, 127] (-128 is computed exactly
    too, more slowly on ARM); bias, m0, shift: int32 [C * M]; out: int8 [N, OH, OW, C * M],
    written in full. Other arguments as conv2d's. scalar: run the scalar twin.
    """
    DepthwiseConv2dCall(x, w, bias, m0, shift, stride_h, stride_w, dilation_h, dilation_w,
                        pad_top, pad_left, depth_multiplier, pad_value, out_zp, act_min,
                        act_max, out, scalar=scalar)()

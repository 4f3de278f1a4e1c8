# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""2-D convolutions on int8 (NHWC): conv2d (with groups) and depthwise_conv2d.

Bit-exact with ``fixnet.oracle.conv2d`` / ``fixnet.oracle.depthwise_conv2d``. Private:
fixnet.runtime plans the calls.

Calling pattern: ``Conv2dCall(...)`` / ``DepthwiseConv2dCall(...)`` take exactly the
arguments of ``conv2d`` / ``depthwise_conv2d``, check every shape and parameter once, keep
references to the arrays and own the scratch buffers; calling the object runs the kernel on
whatever the arrays hold now, without re-checking. A Call object is not reentrant (its
scratch buffers are shared by its calls): do not run one object from two threads at once.
``conv2d(...)`` is ``Conv2dCall(...)()``.

Padding: a tap outside the input reads ``pad_value`` (the caller passes the input zero
point, real 0.0), at the top/left (pad_top, pad_left) as at the bottom/right, which is
implied by the output size. Accumulators wrap modulo 2^32 like dense's, if the quantizer's
overflow proof does not hold (oracle.conv2d_accumulators detects that).

The kernels collect the int32 accumulators of one output pixel (all channels) in a row, then
requantize the row in one branch-free loop (fixedpoint.requantize_block), bit-exact with
requantize_accumulator. Its per-channel constants are derived from ``shift`` once, when the
Call object is built: x, w, bias and m0 are read at every call, shift only then.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t

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

cdef inline void accumulate_tap(uint32_t* acc, const int8_t* x, const int8_t* w,
                                Py_ssize_t n) noexcept nogil:
    """acc[o] += x[o] * w[o] (modulo 2^32). The int8 x int8 product fits int16 (it lies in
    [-16256, 16384] even for w = -128), which lets the compiler multiply 16 bits wide."""
    cdef Py_ssize_t o
    for o in range(n):
        acc[o] += <uint32_t><int32_t><int16_t>(<int16_t>x[o] * <int16_t>w[o])


cdef void depthwise_conv2d_impl(const ConvGeometry* g, const RowRequant* requant,
                                const int8_t* x, const int8_t* w, const int32_t* bias,
                                int8_t* out, uint32_t* acc, const int8_t* pad_row,
                                int8_t* expanded) noexcept nogil:
    """The depthwise kernel on raw C-contiguous buffers. Scratch: acc, out_c accumulators;
    pad_row: out_c copies of pad_value; expanded: out_c int8 values (used if M > 1)."""
    cdef Py_ssize_t n, oh, ow, kh, kw, ih, iw, ih0, iw0, c, m, o
    cdef Py_ssize_t in_c = g.in_c, out_c = g.out_c, mult = g.depth_multiplier
    cdef Py_ssize_t image_len = g.in_h * g.in_w * in_c
    cdef const int8_t* image
    cdef const int8_t* src
    cdef int8_t* out_pixel = out
    for n in range(g.batch):
        image = x + n * image_len
        for oh in range(g.out_h):
            ih0 = oh * g.stride_h - g.pad_top
            for ow in range(g.out_w):
                iw0 = ow * g.stride_w - g.pad_left
                for o in range(out_c):
                    acc[o] = <uint32_t>bias[o]
                for kh in range(g.kernel_h):
                    ih = ih0 + kh * g.dilation_h
                    for kw in range(g.kernel_w):
                        iw = iw0 + kw * g.dilation_w
                        if 0 <= ih < g.in_h and 0 <= iw < g.in_w:
                            src = image + (ih * g.in_w + iw) * in_c
                            if mult != 1:
                                # Output channel c * M + m reads input channel c: repeat
                                # each input value M times so the tap loop is contiguous.
                                for c in range(in_c):
                                    for m in range(mult):
                                        expanded[c * mult + m] = src[c]
                                src = expanded
                        else:
                            src = pad_row
                        accumulate_tap(acc, src, w + (kh * g.kernel_w + kw) * out_c, out_c)
                requantize_row(requant, <const int32_t*>acc, out_pixel)
                out_pixel += out_c


cdef class DepthwiseConv2dCall:
    """depthwise_conv2d with its arguments checked once; calling the object runs it (see
    depthwise_conv2d)."""
    cdef const int8_t[:, :, :, ::1] x
    cdef const int8_t[:, :, ::1] w
    cdef const int32_t[::1] bias, m0, shift
    cdef int8_t[:, :, :, ::1] out
    cdef ConvGeometry geometry
    cdef RowRequant requant
    cdef void* requant_block      # owns the arrays of requant
    cdef uint32_t* acc            # scratch: the accumulators of one pixel, [C * M]
    cdef int8_t* pad_row          # [C * M] copies of pad_value
    cdef int8_t* expanded         # scratch: one input pixel, each channel repeated M times
    cdef bint release_gil
    cdef const int8_t* x_data
    cdef const int8_t* w_data
    cdef const int32_t* bias_data
    cdef int8_t* out_data

    def __init__(self, const int8_t[:, :, :, ::1] x not None, const int8_t[:, :, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int stride_h, int stride_w,
                 int dilation_h, int dilation_w, int pad_top, int pad_left,
                 int depth_multiplier, int pad_value, int out_zp, int act_min, int act_max,
                 int8_t[:, :, :, ::1] out not None):
        cdef str k = "depthwise_conv2d"
        cdef Py_ssize_t n_in = x.shape[0], cin = x.shape[3], cout, kh = w.shape[0], kw = w.shape[1]
        cdef Py_ssize_t o
        cdef RowRequant requant
        cdef void* requant_block
        cdef uint32_t* acc
        cdef int8_t* pad_row
        cdef int8_t* expanded
        cdef ConvGeometry* g = &self.geometry
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
            raise ValueError(f"{k}: out has shape ({out.shape[0]}, {out.shape[1]}, "
                             f"{out.shape[2]}, {out.shape[3]}), expected "
                             f"(N, OH, OW, C * depth_multiplier) = ({n_in}, OH, OW, {cout})")
        check_multipliers(k, &m0[0], &shift[0], cout)

        # Scratch first, so that a failed (re-)initialisation leaves the object as it was.
        requant_block = new_row_requant(&requant, m0, shift, out_zp, act_min, act_max)
        acc = <uint32_t*>PyMem_Malloc(max(cout, 1) * sizeof(uint32_t))
        pad_row = <int8_t*>PyMem_Malloc(max(cout, 1))
        expanded = <int8_t*>PyMem_Malloc(max(cout, 1))
        if acc == NULL or pad_row == NULL or expanded == NULL:
            PyMem_Free(requant_block)
            PyMem_Free(acc)
            PyMem_Free(pad_row)
            PyMem_Free(expanded)
            raise MemoryError(f"{k}: cannot allocate {cout}-channel scratch rows")
        for o in range(cout):
            pad_row[o] = <int8_t>pad_value
        self.free_buffers()  # __init__ may run twice on one object
        self.requant, self.requant_block = requant, requant_block
        self.acc, self.pad_row, self.expanded = acc, pad_row, expanded

        self.x, self.w, self.bias, self.m0, self.shift, self.out = x, w, bias, m0, shift, out
        self.x_data, self.w_data, self.out_data = &x[0, 0, 0, 0], &w[0, 0, 0], &out[0, 0, 0, 0]
        self.bias_data = &bias[0]
        g.batch, g.in_h, g.in_w, g.in_c = n_in, x.shape[1], x.shape[2], cin
        g.out_h, g.out_w, g.out_c = out.shape[1], out.shape[2], cout
        g.kernel_h, g.kernel_w, g.groups = kh, kw, cin
        g.in_c_group, g.out_c_group, g.patch_len = 1, depth_multiplier, kh * kw
        g.stride_h, g.stride_w = stride_h, stride_w
        g.dilation_h, g.dilation_w = dilation_h, dilation_w
        g.pad_top, g.pad_left, g.pad_value = pad_top, pad_left, <int8_t>pad_value
        g.depth_multiplier = depth_multiplier
        self.release_gil = n_in * g.out_h * g.out_w * cout * (kh * kw + 8) > NOGIL_MIN_WORK

    cdef void free_buffers(self) noexcept:
        PyMem_Free(self.requant_block)
        PyMem_Free(self.acc)
        PyMem_Free(self.pad_row)
        PyMem_Free(self.expanded)
        self.requant_block = self.acc = NULL
        self.pad_row = self.expanded = NULL

    def __dealloc__(self):
        self.free_buffers()

    def __call__(self):
        """Run the depthwise convolution on the current contents of x; writes all of out."""
        if self.release_gil:
            with nogil:
                self.run()
        else:
            self.run()

    cdef inline void run(self) noexcept nogil:
        depthwise_conv2d_impl(&self.geometry, &self.requant, self.x_data, self.w_data,
                              self.bias_data, self.out_data, self.acc, self.pad_row,
                              self.expanded)

    def step_entry(self):
        """For fixnet._kernels._pass: see step.pxd (no tasks yet)."""
        return step_entry(_run_depthwise_conv2d, NULL, 0, 1.0 if self.release_gil else 0.0)


cdef void _run_conv2d(void* call) noexcept nogil:
    (<Conv2dCall>call).run()


cdef void _run_depthwise_conv2d(void* call) noexcept nogil:
    (<DepthwiseConv2dCall>call).run()


def depthwise_conv2d(const int8_t[:, :, :, ::1] x not None, const int8_t[:, :, ::1] w not None,
                     const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                     const int32_t[::1] shift not None, int stride_h, int stride_w,
                     int dilation_h, int dilation_w, int pad_top, int pad_left,
                     int depth_multiplier, int pad_value, int out_zp, int act_min, int act_max,
                     int8_t[:, :, :, ::1] out not None):
    """out[n, oh, ow, o] = clamp(out_zp + MBQM(acc, m0[o], shift[o]), act_min, act_max),
    acc = bias[o] + sum_{kh, kw} x[n, ih, iw, o // M] * w[kh, kw, o] (int32, wrapping
    modulo 2^32), ih, iw and padding as in conv2d, M = depth_multiplier.

    x: int8 [N, H, W, C]; w: int8 [KH, KW, C * M] in [-127, 127]; bias, m0, shift: int32
    [C * M]; out: int8 [N, OH, OW, C * M], written in full. Other arguments as conv2d's.
    """
    DepthwiseConv2dCall(x, w, bias, m0, shift, stride_h, stride_w, dilation_h, dilation_w,
                        pad_top, pad_left, depth_multiplier, pad_value, out_zp, act_min,
                        act_max, out)()

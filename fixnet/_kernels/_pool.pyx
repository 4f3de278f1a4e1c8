# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Max and average pooling of int8 and int16 NHWC tensors (x and out of one type: the call's).

Bit-exact with ``fixnet.oracle.max_pool2d`` / ``avg_pool2d``. Private: fixnet.runtime builds
one Call object per layer (arguments checked once) and calls it in a loop.

The window of output (oh, ow) is input rows oh * stride_h - pad_top + [0, pool_h) and
columns ow * stride_w - pad_left + [0, pool_w); only in-bounds elements count (TensorFlow
semantics: padding never wins a max and is not counted in an average). Global pooling is
pool = (H, W), stride 1, no padding. The kernels take x, one ``params`` mapping with exactly
the fields of params.pxd's pool_params (POOL_PARAMS: pool_h, pool_w, stride_h, stride_w,
pad_top, pad_left), and out; the oracle takes the same mapping.

Average pooling sums a window in int32 and adds half the count to round: with n = pool_h *
pool_w, |sum| + n // 2 <= n * 128 + n // 2 for int8, n * 32768 + n // 2 for int16, which must
stay below 2^31: windows of up to 16711935 int8 elements, 65535 int16 ones (checked at entry).

A Call object is not thread-safe (AvgPool2dCall owns a scratch row): one per thread.
"""
cimport cython
from fixnet._kernels._step cimport KernelCall
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t
from libc.stddef cimport ptrdiff_t

from fixnet._kernels.acttype cimport act_t, call_bits
from fixnet._kernels.fixedpoint cimport check_params
from fixnet._kernels.params cimport pool_params

# Below this many element operations a call keeps the GIL: releasing and re-taking it would
# cost more than the work.
cdef enum:
    NOGIL_MIN_WORK = 16384


ctypedef struct PoolGeometry:
    Py_ssize_t batch, in_h, in_w, channels, out_h, out_w
    Py_ssize_t pool_h, pool_w, stride_h, stride_w, pad_top, pad_left


# ---- the loops -----------------------------------------------------------------------------

cdef inline void window_bounds(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t pool,
                               Py_ssize_t length, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the in-bounds input positions of window o along one axis (never empty:
    checked at entry)."""
    cdef Py_ssize_t start = o * stride - pad
    lo[0] = start if start > 0 else 0
    hi[0] = start + pool if start + pool < length else length


cdef inline void whole_windows(Py_ssize_t n_out, Py_ssize_t stride, Py_ssize_t pad,
                               Py_ssize_t pool, Py_ssize_t length, Py_ssize_t* lo,
                               Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs along one axis whose window lies wholly inside the input
    (o * stride - pad >= 0 and o * stride - pad + pool <= length); lo <= hi <= n_out."""
    cdef Py_ssize_t first = (pad + stride - 1) // stride
    cdef Py_ssize_t last = (length + pad - pool) // stride + 1 if length + pad >= pool else 0
    lo[0] = first if first < n_out else n_out
    hi[0] = last if last < n_out else n_out
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef extern from "maxpool.h" nogil:
    enum: MP_TILE
    void mp_window_offsets(ptrdiff_t* off, ptrdiff_t pool_h, ptrdiff_t pool_w,
                           ptrdiff_t row_len, ptrdiff_t c)
    void mp_pixel(int8_t* dst, const int8_t* image, ptrdiff_t row_len, ptrdiff_t c,
                  ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1)
    void mp_pixel_tile(int8_t* dst, const int8_t* base, const ptrdiff_t* off, ptrdiff_t n,
                       ptrdiff_t c)
    void mp_pixel16(int16_t* dst, const int16_t* image, ptrdiff_t row_len, ptrdiff_t c,
                    ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1)
    void mp_pixel_tile16(int16_t* dst, const int16_t* base, const ptrdiff_t* off, ptrdiff_t n,
                         ptrdiff_t c)


cdef inline act_t* max_pixels(act_t* dst, const act_t* image, const PoolGeometry* g,
                             Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t ow_from,
                             Py_ssize_t ow_to) noexcept nogil:
    """Outputs [ow_from, ow_to) of one row, any windows, each by its rows and columns
    (csrc/maxpool.h's mp_pixel); returns dst past them."""
    cdef Py_ssize_t c = g.channels, row_len = g.in_w * g.channels, ow, w0, w1
    for ow in range(ow_from, ow_to):
        window_bounds(ow, g.stride_w, g.pad_left, g.pool_w, g.in_w, &w0, &w1)
        if act_t is int8_t:
            mp_pixel(dst, image, row_len, c, h0, h1, w0, w1)
        else:
            mp_pixel16(dst, image, row_len, c, h0, h1, w0, w1)
        dst += c
    return dst


cdef void max_pool2d_impl(const act_t* x, act_t* out, const PoolGeometry* g) noexcept nogil:
    """out[n, oh, ow, :] = max of x[n, h, w, :] over the window's in-bounds (h, w), a vector
    of channels at a time (csrc/maxpool.h: 16 int8 or 8 int16). A row's whole windows of at
    most MP_TILE pixels: one pass over the channels each, at offsets fixed for the call
    (mp_pixel_tile); the others (clipped at an edge, or larger): by their rows and columns."""
    cdef Py_ssize_t c = g.channels, row_len = g.in_w * g.channels
    cdef Py_ssize_t n, oh, ow, h0, h1, ow_lo, ow_hi, size = g.pool_h * g.pool_w
    cdef ptrdiff_t off[MP_TILE]
    cdef bint tiles = size <= MP_TILE
    cdef const act_t* image
    cdef const act_t* base
    cdef act_t* dst = out
    whole_windows(g.out_w, g.stride_w, g.pad_left, g.pool_w, g.in_w, &ow_lo, &ow_hi)
    if tiles:
        mp_window_offsets(off, g.pool_h, g.pool_w, row_len, c)
    for n in range(g.batch):
        image = x + n * g.in_h * row_len
        for oh in range(g.out_h):
            window_bounds(oh, g.stride_h, g.pad_top, g.pool_h, g.in_h, &h0, &h1)
            if not (tiles and h1 - h0 == g.pool_h):
                dst = max_pixels(dst, image, g, h0, h1, 0, g.out_w)
                continue
            dst = max_pixels(dst, image, g, h0, h1, 0, ow_lo)
            base = image + h0 * row_len + (ow_lo * g.stride_w - g.pad_left) * c
            for ow in range(ow_lo, ow_hi):
                if act_t is int8_t:
                    mp_pixel_tile(dst, base, off, size, c)
                else:
                    mp_pixel_tile16(dst, base, off, size, c)
                base += g.stride_w * c
                dst += c
            dst = max_pixels(dst, image, g, h0, h1, ow_hi, g.out_w)


cdef void avg_pool2d_impl(const act_t* x, act_t* out, int32_t* acc,
                          const PoolGeometry* g) noexcept nogil:
    """out[n, oh, ow, :] = rounded mean of x[n, h, w, :] over the window's in-bounds (h, w),
    summed in acc[0:C] (int32; |sum| + count // 2 <= pool_h * pool_w * 2^(bits - 1) +
    pool_h * pool_w // 2 < 2^31, checked at entry)."""
    cdef Py_ssize_t c = g.channels, row_len = g.in_w * g.channels
    cdef Py_ssize_t n, oh, ow, h, w, i, h0, h1, w0, w1
    cdef const act_t* image
    cdef const act_t* src
    cdef act_t* dst = out
    cdef int32_t s, m, half
    cdef double count
    for n in range(g.batch):
        image = x + n * g.in_h * row_len
        for oh in range(g.out_h):
            window_bounds(oh, g.stride_h, g.pad_top, g.pool_h, g.in_h, &h0, &h1)
            for ow in range(g.out_w):
                window_bounds(ow, g.stride_w, g.pad_left, g.pool_w, g.in_w, &w0, &w1)
                src = image + h0 * row_len + w0 * c
                for i in range(c):
                    acc[i] = src[i]
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        if h == h0 and w == w0:
                            continue
                        src = image + h * row_len + w * c
                        for i in range(c):  # int8 (int16) -> int32 widening adds
                            acc[i] += src[i]
                # Round half away from zero: trunc((s + sign(s) * (count // 2)) / count).
                # |s| + count // 2 <= 2^(bits - 1) * count + count // 2 <= 2^31 - 1 (the
                # entry check): fits int32. The sign is applied without a branch ((half ^ m)
                # - m is half for m = 0, -half for m = -1) and the division is done in
                # double, so the loop vectorises (there is no SIMD integer division). Exact: a
                # quotient of integers below 2^53 that is not an integer is at least 1/count
                # away from one, far more than the rounding error.
                count = <double>((h1 - h0) * (w1 - w0))
                half = <int32_t>((h1 - h0) * (w1 - w0) // 2)
                for i in range(c):
                    s = acc[i]
                    m = s >> 31  # 0 if s >= 0, -1 if s < 0 (arithmetic shift)
                    dst[i] = <act_t><int32_t>(<double>(s + ((half ^ m) - m)) / count)
                dst += c


# ---- entry checks --------------------------------------------------------------------------

# The keys of a params mapping: the fields of the struct (params.pxd), in order.
cdef pool_params _pool_fields
POOL_PARAMS = tuple(<dict>_pool_fields)


cdef int check_window_axis(str kernel, str axis, Py_ssize_t n_out, Py_ssize_t length,
                           Py_ssize_t pool, Py_ssize_t stride, Py_ssize_t pad) except -1:
    """Every window along one axis must contain an in-bounds position. Window starts grow
    with the output index, so the first window (left end) and the last (right end) decide."""
    cdef str pad_name = "pad_top" if axis == "h" else "pad_left"
    cdef str dim = "height" if axis == "h" else "width"
    cdef Py_ssize_t last_start
    if n_out == 0:
        return 0
    if length == 0:
        raise ValueError(f"{kernel}: x has {dim} 0 but out has {dim} {n_out}: "
                         f"no window can contain an input element")
    if pad >= pool:
        raise ValueError(f"{kernel}: {pad_name} = {pad} >= pool_{axis} = {pool}: the first "
                         f"window would cover only padding")
    last_start = (n_out - 1) * stride - pad
    if last_start >= length:
        raise ValueError(f"{kernel}: out has {dim} {n_out}, but the window of output "
                         f"{n_out - 1} starts at input {last_start} >= {length} (x's {dim}): at "
                         f"most {(length - 1 + pad) // stride + 1} outputs for stride_{axis} = "
                         f"{stride}, {pad_name} = {pad}")
    return 0


cdef int check_pool_args(str kernel, const Py_ssize_t* xs, const pool_params* p,
                         const Py_ssize_t* os, PoolGeometry* g) except -1:
    """Raise ValueError naming the bad argument; fill g on success. xs, os: the shapes of x
    and out (NHWC)."""
    cdef int pool_h = p.pool_h, pool_w = p.pool_w, stride_h = p.stride_h, stride_w = p.stride_w
    cdef int pad_top = p.pad_top, pad_left = p.pad_left
    for name, value, least in (("pool_h", pool_h, 1), ("pool_w", pool_w, 1),
                               ("stride_h", stride_h, 1), ("stride_w", stride_w, 1),
                               ("pad_top", pad_top, 0), ("pad_left", pad_left, 0)):
        if value < least:
            raise ValueError(f"{kernel}: {name} = {value} must be >= {least}")
    if os[0] != xs[0] or os[3] != xs[3]:
        raise ValueError(f"{kernel}: out has shape ({os[0]}, {os[1]}, {os[2]}, {os[3]}), "
                         f"expected (N, OH, OW, C) with N = {xs[0]}, C = {xs[3]} from x")
    check_window_axis(kernel, "h", os[1], xs[1], pool_h, stride_h, pad_top)
    check_window_axis(kernel, "w", os[2], xs[2], pool_w, stride_w, pad_left)
    g.batch, g.in_h, g.in_w, g.channels = xs[0], xs[1], xs[2], xs[3]
    g.out_h, g.out_w = os[1], os[2]
    g.pool_h, g.pool_w, g.stride_h, g.stride_w = pool_h, pool_w, stride_h, stride_w
    g.pad_top, g.pad_left = pad_top, pad_left
    return 0


cdef Py_ssize_t pool_work(const PoolGeometry* g) noexcept:
    """Element operations of one call (an upper bound: windows are clipped at the edges)."""
    return (g.batch * g.out_h * g.out_w * g.channels
            * min(g.pool_h, g.in_h) * min(g.pool_w, g.in_w))


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class PoolCall(KernelCall):
    """Base of MaxPool2dCall and AvgPool2dCall: the params, the arrays of one activation type
    (int8 or int16: x's; out must be the same), checked once, and the window geometry."""
    cdef readonly pool_params params
    cdef readonly int bits                  # 8 or 16: the call's activation type
    cdef const int8_t[:, :, :, ::1] x8      # the arrays, kept alive: the int8 pair or the
    cdef int8_t[:, :, :, ::1] out8          # int16 pair, the other left empty
    cdef const int16_t[:, :, :, ::1] x16
    cdef int16_t[:, :, :, ::1] out16
    cdef const void* x_data
    cdef void* out_data
    cdef PoolGeometry g
    cdef bint empty

    cdef int bind(self, str kernel, object x, object params, object out) except -1:
        cdef pool_params p
        cdef Py_ssize_t xs[4]
        cdef Py_ssize_t os[4]
        cdef int i
        check_params(kernel, params, POOL_PARAMS)
        p = params
        self.bits = call_bits(kernel, (x, out), ("x", "out"))
        if self.bits == 16:
            self.x16, self.out16 = x, out
            for i in range(4):
                xs[i], os[i] = self.x16.shape[i], self.out16.shape[i]
        else:
            self.x8, self.out8 = x, out
            for i in range(4):
                xs[i], os[i] = self.x8.shape[i], self.out8.shape[i]
        check_pool_args(kernel, xs, &p, os, &self.g)
        self.params = p
        self.empty = self.g.batch * self.g.out_h * self.g.out_w * self.g.channels == 0
        if not self.empty:
            if self.bits == 16:
                self.x_data, self.out_data = &self.x16[0, 0, 0, 0], &self.out16[0, 0, 0, 0]
            else:
                self.x_data, self.out_data = &self.x8[0, 0, 0, 0], &self.out8[0, 0, 0, 0]
        self.n_tasks = 1
        self.work_share = <double>pool_work(&self.g) / NOGIL_MIN_WORK
        return 0


@cython.auto_pickle(False)
cdef class MaxPool2dCall(PoolCall):
    """max_pool2d with its arguments checked once: ``MaxPool2dCall(...)()`` runs the kernel.

    ``MaxPool2dCall(x, params, out)``; ``params`` gives back the pool_params it was built
    with, as a dict. Keeps x and out alive; calling re-reads x and rewrites out in full.
    """

    def __init__(self, x, params, out):
        self.bind("max_pool2d", x, params, out)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.empty:
            return
        if self.bits == 16:
            max_pool2d_impl(<const int16_t*>self.x_data, <int16_t*>self.out_data, &self.g)
        else:
            max_pool2d_impl(<const int8_t*>self.x_data, <int8_t*>self.out_data, &self.g)


@cython.auto_pickle(False)
cdef class AvgPool2dCall(PoolCall):
    """avg_pool2d with its arguments checked once: ``AvgPool2dCall(...)()`` runs the kernel.

    ``AvgPool2dCall(x, params, out)``; ``params`` gives back the pool_params it was built
    with, as a dict. Owns an int32 scratch row of C window sums; keeps x and out alive.
    """
    cdef int32_t* acc

    def __init__(self, x, params, out):
        self.bind("avg_pool2d", x, params, out)
        cdef int64_t size = <int64_t>self.params.pool_h * self.params.pool_w
        cdef int64_t magnitude = 128 if self.bits == 8 else 32768
        if size * magnitude + size // 2 >= (<int64_t>1 << 31):
            raise ValueError(f"avg_pool2d: pool_h * pool_w = {size} is too large: the int32 "
                             f"window sum of int{self.bits} values and its rounding term need "
                             f"pool_h * pool_w * {magnitude} + pool_h * pool_w // 2 < 2^31")
        if self.acc != NULL:  # __init__ called twice
            PyMem_Free(self.acc)
        self.acc = <int32_t*>PyMem_Malloc(max(self.g.channels, 1) * sizeof(int32_t))
        if self.acc == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.acc)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.empty:
            return
        if self.bits == 16:
            avg_pool2d_impl(<const int16_t*>self.x_data, <int16_t*>self.out_data, self.acc,
                            &self.g)
        else:
            avg_pool2d_impl(<const int8_t*>self.x_data, <int8_t*>self.out_data, self.acc,
                            &self.g)


def max_pool2d(x, params, out):
    """out[n, oh, ow, c] = max of x[n, h, w, c] over the in-bounds (h, w) of window (oh, ow).

    x: int8 or int16 [N, H, W, C]; out: [N, OH, OW, C] of x's type (OH, OW taken from out).
    params: a mapping
    with exactly the keys POOL_PARAMS: pool_h, pool_w, stride_h, stride_w >= 1; pad_top,
    pad_left >= 0: input positions before the first, so window (oh, ow) starts at row
    oh * stride_h - pad_top, column ow * stride_w - pad_left.
    Raises ValueError if a window has no in-bounds element.
    """
    MaxPool2dCall(x, params, out)()


def avg_pool2d(x, params, out):
    """out[n, oh, ow, c] = mean of x[n, h, w, c] over the in-bounds (h, w) of window (oh, ow),
    rounded half away from zero; input and output share scale and zero point.

    Arguments as max_pool2d; also n * 128 + n // 2 < 2^31 for int8, n * 32768 + n // 2 < 2^31
    for int16, n = pool_h * pool_w (the int32 window sum and its rounding term: up to 16711935
    int8 or 65535 int16 elements a window).
    """
    AvgPool2dCall(x, params, out)()

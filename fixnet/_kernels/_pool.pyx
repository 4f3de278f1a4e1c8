# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Max and average pooling of int8 NHWC tensors.

Bit-exact with ``fixnet.oracle.max_pool2d`` / ``avg_pool2d``. Private: fixnet.runtime builds
one Call object per layer (arguments checked once) and calls it in a loop.

The window of output (oh, ow) is input rows oh * stride_h - pad_top + [0, pool_h) and
columns ow * stride_w - pad_left + [0, pool_w); only in-bounds elements count (TensorFlow
semantics: padding never wins a max and is not counted in an average). Global pooling is
pool = (H, W), stride 1, no padding. The kernels take x, one ``params`` mapping with exactly
the fields of params.pxd's pool_params (POOL_PARAMS: pool_h, pool_w, stride_h, stride_w,
pad_top, pad_left), and out; the oracle takes the same mapping.

A Call object is not thread-safe (AvgPool2dCall owns a scratch row): one per thread.
"""
cimport cython
from fixnet._kernels._step cimport KernelCall
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int32_t, int64_t
from libc.string cimport memcpy
from libc.stddef cimport ptrdiff_t

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


cdef extern from "maxpool.h" nogil:
    void mp_pixel(int8_t* dst, const int8_t* image, ptrdiff_t row_len, ptrdiff_t c,
                  ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1)


cdef void max_pool2d_impl(const int8_t* x, int8_t* out, const PoolGeometry* g) noexcept nogil:
    """out[n, oh, ow, :] = max of x[n, h, w, :] over the window's in-bounds (h, w), 16
    channels per vector (csrc/maxpool.h)."""
    cdef Py_ssize_t c = g.channels, row_len = g.in_w * g.channels
    cdef Py_ssize_t n, oh, ow, h0, h1, w0, w1
    cdef const int8_t* image
    cdef int8_t* dst = out
    for n in range(g.batch):
        image = x + n * g.in_h * row_len
        for oh in range(g.out_h):
            window_bounds(oh, g.stride_h, g.pad_top, g.pool_h, g.in_h, &h0, &h1)
            for ow in range(g.out_w):
                window_bounds(ow, g.stride_w, g.pad_left, g.pool_w, g.in_w, &w0, &w1)
                mp_pixel(dst, image, row_len, c, h0, h1, w0, w1)
                dst += c


cdef void avg_pool2d_impl(const int8_t* x, int8_t* out, int32_t* acc,
                          const PoolGeometry* g) noexcept nogil:
    """out[n, oh, ow, :] = rounded mean of x[n, h, w, :] over the window's in-bounds (h, w),
    summed in acc[0:C] (int32; |sum| <= pool_h * pool_w * 128 < 2^31, checked at entry)."""
    cdef Py_ssize_t c = g.channels, row_len = g.in_w * g.channels
    cdef Py_ssize_t n, oh, ow, h, w, i, h0, h1, w0, w1
    cdef const int8_t* image
    cdef const int8_t* src
    cdef int8_t* dst = out
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
                        for i in range(c):  # int8 -> int32 widening adds
                            acc[i] += src[i]
                # Round half away from zero: trunc((s + sign(s) * (count // 2)) / count).
                # |s| + count // 2 <= 128.5 * count < 2^31: fits int32. The sign is applied
                # without a branch ((half ^ m) - m is half for m = 0, -half for m = -1) and
                # the division is done in double, so the loop vectorises (there is no SIMD
                # integer division). Exact: a quotient of integers below 2^53 that is not an
                # integer is at least 1/count away from one, far more than the rounding error.
                count = <double>((h1 - h0) * (w1 - w0))
                half = <int32_t>((h1 - h0) * (w1 - w0) // 2)
                for i in range(c):
                    s = acc[i]
                    m = s >> 31  # 0 if s >= 0, -1 if s < 0 (arithmetic shift)
                    dst[i] = <int8_t><int32_t>(<double>(s + ((half ^ m) - m)) / count)
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


cdef int check_pool_args(str kernel, const int8_t[:, :, :, ::1] x, const pool_params* p,
                         int8_t[:, :, :, ::1] out, PoolGeometry* g) except -1:
    """Raise ValueError naming the bad argument; fill g on success."""
    cdef int pool_h = p.pool_h, pool_w = p.pool_w, stride_h = p.stride_h, stride_w = p.stride_w
    cdef int pad_top = p.pad_top, pad_left = p.pad_left
    for name, value, least in (("pool_h", pool_h, 1), ("pool_w", pool_w, 1),
                               ("stride_h", stride_h, 1), ("stride_w", stride_w, 1),
                               ("pad_top", pad_top, 0), ("pad_left", pad_left, 0)):
        if value < least:
            raise ValueError(f"{kernel}: {name} = {value} must be >= {least}")
    if out.shape[0] != x.shape[0] or out.shape[3] != x.shape[3]:
        raise ValueError(f"{kernel}: out has shape ({out.shape[0]}, {out.shape[1]}, "
                         f"{out.shape[2]}, {out.shape[3]}), expected (N, OH, OW, C) with "
                         f"N = {x.shape[0]}, C = {x.shape[3]} from x")
    check_window_axis(kernel, "h", out.shape[1], x.shape[1], pool_h, stride_h, pad_top)
    check_window_axis(kernel, "w", out.shape[2], x.shape[2], pool_w, stride_w, pad_left)
    g.batch, g.in_h, g.in_w, g.channels = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    g.out_h, g.out_w = out.shape[1], out.shape[2]
    g.pool_h, g.pool_w, g.stride_h, g.stride_w = pool_h, pool_w, stride_h, stride_w
    g.pad_top, g.pad_left = pad_top, pad_left
    return 0


cdef Py_ssize_t pool_work(const PoolGeometry* g) noexcept:
    """Element operations of one call (an upper bound: windows are clipped at the edges)."""
    return (g.batch * g.out_h * g.out_w * g.channels
            * min(g.pool_h, g.in_h) * min(g.pool_w, g.in_w))


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class MaxPool2dCall(KernelCall):
    """max_pool2d with its arguments checked once: ``MaxPool2dCall(...)()`` runs the kernel.

    ``MaxPool2dCall(x, params, out)``; ``params`` gives back the pool_params it was built
    with, as a dict. Keeps x and out alive; calling re-reads x and rewrites out in full.
    """
    cdef readonly pool_params params
    cdef const int8_t[:, :, :, ::1] x
    cdef int8_t[:, :, :, ::1] out
    cdef const int8_t* x_data
    cdef int8_t* out_data
    cdef PoolGeometry g
    cdef bint empty

    def __init__(self, const int8_t[:, :, :, ::1] x not None, params,
                 int8_t[:, :, :, ::1] out not None):
        cdef pool_params p
        check_params("max_pool2d", params, POOL_PARAMS)
        p = params
        check_pool_args("max_pool2d", x, &p, out, &self.g)
        self.x, self.out, self.params = x, out, p
        self.empty = self.g.batch * self.g.out_h * self.g.out_w * self.g.channels == 0
        if not self.empty:
            self.x_data, self.out_data = &x[0, 0, 0, 0], &out[0, 0, 0, 0]
        self.n_tasks = 1
        self.work_share = <double>pool_work(&self.g) / NOGIL_MIN_WORK

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if not self.empty:
            max_pool2d_impl(self.x_data, self.out_data, &self.g)


@cython.auto_pickle(False)
cdef class AvgPool2dCall(KernelCall):
    """avg_pool2d with its arguments checked once: ``AvgPool2dCall(...)()`` runs the kernel.

    ``AvgPool2dCall(x, params, out)``; ``params`` gives back the pool_params it was built
    with, as a dict. Owns an int32 scratch row of C window sums; keeps x and out alive.
    """
    cdef readonly pool_params params
    cdef const int8_t[:, :, :, ::1] x
    cdef int8_t[:, :, :, ::1] out
    cdef const int8_t* x_data
    cdef int8_t* out_data
    cdef int32_t* acc
    cdef PoolGeometry g
    cdef bint empty

    def __init__(self, const int8_t[:, :, :, ::1] x not None, params,
                 int8_t[:, :, :, ::1] out not None):
        cdef pool_params p
        check_params("avg_pool2d", params, POOL_PARAMS)
        p = params
        check_pool_args("avg_pool2d", x, &p, out, &self.g)
        if <int64_t>p.pool_h * p.pool_w * 128 >= (<int64_t>1 << 31):
            raise ValueError(f"avg_pool2d: pool_h * pool_w = {<int64_t>p.pool_h * p.pool_w} is "
                             f"too large: the int32 window sum needs pool_h * pool_w * 128 < 2^31")
        self.x, self.out, self.params = x, out, p
        self.empty = self.g.batch * self.g.out_h * self.g.out_w * self.g.channels == 0
        if not self.empty:
            self.x_data, self.out_data = &x[0, 0, 0, 0], &out[0, 0, 0, 0]
        if self.acc != NULL:  # __init__ called twice
            PyMem_Free(self.acc)
        self.acc = <int32_t*>PyMem_Malloc(max(self.g.channels, 1) * sizeof(int32_t))
        if self.acc == NULL:
            raise MemoryError()
        self.n_tasks = 1
        self.work_share = <double>pool_work(&self.g) / NOGIL_MIN_WORK

    def __dealloc__(self):
        PyMem_Free(self.acc)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if not self.empty:
            avg_pool2d_impl(self.x_data, self.out_data, self.acc, &self.g)


def max_pool2d(const int8_t[:, :, :, ::1] x not None, params,
               int8_t[:, :, :, ::1] out not None):
    """out[n, oh, ow, c] = max of x[n, h, w, c] over the in-bounds (h, w) of window (oh, ow).

    x: int8 [N, H, W, C]; out: int8 [N, OH, OW, C] (OH, OW taken from out). params: a mapping
    with exactly the keys POOL_PARAMS: pool_h, pool_w, stride_h, stride_w >= 1; pad_top,
    pad_left >= 0: input positions before the first, so window (oh, ow) starts at row
    oh * stride_h - pad_top, column ow * stride_w - pad_left.
    Raises ValueError if a window has no in-bounds element.
    """
    MaxPool2dCall(x, params, out)()


def avg_pool2d(const int8_t[:, :, :, ::1] x not None, params,
               int8_t[:, :, :, ::1] out not None):
    """out[n, oh, ow, c] = mean of x[n, h, w, c] over the in-bounds (h, w) of window (oh, ow),
    rounded half away from zero; input and output share scale and zero point.

    Arguments as max_pool2d; also pool_h * pool_w * 128 < 2^31 (int32 window sums).
    """
    AvgPool2dCall(x, params, out)()

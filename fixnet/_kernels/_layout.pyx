# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Data movement on int8 and int16 tensors (x and out of one type: the call's): requantize a
block into a wider output (Concatenate along any axis) and pad the H, W axes of NHWC tensors
with the zero point (0 for int16).

Bit-exact with ``fixnet.oracle.requantize_into`` / ``pad_nhwc``. Private: fixnet.runtime
builds one Call object per layer (arguments checked once) and calls it in a loop. pad_nhwc
takes x, one ``params`` mapping with exactly the fields of params.pxd's pad_params
(PAD_PARAMS: top, bottom, left, right, value), and out; the oracle takes the same mapping.
"""
cimport cython
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport act_t, call_bits, check_act_value, check_act_zp
from fixnet._kernels.fixedpoint cimport (
    check_multipliers,
    check_params,
    requant_constants,
    requantize_accumulator,
    requantize_precomputed,
)
from fixnet._kernels.params cimport pad_params

# Below this many bytes a call keeps the GIL: releasing it would cost more than the work.
cdef enum:
    NOGIL_MIN_SIZE = 65536


# ---- the loops -----------------------------------------------------------------------------

cdef void requantize_into_impl(const int8_t* x, Py_ssize_t outer, Py_ssize_t n, int8_t* out,
                               Py_ssize_t total, Py_ssize_t offset,
                               const int8_t* table) noexcept nogil:
    """out[o, offset + i] = table[x[o, i] + 128], or x[o, i] itself if table is NULL."""
    cdef Py_ssize_t o, i
    cdef const int8_t* src
    cdef int8_t* dst
    for o in range(outer):
        src = x + o * n
        dst = out + o * total + offset
        if table == NULL:
            memcpy(dst, src, n)
        else:
            for i in range(n):
                dst[i] = table[<int>src[i] + 128]


cdef void requantize_into16_impl(const int16_t* x, Py_ssize_t outer, Py_ssize_t n,
                                 int16_t* out, Py_ssize_t total, Py_ssize_t offset, int32_t m0,
                                 int shift) noexcept nogil:
    """out[o, offset + i] = clamp(MBQM(x[o, i], m0, shift), -32768, 32767) (zero points 0), or
    x[o, i] itself if m0 is 0. The branch-free form of the multiplier (fixedpoint.pxd's
    requantize_precomputed): an int16 input has 65536 values, too many for a table."""
    cdef Py_ssize_t o, i
    cdef int64_t nudge, neg_adjust, total_shift, v
    cdef int32_t left
    cdef const int16_t* src
    cdef int16_t* dst
    requant_constants(shift, &nudge, &neg_adjust, &total_shift, &left)
    for o in range(outer):
        src = x + o * n
        dst = out + o * total + offset
        if m0 == 0:
            memcpy(dst, src, n * sizeof(int16_t))
            continue
        for i in range(n):
            # |x| * 2^left <= 2^15 * 2^30 < 2^63 (shifted as unsigned: defined for x < 0);
            # saturated to int32 as the rule does
            v = <int64_t>(<uint64_t><int64_t>src[i] << left)
            v = 2147483647 if v > 2147483647 else v
            v = -2147483648 if v < -2147483648 else v
            v = requantize_precomputed(v, m0, nudge, neg_adjust, total_shift)
            v = -32768 if v < -32768 else v
            dst[i] = <int16_t>(32767 if v > 32767 else v)


cdef inline void fill(act_t* dst, act_t value, Py_ssize_t count) noexcept nogil:
    """dst[0:count] = value (int8: memset; int16: a loop, which vectorises)."""
    cdef Py_ssize_t i
    if act_t is int8_t:
        memset(dst, value, count)
    else:
        for i in range(count):
            dst[i] = value


cdef void pad_nhwc_impl(const act_t* x, Py_ssize_t batch, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t c, Py_ssize_t top, Py_ssize_t bottom, Py_ssize_t left,
                        Py_ssize_t right, act_t value, act_t* out) noexcept nogil:
    """out[n] = x[n] framed by top/bottom rows and left/right columns of value.

    out is written front to back: the gap between two interior rows (right border of one,
    left border of the next) is one contiguous run.
    """
    cdef Py_ssize_t row_in = w * c, row_out = (w + left + right) * c
    cdef Py_ssize_t n, r
    cdef act_t* dst = out
    cdef const act_t* src = x
    for n in range(batch):
        if h == 0:  # no interior rows: the whole image is border
            fill(dst, value, (top + bottom) * row_out)
            dst += (top + bottom) * row_out
            continue
        fill(dst, value, top * row_out + left * c)
        dst += top * row_out + left * c
        for r in range(h):
            if row_in != 0:  # W = 0: x has no data pointer to copy from
                memcpy(dst, src, row_in * sizeof(act_t))
            dst += row_in
            src += row_in
            if r + 1 < h:
                fill(dst, value, (right + left) * c)
                dst += (right + left) * c
        fill(dst, value, right * c + bottom * row_out)
        dst += right * c + bottom * row_out


# ---- Python entry points -------------------------------------------------------------------

# The keys of pad_nhwc's params mapping: the fields of the struct (params.pxd), in order.
cdef pad_params _pad_fields
PAD_PARAMS = tuple(<dict>_pad_fields)


@cython.auto_pickle(False)
cdef class RequantizeIntoCall(KernelCall):
    """requantize_into with its arguments checked once: ``RequantizeIntoCall(...)()`` runs it.

    int8: holds the 256-entry table clamp(out_zp + MBQM(v - in_zp, m0, shift), -128, 127)
    (none for m0 == 0, a plain copy); int16: the rule on every element. Keeps x and out alive.
    """
    cdef readonly int bits                 # 8 or 16: the call's activation type
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef const int16_t[:, ::1] x16
    cdef int16_t[:, ::1] out16
    cdef Py_ssize_t outer, n, total, offset
    cdef int32_t m0
    cdef int shift
    cdef int8_t table[256]
    cdef bint copy

    def __init__(self, x, int in_zp, int m0, int shift, int out_zp, out, Py_ssize_t offset):
        cdef int32_t m0_32 = m0, shift_32 = shift
        cdef int v
        self.bits = call_bits("requantize_into", (x, out), ("x", "out"))
        if self.bits == 16:
            self.x16, self.out16 = x, out
            self.outer, self.n = self.x16.shape[0], self.x16.shape[1]
            out_outer, self.total = self.out16.shape[0], self.out16.shape[1]
        else:
            self.x, self.out = x, out
            self.outer, self.n = self.x.shape[0], self.x.shape[1]
            out_outer, self.total = self.out.shape[0], self.out.shape[1]
        if out_outer != self.outer:
            raise ValueError(f"requantize_into: out has shape ({out_outer}, {self.total}), "
                             f"expected ({self.outer}, total): the outer size of x")
        # (not offset + n > total: that can overflow)
        if offset < 0 or offset > self.total - self.n:
            raise ValueError(f"requantize_into: offset = {offset} puts x's {self.n} columns at "
                             f"[{offset}, {offset + self.n}), outside out's {self.total} "
                             f"columns")
        check_act_zp("requantize_into", "in_zp", in_zp, self.bits)
        check_act_zp("requantize_into", "out_zp", out_zp, self.bits)
        try:
            check_multipliers("requantize_into", &m0_32, &shift_32, 1)
        except ValueError as e:
            raise ValueError(str(e).replace("m0[0]", "m0").replace("shift[0]", "shift")) from None
        self.copy = m0 == 0
        if self.copy and in_zp != out_zp:
            raise ValueError(f"requantize_into: m0 = 0 means a plain copy (same quantization), "
                             f"but in_zp = {in_zp} != out_zp = {out_zp}")
        if self.bits == 8 and not self.copy:
            for v in range(-128, 128):
                self.table[v + 128] = requantize_accumulator(v - in_zp, m0_32, shift_32, out_zp,
                                                             -128, 127)
        self.m0, self.shift, self.offset = m0, shift, offset
        self.n_tasks = 1
        self.work_share = <double>self.outer * self.n * (self.bits // 8) / NOGIL_MIN_SIZE

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.outer == 0 or self.n == 0:
            return
        if self.bits == 16:
            requantize_into16_impl(&self.x16[0, 0], self.outer, self.n, &self.out16[0, 0],
                                   self.total, self.offset, self.m0, self.shift)
        else:
            requantize_into_impl(&self.x[0, 0], self.outer, self.n, &self.out[0, 0], self.total,
                                 self.offset, NULL if self.copy else self.table)


@cython.auto_pickle(False)
cdef class PadNhwcCall(KernelCall):
    """pad_nhwc with its arguments checked once: ``PadNhwcCall(...)()`` runs the kernel."""
    cdef readonly pad_params params     # PadNhwcCall(x, params, out): given back as a dict
    cdef readonly int bits              # 8 or 16: the call's activation type
    cdef const int8_t[:, :, :, ::1] x
    cdef int8_t[:, :, :, ::1] out
    cdef const int16_t[:, :, :, ::1] x16
    cdef int16_t[:, :, :, ::1] out16
    cdef Py_ssize_t xs[4]               # x's shape
    cdef void* out_data
    cdef bint empty

    def __init__(self, x, params, out):
        cdef pad_params p
        cdef Py_ssize_t os[4]
        cdef int i
        check_params("pad_nhwc", params, PAD_PARAMS)
        p = params
        self.bits = call_bits("pad_nhwc", (x, out), ("x", "out"))
        if self.bits == 16:
            self.x16, self.out16 = x, out
            for i in range(4):
                self.xs[i], os[i] = self.x16.shape[i], self.out16.shape[i]
        else:
            self.x, self.out = x, out
            for i in range(4):
                self.xs[i], os[i] = self.x.shape[i], self.out.shape[i]
        for name, pad in (("top", p.top), ("bottom", p.bottom), ("left", p.left),
                          ("right", p.right)):
            if pad < 0:
                raise ValueError(f"pad_nhwc: {name} = {pad} must be >= 0")
        check_act_value("pad_nhwc", "value", p.value, self.bits)
        expected = (self.xs[0], self.xs[1] + p.top + p.bottom, self.xs[2] + p.left + p.right,
                    self.xs[3])
        actual = (os[0], os[1], os[2], os[3])
        if actual != expected:
            raise ValueError(f"pad_nhwc: out has shape {actual}, expected "
                             f"{expected} = (N, H + top + bottom, W + left + right, C)")
        self.params = p
        cdef Py_ssize_t out_size = os[0] * os[1] * os[2] * os[3]
        self.empty = out_size == 0
        if not self.empty:
            self.out_data = &self.out16[0, 0, 0, 0] if self.bits == 16 else &self.out[0, 0, 0, 0]
        self.n_tasks = 1
        self.work_share = <double>out_size * (self.bits // 8) / NOGIL_MIN_SIZE

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.empty:
            return
        # x may be empty (H or W = 0) while out is not: pass no pointer into it then.
        cdef bint has_x = self.xs[1] * self.xs[2] * self.xs[3] != 0
        cdef const pad_params* p = &self.params
        if self.bits == 16:
            pad_nhwc_impl(&self.x16[0, 0, 0, 0] if has_x else NULL, self.xs[0], self.xs[1],
                          self.xs[2], self.xs[3], p.top, p.bottom, p.left, p.right,
                          <int16_t>p.value, <int16_t*>self.out_data)
        else:
            pad_nhwc_impl(&self.x[0, 0, 0, 0] if has_x else NULL, self.xs[0], self.xs[1],
                          self.xs[2], self.xs[3], p.top, p.bottom, p.left, p.right,
                          <int8_t>p.value, <int8_t*>self.out_data)


def requantize_into(x, int in_zp, int m0, int shift, int out_zp, out, Py_ssize_t offset):
    """out[o, offset + i] = clamp(out_zp + MBQM(x[o, i] - in_zp, m0, shift)) to the type's
    range ([-128, 127] for int8, [-32768, 32767] for int16, zero points 0).

    x: int8 or int16 [outer, n]; out: [outer, total] of x's type, 0 <= offset <= total - n.
    m0 == 0 means same quantization (in_zp must equal out_zp): the rows are copied.
    Concatenate along any axis is one call per input, each viewed as [outer, axis_len * inner].
    """
    RequantizeIntoCall(x, in_zp, m0, shift, out_zp, out, offset)()


def pad_nhwc(x, params, out):
    """out = x framed with value (the zero point) on the H and W axes.

    x: int8 or int16 [N, H, W, C]; params: a mapping with exactly the keys PAD_PARAMS (top,
    bottom, left, right >= 0; value a code of x's type: the zero point, 0 for int16); out:
    [N, H + top + bottom, W + left + right, C] of x's type.
    """
    PadNhwcCall(x, params, out)()

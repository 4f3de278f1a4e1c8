# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Data movement on int8 tensors: requantize a block into a wider output (Concatenate along
any axis) and pad the H, W axes of NHWC tensors with the zero point.

Bit-exact with ``fixnet.oracle.requantize_into`` / ``pad_nhwc``. Private: fixnet.runtime
builds one Call object per layer (arguments checked once) and calls it in a loop. pad_nhwc
takes x, one ``params`` mapping with exactly the fields of params.pxd's pad_params
(PAD_PARAMS: top, bottom, left, right, value), and out; the oracle takes the same mapping.
"""
cimport cython
from libc.stdint cimport int8_t, int32_t
from libc.string cimport memcpy, memset

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport check_multipliers, requantize_accumulator
from fixnet._kernels.fixedpoint cimport check_int8, check_params
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


cdef void pad_nhwc_impl(const int8_t* x, Py_ssize_t batch, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t c, Py_ssize_t top, Py_ssize_t bottom, Py_ssize_t left,
                        Py_ssize_t right, int8_t value, int8_t* out) noexcept nogil:
    """out[n] = x[n] framed by top/bottom rows and left/right columns of value.

    out is written front to back: the gap between two interior rows (right border of one,
    left border of the next) is one contiguous run.
    """
    cdef Py_ssize_t row_in = w * c, row_out = (w + left + right) * c
    cdef Py_ssize_t n, r
    cdef int8_t* dst = out
    cdef const int8_t* src = x
    for n in range(batch):
        if h == 0:  # no interior rows: the whole image is border
            memset(dst, value, (top + bottom) * row_out)
            dst += (top + bottom) * row_out
            continue
        memset(dst, value, top * row_out + left * c)
        dst += top * row_out + left * c
        for r in range(h):
            if row_in != 0:  # W = 0: x has no data pointer to copy from
                memcpy(dst, src, row_in)
            dst += row_in
            src += row_in
            if r + 1 < h:
                memset(dst, value, (right + left) * c)
                dst += (right + left) * c
        memset(dst, value, right * c + bottom * row_out)
        dst += right * c + bottom * row_out


# ---- Python entry points -------------------------------------------------------------------

# The keys of pad_nhwc's params mapping: the fields of the struct (params.pxd), in order.
cdef pad_params _pad_fields
PAD_PARAMS = tuple(<dict>_pad_fields)


@cython.auto_pickle(False)
cdef class RequantizeIntoCall(KernelCall):
    """requantize_into with its arguments checked once: ``RequantizeIntoCall(...)()`` runs it.

    Holds the 256-entry table clamp(out_zp + MBQM(v - in_zp, m0, shift), -128, 127) (none
    for m0 == 0, a plain copy); keeps x and out alive.
    """
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef Py_ssize_t offset
    cdef int8_t table[256]
    cdef bint copy

    def __init__(self, const int8_t[:, ::1] x not None, int in_zp, int m0, int shift, int out_zp,
                 int8_t[:, ::1] out not None, Py_ssize_t offset):
        cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], total = out.shape[1]
        cdef int32_t m0_32 = m0, shift_32 = shift
        cdef int v
        if out.shape[0] != outer:
            raise ValueError(f"requantize_into: out has shape ({out.shape[0]}, {total}), "
                             f"expected ({outer}, total): the outer size of x")
        if offset < 0 or offset > total - n:  # (not offset + n > total: that can overflow)
            raise ValueError(f"requantize_into: offset = {offset} puts x's {n} columns at "
                             f"[{offset}, {offset + n}), outside out's {total} columns")
        for name, zp in (("in_zp", in_zp), ("out_zp", out_zp)):
            if not -128 <= zp <= 127:
                raise ValueError(f"requantize_into: {name} = {zp} is outside the int8 range "
                                 f"[-128, 127]")
        try:
            check_multipliers("requantize_into", &m0_32, &shift_32, 1)
        except ValueError as e:
            raise ValueError(str(e).replace("m0[0]", "m0").replace("shift[0]", "shift")) from None
        self.copy = m0 == 0
        if self.copy and in_zp != out_zp:
            raise ValueError(f"requantize_into: m0 = 0 means a plain copy (same quantization), "
                             f"but in_zp = {in_zp} != out_zp = {out_zp}")
        if not self.copy:
            for v in range(-128, 128):
                self.table[v + 128] = requantize_accumulator(v - in_zp, m0_32, shift_32, out_zp,
                                                             -128, 127)
        self.x, self.out, self.offset = x, out, offset
        self.n_tasks = 1
        self.work_share = <double>self.x.shape[0] * self.x.shape[1] / NOGIL_MIN_SIZE

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t outer = self.x.shape[0], n = self.x.shape[1]
        if outer == 0 or n == 0:
            return
        requantize_into_impl(&self.x[0, 0], outer, n, &self.out[0, 0], self.out.shape[1],
                             self.offset, NULL if self.copy else self.table)


@cython.auto_pickle(False)
cdef class PadNhwcCall(KernelCall):
    """pad_nhwc with its arguments checked once: ``PadNhwcCall(...)()`` runs the kernel."""
    cdef readonly pad_params params     # PadNhwcCall(x, params, out): given back as a dict
    cdef const int8_t[:, :, :, ::1] x
    cdef int8_t[:, :, :, ::1] out
    cdef bint empty

    def __init__(self, const int8_t[:, :, :, ::1] x not None, params,
                 int8_t[:, :, :, ::1] out not None):
        cdef pad_params p
        check_params("pad_nhwc", params, PAD_PARAMS)
        p = params
        for name, pad in (("top", p.top), ("bottom", p.bottom), ("left", p.left),
                          ("right", p.right)):
            if pad < 0:
                raise ValueError(f"pad_nhwc: {name} = {pad} must be >= 0")
        check_int8("pad_nhwc", "value", p.value)
        expected = (x.shape[0], x.shape[1] + p.top + p.bottom, x.shape[2] + p.left + p.right,
                    x.shape[3])
        actual = (out.shape[0], out.shape[1], out.shape[2], out.shape[3])
        if actual != expected:
            raise ValueError(f"pad_nhwc: out has shape {actual}, expected "
                             f"{expected} = (N, H + top + bottom, W + left + right, C)")
        self.x, self.out, self.params = x, out, p
        cdef Py_ssize_t out_size = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3]
        self.empty = out_size == 0
        self.n_tasks = 1
        self.work_share = <double>out_size / NOGIL_MIN_SIZE

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.empty:
            return
        # x may be empty (H or W = 0) while out is not: pass no pointer into it then.
        cdef const int8_t* x_data = NULL
        if self.x.shape[1] * self.x.shape[2] * self.x.shape[3] != 0:
            x_data = &self.x[0, 0, 0, 0]
        pad_nhwc_impl(x_data, self.x.shape[0], self.x.shape[1], self.x.shape[2],
                      self.x.shape[3], self.params.top, self.params.bottom,
                      self.params.left, self.params.right, <int8_t>self.params.value,
                      &self.out[0, 0, 0, 0])


def requantize_into(const int8_t[:, ::1] x not None, int in_zp, int m0, int shift, int out_zp,
                    int8_t[:, ::1] out not None, Py_ssize_t offset):
    """out[o, offset + i] = clamp(out_zp + MBQM(x[o, i] - in_zp, m0, shift), -128, 127).

    x: int8 [outer, n]; out: int8 [outer, total], 0 <= offset <= total - n. m0 == 0 means
    same quantization (in_zp must equal out_zp): the rows are copied. Concatenate along any
    axis is one call per input, each viewed as [outer, axis_len * inner].
    """
    RequantizeIntoCall(x, in_zp, m0, shift, out_zp, out, offset)()


def pad_nhwc(const int8_t[:, :, :, ::1] x not None, params,
             int8_t[:, :, :, ::1] out not None):
    """out = x framed with value (the zero point) on the H and W axes.

    x: int8 [N, H, W, C]; params: a mapping with exactly the keys PAD_PARAMS (top, bottom,
    left, right >= 0; value int8); out: int8 [N, H + top + bottom, W + left + right, C].
    """
    PadNhwcCall(x, params, out)()

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PReLU on int8 or int16 activations (x and out of one type; int16: zero points 0): a
learned int8 slope per element for negative inputs.

Bit-exact with ``fixnet.oracle.prelu``, which takes the same arguments. Private:
fixnet.runtime plans the calls. The kernel takes x, alpha, one ``params`` mapping with exactly
the fields of params.pxd's prelu_params (PRELU_PARAMS: in_zp, pos_m0, pos_shift, neg_m0,
neg_shift, out_zp, act_min, act_max), and out.
"""
from libc.stdint cimport int8_t, int16_t, int32_t

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport (
    act_t,
    call_bits,
    check_act_output_range,
    check_act_zp,
    requantize_clamped,
)
from fixnet._kernels.fixedpoint cimport check_multipliers, check_params
from fixnet._kernels.params cimport prelu_params

# The keys of a params mapping: the fields of the struct (params.pxd), in order.
cdef prelu_params _prelu_fields
PRELU_PARAMS = tuple(<dict>_prelu_fields)


cdef void prelu_impl(const act_t* x, const int8_t* alpha, Py_ssize_t outer, Py_ssize_t inner,
                     int in_zp, int32_t pos_m0, int pos_shift, int32_t neg_m0, int neg_shift,
                     int out_zp, int act_min, int act_max, act_t* out) noexcept nogil:
    """|v * alpha| <= 255 * 128 (int8) or 32768 * 128 (int16): int32."""
    cdef Py_ssize_t o, i
    cdef int32_t v
    for o in range(outer):
        for i in range(inner):
            v = <int32_t>x[o * inner + i] - in_zp
            if v >= 0:
                out[o * inner + i] = <act_t>requantize_clamped(v, pos_m0, pos_shift, out_zp,
                                                               act_min, act_max)
            else:
                out[o * inner + i] = <act_t>requantize_clamped(v * <int32_t>alpha[i], neg_m0,
                                                               neg_shift, out_zp, act_min,
                                                               act_max)


cdef class PreluCall(KernelCall):
    """out[o, i] = clamp(out_zp + MBQM(v, pos_m0, pos_shift)) where v = x[o, i] - in_zp >= 0,
    clamp(out_zp + MBQM(v * alpha[i], neg_m0, neg_shift)) where v < 0.

    x, out: int8 or int16 [outer, inner], one type; alpha: int8 [inner], the slopes at their
    own scale (neg_m0/neg_shift carry in_scale * alpha_scale / out_scale). |v * alpha| <=
    255 * 128 (int8), 32768 * 128 (int16). params: a mapping with exactly the keys
    PRELU_PARAMS; ``params`` gives it back as a dict.
    """
    cdef readonly int bits              # 8 or 16: the activation type of x and out
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef const int16_t[:, ::1] x16
    cdef int16_t[:, ::1] out16
    cdef const int8_t[::1] alpha
    cdef Py_ssize_t outer, inner
    cdef readonly prelu_params params

    def __init__(self, x, const int8_t[::1] alpha not None, params, out):
        cdef int32_t m[2]
        cdef int32_t s[2]
        cdef prelu_params p
        cdef Py_ssize_t out_outer, out_inner
        check_params("prelu", params, PRELU_PARAMS)
        p = params
        self.bits = call_bits("prelu", (x, out), ("x", "out"))
        if self.bits == 16:
            self.x16, self.out16 = x, out
            self.outer, self.inner = self.x16.shape[0], self.x16.shape[1]
            out_outer, out_inner = self.out16.shape[0], self.out16.shape[1]
        else:
            self.x, self.out = x, out
            self.outer, self.inner = self.x.shape[0], self.x.shape[1]
            out_outer, out_inner = self.out.shape[0], self.out.shape[1]
        if alpha.shape[0] != self.inner:
            raise ValueError(f"prelu: alpha has length {alpha.shape[0]}, expected x.shape[1] = "
                             f"{self.inner}")
        if out_outer != self.outer or out_inner != self.inner:
            raise ValueError(f"prelu: out has shape ({out_outer}, {out_inner}), expected "
                             f"({self.outer}, {self.inner})")
        check_act_zp("prelu", "in_zp", p.in_zp, self.bits)
        check_act_output_range("prelu", p.out_zp, p.act_min, p.act_max, self.bits)
        m[0], m[1], s[0], s[1] = p.pos_m0, p.neg_m0, p.pos_shift, p.neg_shift
        check_multipliers("prelu", m, s, 2)
        self.alpha, self.params = alpha, p
        self.n_tasks = 1
        # small: releasing the GIL costs more than it saves
        self.work_share = <double>self.outer * self.inner / 65536

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.outer == 0 or self.inner == 0 or first >= last:
            return
        cdef const prelu_params* p = &self.params
        if self.bits == 16:
            prelu_impl(&self.x16[0, 0], &self.alpha[0], self.outer, self.inner, p.in_zp,
                       p.pos_m0, p.pos_shift, p.neg_m0, p.neg_shift, p.out_zp, p.act_min,
                       p.act_max, &self.out16[0, 0])
        else:
            prelu_impl(&self.x[0, 0], &self.alpha[0], self.outer, self.inner, p.in_zp,
                       p.pos_m0, p.pos_shift, p.neg_m0, p.neg_shift, p.out_zp, p.act_min,
                       p.act_max, &self.out[0, 0])


def prelu(x, alpha, params, out):
    """See PreluCall."""
    PreluCall(x, alpha, params, out)()

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PReLU on int8: a learned slope per element for negative inputs.

Bit-exact with ``fixnet.oracle.prelu``. Private: fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t, int32_t

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport (
    check_multipliers,
    check_output_range,
    requantize_accumulator,
)


cdef void prelu_impl(const int8_t* x, const int8_t* alpha, Py_ssize_t outer, Py_ssize_t inner,
                     int in_zp, int32_t pos_m0, int pos_shift, int32_t neg_m0, int neg_shift,
                     int out_zp, int act_min, int act_max, int8_t* out) noexcept nogil:
    cdef Py_ssize_t o, i
    cdef int32_t v
    for o in range(outer):
        for i in range(inner):
            v = <int32_t>x[o * inner + i] - in_zp
            if v >= 0:
                out[o * inner + i] = requantize_accumulator(v, pos_m0, pos_shift, out_zp,
                                                            act_min, act_max)
            else:
                out[o * inner + i] = requantize_accumulator(v * <int32_t>alpha[i], neg_m0,
                                                            neg_shift, out_zp, act_min, act_max)


cdef class PreluCall(KernelCall):
    """out[o, i] = clamp(out_zp + MBQM(v, pos_m0, pos_shift)) where v = x[o, i] - in_zp >= 0,
    clamp(out_zp + MBQM(v * alpha[i], neg_m0, neg_shift)) where v < 0.

    x, out: int8 [outer, inner]; alpha: int8 [inner], the slopes at their own scale
    (neg_m0/neg_shift carry in_scale * alpha_scale / out_scale). |v * alpha| <= 255 * 128.
    """
    cdef const int8_t[:, ::1] x
    cdef const int8_t[::1] alpha
    cdef int8_t[:, ::1] out
    cdef int in_zp, pos_shift, neg_shift, out_zp, act_min, act_max
    cdef int32_t pos_m0, neg_m0

    def __init__(self, const int8_t[:, ::1] x not None, const int8_t[::1] alpha not None,
                 int in_zp, int pos_m0, int pos_shift, int neg_m0, int neg_shift, int out_zp,
                 int act_min, int act_max, int8_t[:, ::1] out not None):
        cdef int32_t m[2]
        cdef int32_t s[2]
        if alpha.shape[0] != x.shape[1]:
            raise ValueError(f"prelu: alpha has length {alpha.shape[0]}, expected x.shape[1] = {x.shape[1]}")
        if out.shape[0] != x.shape[0] or out.shape[1] != x.shape[1]:
            raise ValueError(f"prelu: out has shape ({out.shape[0]}, {out.shape[1]}), expected "
                             f"({x.shape[0]}, {x.shape[1]})")
        if not -128 <= in_zp <= 127:
            raise ValueError(f"prelu: in_zp = {in_zp} is outside the int8 range")
        check_output_range("prelu", out_zp, act_min, act_max)
        m[0], m[1], s[0], s[1] = pos_m0, neg_m0, pos_shift, neg_shift
        check_multipliers("prelu", m, s, 2)
        self.x, self.alpha, self.out = x, alpha, out
        self.in_zp, self.pos_m0, self.pos_shift = in_zp, pos_m0, pos_shift
        self.neg_m0, self.neg_shift = neg_m0, neg_shift
        self.out_zp, self.act_min, self.act_max = out_zp, act_min, act_max
        self.n_tasks = 1
        # small: releasing the GIL costs more than it saves
        self.work_share = <double>x.shape[0] * x.shape[1] / 65536

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.x.shape[0] == 0 or self.x.shape[1] == 0 or first >= last:
            return
        prelu_impl(&self.x[0, 0], &self.alpha[0], self.x.shape[0], self.x.shape[1], self.in_zp,
                   self.pos_m0, self.pos_shift, self.neg_m0, self.neg_shift, self.out_zp,
                   self.act_min, self.act_max, &self.out[0, 0])


def prelu(x, alpha, int in_zp, int pos_m0, int pos_shift, int neg_m0, int neg_shift, int out_zp,
          int act_min, int act_max, out):
    """See PreluCall."""
    PreluCall(x, alpha, in_zp, pos_m0, pos_shift, neg_m0, neg_shift, out_zp, act_min, act_max, out)()

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""embedding on int8 or int16 (fixnet/ops/embedding.py): a row lookup by token id.

One activation type per call: ids, table and out are all int8 (ids: token id + ids_zp, ids_zp
-128 for the model input's codes) or all int16 (ids: the token ids themselves, ids_zp 0: the
int8 ids converted exactly; the table holds codes at the int16 output's scale).

Bit-exact with ``fixnet.oracle.embedding`` (read it for the semantics). Private:
fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t, int16_t
from libc.string cimport memcpy

from fixnet._kernels.acttype cimport act_t, call_bits, check_act_zp

cdef enum:
    # Work (elements) at which releasing the GIL pays for the row copies.
    NOGIL_MIN_ELEMENTS = 65536


# ---- embedding -----------------------------------------------------------------------------

cdef Py_ssize_t embedding_impl(const act_t* ids, Py_ssize_t n, int ids_zp, const act_t* table,
                               Py_ssize_t vocab, Py_ssize_t dim, act_t* out) noexcept nogil:
    """out row i = table row (ids[i] - ids_zp); returns -1, or the first i whose id has no row
    (rows before it are written, it and those after are not)."""
    cdef Py_ssize_t i, k
    for i in range(n):
        k = <Py_ssize_t>ids[i] - ids_zp
        if k < 0 or k >= vocab:
            return i
        memcpy(out + i * dim, table + k * dim, dim * sizeof(act_t))
    return -1


cdef class EmbeddingCall:
    """out[i, :] = table[ids[i] - ids_zp, :].

    ids: [n] (token id + ids_zp); table: [V, D]; out: [n, D]; all int8 or all int16 (ids_zp
    then 0). Calling it returns -1, or the index into ids of the first id outside [0, V) (the
    step raises an InputError naming the layer): so it is not a KernelCall, and the pass calls
    it from Python."""
    cdef readonly int bits                 # 8 or 16: the call's activation type
    cdef const int8_t[::1] ids
    cdef const int8_t[:, ::1] table
    cdef int8_t[:, ::1] out
    cdef const int16_t[::1] ids16
    cdef const int16_t[:, ::1] table16
    cdef int16_t[:, ::1] out16
    cdef Py_ssize_t n, vocab, dim
    cdef int ids_zp

    def __init__(self, ids, table, int ids_zp, out):
        cdef Py_ssize_t out_rows, out_dim
        self.bits = call_bits("embedding", (ids, table, out), ("ids", "table", "out"))
        if self.bits == 16:
            self.ids16, self.table16, self.out16 = ids, table, out
            self.n, self.vocab, self.dim = (self.ids16.shape[0], self.table16.shape[0],
                                            self.table16.shape[1])
            out_rows, out_dim = self.out16.shape[0], self.out16.shape[1]
        else:
            self.ids, self.table, self.out = ids, table, out
            self.n, self.vocab, self.dim = self.ids.shape[0], self.table.shape[0], self.table.shape[1]
            out_rows, out_dim = self.out.shape[0], self.out.shape[1]
        check_act_zp("embedding", "ids_zp", ids_zp, self.bits)
        if self.vocab < 1:
            raise ValueError("embedding: the table has no rows")
        if out_rows != self.n or out_dim != self.dim:
            raise ValueError(f"embedding: out has shape ({out_rows}, {out_dim}), "
                             f"expected ({self.n}, {self.dim})")
        self.ids_zp = ids_zp

    cdef Py_ssize_t run8(self) noexcept nogil:
        # dim == 0: nothing to copy; the ids must still have rows
        return embedding_impl(&self.ids[0], self.n, self.ids_zp, &self.table[0, 0], self.vocab,
                              self.dim, &self.out[0, 0] if self.dim else NULL)

    cdef Py_ssize_t run16(self) noexcept nogil:
        return embedding_impl(&self.ids16[0], self.n, self.ids_zp, &self.table16[0, 0],
                              self.vocab, self.dim, &self.out16[0, 0] if self.dim else NULL)

    def __call__(self):
        cdef Py_ssize_t bad
        if self.n == 0:
            return -1
        if self.n * self.dim < NOGIL_MIN_ELEMENTS:
            return self.run16() if self.bits == 16 else self.run8()
        with nogil:
            bad = self.run16() if self.bits == 16 else self.run8()
        return bad


def embedding(ids, table, int ids_zp, out):
    """See EmbeddingCall; returns its result (-1, or the index of the first bad id)."""
    return EmbeddingCall(ids, table, ids_zp, out)()

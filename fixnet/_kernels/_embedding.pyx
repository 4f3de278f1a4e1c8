# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""embedding on int8 (fixnet/ops/embedding.py): a row lookup by token id.

Bit-exact with ``fixnet.oracle.embedding`` (read it for the semantics). Private:
fixnet.runtime plans the calls.
"""
from libc.stdint cimport int8_t
from libc.string cimport memcpy

from fixnet._kernels.fixedpoint cimport check_int8

cdef enum:
    # Work (elements) at which releasing the GIL pays for the row copies.
    NOGIL_MIN_ELEMENTS = 65536


# ---- embedding -----------------------------------------------------------------------------

cdef Py_ssize_t embedding_impl(const int8_t* ids, Py_ssize_t n, int ids_zp, const int8_t* table,
                               Py_ssize_t vocab, Py_ssize_t dim, int8_t* out) noexcept nogil:
    """out row i = table row (ids[i] - ids_zp); returns -1, or the first i whose id has no row
    (rows before it are written, it and those after are not)."""
    cdef Py_ssize_t i, k
    for i in range(n):
        k = <Py_ssize_t>ids[i] - ids_zp
        if k < 0 or k >= vocab:
            return i
        memcpy(out + i * dim, table + k * dim, dim)
    return -1


cdef class EmbeddingCall:
    """out[i, :] = table[ids[i] - ids_zp, :].

    ids: int8 [n] (token id + ids_zp); table: int8 [V, D]; out: int8 [n, D]. Calling it
    returns -1, or the index into ids of the first id outside [0, V) (the step raises an
    InputError naming the layer): so it is not a KernelCall, and the pass calls it from
    Python."""
    cdef const int8_t[::1] ids
    cdef const int8_t[:, ::1] table
    cdef int8_t[:, ::1] out
    cdef int ids_zp

    def __init__(self, const int8_t[::1] ids not None, const int8_t[:, ::1] table not None,
                 int ids_zp, int8_t[:, ::1] out not None):
        check_int8("embedding", "ids_zp", ids_zp)
        if table.shape[0] < 1:
            raise ValueError("embedding: the table has no rows")
        if out.shape[0] != ids.shape[0] or out.shape[1] != table.shape[1]:
            raise ValueError(f"embedding: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected ({ids.shape[0]}, {table.shape[1]})")
        self.ids, self.table, self.out, self.ids_zp = ids, table, out, ids_zp

    def __call__(self):
        cdef Py_ssize_t n = self.ids.shape[0], dim = self.table.shape[1], bad
        if n == 0:
            return -1
        if dim == 0:                    # nothing to copy; the ids must still have rows
            return embedding_impl(&self.ids[0], n, self.ids_zp, &self.table[0, 0],
                                  self.table.shape[0], 0, NULL)
        if n * dim < NOGIL_MIN_ELEMENTS:
            return embedding_impl(&self.ids[0], n, self.ids_zp, &self.table[0, 0],
                                  self.table.shape[0], dim, &self.out[0, 0])
        with nogil:
            bad = embedding_impl(&self.ids[0], n, self.ids_zp, &self.table[0, 0],
                                 self.table.shape[0], dim, &self.out[0, 0])
        return bad


def embedding(ids, table, int ids_zp, out):
    """See EmbeddingCall; returns its result (-1, or the index of the first bad id)."""
    return EmbeddingCall(ids, table, ids_zp, out)()

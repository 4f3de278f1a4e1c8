# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Integer recurrent layers (SimpleRNN, GRU, LSTM) over int8 or int16 sequences.

Bit-exact with ``fixnet.oracle.rnn`` (fixnet/oracle/recurrent.py states every step's
arithmetic). Private: fixnet/ops/recurrent.py's RNNStep binds a RnnCall to its buffers.

Per batch row, per step: an int8 input is widened to int16 once (an int16 one is read in
place), every gate row's input and recurrent dot products run four rows at a time
(dot4_int16_int8: pmaddwd on x86-64, smlal pairs on arm64), then the cell's int16
arithmetic. Rows are independent: the call splits into one task per row, each with its own
scratch.

One activation type per call (acttype.pxd): x, the initial states, the mask and the outputs
are all int8, or all int16 (zero points 0); x's dtype chooses. Only the loads of x, states
and mask and the stores of the outputs depend on it.
"""
import numpy as np

from libc.stdint cimport INT32_MAX, INT32_MIN, int8_t, int16_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport call_bits, check_act_zp
from fixnet._kernels.fixedpoint cimport (
    DOT_BLOCK,
    dot4_int16_int8,
    dot_int16_int8,
    is_valid_multiplier,
    is_valid_shift,
    multiply_by_quantized_multiplier,
    requant_constants,
    requantize_precomputed,
)

cdef enum:
    CELL_SIMPLE = 0
    CELL_GRU = 1
    CELL_LSTM = 2
    TABLE_SIZE = 1025
    NOGIL_MIN_MACS = 32768

# the scalar multipliers, in this order in RnnCall.m0 / RnnCall.shift
SCALARS = ("m_ah", "m_fc", "m_ic", "m_cc", "m_oh", "m_rh", "m_zh", "m_nzh", "m_y", "m_hs", "m_cs",
           "m_init_h", "m_init_c")
cdef enum:
    M_AH = 0
    M_FC = 1
    M_IC = 2
    M_CC = 3
    M_OH = 4
    M_RH = 5
    M_ZH = 6
    M_NZH = 7
    M_Y = 8
    M_HS = 9
    M_CS = 10
    M_INIT_H = 11
    M_INIT_C = 12
    N_SCALARS = 13


cdef inline int32_t sat16(int64_t v) noexcept nogil:
    if v > 32767:
        return 32767
    if v < -32768:
        return -32768
    return <int32_t>v


cdef inline int32_t mbqm(int32_t v, const int32_t* m0, const int32_t* shift, int i) noexcept nogil:
    return multiply_by_quantized_multiplier(v, m0[i], shift[i])


cdef inline int32_t to_act(int32_t v, int zp, int32_t m0, int32_t shift, int32_t lo,
                           int32_t hi) noexcept nogil:
    """An int16 state code -> an output code of zero point zp, clamped to [lo, hi] (the
    activation type's range)."""
    cdef int64_t y = <int64_t>zp + multiply_by_quantized_multiplier(v, m0, shift)
    if y > hi:
        return hi
    if y < lo:
        return lo
    return <int32_t>y


cdef inline int32_t load_code(const void* a, Py_ssize_t i, bint wide) noexcept nogil:
    """Element i of an int8 array, or of an int16 one (``wide``)."""
    if wide:
        return (<const int16_t*>a)[i]
    return (<const int8_t*>a)[i]


cdef inline void store_codes(void* a, Py_ssize_t i, const int16_t* v, Py_ssize_t n,
                             bint wide) noexcept nogil:
    """Elements i .. i + n - 1 of an int8 array, or of an int16 one (``wide``) = v[0 .. n - 1]
    (codes in the array's range)."""
    cdef Py_ssize_t j
    if wide:
        memcpy(<int16_t*>a + i, v, n * sizeof(int16_t))
    else:
        for j in range(n):
            (<int8_t*>a)[i + j] = <int8_t>v[j]


def _array(a, str name, dtype, tuple shape, bint writable):
    """``a`` as an ndarray of the call's dtype, C-contiguous, of ``shape`` (a view, so that
    outputs are written in place); ValueError naming the argument otherwise."""
    arr = np.asarray(a)
    if arr.dtype != dtype:
        raise ValueError(f"rnn: {name} has dtype {arr.dtype}, the call's activations are {dtype}")
    if arr.size != int(np.prod(shape)) or not arr.flags.c_contiguous:
        raise ValueError(f"rnn: {name} of shape {arr.shape} must be C-contiguous with "
                         f"{int(np.prod(shape))} elements {shape}")
    if writable and not arr.flags.writeable:
        raise ValueError(f"rnn: {name} is read-only")
    return arr.reshape(shape)


cdef inline void* data_of(object arr):
    return <void*><size_t>arr.ctypes.data


cdef inline int32_t lookup(const int16_t* table, int32_t v) noexcept nogil:
    """The interpolated int16 function table at int16 code v (oracle.table_lookup)."""
    cdef int32_t u = v + 32768
    cdef int32_t k = u >> 6
    cdef int32_t t = u & 63
    cdef int32_t lo = table[k]
    cdef int32_t hi = table[k + 1]
    return lo + (((hi - lo) * t + 32) >> 6)


cdef inline void requant_rows(const int32_t* acc, Py_ssize_t n, const int32_t* m0,
                              const int64_t* k, int32_t* out) noexcept nogil:
    """out[c] = multiply_by_quantized_multiplier(acc[c], m0[c], shift[c]) for c < n, with
    k[4 c .. 4 c + 3] = (left shift, nudge, neg_adjust, total_shift) from requant_constants:
    one branch-free loop (vectorised for AVX2 and up, as fixedpoint.requantize_block)."""
    cdef Py_ssize_t c
    cdef int64_t x
    for c in range(n):
        x = <int64_t>(<uint64_t><int64_t>acc[c] << k[4 * c])
        x = INT32_MAX if x > INT32_MAX else x
        x = INT32_MIN if x < INT32_MIN else x
        out[c] = requantize_precomputed(x, m0[c], k[4 * c + 1], k[4 * c + 2], k[4 * c + 3])


cdef void project(const int16_t* v, const int8_t* rows, const int32_t* bias, Py_ssize_t n_rows,
                  Py_ssize_t k, int32_t* acc) noexcept nogil:
    """acc[c] = bias[c] + sum_j v[j] * rows[c, j] for c < n_rows (rows [n_rows, k] int8).
    Within the static proof every partial sum fits int32; k > DOT_BLOCK runs in blocks."""
    cdef Py_ssize_t c, j0, n
    cdef int32_t part[4]
    for c in range(n_rows):
        acc[c] = bias[c] if bias != NULL else 0
    j0 = 0
    while j0 < k:
        n = k - j0 if k - j0 < DOT_BLOCK else DOT_BLOCK
        c = 0
        while c + 4 <= n_rows:
            dot4_int16_int8(v + j0, rows + c * k + j0, rows + (c + 1) * k + j0,
                            rows + (c + 2) * k + j0, rows + (c + 3) * k + j0, n, part)
            acc[c] += part[0]
            acc[c + 1] += part[1]
            acc[c + 2] += part[2]
            acc[c + 3] += part[3]
            c += 4
        while c < n_rows:
            acc[c] += dot_int16_int8(v + j0, rows + c * k + j0, n)
            c += 1
        j0 += n


cdef class RnnCall(KernelCall):
    """One recurrent layer bound to its buffers: x [B, T, F]; outputs y ([B, T, U] with
    return_sequences, else [B, U]), then the final h (and c) with return_state; optional
    initial states [B, U] and mask [B, T]; all int8, or all int16 (zero points 0). ``p`` is
    the RNNStep (its attributes are the parameters; see fixnet/ops/recurrent.py
    quantize_rnn)."""
    cdef object keep
    # the activation arrays, of the call's type (int16 when ``wide``), C-contiguous:
    # x [B, T, F] (token ids: [B, T]), init_h, init_c [B, U], mask [B, T],
    # y_seq [B, T, U] or y_last [B, U], hs, cs [B, U]; NULL where absent
    cdef const void* x
    cdef const void* init_h
    cdef const void* init_c
    cdef const void* mask
    cdef void* y_seq
    cdef void* y_last
    cdef void* hs
    cdef void* cs
    cdef bint wide
    cdef int32_t act_min, act_max
    cdef const int8_t[:, ::1] w_q
    cdef const int8_t[:, ::1] r_q
    cdef const int32_t[::1] bx
    cdef const int32_t[::1] bh
    cdef const int32_t[::1] mx
    cdef const int32_t[::1] sh_x
    cdef const int32_t[::1] mh
    cdef const int32_t[::1] sh_h
    cdef const int16_t[:, ::1] tables
    cdef int32_t[:, ::1] scratch32
    cdef int64_t[::1] kx
    cdef const int32_t[:, ::1] token_gx
    cdef int tokens, ids_zp
    cdef int64_t[::1] kh
    cdef int16_t[:, ::1] scratch16
    cdef int16_t[:, ::1] prev            # the last output codes of each row
    cdef int32_t m0[N_SCALARS]
    cdef int32_t shift[N_SCALARS]
    cdef int cell, reset_after, go_backwards, reverse_output, sequences, has_init, has_c_init
    cdef int has_mask, zero_output, return_state
    cdef int y_zp, hs_zp, cs_zp, init_h_zp, init_c_zp, mask_zp, one_z
    cdef Py_ssize_t B, T, F, U, G

    def __init__(self, x not None, list inits not None, mask, list outs not None, p not None):
        cdef int i, bits
        cdef Py_ssize_t B, T, F, U, G
        self.cell = {"simple_rnn": CELL_SIMPLE, "gru": CELL_GRU, "lstm": CELL_LSTM}[p.cell]
        G = {CELL_SIMPLE: 1, CELL_GRU: 3, CELL_LSTM: 4}[self.cell]
        U = p.units
        acts = (x,) + tuple(inits) + ((mask,) if mask is not None else ()) + tuple(outs)
        names = ("x",) + tuple(f"initial state {i}" for i in range(len(inits))) \
            + (("mask",) if mask is not None else ()) + tuple(f"output {i}" for i in range(len(outs)))
        bits = call_bits("rnn", acts, names)
        self.wide = bits == 16
        dtype = np.dtype(np.int16 if self.wide else np.int8)
        self.act_min, self.act_max = (-32768, 32767) if self.wide else (-128, 127)
        x3 = np.asarray(x)
        self.tokens = p.token_gx is not None
        if self.tokens and x3.ndim == 2:
            x3 = x3.reshape(x3.shape[0], x3.shape[1], 1)       # token id codes [B, T]
        if x3.ndim != 3:
            raise ValueError(f"rnn: x must be {dtype} [B, T, F], not {x3.dtype} {x3.shape}")
        B, T, F = x3.shape[0], x3.shape[1], x3.shape[2]
        x3 = _array(x3, "x", dtype, (B, T, F), False)
        self.x = data_of(x3)
        if self.tokens:
            self.token_gx, self.ids_zp = p.token_gx, p.ids_zp
            if x3.shape[2] != 1 or self.token_gx.shape[1] != len(p.bx) or self.token_gx.shape[0] < 1:
                raise ValueError(f"rnn: token projections {p.token_gx.shape} do not fit ids {x3.shape}")
            check_act_zp("rnn", "ids_zp", self.ids_zp, bits)
            F = 0
        else:
            self.token_gx = np.zeros((1, 1), np.int32)
            self.ids_zp = 0
        self.w_q, self.r_q = p.w_q, p.r_q
        if self.w_q.shape[0] != G * U or self.w_q.shape[1] != F or self.r_q.shape[0] != G * U \
                or self.r_q.shape[1] != U:
            raise ValueError(f"rnn: weights {p.w_q.shape}, {p.r_q.shape} do not fit x "
                             f"{x3.shape} and {U} units")
        self.bx, self.bh, self.mx, self.sh_x, self.mh, self.sh_h = p.bx, p.bh, p.mx, p.sh_x, p.mh, p.sh_h
        for arr in (p.bx, p.bh, p.mx, p.sh_x, p.mh, p.sh_h):
            if np.asarray(arr).shape != (G * U,):
                raise ValueError("rnn: per-row parameters must have G * U entries")
        for i in range(G * U):
            if not (is_valid_multiplier(self.mx[i]) and is_valid_shift(self.sh_x[i])
                    and is_valid_multiplier(self.mh[i]) and is_valid_shift(self.sh_h[i])):
                raise ValueError(f"rnn: invalid multiplier in row {i}")
        self.kx = self.constants(self.sh_x)
        self.kh = self.constants(self.sh_h)
        self.tables = p.tables
        if self.tables.shape[1] != TABLE_SIZE or self.tables.shape[0] != len(p.gate_names):
            raise ValueError(f"rnn: function tables of shape {p.tables.shape}")
        for i, name in enumerate(SCALARS):
            m = getattr(p, name)
            self.m0[i], self.shift[i] = int(m[0]), int(m[1])
            if not (is_valid_multiplier(self.m0[i]) and is_valid_shift(self.shift[i])):
                raise ValueError(f"rnn: invalid multiplier {name} = {m}")
        self.reset_after, self.go_backwards = bool(p.reset_after), bool(p.go_backwards)
        self.reverse_output, self.sequences = bool(p.reverse_output), bool(p.return_sequences)
        self.zero_output, self.return_state = bool(p.zero_output_for_mask), bool(p.return_state)
        self.y_zp, self.hs_zp, self.cs_zp = p.y_zp, p.hs_zp, p.cs_zp
        for name, zp in (("y_zp", self.y_zp), ("hs_zp", self.hs_zp), ("cs_zp", self.cs_zp)):
            check_act_zp("rnn", name, zp, bits)
        self.one_z, self.mask_zp = p.one_z, p.mask_zp
        self.has_init = len(inits) > 0
        self.has_c_init = len(inits) > 1 and self.cell == CELL_LSTM
        kept = [x3]
        self.init_h = self.init_c = self.mask = NULL
        self.init_h_zp = self.init_c_zp = 0
        if self.has_init:
            self.init_h_zp = p.init_zp[0]
            check_act_zp("rnn", "init_zp[0]", self.init_h_zp, bits)
            self.init_h = self.bind_array(kept, inits[0], "initial state 0", dtype, (B, U), False)
        if self.has_c_init:
            self.init_c_zp = p.init_zp[1]
            check_act_zp("rnn", "init_zp[1]", self.init_c_zp, bits)
            self.init_c = self.bind_array(kept, inits[1], "initial state 1", dtype, (B, U), False)
        self.has_mask = mask is not None
        if self.has_mask:
            check_act_zp("rnn", "mask_zp", self.mask_zp, bits)
            self.mask = self.bind_array(kept, mask, "mask", dtype, (B, T), False)
        self.y_seq = self.y_last = self.hs = self.cs = NULL
        if self.sequences:
            self.y_seq = self.bind_array(kept, outs[0], "output 0", dtype, (B, T, U), True)
        else:
            self.y_last = self.bind_array(kept, outs[0], "output 0", dtype, (B, U), True)
        n_states = 2 if self.cell == CELL_LSTM else 1
        if self.return_state:
            if len(outs) != 1 + n_states:
                raise ValueError("rnn: return_state needs the state outputs")
            self.hs = self.bind_array(kept, outs[1], "output 1", dtype, (B, U), True)
            if n_states == 2:
                self.cs = self.bind_array(kept, outs[2], "output 2", dtype, (B, U), True)
        # per row: accx, gx, acch, gh (G*U int32 each), gate values (5 U int32);
        # x widened (F int16), h16, c16, rh16 (U int16 each)
        self.scratch32 = np.zeros((max(B, 1), 4 * G * U + 5 * U + 1), np.int32)
        self.scratch16 = np.zeros((max(B, 1), F + 3 * U + 1), np.int16)
        self.prev = np.zeros((max(B, 1), max(U, 1)), np.int16)
        self.keep = (kept, inits, mask, outs, p)
        self.B, self.T, self.F, self.U, self.G = B, T, F, U, G
        self.n_tasks = B               # one task per batch row
        self.splittable = True
        self.work_share = self.macs() / NOGIL_MIN_MACS

    cdef void* bind_array(self, list kept, a, str name, dtype, tuple shape, bint writable) except? NULL:
        """The data of ``a`` checked by _array (kept alive in ``kept``)."""
        arr = _array(a, name, dtype, shape, writable)
        kept.append(arr)
        return data_of(arr)

    cdef constants(self, const int32_t[::1] shift):
        """[left, nudge, neg_adjust, total_shift] per row for requant_rows."""
        cdef Py_ssize_t i
        cdef int32_t left
        cdef int64_t nudge, neg, total
        out = np.zeros(4 * shift.shape[0], np.int64)
        cdef int64_t[::1] o = out
        for i in range(shift.shape[0]):
            requant_constants(shift[i], &nudge, &neg, &total, &left)
            o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3] = left, nudge, neg, total
        return out

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t b
        for b in range(first, last):
            self.run_row(b)

    cdef double macs(self):
        return <double>self.B * self.T * self.G * self.U * (self.F + self.U)

    cdef void run_row(self, Py_ssize_t b) noexcept nogil:
        cdef Py_ssize_t U = self.U, G = self.G, F = self.F, T = self.T, GU = G * U
        cdef int32_t* accx = &self.scratch32[b, 0]
        cdef int32_t* gx_buf = accx + GU
        cdef const int32_t* gx = gx_buf
        cdef int32_t* acch = gx_buf + GU
        cdef int32_t* gh = acch + GU
        cdef int32_t* a = gh + GU                 # gate values [5][U]
        cdef int16_t* xs = &self.scratch16[b, 0]
        cdef int16_t* h = xs + F
        cdef int16_t* c = h + U
        cdef int16_t* rh = c + U
        cdef const int16_t* xrow = xs
        cdef int16_t* prev = &self.prev[b, 0]
        cdef bint wide = self.wide
        cdef int32_t lo = self.act_min, hi = self.act_max
        cdef const int32_t* m0 = self.m0
        cdef const int32_t* sh = self.shift
        cdef const int16_t* tab = &self.tables[0, 0]
        cdef Py_ssize_t k, t, j, n_rec, idx
        cdef int32_t v, a_z, keep, new, pre
        cdef int64_t s
        # initial states
        for j in range(U):
            if self.has_init:
                h[j] = <int16_t>sat16(multiply_by_quantized_multiplier(
                    load_code(self.init_h, b * U + j, wide) - self.init_h_zp, m0[M_INIT_H], sh[M_INIT_H]))
            else:
                h[j] = 0
            if self.has_c_init:
                c[j] = <int16_t>sat16(multiply_by_quantized_multiplier(
                    load_code(self.init_c, b * U + j, wide) - self.init_c_zp, m0[M_INIT_C], sh[M_INIT_C]))
            else:
                c[j] = 0
            prev[j] = <int16_t>self.y_zp
        n_rec = 2 * U if (self.cell == CELL_GRU and not self.reset_after) else GU
        for k in range(T):
            t = T - 1 - k if self.go_backwards else k
            if self.has_mask and load_code(self.mask, b * T + t, wide) == self.mask_zp:
                if self.zero_output:
                    for j in range(U):
                        prev[j] = <int16_t>self.y_zp
                if self.sequences:
                    idx = T - 1 - k if self.reverse_output else k
                    store_codes(self.y_seq, (b * T + idx) * U, prev, U, wide)
                continue
            if self.tokens:        # the token's projection, precomputed (ids checked by the caller)
                gx = &self.token_gx[load_code(self.x, b * T + t, wide) - self.ids_zp, 0]
            else:
                if wide:
                    xrow = <const int16_t*>self.x + (b * T + t) * F
                else:
                    for j in range(F):
                        xs[j] = (<const int8_t*>self.x)[(b * T + t) * F + j]
                project(xrow, &self.w_q[0, 0], &self.bx[0], GU, F, accx)
                requant_rows(accx, GU, &self.mx[0], &self.kx[0], gx_buf)
            project(h, &self.r_q[0, 0], &self.bh[0], n_rec, U, acch)
            requant_rows(acch, n_rec, &self.mh[0], &self.kh[0], gh)
            if self.cell == CELL_SIMPLE:
                for j in range(U):
                    v = lookup(tab, sat16(<int64_t>gx[j] + gh[j]))
                    h[j] = <int16_t>sat16(multiply_by_quantized_multiplier(v, m0[M_AH], sh[M_AH]))
            elif self.cell == CELL_LSTM:
                for j in range(U):
                    a[j] = lookup(tab, sat16(<int64_t>gx[j] + gh[j]))                        # i
                    a[U + j] = lookup(tab + TABLE_SIZE, sat16(<int64_t>gx[U + j] + gh[U + j]))  # f
                    a[2 * U + j] = lookup(tab + 2 * TABLE_SIZE,
                                          sat16(<int64_t>gx[2 * U + j] + gh[2 * U + j]))        # g
                    a[3 * U + j] = lookup(tab + 3 * TABLE_SIZE,
                                          sat16(<int64_t>gx[3 * U + j] + gh[3 * U + j]))        # o
                    s = <int64_t>multiply_by_quantized_multiplier(a[U + j] * <int32_t>c[j], m0[M_FC], sh[M_FC]) \
                        + multiply_by_quantized_multiplier(a[j] * a[2 * U + j], m0[M_IC], sh[M_IC])
                    c[j] = <int16_t>sat16(s)
                    v = lookup(tab + 4 * TABLE_SIZE,
                               sat16(multiply_by_quantized_multiplier(c[j], m0[M_CC], sh[M_CC])))
                    h[j] = <int16_t>sat16(multiply_by_quantized_multiplier(a[3 * U + j] * v, m0[M_OH], sh[M_OH]))
            else:
                for j in range(U):
                    a[j] = lookup(tab, sat16(<int64_t>gx[j] + gh[j]))                        # z
                    a[U + j] = lookup(tab + TABLE_SIZE, sat16(<int64_t>gx[U + j] + gh[U + j]))  # r
                if self.reset_after:
                    for j in range(U):
                        v = gh[2 * U + j]
                        if v > 65535:
                            v = 65535
                        elif v < -65535:
                            v = -65535
                        a[2 * U + j] = <int32_t>sat16(<int64_t>gx[2 * U + j] + multiply_by_quantized_multiplier(
                            a[U + j] * v, m0[M_RH], sh[M_RH]))
                else:
                    for j in range(U):
                        rh[j] = <int16_t>sat16(multiply_by_quantized_multiplier(
                            a[U + j] * <int32_t>h[j], m0[M_RH], sh[M_RH]))
                    project(rh, &self.r_q[2 * U, 0], NULL, U, U, acch + 2 * U)
                    for j in range(U):
                        a[2 * U + j] = <int32_t>sat16(<int64_t>gx[2 * U + j] + multiply_by_quantized_multiplier(
                            acch[2 * U + j], self.mh[2 * U + j], self.sh_h[2 * U + j]))
                for j in range(U):
                    v = lookup(tab + 2 * TABLE_SIZE, a[2 * U + j])                             # n
                    a_z = a[j]
                    keep = multiply_by_quantized_multiplier(a_z * <int32_t>h[j], m0[M_ZH], sh[M_ZH])
                    pre = self.one_z - a_z
                    if pre > 65535:
                        pre = 65535
                    new = multiply_by_quantized_multiplier(pre * v, m0[M_NZH], sh[M_NZH])
                    h[j] = <int16_t>sat16(<int64_t>keep + new)
            for j in range(U):
                prev[j] = <int16_t>to_act(h[j], self.y_zp, m0[M_Y], sh[M_Y], lo, hi)
            if self.sequences:
                idx = T - 1 - k if self.reverse_output else k
                store_codes(self.y_seq, (b * T + idx) * U, prev, U, wide)
        if not self.sequences:
            store_codes(self.y_last, b * U, prev, U, wide)
        if self.return_state:
            # the final states' codes, through rh (free after the last step) as a staging row
            for j in range(U):
                rh[j] = <int16_t>to_act(h[j], self.hs_zp, m0[M_HS], sh[M_HS], lo, hi)
            store_codes(self.hs, b * U, rh, U, wide)
            if self.cell == CELL_LSTM:
                for j in range(U):
                    rh[j] = <int16_t>to_act(c[j], self.cs_zp, m0[M_CS], sh[M_CS], lo, hi)
                store_codes(self.cs, b * U, rh, U, wide)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fully connected layer on int8 or int16 activations: activations x int8 weights, int32
accumulators, requantized to the activation type (int8 in, int8 out; int16 in, int16 out).

Bit-exact with ``fixnet.oracle.dense``. Private: fixnet.runtime plans the calls (DenseStep,
and ConvStep for pointwise convolutions: a 1x1 conv at stride 1 is dense on the pixels).

Calling pattern (shared by every kernel module): ``DenseCall(...)`` takes exactly the
arguments of ``dense(...)``, checks them once, keeps the arrays and precomputes what does not
depend on x (requantization constants); calling it runs the kernel on what x holds now, with
no checks. ``dense(...)`` is ``DenseCall(...)()``.

The kernel is a GEMM with one tap (csrc/qdense.h: conv2d's micro-kernels of csrc/qgemm.h,
but for the AVX2 build a 4x8 kernel of its own with K in pairs; ``DENSE_ISA``,
``DENSE_TILE``): weights and bias packed once (``pack_dense_weights``, at quantize time) in
blocks of the tile width NR of output channels, the rows of x are the tile's rows (MR of them
per micro-kernel call; a last single row, and batch 1, run the one-row kernel, a GEMV; each
tile's rows go into the kernel's "panel" once for all its blocks), and every tile is
requantized in the micro-kernel's epilogue on its accumulators (csrc/requant.h) and stored
as int8. Tasks (for threads): groups of row tiles
times chunks of channel blocks; a task runs each block over all its row tiles, so a block's
weights stay in L1 while they are used.

int16 activations (TFLite's 16x8: symmetric, zero point 0) run conv2d's int16 micro-kernels
(csrc/qgemm16.h; ``DENSE16_ISA``, ``DENSE16_TILE``) on the same tasks, over weights packed
for them (``pack_dense_weights(w, bias, bits=16)``); the rows are int16 already, so no panel.
The call's dtype chooses: x and out both int8, or both int16.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int16_t, int32_t

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport check_length, check_multipliers, check_output_range
from fixnet._kernels.gemm_pack import (activation_bits, check_int16_output, check_weights,
                                        pack_gemm)

from fixnet._kernels.requant cimport fx_requant, fx_requant_bytes, fx_requant_init_rounding

cdef extern from "qdense.h" nogil:
    const char* QD_ISA
    enum:
        QD_MR
        QD_NR
        QD_KR
        QD_UINT8_INPUT
        QD_W16
        QD_PANEL_MAX
    size_t qd_panel_bytes(size_t taps, size_t cin, size_t rows)
    void qd_panel_build(size_t taps, size_t cin, const int8_t** a, size_t rows, void* panel)
    void qd_tile_q8_panel(size_t taps, size_t cin, const void* panel, const void* block,
                          size_t mr, size_t nc, const fx_requant* q, size_t c0, int8_t* out,
                          size_t out_stride)
    void qd_row_q8_panel(size_t taps, size_t cin, const void* panel, const void* block,
                         size_t nc, const fx_requant* q, size_t c0, int8_t* out)
    void qd_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block, size_t mr,
                    size_t nc, const fx_requant* q, size_t c0, int8_t* out, size_t out_stride)
    void qd_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block, size_t nc,
                   const fx_requant* q, size_t c0, int8_t* out)
    void qd_row2_q8_panel(size_t taps, size_t cin, const void* panel, const void* block,
                          size_t block_bytes, size_t nc, const fx_requant* q, size_t c0,
                          int8_t* out)
    void qd_row2_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                    size_t block_bytes, size_t nc, const fx_requant* q, size_t c0, int8_t* out)
    void qd_tile_q8_scalar(size_t taps, size_t cin, const int8_t** a, const void* block,
                           size_t mr, size_t nc, const fx_requant* q, size_t c0, int8_t* out,
                           size_t out_stride)

cdef extern from "qgemm16.h" nogil:
    const char* Q16_ISA
    enum:
        Q16_MR
        Q16_NR
        Q16_KR
        Q16_W16
        Q16_INPUT_OFFSET
    void q16_tile_q16(size_t taps, size_t cin, const int16_t** a, const void* block, size_t mr,
                      size_t nc, const fx_requant* q, size_t c0, int16_t* out, size_t out_stride)
    void q16_tile_q16_scalar(size_t taps, size_t cin, const int16_t** a, const void* block,
                             size_t mr, size_t nc, const fx_requant* q, size_t c0, int16_t* out,
                             size_t out_stride)
    void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block, size_t nc,
                     const fx_requant* q, size_t c0, int16_t* out)

cdef enum:
    # Release the GIL only when a call does at least this many multiply-adds: below it,
    # releasing and re-taking the GIL costs more than other threads could gain.
    NOGIL_MIN_WORK = 32768
    # A task: up to TASK_ROWS rows (in tiles of QD_MR) times up to TASK_CHANNELS channels (in
    # blocks of NR; TASK_CHANNELS is a multiple of every build's NR, int8's and int16's).
    TASK_ROWS = 64
    TASK_CHANNELS = 64


# The micro-kernel of this build's dense: its name and tile (rows MR x channels NR, K step KR).
DENSE_ISA = QD_ISA.decode()
DENSE_TILE = (QD_MR, QD_NR, QD_KR)
# The same for int16 activations (conv2d's int16 micro-kernel, csrc/qgemm16.h).
DENSE16_ISA = Q16_ISA.decode()
DENSE16_TILE = (Q16_MR, Q16_NR, Q16_KR)


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


# ---- packed weights ------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class PackedDenseWeights:
    """Weights w int8 [C, K] and bias int32 [C] of one dense layer in this build's GEMM
    layout for one activation type (``bits``: 8, csrc/qdense.h's ``DENSE_TILE``, or 16,
    csrc/qgemm16.h's ``DENSE16_TILE``; fixnet._kernels.gemm_pack): per block of NR output
    channels, NR int32 biases then the weights, K in groups of KR. Made by
    ``pack_dense_weights(w, bias, bits)``; read-only, shared by every Call of the layer."""
    cdef readonly Py_ssize_t channels, depth, blocks, block_bytes
    cdef readonly int bits            # the activation type it is packed for: 8 or 16
    cdef readonly object data       # the packed int8 array [blocks, block_bytes]
    cdef readonly object source     # the int8 [C, K] array it was packed from (kept alive)
    cdef readonly object source_bias
    cdef const int8_t* w_src         # where the source arrays' data was (identity checks)
    cdef const int32_t* bias_src
    cdef const int8_t* packed

    def __repr__(self):
        nr = QD_NR if self.bits == 8 else Q16_NR
        return (f"<PackedDenseWeights C={self.channels} K={self.depth} int{self.bits} "
                f"activations ({self.blocks} blocks of {nr} channels)>")


def pack_dense_weights(w not None, bias not None, int bits=8):
    """Pack int8 weights w [C, K] (C-contiguous, values in [-127, 127]) and bias int32 [C] for
    dense / DenseCall (``packed=``) on activations of ``bits`` bits: 8 for int8 x and out, 16
    for int16 (a step passes its own ``bits``; a DenseCall refuses a packing of the other
    type). Do this once (at quantize time); w and bias must not change afterwards (the
    kernel reads only the packed copy)."""
    cdef const int8_t[:, ::1] w_view = w
    cdef const int32_t[::1] bias_view = bias
    cdef PackedDenseWeights p = PackedDenseWeights.__new__(PackedDenseWeights)
    cdef Py_ssize_t c_len = w_view.shape[0], k_len = w_view.shape[1]
    check_length("dense", "bias", bias_view.shape[0], c_len,
                 "one per output channel, C = w.shape[0]")
    if bits not in (8, 16):
        raise ValueError(f"dense: bits = {bits}: activations are int8 (8) or int16 (16)")
    w_array = np.asarray(w_view)
    check_weights("dense", w_array)
    if bits == 8:
        data, blocks, _ = pack_gemm(w_array.reshape(c_len, 1, k_len), bias_view, 1, QD_NR,
                                    QD_KR, QD_W16, 128 * QD_UINT8_INPUT)
    else:
        data, blocks, _ = pack_gemm(w_array.reshape(c_len, 1, k_len), bias_view, 1, Q16_NR,
                                    Q16_KR, Q16_W16, Q16_INPUT_OFFSET)
    p.channels, p.depth, p.blocks, p.block_bytes = c_len, k_len, blocks, data.shape[1]
    p.bits = bits
    p.data, p.source, p.source_bias = data, w, bias
    p.w_src = &w_view[0, 0] if c_len and k_len else NULL
    p.bias_src = &bias_view[0] if c_len else NULL
    p.packed = <const int8_t*><size_t>data.ctypes.data
    return p


# ---- the loop ------------------------------------------------------------------------------

ctypedef struct DenseArgs:
    const int8_t* x             # [N, K], or [N * H * W, K] (strided); int16 if wide
    int8_t* out                 # [N, C], or [N * OH * OW, C] (strided), int8 activations
    int16_t* out16              # the same, int16 activations
    bint wide                   # int16 activations (x, out16), else int8 (x, out)
    const int8_t* packed        # PackedDenseWeights.data
    const fx_requant* q         # requantization constants of the C channels
    Py_ssize_t n_rows, depth, channels, blocks, block_bytes
    Py_ssize_t row_bytes        # bytes of one row of x: K values of 1 or 2 bytes
    Py_ssize_t row_groups, channel_chunks
    bint scalar                 # run the scalar twin of the micro-kernel (tests)
    # strided: row (n, oh, ow) of out reads pixel (n, oh * stride_h, ow * stride_w) of x, an
    # NHWC image of in_h x in_w pixels (a 1x1 conv with strides)
    bint strided
    Py_ssize_t in_h, in_w, out_h, out_w, stride_h, stride_w


ctypedef struct RowCursor:
    # output row r = (n, oh, ow) of a strided call, and the pointer to its inputs (the first
    # byte of the row: int8 or int16 values)
    Py_ssize_t n, oh, ow
    const int8_t* x


cdef inline void cursor_at(const DenseArgs* a, Py_ssize_t r, RowCursor* c) noexcept nogil:
    """c for output row r (divisions: once per task)."""
    cdef Py_ssize_t p
    if not a.strided:
        c.x = a.x + r * a.row_bytes
        return
    c.n = r // (a.out_h * a.out_w)
    p = r - c.n * a.out_h * a.out_w
    c.oh = p // a.out_w
    c.ow = p - c.oh * a.out_w
    c.x = a.x + ((c.n * a.in_h + c.oh * a.stride_h) * a.in_w + c.ow * a.stride_w) * a.row_bytes


cdef inline void cursor_next(const DenseArgs* a, RowCursor* c) noexcept nogil:
    """c for the next output row."""
    if not a.strided:
        c.x += a.row_bytes
        return
    c.ow += 1
    c.x += a.stride_w * a.row_bytes
    if c.ow == a.out_w:                 # next row of output pixels, or next image
        c.ow = 0
        c.oh += 1
        if c.oh == a.out_h:
            c.oh = 0
            c.n += 1
        c.x = a.x + ((c.n * a.in_h + c.oh * a.stride_h) * a.in_w) * a.row_bytes


cdef inline Py_ssize_t dense_n_tasks(const DenseArgs* a) noexcept nogil:
    return a.row_groups * a.channel_chunks


ctypedef struct TaskSpan:
    # the rows [r0, r1) and channel blocks [b0, b1) of one task
    Py_ssize_t r0, r1, b0, b1


cdef inline TaskSpan task_span(const DenseArgs* a, Py_ssize_t t, Py_ssize_t nr) noexcept nogil:
    """Task t covers rows [TASK_ROWS g, +TASK_ROWS) and channel blocks (of nr channels)
    [TASK_CHANNELS / nr * h, ...), t = g * channel_chunks + h."""
    cdef TaskSpan s
    cdef Py_ssize_t g = t // a.channel_chunks, h = t - g * a.channel_chunks
    cdef Py_ssize_t blocks_per_chunk = TASK_CHANNELS // nr
    s.b0 = h * blocks_per_chunk
    s.b1 = s.b0 + blocks_per_chunk if s.b0 + blocks_per_chunk < a.blocks else a.blocks
    s.r0 = g * TASK_ROWS
    s.r1 = s.r0 + TASK_ROWS if s.r0 + TASK_ROWS < a.n_rows else a.n_rows
    return s


cdef void dense_tasks(const DenseArgs* a, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Tasks [first, last) (see the module docstring and task_span). Per tile of up to MR
    rows, its panel (qgemm.h) is built once and the chunk's blocks run on it; rows whose
    panel would exceed QD_PANEL_MAX (long K) go through the micro-kernel on row pointers.
    int16 activations: dense16_tasks. Only stack scratch: ranges may run on several threads
    at once."""
    cdef const int8_t* rows[QD_MR]
    cdef char panel[QD_PANEL_MAX]
    cdef RowCursor cur
    cdef TaskSpan span
    cdef Py_ssize_t t, b, b0, b1, r0, r1, r, mr, c0, nc
    cdef Py_ssize_t k_len = a.depth, c_len = a.channels
    cdef bint panels = qd_panel_bytes(1, k_len, QD_MR) <= QD_PANEL_MAX and not a.scalar
    cdef const int8_t* blk
    cdef int8_t* out
    if a.wide:
        dense16_tasks(a, first, last)
        return
    for t in range(first, last):
        span = task_span(a, t, QD_NR)
        b0, b1, r0, r1 = span.b0, span.b1, span.r0, span.r1
        cursor_at(a, r0, &cur)
        while r0 < r1:
            mr = r1 - r0 if r1 - r0 < QD_MR else QD_MR
            for r in range(mr):
                rows[r] = cur.x
                cursor_next(a, &cur)
            for r in range(mr, QD_MR):  # rows past the last repeat it
                rows[r] = rows[mr - 1]
            if panels:
                qd_panel_build(1, k_len, rows, 1 if mr == 1 else QD_MR, panel)
            b = b0
            while b < b1:
                blk = a.packed + b * a.block_bytes
                c0 = b * QD_NR
                nc = c_len - c0 if c_len - c0 < QD_NR else QD_NR
                out = a.out + r0 * c_len + c0
                if mr == 1 and b + 1 < b1 and not a.scalar:
                    # one row, two blocks at once: one activation load serves both
                    nc = c_len - c0 if c_len - c0 < 2 * QD_NR else 2 * QD_NR
                    if panels:
                        qd_row2_q8_panel(1, k_len, panel, blk, a.block_bytes, nc, a.q, c0, out)
                    else:
                        qd_row2_q8(1, k_len, rows, blk, a.block_bytes, nc, a.q, c0, out)
                    b += 2
                    continue
                if a.scalar:
                    qd_tile_q8_scalar(1, k_len, rows, blk, mr, nc, a.q, c0, out, c_len)
                elif panels and mr == 1:
                    qd_row_q8_panel(1, k_len, panel, blk, nc, a.q, c0, out)
                elif panels:
                    qd_tile_q8_panel(1, k_len, panel, blk, mr, nc, a.q, c0, out, c_len)
                elif mr == 1:
                    qd_row_q8(1, k_len, rows, blk, nc, a.q, c0, out)
                else:
                    qd_tile_q8(1, k_len, rows, blk, mr, nc, a.q, c0, out, c_len)
                b += 1
            r0 += mr


cdef void dense16_tasks(const DenseArgs* a, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """dense_tasks on int16 activations (csrc/qgemm16.h): per tile of up to Q16_MR rows, the
    int16 row pointers (no panel: there is nothing to widen) and one fused micro-kernel call
    per block of the chunk; a single row takes the one-row kernel."""
    cdef const int16_t* rows[Q16_MR]
    cdef RowCursor cur
    cdef TaskSpan span
    cdef Py_ssize_t t, b, r0, r, mr, c0, nc
    cdef Py_ssize_t k_len = a.depth, c_len = a.channels
    cdef const int8_t* blk
    cdef int16_t* out
    for t in range(first, last):
        span = task_span(a, t, Q16_NR)
        r0 = span.r0
        cursor_at(a, r0, &cur)
        while r0 < span.r1:
            mr = span.r1 - r0 if span.r1 - r0 < Q16_MR else Q16_MR
            for r in range(mr):
                rows[r] = <const int16_t*>cur.x
                cursor_next(a, &cur)
            for r in range(mr, Q16_MR):  # rows past the last repeat it
                rows[r] = rows[mr - 1]
            for b in range(span.b0, span.b1):
                blk = a.packed + b * a.block_bytes
                c0 = b * Q16_NR
                nc = c_len - c0 if c_len - c0 < Q16_NR else Q16_NR
                out = a.out16 + r0 * c_len + c0
                if a.scalar:
                    q16_tile_q16_scalar(1, k_len, rows, blk, mr, nc, a.q, c0, out, c_len)
                elif mr == 1:
                    q16_row_q16(1, k_len, rows, blk, nc, a.q, c0, out)
                else:
                    q16_tile_q16(1, k_len, rows, blk, mr, nc, a.q, c0, out, c_len)
            r0 += mr


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class DenseCall(KernelCall):
    """dense with its arguments checked once: ``DenseCall(...)()`` runs the kernel.

    Reads x on every call and rewrites out in full; w and bias are read once (packed), m0
    and shift once, here. x and out are both int8 or both int16 (the activation type of the
    call; int16: out_zp 0, act_min / act_max in int16). ``packed``: the result of
    ``pack_dense_weights(w, bias, bits)`` for these very arrays and this activation type
    (shared by every Call of a layer); by default they are packed here.
    ``scalar=True`` runs the scalar twin of the micro-kernel (same packing; for tests).
    ``rounding``: "double" (multiply_by_quantized_multiplier, fixnet's rule) or, int8 only,
    "single": one rounding of the exact int64 product acc * m0[c], ties away from zero, no
    left shift (TFLite 2.21's reference FULLY_CONNECTED; oracle
    ``multiply_by_quantized_multiplier_single``), in the same micro-kernels' epilogue
    (csrc/requant.h, FX_RQ_SINGLE).
    ``pixels=(H, W, OH, OW, stride_h, stride_w)``: x holds NHWC images of H x W pixels and out
    row (n, oh, ow) is computed from pixel (n, oh * stride_h, ow * stride_w): a 1x1 conv with
    strides (out then [N * OH * OW, C]).
    Tasks (``n_tasks``, fixnet/_kernels/_step.pyx): groups of rows times chunks of output
    channels (see dense_tasks), with no shared scratch, so disjoint ranges may run on several
    threads.
    """
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef const int16_t[:, ::1] x16
    cdef int16_t[:, ::1] out16
    cdef readonly PackedDenseWeights packed
    cdef DenseArgs args
    cdef fx_requant q
    cdef void* q_block            # owns q's arrays

    def __init__(self, x not None, const int8_t[:, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
                 out not None, PackedDenseWeights packed=None, bint scalar=False, pixels=None,
                 rounding="double"):
        cdef const int8_t[:, ::1] x8 = None
        cdef int8_t[:, ::1] out8 = None
        cdef const int16_t[:, ::1] x16 = None
        cdef int16_t[:, ::1] out16 = None
        cdef int bits = activation_bits("dense", x, out)
        cdef Py_ssize_t n_rows, k_len, out_rows, out_cols, n_channels = w.shape[0]
        cdef Py_ssize_t in_h = 0, in_w = 0, out_h = 0, out_w = 0, stride_h = 1, stride_w = 1
        cdef fx_requant q
        cdef void* q_block
        if bits == 8:
            x8, out8 = x, out
            n_rows, k_len, out_rows, out_cols = x8.shape[0], x8.shape[1], out8.shape[0], out8.shape[1]
        else:
            x16, out16 = x, out
            n_rows, k_len, out_rows, out_cols = x16.shape[0], x16.shape[1], out16.shape[0], out16.shape[1]
        if rounding not in ("double", "single"):
            raise ValueError(f"dense: rounding {rounding!r} is not 'double' or 'single'")
        if rounding == "single" and bits != 8:
            raise ValueError("dense: rounding='single' is for int8 activations (x and out "
                             "int8)")
        if w.shape[1] != k_len:
            raise ValueError(f"dense: w has shape ({w.shape[0]}, {w.shape[1]}), expected "
                             f"(C, {k_len}): one row of K = x.shape[1] = {k_len} weights per channel")
        per_channel = "one per output channel, C = w.shape[0]"
        check_length("dense", "bias", bias.shape[0], n_channels, per_channel)
        check_length("dense", "m0", m0.shape[0], n_channels, per_channel)
        check_length("dense", "shift", shift.shape[0], n_channels, per_channel)
        if pixels is not None:
            in_h, in_w, out_h, out_w, stride_h, stride_w = pixels
            if (min(in_h, in_w, out_h, out_w, stride_h, stride_w) < 1
                    or (out_h - 1) * stride_h >= in_h or (out_w - 1) * stride_w >= in_w
                    or n_rows % (in_h * in_w)):
                raise ValueError(f"dense: pixels = {pixels!r} must be (H, W, OH, OW, stride_h, "
                                 f"stride_w) >= 1 with (OH - 1) * stride_h < H, (OW - 1) * "
                                 f"stride_w < W, and x.shape[0] = {n_rows} a multiple of H * W")
            n_rows = n_rows // (in_h * in_w) * out_h * out_w
        if out_rows != n_rows or out_cols != n_channels:
            raise ValueError(f"dense: out has shape ({out_rows}, {out_cols}), "
                             f"expected (N, C) = ({n_rows}, {n_channels})")
        if bits == 8:
            check_output_range("dense", out_zp, act_min, act_max)
        else:
            check_int16_output("dense", out_zp, act_min, act_max)
        if n_channels:
            check_multipliers("dense", &m0[0], &shift[0], n_channels)
        if packed is None:
            packed = pack_dense_weights(w.base if w.base is not None else np.asarray(w),
                                        bias.base if bias.base is not None else np.asarray(bias),
                                        bits)
        elif (packed.channels != n_channels or packed.depth != k_len
              or (n_channels and k_len and packed.w_src != &w[0, 0])
              or (n_channels and packed.bias_src != &bias[0])):
            raise ValueError(f"dense: packed holds the weights of other arrays "
                             f"({packed.channels} x {packed.depth}); pass "
                             f"pack_dense_weights(w, bias, {bits}) of this w and bias")
        elif packed.bits != bits:
            raise ValueError(f"dense: packed is packed for int{packed.bits} activations, x and "
                             f"out are int{bits}; pass pack_dense_weights(w, bias, bits={bits})")
        # Last (after every check), so that a failed re-initialisation leaves the object as
        # it was.
        q_block = PyMem_Malloc(fx_requant_bytes(n_channels))
        if q_block == NULL:
            raise MemoryError(f"dense: cannot allocate the requantization constants of "
                              f"{n_channels} channels")
        fx_requant_init_rounding(&q, q_block, &m0[0] if n_channels else NULL,
                                 &shift[0] if n_channels else NULL, n_channels, out_zp,
                                 act_min, act_max, rounding == "single")
        PyMem_Free(self.q_block)     # __init__ may run twice on one object
        self.q, self.q_block = q, q_block
        self.x, self.out, self.x16, self.out16, self.packed = x8, out8, x16, out16, packed
        cdef DenseArgs* a = &self.args
        a.wide = bits == 16
        a.x = NULL
        a.out = NULL
        a.out16 = NULL
        if n_rows and k_len:
            a.x = &x8[0, 0] if bits == 8 else <const int8_t*>&x16[0, 0]
        if n_rows and n_channels:
            if bits == 8:
                a.out = &out8[0, 0]
            else:
                a.out16 = &out16[0, 0]
        a.row_bytes = k_len * (bits // 8)
        a.packed = packed.packed
        a.q = &self.q
        a.n_rows = n_rows if n_channels else 0
        a.depth, a.channels = k_len, n_channels
        a.blocks, a.block_bytes = packed.blocks, packed.block_bytes
        a.row_groups = ceil_div(a.n_rows, TASK_ROWS)
        a.channel_chunks = ceil_div(n_channels, TASK_CHANNELS)
        a.scalar = scalar
        a.strided = pixels is not None
        a.in_h, a.in_w, a.out_h, a.out_w = in_h, in_w, out_h, out_w
        a.stride_h, a.stride_w = stride_h, stride_w
        self.n_tasks = dense_n_tasks(a)
        self.splittable = True
        self.work_share = <double>a.n_rows * n_channels * (k_len + 8) / NOGIL_MIN_WORK

    def __dealloc__(self):
        PyMem_Free(self.q_block)
        self.q_block = NULL

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        dense_tasks(&self.args, first, last)


def dense(x not None, const int8_t[:, ::1] w not None, const int32_t[::1] bias not None,
          const int32_t[::1] m0 not None, const int32_t[::1] shift not None, int out_zp,
          int act_min, int act_max, out not None):
    """out[n, c] = clamp(out_zp + MBQM(bias[c] + sum_k x[n, k] * w[c, k], m0[c], shift[c]),
    act_min, act_max), MBQM = multiply_by_quantized_multiplier.

    x: int8 or int16 [N, K] activations (int8: the input zero point is folded into bias by
    the quantizer; int16: symmetric, zero point 0).
    w: int8 [C, K] weights, one contiguous row per output channel, values in [-127, 127].
    bias, m0, shift: int32 [C]; m0 in [2^30, 2^31) or 0, shift in [-31, 30].
    out_zp, act_min, act_max: the output zero point and clamp bounds (fused activation) in
    x's type: int8, or for int16 out_zp = 0 and bounds in [-32768, 32767].
    out: [N, C] of x's dtype, written in full. The int32 accumulator wraps modulo 2^32 if the
    quantizer's overflow proof does not hold (oracle.dense_accumulators detects that).
    """
    DenseCall(x, w, bias, m0, shift, out_zp, act_min, act_max, out)()

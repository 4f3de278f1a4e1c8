# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""2-D convolutions on int8 (NHWC): conv2d (with groups) and depthwise_conv2d; conv2d on int16
activations too.

Bit-exact with ``fixnet.oracle.conv2d`` / ``fixnet.oracle.depthwise_conv2d``. Private:
fixnet.runtime plans the calls.

Calling pattern: ``Conv2dCall(...)`` / ``DepthwiseConv2dCall(...)`` take exactly the
arguments of ``conv2d`` / ``depthwise_conv2d``: the arrays and one ``params`` mapping (the
fields of ``conv2d_params`` / ``depthwise_params`` in params.pxd, named in ``CONV2D_PARAMS``
/ ``DEPTHWISE_PARAMS``; a missing or unknown key is an error). They check every shape and
parameter once, keep references to the arrays and precompute what does not depend on x;
calling the object runs the kernel on whatever x holds now, without re-checking.
``conv2d(...)`` is ``Conv2dCall(...)()``.

Padding: a tap outside the input reads ``pad_value`` (the caller passes the input zero
point, real 0.0), at the top/left (pad_top, pad_left) as at the bottom/right, which is
implied by the output size. Accumulators wrap modulo 2^32 like dense's, if the quantizer's
overflow proof does not hold (oracle.conv2d_accumulators detects that).

conv2d is an indirect GEMM (no im2col copy):

* Weights and bias are packed once (``pack_conv_weights``; ConvStep does it at quantize time
  and shares the result with every arena's Call) in the layout of this build's micro-kernel
  (``csrc/qgemm.h``; ``GEMM_ISA``, ``GEMM_TILE`` = (MR, NR, KR)): per group and block of NR
  output channels, NR int32 biases, then every tap's weights with K interleaved by KR,
  zero-padded to the tile. The VNNI kernel multiplies (x + 128) as uint8: its packed bias
  holds bias - 128 * sum w (exact modulo 2^32). The input zero point is already in the
  quantizer's bias (bias_eff = ... - x_zp * sum w), padding taps read x_zp itself.
* Indirection: ``tap_offsets`` gives, once per geometry, per tile of MR output pixels and
  per tap the pixels' offsets in one image (-1 for a tap in the padding): the same table for
  every image of a batch. A task (a tile of one image) turns them into row pointers on its
  stack (one vectorised loop), the padding taps pointing at a row of pad_value, so the
  micro-kernel has no branch per tap.
  It reads exactly Cin // groups bytes per row (the tail of a K step through a zero-filled
  copy), never past the input.
* Per tile and block of NR channels one fused micro-kernel call: it accumulates every tap,
  requantizes on its accumulators (csrc/requant.h, bit-exact with requantize_accumulator;
  per-channel constants derived from m0 and shift once, when the Call is built: x is read at
  every call, w, bias, m0 and shift only then) and stores int8; a tile of one pixel takes the
  one-row kernel. A layer of more than TAP_CHUNK taps sums them in chunks into int32
  accumulators of up to CH_CHUNK channels on the stack, requantized afterwards.
* A 1x1 conv without padding does not come here: fixnet.ops.conv.ConvStep runs it as dense
  (_dense.pyx), and a conv over one input channel as a depthwise conv with multiplier Cout.
* ``n_tasks`` tiles (batch included) make a call; ``run_tasks(first, last)`` runs a range of
  them with no shared scratch, so disjoint ranges may run on several threads at once.
* Each micro-kernel has a scalar twin over the same packing (``scalar=True``), which the
  tests hold bit-exact with it and with the oracle in every build.
* int16 activations (TFLite's 16x8: symmetric, zero point 0; x and out both int16) run the
  same indirect GEMM on the int16 micro-kernels (csrc/qgemm16.h; ``GEMM16_ISA``,
  ``GEMM16_TILE``) over weights packed for them (``pack_conv_weights(w, bias, groups,
  bits=16)``): the row pointers point at int16 rows, padding taps at a row of zeros (the
  zero point; pad_value must be 0); patch mode when Cin is not a multiple of the int16
  kernel's K step (Q16_KSTEP).

depthwise_conv2d: a row driver and micro-kernels in C, csrc/dwconv.h (its header describes
the lanes over pixels x channels, the phase rows and the packing; the vector tile per ISA in
dwconv_x86.h and dwconv_neon.h, chosen by the compiler flags of each ISA build, and a scalar
twin over the same packing). int8 or int16 activations (x and out of one type; int16 x int8
products summed in int32 by its own micro-kernels, csrc/dwconv16*.h, over the same driver).
Weights and bias are packed once for the expanded lanes and the activation type
(pack_depthwise_weights, cached by fixnet.ops.conv.DepthwiseStep); each Call owns read-only
per-call data: the requantization constants of the expanded lanes and a row of pad_value
values. A DepthwiseConv2dCall has no mutable scratch: ``run_tasks`` on disjoint task ranges
(bands of output rows of one image, segments of columns) may run on several threads at
once.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy, memset
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t

import math

import numpy as np

from fixnet._kernels.gemm_pack import (activation_bits, check_int16_output, check_weights,
                                        pack_gemm)

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.requant cimport (
    FX_REQUANT_ISA,
    fx_requant,
    fx_requant_bytes,
    fx_requant_init,
    fx_requant_rows,
    fx_requant_rows_scalar,
)
from fixnet._kernels.fixedpoint cimport (
    check_int8,
    check_length,
    check_multipliers,
    check_output_range,
    check_params,
)
from fixnet._kernels.params cimport conv2d_params, depthwise_params

# Release the GIL only when a call does more than about this many multiply-adds: below it,
# releasing and re-acquiring costs more than other threads could gain.
cdef enum:
    NOGIL_MIN_WORK = 20000



cdef void* new_requant(fx_requant* q, const int32_t[::1] m0, const int32_t[::1] shift,
                       int out_zp, int act_min, int act_max) except NULL:
    """Fill q for m0, shift [C] (already checked); returns the memory block q points into,
    which the caller owns (PyMem_Free)."""
    cdef Py_ssize_t n = m0.shape[0]
    cdef void* block = PyMem_Malloc(fx_requant_bytes(n))
    if block == NULL:
        raise MemoryError(f"cannot allocate the requantization constants of {n} channels")
    fx_requant_init(q, block, &m0[0] if n else NULL, &shift[0] if n else NULL, n, out_zp,
                    act_min, act_max)
    return block


# The epilogue of this build ("avx2", "neon", or "scalar" where requant.h has no vector form).
REQUANT_ISA = FX_REQUANT_ISA.decode()


# The keys of a params mapping: the fields of the structs (params.pxd), in order.
cdef conv2d_params _conv2d_fields
cdef depthwise_params _depthwise_fields
CONV2D_PARAMS = tuple(<dict>_conv2d_fields)
DEPTHWISE_PARAMS = tuple(<dict>_depthwise_fields)


cdef int check_window(str kernel, int stride_h, int stride_w, int dilation_h, int dilation_w,
                      int pad_top, int pad_left) except -1:
    """Strides and dilations >= 1, paddings >= 0; ValueError naming the first bad one."""
    for name, value, low in (("stride_h", stride_h, 1), ("stride_w", stride_w, 1),
                             ("dilation_h", dilation_h, 1), ("dilation_w", dilation_w, 1),
                             ("pad_top", pad_top, 0), ("pad_left", pad_left, 0)):
        if value < low:
            raise ValueError(f"{kernel}: {name} = {value} must be >= {low}")
    return 0


# ---- conv2d: packed weights, indirect GEMM ---------------------------------------------------

cdef extern from "qgemm.h" nogil:
    const char* QG_ISA
    enum:
        QG_MR
        QG_NR
        QG_KR
        QG_UINT8_INPUT
        QG_W16
    void qg_pointers(const int32_t* offs, size_t n, const int8_t* image, const int8_t* pad_row,
                     size_t c0, const int8_t** ptrs)
    void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* w,
                 const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
    void qg_tile_scalar(size_t taps, size_t cin, const int8_t** a, const void* w,
                        const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
    void qg_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block, size_t mr,
                    size_t nc, const fx_requant* q, size_t c0, int8_t* out, size_t out_stride)
    void qg_tile_q8_scalar(size_t taps, size_t cin, const int8_t** a, const void* block,
                           size_t mr, size_t nc, const fx_requant* q, size_t c0, int8_t* out,
                           size_t out_stride)
    void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block, size_t nc,
                   const fx_requant* q, size_t c0, int8_t* out)
    void qg_row2_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                    size_t block_bytes, size_t nc, const fx_requant* q, size_t c0, int8_t* out)

cdef extern from "qgemm16.h" nogil:
    const char* Q16_ISA
    enum:
        Q16_MR
        Q16_NR
        Q16_KR
        Q16_KSTEP
        Q16_W16
        Q16_INPUT_OFFSET
    void q16_pointers(const int32_t* offs, size_t n, const int16_t* image,
                      const int16_t* pad_row, size_t c0, const int16_t** ptrs)
    void q16_tile(size_t taps, size_t cin, const int16_t** a, const void* w,
                  const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
    void q16_tile_scalar(size_t taps, size_t cin, const int16_t** a, const void* w,
                         const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
    void q16_tile_q16(size_t taps, size_t cin, const int16_t** a, const void* block, size_t mr,
                      size_t nc, const fx_requant* q, size_t c0, int16_t* out, size_t out_stride)
    void q16_tile_q16_scalar(size_t taps, size_t cin, const int16_t** a, const void* block,
                             size_t mr, size_t nc, const fx_requant* q, size_t c0, int16_t* out,
                             size_t out_stride)
    void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block, size_t nc,
                     const fx_requant* q, size_t c0, int16_t* out)
    void q16_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows, size_t n,
                          const fx_requant* q, size_t c0, int16_t* out, size_t out_stride)
    void q16_requant_rows_scalar(const int32_t* acc, size_t acc_stride, size_t rows, size_t n,
                                 const fx_requant* q, size_t c0, int16_t* out,
                                 size_t out_stride)

# The activation types of conv2d's GEMM drivers (long_tile is written once for both).
ctypedef fused act_t:
    int8_t
    int16_t

cdef enum:
    # Stack buffers of one task (qgemm.h and qgemm16.h check QG_MR, Q16_MR <= MR_MAX): the
    # row pointers of up to TAP_CHUNK taps of one tile of pixels, and the accumulators of up
    # to CH_CHUNK channels.
    MR_MAX = 8
    TAP_CHUNK = 32
    CH_CHUNK = 256
    # Patch mode (a first layer on RGB or grey images): when Cin is not a multiple of the
    # kernel's K step (int8: KR; int16: Q16_KSTEP) and a pixel's whole window holds at most
    # PATCH_K_MAX values, a task copies each pixel's window into one row on its stack
    # (zero-padded to a multiple of KR) and runs the micro-kernel on one "tap" of that
    # length, instead of one short K step with a tail per tap. The weights are packed for
    # that shape (patch_k).
    PATCH_K_MAX = 160

# The micro-kernel of this build: its name and tile (pixels MR x channels NR, K steps of KR).
GEMM_ISA = QG_ISA.decode()
GEMM_TILE = (QG_MR, QG_NR, QG_KR)
# The same for int16 activations (csrc/qgemm16.h), and the input channels one pass of its K
# loop takes (patch mode below it).
GEMM16_ISA = Q16_ISA.decode()
GEMM16_TILE = (Q16_MR, Q16_NR, Q16_KR)
GEMM16_K_STEP = Q16_KSTEP


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


@cython.auto_pickle(False)
cdef class PackedConvWeights:
    """The weights and bias of one conv2d in this build's micro-kernel layout for one
    activation type (``bits`` 8: qgemm.h, GEMM_TILE; 16: qgemm16.h, GEMM16_TILE, int8
    weights on AVX2 and int16 elsewhere, no uint8 offset), made by
    ``pack_conv_weights(w, bias, groups, bits)``; read-only, shared by every Call of that conv.

    ``data`` is int8 [groups * blocks_per_group, block_bytes]: per group and block of NR =
    GEMM_TILE[1] output channels, NR int32 biases (bias[c]; in builds whose kernel offsets
    the activations to uint8 (VNNI), bias[c] - 128 * sum_k w[c, k], modulo 2^32), then for
    every tap (kh, kw) and every group of KR input channels (Cin // groups rounded up to KR)
    the NR x KR weights, channel-major (int16 in the SSE2 and AVX2 builds, whose kernels
    multiply int16, else int8); channels and input channels beyond the layer's are zero."""
    cdef readonly Py_ssize_t out_c, kernel_h, kernel_w, in_c_group, groups
    cdef readonly Py_ssize_t blocks_per_group, k_groups, block_bytes
    cdef readonly Py_ssize_t patch_k    # patch mode: the padded window length (else 0)
    cdef readonly int bits              # the activation type it is packed for: 8 or 16
    cdef readonly object data        # the packed int8 array
    cdef readonly object source_w    # the arrays it was packed from (kept alive)
    cdef readonly object source_bias
    cdef const int8_t* w_src
    cdef const int32_t* bias_src
    cdef const int8_t* packed

    def __repr__(self):
        isa, tile = (GEMM_ISA, GEMM_TILE) if self.bits == 8 else (GEMM16_ISA, GEMM16_TILE)
        return (f"<PackedConvWeights Cout={self.out_c} {self.kernel_h}x{self.kernel_w}x"
                f"{self.in_c_group} groups={self.groups} int{self.bits} activations "
                f"({isa} tile {tile})>")


def pack_conv_weights(w not None, bias not None, int groups=1, int bits=8):
    """Pack conv2d weights w int8 [Cout, KH, KW, Cin // groups] (values in [-127, 127]) and
    bias int32 [Cout] for Conv2dCall (``packed=``) on activations of ``bits`` bits: 8 for
    int8 x and out, 16 for int16 (a step passes its own ``bits``; a Conv2dCall refuses a
    packing of the other type). Do it once per weight array: the Call reads only the packed
    copy, so w and bias must not change in place afterwards."""
    cdef const int8_t[:, :, :, ::1] w_view = w
    cdef const int32_t[::1] bias_view = bias
    cdef PackedConvWeights p = PackedConvWeights.__new__(PackedConvWeights)
    cdef Py_ssize_t cout = w_view.shape[0], kh = w_view.shape[1], kw = w_view.shape[2]
    cdef Py_ssize_t cin_g = w_view.shape[3], taps
    if groups < 1 or cout % groups:
        raise ValueError(f"conv2d: groups = {groups} must be >= 1 and divide the output "
                         f"channels Cout = w.shape[0] = {cout}")
    check_length("conv2d", "bias", bias_view.shape[0], cout,
                 "one per output channel, Cout = w.shape[0]")
    if bits not in (8, 16):
        raise ValueError(f"conv2d: bits = {bits}: activations are int8 (8) or int16 (16)")
    w_array = np.asarray(w_view)
    check_weights("conv2d", w_array)
    taps = kh * kw
    patch_k = (patch_length(kh, kw, cin_g, groups, QG_KR, QG_KR) if bits == 8
               else patch_length(kh, kw, cin_g, groups, Q16_KSTEP, Q16_KR))
    if patch_k:     # one tap whose K is the whole window, (kh, kw, ci) flattened
        w_array = w_array.reshape(cout, 1, taps * cin_g)
    else:
        w_array = w_array.reshape(cout, taps, cin_g)
    if bits == 8:
        data, nbg, kg = pack_gemm(w_array, bias_view, groups, QG_NR, QG_KR, QG_W16,
                                  128 * QG_UINT8_INPUT)
    else:
        data, nbg, kg = pack_gemm(w_array, bias_view, groups, Q16_NR, Q16_KR, Q16_W16,
                                  Q16_INPUT_OFFSET)
    p.bits = bits
    p.out_c, p.kernel_h, p.kernel_w, p.in_c_group, p.groups = cout, kh, kw, cin_g, groups
    p.blocks_per_group, p.k_groups, p.block_bytes = nbg, kg, data.shape[1]
    p.patch_k = patch_k
    p.data, p.source_w, p.source_bias = data, w, bias
    p.w_src = &w_view[0, 0, 0, 0] if w_array.size else NULL
    p.bias_src = &bias_view[0] if cout else NULL
    p.packed = <const int8_t*><size_t>data.ctypes.data
    return p


cdef inline Py_ssize_t patch_length(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t cin_g,
                                    Py_ssize_t groups, Py_ssize_t k_step,
                                    Py_ssize_t kr) noexcept:
    """The padded window length of patch mode (see PATCH_K_MAX; the window rounded up to the
    packing's kr), or 0 if the conv does not use it (Cin a multiple of the kernel's K step
    k_step)."""
    cdef Py_ssize_t padded = ceil_div(kh * kw * cin_g, kr) * kr
    if groups == 1 and kh * kw > 1 and cin_g % k_step != 0 and padded <= PATCH_K_MAX:
        return padded
    return 0


cdef struct GemmConv:
    # Everything one task reads; nothing in it is written by a task.
    const int8_t* x                 # [N, H, W, Cin]
    int8_t* out                     # [N, OH, OW, Cout]
    const int8_t* packed            # PackedConvWeights.data
    const int32_t* offsets          # [tiles, taps, MR]: image offset of each row, -1: padding
    const int8_t* pad_row           # Cin copies of pad_value
    # int16 activations (wide): x16, out16 and pad_row16 (Cin zeros) instead of x, out and
    # pad_row; MR is then Q16_MR
    bint wide
    const int16_t* x16
    int16_t* out16
    const int16_t* pad_row16
    Py_ssize_t image_len, pixels, tiles, taps, kernel_w, in_c, in_c_group, out_c, out_c_group
    Py_ssize_t groups, blocks_per_group, k_groups, block_bytes
    Py_ssize_t patch_k              # patch mode: the padded window length (else 0)
    bint scalar                     # run the scalar twin of the micro-kernel (tests)


cdef inline void blocks_q8(const GemmConv* a, size_t taps, size_t cin, const int8_t** ptrs,
                          Py_ssize_t grp, Py_ssize_t mr, const fx_requant* q,
                          int8_t* out_rows) noexcept nogil:
    """Every block of QG_NR channels of group grp for one tile: mr pixels whose tap rows are
    ptrs[t * QG_MR + r], one fused micro-kernel call each (accumulate, requantize, store
    int8); a tile of one pixel (the last of an image) takes the one-row kernel, which
    computes no padding rows, on two blocks at a time where there are two (qg_row2_q8). scalar: the scalar twin."""
    cdef const int8_t* row[TAP_CHUNK]
    cdef Py_ssize_t b, c0, nc
    cdef size_t t
    cdef const int8_t* blk
    if mr == 1:
        for t in range(taps):
            row[t] = ptrs[t * QG_MR]
    b = 0
    while b < a.blocks_per_group:
        c0 = grp * a.out_c_group + b * QG_NR
        nc = a.out_c_group - b * QG_NR
        blk = a.packed + (grp * a.blocks_per_group + b) * a.block_bytes
        if mr == 1 and b + 1 < a.blocks_per_group and not a.scalar:
            # one row, two blocks at once: one activation load serves both
            qg_row2_q8(taps, cin, row, blk, a.block_bytes, nc if nc < 2 * QG_NR else 2 * QG_NR,
                       q, c0, out_rows + c0)
            b += 2
            continue
        nc = nc if nc < QG_NR else QG_NR
        if a.scalar:
            qg_tile_q8_scalar(taps, cin, ptrs, blk, mr, nc, q, c0, out_rows + c0, a.out_c)
        elif mr == 1:
            qg_row_q8(taps, cin, row, blk, nc, q, c0, out_rows + c0)
        else:
            qg_tile_q8(taps, cin, ptrs, blk, mr, nc, q, c0, out_rows + c0, a.out_c)
        b += 1


cdef inline void blocks_q16(const GemmConv* a, size_t taps, size_t cin, const int16_t** ptrs,
                            Py_ssize_t grp, Py_ssize_t mr, const fx_requant* q,
                            int16_t* out_rows) noexcept nogil:
    """blocks_q8 on int16 activations (csrc/qgemm16.h): every block of Q16_NR channels of
    group grp for one tile, one fused micro-kernel call each; a tile of one pixel takes the
    one-row kernel. scalar: the scalar twin."""
    cdef const int16_t* row[TAP_CHUNK]
    cdef Py_ssize_t b, c0, nc
    cdef size_t t
    cdef const int8_t* blk
    if mr == 1:
        for t in range(taps):
            row[t] = ptrs[t * Q16_MR]
    for b in range(a.blocks_per_group):
        c0 = grp * a.out_c_group + b * Q16_NR
        nc = a.out_c_group - b * Q16_NR
        nc = nc if nc < Q16_NR else Q16_NR
        blk = a.packed + (grp * a.blocks_per_group + b) * a.block_bytes
        if a.scalar:
            q16_tile_q16_scalar(taps, cin, ptrs, blk, mr, nc, q, c0, out_rows + c0, a.out_c)
        elif mr == 1:
            q16_row_q16(taps, cin, row, blk, nc, q, c0, out_rows + c0)
        else:
            q16_tile_q16(taps, cin, ptrs, blk, mr, nc, q, c0, out_rows + c0, a.out_c)


cdef void conv2d16_tasks(const GemmConv* a, const fx_requant* q, Py_ssize_t first,
                         Py_ssize_t last) noexcept nogil:
    """conv2d_tasks on int16 activations: tiles of Q16_MR pixels, padding taps on the row of
    zeros, blocks_q16."""
    cdef const int16_t* ptrs[MR_MAX * TAP_CHUNK]
    cdef int16_t patch[MR_MAX * PATCH_K_MAX]
    cdef const int16_t* patch_rows[MR_MAX]
    cdef Py_ssize_t task, n, tile, p0, mr, grp
    cdef Py_ssize_t taps = a.taps, cin_g = a.in_c_group
    cdef const int16_t* image
    cdef int16_t* out_rows
    for task in range(first, last):
        n = task // a.tiles
        tile = task - n * a.tiles
        p0 = tile * Q16_MR
        mr = a.pixels - p0 if a.pixels - p0 < Q16_MR else Q16_MR
        image = a.x16 + n * a.image_len
        out_rows = a.out16 + (n * a.pixels + p0) * a.out_c
        if a.patch_k:      # one "tap" of patch_k values per pixel
            build_patches(a, tile, image, patch, patch_rows)
            blocks_q16(a, 1, a.patch_k, patch_rows, 0, mr, q, out_rows)
            continue
        if taps > TAP_CHUNK:
            long_tile(a, q, tile, image, mr, out_rows)
            continue
        for grp in range(a.groups):
            q16_pointers(a.offsets + tile * taps * Q16_MR, taps * Q16_MR, image, a.pad_row16,
                         grp * cin_g, ptrs)
            blocks_q16(a, taps, cin_g, ptrs, grp, mr, q, out_rows)


cdef void conv2d_tasks(const GemmConv* a, const fx_requant* q, Py_ssize_t first,
                       Py_ssize_t last) noexcept nogil:
    """Tasks [first, last): task i is the tile of QG_MR output pixels (i % tiles) of image
    i // tiles, all output channels. Per group: the row pointers of the tile's taps (padding
    taps point at pad_row; pixels beyond the last repeat it), then blocks_q8. A layer with
    more than TAP_CHUNK taps sums the taps in chunks into int32 accumulators of up to
    CH_CHUNK channels on the stack, requantized afterwards (long_tile). Scratch on the stack
    only. int16 activations: conv2d16_tasks."""
    cdef const int8_t* ptrs[MR_MAX * TAP_CHUNK]
    cdef int8_t patch[MR_MAX * PATCH_K_MAX]
    cdef const int8_t* patch_rows[MR_MAX]
    cdef Py_ssize_t task, n, tile, p0, mr, grp
    cdef Py_ssize_t taps = a.taps, cin_g = a.in_c_group, out_c = a.out_c
    cdef const int8_t* image
    cdef int8_t* out_rows
    if a.wide:
        conv2d16_tasks(a, q, first, last)
        return
    for task in range(first, last):
        n = task // a.tiles
        tile = task - n * a.tiles
        p0 = tile * QG_MR
        mr = a.pixels - p0 if a.pixels - p0 < QG_MR else QG_MR
        image = a.x + n * a.image_len
        out_rows = a.out + (n * a.pixels + p0) * out_c
        if a.patch_k:      # one "tap" of patch_k values per pixel
            build_patches(a, tile, image, patch, patch_rows)
            blocks_q8(a, 1, a.patch_k, patch_rows, 0, mr, q, out_rows)
        elif taps > TAP_CHUNK:
            long_tile(a, q, tile, image, mr, out_rows)
        else:
            for grp in range(a.groups):
                qg_pointers(a.offsets + tile * taps * QG_MR, taps * QG_MR, image, a.pad_row,
                            grp * cin_g, ptrs)
                blocks_q8(a, taps, cin_g, ptrs, grp, mr, q, out_rows)


cdef void long_tile(const GemmConv* a, const fx_requant* q, Py_ssize_t tile,
                    const act_t* image, Py_ssize_t mr, act_t* out_rows) noexcept nogil:
    """One tile of a layer with more than TAP_CHUNK taps: per group and chunk of up to
    CH_CHUNK channels, the taps in chunks of TAP_CHUNK (each chunk's row pointers on the
    stack) summed into int32 accumulators, then requantized while in L1. For int8 or int16
    activations (act_t), on that type's micro-kernels (qgemm.h, qgemm16.h)."""
    cdef const act_t* ptrs[MR_MAX * TAP_CHUNK]
    cdef int32_t acc[MR_MAX * CH_CHUNK]
    cdef Py_ssize_t grp, c_in0, b0, b1, b, width, t0, tn, c0, n_valid
    cdef Py_ssize_t taps = a.taps, cin_g = a.in_c_group
    cdef Py_ssize_t mr_tile = QG_MR if act_t is int8_t else Q16_MR
    cdef Py_ssize_t nr = QG_NR if act_t is int8_t else Q16_NR
    cdef Py_ssize_t tap_bytes = (a.k_groups * QG_NR * QG_KR * (2 if QG_W16 else 1)
                                 if act_t is int8_t else
                                 a.k_groups * Q16_NR * Q16_KR * (2 if Q16_W16 else 1))
    cdef const int8_t* blk
    cdef const int8_t* wts
    cdef const int32_t* init
    cdef Py_ssize_t init_stride
    for grp in range(a.groups):
        c_in0 = grp * cin_g
        b0 = 0
        while b0 < a.blocks_per_group:
            b1 = b0 + CH_CHUNK // nr
            if b1 > a.blocks_per_group:
                b1 = a.blocks_per_group
            width = (b1 - b0) * nr
            t0 = 0
            while t0 < taps:
                tn = taps - t0 if taps - t0 < TAP_CHUNK else TAP_CHUNK
                if act_t is int8_t:
                    qg_pointers(a.offsets + (tile * taps + t0) * mr_tile, tn * mr_tile, image,
                                a.pad_row, c_in0, ptrs)
                else:
                    q16_pointers(a.offsets + (tile * taps + t0) * mr_tile, tn * mr_tile, image,
                                 a.pad_row16, c_in0, ptrs)
                for b in range(b0, b1):
                    blk = a.packed + (grp * a.blocks_per_group + b) * a.block_bytes
                    wts = blk + nr * sizeof(int32_t) + t0 * tap_bytes
                    if t0 == 0:
                        init, init_stride = <const int32_t*>blk, 0
                    else:
                        init, init_stride = acc + (b - b0) * nr, width
                    sum_taps(a.scalar, tn, cin_g, ptrs, wts, init, init_stride,
                             acc + (b - b0) * nr, width)
                t0 += tn
            c0 = grp * a.out_c_group + b0 * nr
            n_valid = a.out_c_group - b0 * nr
            if n_valid > width:
                n_valid = width
            requant_rows(a.scalar, acc, width, mr, n_valid, q, c0, out_rows + c0, a.out_c)
            b0 = b1


cdef inline void sum_taps(bint scalar, size_t taps, size_t cin, const act_t** a, const void* w,
                          const int32_t* init, size_t init_stride, int32_t* c,
                          size_t c_stride) noexcept nogil:
    """The int32 tile kernel of act_t's micro-kernels (qg_tile, q16_tile), or its scalar twin."""
    if act_t is int8_t:
        if scalar:
            qg_tile_scalar(taps, cin, a, w, init, init_stride, c, c_stride)
        else:
            qg_tile(taps, cin, a, w, init, init_stride, c, c_stride)
    else:
        if scalar:
            q16_tile_scalar(taps, cin, a, w, init, init_stride, c, c_stride)
        else:
            q16_tile(taps, cin, a, w, init, init_stride, c, c_stride)


cdef inline void requant_rows(bint scalar, const int32_t* acc, size_t acc_stride, size_t rows,
                              size_t n, const fx_requant* q, size_t c0, act_t* out,
                              size_t out_stride) noexcept nogil:
    """int32 rows requantized to act_t (requant.h's rows, qgemm16.h's), or the scalar twin."""
    if act_t is int8_t:
        if scalar:
            fx_requant_rows_scalar(acc, acc_stride, rows, n, q, c0, out, out_stride)
        else:
            fx_requant_rows(acc, acc_stride, rows, n, q, c0, out, out_stride)
    else:
        if scalar:
            q16_requant_rows_scalar(acc, acc_stride, rows, n, q, c0, out, out_stride)
        else:
            q16_requant_rows(acc, acc_stride, rows, n, q, c0, out, out_stride)


cdef inline void copy_small(int8_t* dst, const int8_t* src, Py_ssize_t n) noexcept nogil:
    """n bytes, n small (a patch's piece): moves of 8, 4, 2 and 1 bytes, no library call."""
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(dst + i, src + i, 8)
        i += 8
    if i + 4 <= n:
        memcpy(dst + i, src + i, 4)
        i += 4
    if i + 2 <= n:
        memcpy(dst + i, src + i, 2)
        i += 2
    if i < n:
        dst[i] = src[i]


cdef void build_patches(const GemmConv* a, Py_ssize_t tile, const act_t* image,
                       act_t* patch, const act_t** rows) noexcept nogil:
    """Patch mode: row r of ``patch`` (patch_k values, r < MR of act_t's kernel) is the
    window of the tile's pixel r, tap-major (the padding taps read the pad row), zero-filled
    after taps * Cin. A kernel row whose taps are consecutive pixels inside the image (no
    padding, no dilation) is one copy of KW * Cin values; other kernel rows go tap by tap."""
    cdef Py_ssize_t r, t, kh, kw = a.kernel_w, cin = a.in_c, taps = a.taps, used = a.taps * a.in_c
    cdef Py_ssize_t size = sizeof(act_t), mr = QG_MR if act_t is int8_t else Q16_MR
    cdef const int32_t* offs = a.offsets + tile * taps * mr
    cdef int32_t off, first, last
    cdef act_t* row
    cdef const act_t* src
    cdef const act_t* pad_row
    if act_t is int8_t:
        pad_row = a.pad_row
    else:
        pad_row = a.pad_row16
    for r in range(mr):
        row = patch + r * a.patch_k
        for kh in range(taps // kw):
            t = kh * kw
            first = offs[t * mr + r]
            last = offs[(t + kw - 1) * mr + r]
            if first >= 0 and last == first + (kw - 1) * cin:
                copy_small(<int8_t*>(row + t * cin), <const int8_t*>(image + first),
                           kw * cin * size)
                continue
            for t in range(kh * kw, kh * kw + kw):
                off = offs[t * mr + r]
                src = (image + off) if off >= 0 else pad_row
                copy_small(<int8_t*>(row + t * cin), <const int8_t*>src, cin * size)
        memset(row + used, 0, (a.patch_k - used) * size)
        rows[r] = row


def tap_offsets(in_hwc, out_hw, kernel_hw, params, Py_ssize_t tile=1):
    """The indirection table of one conv geometry: int32 [tiles, KH * KW, tile], for each
    tile of ``tile`` output pixels (row-major; the last tile repeats its last pixel) and each
    tap, the offset in one image [H, W, Cin] of the input pixel the tap reads, or -1 where it
    lies in the padding. The same for every image of a batch.

    in_hwc: (H, W, Cin); out_hw: (OH, OW); kernel_hw: (KH, KW); params: conv2d's mapping
    (CONV2D_PARAMS; its window fields place the taps)."""
    cdef conv2d_params p
    check_params("conv2d", params, CONV2D_PARAMS)
    p = params
    check_window("conv2d", p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                 p.pad_left)
    (in_h, in_w, in_c), (out_h, out_w), (kernel_h, kernel_w) = in_hwc, out_hw, kernel_hw
    return offset_table(in_h, in_w, in_c, out_h, out_w, kernel_h, kernel_w, &p, tile)


cdef object offset_table(Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c, Py_ssize_t out_h,
                         Py_ssize_t out_w, Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                         const conv2d_params* p, Py_ssize_t tile):
    """tap_offsets for checked arguments."""
    oh = np.arange(out_h, dtype=np.int64)[:, None, None, None]
    ow = np.arange(out_w, dtype=np.int64)[None, :, None, None]
    kh = np.arange(kernel_h, dtype=np.int64)[None, None, :, None]
    kw = np.arange(kernel_w, dtype=np.int64)[None, None, None, :]
    ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h
    iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w
    inside = (ih >= 0) & (ih < in_h) & (iw >= 0) & (iw < in_w)
    offsets = np.where(inside, (ih * in_w + iw) * in_c, -1)
    pixels, taps = out_h * out_w, kernel_h * kernel_w
    offsets = offsets.reshape(pixels, taps)
    tiles = ceil_div(pixels, tile)
    if pixels:
        offsets = offsets[np.minimum(np.arange(tiles * tile), pixels - 1)]
    table = offsets.reshape(tiles, tile, taps).transpose(0, 2, 1)
    return np.ascontiguousarray(table, np.int32)


@cython.auto_pickle(False)
cdef class Conv2dCall(KernelCall):
    """conv2d with its arguments checked once; calling the object runs it (see conv2d).

    ``params`` (the conv2d_params struct, given as a mapping) is read once, here: ``params``
    gives it back as a dict. x is read at every call; w and bias once, packed (``packed``:
    the result of ``pack_conv_weights(w, bias, groups, bits)`` for these very arrays and
    this activation type, shared by every Call of a layer; by default they are packed here);
    m0 at every call; shift once. x and out are both int8 or both int16 (int16: pad_value and
    out_zp 0, act_min / act_max in int16).
    ``scalar=True`` runs the scalar twin of this build's micro-kernel (same packing; for
    tests).

    Tasks (``n_tasks``, fixnet/_kernels/_step.pyx): tiles of output pixels, the batch
    included, with no scratch shared between ranges, so disjoint ranges may run on several
    threads at once.
    """
    cdef const int8_t[:, :, :, ::1] x
    cdef int8_t[:, :, :, ::1] out
    cdef const int16_t[:, :, :, ::1] x16
    cdef int16_t[:, :, :, ::1] out16
    cdef const int32_t[::1] m0
    cdef readonly conv2d_params params
    cdef readonly PackedConvWeights packed
    cdef object arrays             # the offsets table and pad row GemmConv points into
    cdef GemmConv args
    cdef fx_requant requant
    cdef void* requant_block      # owns the arrays of requant

    def __init__(self, x not None, const int8_t[:, :, :, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, params, out not None,
                 PackedConvWeights packed=None, bint scalar=False):
        cdef str k = "conv2d"
        cdef const int8_t[:, :, :, ::1] x8 = None
        cdef int8_t[:, :, :, ::1] out8 = None
        cdef const int16_t[:, :, :, ::1] x16 = None
        cdef int16_t[:, :, :, ::1] out16 = None
        cdef int bits = activation_bits(k, x, out)
        cdef Py_ssize_t cout = w.shape[0], kh = w.shape[1], kw = w.shape[2], pixels, image_len
        cdef fx_requant requant
        cdef void* requant_block
        cdef GemmConv* a = &self.args
        cdef conv2d_params p
        if bits == 8:
            x8, out8 = x, out
        else:
            x16, out16 = x, out
        x_shape, out_shape = np.shape(x), np.shape(out)     # both 4-D: checked just above
        cdef Py_ssize_t n_in = x_shape[0], cin = x_shape[3], mr = QG_MR if bits == 8 else Q16_MR
        check_params(k, params, CONV2D_PARAMS)
        p = params
        cdef int groups = p.groups
        if groups < 1:
            raise ValueError(f"{k}: groups = {groups} must be >= 1")
        if cin % groups:
            raise ValueError(f"{k}: groups = {groups} must divide the input channels "
                             f"Cin = x.shape[3] = {cin}")
        if cout % groups:
            raise ValueError(f"{k}: groups = {groups} must divide the output channels "
                             f"Cout = w.shape[0] = {cout}")
        if kh < 1 or kw < 1 or w.shape[3] != cin // groups:
            raise ValueError(f"{k}: w has shape ({cout}, {kh}, {kw}, {w.shape[3]}), expected "
                             f"(Cout, KH >= 1, KW >= 1, Cin // groups = {cin // groups})")
        check_length(k, "bias", bias.shape[0], cout, "one per output channel, Cout = w.shape[0]")
        check_length(k, "m0", m0.shape[0], cout, "one per output channel, Cout = w.shape[0]")
        check_length(k, "shift", shift.shape[0], cout, "one per output channel, Cout = w.shape[0]")
        check_window(k, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                     p.pad_left)
        if bits == 8:
            check_int8(k, "pad_value", p.pad_value)
            check_output_range(k, p.out_zp, p.act_min, p.act_max)
        else:
            if p.pad_value != 0:
                raise ValueError(f"{k}: pad_value = {p.pad_value}: int16 tensors are symmetric, "
                                 f"their zero point (the padding) is 0")
            check_int16_output(k, p.out_zp, p.act_min, p.act_max)
        if out_shape[0] != n_in or out_shape[3] != cout:
            raise ValueError(f"{k}: out has shape {out_shape}, expected "
                             f"(N, OH, OW, Cout) = ({n_in}, OH, OW, {cout})")
        if cout:
            check_multipliers(k, &m0[0], &shift[0], cout)
        image_len = x_shape[1] * x_shape[2] * cin
        if image_len >= 2 ** 31:
            raise ValueError(f"{k}: one input image holds {image_len} values; at most 2^31 - 1")
        if packed is None:
            packed = pack_conv_weights(w.base if w.base is not None else np.asarray(w),
                                       bias.base if bias.base is not None else np.asarray(bias),
                                       groups, bits)
        elif (packed.out_c != cout or packed.kernel_h != kh or packed.kernel_w != kw
              or packed.in_c_group != w.shape[3] or packed.groups != groups
              or (w.size and packed.w_src != &w[0, 0, 0, 0])
              or (cout and packed.bias_src != &bias[0])):
            raise ValueError(f"{k}: packed holds the weights of other arrays ({packed!r}); pass "
                             f"pack_conv_weights(w, bias, groups, {bits}) of this w and bias")
        elif packed.bits != bits:
            raise ValueError(f"{k}: packed is packed for int{packed.bits} activations, x and "
                             f"out are int{bits}; pass pack_conv_weights(w, bias, groups, "
                             f"bits={bits})")
        pixels = out_shape[1] * out_shape[2]
        offsets = offset_table(x_shape[1], x_shape[2], cin, out_shape[1], out_shape[2], kh, kw,
                               &p, mr)
        pad_row = (np.full(max(cin, 1), p.pad_value, np.int8) if bits == 8
                   else np.zeros(max(cin, 1), np.int16))
        # Last (after every check), so that a failed re-initialisation leaves the object as it was.
        requant_block = new_requant(&requant, m0, shift, p.out_zp, p.act_min, p.act_max)
        PyMem_Free(self.requant_block)      # __init__ may run twice on one object
        self.requant, self.requant_block = requant, requant_block
        self.x, self.out, self.x16, self.out16 = x8, out8, x16, out16
        self.m0, self.packed, self.params = m0, packed, p
        self.arrays = (offsets, pad_row)
        a.wide = bits == 16
        a.x = a.pad_row = NULL
        a.out = NULL
        a.x16 = a.pad_row16 = NULL
        a.out16 = NULL
        if bits == 8:
            a.x = &x8[0, 0, 0, 0] if x8.size else NULL
            a.out = &out8[0, 0, 0, 0] if out8.size else NULL
            a.pad_row = <const int8_t*><size_t>pad_row.ctypes.data
        else:
            a.x16 = &x16[0, 0, 0, 0] if x16.size else NULL
            a.out16 = &out16[0, 0, 0, 0] if out16.size else NULL
            a.pad_row16 = <const int16_t*><size_t>pad_row.ctypes.data
        a.packed = packed.packed
        a.offsets = <const int32_t*><size_t>offsets.ctypes.data
        a.image_len, a.pixels, a.tiles = image_len, pixels, ceil_div(pixels, mr)
        a.taps, a.kernel_w, a.in_c, a.in_c_group = kh * kw, kw, cin, cin // groups
        a.out_c, a.out_c_group, a.groups = cout, cout // groups, groups
        a.blocks_per_group, a.k_groups = packed.blocks_per_group, packed.k_groups
        a.block_bytes = packed.block_bytes
        a.patch_k = packed.patch_k
        a.scalar = scalar
        self.n_tasks = n_in * a.tiles if cout else 0
        self.splittable = True
        # (multiply-adds + epilogue) / NOGIL_MIN_WORK
        self.work_share = (<double>n_in * pixels * cout * (kh * kw * (cin // groups) + 8)
                           / NOGIL_MIN_WORK)

    def __dealloc__(self):
        PyMem_Free(self.requant_block)
        self.requant_block = NULL

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        conv2d_tasks(&self.args, &self.requant, first, last)


def conv2d(x not None, const int8_t[:, :, :, ::1] w not None, const int32_t[::1] bias not None,
           const int32_t[::1] m0 not None, const int32_t[::1] shift not None, params,
           out not None, bint scalar=False):
    """out[n, oh, ow, co] = clamp(out_zp + MBQM(acc, m0[co], shift[co]), act_min, act_max),
    acc = bias[co] + sum_{kh, kw, ci} x[n, ih, iw, g * Cin_g + ci] * w[co, kh, kw, ci]
    (int32, wrapping modulo 2^32), ih = oh * stride_h - pad_top + kh * dilation_h,
    iw = ow * stride_w - pad_left + kw * dilation_w, g = co // (Cout // groups);
    x[n, ih, iw, .] reads pad_value outside [0, H) x [0, W). MBQM =
    multiply_by_quantized_multiplier.

    x: int8 or int16 [N, H, W, Cin] (int8: input zero point folded into bias by the
    quantizer; int16: symmetric, zero point 0).
    w: int8 [Cout, KH, KW, Cin // groups], values in [-127, 127]; KH, KW >= 1.
    bias, m0, shift: int32 [Cout]; m0 in [2^30, 2^31) or 0, shift in [-31, 30].
    params: a mapping with exactly the keys CONV2D_PARAMS (params.pxd's conv2d_params):
    stride_*, dilation_* >= 1; pad_top, pad_left >= 0 (bottom/right padding is implied by
    out's shape); groups >= 1 divides Cin and Cout; int8 x: pad_value, out_zp int8,
    -128 <= act_min <= act_max <= 127; int16 x: pad_value = out_zp = 0, -32768 <= act_min
    <= act_max <= 32767. out: [N, OH, OW, Cout] of x's dtype, written in full.
    scalar: run the scalar twin of the micro-kernel (tests).
    """
    Conv2dCall(x, w, bias, m0, shift, params, out, scalar=scalar)()


# ---- depthwise_conv2d ----------------------------------------------------------------------
#
# The micro-kernels and the row driver are C (csrc/dwconv.h: its header describes the lanes,
# the phase rows and the packing; the vector tile per ISA in dwconv_x86.h / dwconv_neon.h,
# chosen by the compiler's predefined macros, with a scalar twin; the int16 path in
# dwconv16.h, dwconv16_x86.h, dwconv16_neon.h); this part expands and packs the weights, plans
# the tasks and holds the per-call read-only data (the zero-point row and the requantization
# constants of the expanded lanes).

cdef extern from "csrc/dwconv.h" nogil:
    enum:
        DW_TILE
        DW_PAIRS
        DW_FLAT_MAX_LANES
    ctypedef struct dw_call:
        ptrdiff_t batch, in_h, in_w, in_c, out_h, out_w, out_c, mult
        ptrdiff_t kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, taps
        ptrdiff_t lanes
        int flat, rows_ok
        ptrdiff_t band, n_bands, seg_w, n_segs, ring, phase_len, elem
        const int8_t* x
        int8_t* out
        const uint8_t* packed
        const int8_t* zero
        int32_t pad_value
        const fx_requant* q
        int pairs_ok
    size_t dw_tile_bytes(ptrdiff_t taps)
    size_t dw16_tile_bytes(ptrdiff_t taps)
    ptrdiff_t dw_n_tiles(ptrdiff_t channels)
    void dw_pack(const int8_t* w, const int32_t* bias, ptrdiff_t taps, ptrdiff_t channels,
                 uint8_t* dst)
    void dw16_pack(const int8_t* w, const int32_t* bias, ptrdiff_t taps, ptrdiff_t channels,
                   uint8_t* dst)
    int dw16_slot(int lane)
    void dw_plan(dw_call* k)
    ptrdiff_t dw_n_tasks(const dw_call* k)
    void dw_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last)
    void dw_run_scalar(const dw_call* k, ptrdiff_t first, ptrdiff_t last)
    const char* dw_isa_name()
    const char* DW16_ISA_NAME


# The instruction set of this build's depthwise micro-kernel ("avx512", "avx2", "sse2",
# "neon" or "scalar"), and of its int16 one (the AVX-512 builds run the AVX2 int16 tile).
DEPTHWISE_ISA = dw_isa_name().decode()
DEPTHWISE16_ISA = DW16_ISA_NAME.decode()

# The int16 packing's slot of each lane of a tile (csrc/dwconv16.h, DW16_SLOT): its bias,
# weights and requantization constants sit there.
DEPTHWISE16_SLOTS = tuple(dw16_slot(lane) for lane in range(DW_TILE))

# The activation types (int8 asymmetric, int16 symmetric) by dtype, as bits.
_DW_ACTIVATION_BITS = {np.dtype(np.int8): 8, np.dtype(np.int16): 16}


def depthwise_lanes(Py_ssize_t channels):
    """(L, flat) for a depthwise layer of ``channels`` output channels (csrc/dwconv.h):
    flat mode with L = lcm(channels, 16) expanded lanes (lane l computes channel
    l % channels) unless that exceeds DW_FLAT_MAX_LANES, else pixel mode with L = channels
    rounded up to 16."""
    flat_lanes = channels * DW_TILE // math.gcd(max(channels, 1), DW_TILE)
    if 0 < flat_lanes <= DW_FLAT_MAX_LANES:
        return flat_lanes, True
    return max(ceil_div(channels, DW_TILE), 1) * DW_TILE, False


def expand_lanes(values, Py_ssize_t lanes, bint flat):
    """The per-channel array values [..., C] for `lanes` expanded lanes (depthwise_lanes):
    lane l holds channel l % C (flat), or channel l and zeros past C (pixel mode)."""
    values = np.asarray(values)
    lead, channels = values.shape[:values.ndim - 1], values.shape[values.ndim - 1]
    if flat and channels:
        return np.ascontiguousarray(np.tile(values, (1,) * len(lead) + (lanes // channels,)))
    out = np.zeros(lead + (lanes,), values.dtype)
    out[..., :channels] = values
    return out


def depthwise16_slot_order(values):
    """values [..., L] (L a multiple of 16, per expanded lane) in the int16 packing's order:
    lane t * 16 + l at index t * 16 + DEPTHWISE16_SLOTS[l]."""
    values = np.asarray(values)
    tiles = values.reshape(values.shape[:values.ndim - 1] + (-1, DW_TILE))
    out = np.empty_like(tiles)
    out[..., list(DEPTHWISE16_SLOTS)] = tiles
    return np.ascontiguousarray(out.reshape(values.shape))


cdef class PackedDepthwiseWeights:
    """Depthwise weights and bias in this build's tile layout for one activation type
    (``bits``; csrc/dwconv.h, csrc/dwconv16.h): for the L expanded lanes, per 16 lanes 16 int32
    biases then every tap's 16 weights. int8 activations: int16 tap pairs on x86-64, int8 on
    ARM; int16 activations: int16 weights, tap pairs on x86-64, [tap][16] on ARM, lanes in the
    build's slot order. Read-only once made; shared by every DepthwiseConv2dCall over the same
    w and bias and activation type."""
    cdef readonly object data       # the packed bytes (NumPy uint8)
    cdef readonly object w          # the int8 [KH, KW, C*M] array it was packed from
    cdef readonly object bias       # the int32 [C*M] array it was packed from
    cdef readonly Py_ssize_t taps, channels, lanes
    cdef readonly int bits          # the activation type it is packed for: 8 or 16
    cdef readonly bint flat         # flat mode (depthwise_lanes)
    cdef readonly bint pairs_ok     # no weight is -128
    cdef const uint8_t* packed


def pack_depthwise_weights(w, bias, int bits=8):
    """PackedDepthwiseWeights of w (int8 [KH, KW, C*M]) and bias (int32 [C*M]) for calls on
    activations of ``bits`` (8: int8, 16: int16). Do this once (at quantize time) and pass the
    result as ``packed=`` to DepthwiseConv2dCall: the kernel reads only the packed copy, so w
    and bias must not change afterwards."""
    cdef const int8_t[:, :, ::1] wv = w
    cdef const int32_t[::1] bv = bias
    cdef Py_ssize_t taps = wv.shape[0] * wv.shape[1], channels = wv.shape[2]
    cdef PackedDepthwiseWeights p = PackedDepthwiseWeights.__new__(PackedDepthwiseWeights)
    cdef const int8_t[:, ::1] we
    cdef const int32_t[::1] be
    cdef uint8_t[::1] dst
    cdef size_t tile_bytes
    if bits != 8 and bits != 16:
        raise ValueError(f"pack_depthwise_weights: bits = {bits}, expected 8 (int8 "
                         f"activations) or 16 (int16)")
    if bv.shape[0] != channels:
        raise ValueError(f"pack_depthwise_weights: bias has length {bv.shape[0]}, expected "
                         f"{channels} (one per output channel, w.shape[2])")
    lanes, flat = depthwise_lanes(channels)
    w_flat = np.asarray(wv).reshape(taps, channels)
    w_exp = expand_lanes(w_flat, lanes, flat)
    b_exp = expand_lanes(np.asarray(bv), lanes, flat)
    tile_bytes = dw_tile_bytes(taps) if bits == 8 else dw16_tile_bytes(taps)
    data = np.zeros(max(<Py_ssize_t>(dw_n_tiles(lanes) * tile_bytes), 64), np.uint8)
    dst = data
    if taps > 0 and channels > 0:
        we, be = w_exp, b_exp
        if bits == 8:
            dw_pack(&we[0, 0], &be[0], taps, lanes, &dst[0])
        else:
            dw16_pack(&we[0, 0], &be[0], taps, lanes, &dst[0])
    data.setflags(write=False)
    p.data, p.w, p.bias, p.taps, p.channels = data, w, bias, taps, channels
    p.lanes, p.flat, p.bits = lanes, flat, bits
    p.pairs_ok = not (w_flat.size and w_flat.min() == -128)
    p.packed = &dst[0]
    return p


cdef int depthwise_act_bits(str kernel, object a, str name) except -1:
    """8 or 16: the activation type of the array a (int8 or int16); ValueError naming it
    otherwise (as Cython's buffer check of the int8 entries did)."""
    dtype = np.asarray(a).dtype
    if dtype not in _DW_ACTIVATION_BITS:
        raise ValueError(f"{kernel}: {name} has dtype {dtype}, expected int8 or int16 (the "
                         f"activation types)")
    return _DW_ACTIVATION_BITS[dtype]


cdef int depthwise_check_int16_params(str kernel, depthwise_params p) except -1:
    """The int16 form of the entry checks of pad_value, out_zp and the clamp: int16 tensors
    are symmetric (out_zp 0); pad_value and the bounds are int16 values."""
    if not -32768 <= p.pad_value <= 32767:
        raise ValueError(f"{kernel}: pad_value = {p.pad_value} is outside the int16 range "
                         f"[-32768, 32767]")
    if p.out_zp != 0:
        raise ValueError(f"{kernel}: out_zp = {p.out_zp}: int16 tensors are symmetric, their "
                         f"zero point is 0")
    if not -32768 <= p.act_min <= p.act_max <= 32767:
        raise ValueError(f"{kernel}: act_min = {p.act_min}, act_max = {p.act_max} must satisfy "
                         f"-32768 <= act_min <= act_max <= 32767")
    return 0


cdef class DepthwiseConv2dCall(KernelCall):
    """depthwise_conv2d with its arguments checked once; calling the object runs it (see
    depthwise_conv2d). ``params`` (the depthwise_params struct, given as a mapping) is read
    once, here: ``params`` gives it back as a dict. x is read at every call; w and bias
    through their packed copy (``packed=``, or packed here), m0 and shift when the object is
    built. x and out are both int8 or both int16 (``bits``); a ``packed`` made for the other
    type is packed again here for this one (pack_depthwise_weights(w, bias, bits) once and
    share it to avoid that).

    Tasks (``n_tasks``): per image, bands of output rows times segments of output columns
    (csrc/dwconv.h, dw_plan); a range of tasks uses the stack and this object's read-only
    data only, so disjoint ranges may run on several threads at once. ``scalar=True`` runs the plain-C twin of the micro-kernel (the tests
    compare the two)."""
    cdef object x_view            # the typed views of x and out (keep their buffers)
    cdef object out_view
    cdef readonly PackedDepthwiseWeights packed
    cdef readonly depthwise_params params
    cdef readonly int bits        # the activation type of x and out: 8 or 16
    cdef dw_call k
    cdef fx_requant q             # the requantization constants of the expanded lanes
    cdef void* block              # owns q's arrays and the zero-point row (one allocation)
    cdef readonly bint scalar

    def __init__(self, x not None, const int8_t[:, :, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, params, out not None,
                 PackedDepthwiseWeights packed=None, bint scalar=False):
        cdef str k = "depthwise_conv2d"
        cdef int bits = depthwise_act_bits(k, x, "x")
        cdef const int8_t[:, :, :, ::1] x8
        cdef int8_t[:, :, :, ::1] out8
        cdef const int16_t[:, :, :, ::1] x16
        cdef int16_t[:, :, :, ::1] out16
        cdef const int8_t* x_ptr
        cdef int8_t* out_ptr
        cdef Py_ssize_t n_in, cin, in_h, in_w, n_out, out_h, out_w, out_c4
        cdef Py_ssize_t cout, kh = w.shape[0], kw = w.shape[1], taps, i
        cdef dw_call plan
        cdef fx_requant q
        cdef size_t rq_bytes, zero_len
        cdef void* block
        cdef int16_t* zero16
        cdef const int32_t[::1] m0_exp
        cdef const int32_t[::1] shift_exp
        cdef depthwise_params p
        if depthwise_act_bits(k, out, "out") != bits:
            raise ValueError(f"{k}: x has dtype {np.asarray(x).dtype} but out has dtype "
                             f"{np.asarray(out).dtype}: one activation type per call (int8 "
                             f"in, int8 out; int16 in, int16 out)")
        if bits == 8:
            x8, out8 = x, out
            x_view, out_view = x8, out8
            x_ptr, out_ptr = &x8[0, 0, 0, 0], &out8[0, 0, 0, 0]
            n_in, in_h, in_w, cin = x8.shape[0], x8.shape[1], x8.shape[2], x8.shape[3]
            n_out, out_h, out_w, out_c4 = out8.shape[0], out8.shape[1], out8.shape[2], out8.shape[3]
        else:
            x16, out16 = x, out
            x_view, out_view = x16, out16
            x_ptr, out_ptr = <const int8_t*>&x16[0, 0, 0, 0], <int8_t*>&out16[0, 0, 0, 0]
            n_in, in_h, in_w, cin = x16.shape[0], x16.shape[1], x16.shape[2], x16.shape[3]
            n_out, out_h, out_w, out_c4 = (out16.shape[0], out16.shape[1], out16.shape[2],
                                           out16.shape[3])
        check_params(k, params, DEPTHWISE_PARAMS)
        p = params
        cdef int depth_multiplier = p.depth_multiplier
        if depth_multiplier < 1:
            raise ValueError(f"{k}: depth_multiplier = {depth_multiplier} must be >= 1")
        cout = cin * depth_multiplier
        if kh < 1 or kw < 1 or w.shape[2] != cout:
            raise ValueError(f"{k}: w has shape ({kh}, {kw}, {w.shape[2]}), expected "
                             f"(KH >= 1, KW >= 1, C * depth_multiplier = {cout})")
        per_channel = "one per output channel, C * depth_multiplier"
        check_length(k, "bias", bias.shape[0], cout, per_channel)
        check_length(k, "m0", m0.shape[0], cout, per_channel)
        check_length(k, "shift", shift.shape[0], cout, per_channel)
        check_window(k, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                     p.pad_left)
        if bits == 8:
            check_int8(k, "pad_value", p.pad_value)
            check_output_range(k, p.out_zp, p.act_min, p.act_max)
        else:
            depthwise_check_int16_params(k, p)
        if n_out != n_in or out_c4 != cout:
            raise ValueError(f"{k}: out has shape ({n_out}, {out_h}, "
                             f"{out_w}, {out_c4}), expected "
                             f"(N, OH, OW, C * depth_multiplier) = ({n_in}, OH, OW, {cout})")
        check_multipliers(k, &m0[0], &shift[0], cout)
        taps = kh * kw
        if packed is None or packed.bits != bits:
            packed = pack_depthwise_weights(
                packed.w if packed is not None else (w.base if w.base is not None else w),
                packed.bias if packed is not None else (bias.base if bias.base is not None
                                                        else bias), bits)
        if packed.taps != taps or packed.channels != cout:
            raise ValueError(f"{k}: packed holds {packed.channels} channels of {packed.taps} "
                             f"taps, expected {cout} of {taps} (pack_depthwise_weights(w, bias))")

        memset(&plan, 0, sizeof(plan))
        plan.batch, plan.in_h, plan.in_w, plan.in_c = n_in, in_h, in_w, cin
        plan.out_h, plan.out_w, plan.out_c, plan.mult = out_h, out_w, cout, depth_multiplier
        plan.kernel_h, plan.kernel_w, plan.taps = kh, kw, taps
        plan.stride_h, plan.stride_w, plan.dil_h, plan.dil_w = (p.stride_h, p.stride_w,
                                                                p.dilation_h, p.dilation_w)
        plan.pad_top, plan.pad_left, plan.pad_value = p.pad_top, p.pad_left, p.pad_value
        plan.lanes, plan.flat = packed.lanes, packed.flat
        plan.elem = bits // 8
        dw_plan(&plan)

        # Per-call read-only data, in one block: the requantization constants of the expanded
        # lanes (int16: in the packing's slot order) and the zero-point row (the rows above and
        # below the image). Made before anything is replaced, so a failed (re-)initialisation
        # leaves the object as it was.
        m0_np = expand_lanes(np.asarray(m0), packed.lanes, packed.flat)
        shift_np = expand_lanes(np.asarray(shift), packed.lanes, packed.flat)
        if bits == 16:
            m0_np, shift_np = depthwise16_slot_order(m0_np), depthwise16_slot_order(shift_np)
        m0_exp, shift_exp = m0_np, shift_np
        rq_bytes = fx_requant_bytes(packed.lanes)
        zero_len = max(plan.phase_len, <Py_ssize_t>DW_TILE)
        block = PyMem_Malloc(rq_bytes + zero_len * plan.elem)
        if block == NULL:
            raise MemoryError(f"{k}: cannot allocate {rq_bytes + zero_len * plan.elem} bytes "
                              f"of constants")
        fx_requant_init(&q, block, &m0_exp[0], &shift_exp[0], packed.lanes, p.out_zp, p.act_min,
                        p.act_max)
        if bits == 8:
            memset(<char*>block + rq_bytes, p.pad_value, zero_len)
        else:
            zero16 = <int16_t*>(<char*>block + rq_bytes)
            for i in range(<Py_ssize_t>zero_len):
                zero16[i] = <int16_t>p.pad_value

        self.free_buffers()  # __init__ may run twice on one object
        self.block = block
        self.x_view, self.out_view, self.packed, self.scalar = x_view, out_view, packed, scalar
        self.params = p
        self.bits = bits
        self.q = q
        self.k = plan
        self.k.x, self.k.out = x_ptr, out_ptr
        self.k.packed, self.k.zero, self.k.q = (packed.packed,
                                                <const int8_t*>block + rq_bytes, &self.q)
        self.k.pairs_ok = packed.pairs_ok
        self.n_tasks = dw_n_tasks(&self.k)
        self.splittable = True
        # (multiply-adds + epilogue) / NOGIL_MIN_WORK
        self.work_share = <double>n_in * out_h * out_w * cout * (taps + 8) / NOGIL_MIN_WORK

    cdef void free_buffers(self) noexcept:
        PyMem_Free(self.block)
        self.block = NULL

    def __dealloc__(self):
        self.free_buffers()

    def task_region(self, Py_ssize_t task):
        """(image, output rows, output columns) that task `task` writes: an int and two
        slices (tests)."""
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"depthwise_conv2d: task {task} is not inside [0, {self.n_tasks})")
        n = task // (self.k.n_bands * self.k.n_segs)
        b = task // self.k.n_segs % self.k.n_bands
        g = task % self.k.n_segs
        return (n, slice(b * self.k.band, min((b + 1) * self.k.band, self.k.out_h)),
                slice(g * self.k.seg_w, min((g + 1) * self.k.seg_w, self.k.out_w)))

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        if self.scalar:
            dw_run_scalar(&self.k, first, last)
        else:
            dw_run_simd(&self.k, first, last)


def depthwise_conv2d(x not None, const int8_t[:, :, ::1] w not None,
                     const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                     const int32_t[::1] shift not None, params, out not None,
                     bint scalar=False):
    """out[n, oh, ow, o] = clamp(out_zp + MBQM(acc, m0[o], shift[o]), act_min, act_max),
    acc = bias[o] + sum_{kh, kw} x[n, ih, iw, o // M] * w[kh, kw, o] (int32, wrapping
    modulo 2^32), ih, iw and padding as in conv2d, M = depth_multiplier.

    x: int8 or int16 [N, H, W, C]; out: [N, OH, OW, C * M] of x's type, written in full;
    w: int8 [KH, KW, C * M] in [-127, 127] (-128 is computed exactly too, more slowly on ARM
    for int8 x); bias, m0, shift: int32 [C * M]. params: a mapping with exactly the keys
    DEPTHWISE_PARAMS (params.pxd's depthwise_params): conv2d's, with depth_multiplier M >= 1
    instead of groups; for int8 x, pad_value, out_zp and the clamp bounds are int8; for int16
    x (symmetric), out_zp = 0 and pad_value, act_min <= act_max are int16. scalar: run the
    scalar twin.
    """
    DepthwiseConv2dCall(x, w, bias, m0, shift, params, out, scalar=scalar)()

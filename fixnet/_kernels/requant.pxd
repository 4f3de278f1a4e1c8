# cython: language_level=3
"""The requantization epilogue of csrc/requant.h for the Cython modules whose kernels fuse it
(_conv, _dense, _merge): the per-channel constants (fx_requant, made once by
fx_requant_init from m0 and shift) and the row loops of the build with their scalar twin."""
from libc.stdint cimport int8_t, int32_t

cdef extern from "requant.h" nogil:
    # "avx2", "neon", or "scalar" where requant.h has no vector form
    const char* FX_REQUANT_ISA
    ctypedef struct fx_requant:
        int32_t out_zp, act_min, act_max
        int any_left
    size_t fx_requant_bytes(size_t channels)
    void fx_requant_init(fx_requant* q, void* block, const int32_t* m0, const int32_t* shift,
                         size_t channels, int32_t out_zp, int32_t act_min, int32_t act_max)
    # single = 1: one rounding of the exact product, ties away from zero (dense only)
    void fx_requant_init_rounding(fx_requant* q, void* block, const int32_t* m0,
                                  const int32_t* shift, size_t channels, int32_t out_zp,
                                  int32_t act_min, int32_t act_max, int single)
    void fx_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows, size_t n,
                         const fx_requant* q, size_t c0, int8_t* out, size_t out_stride)
    void fx_requant_rows_scalar(const int32_t* acc, size_t acc_stride, size_t rows, size_t n,
                                const fx_requant* q, size_t c0, int8_t* out, size_t out_stride)

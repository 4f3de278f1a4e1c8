/* Depthwise on int16 activations, aarch64 NEON: per tap, the tile's 16 int16 values (two
 * registers) times the tap's 16 int16 weights (widened once by dw16_pack), multiplied and
 * accumulated into the four int32 accumulators by smlal / smlal2 (vmlal_s16,
 * vmlal_high_s16: exact products, wrapping sums as the scalar twin's), which start from the
 * bias. The requantization (requant_neon.h) runs on the accumulator registers, then a
 * saturating narrow to int16 and the clamp. Included by dwconv16.h, which defines the packing
 * ([tap][16 slots], slot = lane here) and the row.
 *
 * Two tiles at a time where the row has them (dw16_pair: tiles with the same lanes): an
 * smlal multiplies 4 int16 lanes where the int8 kernel's multiplies 8 int8 ones, so the tap
 * loop is bound by the multiply pipe and the loads; sharing each tap's weight loads and the
 * constants' between two tiles takes a third of the loads off (llvm-mca, Cortex-A72 model:
 * 9 taps x 16 channels in about 45 cycles per tile instead of 67). */
#ifndef FIXNET_DWCONV16_NEON_H
#define FIXNET_DWCONV16_NEON_H

#include "neon_partial.h"

typedef struct { int32x4_t a0, a1, a2, a3; } dw16_acc_t;
typedef struct { int16x8_t min, max; } dw16_bounds_t;
typedef struct { int16x8_t lo, hi; } dw16_out_t;         /* channels 0-7, 8-15 */

DW_INLINE dw16_bounds_t dw16_bounds_load(const fx_requant* q) {
    dw16_bounds_t b;
    b.min = vdupq_n_s16((int16_t)q->act_min);
    b.max = vdupq_n_s16((int16_t)q->act_max);
    return b;
}

/* One tap: 16 values of row r[t] at j times the tap's 16 weights, into the accumulators. */
#define DW16_TAP(t) do { \
        const int16x8_t x0 = vld1q_s16(r[t] + j), x1 = vld1q_s16(r[t] + j + 8); \
        const int16x8_t w0 = vld1q_s16(w + DW_TILE * (t)), w1 = vld1q_s16(w + DW_TILE * (t) + 8); \
        acc.a0 = vmlal_s16(acc.a0, vget_low_s16(x0), vget_low_s16(w0)); \
        acc.a1 = vmlal_high_s16(acc.a1, x0, w0); \
        acc.a2 = vmlal_s16(acc.a2, vget_low_s16(x1), vget_low_s16(w1)); \
        acc.a3 = vmlal_high_s16(acc.a3, x1, w1); \
    } while (0);
/* 3x3 and 5x5 unrolled by hand (the same code at -O2 and -O3, as dwconv_neon.h's) */
#define DW16_TAPS9 DW16_TAP(0) DW16_TAP(1) DW16_TAP(2) DW16_TAP(3) DW16_TAP(4) DW16_TAP(5) \
    DW16_TAP(6) DW16_TAP(7) DW16_TAP(8)
#define DW16_TAPS25 DW16_TAPS9 DW16_TAP(9) DW16_TAP(10) DW16_TAP(11) DW16_TAP(12) \
    DW16_TAP(13) DW16_TAP(14) DW16_TAP(15) DW16_TAP(16) DW16_TAP(17) DW16_TAP(18) \
    DW16_TAP(19) DW16_TAP(20) DW16_TAP(21) DW16_TAP(22) DW16_TAP(23) DW16_TAP(24)

DW_INLINE dw16_acc_t dw16_tile_acc(const int16_t* const* r, ptrdiff_t taps, ptrdiff_t j,
                                   const uint8_t* pt) {
    dw16_acc_t acc;
    const int32_t* b = (const int32_t*)pt;
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.a0 = vld1q_s32(b);
    acc.a1 = vld1q_s32(b + 4);
    acc.a2 = vld1q_s32(b + 8);
    acc.a3 = vld1q_s32(b + 12);
    if (taps == 9) {
        DW16_TAPS9
    } else if (taps == 25) {
        DW16_TAPS25
    } else {
        for (t = 0; t < taps; t++)
            DW16_TAP(t)
    }
    return acc;
}

/* One tap of two tiles: rows at ja and jb, the weights loaded once. */
#define DW16_TAP2(t) do { \
        const int16x8_t w0 = vld1q_s16(w + DW_TILE * (t)), w1 = vld1q_s16(w + DW_TILE * (t) + 8); \
        const int16x8_t a0 = vld1q_s16(r[t] + ja), a1 = vld1q_s16(r[t] + ja + 8); \
        const int16x8_t b0 = vld1q_s16(r[t] + jb), b1 = vld1q_s16(r[t] + jb + 8); \
        A.a0 = vmlal_s16(A.a0, vget_low_s16(a0), vget_low_s16(w0)); \
        B.a0 = vmlal_s16(B.a0, vget_low_s16(b0), vget_low_s16(w0)); \
        A.a1 = vmlal_high_s16(A.a1, a0, w0); \
        B.a1 = vmlal_high_s16(B.a1, b0, w0); \
        A.a2 = vmlal_s16(A.a2, vget_low_s16(a1), vget_low_s16(w1)); \
        B.a2 = vmlal_s16(B.a2, vget_low_s16(b1), vget_low_s16(w1)); \
        A.a3 = vmlal_high_s16(A.a3, a1, w1); \
        B.a3 = vmlal_high_s16(B.a3, b1, w1); \
    } while (0);
#define DW16_TAPS9_2 DW16_TAP2(0) DW16_TAP2(1) DW16_TAP2(2) DW16_TAP2(3) DW16_TAP2(4) \
    DW16_TAP2(5) DW16_TAP2(6) DW16_TAP2(7) DW16_TAP2(8)
#define DW16_TAPS25_2 DW16_TAPS9_2 DW16_TAP2(9) DW16_TAP2(10) DW16_TAP2(11) DW16_TAP2(12) \
    DW16_TAP2(13) DW16_TAP2(14) DW16_TAP2(15) DW16_TAP2(16) DW16_TAP2(17) DW16_TAP2(18) \
    DW16_TAP2(19) DW16_TAP2(20) DW16_TAP2(21) DW16_TAP2(22) DW16_TAP2(23) DW16_TAP2(24)

/* The saturating narrow (sqxtn) is exact: a value that saturates lies outside
   [act_min, act_max], on the same side; out_zp is 0 for int16 outputs (the Call checks it). */
DW_INLINE dw16_out_t dw16_narrow(int32x4_t y0, int32x4_t y1, int32x4_t y2, int32x4_t y3,
                                  dw16_bounds_t b) {
    dw16_out_t v;
    v.lo = vcombine_s16(vqmovn_s32(y0), vqmovn_s32(y1));
    v.hi = vcombine_s16(vqmovn_s32(y2), vqmovn_s32(y3));
    v.lo = vminq_s16(vmaxq_s16(v.lo, b.min), b.max);
    v.hi = vminq_s16(vmaxq_s16(v.hi, b.min), b.max);
    return v;
}

DW_INLINE dw16_out_t dw16_epilogue(dw16_acc_t acc, const fx_requant* q, ptrdiff_t lane0,
                                   dw16_bounds_t b, int left) {
    return dw16_narrow(fx_mbqm4_k(acc.a0, fx_rq4_load(q, (size_t)lane0), left),
                       fx_mbqm4_k(acc.a1, fx_rq4_load(q, (size_t)lane0 + 4), left),
                       fx_mbqm4_k(acc.a2, fx_rq4_load(q, (size_t)lane0 + 8), left),
                       fx_mbqm4_k(acc.a3, fx_rq4_load(q, (size_t)lane0 + 12), left), b);
}

/* The first n <= 16 values (neon_partial.h's stores: no call, nothing past them). */
DW_INLINE void dw16_store(int16_t* out, dw16_out_t v, ptrdiff_t n) {
    if (n == DW_TILE) {
        vst1q_s16(out, v.lo);
        vst1q_s16(out + 8, v.hi);
    } else if (n >= 8) {
        vst1q_s16(out, v.lo);
        neon_store_partial16((int8_t*)(out + 8), vreinterpretq_s8_s16(v.hi), (size_t)(n - 8) * 2);
    } else {
        neon_store_partial16((int8_t*)out, vreinterpretq_s8_s16(v.lo), (size_t)n * 2);
    }
}

#define DW16_HAVE_PAIR 1

/* Two tiles with the same lanes (values ja and jb of the rows): bias, weights and the
   requantization constants loaded once for both. */
DW_INLINE void dw16_pair(const int16_t* const* r, ptrdiff_t taps, ptrdiff_t ja, ptrdiff_t jb,
                         const uint8_t* pt, const fx_requant* q, ptrdiff_t lane0,
                         dw16_bounds_t bounds, int left, int16_t* oa, int16_t* ob,
                         ptrdiff_t n) {
    dw16_acc_t A, B;
    const int32_t* bias = (const int32_t*)pt;
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    fx_rq4 c0, c1, c2, c3;
    ptrdiff_t t;
    A.a0 = vld1q_s32(bias);
    A.a1 = vld1q_s32(bias + 4);
    A.a2 = vld1q_s32(bias + 8);
    A.a3 = vld1q_s32(bias + 12);
    B = A;
    if (taps == 9) {
        DW16_TAPS9_2
    } else if (taps == 25) {
        DW16_TAPS25_2
    } else {
        for (t = 0; t < taps; t++)
            DW16_TAP2(t)
    }
    c0 = fx_rq4_load(q, (size_t)lane0);
    c1 = fx_rq4_load(q, (size_t)lane0 + 4);
    c2 = fx_rq4_load(q, (size_t)lane0 + 8);
    c3 = fx_rq4_load(q, (size_t)lane0 + 12);
    dw16_store(oa, dw16_narrow(fx_mbqm4_k(A.a0, c0, left), fx_mbqm4_k(A.a1, c1, left),
                               fx_mbqm4_k(A.a2, c2, left), fx_mbqm4_k(A.a3, c3, left), bounds), n);
    dw16_store(ob, dw16_narrow(fx_mbqm4_k(B.a0, c0, left), fx_mbqm4_k(B.a1, c1, left),
                               fx_mbqm4_k(B.a2, c2, left), fx_mbqm4_k(B.a3, c3, left), bounds), n);
}

#endif /* FIXNET_DWCONV16_NEON_H */

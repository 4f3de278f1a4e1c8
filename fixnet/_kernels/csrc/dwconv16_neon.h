/* Depthwise on int16 activations, aarch64 NEON: per tap, the tile's 16 int16 values (two
 * registers) times the tap's 16 int16 weights (widened once by dw16_pack), multiplied and
 * accumulated into the four int32 accumulators by smlal / smlal2 (vmlal_s16,
 * vmlal_high_s16: exact products, wrapping sums as the scalar twin's), which start from the
 * bias. The requantization (requant_neon.h) runs on the accumulator registers, then a
 * saturating narrow to int16 and the clamp. Included by dwconv16.h, which defines the packing
 * ([tap][16 slots], slot = lane here) and the row. */
#ifndef FIXNET_DWCONV16_NEON_H
#define FIXNET_DWCONV16_NEON_H

typedef struct { int32x4_t a0, a1, a2, a3; } dw16_acc_t;
typedef struct { int16x8_t min, max; } dw16_bounds_t;
typedef struct { int16x8_t lo, hi; } dw16_out_t;         /* channels 0-7, 8-15 */

DW_INLINE dw16_bounds_t dw16_bounds_load(const fx_requant* q) {
    dw16_bounds_t b;
    b.min = vdupq_n_s16((int16_t)q->act_min);
    b.max = vdupq_n_s16((int16_t)q->act_max);
    return b;
}

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
    for (t = 0; t < taps; t++, w += DW_TILE) {
        const int16x8_t x0 = vld1q_s16(r[t] + j), x1 = vld1q_s16(r[t] + j + 8);
        const int16x8_t w0 = vld1q_s16(w), w1 = vld1q_s16(w + 8);
        acc.a0 = vmlal_s16(acc.a0, vget_low_s16(x0), vget_low_s16(w0));
        acc.a1 = vmlal_high_s16(acc.a1, x0, w0);
        acc.a2 = vmlal_s16(acc.a2, vget_low_s16(x1), vget_low_s16(w1));
        acc.a3 = vmlal_high_s16(acc.a3, x1, w1);
    }
    return acc;
}

/* The saturating narrow (sqxtn) is exact: a value that saturates lies outside
   [act_min, act_max], on the same side; out_zp is 0 for int16 outputs (the Call checks it). */
DW_INLINE dw16_out_t dw16_epilogue(dw16_acc_t acc, const fx_requant* q, ptrdiff_t lane0,
                                   dw16_bounds_t b, int left) {
    dw16_out_t v;
    const int32x4_t y0 = fx_mbqm4_k(acc.a0, fx_rq4_load(q, (size_t)lane0), left);
    const int32x4_t y1 = fx_mbqm4_k(acc.a1, fx_rq4_load(q, (size_t)lane0 + 4), left);
    const int32x4_t y2 = fx_mbqm4_k(acc.a2, fx_rq4_load(q, (size_t)lane0 + 8), left);
    const int32x4_t y3 = fx_mbqm4_k(acc.a3, fx_rq4_load(q, (size_t)lane0 + 12), left);
    v.lo = vcombine_s16(vqmovn_s32(y0), vqmovn_s32(y1));
    v.hi = vcombine_s16(vqmovn_s32(y2), vqmovn_s32(y3));
    v.lo = vminq_s16(vmaxq_s16(v.lo, b.min), b.max);
    v.hi = vminq_s16(vmaxq_s16(v.hi, b.min), b.max);
    return v;
}

DW_INLINE void dw16_store(int16_t* out, dw16_out_t v, ptrdiff_t n) {
    if (n == DW_TILE) {
        vst1q_s16(out, v.lo);
        vst1q_s16(out + 8, v.hi);
    } else {
        int16_t buf[DW_TILE];
        vst1q_s16(buf, v.lo);
        vst1q_s16(buf + 8, v.hi);
        memcpy(out, buf, (size_t)n * 2);
    }
}

#endif /* FIXNET_DWCONV16_NEON_H */

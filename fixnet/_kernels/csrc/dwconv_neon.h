/* Depthwise micro-kernels on aarch64 NEON: loading a tile's 16 channels, summing every tap of
 * one output pixel in registers (smull/smlal), and the epilogue. Included by dwconv.h, which
 * defines the packing and the driver; see there. */
#ifndef FIXNET_DWCONV_NEON_H
#define FIXNET_DWCONV_NEON_H


DW_INLINE int8x16_t dw_load(const int8_t* row, ptrdiff_t c0) {
    return vld1q_s8(row + c0);
}

typedef struct { int32x4_t a0, a1, a2, a3; } dw_acc_t;

DW_INLINE dw_acc_t dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                   const uint8_t* pt,
                                   int pairs_ok) {
    dw_acc_t acc;
    const int8_t* w = (const int8_t*)(pt + DW_TILE * 4);
    const int32_t* b = (const int32_t*)pt;
    ptrdiff_t t = 0;
    acc.a0 = vld1q_s32(b);
    acc.a1 = vld1q_s32(b + 4);
    acc.a2 = vld1q_s32(b + 8);
    acc.a3 = vld1q_s32(b + 12);
    if (pairs_ok) {
        /* |w| <= 127: two products sum to at most 2 * 128 * 127 < 2^15 in int16 */
        for (; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
            int8x16_t x0 = dw_load(rows[t], c0);
            int8x16_t x1 = dw_load(rows[t + 1], c0);
            int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + DW_TILE);
            int16x8_t lo = vmull_s8(vget_low_s8(x0), vget_low_s8(w0));
            int16x8_t hi = vmull_high_s8(x0, w0);
            lo = vmlal_s8(lo, vget_low_s8(x1), vget_low_s8(w1));
            hi = vmlal_high_s8(hi, x1, w1);
            acc.a0 = vaddw_s16(acc.a0, vget_low_s16(lo));
            acc.a1 = vaddw_high_s16(acc.a1, lo);
            acc.a2 = vaddw_s16(acc.a2, vget_low_s16(hi));
            acc.a3 = vaddw_high_s16(acc.a3, hi);
        }
    }
    for (; t < taps; t++, w += DW_TILE) {
        int8x16_t x0 = dw_load(rows[t], c0), w0 = vld1q_s8(w);
        int16x8_t lo = vmull_s8(vget_low_s8(x0), vget_low_s8(w0));
        int16x8_t hi = vmull_high_s8(x0, w0);
        acc.a0 = vaddw_s16(acc.a0, vget_low_s16(lo));
        acc.a1 = vaddw_high_s16(acc.a1, lo);
        acc.a2 = vaddw_s16(acc.a2, vget_low_s16(hi));
        acc.a3 = vaddw_high_s16(acc.a3, hi);
    }
    return acc;
}

DW_INLINE int8x16_t dw_epilogue(dw_acc_t acc, const fx_requant* q, ptrdiff_t c0) {
    const int any_left = q->any_left;
    return fx_pack16(fx_mbqm4(acc.a0, q, (size_t)c0, any_left),
                     fx_mbqm4(acc.a1, q, (size_t)c0 + 4, any_left),
                     fx_mbqm4(acc.a2, q, (size_t)c0 + 8, any_left),
                     fx_mbqm4(acc.a3, q, (size_t)c0 + 12, any_left), q);
}

#endif /* FIXNET_DWCONV_NEON_H */

/* The requantization epilogue (requant.h) on aarch64 NEON, 4 channels per vector: sqdmulh's
 * rounding twin sqrdmulh is SRDHM exactly (m0 >= 0), vrshl by -right rounds ties up, so
 * negative values first get -1 (with saturation: INT32_MIN has no remainder to round).
 * Included by requant.h. */
#ifndef FIXNET_REQUANT_NEON_H
#define FIXNET_REQUANT_NEON_H

#include <arm_neon.h>

#define FX_HAVE_REQUANT_ROWS 1
#define FX_REQUANT_ISA "neon"

/* multiply_by_quantized_multiplier of 4 int32 accumulators, channels c .. c + 3 of q. */
static inline int32x4_t fx_mbqm4(int32x4_t x, const fx_requant* q, size_t c, int any_left)
{
    const int32x4_t neg_r = vld1q_s32(q->neg_right + c);
    int32x4_t y;
    if (any_left)
        x = vqshlq_s32(x, vld1q_s32(q->left + c));     /* saturating, like the rule */
    y = vqrdmulhq_s32(x, vld1q_s32(q->m0 + c));
    /* ties away from zero: -1 on negative values where right > 0 (neg_r < 0) */
    y = vqaddq_s32(y, vshrq_n_s32(vandq_s32(y, neg_r), 31));
    return vrshlq_s32(y, neg_r);
}

/* 16 results (four vectors, channels in order) to int8: + out_zp, clamp; the saturating
   narrowing steps are exact (see requant_x86.h's fx_pack16). */
static inline int8x16_t fx_pack16(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3,
                                  const fx_requant* q)
{
    const int16x8_t zp = vdupq_n_s16((int16_t)q->out_zp);
    int16x8_t lo = vqaddq_s16(vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1)), zp);
    int16x8_t hi = vqaddq_s16(vcombine_s16(vqmovn_s32(a2), vqmovn_s32(a3)), zp);
    int8x16_t b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
    b = vmaxq_s8(b, vdupq_n_s8((int8_t)q->act_min));
    return vminq_s8(b, vdupq_n_s8((int8_t)q->act_max));
}

/* 8 results (two vectors) to 8 int8. */
static inline int8x8_t fx_pack8(int32x4_t a0, int32x4_t a1, const fx_requant* q)
{
    int16x8_t v = vqaddq_s16(vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1)),
                             vdupq_n_s16((int16_t)q->out_zp));
    int8x8_t b = vqmovn_s16(v);
    b = vmax_s8(b, vdup_n_s8((int8_t)q->act_min));
    return vmin_s8(b, vdup_n_s8((int8_t)q->act_max));
}

static inline void fx_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                   size_t n, const fx_requant* q, size_t c0, int8_t* out,
                                   size_t out_stride)
{
    size_t c, r;
    const int any_left = q->any_left;
    for (c = 0; c < n; c += 8) {
        const size_t m = n - c < 8 ? n - c : 8;
        for (r = 0; r < rows; r++) {
            int32x4_t a0, a1;
            int8x8_t b;
            if (m == 8) {
                a0 = vld1q_s32(acc + r * acc_stride + c);
                a1 = vld1q_s32(acc + r * acc_stride + c + 4);
            } else {
                int32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                memcpy(buf, acc + r * acc_stride + c, m * sizeof(int32_t));
                a0 = vld1q_s32(buf);
                a1 = vld1q_s32(buf + 4);
            }
            b = fx_pack8(fx_mbqm4(a0, q, c0 + c, any_left), fx_mbqm4(a1, q, c0 + c + 4, any_left), q);
            if (m == 8) {
                vst1_s8(out + r * out_stride + c, b);
            } else {
                int8_t tmp[8];
                vst1_s8(tmp, b);
                memcpy(out + r * out_stride + c, tmp, m);
            }
        }
    }
}

#endif /* FIXNET_REQUANT_NEON_H */

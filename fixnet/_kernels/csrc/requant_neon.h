/* The requantization epilogue (requant.h) on aarch64 NEON, 4 channels per vector: sqshl is the
 * saturating left shift of the rule, sqrdmulh (sqdmulh's rounding twin) is SRDHM exactly
 * (m0 >= 0), srshl by -right rounds ties up, so negative values first get -1 (an ssra of the
 * sign). The GEMM and depthwise kernels apply it on their accumulator registers (fx_rq4_load,
 * fx_mbqm4_k, fx_out8_load, fx_pack16_k / fx_pack8_k, constants loaded before their stores);
 * fx_requant_rows does it on an int32 tile in memory. Included by requant.h. */
#ifndef FIXNET_REQUANT_NEON_H
#define FIXNET_REQUANT_NEON_H

#include <arm_neon.h>

#include "neon_partial.h"

#define FX_HAVE_REQUANT_ROWS 1
#define FX_REQUANT_ISA "neon"

/* The constants of 4 consecutive channels, loaded once per tile (a kernel's int8 stores may
   alias q: loaded before them, they are not reloaded after each store). */
typedef struct {
    int32x4_t m0, left, neg_right;
} fx_rq4;

static inline fx_rq4 fx_rq4_load(const fx_requant* q, size_t c)
{
    fx_rq4 k;
    k.m0 = vld1q_s32(q->m0 + c);
    k.left = vld1q_s32(q->left + c);
    k.neg_right = vld1q_s32(q->neg_right + c);
    return k;
}

/* The single rounding (requant.h) of 4 int32 accumulators with the constants k: |p| = |x| m0
   exactly by umull (|INT32_MIN| = 2^31 as unsigned, m0 < 2^31), a rounding shift by -t (k's
   neg_right: srshl, (|p| + 2^(t - 1)) >> t, |p| < 2^62), a saturating narrow to int32, then
   the sign of x restored ((r ^ s) - s, s = x >> 31). */
static inline int32x4_t fx_mbqm4_single(int32x4_t x, fx_rq4 k)
{
    const uint32x4_t ax = vreinterpretq_u32_s32(vabsq_s32(x));
    const uint32x4_t m0 = vreinterpretq_u32_s32(k.m0);
    int64x2_t lo = vreinterpretq_s64_u64(vmull_u32(vget_low_u32(ax), vget_low_u32(m0)));
    int64x2_t hi = vreinterpretq_s64_u64(vmull_high_u32(ax, m0));
    const int32x4_t s = vshrq_n_s32(x, 31);
    int32x4_t r;
    lo = vrshlq_s64(lo, vmovl_s32(vget_low_s32(k.neg_right)));
    hi = vrshlq_s64(hi, vmovl_high_s32(k.neg_right));
    r = vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
    return vsubq_s32(veorq_s32(r, s), s);
}

/* multiply_by_quantized_multiplier of 4 int32 accumulators with the constants k (or, with
   FX_RQ_SINGLE in any_left, fx_mbqm4_single). */
static inline int32x4_t fx_mbqm4_k(int32x4_t x, fx_rq4 k, int any_left)
{
    int32x4_t y;
    if (any_left & FX_RQ_SINGLE)
        return fx_mbqm4_single(x, k);
    if (any_left)
        x = vqshlq_s32(x, k.left);                      /* saturating, like the rule */
    y = vqrdmulhq_s32(x, k.m0);
    /* ties away from zero: -1 on negative values where right > 0 (neg_right < 0). Cannot
       wrap: m0 < 2^31 makes y >= floor((-2^31 (2^31 - 1) + 2^30) / 2^31) = INT32_MIN + 1. */
    y = vsraq_n_s32(y, vandq_s32(y, k.neg_right), 31);
    return vrshlq_s32(y, k.neg_right);
}

/* multiply_by_quantized_multiplier of 4 int32 accumulators, channels c .. c + 3 of q. */
static inline int32x4_t fx_mbqm4(int32x4_t x, const fx_requant* q, size_t c, int any_left)
{
    return fx_mbqm4_k(x, fx_rq4_load(q, c), any_left);
}

/* The output zero point and clamp bounds as vectors (loaded once per call or tile, before
   the kernel's int8 stores, which may alias q). */
typedef struct {
    int16x8_t zp;
    int8x16_t lo, hi;
} fx_out8;

static inline fx_out8 fx_out8_load(const fx_requant* q)
{
    fx_out8 o;
    o.zp = vdupq_n_s16((int16_t)q->out_zp);
    o.lo = vdupq_n_s8((int8_t)q->act_min);
    o.hi = vdupq_n_s8((int8_t)q->act_max);
    return o;
}

/* 16 results (four vectors, channels in order) to int8: + out_zp, clamp. The saturating
   narrowing steps are exact: a value outside int16 saturates to one whose sum with the zero
   point (in [-128, 127]) is still outside int8, and the clamp bounds lie inside int8. */
static inline int8x16_t fx_pack16_k(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3,
                                    fx_out8 o)
{
    int16x8_t lo = vqaddq_s16(vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1)), o.zp);
    int16x8_t hi = vqaddq_s16(vcombine_s16(vqmovn_s32(a2), vqmovn_s32(a3)), o.zp);
    int8x16_t b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
    return vminq_s8(vmaxq_s8(b, o.lo), o.hi);
}

/* 8 results (two vectors) to 8 int8. */
static inline int8x8_t fx_pack8_k(int32x4_t a0, int32x4_t a1, fx_out8 o)
{
    int16x8_t v = vqaddq_s16(vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1)), o.zp);
    int8x8_t b = vqmovn_s16(v);
    return vmin_s8(vmax_s8(b, vget_low_s8(o.lo)), vget_low_s8(o.hi));
}

static inline int8x16_t fx_pack16(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3,
                                  const fx_requant* q)
{
    return fx_pack16_k(a0, a1, a2, a3, fx_out8_load(q));
}

static inline int8x8_t fx_pack8(int32x4_t a0, int32x4_t a1, const fx_requant* q)
{
    return fx_pack8_k(a0, a1, fx_out8_load(q));
}

static inline void fx_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                   size_t n, const fx_requant* q, size_t c0, int8_t* out,
                                   size_t out_stride)
{
    size_t c, r;
    const int any_left = q->any_left;
    const fx_out8 o = fx_out8_load(q);
    for (c = 0; c < n; c += 8) {
        const size_t m = n - c < 8 ? n - c : 8;
        const fx_rq4 k0 = fx_rq4_load(q, c0 + c), k1 = fx_rq4_load(q, c0 + c + 4);
        for (r = 0; r < rows; r++) {
            const int32_t* a = acc + r * acc_stride + c;
            int32x4_t a0, a1;
            int8x8_t b;
            if (m == 8) {
                a0 = vld1q_s32(a);
                a1 = vld1q_s32(a + 4);
            } else {        /* never read past the row's n accumulators */
                int32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                size_t j;
                for (j = 0; j < m; j++)
                    buf[j] = a[j];
                a0 = vld1q_s32(buf);
                a1 = vld1q_s32(buf + 4);
            }
            b = fx_pack8_k(fx_mbqm4_k(a0, k0, any_left), fx_mbqm4_k(a1, k1, any_left), o);
            if (m == 8)
                vst1_s8(out + r * out_stride + c, b);
            else
                neon_store_partial8(out + r * out_stride + c, b, m);
        }
    }
}

#endif /* FIXNET_REQUANT_NEON_H */

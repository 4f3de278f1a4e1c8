/* conv2d's GEMM micro-kernel, aarch64 (armv8-a): 2 x 4 tile, K in steps of 16, smull/smlal + sadalp.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there. */
#ifndef FIXNET_QGEMM_NEON_H
#define FIXNET_QGEMM_NEON_H

/* Two int8 products summed in int16 (smull + smlal) cannot overflow: weights are never -128
   (the quantizer's symmetric range, checked when packing), so |x * w| <= 128 * 127 and the sum
   of two is at most 32512. The int16 sums are then added pairwise into int32 (sadalp). */
static inline int32x4_t qg_mlal(int32x4_t acc, int8x16_t x, int8x16_t w)
{
    int16x8_t p = vmull_s8(vget_low_s8(x), vget_low_s8(w));
    p = vmlal_s8(p, vget_high_s8(x), vget_high_s8(w));
    return vpadalq_s16(acc, p);
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 16, rem = cin % 16;
    int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a02 = a00, a03 = a00;
    int32x4_t a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x0 = a[2 * t];
        const int8_t* x1 = a[2 * t + 1];
        for (size_t k = 0; k <= full; k++) {
            int8x16_t v0, v1;
            if (k < full) {
                v0 = vld1q_s8(x0 + 16 * k);
                v1 = vld1q_s8(x1 + 16 * k);
            } else if (rem) {
                int8_t t0[16], t1[16];
                qg_tail(t0, x0 + 16 * full, rem);
                qg_tail(t1, x1 + 16 * full, rem);
                v0 = vld1q_s8(t0);
                v1 = vld1q_s8(t1);
            } else {
                break;
            }
            const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
            const int8x16_t w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
            a00 = qg_mlal(a00, v0, w0);
            a01 = qg_mlal(a01, v0, w1);
            a02 = qg_mlal(a02, v0, w2);
            a03 = qg_mlal(a03, v0, w3);
            a10 = qg_mlal(a10, v1, w0);
            a11 = qg_mlal(a11, v1, w1);
            a12 = qg_mlal(a12, v1, w2);
            a13 = qg_mlal(a13, v1, w3);
            w += 64;
        }
    }
    /* channel sums in order: pairwise adds of the 4 partial sums of each channel */
    const int32x4_t s0 = vpaddq_s32(vpaddq_s32(a00, a01), vpaddq_s32(a02, a03));
    const int32x4_t s1 = vpaddq_s32(vpaddq_s32(a10, a11), vpaddq_s32(a12, a13));
    vst1q_s32(c, vaddq_s32(vld1q_s32(init), s0));
    vst1q_s32(c + c_stride, vaddq_s32(vld1q_s32(init + init_stride), s1));
}

#endif /* FIXNET_QGEMM_NEON_H */

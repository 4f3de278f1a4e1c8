/* conv2d's GEMM micro-kernel, aarch64 with the dot-product extension: 4 x 16 tile, K in steps of 4, sdot.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there. */
#ifndef FIXNET_QGEMM_NEONDOT_H
#define FIXNET_QGEMM_NEONDOT_H

static inline int8x16_t qg_dup4(const int8_t* p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 4, rem = cin % 4;
    int32x4_t acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++)
            acc[r][q] = vld1q_s32(init + r * init_stride + 4 * q);
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x[4] = {a[4 * t], a[4 * t + 1], a[4 * t + 2], a[4 * t + 3]};
        for (size_t k = 0; k <= full; k++) {
            int8x16_t v[4];
            if (k < full) {
                for (int r = 0; r < 4; r++)
                    v[r] = qg_dup4(x[r] + 4 * k);
            } else if (rem) {
                int8_t tmp[4];
                for (int r = 0; r < 4; r++) {
                    qg_tail(tmp, x[r] + 4 * full, rem);
                    v[r] = qg_dup4(tmp);
                }
            } else {
                break;
            }
            const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
            const int8x16_t w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
            for (int r = 0; r < 4; r++) {
                acc[r][0] = vdotq_s32(acc[r][0], w0, v[r]);
                acc[r][1] = vdotq_s32(acc[r][1], w1, v[r]);
                acc[r][2] = vdotq_s32(acc[r][2], w2, v[r]);
                acc[r][3] = vdotq_s32(acc[r][3], w3, v[r]);
            }
            w += 64;
        }
    }
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++)
            vst1q_s32(c + r * c_stride + 4 * q, acc[r][q]);
}

#endif /* FIXNET_QGEMM_NEONDOT_H */

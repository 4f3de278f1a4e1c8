/* conv2d's and dense's GEMM micro-kernels, aarch64 (armv8-a: Pi 4, Cortex-A72): 2 x 8 tile, K in
 * groups of 16 (KR), smull + smlal2 + sadalp.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there.
 *
 * K loop: per 16 input channels, one 16-byte load of each of the 2 rows and 8 weight vectors
 * (16 input channels of one output channel each); per row and output channel, smull (low 8
 * bytes) + smlal2 (high 8 bytes, vmlal_high_s8: no dup of the high halves) sum 16 products
 * as 8 int16 pairs, and sadalp adds the pairs into 4 int32 partial sums of that channel.
 * Exact: weights are never -128 (the quantizer's symmetric range, checked when packing), so
 * |x * w| <= 128 * 127 and a pair sums to at most 32512 < 2^15. smull/smlal2 issue on one
 * vector pipe (8 MAC/cycle), sadalp on the other, so the loop runs at the multiply pipe's
 * rate: 32 multiplies, 16 sadalp, 10 loads per 256 MACs. The 2 x 8 tile loads each weight
 * vector once for 2 rows and each row once for 8 channels (a 2 x 4 tile re-reads the rows
 * twice as often). The K tail of a tap (Cin % 16) is after the loop, its row bytes loaded in
 * pieces (neon_partial.h), never past the row; a tail of at most 8 needs smull only.
 * Unrolled by hand, 16 named accumulators, one weight vector live at a time (NEON_LOAD_FENCE):
 * the same loop at -O2 and -O3, inlined or not (bench/arm_mca.py checks it).
 *
 *   qg_tile     int32 tile from init (conv2d's layers of more than 32 taps)
 *   qg_tile_q8  fused: from the packed bias, requantized on the registers, stored as int8
 *   qg_row_q8   one row (dense at batch 1): 1 x 8
 */
#ifndef FIXNET_QGEMM_NEON_H
#define FIXNET_QGEMM_NEON_H

#include "neon_partial.h"

/* c<r><j>: 4 int32 partial sums of row r, channel j (summed across lanes at the end). */
typedef struct {
    int32x4_t c00, c01, c02, c03, c04, c05, c06, c07;
    int32x4_t c10, c11, c12, c13, c14, c15, c16, c17;
} qg_acc_2x8;

/* 16 products of row v and channel weights wj into c<r><j>. */
#define QG_MLAL16(acc, v, wj) do { \
        int16x8_t p_ = vmull_s8(vget_low_s8(v), vget_low_s8(wj)); \
        p_ = vmlal_high_s8(p_, v, wj); \
        acc = vpadalq_s16(acc, p_); \
    } while (0)
/* 8 products (the low halves: a K tail of at most 8). */
#define QG_MLAL8(acc, v, wj) \
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(v), vget_low_s8(wj)))

/* Output channel j (weights at w + 16 j) for both rows. */
#define QG_MLAL_2X8(A, MAC, w, j) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t wj_ = vld1q_s8((w) + 16 * (j)); \
        MAC((A)->c0##j, v0, wj_); \
        MAC((A)->c1##j, v1, wj_); \
    } while (0)
#define QG_STEP_2X8(A, MAC, w) do { \
        QG_MLAL_2X8(A, MAC, w, 0); QG_MLAL_2X8(A, MAC, w, 1); \
        QG_MLAL_2X8(A, MAC, w, 2); QG_MLAL_2X8(A, MAC, w, 3); \
        QG_MLAL_2X8(A, MAC, w, 4); QG_MLAL_2X8(A, MAC, w, 5); \
        QG_MLAL_2X8(A, MAC, w, 6); QG_MLAL_2X8(A, MAC, w, 7); \
    } while (0)

/* Sum every tap of the tile into A (from 0): a[2 t + r] is the row of tap t for pixel r. */
NEON_INLINE void qg_acc_taps_2x8(qg_acc_2x8* A, size_t taps, size_t cin, const int8_t** a,
                                 const int8_t* w)
{
    const size_t steps = cin / 16, rem = cin % 16;
    size_t t, k;
    A->c00 = A->c01 = A->c02 = A->c03 = A->c04 = A->c05 = A->c06 = A->c07 = vdupq_n_s32(0);
    A->c10 = A->c11 = A->c12 = A->c13 = A->c14 = A->c15 = A->c16 = A->c17 = A->c00;
    for (t = 0; t < taps; t++) {
        const int8_t* x0 = a[2 * t];
        const int8_t* x1 = a[2 * t + 1];
        for (k = steps; k != 0; k--) {
            const int8x16_t v0 = vld1q_s8(x0), v1 = vld1q_s8(x1);
            QG_STEP_2X8(A, QG_MLAL16, w);
            x0 += 16;
            x1 += 16;
            w += 128;
        }
        if (rem) {
            const int8x16_t v0 = neon_load_partial16(x0, rem);
            const int8x16_t v1 = neon_load_partial16(x1, rem);
            if (rem > 8)
                QG_STEP_2X8(A, QG_MLAL16, w);
            else
                QG_STEP_2X8(A, QG_MLAL8, w);
            w += 128;
        }
    }
}

/* The 8 channel sums of one row (lanes of c<r>0 .. c<r>7 added; the order of a sum modulo
   2^32 does not matter), as channels 0-3 and 4-7. */
#define QG_ROW_SUMS(A, r, lo, hi) do { \
        lo = vpaddq_s32(vpaddq_s32((A)->c##r##0, (A)->c##r##1), \
                        vpaddq_s32((A)->c##r##2, (A)->c##r##3)); \
        hi = vpaddq_s32(vpaddq_s32((A)->c##r##4, (A)->c##r##5), \
                        vpaddq_s32((A)->c##r##6, (A)->c##r##7)); \
    } while (0)

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    qg_acc_2x8 A;
    int32x4_t s0, s1, s2, s3;
    qg_acc_taps_2x8(&A, taps, cin, a, (const int8_t*)wv);
    QG_ROW_SUMS(&A, 0, s0, s1);
    QG_ROW_SUMS(&A, 1, s2, s3);
    s0 = vaddq_s32(s0, vld1q_s32(init));
    s1 = vaddq_s32(s1, vld1q_s32(init + 4));
    s2 = vaddq_s32(s2, vld1q_s32(init + init_stride));
    s3 = vaddq_s32(s3, vld1q_s32(init + init_stride + 4));
    vst1q_s32(c, s0);
    vst1q_s32(c + 4, s1);
    vst1q_s32(c + c_stride, s2);
    vst1q_s32(c + c_stride + 4, s3);
}

/* One row of 8 int8 results: stored whole, or its first nc lanes. */
NEON_INLINE void qg_store_row8(int8_t* out, int8x8_t v, size_t nc)
{
    if (nc == 8)
        vst1_s8(out, v);
    else
        neon_store_partial8(out, v, nc);
}

#define QG_HAVE_TILE_Q8 1
static inline void qg_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t mr, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out, size_t out_stride)
{
    const int32_t* bias = (const int32_t*)block;
    const int any_left = q->any_left;
    qg_acc_2x8 A;
    int32x4_t s0, s1, s2, s3;
    int8x8_t r0, r1;
    fx_rq4 k0, k1;
    fx_out8 o;
    qg_acc_taps_2x8(&A, taps, cin, a, (const int8_t*)block + 8 * sizeof(int32_t));
    QG_ROW_SUMS(&A, 0, s0, s1);
    QG_ROW_SUMS(&A, 1, s2, s3);
    {
        const int32x4_t b0 = vld1q_s32(bias), b1 = vld1q_s32(bias + 4);
        s0 = vaddq_s32(s0, b0);
        s1 = vaddq_s32(s1, b1);
        s2 = vaddq_s32(s2, b0);
        s3 = vaddq_s32(s3, b1);
    }
    /* the epilogue on the registers, every constant loaded before the first store */
    k0 = fx_rq4_load(q, c0);
    k1 = fx_rq4_load(q, c0 + 4);
    o = fx_out8_load(q);
    r0 = fx_pack8_k(fx_mbqm4_k(s0, k0, any_left), fx_mbqm4_k(s1, k1, any_left), o);
    r1 = fx_pack8_k(fx_mbqm4_k(s2, k0, any_left), fx_mbqm4_k(s3, k1, any_left), o);
    qg_store_row8(out, r0, nc);
    if (mr > 1)
        qg_store_row8(out + out_stride, r1, nc);
}

/* One row x 8 channels: acc<j> holds 4 partial sums of channel j. */
#define QG_MLAL_1X8(MAC, w, j) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t wj_ = vld1q_s8((w) + 16 * (j)); \
        MAC(acc##j, v, wj_); \
    } while (0)
#define QG_STEP_1X8(MAC, w) do { \
        QG_MLAL_1X8(MAC, w, 0); QG_MLAL_1X8(MAC, w, 1); \
        QG_MLAL_1X8(MAC, w, 2); QG_MLAL_1X8(MAC, w, 3); \
        QG_MLAL_1X8(MAC, w, 4); QG_MLAL_1X8(MAC, w, 5); \
        QG_MLAL_1X8(MAC, w, 6); QG_MLAL_1X8(MAC, w, 7); \
    } while (0)

#define QG_HAVE_ROW_Q8 1
static inline void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const int32_t* bias = (const int32_t*)block;
    const int8_t* w = (const int8_t*)block + 8 * sizeof(int32_t);
    const size_t steps = cin / 16, rem = cin % 16;
    const int any_left = q->any_left;
    const int32x4_t zero = vdupq_n_s32(0);
    int32x4_t acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero;
    int32x4_t acc4 = zero, acc5 = zero, acc6 = zero, acc7 = zero;
    int32x4_t s0, s1;
    size_t t, k;
    for (t = 0; t < taps; t++) {
        const int8_t* x = a[t];
        for (k = steps; k != 0; k--) {
            const int8x16_t v = vld1q_s8(x);
            QG_STEP_1X8(QG_MLAL16, w);
            x += 16;
            w += 128;
        }
        if (rem) {
            const int8x16_t v = neon_load_partial16(x, rem);
            if (rem > 8)
                QG_STEP_1X8(QG_MLAL16, w);
            else
                QG_STEP_1X8(QG_MLAL8, w);
            w += 128;
        }
    }
    s0 = vaddq_s32(vpaddq_s32(vpaddq_s32(acc0, acc1), vpaddq_s32(acc2, acc3)), vld1q_s32(bias));
    s1 = vaddq_s32(vpaddq_s32(vpaddq_s32(acc4, acc5), vpaddq_s32(acc6, acc7)), vld1q_s32(bias + 4));
    qg_store_row8(out, fx_pack8_k(fx_mbqm4_k(s0, fx_rq4_load(q, c0), any_left),
                                  fx_mbqm4_k(s1, fx_rq4_load(q, c0 + 4), any_left),
                                  fx_out8_load(q)), nc);
}

#endif /* FIXNET_QGEMM_NEON_H */

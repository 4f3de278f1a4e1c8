/* conv2d's and dense's GEMM micro-kernels, aarch64 with the dot-product extension (Pi 5,
 * Cortex-A76): 4 x 16 tile, K in groups of 4 (KR), sdot by lane.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there.
 *
 * K loop ("ld128"): per 16 input channels, one 16-byte load of each of the 4 rows and 16
 * weight vectors (4 groups of 4 channels x 16 output channels); sdot by lane
 * (vdotq_laneq_s32) multiplies a weight vector by group l (lane l) of a row, so no
 * activation is broadcast (no dup, which would compete with the sdots for the two vector
 * pipes): 64 sdots, 20 loads. The K tail of a tap (Cin % 16: 1 to 4 groups) is after the
 * loop, its row bytes loaded in pieces (neon_partial.h), never past the row. Everything is
 * unrolled by hand (macros), the 16 accumulators are named values, and a load fence
 * (NEON_LOAD_FENCE) keeps each group's 4 weight vectors from being hoisted above the previous
 * group: the loop is the same at -O2 and -O3, inlined or not, with no spill and no call
 * (bench/arm_mca.py checks it).
 *
 *   qg_tile     int32 tile from init (conv2d's layers of more than 32 taps)
 *   qg_tile_q8  fused: from the packed bias, requantized on the accumulator registers
 *   qg_row_q8   one row (dense at batch 1): 1 x 16, bound by the loads (every weight is
 *               used once: 17 loads per 16 sdots, two loads per cycle: 94% of the sdot
 *               peak at best); runs only for a last odd block of 16 channels
 *   qg_row2_q8  one row, two blocks (1 x 32): the activation vector serves 32 sdots,
 *               33 loads per 32 sdots (97% of the sdot peak at best); dense at batch 1
 */
#ifndef FIXNET_QGEMM_NEONDOT_H
#define FIXNET_QGEMM_NEONDOT_H

#include "neon_partial.h"

/* 4 rows x 16 channels: c<r><q> holds channels 4q .. 4q + 3 of row r. */
typedef struct {
    int32x4_t c00, c01, c02, c03, c10, c11, c12, c13;
    int32x4_t c20, c21, c22, c23, c30, c31, c32, c33;
} qg_acc_4x16;

/* Group l (input channels 4l .. 4l + 3 of a 16-byte step) of rows v0..v3 times the 4 x 16
   weights at w + 64 l. */
#define QG_SDOT_ROW(A, r, v, l) \
    (A)->c##r##0 = vdotq_laneq_s32((A)->c##r##0, w0, v, l); \
    (A)->c##r##1 = vdotq_laneq_s32((A)->c##r##1, w1, v, l); \
    (A)->c##r##2 = vdotq_laneq_s32((A)->c##r##2, w2, v, l); \
    (A)->c##r##3 = vdotq_laneq_s32((A)->c##r##3, w3, v, l);
#define QG_SDOT_4X16(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t w0 = vld1q_s8((w) + 64 * (l)), w1 = vld1q_s8((w) + 64 * (l) + 16); \
        const int8x16_t w2 = vld1q_s8((w) + 64 * (l) + 32), w3 = vld1q_s8((w) + 64 * (l) + 48); \
        QG_SDOT_ROW(A, 0, v0, l) QG_SDOT_ROW(A, 1, v1, l) \
        QG_SDOT_ROW(A, 2, v2, l) QG_SDOT_ROW(A, 3, v3, l) \
    } while (0)

/* Sum every tap of the tile into A: a[4 t + r] is the row of tap t for pixel r. */
NEON_INLINE void qg_acc_taps_4x16(qg_acc_4x16* A, size_t taps, size_t cin, const int8_t** a,
                                  const int8_t* w)
{
    const size_t steps = cin / 16, rem = cin % 16, tail_groups = (rem + 3) / 4;
    size_t t, k;
    for (t = 0; t < taps; t++) {
        const int8_t* x0 = a[4 * t];
        const int8_t* x1 = a[4 * t + 1];
        const int8_t* x2 = a[4 * t + 2];
        const int8_t* x3 = a[4 * t + 3];
        for (k = steps; k != 0; k--) {
            const int8x16_t v0 = vld1q_s8(x0), v1 = vld1q_s8(x1);
            const int8x16_t v2 = vld1q_s8(x2), v3 = vld1q_s8(x3);
            QG_SDOT_4X16(A, w, 0);
            QG_SDOT_4X16(A, w, 1);
            QG_SDOT_4X16(A, w, 2);
            QG_SDOT_4X16(A, w, 3);
            x0 += 16;
            x1 += 16;
            x2 += 16;
            x3 += 16;
            w += 256;
        }
        if (rem) {
            const int8x16_t v0 = neon_load_partial16(x0, rem);
            const int8x16_t v1 = neon_load_partial16(x1, rem);
            const int8x16_t v2 = neon_load_partial16(x2, rem);
            const int8x16_t v3 = neon_load_partial16(x3, rem);
            QG_SDOT_4X16(A, w, 0);
            if (tail_groups > 1)
                QG_SDOT_4X16(A, w, 1);
            if (tail_groups > 2)
                QG_SDOT_4X16(A, w, 2);
            if (tail_groups > 3)
                QG_SDOT_4X16(A, w, 3);
            w += 64 * tail_groups;
        }
    }
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    qg_acc_4x16 A;
    const int32_t* i0 = init;
    const int32_t* i1 = init + init_stride;
    const int32_t* i2 = init + 2 * init_stride;
    const int32_t* i3 = init + 3 * init_stride;
    A.c00 = vld1q_s32(i0); A.c01 = vld1q_s32(i0 + 4); A.c02 = vld1q_s32(i0 + 8); A.c03 = vld1q_s32(i0 + 12);
    A.c10 = vld1q_s32(i1); A.c11 = vld1q_s32(i1 + 4); A.c12 = vld1q_s32(i1 + 8); A.c13 = vld1q_s32(i1 + 12);
    A.c20 = vld1q_s32(i2); A.c21 = vld1q_s32(i2 + 4); A.c22 = vld1q_s32(i2 + 8); A.c23 = vld1q_s32(i2 + 12);
    A.c30 = vld1q_s32(i3); A.c31 = vld1q_s32(i3 + 4); A.c32 = vld1q_s32(i3 + 8); A.c33 = vld1q_s32(i3 + 12);
    qg_acc_taps_4x16(&A, taps, cin, a, (const int8_t*)wv);
    vst1q_s32(c, A.c00); vst1q_s32(c + 4, A.c01); vst1q_s32(c + 8, A.c02); vst1q_s32(c + 12, A.c03);
    c += c_stride;
    vst1q_s32(c, A.c10); vst1q_s32(c + 4, A.c11); vst1q_s32(c + 8, A.c12); vst1q_s32(c + 12, A.c13);
    c += c_stride;
    vst1q_s32(c, A.c20); vst1q_s32(c + 4, A.c21); vst1q_s32(c + 8, A.c22); vst1q_s32(c + 12, A.c23);
    c += c_stride;
    vst1q_s32(c, A.c30); vst1q_s32(c + 4, A.c31); vst1q_s32(c + 8, A.c32); vst1q_s32(c + 12, A.c33);
}

/* One row of 16 int8 results: stored whole, or its first nc lanes. */
NEON_INLINE void qg_store_row16(int8_t* out, int8x16_t v, size_t nc)
{
    if (nc == 16)
        vst1q_s8(out, v);
    else
        neon_store_partial16(out, v, nc);
}

#define QG_HAVE_TILE_Q8 1
static inline void qg_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t mr, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out, size_t out_stride)
{
    const int32_t* bias = (const int32_t*)block;
    const int any_left = q->any_left;
    qg_acc_4x16 A;
    fx_rq4 k;
    fx_out8 o;
    int8x16_t r0, r1, r2, r3;
    A.c00 = A.c10 = A.c20 = A.c30 = vld1q_s32(bias);
    A.c01 = A.c11 = A.c21 = A.c31 = vld1q_s32(bias + 4);
    A.c02 = A.c12 = A.c22 = A.c32 = vld1q_s32(bias + 8);
    A.c03 = A.c13 = A.c23 = A.c33 = vld1q_s32(bias + 12);
    qg_acc_taps_4x16(&A, taps, cin, a, (const int8_t*)block + 16 * sizeof(int32_t));
    /* the epilogue on the registers, every constant loaded before the first store */
    k = fx_rq4_load(q, c0);
    A.c00 = fx_mbqm4_k(A.c00, k, any_left); A.c10 = fx_mbqm4_k(A.c10, k, any_left);
    A.c20 = fx_mbqm4_k(A.c20, k, any_left); A.c30 = fx_mbqm4_k(A.c30, k, any_left);
    k = fx_rq4_load(q, c0 + 4);
    A.c01 = fx_mbqm4_k(A.c01, k, any_left); A.c11 = fx_mbqm4_k(A.c11, k, any_left);
    A.c21 = fx_mbqm4_k(A.c21, k, any_left); A.c31 = fx_mbqm4_k(A.c31, k, any_left);
    k = fx_rq4_load(q, c0 + 8);
    A.c02 = fx_mbqm4_k(A.c02, k, any_left); A.c12 = fx_mbqm4_k(A.c12, k, any_left);
    A.c22 = fx_mbqm4_k(A.c22, k, any_left); A.c32 = fx_mbqm4_k(A.c32, k, any_left);
    k = fx_rq4_load(q, c0 + 12);
    A.c03 = fx_mbqm4_k(A.c03, k, any_left); A.c13 = fx_mbqm4_k(A.c13, k, any_left);
    A.c23 = fx_mbqm4_k(A.c23, k, any_left); A.c33 = fx_mbqm4_k(A.c33, k, any_left);
    o = fx_out8_load(q);
    r0 = fx_pack16_k(A.c00, A.c01, A.c02, A.c03, o);
    r1 = fx_pack16_k(A.c10, A.c11, A.c12, A.c13, o);
    r2 = fx_pack16_k(A.c20, A.c21, A.c22, A.c23, o);
    r3 = fx_pack16_k(A.c30, A.c31, A.c32, A.c33, o);
    qg_store_row16(out, r0, nc);
    if (mr > 1)
        qg_store_row16(out + out_stride, r1, nc);
    if (mr > 2)
        qg_store_row16(out + 2 * out_stride, r2, nc);
    if (mr > 3)
        qg_store_row16(out + 3 * out_stride, r3, nc);
}

/* One row x 16 channels: r<q> holds channels 4q .. 4q + 3. The loop is bound by the loads:
   17 of 16 bytes (16 weight vectors, one row) per 16 sdots, and the A76 loads two per cycle;
   each accumulator's 4 sdots per step (2 cycles each) fit in that time. */
typedef struct {
    int32x4_t r0, r1, r2, r3;
} qg_acc_1x16;

#define QG_SDOT_1X16(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t w0 = vld1q_s8((w) + 64 * (l)), w1 = vld1q_s8((w) + 64 * (l) + 16); \
        const int8x16_t w2 = vld1q_s8((w) + 64 * (l) + 32), w3 = vld1q_s8((w) + 64 * (l) + 48); \
        (A)->r0 = vdotq_laneq_s32((A)->r0, w0, v, l); \
        (A)->r1 = vdotq_laneq_s32((A)->r1, w1, v, l); \
        (A)->r2 = vdotq_laneq_s32((A)->r2, w2, v, l); \
        (A)->r3 = vdotq_laneq_s32((A)->r3, w3, v, l); \
    } while (0)

NEON_INLINE void qg_acc_taps_1x16(qg_acc_1x16* A, size_t taps, size_t cin, const int8_t** a,
                                  const int8_t* w)
{
    const size_t steps = cin / 16, rem = cin % 16, tail_groups = (rem + 3) / 4;
    size_t t, k;
    for (t = 0; t < taps; t++) {
        const int8_t* x = a[t];
        for (k = steps; k != 0; k--) {
            const int8x16_t v = vld1q_s8(x);
            QG_SDOT_1X16(A, w, 0);
            QG_SDOT_1X16(A, w, 1);
            QG_SDOT_1X16(A, w, 2);
            QG_SDOT_1X16(A, w, 3);
            x += 16;
            w += 256;
        }
        if (rem) {
            const int8x16_t v = neon_load_partial16(x, rem);
            QG_SDOT_1X16(A, w, 0);
            if (tail_groups > 1)
                QG_SDOT_1X16(A, w, 1);
            if (tail_groups > 2)
                QG_SDOT_1X16(A, w, 2);
            if (tail_groups > 3)
                QG_SDOT_1X16(A, w, 3);
            w += 64 * tail_groups;
        }
    }
}

#define QG_HAVE_ROW_Q8 1

/* One row x 32 channels (two packed blocks of 16, at wa and wb): r0..r3 as qg_acc_1x16 for
   the first block, r4..r7 for the second. Per 16 input channels: one activation load, 32
   weight loads, 32 sdots. */
typedef struct {
    int32x4_t r0, r1, r2, r3, r4, r5, r6, r7;
} qg_acc_1x32;

#define QG_SDOT_1X32(A, wa, wb, l) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t w0 = vld1q_s8((wa) + 64 * (l)), w1 = vld1q_s8((wa) + 64 * (l) + 16); \
        const int8x16_t w2 = vld1q_s8((wa) + 64 * (l) + 32), w3 = vld1q_s8((wa) + 64 * (l) + 48); \
        const int8x16_t w4 = vld1q_s8((wb) + 64 * (l)), w5 = vld1q_s8((wb) + 64 * (l) + 16); \
        const int8x16_t w6 = vld1q_s8((wb) + 64 * (l) + 32), w7 = vld1q_s8((wb) + 64 * (l) + 48); \
        (A)->r0 = vdotq_laneq_s32((A)->r0, w0, v, l); \
        (A)->r1 = vdotq_laneq_s32((A)->r1, w1, v, l); \
        (A)->r2 = vdotq_laneq_s32((A)->r2, w2, v, l); \
        (A)->r3 = vdotq_laneq_s32((A)->r3, w3, v, l); \
        (A)->r4 = vdotq_laneq_s32((A)->r4, w4, v, l); \
        (A)->r5 = vdotq_laneq_s32((A)->r5, w5, v, l); \
        (A)->r6 = vdotq_laneq_s32((A)->r6, w6, v, l); \
        (A)->r7 = vdotq_laneq_s32((A)->r7, w7, v, l); \
    } while (0)

NEON_INLINE void qg_acc_taps_1x32(qg_acc_1x32* A, size_t taps, size_t cin, const int8_t** a,
                                  const int8_t* wa, const int8_t* wb)
{
    const size_t steps = cin / 16, rem = cin % 16, tail_groups = (rem + 3) / 4;
    size_t t, k;
    for (t = 0; t < taps; t++) {
        const int8_t* x = a[t];
        for (k = steps; k != 0; k--) {
            const int8x16_t v = vld1q_s8(x);
            QG_SDOT_1X32(A, wa, wb, 0);
            QG_SDOT_1X32(A, wa, wb, 1);
            QG_SDOT_1X32(A, wa, wb, 2);
            QG_SDOT_1X32(A, wa, wb, 3);
            x += 16;
            wa += 256;
            wb += 256;
        }
        if (rem) {
            const int8x16_t v = neon_load_partial16(x, rem);
            QG_SDOT_1X32(A, wa, wb, 0);
            if (tail_groups > 1)
                QG_SDOT_1X32(A, wa, wb, 1);
            if (tail_groups > 2)
                QG_SDOT_1X32(A, wa, wb, 2);
            if (tail_groups > 3)
                QG_SDOT_1X32(A, wa, wb, 3);
            wa += 64 * tail_groups;
            wb += 64 * tail_groups;
        }
    }
}

#define QG_HAVE_ROW2_Q8 1
static inline void qg_row2_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t block_bytes, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out)
{
    const int32_t* bias_a = (const int32_t*)block;
    const int32_t* bias_b = (const int32_t*)((const int8_t*)block + block_bytes);
    const int any_left = q->any_left;
    const fx_out8 o = fx_out8_load(q);
    qg_acc_1x32 A;
    int32x4_t s0, s1, s2, s3;
    A.r0 = vld1q_s32(bias_a);
    A.r1 = vld1q_s32(bias_a + 4);
    A.r2 = vld1q_s32(bias_a + 8);
    A.r3 = vld1q_s32(bias_a + 12);
    A.r4 = vld1q_s32(bias_b);
    A.r5 = vld1q_s32(bias_b + 4);
    A.r6 = vld1q_s32(bias_b + 8);
    A.r7 = vld1q_s32(bias_b + 12);
    qg_acc_taps_1x32(&A, taps, cin, a, (const int8_t*)bias_a + 16 * sizeof(int32_t),
                     (const int8_t*)bias_b + 16 * sizeof(int32_t));
    s0 = fx_mbqm4_k(A.r0, fx_rq4_load(q, c0), any_left);
    s1 = fx_mbqm4_k(A.r1, fx_rq4_load(q, c0 + 4), any_left);
    s2 = fx_mbqm4_k(A.r2, fx_rq4_load(q, c0 + 8), any_left);
    s3 = fx_mbqm4_k(A.r3, fx_rq4_load(q, c0 + 12), any_left);
    vst1q_s8(out, fx_pack16_k(s0, s1, s2, s3, o));
    s0 = fx_mbqm4_k(A.r4, fx_rq4_load(q, c0 + 16), any_left);
    s1 = fx_mbqm4_k(A.r5, fx_rq4_load(q, c0 + 20), any_left);
    s2 = fx_mbqm4_k(A.r6, fx_rq4_load(q, c0 + 24), any_left);
    s3 = fx_mbqm4_k(A.r7, fx_rq4_load(q, c0 + 28), any_left);
    qg_store_row16(out + 16, fx_pack16_k(s0, s1, s2, s3, o), nc - 16);
}
static inline void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const int32_t* bias = (const int32_t*)block;
    const int any_left = q->any_left;
    qg_acc_1x16 A;
    int32x4_t s0, s1, s2, s3;
    A.r0 = vld1q_s32(bias);
    A.r1 = vld1q_s32(bias + 4);
    A.r2 = vld1q_s32(bias + 8);
    A.r3 = vld1q_s32(bias + 12);
    qg_acc_taps_1x16(&A, taps, cin, a, (const int8_t*)block + 16 * sizeof(int32_t));
    s0 = fx_mbqm4_k(A.r0, fx_rq4_load(q, c0), any_left);
    s1 = fx_mbqm4_k(A.r1, fx_rq4_load(q, c0 + 4), any_left);
    s2 = fx_mbqm4_k(A.r2, fx_rq4_load(q, c0 + 8), any_left);
    s3 = fx_mbqm4_k(A.r3, fx_rq4_load(q, c0 + 12), any_left);
    qg_store_row16(out, fx_pack16_k(s0, s1, s2, s3, fx_out8_load(q)), nc);
}

#endif /* FIXNET_QGEMM_NEONDOT_H */

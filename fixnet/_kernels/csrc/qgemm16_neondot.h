/* The int16-activation GEMM micro-kernels, aarch64 with the dot product (Pi 5): 4 x 8 tile, K in
 * groups of 4 (c4), int8 weights, sdot by lane on the two bytes of each int16 activation.
 * Included by qgemm16.h after qgemm16_neon.h (whose loads, stores and epilogue it uses); see
 * qgemm16.h for the packing.
 *
 * There is no int16 dot product, but an int16 x = 256 xh + xl splits into its high byte xh
 * (signed, [-128, 127]) and its low byte xl ([0, 255]); with xl' = xl - 128 (signed: xl ^ 0x80)
 *     sum x w = 256 sum xh w + sum xl' w + 128 sum w,
 * two int8 dot products, and the constant 128 sum w is in the packed bias (Q16_INPUT_OFFSET:
 * the kernel multiplies x - 128; gemm_pack adds 128 sum w, modulo 2^32). Every step is exact
 * modulo 2^32 (products of int8 fit, sums wrap like the oracle's), so the result is the
 * int32 sum of the smlal kernel bit for bit. sdot does 16 MACs where smlal by lane does 4,
 * so two of them per int16 MAC still run at 4x smlal's rate on the A76's two vector pipes.
 *
 * K loop: per 16 input channels, per row two 16-byte loads (16 int16), uzp2 (the high bytes),
 * uzp1 + eor (the low bytes, offset); 8 weight vectors (4 groups x 8 channels); per group l
 * and row, sdot by lane l of the high bytes into c<r><q>h and of the low bytes into c<r><q>l:
 * 64 sdots, 16 loads, 12 byte shuffles. The sums are (h << 8) + l, l starting from the packed
 * bias. The K tail (Cin % 16 values: 1 to 4 groups) is after the loop, loaded in pieces
 * (neon_partial.h), never past the row; its zero fill meets zero weights. Unrolled by hand,
 * the 16 accumulators named, a NEON_LOAD_FENCE between groups of weight loads.
 */
#ifndef FIXNET_QGEMM16_NEONDOT_H
#define FIXNET_QGEMM16_NEONDOT_H

typedef struct {
    int32x4_t c00h, c01h, c10h, c11h, c20h, c21h, c30h, c31h;
    int32x4_t c00l, c01l, c10l, c11l, c20l, c21l, c30l, c31l;
} q16_dot_4x8;

/* 16 int16 as two 8-lane vectors a (values 0-7), b (8-15): their high bytes, and their low
   bytes minus 128, in order. */
#define Q16_SPLIT(a, b, hi, lo) do { \
        const int8x16_t ab_ = vreinterpretq_s8_s16(a), bb_ = vreinterpretq_s8_s16(b); \
        hi = vuzp2q_s8(ab_, bb_); \
        lo = veorq_s8(vuzp1q_s8(ab_, bb_), vdupq_n_s8((int8_t)0x80)); \
    } while (0)

/* The first n < 16 int16 at p (the K tail) as two vectors, zero-filled, reading 2 n bytes. */
#define Q16_LOAD_TAIL(p, n, a, b) do { \
        b = vdupq_n_s16(0); \
        if ((n) >= 8) { \
            a = vld1q_s16(p); \
            if ((n) > 8) \
                b = q16_load_partial((p) + 8, (n) - 8); \
        } else { \
            a = q16_load_partial((p), (n)); \
        } \
    } while (0)

#define Q16_SDOT_ROW(A, r, l) \
    (A)->c##r##0h = vdotq_laneq_s32((A)->c##r##0h, w0_, h##r, l); \
    (A)->c##r##1h = vdotq_laneq_s32((A)->c##r##1h, w1_, h##r, l); \
    (A)->c##r##0l = vdotq_laneq_s32((A)->c##r##0l, w0_, lo##r, l); \
    (A)->c##r##1l = vdotq_laneq_s32((A)->c##r##1l, w1_, lo##r, l);
/* Group l (input channels 4l .. 4l + 3 of a step of 16) of the 4 rows times the 8 x 4 weights
   at w + 32 l. */
#define Q16_SDOT_4X8(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t w0_ = vld1q_s8((w) + 32 * (l)), w1_ = vld1q_s8((w) + 32 * (l) + 16); \
        Q16_SDOT_ROW(A, 0, l) Q16_SDOT_ROW(A, 1, l) Q16_SDOT_ROW(A, 2, l) Q16_SDOT_ROW(A, 3, l) \
    } while (0)

/* Every tap of the tile into A: a[4 t + r] is the row of tap t for pixel r. */
NEON_INLINE void q16_dot_taps_4x8(q16_dot_4x8* A, size_t taps, size_t cin, const int16_t** a,
                                  const int8_t* w)
{
    const size_t steps = cin / 16, rem = cin % 16, tail_groups = (rem + 3) / 4;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x0 = a[4 * t];
        const int16_t* x1 = a[4 * t + 1];
        const int16_t* x2 = a[4 * t + 2];
        const int16_t* x3 = a[4 * t + 3];
        for (size_t k = steps; k != 0; k--) {
            int8x16_t h0, lo0, h1, lo1, h2, lo2, h3, lo3;
            Q16_SPLIT(vld1q_s16(x0), vld1q_s16(x0 + 8), h0, lo0);
            Q16_SPLIT(vld1q_s16(x1), vld1q_s16(x1 + 8), h1, lo1);
            Q16_SPLIT(vld1q_s16(x2), vld1q_s16(x2 + 8), h2, lo2);
            Q16_SPLIT(vld1q_s16(x3), vld1q_s16(x3 + 8), h3, lo3);
            Q16_SDOT_4X8(A, w, 0);
            Q16_SDOT_4X8(A, w, 1);
            Q16_SDOT_4X8(A, w, 2);
            Q16_SDOT_4X8(A, w, 3);
            x0 += 16;
            x1 += 16;
            x2 += 16;
            x3 += 16;
            w += 128;
        }
        if (rem) {
            int16x8_t a0, b0, a1, b1, a2, b2, a3, b3;
            int8x16_t h0, lo0, h1, lo1, h2, lo2, h3, lo3;
            Q16_LOAD_TAIL(x0, rem, a0, b0);
            Q16_LOAD_TAIL(x1, rem, a1, b1);
            Q16_LOAD_TAIL(x2, rem, a2, b2);
            Q16_LOAD_TAIL(x3, rem, a3, b3);
            Q16_SPLIT(a0, b0, h0, lo0);
            Q16_SPLIT(a1, b1, h1, lo1);
            Q16_SPLIT(a2, b2, h2, lo2);
            Q16_SPLIT(a3, b3, h3, lo3);
            Q16_SDOT_4X8(A, w, 0);
            if (tail_groups > 1)
                Q16_SDOT_4X8(A, w, 1);
            if (tail_groups > 2)
                Q16_SDOT_4X8(A, w, 2);
            if (tail_groups > 3)
                Q16_SDOT_4X8(A, w, 3);
            w += 32 * tail_groups;
        }
    }
}

/* Row r's sums, channels 0-3 and 4-7: (high << 8) + low. */
#define Q16_DOT_SUMS(A, r, lo4, hi4) do { \
        lo4 = vaddq_s32(vshlq_n_s32((A).c##r##0h, 8), (A).c##r##0l); \
        hi4 = vaddq_s32(vshlq_n_s32((A).c##r##1h, 8), (A).c##r##1l); \
    } while (0)

/* A with the high sums 0 and the low sums from init rows (init_stride 0: the packed bias). */
NEON_INLINE void q16_dot_init(q16_dot_4x8* A, const int32_t* init, size_t init_stride)
{
    const int32x4_t z = vdupq_n_s32(0);
    A->c00h = A->c01h = A->c10h = A->c11h = A->c20h = A->c21h = A->c30h = A->c31h = z;
    A->c00l = vld1q_s32(init);
    A->c01l = vld1q_s32(init + 4);
    A->c10l = vld1q_s32(init + init_stride);
    A->c11l = vld1q_s32(init + init_stride + 4);
    A->c20l = vld1q_s32(init + 2 * init_stride);
    A->c21l = vld1q_s32(init + 2 * init_stride + 4);
    A->c30l = vld1q_s32(init + 3 * init_stride);
    A->c31l = vld1q_s32(init + 3 * init_stride + 4);
}

static inline void q16_tile(size_t taps, size_t cin, const int16_t** a, const void* wv,
                            const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    q16_dot_4x8 A;
    int32x4_t s0, s1;
    q16_dot_init(&A, init, init_stride);
    q16_dot_taps_4x8(&A, taps, cin, a, (const int8_t*)wv);
    Q16_DOT_SUMS(A, 0, s0, s1);
    vst1q_s32(c, s0);
    vst1q_s32(c + 4, s1);
    Q16_DOT_SUMS(A, 1, s0, s1);
    vst1q_s32(c + c_stride, s0);
    vst1q_s32(c + c_stride + 4, s1);
    Q16_DOT_SUMS(A, 2, s0, s1);
    vst1q_s32(c + 2 * c_stride, s0);
    vst1q_s32(c + 2 * c_stride + 4, s1);
    Q16_DOT_SUMS(A, 3, s0, s1);
    vst1q_s32(c + 3 * c_stride, s0);
    vst1q_s32(c + 3 * c_stride + 4, s1);
}

#define Q16_HAVE_TILE_Q16 1
static inline void q16_tile_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                                size_t mr, size_t nc, const fx_requant* q, size_t c0,
                                int16_t* out, size_t out_stride)
{
    const int any_left = q->any_left;
    q16_dot_4x8 A;
    int32x4_t s0, s1;
    int16x8_t r0, r1, r2, r3;
    fx_rq4 kl, kh;
    q16_out o;
    q16_dot_init(&A, (const int32_t*)block, 0);
    q16_dot_taps_4x8(&A, taps, cin, a, (const int8_t*)block + 8 * sizeof(int32_t));
    /* the epilogue on the registers, every constant loaded before the first store */
    kl = fx_rq4_load(q, c0);
    kh = fx_rq4_load(q, c0 + 4);
    o = q16_out_load(q);
    Q16_DOT_SUMS(A, 0, s0, s1);
    r0 = q16_pack8(fx_mbqm4_k(s0, kl, any_left), fx_mbqm4_k(s1, kh, any_left), o);
    Q16_DOT_SUMS(A, 1, s0, s1);
    r1 = q16_pack8(fx_mbqm4_k(s0, kl, any_left), fx_mbqm4_k(s1, kh, any_left), o);
    Q16_DOT_SUMS(A, 2, s0, s1);
    r2 = q16_pack8(fx_mbqm4_k(s0, kl, any_left), fx_mbqm4_k(s1, kh, any_left), o);
    Q16_DOT_SUMS(A, 3, s0, s1);
    r3 = q16_pack8(fx_mbqm4_k(s0, kl, any_left), fx_mbqm4_k(s1, kh, any_left), o);
    q16_store_row8(out, r0, nc);
    if (mr > 1)
        q16_store_row8(out + out_stride, r1, nc);
    if (mr > 2)
        q16_store_row8(out + 2 * out_stride, r2, nc);
    if (mr > 3)
        q16_store_row8(out + 3 * out_stride, r3, nc);
}

/* One row x 8 channels (dense at batch 1): per 16 input channels one split, 8 weight vectors,
   16 sdots (two per weight vector). */
typedef struct {
    int32x4_t c0h, c1h, c0l, c1l;
} q16_dot_1x8;

#define Q16_SDOT_1X8(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int8x16_t w0_ = vld1q_s8((w) + 32 * (l)), w1_ = vld1q_s8((w) + 32 * (l) + 16); \
        (A)->c0h = vdotq_laneq_s32((A)->c0h, w0_, h, l); \
        (A)->c1h = vdotq_laneq_s32((A)->c1h, w1_, h, l); \
        (A)->c0l = vdotq_laneq_s32((A)->c0l, w0_, lo, l); \
        (A)->c1l = vdotq_laneq_s32((A)->c1l, w1_, lo, l); \
    } while (0)

#define Q16_HAVE_ROW_Q16 1
static inline void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                               size_t nc, const fx_requant* q, size_t c0, int16_t* out)
{
    const int32_t* bias = (const int32_t*)block;
    const int8_t* w = (const int8_t*)block + 8 * sizeof(int32_t);
    const size_t steps = cin / 16, rem = cin % 16, tail_groups = (rem + 3) / 4;
    const int any_left = q->any_left;
    q16_dot_1x8 A;
    int32x4_t s0, s1;
    A.c0h = A.c1h = vdupq_n_s32(0);
    A.c0l = vld1q_s32(bias);
    A.c1l = vld1q_s32(bias + 4);
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x = a[t];
        for (size_t k = steps; k != 0; k--) {
            int8x16_t h, lo;
            Q16_SPLIT(vld1q_s16(x), vld1q_s16(x + 8), h, lo);
            Q16_SDOT_1X8(&A, w, 0);
            Q16_SDOT_1X8(&A, w, 1);
            Q16_SDOT_1X8(&A, w, 2);
            Q16_SDOT_1X8(&A, w, 3);
            x += 16;
            w += 128;
        }
        if (rem) {
            int16x8_t va, vb;
            int8x16_t h, lo;
            Q16_LOAD_TAIL(x, rem, va, vb);
            Q16_SPLIT(va, vb, h, lo);
            Q16_SDOT_1X8(&A, w, 0);
            if (tail_groups > 1)
                Q16_SDOT_1X8(&A, w, 1);
            if (tail_groups > 2)
                Q16_SDOT_1X8(&A, w, 2);
            if (tail_groups > 3)
                Q16_SDOT_1X8(&A, w, 3);
            w += 32 * tail_groups;
        }
    }
    s0 = vaddq_s32(vshlq_n_s32(A.c0h, 8), A.c0l);
    s1 = vaddq_s32(vshlq_n_s32(A.c1h, 8), A.c1l);
    q16_store_row8(out, q16_pack8(fx_mbqm4_k(s0, fx_rq4_load(q, c0), any_left),
                                  fx_mbqm4_k(s1, fx_rq4_load(q, c0 + 4), any_left),
                                  q16_out_load(q)), nc);
}

#endif /* FIXNET_QGEMM16_NEONDOT_H */

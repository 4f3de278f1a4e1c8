/* The int16-activation GEMM micro-kernels, aarch64 without the dot product (Pi 4): 4 x 8 tile, K
 * one value at a time ("c1"), smlal / smlal2 by lane on int16 weights; and the loads, stores
 * and int16 epilogue of both aarch64 builds (the dot-product build's kernels,
 * qgemm16_neondot.h, use them).
 * Included by qgemm16.h (which defines the tile macros and the packing it reads); see there.
 *
 * K loop: per 8 input channels, one 16-byte load of each of the 4 rows (8 int16) and 8 weight
 * vectors (the 8 channels' int16 weights of one input channel each); per input channel l and
 * row r, smlal multiplies the low 4 channels' weights by lane l of the row into c<r>l and
 * smlal2 (vmlal_high_laneq_s16: no dup of the high half) the high 4 into c<r>h: 64 multiply-
 * accumulates of 4 lanes, 12 loads, no broadcast, no horizontal sum at the end (the
 * accumulators are the channels in order). The K tail (Cin % 8 values) is after the loop, its
 * row bytes loaded in pieces (neon_partial.h), never past the row. Unrolled by hand, the 8
 * accumulators named, a NEON_LOAD_FENCE between weight loads (qgemm_neon.h says why).
 */
#ifndef FIXNET_QGEMM16_NEON_H
#define FIXNET_QGEMM16_NEON_H

/* ---- loads, stores and the int16 epilogue (this build and the dot-product build) ----------- */

/* n < 8 int16 at p in lanes [0, n), the other lanes 0, reading only those 2 n bytes. */
NEON_INLINE int16x8_t q16_load_partial(const int16_t* p, size_t n)
{
    return vreinterpretq_s16_s8(neon_load_partial16((const int8_t*)p, 2 * n));
}

/* The int16 bounds as vectors (loaded before the stores, which may alias q). */
typedef struct {
    int16x8_t lo, hi;
} q16_out;

NEON_INLINE q16_out q16_out_load(const fx_requant* q)
{
    q16_out o;
    o.lo = vdupq_n_s16((int16_t)q->act_min);
    o.hi = vdupq_n_s16((int16_t)q->act_max);
    return o;
}

/* 8 requantized int32 (channels 0-3, 4-7) to int16: saturating narrow (exact: the bounds lie
   inside int16), clamp. */
NEON_INLINE int16x8_t q16_pack8(int32x4_t lo4, int32x4_t hi4, q16_out o)
{
    const int16x8_t v = vcombine_s16(vqmovn_s32(lo4), vqmovn_s32(hi4));
    return vminq_s16(vmaxq_s16(v, o.lo), o.hi);
}

/* One row of 8 int16 results: stored whole, or its first nc lanes. */
NEON_INLINE void q16_store_row8(int16_t* out, int16x8_t v, size_t nc)
{
    if (nc == 8)
        vst1q_s16(out, v);
    else
        neon_store_partial16((int8_t*)out, vreinterpretq_s8_s16(v), 2 * nc);
}

/* int32 rows in memory (the long-tap path): 8 channels at a time. */
#define Q16_HAVE_REQUANT_ROWS 1
static inline void q16_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                    size_t n, const fx_requant* q, size_t c0, int16_t* out,
                                    size_t out_stride)
{
    const int any_left = q->any_left;
    const q16_out o = q16_out_load(q);
    for (size_t c = 0; c < n; c += 8) {
        const size_t m = n - c < 8 ? n - c : 8;
        const fx_rq4 kl = fx_rq4_load(q, c0 + c), kh = fx_rq4_load(q, c0 + c + 4);
        for (size_t r = 0; r < rows; r++) {
            int32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (size_t j = 0; j < m; j++)      /* never read past the row's n sums */
                buf[j] = acc[r * acc_stride + c + j];
            q16_store_row8(out + r * out_stride + c,
                           q16_pack8(fx_mbqm4_k(vld1q_s32(buf), kl, any_left),
                                     fx_mbqm4_k(vld1q_s32(buf + 4), kh, any_left), o), m);
        }
    }
}

/* ---- the smlal kernels (the dot-product build has its own: qgemm16_neondot.h) ----------- */
#if !defined(__ARM_FEATURE_DOTPROD)

typedef struct {
    int32x4_t c0l, c0h, c1l, c1h, c2l, c2h, c3l, c3h;
} q16_acc_4x8;

/* Input channel l of a step of 8 (lane l of v0..v3) times its 8 channels' weights at w + 8 l. */
#define Q16_MLAL_4X8(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int16x8_t wl_ = vld1q_s16((w) + 8 * (l)); \
        const int16x4_t wlo_ = vget_low_s16(wl_); \
        (A)->c0l = vmlal_laneq_s16((A)->c0l, wlo_, v0, l); \
        (A)->c0h = vmlal_high_laneq_s16((A)->c0h, wl_, v0, l); \
        (A)->c1l = vmlal_laneq_s16((A)->c1l, wlo_, v1, l); \
        (A)->c1h = vmlal_high_laneq_s16((A)->c1h, wl_, v1, l); \
        (A)->c2l = vmlal_laneq_s16((A)->c2l, wlo_, v2, l); \
        (A)->c2h = vmlal_high_laneq_s16((A)->c2h, wl_, v2, l); \
        (A)->c3l = vmlal_laneq_s16((A)->c3l, wlo_, v3, l); \
        (A)->c3h = vmlal_high_laneq_s16((A)->c3h, wl_, v3, l); \
    } while (0)

/* The first n lanes of a step (the K tail, 0 < n < 8): lane l only where l < n. */
#define Q16_TAIL(MAC, A, w, n) do { \
        MAC(A, w, 0); \
        if ((n) > 1) MAC(A, w, 1); \
        if ((n) > 2) MAC(A, w, 2); \
        if ((n) > 3) MAC(A, w, 3); \
        if ((n) > 4) MAC(A, w, 4); \
        if ((n) > 5) MAC(A, w, 5); \
        if ((n) > 6) MAC(A, w, 6); \
    } while (0)

/* Sum every tap of the tile into A: a[4 t + r] is the row of tap t for pixel r. */
NEON_INLINE void q16_acc_taps_4x8(q16_acc_4x8* A, size_t taps, size_t cin, const int16_t** a,
                                  const int16_t* w)
{
    const size_t steps = cin / 8, rem = cin % 8;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x0 = a[4 * t];
        const int16_t* x1 = a[4 * t + 1];
        const int16_t* x2 = a[4 * t + 2];
        const int16_t* x3 = a[4 * t + 3];
        for (size_t k = steps; k != 0; k--) {
            const int16x8_t v0 = vld1q_s16(x0), v1 = vld1q_s16(x1);
            const int16x8_t v2 = vld1q_s16(x2), v3 = vld1q_s16(x3);
            Q16_MLAL_4X8(A, w, 0);
            Q16_MLAL_4X8(A, w, 1);
            Q16_MLAL_4X8(A, w, 2);
            Q16_MLAL_4X8(A, w, 3);
            Q16_MLAL_4X8(A, w, 4);
            Q16_MLAL_4X8(A, w, 5);
            Q16_MLAL_4X8(A, w, 6);
            Q16_MLAL_4X8(A, w, 7);
            x0 += 8;
            x1 += 8;
            x2 += 8;
            x3 += 8;
            w += 64;
        }
        if (rem) {
            const int16x8_t v0 = q16_load_partial(x0, rem), v1 = q16_load_partial(x1, rem);
            const int16x8_t v2 = q16_load_partial(x2, rem), v3 = q16_load_partial(x3, rem);
            Q16_TAIL(Q16_MLAL_4X8, A, w, rem);
            w += 8 * rem;
        }
    }
}

static inline void q16_tile(size_t taps, size_t cin, const int16_t** a, const void* wv,
                            const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    q16_acc_4x8 A;
    A.c0l = vld1q_s32(init);
    A.c0h = vld1q_s32(init + 4);
    A.c1l = vld1q_s32(init + init_stride);
    A.c1h = vld1q_s32(init + init_stride + 4);
    A.c2l = vld1q_s32(init + 2 * init_stride);
    A.c2h = vld1q_s32(init + 2 * init_stride + 4);
    A.c3l = vld1q_s32(init + 3 * init_stride);
    A.c3h = vld1q_s32(init + 3 * init_stride + 4);
    q16_acc_taps_4x8(&A, taps, cin, a, (const int16_t*)wv);
    vst1q_s32(c, A.c0l);
    vst1q_s32(c + 4, A.c0h);
    vst1q_s32(c + c_stride, A.c1l);
    vst1q_s32(c + c_stride + 4, A.c1h);
    vst1q_s32(c + 2 * c_stride, A.c2l);
    vst1q_s32(c + 2 * c_stride + 4, A.c2h);
    vst1q_s32(c + 3 * c_stride, A.c3l);
    vst1q_s32(c + 3 * c_stride + 4, A.c3h);
}

#define Q16_HAVE_TILE_Q16 1
static inline void q16_tile_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                                size_t mr, size_t nc, const fx_requant* q, size_t c0,
                                int16_t* out, size_t out_stride)
{
    const int32_t* bias = (const int32_t*)block;
    const int any_left = q->any_left;
    q16_acc_4x8 A;
    int16x8_t r0, r1, r2, r3;
    fx_rq4 kl, kh;
    q16_out o;
    A.c0l = A.c1l = A.c2l = A.c3l = vld1q_s32(bias);
    A.c0h = A.c1h = A.c2h = A.c3h = vld1q_s32(bias + 4);
    q16_acc_taps_4x8(&A, taps, cin, a, (const int16_t*)((const int8_t*)block + 8 * sizeof(int32_t)));
    /* the epilogue on the registers, every constant loaded before the first store */
    kl = fx_rq4_load(q, c0);
    kh = fx_rq4_load(q, c0 + 4);
    o = q16_out_load(q);
    r0 = q16_pack8(fx_mbqm4_k(A.c0l, kl, any_left), fx_mbqm4_k(A.c0h, kh, any_left), o);
    r1 = q16_pack8(fx_mbqm4_k(A.c1l, kl, any_left), fx_mbqm4_k(A.c1h, kh, any_left), o);
    r2 = q16_pack8(fx_mbqm4_k(A.c2l, kl, any_left), fx_mbqm4_k(A.c2h, kh, any_left), o);
    r3 = q16_pack8(fx_mbqm4_k(A.c3l, kl, any_left), fx_mbqm4_k(A.c3h, kh, any_left), o);
    q16_store_row8(out, r0, nc);
    if (mr > 1)
        q16_store_row8(out + out_stride, r1, nc);
    if (mr > 2)
        q16_store_row8(out + 2 * out_stride, r2, nc);
    if (mr > 3)
        q16_store_row8(out + 3 * out_stride, r3, nc);
}

/* One row x 8 channels (dense at batch 1): bound by the weight loads (each used once), so two
   pairs of accumulators, even and odd input channels, keep two chains of smlal in flight. */
typedef struct {
    int32x4_t el, eh, ol, oh;
} q16_acc_1x8;

#define Q16_MLAL_1X8_E(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int16x8_t wl_ = vld1q_s16((w) + 8 * (l)); \
        (A)->el = vmlal_laneq_s16((A)->el, vget_low_s16(wl_), v, l); \
        (A)->eh = vmlal_high_laneq_s16((A)->eh, wl_, v, l); \
    } while (0)
#define Q16_MLAL_1X8_O(A, w, l) do { \
        NEON_LOAD_FENCE(); \
        const int16x8_t wl_ = vld1q_s16((w) + 8 * (l)); \
        (A)->ol = vmlal_laneq_s16((A)->ol, vget_low_s16(wl_), v, l); \
        (A)->oh = vmlal_high_laneq_s16((A)->oh, wl_, v, l); \
    } while (0)
/* lane l of the row into the even or the odd pair of accumulators */
#define Q16_MLAL_1X8(A, w, l) do { \
        if ((l) & 1) Q16_MLAL_1X8_O(A, w, l); else Q16_MLAL_1X8_E(A, w, l); \
    } while (0)

#define Q16_HAVE_ROW_Q16 1
static inline void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                               size_t nc, const fx_requant* q, size_t c0, int16_t* out)
{
    const int32_t* bias = (const int32_t*)block;
    const int16_t* w = (const int16_t*)((const int8_t*)block + 8 * sizeof(int32_t));
    const size_t steps = cin / 8, rem = cin % 8;
    const int any_left = q->any_left;
    q16_acc_1x8 A;
    int32x4_t lo4, hi4;
    A.el = vld1q_s32(bias);
    A.eh = vld1q_s32(bias + 4);
    A.ol = A.oh = vdupq_n_s32(0);
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x = a[t];
        for (size_t k = steps; k != 0; k--) {
            const int16x8_t v = vld1q_s16(x);
            Q16_MLAL_1X8(&A, w, 0);
            Q16_MLAL_1X8(&A, w, 1);
            Q16_MLAL_1X8(&A, w, 2);
            Q16_MLAL_1X8(&A, w, 3);
            Q16_MLAL_1X8(&A, w, 4);
            Q16_MLAL_1X8(&A, w, 5);
            Q16_MLAL_1X8(&A, w, 6);
            Q16_MLAL_1X8(&A, w, 7);
            x += 8;
            w += 64;
        }
        if (rem) {
            const int16x8_t v = q16_load_partial(x, rem);
            Q16_TAIL(Q16_MLAL_1X8, &A, w, rem);
            w += 8 * rem;
        }
    }
    lo4 = fx_mbqm4_k(vaddq_s32(A.el, A.ol), fx_rq4_load(q, c0), any_left);
    hi4 = fx_mbqm4_k(vaddq_s32(A.eh, A.oh), fx_rq4_load(q, c0 + 4), any_left);
    q16_store_row8(out, q16_pack8(lo4, hi4, q16_out_load(q)), nc);
}

#endif /* !__ARM_FEATURE_DOTPROD */

#endif /* FIXNET_QGEMM16_NEON_H */

/* Depthwise on aarch64 NEON: the row of one output row segment (dw_row_simd, DW_HAVE_ROW_SIMD),
 * included by dwconv.h, which defines the lanes, the phase rows, the packing and the task loop
 * (see there); this file replaces its generic vector row.
 *
 * A tile is 16 lanes: per tap, 16 input bytes (one load from the tap's phase row) times the
 * tap's 16 weights. Two taps are summed in int16 (smull + smlal on the low 8 lanes, smull2 +
 * smlal2 on the high 8: exact, |w| <= 127 makes a pair at most 2 * 128 * 127 < 2^15), then
 * widened into the 4 int32 accumulators (saddw, saddw2), which start from the bias. The
 * requantization (requant_neon.h) runs on the accumulator registers.
 *
 * Two tiles at a time: tiles j and j + L (flat mode) or the same channels of two adjacent
 * pixels (pixel mode) have the same lanes, so they share the weight and bias loads and the
 * requantization constants (per pair of tiles: 18 row loads, 9 weight, 4 bias, 8 constants for
 * 9 taps, instead of 2 x 30). Per-call values (the tap row pointers, the packed tiles, the
 * constants' arrays, zero point and clamp) are copied to locals once per row: the int8 stores
 * may alias anything, so fields read through k or q would be reloaded after each store.
 * Specialised copies (taps 9 and 25 unrolled; with and without left shifts; the unpaired
 * form for weight arrays that hold -128) are chosen once per row, not per tile. */
#ifndef FIXNET_DWCONV_NEON_H
#define FIXNET_DWCONV_NEON_H

#include "neon_partial.h"

#define DW_HAVE_ROW_SIMD 1

typedef struct { int32x4_t a0, a1, a2, a3; } dw_acc_t;

/* The requantization constants of one row: pointers to the per-lane arrays and the output
   zero point and bounds as vectors. */
typedef struct {
    const int32_t* m0;
    const int32_t* left;
    const int32_t* neg_right;
    fx_out8 o;
} dw_rq_t;

/* 16 products of row x and weights w summed into an int16 pair sum (lo: lanes 0-7,
   hi: 8-15), or added to one. */
#define DW_MUL(lo, hi, x, w) do { \
        lo = vmull_s8(vget_low_s8(x), vget_low_s8(w)); \
        hi = vmull_high_s8(x, w); \
    } while (0)
#define DW_MLA(lo, hi, x, w) do { \
        lo = vmlal_s8(lo, vget_low_s8(x), vget_low_s8(w)); \
        hi = vmlal_high_s8(hi, x, w); \
    } while (0)
/* acc (or bias, for the first) + the int16 sums, widened */
#define DW_WIDEN(A, from, lo, hi) do { \
        (A).a0 = vaddw_s16((from).a0, vget_low_s16(lo)); \
        (A).a1 = vaddw_high_s16((from).a1, lo); \
        (A).a2 = vaddw_s16((from).a2, vget_low_s16(hi)); \
        (A).a3 = vaddw_high_s16((from).a3, hi); \
    } while (0)

/* The steps of the tap loops: two taps (int16 pair sums, then widened) or one, of two tiles
   (A at byte ja, B at jb of every tap's row r[t]) or of one (A at j). */
#define DW_STEP2_AB(t) do { \
        const int8x16_t w0 = vld1q_s8(w + 16 * (t)), w1 = vld1q_s8(w + 16 * (t) + 16); \
        const int8x16_t xa0 = vld1q_s8(r[t] + ja), xa1 = vld1q_s8(r[(t) + 1] + ja); \
        const int8x16_t xb0 = vld1q_s8(r[t] + jb), xb1 = vld1q_s8(r[(t) + 1] + jb); \
        int16x8_t alo, ahi, blo, bhi; \
        DW_MUL(alo, ahi, xa0, w0); \
        DW_MUL(blo, bhi, xb0, w0); \
        DW_MLA(alo, ahi, xa1, w1); \
        DW_MLA(blo, bhi, xb1, w1); \
        DW_WIDEN(*A, *A, alo, ahi); \
        DW_WIDEN(*B, *B, blo, bhi); \
    } while (0);
#define DW_STEP1_AB(t) do { \
        const int8x16_t w0 = vld1q_s8(w + 16 * (t)); \
        const int8x16_t xa = vld1q_s8(r[t] + ja), xb = vld1q_s8(r[t] + jb); \
        int16x8_t alo, ahi, blo, bhi; \
        DW_MUL(alo, ahi, xa, w0); \
        DW_MUL(blo, bhi, xb, w0); \
        DW_WIDEN(*A, *A, alo, ahi); \
        DW_WIDEN(*B, *B, blo, bhi); \
    } while (0);
#define DW_STEP2_A(t) do { \
        const int8x16_t w0 = vld1q_s8(w + 16 * (t)), w1 = vld1q_s8(w + 16 * (t) + 16); \
        const int8x16_t x0 = vld1q_s8(r[t] + j), x1 = vld1q_s8(r[(t) + 1] + j); \
        int16x8_t lo, hi; \
        DW_MUL(lo, hi, x0, w0); \
        DW_MLA(lo, hi, x1, w1); \
        DW_WIDEN(*A, *A, lo, hi); \
    } while (0);
#define DW_STEP1_A(t) do { \
        const int8x16_t w0 = vld1q_s8(w + 16 * (t)), x0 = vld1q_s8(r[t] + j); \
        int16x8_t lo, hi; \
        DW_MUL(lo, hi, x0, w0); \
        DW_WIDEN(*A, *A, lo, hi); \
    } while (0);
/* 3x3 and 5x5 unrolled by hand (the same code at -O2 and -O3) */
#define DW_TAPS9(S2, S1) S2(0) S2(2) S2(4) S2(6) S1(8)
#define DW_TAPS25(S2, S1) S2(0) S2(2) S2(4) S2(6) S2(8) S2(10) S2(12) S2(14) S2(16) S2(18) \
    S2(20) S2(22) S1(24)
/* every tap of a runtime count: pairs, then the odd one (or every tap alone: pairs == 0) */
#define DW_TAPS(S2, S1) do { \
        ptrdiff_t t_ = 0; \
        if (pairs) \
            for (; t_ + 1 < taps; t_ += 2) \
                S2(t_) \
        for (; t_ < taps; t_++) \
            S1(t_) \
    } while (0)

DW_INLINE void dw_bias(dw_acc_t* A, const int32_t* b)
{
    A->a0 = vld1q_s32(b);
    A->a1 = vld1q_s32(b + 4);
    A->a2 = vld1q_s32(b + 8);
    A->a3 = vld1q_s32(b + 12);
}

/* Two tiles with the same lanes: their weights w (taps x 16), bias b. `taps` is a constant in
   the specialised copies; `pairs` 0 sums every product into int32 on its own (weights of
   -128). */
DW_INLINE void dw_acc2(dw_acc_t* A, dw_acc_t* B, const int8_t* const* r, ptrdiff_t taps,
                       ptrdiff_t ja, ptrdiff_t jb, const int8_t* w, const int32_t* b,
                       int pairs)
{
    dw_bias(A, b);
    *B = *A;
    if (pairs && taps == 9) {
        DW_TAPS9(DW_STEP2_AB, DW_STEP1_AB)
    } else if (pairs && taps == 25) {
        DW_TAPS25(DW_STEP2_AB, DW_STEP1_AB)
    } else {
        DW_TAPS(DW_STEP2_AB, DW_STEP1_AB);
    }
}

/* One tile (byte j of every tap's row). */
DW_INLINE void dw_acc1(dw_acc_t* A, const int8_t* const* r, ptrdiff_t taps, ptrdiff_t j,
                       const int8_t* w, const int32_t* b, int pairs)
{
    dw_bias(A, b);
    if (pairs && taps == 9) {
        DW_TAPS9(DW_STEP2_A, DW_STEP1_A)
    } else if (pairs && taps == 25) {
        DW_TAPS25(DW_STEP2_A, DW_STEP1_A)
    } else {
        DW_TAPS(DW_STEP2_A, DW_STEP1_A);
    }
}

/* The requantization of two tiles with the same lanes (lane0 .. lane0 + 15). */
DW_INLINE void dw_requant2(dw_acc_t* A, dw_acc_t* B, const dw_rq_t* c, ptrdiff_t lane0,
                           int left, int8x16_t* va, int8x16_t* vb)
{
    fx_rq4 k;
#define DW_RQ4(i) \
    k.m0 = vld1q_s32(c->m0 + lane0 + 4 * i); \
    k.neg_right = vld1q_s32(c->neg_right + lane0 + 4 * i); \
    if (left) \
        k.left = vld1q_s32(c->left + lane0 + 4 * i); \
    else \
        k.left = vdupq_n_s32(0); \
    A->a##i = fx_mbqm4_k(A->a##i, k, left); \
    B->a##i = fx_mbqm4_k(B->a##i, k, left);
    DW_RQ4(0) DW_RQ4(1) DW_RQ4(2) DW_RQ4(3)
#undef DW_RQ4
    *va = fx_pack16_k(A->a0, A->a1, A->a2, A->a3, c->o);
    *vb = fx_pack16_k(B->a0, B->a1, B->a2, B->a3, c->o);
}

DW_INLINE int8x16_t dw_requant1(dw_acc_t* A, const dw_rq_t* c, ptrdiff_t lane0, int left)
{
    fx_rq4 k;
#define DW_RQ4(i) \
    k.m0 = vld1q_s32(c->m0 + lane0 + 4 * i); \
    k.neg_right = vld1q_s32(c->neg_right + lane0 + 4 * i); \
    if (left) \
        k.left = vld1q_s32(c->left + lane0 + 4 * i); \
    else \
        k.left = vdupq_n_s32(0); \
    A->a##i = fx_mbqm4_k(A->a##i, k, left);
    DW_RQ4(0) DW_RQ4(1) DW_RQ4(2) DW_RQ4(3)
#undef DW_RQ4
    return fx_pack16_k(A->a0, A->a1, A->a2, A->a3, c->o);
}

/* 16 results, or the first n < 16 of them. */
DW_INLINE void dw_store(int8_t* out, int8x16_t v, ptrdiff_t n)
{
    if (n == DW_TILE)
        vst1q_s8(out, v);
    else
        neon_store_partial16(out, v, (size_t)n);
}

/* The tiles of one row segment (dwconv.h's dw_row_scalar, two tiles per step). */
DW_INLINE void dw_row_neon(const dw_call* k, const int8_t* const* base, ptrdiff_t taps,
                           ptrdiff_t pixels, int8_t* out, int pairs, int left)
{
    const ptrdiff_t cout = k->out_c, lanes = k->lanes, len = pixels * cout;
    const uint8_t* const packed = k->packed;
    const size_t tb = dw_tile_bytes(taps);
    const int8_t* r[DW_MAX_TAPS];
    dw_rq_t c;
    dw_acc_t A, B;
    int8x16_t va, vb;
    ptrdiff_t t, j, l, p;
    for (t = 0; t < taps; t++)
        r[t] = base[t];
    c.m0 = k->q->m0;
    c.left = k->q->left;
    c.neg_right = k->q->neg_right;
    c.o = fx_out8_load(k->q);
#define DW_TILE_AT(lane0) ((const int32_t*)(packed + ((lane0) / DW_TILE) * tb))
#define DW_W_AT(lane0) ((const int8_t*)(packed + ((lane0) / DW_TILE) * tb + DW_TILE * 4))
    if (k->flat) {
        /* blocks of 2L lanes: tile l and tile L + l (same lanes) together */
        for (j = 0; j + 2 * lanes <= len; j += 2 * lanes) {
            for (l = 0; l < lanes; l += DW_TILE) {
                dw_acc2(&A, &B, r, taps, j + l, j + lanes + l, DW_W_AT(l), DW_TILE_AT(l), pairs);
                dw_requant2(&A, &B, &c, l, left, &va, &vb);
                vst1q_s8(out + j + l, va);
                vst1q_s8(out + j + lanes + l, vb);
            }
        }
        /* the rest (less than 2L lanes), one tile at a time from lane 0 */
        for (l = 0; j < len; j += DW_TILE) {
            dw_acc1(&A, r, taps, j, DW_W_AT(l), DW_TILE_AT(l), pairs);
            va = dw_requant1(&A, &c, l, left);
            dw_store(out + j, va, len - j < DW_TILE ? len - j : DW_TILE);
            l = l + DW_TILE == lanes ? 0 : l + DW_TILE;
        }
    } else {
        /* pixel mode: the same channels of two adjacent pixels together; the whole tiles of
           a pixel, then its partial last one (n lanes) */
        const ptrdiff_t whole = cout / DW_TILE * DW_TILE, n = cout - whole;
        for (p = 0; p + 2 <= pixels; p += 2) {
            int8_t* o = out + p * cout;
            for (l = 0; l < whole; l += DW_TILE) {
                dw_acc2(&A, &B, r, taps, p * cout + l, (p + 1) * cout + l, DW_W_AT(l),
                        DW_TILE_AT(l), pairs);
                dw_requant2(&A, &B, &c, l, left, &va, &vb);
                vst1q_s8(o + l, va);
                vst1q_s8(o + cout + l, vb);
            }
            if (n) {
                dw_acc2(&A, &B, r, taps, p * cout + l, (p + 1) * cout + l, DW_W_AT(l),
                        DW_TILE_AT(l), pairs);
                dw_requant2(&A, &B, &c, l, left, &va, &vb);
                neon_store_partial16(o + l, va, (size_t)n);
                neon_store_partial16(o + cout + l, vb, (size_t)n);
            }
        }
        for (; p < pixels; p++) {
            for (l = 0; l < cout; l += DW_TILE) {
                dw_acc1(&A, r, taps, p * cout + l, DW_W_AT(l), DW_TILE_AT(l), pairs);
                va = dw_requant1(&A, &c, l, left);
                dw_store(out + p * cout + l, va, cout - l < DW_TILE ? cout - l : DW_TILE);
            }
        }
    }
#undef DW_TILE_AT
#undef DW_W_AT
}

/* The row of dwconv.h's task loop: a specialised copy per call (branches out of the tiles). */
static inline void dw_row_simd(const dw_call* k, const int8_t* const* base, ptrdiff_t pixels,
                               int8_t* out)
{
    const ptrdiff_t taps = k->taps;
    if (!k->pairs_ok)
        dw_row_neon(k, base, taps, pixels, out, 0, 1);
    else if (k->q->any_left)
        dw_row_neon(k, base, taps, pixels, out, 1, 1);
    else if (taps == 9)
        dw_row_neon(k, base, 9, pixels, out, 1, 0);
    else if (taps == 25)
        dw_row_neon(k, base, 25, pixels, out, 1, 0);
    else
        dw_row_neon(k, base, taps, pixels, out, 1, 0);
}

#endif /* FIXNET_DWCONV_NEON_H */

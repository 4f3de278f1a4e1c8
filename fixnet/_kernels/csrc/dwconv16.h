/* Depthwise convolution on int16 activations with int8 weights (TFLite's 16x8 convention:
 * int16 tensors are symmetric, zero point 0), included by dwconv.h after its driver: the same
 * lanes, phase rows and tasks (dwconv.h's header; k->elem = 2, so phase rows hold int16), its
 * own packing, scalar twin and vector rows. Products int16 x int8 are summed in int32
 * (wrapping modulo 2^32 as the int8 path does; the quantizer's overflow proof bounds them),
 * then requant.h's rule, clamp, int16 stores. The vector tile per ISA in dwconv16_x86.h
 * (AVX2, which the AVX-512 builds use too, and SSE2) and dwconv16_neon.h.
 *
 * Packed weights (dw16_pack, once per weight array, for the L expanded lanes), per tile of 16
 * lanes: [16 int32 biases | the weights of every tap], every value widened to int16 once
 * here, in "slots": lane l of the tile is stored at slot DW16_SLOT(l), for its bias, its
 * weights and its requantization constants alike (the caller builds fx_requant with lane
 * tile * 16 + l at index tile * 16 + DW16_SLOT(l)). The weights, per build:
 *   x86-64 (SSE2, AVX2, AVX-512):  tap pairs, [s0 t, s0 t+1, s1 t, s1 t+1, ...] (pmaddwd's
 *                                  operand order), 32 values per pair, the second tap of an
 *                                  odd last pair 0;
 *   others (aarch64 NEON):         [tap][16 slots] (smlal's operands).
 * DW16_SLOT is the identity except on AVX2: there a tap's 16 int16 values are one 256-bit
 * register and vpunpcklwd / vpunpckhwd interleave two taps within 128-bit halves, leaving
 * channels 0-3 and 8-11 in the low result, 4-7 and 12-15 in the high one; storing those
 * lanes in that order (slots 0-7 and 8-15: swap bits 2 and 3 of the lane) keeps the tap loop
 * free of cross-lane shuffles, and vpackssdw of the two accumulators puts the 16 results
 * back in channel order for the store.
 */
#ifndef FIXNET_DWCONV16_H
#define FIXNET_DWCONV16_H

#if defined(__AVX2__) && (defined(DW_AVX2) || defined(DW_AVX512))
#  define DW16_AVX2 1
#  define DW16_PAIRS 1
#  define DW16_ISA_NAME "avx2"
#  define DW16_SLOT(lane) (((lane) & 3) | (((lane) & 4) << 1) | (((lane) & 8) >> 1))
#elif defined(DW_SSE2)
#  define DW16_SSE2 1
#  define DW16_PAIRS 1
#  define DW16_ISA_NAME "sse2"
#elif defined(DW_NEON)
#  define DW16_NEON 1
#  define DW16_PAIRS 0
#  define DW16_ISA_NAME "neon"
#else
#  define DW16_PAIRS 0
#  define DW16_ISA_NAME "scalar"
#endif
#ifndef DW16_SLOT
#  define DW16_SLOT(lane) (lane)
#endif

/* ---- packing ------------------------------------------------------------------------ */

static inline size_t dw16_tile_bytes(ptrdiff_t taps) {
#if DW16_PAIRS
    return DW_TILE * 4 + (size_t)((taps + 1) / 2) * 2 * DW_TILE * 2;
#else
    return DW_TILE * 4 + (size_t)taps * DW_TILE * 2;
#endif
}

/* The slot of lane l (what the Cython side permutes the requantization constants by). */
static inline int dw16_slot(int lane) { return DW16_SLOT(lane); }

static inline int16_t* dw16_weight_at(uint8_t* tile, ptrdiff_t tap, int slot) {
    int16_t* w = (int16_t*)(tile + DW_TILE * 4);
#if DW16_PAIRS
    return w + (tap / 2) * 2 * DW_TILE + slot * 2 + (tap & 1);
#else
    return w + tap * DW_TILE + slot;
#endif
}

/* The weight of (tap, slot) and the bias of a slot inside one packed tile. */
static inline int32_t dw16_weight(const uint8_t* tile, ptrdiff_t tap, int slot) {
    return *dw16_weight_at((uint8_t*)tile, tap, slot);
}

static inline int32_t dw16_bias(const uint8_t* tile, int slot) {
    return ((const int32_t*)tile)[slot];
}

/* w: int8 [taps][channels] (KH, KW flattened), bias: int32 [channels] (for the expanded
   lanes: channels = L); dst: dw_n_tiles(channels) * dw16_tile_bytes(taps) bytes, 4-byte
   aligned. Lanes past the last channel (pixel mode) hold bias 0 and weight 0. */
static inline void dw16_pack(const int8_t* w, const int32_t* bias, ptrdiff_t taps,
                             ptrdiff_t channels, uint8_t* dst) {
    ptrdiff_t tile, t;
    int lane;
    size_t tb = dw16_tile_bytes(taps);
    memset(dst, 0, tb * (size_t)dw_n_tiles(channels));
    for (tile = 0; tile < dw_n_tiles(channels); tile++) {
        uint8_t* d = dst + tile * tb;
        for (lane = 0; lane < DW_TILE; lane++) {
            ptrdiff_t c = tile * DW_TILE + lane;
            if (c >= channels)
                break;
            ((int32_t*)d)[DW16_SLOT(lane)] = bias[c];
            for (t = 0; t < taps; t++)
                *dw16_weight_at(d, t, DW16_SLOT(lane)) = w[t * channels + c];
        }
    }
}

/* requantize_accumulator(acc, m0[c], shift[c], out_zp, act_min, act_max) to int16. */
static inline int16_t dw16_requant_scalar(int32_t acc, const fx_requant* q, size_t c) {
    int64_t v = (int64_t)q->out_zp + fx_mbqm_scalar(acc, q, c);
    v = v < q->act_min ? q->act_min : v;
    v = v > q->act_max ? q->act_max : v;
    return (int16_t)v;
}

/* The tap rows of dwconv.h's task loop (byte pointers) as int16 rows. */
static inline void dw16_rows(const dw_call* k, const int8_t* const* base, const int16_t** r) {
    ptrdiff_t t;
    for (t = 0; t < k->taps; t++)
        r[t] = (const int16_t*)base[t];
}

/* ---- the scalar twin ------------------------------------------------------------------- */

/* 16 lanes from value j of every tap's row, tile `lane0 / 16` of the L lanes; stores the
   first n. */
static inline void dw16_tile_scalar(const dw_call* k, const int16_t* const* r, ptrdiff_t j,
                                    ptrdiff_t lane0, ptrdiff_t n, int16_t* out) {
    const uint8_t* pt = k->packed + (lane0 / DW_TILE) * dw16_tile_bytes(k->taps);
    ptrdiff_t t;
    int lane;
    for (lane = 0; lane < n; lane++) {
        const int slot = DW16_SLOT(lane);
        uint32_t acc = (uint32_t)dw16_bias(pt, slot);
        for (t = 0; t < k->taps; t++)
            acc += (uint32_t)((int32_t)r[t][j + lane] * dw16_weight(pt, t, slot));
        out[lane] = dw16_requant_scalar((int32_t)acc, k->q, (size_t)(lane0 + slot));
    }
}

/* One output row segment of `pixels` pixels at out (bytes of int16 values), from the tap
   pointers `base`: dw_row_scalar's walk over the lanes. */
static inline void dw16_row_scalar(const dw_call* k, const int8_t* const* base,
                                   ptrdiff_t pixels, int8_t* out_bytes) {
    const int16_t* r[DW_MAX_TAPS];
    int16_t* out = (int16_t*)out_bytes;
    ptrdiff_t j, lane0 = 0, len = pixels * k->out_c, p;
    dw16_rows(k, base, r);
    if (k->flat) {
        for (j = 0; j < len; j += DW_TILE) {
            dw16_tile_scalar(k, r, j, lane0, len - j < DW_TILE ? len - j : DW_TILE, out + j);
            lane0 = lane0 + DW_TILE == k->lanes ? 0 : lane0 + DW_TILE;
        }
    } else {
        for (p = 0; p < pixels; p++)
            for (j = 0; j < k->out_c; j += DW_TILE)
                dw16_tile_scalar(k, r, p * k->out_c + j, j,
                                 k->out_c - j < DW_TILE ? k->out_c - j : DW_TILE,
                                 out + p * k->out_c + j);
    }
}

#define DW16_ROW_SCALAR(k, base, pixels, out) dw16_row_scalar(k, base, pixels, out)

static void dw16_run_scalar(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    if (!k->rows_ok) {
        dw_run_direct(k, first, last);
        return;
    }
    DW_TASK_LOOP(k, first, last, DW16_ROW_SCALAR);
}

/* ---- SIMD ---------------------------------------------------------------------------- */

#if defined(DW16_AVX2) || defined(DW16_SSE2)
#include "dwconv16_x86.h"
#elif defined(DW16_NEON)
#include "dwconv16_neon.h"
#endif

#if defined(DW16_AVX2) || defined(DW16_SSE2) || defined(DW16_NEON)

/* Each ISA file defines, over the packing above:
     dw16_acc_t, dw16_out_t (16 int16 results in channel order), dw16_bounds_t (the clamp);
     dw16_bounds_load(q); dw16_tile_acc(r, taps, j, tile): bias + every tap of 16 lanes;
     dw16_epilogue(acc, q, lane0, bounds, left): the requantization of the tile's slots
     (constants at lane0 + slot), clamp; dw16_store(out, v, n): the first n <= 16 values;
   and may define dw16_pair (DW16_HAVE_PAIR), two tiles with the same lanes at once (they
   share the weight, bias and constant loads; dwconv16_neon.h does). */

/* The tile at value j of the rows, lanes lane0 .. lane0 + 15 (tile pt), to o (n values). */
DW_INLINE void dw16_one(const int16_t* const* r, ptrdiff_t taps, ptrdiff_t j,
                        const uint8_t* pt, const fx_requant* q, ptrdiff_t lane0,
                        dw16_bounds_t bounds, int left, int16_t* o, ptrdiff_t n) {
    dw16_store(o, dw16_epilogue(dw16_tile_acc(r, taps, j, pt), q, lane0, bounds, left), n);
}

#ifndef DW16_HAVE_PAIR
/* Two tiles with the same lanes (values ja and jb of the rows), one after the other. */
DW_INLINE void dw16_pair(const int16_t* const* r, ptrdiff_t taps, ptrdiff_t ja, ptrdiff_t jb,
                         const uint8_t* pt, const fx_requant* q, ptrdiff_t lane0,
                         dw16_bounds_t bounds, int left, int16_t* oa, int16_t* ob,
                         ptrdiff_t n) {
    dw16_one(r, taps, ja, pt, q, lane0, bounds, left, oa, n);
    dw16_one(r, taps, jb, pt, q, lane0, bounds, left, ob, n);
}
#endif

/* The row of one segment with the vector tiles, walked as dwconv_neon.h's int8 row: tiles
   with the same lanes in pairs (flat mode: tile l and tile L + l of each block of 2L lanes,
   then the rest one at a time from lane 0; pixel mode: the same channels of two adjacent
   pixels). `taps` and `left` (some channel shifts left) are compile-time constants in the
   specialised copies dw16_row_simd chooses. The fields the tiles read are copied to locals
   first: the int16 stores could alias k and *k->q. */
DW_INLINE void dw16_row_simd_taps(const dw_call* k, const int8_t* const* base, ptrdiff_t taps,
                                  ptrdiff_t pixels, int8_t* out_bytes, int left) {
    const int16_t* r[DW_MAX_TAPS];
    int16_t* const out = (int16_t*)out_bytes;
    const ptrdiff_t cout = k->out_c, lanes = k->lanes, len = pixels * cout;
    const uint8_t* const packed = k->packed;
    const size_t tb = dw16_tile_bytes(taps);
    const fx_requant q = *k->q;
    const dw16_bounds_t bounds = dw16_bounds_load(&q);
    ptrdiff_t j, l, p;
    dw16_rows(k, base, r);
#define DW16_PT(lane0) (packed + (size_t)(lane0) / DW_TILE * tb)
    if (k->flat) {
        for (j = 0; j + 2 * lanes <= len; j += 2 * lanes)
            for (l = 0; l < lanes; l += DW_TILE)
                dw16_pair(r, taps, j + l, j + lanes + l, DW16_PT(l), &q, l, bounds, left,
                          out + j + l, out + j + lanes + l, DW_TILE);
        for (l = 0; j < len; j += DW_TILE) {
            dw16_one(r, taps, j, DW16_PT(l), &q, l, bounds, left, out + j,
                     len - j < DW_TILE ? len - j : DW_TILE);
            l = l + DW_TILE == lanes ? 0 : l + DW_TILE;
        }
    } else {
        /* each pixel's whole tiles, then its partial last one (n lanes), stored apart so
           that the whole ones store without a length */
        const ptrdiff_t whole = cout / DW_TILE * DW_TILE, n = cout - whole;
        for (p = 0; p + 2 <= pixels; p += 2) {
            int16_t* const o = out + p * cout;
            for (l = 0; l < whole; l += DW_TILE)
                dw16_pair(r, taps, p * cout + l, (p + 1) * cout + l, DW16_PT(l), &q, l, bounds,
                          left, o + l, o + cout + l, DW_TILE);
            if (n)
                dw16_pair(r, taps, p * cout + l, (p + 1) * cout + l, DW16_PT(l), &q, l, bounds,
                          left, o + l, o + cout + l, n);
        }
        for (; p < pixels; p++) {
            for (l = 0; l < whole; l += DW_TILE)
                dw16_one(r, taps, p * cout + l, DW16_PT(l), &q, l, bounds, left,
                         out + p * cout + l, DW_TILE);
            if (n)
                dw16_one(r, taps, p * cout + l, DW16_PT(l), &q, l, bounds, left,
                         out + p * cout + l, n);
        }
    }
#undef DW16_PT
}

static inline void dw16_row_simd(const dw_call* k, const int8_t* const* base, ptrdiff_t pixels,
                                 int8_t* out) {
    if (k->q->any_left)
        dw16_row_simd_taps(k, base, k->taps, pixels, out, 1);
    else if (k->taps == 9)
        dw16_row_simd_taps(k, base, 9, pixels, out, 0);
    else if (k->taps == 25)
        dw16_row_simd_taps(k, base, 25, pixels, out, 0);
    else
        dw16_row_simd_taps(k, base, k->taps, pixels, out, 0);
}

#define DW16_ROW_SIMD(k, base, pixels, out) dw16_row_simd(k, base, pixels, out)

static void dw16_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    if (!k->rows_ok) {
        dw_run_direct(k, first, last);
        return;
    }
    DW_TASK_LOOP(k, first, last, DW16_ROW_SIMD);
}

#else
static void dw16_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    dw16_run_scalar(k, first, last);
}
#endif

#endif /* FIXNET_DWCONV16_H */

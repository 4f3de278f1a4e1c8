/* Depthwise convolution micro-kernels (int8 NHWC), included from fixnet/_kernels/_conv.pyx.
 *
 * Channels sit in vector lanes, DW_TILE = 16 per tile; one tile of one output pixel
 * accumulates all its taps in registers, then requantizes and clamps in its epilogue
 * (bit-exact with fixedpoint.pxd's requantize_block(_left) and fixnet.oracle).
 *
 * Packed weights (dw_pack, once per weight array), per tile of 16 output channels:
 *   [16 int32 biases | the weights of every tap for the 16 channels]
 * The weights' layout is the build's (DW_PAIRS):
 *   x86-64 (SSE2, AVX2, AVX-512):  int16, taps in pairs, [c0 t, c0 t+1, c1 t, c1 t+1, ...]
 *                                  (pmaddwd / vpdpwssd operand order), 32 values per pair,
 *                                  the second tap of an odd last pair 0;
 *   others (aarch64 NEON):         int8, [tap][16 channels] (smull / smlal operands).
 * Lanes past the last channel hold bias 0 and weight 0. The bias is the caller's (fixnet's
 * quantizer already folds -x_zp * sum w into it; padding reads the zero point).
 *
 * Indirection: per call, ind[(oh * OW + ow) * taps + t] is the element offset of the input
 * pixel a tap reads inside one image, or -1 for a tap in the padding, which reads `zero`, a
 * row of pad_value bytes. Pointers are resolved once per output pixel; the tile loop has no
 * branches. Tiles whose lanes are not 16 consecutive input channels (the tail tile, or
 * depth_multiplier > 1) gather their lanes through gather[tile * 16 + lane] (an input
 * channel, always < C: no read past a row's end).
 *
 * dw_run_simd and dw_run_scalar compute tasks [first, last) (task = one output row of one
 * image) and write only those rows; they use the stack and read-only per-call data only, so
 * disjoint ranges may run on several threads at once. dw_run_scalar is the plain-C twin over
 * the same packing, which the tests hold the SIMD code bit-exact against.
 */
#ifndef FIXNET_DWCONV_H
#define FIXNET_DWCONV_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512BW__) && defined(__AVX512VL__)
#  include <immintrin.h>
#  define DW_AVX512 1
#  define DW_PAIRS 1
#  define DW_ISA_NAME "avx512"
#elif defined(__AVX2__)
#  include <immintrin.h>
#  define DW_AVX2 1
#  define DW_PAIRS 1
#  define DW_ISA_NAME "avx2"
#elif defined(__SSE2__) && (defined(__x86_64__) || defined(_M_X64))
#  include <emmintrin.h>
#  define DW_SSE2 1
#  define DW_PAIRS 1
#  define DW_ISA_NAME "sse2"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#  include <arm_neon.h>
#  define DW_NEON 1
#  define DW_PAIRS 0
#  define DW_ISA_NAME "neon"
#else
#  define DW_PAIRS 0
#  define DW_ISA_NAME "scalar"
#endif

#define DW_TILE 16

#if defined(__GNUC__) || defined(__clang__)
#  define DW_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#  define DW_INLINE static __forceinline
#else
#  define DW_INLINE static inline
#endif
/* Above this many taps per pixel the SIMD driver falls back to the scalar twin (the row
   pointers of one pixel live on the stack). */
#define DW_MAX_SIMD_TAPS 64

/* ---- packing ------------------------------------------------------------------------ */

static inline size_t dw_tile_bytes(ptrdiff_t taps) {
#if DW_PAIRS
    return DW_TILE * 4 + (size_t)((taps + 1) / 2) * 2 * DW_TILE * 2;
#else
    return DW_TILE * 4 + (size_t)taps * DW_TILE;
#endif
}

static inline ptrdiff_t dw_n_tiles(ptrdiff_t channels) {
    return (channels + DW_TILE - 1) / DW_TILE;
}

/* The weight of (tap, lane) inside one packed tile (what the scalar twin reads). */
static inline int32_t dw_weight(const uint8_t* tile, ptrdiff_t tap, int lane) {
#if DW_PAIRS
    const int16_t* w = (const int16_t*)(tile + DW_TILE * 4);
    return w[(tap / 2) * 2 * DW_TILE + lane * 2 + (tap & 1)];
#else
    const int8_t* w = (const int8_t*)(tile + DW_TILE * 4);
    return w[tap * DW_TILE + lane];
#endif
}

/* w: int8 [taps][channels] (KH, KW flattened), bias: int32 [channels];
   dst: dw_n_tiles(channels) * dw_tile_bytes(taps) bytes, 4-byte aligned. */
static inline void dw_pack(const int8_t* w, const int32_t* bias, ptrdiff_t taps,
                           ptrdiff_t channels, uint8_t* dst) {
    ptrdiff_t tile, t;
    int lane;
    size_t tb = dw_tile_bytes(taps);
    memset(dst, 0, tb * (size_t)dw_n_tiles(channels));
    for (tile = 0; tile < dw_n_tiles(channels); tile++) {
        uint8_t* d = dst + tile * tb;
        int32_t* b = (int32_t*)d;
        for (lane = 0; lane < DW_TILE; lane++) {
            ptrdiff_t c = tile * DW_TILE + lane;
            if (c >= channels)
                break;
            b[lane] = bias[c];
            for (t = 0; t < taps; t++) {
#if DW_PAIRS
                ((int16_t*)(d + DW_TILE * 4))[(t / 2) * 2 * DW_TILE + lane * 2 + (t & 1)] =
                    w[t * channels + c];
#else
                ((int8_t*)(d + DW_TILE * 4))[t * DW_TILE + lane] = w[t * channels + c];
#endif
            }
        }
    }
}

/* ---- per-call data ---------------------------------------------------------------- */

typedef struct {
    /* Per tile, per lane: what the epilogue needs (from m0 and shift). */
    int32_t m0[DW_TILE];
    int32_t left[DW_TILE];        /* max(shift, 0) */
    int32_t right[DW_TILE];       /* r = max(-shift, 0) */
    int32_t neg_right[DW_TILE];   /* -r */
    int32_t mask[DW_TILE];        /* 2^r - 1 */
    int32_t half[DW_TILE];        /* mask >> 1 */
    int32_t hi_lim[DW_TILE];      /* INT32_MAX >> left: above it x << left saturates */
    int32_t lo_lim[DW_TILE];      /* INT32_MIN >> left */
    /* fixedpoint.pxd requant_constants (the branch-free int64 form; SSE2's epilogue) */
    int64_t nudge[DW_TILE], neg_adjust[DW_TILE], total_shift[DW_TILE];
} dw_requant;

typedef struct {
    ptrdiff_t batch, in_h, in_w, in_c, out_h, out_w, out_c, taps;
    ptrdiff_t n_tiles, n_direct;  /* tiles [0, n_direct) load 16 consecutive input channels */
    const int8_t* x;              /* [batch, in_h, in_w, in_c] */
    int8_t* out;                  /* [batch, out_h, out_w, out_c] */
    const uint8_t* packed;        /* dw_pack's tiles */
    const ptrdiff_t* ind;         /* [out_h * out_w * taps], -1 = padding */
    const int8_t* zero;           /* >= in_c bytes of pad_value */
    const int32_t* gather;        /* [n_tiles * 16] input channel per lane */
    const dw_requant* rq;         /* [n_tiles] */
    int32_t out_zp, act_min, act_max;
    int any_left;                 /* some shift > 0 */
    int pairs_ok;                 /* no weight is -128 (NEON sums two products in int16) */
} dw_call;

static inline void dw_requant_fill(dw_requant* r, int lane, int32_t m0, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0, right = shift < 0 ? -shift : 0;
    r->m0[lane] = m0;
    r->left[lane] = left;
    r->right[lane] = right;
    r->neg_right[lane] = -right;
    r->mask[lane] = (int32_t)(((int64_t)1 << right) - 1);
    r->half[lane] = r->mask[lane] >> 1;
    r->hi_lim[lane] = INT32_MAX >> left;
    r->lo_lim[lane] = INT32_MIN >> left;
    r->total_shift[lane] = 31 + right;
    r->nudge[lane] = (((int64_t)1 << right) >> 1) << 31;
    r->neg_adjust[lane] = right > 0 ? ((int64_t)1 << 31) : 0;
}

/* ---- the scalar rule (fixedpoint.pxd / oracle), shared by the twin and SSE2 ------------- */

static inline int8_t dw_requant_scalar(uint32_t acc_u, const dw_requant* r, int lane,
                                       int32_t out_zp, int32_t act_min, int32_t act_max) {
    int64_t x = (int64_t)(int32_t)acc_u, ab, nudge, v;
    int32_t y, mask, rem, thr;
    int left = r->left[lane], right = r->right[lane];
    x = x * ((int64_t)1 << left);
    if (x > INT32_MAX) x = INT32_MAX;
    if (x < INT32_MIN) x = INT32_MIN;
    /* saturating_rounding_doubling_high_mul (m0 >= 0: never the saturating case) */
    ab = x * (int64_t)r->m0[lane];
    nudge = ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
    y = (int32_t)((ab + nudge) / ((int64_t)1 << 31));
    /* rounding_divide_by_pot */
    mask = (int32_t)(((int64_t)1 << right) - 1);
    rem = y & mask;
    thr = (mask >> 1) + (y < 0 ? 1 : 0);
    y = (y >> right) + (rem > thr ? 1 : 0);
    v = (int64_t)out_zp + y;
    if (v < act_min) v = act_min;
    if (v > act_max) v = act_max;
    return (int8_t)v;
}

static inline const int8_t* dw_row(const dw_call* k, const int8_t* image, ptrdiff_t off) {
    return off >= 0 ? image + off : k->zero;
}

/* The scalar twin: tasks [first, last), the same packing, indirection and gather table. */
static void dw_run_scalar(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    ptrdiff_t task, ow, tile, t;
    int lane;
    size_t tb = dw_tile_bytes(k->taps);
    for (task = first; task < last; task++) {
        ptrdiff_t n = task / k->out_h, oh = task % k->out_h;
        const int8_t* image = k->x + n * k->in_h * k->in_w * k->in_c;
        int8_t* out_row = k->out + (n * k->out_h + oh) * k->out_w * k->out_c;
        for (ow = 0; ow < k->out_w; ow++) {
            const ptrdiff_t* offs = k->ind + (oh * k->out_w + ow) * k->taps;
            int8_t* out_px = out_row + ow * k->out_c;
            for (tile = 0; tile < k->n_tiles; tile++) {
                const uint8_t* pt = k->packed + tile * tb;
                for (lane = 0; lane < DW_TILE; lane++) {
                    ptrdiff_t c = tile * DW_TILE + lane;
                    uint32_t acc;
                    if (c >= k->out_c)
                        break;
                    acc = (uint32_t)((const int32_t*)pt)[lane];
                    for (t = 0; t < k->taps; t++) {
                        const int8_t* row = dw_row(k, image, offs[t]);
                        acc += (uint32_t)((int32_t)row[k->gather[tile * DW_TILE + lane]] *
                                          dw_weight(pt, t, lane));
                    }
                    out_px[c] = dw_requant_scalar(acc, &k->rq[tile], lane, k->out_zp,
                                                  k->act_min, k->act_max);
                }
            }
        }
    }
}

/* ---- SIMD ---------------------------------------------------------------------------- */

/* Load the 16 lanes of a tile from one input row: 16 consecutive bytes (direct tiles) or
   through the gather table (into a stack copy). */
#define DW_GATHER16(buf, row, g) do { int _j; \
        for (_j = 0; _j < DW_TILE; _j++) (buf)[_j] = (row)[(g)[_j]]; } while (0)

#if defined(DW_AVX512) || defined(DW_AVX2) || defined(DW_SSE2) || defined(DW_NEON)
#define DW_HAVE_SIMD 1
#else
#define DW_HAVE_SIMD 0
#endif

#if defined(DW_AVX512)

DW_INLINE __m128i dw_load(const int8_t* row, ptrdiff_t c0, const int32_t* g, int gather) {
    if (gather) {
        int8_t buf[DW_TILE];
        DW_GATHER16(buf, row, g);
        return _mm_loadu_si128((const __m128i*)buf);
    }
    return _mm_loadu_si128((const __m128i*)(row + c0));
}

/* All taps of one tile: returns the 16 int32 accumulators (channel order). */
DW_INLINE __m512i dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                  const uint8_t* pt, const int32_t* g, int gather) {
    __m512i acc = _mm512_loadu_si512((const void*)pt);
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    const __m512i pair_order = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    ptrdiff_t t;
    for (t = 0; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
        /* [x0 c0..15 | x1 c0..15] widened, then one vpermw to (c, tap) pair order */
        __m128i a = dw_load(rows[t], c0, g, gather), b = dw_load(rows[t + 1], c0, g, gather);
        __m512i x = _mm512_permutexvar_epi16(pair_order, _mm512_cvtepi8_epi16(
            _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1)));
        __m512i wv = _mm512_loadu_si512((const void*)w);
#if defined(__AVX512VNNI__)
        acc = _mm512_dpwssd_epi32(acc, x, wv);
#else
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, wv));
#endif
    }
    if (t < taps) {
        /* the pair's second weight is 0: any second value will do, use a itself */
        __m128i a = dw_load(rows[t], c0, g, gather);
        __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, a)),
                                             _mm_unpackhi_epi8(a, a), 1);
        __m512i x = _mm512_cvtepi8_epi16(ab);
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, _mm512_loadu_si512((const void*)w)));
    }
    return acc;
}

DW_INLINE __m128i dw_epilogue(__m512i acc, const dw_requant* r, const dw_call* k) {
    __m512i x = acc;
    __m512i m0 = _mm512_loadu_si512((const void*)r->m0);
    __m512i round = _mm512_set1_epi64((int64_t)1 << 30);
    __m512i pe, po, y, rem, thr;
    if (k->any_left) {
        __m512i sh = _mm512_sllv_epi32(x, _mm512_loadu_si512((const void*)r->left));
        sh = _mm512_mask_mov_epi32(sh, _mm512_cmpgt_epi32_mask(
            x, _mm512_loadu_si512((const void*)r->hi_lim)), _mm512_set1_epi32(INT32_MAX));
        sh = _mm512_mask_mov_epi32(sh, _mm512_cmplt_epi32_mask(
            x, _mm512_loadu_si512((const void*)r->lo_lim)), _mm512_set1_epi32(INT32_MIN));
        x = sh;
    }
    pe = _mm512_add_epi64(_mm512_mul_epi32(x, m0), round);
    po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m0, 32)),
                          round);
    y = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(pe, 31),
                                _mm512_slli_epi64(po, 1));
    rem = _mm512_and_si512(y, _mm512_loadu_si512((const void*)r->mask));
    thr = _mm512_sub_epi32(_mm512_loadu_si512((const void*)r->half), _mm512_srai_epi32(y, 31));
    y = _mm512_srav_epi32(y, _mm512_loadu_si512((const void*)r->right));
    y = _mm512_mask_add_epi32(y, _mm512_cmpgt_epi32_mask(rem, thr), y, _mm512_set1_epi32(1));
    y = _mm512_max_epi32(y, _mm512_set1_epi32(k->act_min - k->out_zp));
    y = _mm512_min_epi32(y, _mm512_set1_epi32(k->act_max - k->out_zp));
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(y, _mm512_set1_epi32(k->out_zp)));
}

#elif defined(DW_AVX2) || defined(DW_SSE2)

DW_INLINE __m128i dw_load(const int8_t* row, ptrdiff_t c0, const int32_t* g, int gather) {
    if (gather) {
        int8_t buf[DW_TILE];
        DW_GATHER16(buf, row, g);
        return _mm_loadu_si128((const __m128i*)buf);
    }
    return _mm_loadu_si128((const __m128i*)(row + c0));
}

#if defined(DW_AVX2)
typedef struct { __m256i lo, hi; } dw_acc_t;   /* channels 0-7, 8-15 */

DW_INLINE dw_acc_t dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                   const uint8_t* pt, const int32_t* g, int gather) {
    dw_acc_t acc;
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.lo = _mm256_loadu_si256((const __m256i*)pt);
    acc.hi = _mm256_loadu_si256((const __m256i*)(pt + 32));
    for (t = 0; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
        __m128i a = dw_load(rows[t], c0, g, gather), b = dw_load(rows[t + 1], c0, g, gather);
        __m256i xl = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
        __m256i xh = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
        acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(
            xl, _mm256_loadu_si256((const __m256i*)w)));
        acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(
            xh, _mm256_loadu_si256((const __m256i*)(w + DW_TILE))));
    }
    if (t < taps) {
        __m128i a = dw_load(rows[t], c0, g, gather);
        /* the pair's second weight is 0: any second value will do, use a itself */
        __m256i xl = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, a));
        __m256i xh = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, a));
        acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(
            xl, _mm256_loadu_si256((const __m256i*)w)));
        acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(
            xh, _mm256_loadu_si256((const __m256i*)(w + DW_TILE))));
    }
    return acc;
}

DW_INLINE __m256i dw_requant8(__m256i x, const dw_requant* r, int o, int any_left) {
    __m256i m0 = _mm256_loadu_si256((const __m256i*)(r->m0 + o));
    __m256i round = _mm256_set1_epi64x((int64_t)1 << 30);
    __m256i pe, po, y, rem, thr;
    if (any_left) {
        __m256i sh = _mm256_sllv_epi32(x, _mm256_loadu_si256((const __m256i*)(r->left + o)));
        sh = _mm256_blendv_epi8(sh, _mm256_set1_epi32(INT32_MAX), _mm256_cmpgt_epi32(
            x, _mm256_loadu_si256((const __m256i*)(r->hi_lim + o))));
        sh = _mm256_blendv_epi8(sh, _mm256_set1_epi32(INT32_MIN), _mm256_cmpgt_epi32(
            _mm256_loadu_si256((const __m256i*)(r->lo_lim + o)), x));
        x = sh;
    }
    pe = _mm256_add_epi64(_mm256_mul_epi32(x, m0), round);
    po = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m0, 32)),
                          round);
    y = _mm256_blend_epi32(_mm256_srli_epi64(pe, 31), _mm256_slli_epi64(po, 1), 0xAA);
    rem = _mm256_and_si256(y, _mm256_loadu_si256((const __m256i*)(r->mask + o)));
    thr = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*)(r->half + o)),
                           _mm256_srai_epi32(y, 31));
    y = _mm256_srav_epi32(y, _mm256_loadu_si256((const __m256i*)(r->right + o)));
    return _mm256_sub_epi32(y, _mm256_cmpgt_epi32(rem, thr));
}

DW_INLINE __m128i dw_epilogue(dw_acc_t acc, const dw_requant* r, const dw_call* k) {
    __m256i lo = dw_requant8(acc.lo, r, 0, k->any_left);
    __m256i hi = dw_requant8(acc.hi, r, 8, k->any_left);
    /* int32 -> int16 (saturating), + zero point (saturating), -> int8 (saturating), clamp:
       exact, since any saturated value is outside [act_min, act_max] anyway */
    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
    __m128i b;
    p = _mm256_adds_epi16(p, _mm256_set1_epi16((int16_t)k->out_zp));
    b = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    b = _mm_max_epi8(b, _mm_set1_epi8((int8_t)k->act_min));
    return _mm_min_epi8(b, _mm_set1_epi8((int8_t)k->act_max));
}

#else  /* SSE2 */
typedef struct { __m128i a0, a1, a2, a3; } dw_acc_t;   /* channels 0-3, 4-7, 8-11, 12-15 */

DW_INLINE __m128i dw_sext_lo(__m128i v) {   /* int8 lanes 0-7 -> int16 */
    return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);
}
DW_INLINE __m128i dw_sext_hi(__m128i v) {
    return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8);
}

DW_INLINE dw_acc_t dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                   const uint8_t* pt, const int32_t* g, int gather) {
    dw_acc_t acc;
    const __m128i* w = (const __m128i*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.a0 = _mm_loadu_si128((const __m128i*)pt);
    acc.a1 = _mm_loadu_si128((const __m128i*)(pt + 16));
    acc.a2 = _mm_loadu_si128((const __m128i*)(pt + 32));
    acc.a3 = _mm_loadu_si128((const __m128i*)(pt + 48));
    for (t = 0; t < taps; t += 2, w += 4) {
        __m128i a = dw_load(rows[t], c0, g, gather);
        __m128i b = t + 1 < taps ? dw_load(rows[t + 1], c0, g, gather) : a;
        __m128i l = _mm_unpacklo_epi8(a, b), h = _mm_unpackhi_epi8(a, b);
        acc.a0 = _mm_add_epi32(acc.a0, _mm_madd_epi16(dw_sext_lo(l), _mm_loadu_si128(w)));
        acc.a1 = _mm_add_epi32(acc.a1, _mm_madd_epi16(dw_sext_hi(l), _mm_loadu_si128(w + 1)));
        acc.a2 = _mm_add_epi32(acc.a2, _mm_madd_epi16(dw_sext_lo(h), _mm_loadu_si128(w + 2)));
        acc.a3 = _mm_add_epi32(acc.a3, _mm_madd_epi16(dw_sext_hi(h), _mm_loadu_si128(w + 3)));
    }
    return acc;
}

/* SSE2 has no signed 32x32->64 multiply nor per-lane shifts: the epilogue is scalar, in
   fixedpoint.pxd's branch-free int64 form (requantize_precomputed), clamped in int16 lanes. */
DW_INLINE __m128i dw_epilogue(dw_acc_t acc, const dw_requant* r, const dw_call* k) {
    int32_t a[DW_TILE];
    int lane;
    __m128i lo, hi;
    _mm_storeu_si128((__m128i*)a, acc.a0);
    _mm_storeu_si128((__m128i*)(a + 4), acc.a1);
    _mm_storeu_si128((__m128i*)(a + 8), acc.a2);
    _mm_storeu_si128((__m128i*)(a + 12), acc.a3);
    for (lane = 0; lane < DW_TILE; lane++) {
        int64_t x = a[lane], u;
        if (k->any_left) {
            x = (int64_t)((uint64_t)x << r->left[lane]);
            x = x > INT32_MAX ? INT32_MAX : x;
            x = x < INT32_MIN ? INT32_MIN : x;
        }
        u = x * (int64_t)r->m0[lane] + ((int64_t)1 << 30);
        a[lane] = (int32_t)((u + r->nudge[lane] - ((u >> 63) & r->neg_adjust[lane]))
                            >> r->total_shift[lane]);
    }
    lo = _mm_packs_epi32(_mm_loadu_si128((const __m128i*)a),
                         _mm_loadu_si128((const __m128i*)(a + 4)));
    hi = _mm_packs_epi32(_mm_loadu_si128((const __m128i*)(a + 8)),
                         _mm_loadu_si128((const __m128i*)(a + 12)));
    lo = _mm_adds_epi16(lo, _mm_set1_epi16((int16_t)k->out_zp));
    hi = _mm_adds_epi16(hi, _mm_set1_epi16((int16_t)k->out_zp));
    lo = _mm_min_epi16(_mm_max_epi16(lo, _mm_set1_epi16((int16_t)k->act_min)),
                       _mm_set1_epi16((int16_t)k->act_max));
    hi = _mm_min_epi16(_mm_max_epi16(hi, _mm_set1_epi16((int16_t)k->act_min)),
                       _mm_set1_epi16((int16_t)k->act_max));
    return _mm_packs_epi16(lo, hi);
}
#endif

#elif defined(DW_NEON)

DW_INLINE int8x16_t dw_load(const int8_t* row, ptrdiff_t c0, const int32_t* g, int gather) {
    if (gather) {
        int8_t buf[DW_TILE];
        DW_GATHER16(buf, row, g);
        return vld1q_s8(buf);
    }
    return vld1q_s8(row + c0);
}

typedef struct { int32x4_t a0, a1, a2, a3; } dw_acc_t;

DW_INLINE dw_acc_t dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                   const uint8_t* pt, const int32_t* g, int gather,
                                   int pairs_ok) {
    dw_acc_t acc;
    const int8_t* w = (const int8_t*)(pt + DW_TILE * 4);
    const int32_t* b = (const int32_t*)pt;
    ptrdiff_t t = 0;
    acc.a0 = vld1q_s32(b);
    acc.a1 = vld1q_s32(b + 4);
    acc.a2 = vld1q_s32(b + 8);
    acc.a3 = vld1q_s32(b + 12);
    if (pairs_ok) {
        /* |w| <= 127: two products sum to at most 2 * 128 * 127 < 2^15 in int16 */
        for (; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
            int8x16_t x0 = dw_load(rows[t], c0, g, gather);
            int8x16_t x1 = dw_load(rows[t + 1], c0, g, gather);
            int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + DW_TILE);
            int16x8_t lo = vmull_s8(vget_low_s8(x0), vget_low_s8(w0));
            int16x8_t hi = vmull_high_s8(x0, w0);
            lo = vmlal_s8(lo, vget_low_s8(x1), vget_low_s8(w1));
            hi = vmlal_high_s8(hi, x1, w1);
            acc.a0 = vaddw_s16(acc.a0, vget_low_s16(lo));
            acc.a1 = vaddw_high_s16(acc.a1, lo);
            acc.a2 = vaddw_s16(acc.a2, vget_low_s16(hi));
            acc.a3 = vaddw_high_s16(acc.a3, hi);
        }
    }
    for (; t < taps; t++, w += DW_TILE) {
        int8x16_t x0 = dw_load(rows[t], c0, g, gather), w0 = vld1q_s8(w);
        int16x8_t lo = vmull_s8(vget_low_s8(x0), vget_low_s8(w0));
        int16x8_t hi = vmull_high_s8(x0, w0);
        acc.a0 = vaddw_s16(acc.a0, vget_low_s16(lo));
        acc.a1 = vaddw_high_s16(acc.a1, lo);
        acc.a2 = vaddw_s16(acc.a2, vget_low_s16(hi));
        acc.a3 = vaddw_high_s16(acc.a3, hi);
    }
    return acc;
}

DW_INLINE int32x4_t dw_requant4(int32x4_t x, const dw_requant* r, int o, int any_left) {
    int32x4_t neg_r = vld1q_s32(r->neg_right + o), y;
    if (any_left)
        x = vqshlq_s32(x, vld1q_s32(r->left + o));         /* saturating, like the rule */
    y = vqrdmulhq_s32(x, vld1q_s32(r->m0 + o));              /* = SRDHM, m0 >= 0 */
    /* rounding_divide_by_pot: ties away from zero = vrshl's ties up after -1 on negatives */
    y = vqaddq_s32(y, vshrq_n_s32(vandq_s32(y, neg_r), 31));
    return vrshlq_s32(y, neg_r);
}

DW_INLINE int8x16_t dw_epilogue(dw_acc_t acc, const dw_requant* r, const dw_call* k) {
    int16x8_t zp = vdupq_n_s16((int16_t)k->out_zp);
    int16x8_t lo = vqaddq_s16(vcombine_s16(vqmovn_s32(dw_requant4(acc.a0, r, 0, k->any_left)),
                                           vqmovn_s32(dw_requant4(acc.a1, r, 4, k->any_left))),
                              zp);
    int16x8_t hi = vqaddq_s16(vcombine_s16(vqmovn_s32(dw_requant4(acc.a2, r, 8, k->any_left)),
                                           vqmovn_s32(dw_requant4(acc.a3, r, 12, k->any_left))),
                              zp);
    int8x16_t b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
    b = vmaxq_s8(b, vdupq_n_s8((int8_t)k->act_min));
    return vminq_s8(b, vdupq_n_s8((int8_t)k->act_max));
}
#endif

#if DW_HAVE_SIMD

#if defined(DW_NEON)
#  define DW_TILE_ACC(rows, taps, c0, pt, g, gather) \
       dw_tile_acc(rows, taps, c0, pt, g, gather, k->pairs_ok)
#  define DW_STORE(p, v) vst1q_s8((p), (v))
typedef int8x16_t dw_out_t;
#else
#  define DW_TILE_ACC(rows, taps, c0, pt, g, gather) dw_tile_acc(rows, taps, c0, pt, g, gather)
#  define DW_STORE(p, v) _mm_storeu_si128((__m128i*)(p), (v))
typedef __m128i dw_out_t;
#endif

/* One output pixel, every tile; `taps` a compile-time constant where the callers below pass
   one (9, 25), so the tap loop unrolls. */
DW_INLINE void dw_pixel(
        const dw_call* k, const int8_t* const* rows, ptrdiff_t taps, int8_t* out_px) {
    size_t tb = dw_tile_bytes(taps);
    ptrdiff_t tile;
    for (tile = 0; tile < k->n_direct; tile++) {
        const uint8_t* pt = k->packed + tile * tb;
        dw_out_t v = dw_epilogue(DW_TILE_ACC(rows, taps, tile * DW_TILE, pt, NULL, 0),
                                 &k->rq[tile], k);
        DW_STORE(out_px + tile * DW_TILE, v);
    }
    for (; tile < k->n_tiles; tile++) {
        const uint8_t* pt = k->packed + tile * tb;
        ptrdiff_t c0 = tile * DW_TILE, n = k->out_c - c0;
        int8_t buf[DW_TILE];
        dw_out_t v = dw_epilogue(DW_TILE_ACC(rows, taps, c0, pt, k->gather + tile * DW_TILE, 1),
                                 &k->rq[tile], k);
        DW_STORE(buf, v);
        memcpy(out_px + c0, buf, (size_t)(n < DW_TILE ? n : DW_TILE));
    }
}

#define DW_ROW_LOOP(TAPS) \
    for (ow = 0; ow < k->out_w; ow++) { \
        const ptrdiff_t* offs = k->ind + (oh * k->out_w + ow) * (TAPS); \
        const int8_t* rows[(TAPS) > 0 ? (TAPS) : DW_MAX_SIMD_TAPS]; \
        ptrdiff_t t; \
        for (t = 0; t < (TAPS); t++) \
            rows[t] = dw_row(k, image, offs[t]); \
        dw_pixel(k, rows, (TAPS), out_row + ow * k->out_c); \
    }

static void dw_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    ptrdiff_t task, ow;
    ptrdiff_t taps = k->taps;
    if (taps > DW_MAX_SIMD_TAPS) {
        dw_run_scalar(k, first, last);
        return;
    }
    for (task = first; task < last; task++) {
        ptrdiff_t n = task / k->out_h, oh = task % k->out_h;
        const int8_t* image = k->x + n * k->in_h * k->in_w * k->in_c;
        int8_t* out_row = k->out + (n * k->out_h + oh) * k->out_w * k->out_c;
        if (taps == 9) {
            DW_ROW_LOOP(9)
        } else if (taps == 25) {
            DW_ROW_LOOP(25)
        } else {
            for (ow = 0; ow < k->out_w; ow++) {
                const ptrdiff_t* offs = k->ind + (oh * k->out_w + ow) * taps;
                const int8_t* rows[DW_MAX_SIMD_TAPS];
                ptrdiff_t t;
                for (t = 0; t < taps; t++)
                    rows[t] = dw_row(k, image, offs[t]);
                dw_pixel(k, rows, taps, out_row + ow * k->out_c);
            }
        }
    }
}

#else
static void dw_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    dw_run_scalar(k, first, last);
}
#endif

static inline const char* dw_isa_name(void) { return DW_ISA_NAME; }

#endif

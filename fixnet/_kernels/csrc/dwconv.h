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

#include "requant.h"

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
    ptrdiff_t batch, in_h, in_w, in_c, out_h, out_w, out_c, taps;
    ptrdiff_t n_tiles, n_direct;  /* tiles [0, n_direct) load 16 consecutive input channels */
    const int8_t* x;              /* [batch, in_h, in_w, in_c] */
    int8_t* out;                  /* [batch, out_h, out_w, out_c] */
    const uint8_t* packed;        /* dw_pack's tiles */
    const ptrdiff_t* ind;         /* [out_h * out_w * taps], -1 = padding */
    const int8_t* zero;           /* >= in_c bytes of pad_value */
    const int32_t* gather;        /* [n_tiles * 16] input channel per lane */
    const fx_requant* q;          /* the requantization constants of every channel */
    int pairs_ok;                 /* no weight is -128 (NEON sums two products in int16) */
} dw_call;

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
                    out_px[c] = fx_requant_scalar((int32_t)acc, k->q, (size_t)c);
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

#if defined(DW_AVX512) || defined(DW_AVX2) || defined(DW_SSE2)
#include "dwconv_x86.h"
#elif defined(DW_NEON)
#include "dwconv_neon.h"
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
                                 k->q, tile * DW_TILE);
        DW_STORE(out_px + tile * DW_TILE, v);
    }
    for (; tile < k->n_tiles; tile++) {
        const uint8_t* pt = k->packed + tile * tb;
        ptrdiff_t c0 = tile * DW_TILE, n = k->out_c - c0;
        int8_t buf[DW_TILE];
        dw_out_t v = dw_epilogue(DW_TILE_ACC(rows, taps, c0, pt, k->gather + tile * DW_TILE, 1),
                                 k->q, c0);
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

/* Depthwise convolution (NHWC, int8 or int16 activations, int8 weights), included from
 * fixnet/_kernels/_conv.pyx: the common driver, the int8 packing and the int8 scalar twin
 * here; the int8 vector tile per ISA in dwconv_x86.h (SSE2, AVX2, AVX-512: dw_tile_acc, every
 * tap of 16 lanes in registers; dw_epilogue, requant.h's rule on them) and dwconv_neon.h (its
 * own row: two tiles per step); the int16 path (its own packing, scalar twin and rows over
 * this driver) in dwconv16.h.
 *
 * Activation type. The driver moves activations of k->elem bytes (1: int8, 2: int16): x,
 * out, the phase rows and the zero row hold values of that type, and every pointer the
 * driver computes is a byte pointer advanced by element counts times elem. The row functions
 * (int8 here, int16 in dwconv16.h) index their rows in elements.
 *
 * Lanes. A vector tile has DW_TILE = 16 int32 accumulators ("lanes"). A task's output row
 * segment is a run of pixels times Cout = C * depth_multiplier channels, contiguous in NHWC;
 * in "flat" mode the lanes walk it in steps of 16 (lane j of the run computes pixel j / Cout,
 * channel j % Cout), so a layer with 8 channels fills the 16 lanes with two pixels and one
 * with 2 channels with eight: every lane does useful work whatever Cout is. The per-lane
 * constants (weights, bias, requantization) repeat with period L = lcm(Cout, 16) lanes and
 * are packed for L "expanded" lanes, lane l for channel l % Cout. Where L would be large
 * (Cout above 16 and not a multiple of it, see DW_FLAT_MAX_LANES) the call runs in "pixel"
 * mode: each pixel's channels in ceil(Cout / 16) tiles, the last one partly stored, L = Cout
 * rounded up to 16 (lane l for channel l).
 *
 * Phase rows. So that a tile's inputs for one tap are 16 consecutive values whatever the
 * stride, padding and depth multiplier, a task copies the input rows it reads into "phase
 * rows" on its stack: the part of the input row its segment reads, padded columns filled with
 * pad_value, split by (padded column mod stride_w), each pixel's C channels repeated M times
 * (depth_multiplier) into Cout values. Output pixel ow and tap column kw read phase
 * (kw * dilation_w) % stride_w at pixel ow + (kw * dilation_w) / stride_w, so lane j reads
 * value j + that offset * Cout of one phase row. Rows above and below the image read `zero`,
 * a row of pad_value. A task (a band of output rows of one image, over one segment of output
 * columns) keeps its last (KH - 1) * dilation_h + 1 input rows in a ring, so it copies each
 * input row it reads once.
 *
 * Packed weights (dw_pack, once per weight array, for the L expanded lanes), per tile of 16
 * lanes: [16 int32 biases | the weights of every tap for the 16 lanes], in the build's layout
 * (DW_PAIRS):
 *   x86-64 (SSE2, AVX2, AVX-512):  int16, taps in pairs, [l0 t, l0 t+1, l1 t, l1 t+1, ...]
 *                                  (pmaddwd / vpdpwssd operand order), 32 values per pair,
 *                                  the second tap of an odd last pair 0;
 *   others (aarch64 NEON):         int8, [tap][16 lanes] (smull / smlal operands).
 * Lanes past the last channel (pixel mode) hold bias 0 and weight 0. The bias is the
 * caller's (the quantizer folds -x_zp * sum w into it; padding reads the zero point).
 *
 * dw_run_simd, dw_run_scalar and dw_run_direct compute tasks [first, last) and write only
 * their outputs; they use the stack and read-only per-call data only, so disjoint ranges may
 * run on several threads at once. dw_run_scalar is the plain-C twin of the vector tile over
 * the same packing and phase rows, which the tests hold the SIMD code bit-exact against;
 * dw_run_direct reads the input with a bounds check per tap (no scratch): the layers the row
 * drivers do not take (more than DW_MAX_TAPS taps, or phase rows beyond DW_SCRATCH even for
 * one output column) run there.
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
/* The row drivers keep one pointer per tap on the stack (global average pooling runs here
   too, one tap per input pixel), and each task's ring of phase rows in at most DW_SCRATCH
   bytes of it (DW_MAX_RING rows): a layer beyond any of these runs dw_run_direct instead. */
#define DW_MAX_TAPS 512
#define DW_SCRATCH (24 * 1024)
#define DW_MAX_RING 512

/* A task (band of output rows) does at least about this many multiply-adds. */
#define DW_BAND_WORK 16384

/* Flat mode only while L = lcm(Cout, 16) stays this small (else pixel mode). */
#define DW_FLAT_MAX_LANES 1024

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

/* w: int8 [taps][channels] (KH, KW flattened), bias: int32 [channels] (for the expanded
   lanes: channels = L); dst: dw_n_tiles(channels) * dw_tile_bytes(taps) bytes, 4-byte
   aligned. */
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
    ptrdiff_t batch, in_h, in_w, in_c, out_h, out_w, out_c, mult;
    ptrdiff_t kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, taps;
    ptrdiff_t lanes;              /* L, the expanded lanes (a multiple of 16) */
    int flat;                     /* flat mode, else pixel mode (see above) */
    int rows_ok;                  /* the row drivers take this call (else dw_run_direct) */
    ptrdiff_t band, n_bands;      /* output rows per task; bands per image */
    ptrdiff_t seg_w, n_segs;      /* output columns per task; segments per row */
    ptrdiff_t ring;               /* input rows a task keeps: (KH - 1) * dil_h + 1 */
    ptrdiff_t phase_len;          /* values in one phase row (DW_TILE of them slack) */
    ptrdiff_t elem;               /* bytes of one activation: 1 (int8) or 2 (int16) */
    const int8_t* x;              /* [batch, in_h, in_w, in_c] values of elem bytes */
    int8_t* out;                  /* [batch, out_h, out_w, out_c] values of elem bytes */
    const uint8_t* packed;        /* dw_pack's (int16: dw16_pack's) tiles of the L lanes */
    const int8_t* zero;           /* >= phase_len values of pad_value (elem bytes each) */
    int32_t pad_value;
    const fx_requant* q;          /* the requantization constants of the L lanes */
    int pairs_ok;                 /* no weight is -128 (NEON sums two products in int16) */
} dw_call;

static inline ptrdiff_t dw_n_tasks(const dw_call* k) {
    return k->batch * k->n_bands * k->n_segs;
}

/* Stack bytes of one task: `ring` slots of stride_w phase rows each. */
static inline size_t dw_scratch_bytes(const dw_call* k) {
    return (size_t)(k->ring * k->stride_w * k->phase_len * k->elem);
}

/* Tasks, phase rows and mode of k, whose geometry and elem are set: the widest column
   segment whose ring of phase rows fits DW_SCRATCH (rows_ok = 0 if not even one column does;
   int16 rows take twice the bytes, so their segments are narrower), about 8 bands of rows per
   image. */
static inline void dw_plan(dw_call* k) {
    ptrdiff_t q_max = ((k->kernel_w - 1) * k->dil_w) / k->stride_w;
    ptrdiff_t seg = k->out_w > 0 ? k->out_w : 1;
    k->ring = (k->kernel_h - 1) * k->dil_h + 1;
    k->rows_ok = k->taps <= DW_MAX_TAPS && k->ring <= DW_MAX_RING;
    for (;;) {
        k->seg_w = seg;
        k->phase_len = (seg + q_max) * k->out_c + DW_TILE;
        if (dw_scratch_bytes(k) <= DW_SCRATCH)
            break;
        if (seg == 1) {
            k->rows_ok = 0;
            break;
        }
        seg = (seg + 1) / 2;
    }
    if (!k->rows_ok) {              /* dw_run_direct: one task per output row */
        k->seg_w = k->out_w > 0 ? k->out_w : 1;
        k->phase_len = 0;
    }
    k->n_segs = k->out_w > 0 ? (k->out_w + k->seg_w - 1) / k->seg_w : 1;
    /* bands: about 8 per image (tasks for threads), but at least DW_BAND_WORK multiply-adds
       each, so that small layers pay the per-task start (a ring of rows) once or twice */
    k->band = 1;
    if (k->rows_ok && k->out_h > 1) {
        ptrdiff_t row_work = k->seg_w * k->out_c * k->taps;
        ptrdiff_t by_work = row_work > 0 ? (DW_BAND_WORK + row_work - 1) / row_work : 1;
        k->band = (k->out_h + 7) / 8 > by_work ? (k->out_h + 7) / 8 : by_work;
        k->band = k->band < k->out_h ? k->band : k->out_h;
    }
    k->n_bands = (k->out_h + k->band - 1) / k->band;
}

/* n bytes from src to d in 16-byte moves (no library call per pixel), the tail in 8, 4, 2, 1. */
static inline void dw_copy(int8_t* d, const int8_t* src, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        memcpy(d + i, src + i, 16);
    if (i + 8 <= n) {
        memcpy(d + i, src + i, 8);
        i += 8;
    }
    if (i + 4 <= n) {
        memcpy(d + i, src + i, 4);
        i += 4;
    }
    for (; i < n; i++)
        d[i] = src[i];
}

/* n input bytes to n * m: each repeated m times (the depth multiplier: pixel channel c
   feeds output channels c * m .. c * m + m - 1, in order). Plain loops gcc vectorises. */
static inline void dw_expand(int8_t* d, const int8_t* src, ptrdiff_t n, ptrdiff_t m) {
    ptrdiff_t i, r;
    if (m == 1) {
        memcpy(d, src, (size_t)n);
    } else if (m == 2) {
        for (i = 0; i < n; i++) {
            d[2 * i] = src[i];
            d[2 * i + 1] = src[i];
        }
    } else if (m == 8) {        /* a conv over one input channel: m = Cout, often 8 or 16 */
        for (i = 0; i < n; i++) {
            const uint64_t v = (uint64_t)(uint8_t)src[i] * 0x0101010101010101ULL;
            memcpy(d + 8 * i, &v, 8);
        }
    } else if (m % 16 == 0) {
        for (i = 0; i < n; i++) {
            const uint64_t v = (uint64_t)(uint8_t)src[i] * 0x0101010101010101ULL;
            const uint64_t v2[2] = {v, v};
            for (r = 0; r < m; r += 16)
                memcpy(d + i * m + r, v2, 16);
        }
    } else {
        for (i = 0; i < n; i++)
            for (r = 0; r < m; r++)
                d[i * m + r] = src[i];
    }
}

/* dw_expand on int16 values (n of them, each repeated m times). */
static inline void dw_expand16(int16_t* d, const int16_t* src, ptrdiff_t n, ptrdiff_t m) {
    ptrdiff_t i, r;
    if (m == 1) {
        memcpy(d, src, (size_t)n * 2);
    } else if (m == 2) {
        for (i = 0; i < n; i++) {
            d[2 * i] = src[i];
            d[2 * i + 1] = src[i];
        }
    } else {
        for (i = 0; i < n; i++)
            for (r = 0; r < m; r++)
                d[i * m + r] = src[i];
    }
}

/* n values of k's activation type at d set to pad_value. */
static inline void dw_fill(const dw_call* k, int8_t* d, ptrdiff_t n) {
    ptrdiff_t i;
    if (k->elem == 1 || k->pad_value == 0) {
        memset(d, k->pad_value, (size_t)(n * k->elem));
    } else {
        int16_t* d16 = (int16_t*)d;
        for (i = 0; i < n; i++)
            d16[i] = (int16_t)k->pad_value;
    }
}

/* Input row `row` (W * C values) into its phase rows for the segment of output columns from
   ow0 (dst: stride_w rows of phase_len values): phase f, pixel i is padded column
   P = ow0 * stride_w + f + stride_w * i, input column P - pad_left, its C channels each
   repeated M times; columns outside the image and the slack are pad_value. Offsets are in
   bytes below: a pixel is cb = C * elem bytes of the row, ob = Cout * elem of a phase row. */
static void dw_build_phases(const dw_call* k, const int8_t* row, ptrdiff_t ow0, int8_t* dst) {
    const ptrdiff_t s = k->stride_w, c = k->in_c, m = k->mult, cout = k->out_c, e = k->elem;
    const ptrdiff_t cb = c * e, ob = cout * e;
    const ptrdiff_t n_pix = (k->phase_len - DW_TILE) / cout;
    ptrdiff_t f, i;
    for (f = 0; f < s; f++) {
        int8_t* d = dst + f * k->phase_len * e;
        const ptrdiff_t iw0 = ow0 * s + f - k->pad_left;   /* input column of pixel i = 0 */
        /* pixels i in [lo, hi) are inside the image */
        ptrdiff_t lo = iw0 >= 0 ? 0 : (-iw0 + s - 1) / s;
        ptrdiff_t hi = k->in_w - iw0 > 0 ? (k->in_w - iw0 + s - 1) / s : 0;
        hi = hi < n_pix ? hi : n_pix;
        lo = lo < hi ? lo : hi;
        dw_fill(k, d, lo * cout);
        if (s == 1 && e == 1) {     /* one run of contiguous pixels */
            dw_expand(d + lo * ob, row + (iw0 + lo) * cb, (hi - lo) * c, m);
        } else if (s == 1) {
            dw_expand16((int16_t*)(d + lo * ob), (const int16_t*)(row + (iw0 + lo) * cb),
                        (hi - lo) * c, m);
        } else if (m == 1) {    /* every s-th pixel; fixed sizes become single moves */
            const int8_t* src = row + (iw0 + lo * s) * cb;
            int8_t* o = d + lo * ob;
            switch (cb) {
            case 1: for (i = lo; i < hi; i++, src += s, o += 1) o[0] = src[0]; break;
            case 2: for (i = lo; i < hi; i++, src += 2 * s, o += 2) memcpy(o, src, 2); break;
            case 4: for (i = lo; i < hi; i++, src += 4 * s, o += 4) memcpy(o, src, 4); break;
            case 8: for (i = lo; i < hi; i++, src += 8 * s, o += 8) memcpy(o, src, 8); break;
            case 16: for (i = lo; i < hi; i++, src += 16 * s, o += 16) memcpy(o, src, 16); break;
            default:
                if (cb % 16 == 0) {     /* whole vectors: no tail to test for */
                    for (i = lo; i < hi; i++, src += cb * s, o += cb) {
                        ptrdiff_t j;
                        for (j = 0; j < cb; j += 16)
                            memcpy(o + j, src + j, 16);
                    }
                } else {
                    for (i = lo; i < hi; i++, src += cb * s, o += cb)
                        dw_copy(o, src, cb);
                }
            }
        } else if (e == 1) {
            for (i = lo; i < hi; i++)
                dw_expand(d + i * ob, row + (iw0 + i * s) * cb, c, m);
        } else {
            for (i = lo; i < hi; i++)
                dw_expand16((int16_t*)(d + i * ob), (const int16_t*)(row + (iw0 + i * s) * cb),
                            c, m);
        }
        dw_fill(k, d + hi * ob, k->phase_len - hi * cout);
    }
}

/* The phase rows of input row ih of image `image` for the segment from ow0: a ring slot of
   `scratch` (built if it holds another row), or `zero` outside the image. Returns the first
   phase row; phase f is *stride bytes further (zero: the same row for every phase). */
static inline const int8_t* dw_phase_row(const dw_call* k, const int8_t* image, ptrdiff_t ih,
                                         ptrdiff_t ow0, int8_t* scratch, ptrdiff_t* held,
                                         ptrdiff_t* stride) {
    ptrdiff_t slot;
    int8_t* d;
    if (ih < 0 || ih >= k->in_h) {
        *stride = 0;
        return k->zero;
    }
    slot = ih % k->ring;
    d = scratch + slot * k->stride_w * k->phase_len * k->elem;
    if (held[slot] != ih) {
        dw_build_phases(k, image + ih * k->in_w * k->in_c * k->elem, ow0, d);
        held[slot] = ih;
    }
    *stride = k->phase_len * k->elem;
    return d;
}

/* Task t: image n, band b of output rows, segment g of output columns. For each of its
   output rows, base[kh * KW + kw] points at the value lane 0 of the segment reads for that
   tap; RUN_ROW(k, base, pixels, out) computes the row from them. Per tap column, the phase
   row it reads and its offset (bytes) are computed once per task. The scratch is an int32
   array so that int16 phase rows are aligned. */
#define DW_TASK_LOOP(k, first, last, RUN_ROW) do { \
        int32_t scratch_words_[DW_SCRATCH / 4]; \
        int8_t* const scratch_ = (int8_t*)scratch_words_; \
        ptrdiff_t held_[DW_MAX_RING]; \
        const int8_t* base_[DW_MAX_TAPS]; \
        ptrdiff_t phase_[DW_MAX_TAPS], offset_[DW_MAX_TAPS]; \
        const ptrdiff_t kh_n_ = (k)->kernel_h, kw_n_ = (k)->kernel_w; \
        ptrdiff_t t_, kw0_; \
        for (kw0_ = 0; kw0_ < kw_n_; kw0_++) { \
            phase_[kw0_] = (kw0_ * (k)->dil_w) % (k)->stride_w; \
            offset_[kw0_] = (kw0_ * (k)->dil_w) / (k)->stride_w * (k)->out_c * (k)->elem; \
        } \
        for (t_ = (first); t_ < (last); t_++) { \
            const ptrdiff_t n_ = t_ / ((k)->n_bands * (k)->n_segs); \
            const ptrdiff_t b_ = t_ / (k)->n_segs % (k)->n_bands, g_ = t_ % (k)->n_segs; \
            const ptrdiff_t ow0_ = g_ * (k)->seg_w; \
            const ptrdiff_t ow1_ = ow0_ + (k)->seg_w < (k)->out_w ? ow0_ + (k)->seg_w : (k)->out_w; \
            const ptrdiff_t oh1_ = (b_ + 1) * (k)->band < (k)->out_h ? (b_ + 1) * (k)->band \
                                                                   : (k)->out_h; \
            const int8_t* image_ = (k)->x + n_ * (k)->in_h * (k)->in_w * (k)->in_c * (k)->elem; \
            ptrdiff_t oh_, r_; \
            for (r_ = 0; r_ < (k)->ring; r_++) \
                held_[r_] = -1; \
            for (oh_ = b_ * (k)->band; oh_ < oh1_; oh_++) { \
                ptrdiff_t kh_, kw_, ih_ = oh_ * (k)->stride_h - (k)->pad_top; \
                for (kh_ = 0; kh_ < kh_n_; kh_++, ih_ += (k)->dil_h) { \
                    ptrdiff_t stride_; \
                    const int8_t* p_ = dw_phase_row(k, image_, ih_, ow0_, scratch_, held_, \
                                                    &stride_); \
                    for (kw_ = 0; kw_ < kw_n_; kw_++) \
                        base_[kh_ * kw_n_ + kw_] = p_ + phase_[kw_] * stride_ + offset_[kw_]; \
                } \
                RUN_ROW(k, base_, (ow1_ - ow0_), (k)->out + ((n_ * (k)->out_h + oh_) \
                        * (k)->out_w + ow0_) * (k)->out_c * (k)->elem); \
            } \
        } \
    } while (0)

/* ---- the scalar twin ------------------------------------------------------------------- */

/* 16 lanes from byte offset j of every tap's phase row, constants of tile `tile`, lanes
   [lane0, lane0 + 16) of L for the requantization; stores the first n. */
static inline void dw_tile_scalar(const dw_call* k, const int8_t* const* base, ptrdiff_t j,
                                  ptrdiff_t lane0, ptrdiff_t n, int8_t* out) {
    const uint8_t* pt = k->packed + (lane0 / DW_TILE) * dw_tile_bytes(k->taps);
    ptrdiff_t t;
    int lane;
    for (lane = 0; lane < n; lane++) {
        uint32_t acc = (uint32_t)((const int32_t*)pt)[lane];
        for (t = 0; t < k->taps; t++)
            acc += (uint32_t)((int32_t)base[t][j + lane] * dw_weight(pt, t, lane));
        out[lane] = fx_requant_scalar((int32_t)acc, k->q, (size_t)(lane0 + lane));
    }
}

/* One output row segment of `pixels` pixels at out, from the tap pointers `base`. */
static inline void dw_row_scalar(const dw_call* k, const int8_t* const* base, ptrdiff_t pixels,
                                 int8_t* out) {
    ptrdiff_t j, lane0 = 0, len = pixels * k->out_c, p;
    if (k->flat) {
        for (j = 0; j < len; j += DW_TILE) {
            dw_tile_scalar(k, base, j, lane0, len - j < DW_TILE ? len - j : DW_TILE, out + j);
            lane0 = lane0 + DW_TILE == k->lanes ? 0 : lane0 + DW_TILE;
        }
    } else {
        for (p = 0; p < pixels; p++)
            for (j = 0; j < k->out_c; j += DW_TILE)
                dw_tile_scalar(k, base, p * k->out_c + j, j,
                               k->out_c - j < DW_TILE ? k->out_c - j : DW_TILE,
                               out + p * k->out_c + j);
    }
}

#define DW_ROW_SCALAR(k, base, pixels, out) dw_row_scalar(k, base, pixels, out)

static void dw_run_direct(const dw_call* k, ptrdiff_t first, ptrdiff_t last);

/* the int16 path: its packing, scalar twin and vector rows */
#include "dwconv16.h"

static void dw_run_scalar(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    if (k->elem == 2) {
        dw16_run_scalar(k, first, last);
        return;
    }
    if (!k->rows_ok) {
        dw_run_direct(k, first, last);
        return;
    }
    DW_TASK_LOOP(k, first, last, DW_ROW_SCALAR);
}

/* ---- the direct loop (no scratch; any number of taps) ------------------------------------ */

/* Tasks are (image, output row) here (dw_plan: band 1, one segment). Lane l of the packed
   tiles is channel l in pixel mode; in flat mode channel o's constants are lane o too
   (o < Cout <= L). int8 or int16 activations (k->elem): the int16 packing keeps lane l of a
   tile, its bias, weights and requantization constants, at slot DW16_SLOT(l). */
static void dw_run_direct(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    const int wide = k->elem == 2;
    const size_t tb = wide ? dw16_tile_bytes(k->taps) : dw_tile_bytes(k->taps);
    ptrdiff_t task;
    for (task = first; task < last; task++) {
        const ptrdiff_t n = task / k->out_h, oh = task % k->out_h;
        const ptrdiff_t image0 = n * k->in_h * k->in_w * k->in_c;
        const ptrdiff_t row0 = (n * k->out_h + oh) * k->out_w * k->out_c;
        ptrdiff_t ow, o, t;
        for (ow = 0; ow < k->out_w; ow++) {
            for (o = 0; o < k->out_c; o++) {
                const uint8_t* pt = k->packed + (o / DW_TILE) * tb;
                const int lane = (int)(o % DW_TILE), slot = wide ? DW16_SLOT(lane) : lane;
                uint32_t acc = (uint32_t)((const int32_t*)pt)[slot];
                for (t = 0; t < k->taps; t++) {
                    ptrdiff_t ih = oh * k->stride_h - k->pad_top + (t / k->kernel_w) * k->dil_h;
                    ptrdiff_t iw = ow * k->stride_w - k->pad_left + (t % k->kernel_w) * k->dil_w;
                    ptrdiff_t i = image0 + (ih * k->in_w + iw) * k->in_c + o / k->mult;
                    int32_t xv = k->pad_value;
                    if (ih >= 0 && ih < k->in_h && iw >= 0 && iw < k->in_w)
                        xv = wide ? ((const int16_t*)k->x)[i] : k->x[i];
                    acc += (uint32_t)(xv * (wide ? dw16_weight(pt, t, slot)
                                                 : dw_weight(pt, t, slot)));
                }
                if (wide)
                    ((int16_t*)k->out)[row0 + ow * k->out_c + o] = dw16_requant_scalar(
                        (int32_t)acc, k->q, (size_t)(o - lane + slot));
                else
                    k->out[row0 + ow * k->out_c + o] = fx_requant_scalar((int32_t)acc, k->q,
                                                                         (size_t)o);
            }
        }
    }
}

/* ---- SIMD ---------------------------------------------------------------------------- */

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

/* The generic vector row over the ISA's dw_tile_acc / dw_epilogue, unless the ISA file has its
   own row (DW_HAVE_ROW_SIMD: dwconv_neon.h). */
#ifndef DW_HAVE_ROW_SIMD
#  define DW_TILE_ACC(rows, taps, j, pt) dw_tile_acc(rows, taps, j, pt)
#  define DW_STORE(p, v) _mm_storeu_si128((__m128i*)(p), (v))
typedef __m128i dw_out_t;

/* 16 lanes from byte offset j of every tap's row, tile `lane0 / 16` of the L lanes; stores
   n <= 16 of them (all 16 with one vector store when n == 16). */
DW_INLINE void dw_tile_simd(const dw_call* k, const int8_t* const* base, ptrdiff_t taps,
                            ptrdiff_t j, ptrdiff_t lane0, ptrdiff_t n, int8_t* out) {
    const uint8_t* pt = k->packed + (lane0 / DW_TILE) * dw_tile_bytes(taps);
    dw_out_t v = dw_epilogue(DW_TILE_ACC(base, taps, j, pt), k->q, lane0);
    if (n == DW_TILE) {
        DW_STORE(out, v);
    } else {
        int8_t buf[DW_TILE];
        DW_STORE(buf, v);
        memcpy(out, buf, (size_t)n);
    }
}

/* dw_row_scalar with the vector tile; `taps` a compile-time constant where the callers pass
   one (9, 25), so the tap loop unrolls. */
DW_INLINE void dw_row_simd_taps(const dw_call* k, const int8_t* const* base, ptrdiff_t taps,
                                ptrdiff_t pixels, int8_t* out) {
    const ptrdiff_t cout = k->out_c, lanes = k->lanes;
    ptrdiff_t j, lane0 = 0, len = pixels * cout, p;
    if (k->flat) {
        for (j = 0; j + DW_TILE <= len; j += DW_TILE) {
            dw_tile_simd(k, base, taps, j, lane0, DW_TILE, out + j);
            lane0 = lane0 + DW_TILE == lanes ? 0 : lane0 + DW_TILE;
        }
        if (j < len)
            dw_tile_simd(k, base, taps, j, lane0, len - j, out + j);
    } else {
        for (p = 0; p < pixels; p++) {
            for (j = 0; j + DW_TILE <= cout; j += DW_TILE)
                dw_tile_simd(k, base, taps, p * cout + j, j, DW_TILE, out + p * cout + j);
            if (j < cout)
                dw_tile_simd(k, base, taps, p * cout + j, j, cout - j, out + p * cout + j);
        }
    }
}

static inline void dw_row_simd(const dw_call* k, const int8_t* const* base, ptrdiff_t pixels,
                               int8_t* out) {
    if (k->taps == 9)
        dw_row_simd_taps(k, base, 9, pixels, out);
    else if (k->taps == 25)
        dw_row_simd_taps(k, base, 25, pixels, out);
    else
        dw_row_simd_taps(k, base, k->taps, pixels, out);
}
#endif /* DW_HAVE_ROW_SIMD */

#define DW_ROW_SIMD(k, base, pixels, out) dw_row_simd(k, base, pixels, out)

static void dw_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    if (k->elem == 2) {
        dw16_run_simd(k, first, last);
        return;
    }
    if (!k->rows_ok) {
        dw_run_direct(k, first, last);
        return;
    }
    DW_TASK_LOOP(k, first, last, DW_ROW_SIMD);
}

#else
static void dw_run_simd(const dw_call* k, ptrdiff_t first, ptrdiff_t last) {
    if (k->elem == 2)
        dw16_run_simd(k, first, last);
    else
        dw_run_scalar(k, first, last);
}
#endif

static inline const char* dw_isa_name(void) { return DW_ISA_NAME; }

#endif

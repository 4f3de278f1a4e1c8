/* Micro-kernels of the GEMM on int16 activations x int8 weights (TFLite's 16x8): conv2d's
 * indirect GEMM and dense (one tap), for tensors whose activations are int16 (symmetric, zero
 * point 0). Included from fixnet/_kernels/_conv.pyx and _dense.pyx, compiled once per ISA
 * build like qgemm.h (the int8 kernels), whose predefined macros choose the tile:
 *
 *   build                   MR x NR, KR  packed weights  inner step
 *   AVX2 (and AVX-512 VNNI)  4 x 8,  2   int8            vpbroadcastd of an int16 pair of the
 *                                                        row, vpmovsxbw, vpmaddwd
 *   x86-64 baseline (SSE2)   2 x 4,  8   int16           pmaddwd on 8 int16 of each row
 *   aarch64 + dot product    4 x 8,  4   int8            sdot by lane on the high and the low
 *                                                        bytes of the int16 (qgemm16_neondot.h)
 *   aarch64                  4 x 8,  1   int16           smlal / smlal2 by lane
 *   anything else            4 x 4,  1   int16           the scalar twin
 *
 * Q16_KSTEP: the input channels one pass of a K loop takes (AVX2: two pairs; SSE2, NEON: 8;
 * NEON with the dot product: 16);
 * a tap whose Cin is not a multiple of it ends in a tail, so conv2d copies the windows of a
 * first layer (Cin = 1 or 3) into rows of their own (_conv.pyx's patch mode).
 *
 * The AVX-512 VNNI build runs the AVX2 code compiled with its flags: vpdpwssd (int16 pairs
 * into int32) would fuse the vpmaddwd + vpaddd pair, but no machine here runs AVX-512.
 *
 * The packed weights (fixnet._kernels.gemm_pack.pack_gemm with Q16_NR, Q16_KR, Q16_W16 and
 * Q16_INPUT_OFFSET; an int16 input has zero point 0, so the quantizer folds nothing into the
 * bias), per block of Q16_NR output channels: Q16_NR int32 biases (bias - Q16_INPUT_OFFSET *
 * sum w, modulo 2^32: the dot-product kernel multiplies x - 128, 0 elsewhere),
 * then for every tap and every group of Q16_KR input channels (Cin rounded up to Q16_KR,
 * zero-padded) the block's weights channel-major, w[j * Q16_KR + kk], as q16_w_t (int16 where
 * the multiply takes two int16 operands from memory: SSE2 has no pmovsxbw, NEON's smlal by
 * lane wants int16 lanes; int8 on AVX2, widened in the loop: a GEMV streams half the bytes).
 *
 * A call computes one tile of Q16_MR pixels (rows) x Q16_NR channels over `taps` taps:
 * a[t * Q16_MR + r] points at the Cin int16 inputs of tap t for row r, of which it reads
 * exactly Cin values (never past the row). Products int16 x int8 fit int32 (|x w| <= 2^15 *
 * 127), so pmaddwd's pair sums are exact; the sums wrap modulo 2^32 like the oracle's.
 *
 *   q16_tile(taps, cin, a, w, init, init_stride, c, c_stride)
 *       int32 sums from init[r * init_stride + j] into c[r * c_stride + j] (taps in chunks)
 *   q16_tile_q16(taps, cin, a, block, mr, nc, q, c0, out, out_stride)
 *       fused: from the packed bias at the head of block, requantized (requant.h's rule
 *       with the constants of channels c0 ..), clamped, stored as int16 for r < mr, j < nc
 *   q16_row_q16(taps, cin, a, block, nc, q, c0, out)   one row (a[t]: tap t's row)
 *   q16_tile_scalar, q16_tile_q16_scalar                 the scalar twins (same packing)
 *   q16_pointers(offs, n, image, pad_row, c0, ptrs)      conv2d's row pointers (qg_pointers)
 *   q16_requant_rows[_scalar](acc, acc_stride, rows, n, q, c0, out, out_stride)
 *
 * Requantization to int16: out = clamp(MBQM(acc, m0[c], shift[c]), act_min, act_max) with
 * int16 bounds; the output zero point is 0 for int16 (the Calls check it), so no term is
 * added. The vector forms narrow int32 to int16 with saturation before the clamp: exact,
 * since the bounds lie inside int16.
 */
#ifndef FIXNET_QGEMM16_H
#define FIXNET_QGEMM16_H

#include "qgemm.h"

#if defined(__AVX2__)
#define Q16_ISA "avx2-4x8c2"
#define Q16_KSTEP 4
#define Q16_MR 4
#define Q16_NR 8
#define Q16_KR 2
#define Q16_W16 0
#elif defined(__SSE2__)
#define Q16_ISA "sse2-2x4c8"
#define Q16_KSTEP 8
#define Q16_MR 2
#define Q16_NR 4
#define Q16_KR 8
#define Q16_W16 1
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#define Q16_ISA "neondot-4x8c4"
#define Q16_KSTEP 16
#define Q16_MR 4
#define Q16_NR 8
#define Q16_KR 4
#define Q16_W16 0
#define Q16_INPUT_OFFSET (-128)
#elif defined(__aarch64__)
#define Q16_ISA "neon-mlal-4x8"
#define Q16_KSTEP 8
#define Q16_MR 4
#define Q16_NR 8
#define Q16_KR 1
#define Q16_W16 1
#else
#define Q16_ISA "scalar-4x4"
#define Q16_KSTEP 1
#define Q16_MR 4
#define Q16_NR 4
#define Q16_KR 1
#define Q16_W16 1
#endif

#ifndef Q16_INPUT_OFFSET
#define Q16_INPUT_OFFSET 0
#endif

#if Q16_W16
typedef int16_t q16_w_t;
#else
typedef int8_t q16_w_t;
#endif

typedef char q16_mr_fits[(Q16_MR <= QG_MR_MAX) ? 1 : -1];

/* qg_pointers for int16 rows: offs[i] >= 0 is an offset (in values) into the image (+ c0),
   -1 the padding row. */
static inline void q16_pointers(const int32_t* offs, size_t n, const int16_t* image,
                                const int16_t* pad_row, size_t c0, const int16_t** ptrs)
{
    for (size_t i = 0; i < n; i++)
        ptrs[i] = (offs[i] >= 0 ? image + offs[i] : pad_row) + c0;
}

/* ---- requantization to int16 (scalar rule; the vector forms per ISA below) ------------------ */

static inline int16_t q16_requant_scalar(int32_t acc, const fx_requant* q, size_t c)
{
    int32_t v = fx_mbqm_scalar(acc, q, c);
    v = v < q->act_min ? q->act_min : v;
    v = v > q->act_max ? q->act_max : v;
    return (int16_t)v;
}

static inline void q16_requant_rows_scalar(const int32_t* acc, size_t acc_stride, size_t rows,
                                           size_t n, const fx_requant* q, size_t c0,
                                           int16_t* out, size_t out_stride)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++)
            out[r * out_stride + j] = q16_requant_scalar(acc[r * acc_stride + j], q, c0 + j);
}

/* ---- the scalar twin (every build) -------------------------------------------------------- */

static inline void q16_tile_scalar(size_t taps, size_t cin, const int16_t** a, const void* wv,
                                   const int32_t* init, size_t init_stride, int32_t* c,
                                   size_t c_stride)
{
    const q16_w_t* w = (const q16_w_t*)wv;
    const size_t groups = (cin + Q16_KR - 1) / Q16_KR;
    uint32_t acc[Q16_MR][Q16_NR];
    for (size_t r = 0; r < Q16_MR; r++)
        for (size_t j = 0; j < Q16_NR; j++)
            acc[r][j] = (uint32_t)init[r * init_stride + j];
    for (size_t t = 0; t < taps; t++) {
        for (size_t g = 0; g < groups; g++) {
            const q16_w_t* wg = w + (t * groups + g) * (Q16_NR * Q16_KR);
            for (size_t r = 0; r < Q16_MR; r++) {
                const int16_t* x = a[t * Q16_MR + r] + g * Q16_KR;
                for (size_t kk = 0; kk < Q16_KR && g * Q16_KR + kk < cin; kk++) {
                    const int32_t xv = (int32_t)x[kk] + Q16_INPUT_OFFSET;
                    for (size_t j = 0; j < Q16_NR; j++)
                        acc[r][j] += (uint32_t)(xv * (int32_t)wg[j * Q16_KR + kk]);
                }
            }
        }
    }
    for (size_t r = 0; r < Q16_MR; r++)
        for (size_t j = 0; j < Q16_NR; j++)
            c[r * c_stride + j] = (int32_t)acc[r][j];
}

static inline void q16_tile_q16_scalar(size_t taps, size_t cin, const int16_t** a,
                                       const void* block, size_t mr, size_t nc,
                                       const fx_requant* q, size_t c0, int16_t* out,
                                       size_t out_stride)
{
    int32_t acc[Q16_MR * Q16_NR];
    q16_tile_scalar(taps, cin, a, (const int8_t*)block + Q16_NR * sizeof(int32_t),
                    (const int32_t*)block, 0, acc, Q16_NR);
    q16_requant_rows_scalar(acc, Q16_NR, mr, nc, q, c0, out, out_stride);
}

/* ---- the micro-kernels of this build -------------------------------------------------------- */
#if defined(__AVX2__)
#include "qgemm16_avx2.h"
#elif defined(__SSE2__)
#include "qgemm16_sse2.h"
#elif defined(__aarch64__)
#include "qgemm16_neon.h"
#if defined(__ARM_FEATURE_DOTPROD)
#include "qgemm16_neondot.h"
#endif
#else
static inline void q16_tile(size_t taps, size_t cin, const int16_t** a, const void* wv,
                            const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    q16_tile_scalar(taps, cin, a, wv, init, init_stride, c, c_stride);
}
#endif

#ifndef Q16_HAVE_REQUANT_ROWS
static inline void q16_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                    size_t n, const fx_requant* q, size_t c0, int16_t* out,
                                    size_t out_stride)
{
    q16_requant_rows_scalar(acc, acc_stride, rows, n, q, c0, out, out_stride);
}
#endif

/* The fused tile where the build's file has none: the int32 tile on the stack, then the rows
   requantized. */
#ifndef Q16_HAVE_TILE_Q16
static inline void q16_tile_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                                size_t mr, size_t nc, const fx_requant* q, size_t c0,
                                int16_t* out, size_t out_stride)
{
    int32_t acc[Q16_MR * Q16_NR];
    q16_tile(taps, cin, a, (const int8_t*)block + Q16_NR * sizeof(int32_t),
             (const int32_t*)block, 0, acc, Q16_NR);
    q16_requant_rows(acc, Q16_NR, mr, nc, q, c0, out, out_stride);
}
#endif

/* One row where the build's file has no one-row kernel: the tile with every row on a[t]. */
#ifndef Q16_HAVE_ROW_Q16
#define Q16_ROW_MAX_TAPS 32
static inline void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                               size_t nc, const fx_requant* q, size_t c0, int16_t* out)
{
    const int16_t* rows[Q16_ROW_MAX_TAPS * Q16_MR];
    for (size_t t = 0; t < taps; t++)
        for (size_t r = 0; r < Q16_MR; r++)
            rows[t * Q16_MR + r] = a[t];
    q16_tile_q16(taps, cin, rows, block, 1, nc, q, c0, out, 0);
}
#endif

#endif /* FIXNET_QGEMM16_H */

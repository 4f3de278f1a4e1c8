/* Micro-kernels of fixnet's int8 convolution (indirect GEMM), one per instruction set.
 *
 * Included from fixnet/_kernels/_conv.pyx; compiled once per ISA build (setup.py), so the
 * predefined macros of that build's flags choose the kernel and the tile:
 *
 *   build                 macro                   MR x NR, KR   inner step
 *   AVX-512 VNNI          __AVX512VNNI__           8 x 16,  4   vpdpbusd (u8 x s8), zmm
 *   AVX2                  __AVX2__                 3 x  8,  8   vpmaddwd on int16 weights in memory, ymm
 *   x86-64 baseline       __SSE2__                 2 x  4,  8   punpcklbw/psraw + pmaddwd
 *   aarch64 + dot product __ARM_FEATURE_DOTPROD    4 x 16,  4   sdot by lane on 16-byte row loads
 *   aarch64               __aarch64__              2 x  8, 16   smull + smlal2 + sadalp
 *   anything else         -                        4 x  4,  4   scalar
 *
 * The packed weights (qg_pack_* below describe them; _conv.pyx makes them) are, per block
 * of QG_NR output channels: QG_NR int32 biases, then for every tap and every group of QG_KR
 * input channels (Cin rounded up to QG_KR, zero-padded) the weights of the block's
 * channels, channel-major: w[j * QG_KR + kk] is the weight of channel j of the block for
 * input channel k0 + kk; int16 (qg_w_t) in the SSE2 build, whose kernel multiplies int16
 * (widened once when packing: SSE2 has no pmovsxbw), and in the AVX2 build, whose kernel
 * loads each pair of channels' int16 weights where it uses them: no widening in the loop and
 * one weight register (12 accumulators, 3 rows, a weight and a product are 17 values for 16
 * ymm registers: GCC keeps one accumulator on the stack, where int8 weights widened into 4
 * registers up front kept two); int8 elsewhere. (AVX2's dense keeps int8
 * weights, widened in the loop: half the bytes to stream, which is what bounds a GEMV.) Channels beyond Cout are zero. With QG_UINT8_INPUT (VNNI) the kernel
 * multiplies (x + 128) as uint8, and the packed bias holds bias - 128 * sum_k w[c, k]:
 * sums modulo 2^32 are the same.
 *
 * A kernel call computes one tile of QG_MR output pixels x QG_NR output channels over `taps`
 * taps: a[t * QG_MR + r] points at the Cin input values of tap t for pixel r (a row of the
 * image, or a row of the padding value); it reads exactly Cin bytes from each (the last
 * partial group of QG_KR through a zero-filled copy, or in pieces of 8, 4, 2, 1 bytes on
 * NEON: never past the row). The accumulators
 * start from init[r * init_stride + j] (init_stride 0: the packed bias) and are written to
 * c[r * c_stride + j], r < QG_MR, j < QG_NR; all arithmetic wraps modulo 2^32.
 *
 * qg_tile_scalar is the scalar twin of qg_tile: the same packing, the same tile, plain C;
 * the tests hold the two bit-exact (and both with fixnet.oracle.conv2d).
 */
#ifndef FIXNET_QGEMM_H
#define FIXNET_QGEMM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "requant.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)
#include <immintrin.h>
#define QG_ISA "avx512vnni"
#define QG_W16 0
#ifndef QG_MR
#define QG_MR 8
#endif
#define QG_NR 16
#define QG_KR 4
#define QG_UINT8_INPUT 1
#elif defined(__AVX2__)
#include <immintrin.h>
#define QG_ISA "avx2"
#define QG_W16 1
#define QG_MR 3
#define QG_NR 8
#define QG_KR 8
#define QG_UINT8_INPUT 0
#elif defined(__SSE2__)
#include <emmintrin.h>
#define QG_ISA "sse2"
#define QG_W16 1
#define QG_MR 2
#define QG_NR 4
#define QG_KR 8
#define QG_UINT8_INPUT 0
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include <arm_neon.h>
#define QG_ISA "neon-dotprod"
#define QG_W16 0
#define QG_MR 4
#define QG_NR 16
#define QG_KR 4
#define QG_UINT8_INPUT 0
#elif defined(__aarch64__)
#include <arm_neon.h>
#define QG_ISA "neon"
#define QG_W16 0
#define QG_MR 2
#define QG_NR 8
#define QG_KR 16
#define QG_UINT8_INPUT 0
#else
#define QG_ISA "scalar"
#define QG_W16 0
#define QG_MR 4
#define QG_NR 4
#define QG_KR 4
#define QG_UINT8_INPUT 0
#endif

/* The element type of the packed weights: int16 where the kernel multiplies int16 (pmaddwd):
   widened once when packing instead of in every tile (SSE2 has no pmovsxbw, and AVX2's runs on
   one port only); int8 elsewhere. */
#if QG_W16
typedef int16_t qg_w_t;
#else
typedef int8_t qg_w_t;
#endif

/* Upper bound of QG_MR over every build (_conv.pyx sizes its stack buffers with it). */
#define QG_MR_MAX 8
typedef char qg_mr_fits[(QG_MR <= QG_MR_MAX) ? 1 : -1];

/* The last n < QG_KR values of a row, zero-filled to QG_KR bytes (never reads past the row). */
static inline void qg_tail(int8_t* dst, const int8_t* src, size_t n)
{
    memset(dst, 0, QG_KR);
    memcpy(dst, src, n);
}

/* The row pointers of n taps x pixels of one tile: offs[i] >= 0 is an offset into the image
   (+ c0, the first input channel of the group), -1 the padding row. One branch-free loop over
   contiguous offsets, which gcc vectorises (compare and blend). */
static inline void qg_pointers(const int32_t* offs, size_t n, const int8_t* image,
                               const int8_t* pad_row, size_t c0, const int8_t** ptrs)
{
    for (size_t i = 0; i < n; i++)
        ptrs[i] = (offs[i] >= 0 ? image + offs[i] : pad_row) + c0;
}

/* ---- the scalar twin (every build) -------------------------------------------------------- */

static inline void qg_tile_scalar(size_t taps, size_t cin, const int8_t** a,
                                  const void* wv, const int32_t* init, size_t init_stride,
                                  int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t groups = (cin + QG_KR - 1) / QG_KR;
    uint32_t acc[QG_MR][QG_NR];
    for (size_t r = 0; r < QG_MR; r++)
        for (size_t j = 0; j < QG_NR; j++)
            acc[r][j] = (uint32_t)init[r * init_stride + j];
    for (size_t t = 0; t < taps; t++) {
        for (size_t g = 0; g < groups; g++) {
            const qg_w_t* wg = w + (t * groups + g) * (QG_NR * QG_KR);
            for (size_t r = 0; r < QG_MR; r++) {
                const int8_t* x = a[t * QG_MR + r] + g * QG_KR;
                for (size_t kk = 0; kk < QG_KR; kk++) {
                    int32_t xv;
                    if (g * QG_KR + kk >= cin)
                        break;
#if QG_UINT8_INPUT
                    xv = (int32_t)(uint8_t)(x[kk] ^ 0x80);
#else
                    xv = x[kk];
#endif
                    for (size_t j = 0; j < QG_NR; j++)
                        acc[r][j] += (uint32_t)(xv * (int32_t)wg[j * QG_KR + kk]);
                }
            }
        }
    }
    for (size_t r = 0; r < QG_MR; r++)
        for (size_t j = 0; j < QG_NR; j++)
            c[r * c_stride + j] = (int32_t)acc[r][j];
}

/* ---- the micro-kernel of this build: one file per instruction set -------------------------- */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)
#include "qgemm_avx512vnni.h"
#elif defined(__AVX2__)
#include "qgemm_avx2.h"
#elif defined(__SSE2__)
#include "qgemm_sse2.h"
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include "qgemm_neondot.h"
#elif defined(__aarch64__)
#include "qgemm_neon.h"
#else
#include "qgemm_scalar.h"
#endif

/* ---- the fused tile: accumulate, requantize, store int8 ----------------------------------------
 * qg_tile_q8(taps, cin, a, block, mr, nc, q, c0, out, out_stride): one tile over every tap of
 * the layer, starting from the packed bias at the head of `block` (one packed block of QG_NR
 * channels: QG_NR int32 biases, then the weights), requantized with the constants of
 * channels c0 .. c0 + QG_NR - 1 of q (requant.h) and stored as int8:
 *   out[r * out_stride + j] = fx_requant_scalar(acc[r][j], q, c0 + j),  r < mr, j < nc
 * (rows r >= mr are computed from their pointers in `a`, which must be valid, and not
 * stored). A build's kernel file may define its own (QG_HAVE_TILE_Q8: the epilogue on the
 * accumulator registers); else it is qg_tile into a stack tile, then fx_requant_rows.
 * qg_tile_q8_scalar is its scalar twin (qg_tile_scalar + the scalar rule). */
#ifndef QG_HAVE_TILE_Q8
static inline void qg_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t mr, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out, size_t out_stride)
{
    int32_t acc[QG_MR * QG_NR];
    qg_tile(taps, cin, a, (const int8_t*)block + QG_NR * sizeof(int32_t),
            (const int32_t*)block, 0, acc, QG_NR);
    fx_requant_rows(acc, QG_NR, mr, nc, q, c0, out, out_stride);
}
#endif

/* qg_row_q8(taps, cin, a, block, nc, q, c0, out): qg_tile_q8 for one row of pixels (mr = 1;
 * a[t] points at tap t's row, one pointer per tap): dense at batch 1 (a GEMV) and the last
 * pixel of an image. A build's kernel file may define its own (QG_HAVE_ROW_Q8), a 1-row
 * kernel that computes no padding rows; else the tile kernel runs with every row on a[t]. */
#ifndef QG_HAVE_ROW_Q8
#define QG_ROW_MAX_TAPS 32
static inline void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const int8_t* rows[QG_ROW_MAX_TAPS * QG_MR];
    size_t t, r;
    for (t = 0; t < taps; t++)
        for (r = 0; r < QG_MR; r++)
            rows[t * QG_MR + r] = a[t];
    qg_tile_q8(taps, cin, rows, block, 1, nc, q, c0, out, 0);
}
#endif

/* qg_row2_q8(taps, cin, a, block, block_bytes, nc, q, c0, out): qg_row_q8 for two adjacent
 * packed blocks (block and block + block_bytes), QG_NR < nc <= 2 QG_NR channels from c0. A
 * one-row kernel reads every weight once, so it is bound by the loads; with two blocks one
 * activation load serves twice the multiplies. A build's kernel file may define its own
 * (QG_HAVE_ROW2_Q8: NEON dotprod's 1 x 32); else two qg_row_q8 calls. */
#ifndef QG_HAVE_ROW2_Q8
static inline void qg_row2_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t block_bytes, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out)
{
    qg_row_q8(taps, cin, a, block, QG_NR, q, c0, out);
    qg_row_q8(taps, cin, a, (const int8_t*)block + block_bytes, nc - QG_NR, q, c0 + QG_NR,
              out + QG_NR);
}
#endif

static inline void qg_tile_q8_scalar(size_t taps, size_t cin, const int8_t** a,
                                     const void* block, size_t mr, size_t nc,
                                     const fx_requant* q, size_t c0, int8_t* out,
                                     size_t out_stride)
{
    int32_t acc[QG_MR * QG_NR];
    qg_tile_scalar(taps, cin, a, (const int8_t*)block + QG_NR * sizeof(int32_t),
                   (const int32_t*)block, 0, acc, QG_NR);
    fx_requant_rows_scalar(acc, QG_NR, mr, nc, q, c0, out, out_stride);
}

#endif /* FIXNET_QGEMM_H */

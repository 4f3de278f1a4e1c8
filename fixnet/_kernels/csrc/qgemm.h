/* Micro-kernels of fixnet's int8 convolution (indirect GEMM), one per instruction set.
 *
 * Included from fixnet/_kernels/_conv.pyx; compiled once per ISA build (setup.py), so the
 * predefined macros of that build's flags choose the kernel and the tile:
 *
 *   build                 macro                   MR x NR, KR   inner step
 *   AVX-512 VNNI          __AVX512VNNI__           4 x 16,  4   vpdpbusd (u8 x s8), zmm
 *   AVX2                  __AVX2__                 3 x  8,  8   vpmovsxbw + vpmaddwd, ymm
 *   x86-64 baseline       __SSE2__                 2 x  4,  8   punpcklbw/psraw + pmaddwd
 *   aarch64 + dot product __ARM_FEATURE_DOTPROD    4 x 16,  4   sdot
 *   aarch64               __aarch64__              2 x  4, 16   smull/smlal + sadalp
 *   anything else         -                        4 x  4,  4   scalar
 *
 * The packed weights (qg_pack_* below describe them; _conv.pyx makes them) are, per block
 * of QG_NR output channels: QG_NR int32 biases, then for every tap and every group of QG_KR
 * input channels (Cin rounded up to QG_KR, zero-padded) the weights of the block's
 * channels, channel-major: w[j * QG_KR + kk] is the weight of channel j of the block for
 * input channel k0 + kk; int16 (qg_w_t) in the SSE2 and AVX2 builds, whose kernels multiply
 * int16 (widened once when packing, not in every tile), int8 elsewhere. Channels beyond Cout are zero. With QG_UINT8_INPUT (VNNI) the kernel
 * multiplies (x + 128) as uint8, and the packed bias holds bias - 128 * sum_k w[c, k]:
 * sums modulo 2^32 are the same.
 *
 * A kernel call computes one tile of QG_MR output pixels x QG_NR output channels over `taps`
 * taps: a[t * QG_MR + r] points at the Cin input values of tap t for pixel r (a row of the
 * image, or a row of the padding value); it reads exactly Cin bytes from each (the last
 * partial group of QG_KR through a zero-filled copy: never past the row). The accumulators
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
#define QG_NR 4
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

/* ---- AVX-512 VNNI: 4 x 16, 4-deep ---------------------------------------------------------- */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)

static inline __m512i qg_vnni_bcast(const int8_t* p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_xor_si512(_mm512_set1_epi32(v), _mm512_set1_epi8((char)0x80));
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 4, rem = cin % 4;
    __m512i acc[QG_MR];
#pragma GCC unroll 16
    for (int r = 0; r < QG_MR; r++)
        acc[r] = _mm512_loadu_si512((const void*)(init + r * init_stride));
    for (size_t t = 0; t < taps; t++) {
        const int8_t* const* x = a + QG_MR * t;
        for (size_t k = 0; k < full; k++) {
            const __m512i wq = _mm512_loadu_si512((const void*)w);
#pragma GCC unroll 16
            for (int r = 0; r < QG_MR; r++)
                acc[r] = _mm512_dpbusd_epi32(acc[r], qg_vnni_bcast(x[r] + 4 * k), wq);
            w += 64;
        }
        if (rem) {
            /* the zero fill becomes 128 after the offset, against zero weights */
            const __m512i wq = _mm512_loadu_si512((const void*)w);
#pragma GCC unroll 16
            for (int r = 0; r < QG_MR; r++) {
                int8_t tail[4];
                qg_tail(tail, x[r] + 4 * full, rem);
                acc[r] = _mm512_dpbusd_epi32(acc[r], qg_vnni_bcast(tail), wq);
            }
            w += 64;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < QG_MR; r++)
        _mm512_storeu_si512((void*)(c + r * c_stride), acc[r]);
}

/* ---- AVX2: 3 x 8, 8-deep --------------------------------------------------------------------- */
#elif defined(__AVX2__)

/* 8 int8 of a row, sign-extended to int16 and repeated in both 128-bit halves. */
static inline __m256i qg_avx2_row(const int8_t* p)
{
    return _mm256_cvtepi8_epi16(_mm_broadcastq_epi64(_mm_loadl_epi64((const __m128i*)p)));
}

/* [s(c0) | s(c1)], [s(c2) | s(c3)] ... of 4 accumulators of partial sums, reduced to the 8
   channel sums in order: acc01 holds 4 partial sums of channel 0 (low half) and of channel 1
   (high half), and so on. */
static inline __m256i qg_avx2_reduce(__m256i a01, __m256i a23, __m256i a45, __m256i a67)
{
    const __m256i s0123 = _mm256_hadd_epi32(a01, a23);   /* c0 c0 c2 c2 | c1 c1 c3 c3 */
    const __m256i s4567 = _mm256_hadd_epi32(a45, a67);   /* c4 c4 c6 c6 | c5 c5 c7 c7 */
    const __m256i s = _mm256_hadd_epi32(s0123, s4567);   /* c0 c2 c4 c6 | c1 c3 c5 c7 */
    return _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 8, rem = cin % 8;
    __m256i a0c01 = _mm256_setzero_si256(), a0c23 = a0c01, a0c45 = a0c01, a0c67 = a0c01;
    __m256i a1c01 = a0c01, a1c23 = a0c01, a1c45 = a0c01, a1c67 = a0c01;
    __m256i a2c01 = a0c01, a2c23 = a0c01, a2c45 = a0c01, a2c67 = a0c01;
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x0 = a[3 * t];
        const int8_t* x1 = a[3 * t + 1];
        const int8_t* x2 = a[3 * t + 2];
        for (size_t k = 0; k <= full; k++) {
            __m256i v0, v1, v2;
            if (k < full) {
                v0 = qg_avx2_row(x0 + 8 * k);
                v1 = qg_avx2_row(x1 + 8 * k);
                v2 = qg_avx2_row(x2 + 8 * k);
            } else if (rem) {
                int8_t t0[8], t1[8], t2[8];
                qg_tail(t0, x0 + 8 * full, rem);
                qg_tail(t1, x1 + 8 * full, rem);
                qg_tail(t2, x2 + 8 * full, rem);
                v0 = qg_avx2_row(t0);
                v1 = qg_avx2_row(t1);
                v2 = qg_avx2_row(t2);
            } else {
                break;
            }
            const __m256i w01 = _mm256_loadu_si256((const __m256i*)w);
            const __m256i w23 = _mm256_loadu_si256((const __m256i*)(w + 16));
            const __m256i w45 = _mm256_loadu_si256((const __m256i*)(w + 32));
            const __m256i w67 = _mm256_loadu_si256((const __m256i*)(w + 48));
            a0c01 = _mm256_add_epi32(a0c01, _mm256_madd_epi16(v0, w01));
            a0c23 = _mm256_add_epi32(a0c23, _mm256_madd_epi16(v0, w23));
            a0c45 = _mm256_add_epi32(a0c45, _mm256_madd_epi16(v0, w45));
            a0c67 = _mm256_add_epi32(a0c67, _mm256_madd_epi16(v0, w67));
            a1c01 = _mm256_add_epi32(a1c01, _mm256_madd_epi16(v1, w01));
            a1c23 = _mm256_add_epi32(a1c23, _mm256_madd_epi16(v1, w23));
            a1c45 = _mm256_add_epi32(a1c45, _mm256_madd_epi16(v1, w45));
            a1c67 = _mm256_add_epi32(a1c67, _mm256_madd_epi16(v1, w67));
            a2c01 = _mm256_add_epi32(a2c01, _mm256_madd_epi16(v2, w01));
            a2c23 = _mm256_add_epi32(a2c23, _mm256_madd_epi16(v2, w23));
            a2c45 = _mm256_add_epi32(a2c45, _mm256_madd_epi16(v2, w45));
            a2c67 = _mm256_add_epi32(a2c67, _mm256_madd_epi16(v2, w67));
            w += 64;
        }
    }
    _mm256_storeu_si256((__m256i*)c, _mm256_add_epi32(
        _mm256_loadu_si256((const __m256i*)init), qg_avx2_reduce(a0c01, a0c23, a0c45, a0c67)));
    _mm256_storeu_si256((__m256i*)(c + c_stride), _mm256_add_epi32(
        _mm256_loadu_si256((const __m256i*)(init + init_stride)),
        qg_avx2_reduce(a1c01, a1c23, a1c45, a1c67)));
    _mm256_storeu_si256((__m256i*)(c + 2 * c_stride), _mm256_add_epi32(
        _mm256_loadu_si256((const __m256i*)(init + 2 * init_stride)),
        qg_avx2_reduce(a2c01, a2c23, a2c45, a2c67)));
}

/* ---- SSE2: 2 x 4, 8-deep --------------------------------------------------------------------- */
#elif defined(__SSE2__)

/* Sign-extend the low 8 int8 of v to int16 (SSE2 has no pmovsxbw). */
static inline __m128i qg_sse2_lo16(__m128i v) { return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8); }

/* The four channel sums of 4 accumulators of 4 partial sums each, in order. */
static inline __m128i qg_sse2_reduce(__m128i a0, __m128i a1, __m128i a2, __m128i a3)
{
    const __m128i t0 = _mm_add_epi32(_mm_unpacklo_epi32(a0, a1), _mm_unpackhi_epi32(a0, a1));
    const __m128i t1 = _mm_add_epi32(_mm_unpacklo_epi32(a2, a3), _mm_unpackhi_epi32(a2, a3));
    return _mm_add_epi32(_mm_unpacklo_epi64(t0, t1), _mm_unpackhi_epi64(t0, t1));
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 8, rem = cin % 8;
    __m128i a00 = _mm_setzero_si128(), a01 = a00, a02 = a00, a03 = a00;
    __m128i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x0 = a[2 * t];
        const int8_t* x1 = a[2 * t + 1];
        for (size_t k = 0; k <= full; k++) {
            __m128i v0, v1;
            if (k < full) {
                v0 = qg_sse2_lo16(_mm_loadl_epi64((const __m128i*)(x0 + 8 * k)));
                v1 = qg_sse2_lo16(_mm_loadl_epi64((const __m128i*)(x1 + 8 * k)));
            } else if (rem) {
                int8_t t0[8], t1[8];
                qg_tail(t0, x0 + 8 * full, rem);
                qg_tail(t1, x1 + 8 * full, rem);
                v0 = qg_sse2_lo16(_mm_loadl_epi64((const __m128i*)t0));
                v1 = qg_sse2_lo16(_mm_loadl_epi64((const __m128i*)t1));
            } else {
                break;
            }
            const __m128i w0 = _mm_loadu_si128((const __m128i*)w);
            const __m128i w1 = _mm_loadu_si128((const __m128i*)(w + 8));
            const __m128i w2 = _mm_loadu_si128((const __m128i*)(w + 16));
            const __m128i w3 = _mm_loadu_si128((const __m128i*)(w + 24));
            a00 = _mm_add_epi32(a00, _mm_madd_epi16(v0, w0));
            a01 = _mm_add_epi32(a01, _mm_madd_epi16(v0, w1));
            a02 = _mm_add_epi32(a02, _mm_madd_epi16(v0, w2));
            a03 = _mm_add_epi32(a03, _mm_madd_epi16(v0, w3));
            a10 = _mm_add_epi32(a10, _mm_madd_epi16(v1, w0));
            a11 = _mm_add_epi32(a11, _mm_madd_epi16(v1, w1));
            a12 = _mm_add_epi32(a12, _mm_madd_epi16(v1, w2));
            a13 = _mm_add_epi32(a13, _mm_madd_epi16(v1, w3));
            w += 32;
        }
    }
    _mm_storeu_si128((__m128i*)c, _mm_add_epi32(_mm_loadu_si128((const __m128i*)init),
                                                qg_sse2_reduce(a00, a01, a02, a03)));
    _mm_storeu_si128((__m128i*)(c + c_stride), _mm_add_epi32(
        _mm_loadu_si128((const __m128i*)(init + init_stride)), qg_sse2_reduce(a10, a11, a12, a13)));
}

/* ---- aarch64 with dot product: 4 x 16, 4-deep -------------------------------------------------- */
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)

static inline int8x16_t qg_dup4(const int8_t* p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 4, rem = cin % 4;
    int32x4_t acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++)
            acc[r][q] = vld1q_s32(init + r * init_stride + 4 * q);
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x[4] = {a[4 * t], a[4 * t + 1], a[4 * t + 2], a[4 * t + 3]};
        for (size_t k = 0; k <= full; k++) {
            int8x16_t v[4];
            if (k < full) {
                for (int r = 0; r < 4; r++)
                    v[r] = qg_dup4(x[r] + 4 * k);
            } else if (rem) {
                int8_t tmp[4];
                for (int r = 0; r < 4; r++) {
                    qg_tail(tmp, x[r] + 4 * full, rem);
                    v[r] = qg_dup4(tmp);
                }
            } else {
                break;
            }
            const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
            const int8x16_t w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
            for (int r = 0; r < 4; r++) {
                acc[r][0] = vdotq_s32(acc[r][0], w0, v[r]);
                acc[r][1] = vdotq_s32(acc[r][1], w1, v[r]);
                acc[r][2] = vdotq_s32(acc[r][2], w2, v[r]);
                acc[r][3] = vdotq_s32(acc[r][3], w3, v[r]);
            }
            w += 64;
        }
    }
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++)
            vst1q_s32(c + r * c_stride + 4 * q, acc[r][q]);
}

/* ---- aarch64 without dot product: 2 x 4, 16-deep ----------------------------------------------- */
#elif defined(__aarch64__)

/* Two int8 products summed in int16 (smull + smlal) cannot overflow: weights are never -128
   (the quantizer's symmetric range, checked when packing), so |x * w| <= 128 * 127 and the sum
   of two is at most 32512. The int16 sums are then added pairwise into int32 (sadalp). */
static inline int32x4_t qg_mlal(int32x4_t acc, int8x16_t x, int8x16_t w)
{
    int16x8_t p = vmull_s8(vget_low_s8(x), vget_low_s8(w));
    p = vmlal_s8(p, vget_high_s8(x), vget_high_s8(w));
    return vpadalq_s16(acc, p);
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 16, rem = cin % 16;
    int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a02 = a00, a03 = a00;
    int32x4_t a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x0 = a[2 * t];
        const int8_t* x1 = a[2 * t + 1];
        for (size_t k = 0; k <= full; k++) {
            int8x16_t v0, v1;
            if (k < full) {
                v0 = vld1q_s8(x0 + 16 * k);
                v1 = vld1q_s8(x1 + 16 * k);
            } else if (rem) {
                int8_t t0[16], t1[16];
                qg_tail(t0, x0 + 16 * full, rem);
                qg_tail(t1, x1 + 16 * full, rem);
                v0 = vld1q_s8(t0);
                v1 = vld1q_s8(t1);
            } else {
                break;
            }
            const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
            const int8x16_t w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
            a00 = qg_mlal(a00, v0, w0);
            a01 = qg_mlal(a01, v0, w1);
            a02 = qg_mlal(a02, v0, w2);
            a03 = qg_mlal(a03, v0, w3);
            a10 = qg_mlal(a10, v1, w0);
            a11 = qg_mlal(a11, v1, w1);
            a12 = qg_mlal(a12, v1, w2);
            a13 = qg_mlal(a13, v1, w3);
            w += 64;
        }
    }
    /* channel sums in order: pairwise adds of the 4 partial sums of each channel */
    const int32x4_t s0 = vpaddq_s32(vpaddq_s32(a00, a01), vpaddq_s32(a02, a03));
    const int32x4_t s1 = vpaddq_s32(vpaddq_s32(a10, a11), vpaddq_s32(a12, a13));
    vst1q_s32(c, vaddq_s32(vld1q_s32(init), s0));
    vst1q_s32(c + c_stride, vaddq_s32(vld1q_s32(init + init_stride), s1));
}

/* ---- no SIMD kernel for this target: the scalar twin is the kernel ---------------------------- */
#else

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    qg_tile_scalar(taps, cin, a, wv, init, init_stride, c, c_stride);
}

#endif

/* ---- requantization of the rows of a tile (the tile epilogue) ---------------------------------
 * out[j] = clamp(out_zp + multiply_by_quantized_multiplier(acc[j], m0[j], shift[j])) for j < n of each row,
 * with the per-channel constants of fixedpoint.requant_constants (left = max(shift, 0),
 * nudge, neg_adjust, total_shift): the same integer steps as fixedpoint.requantize_block_left
 * (requantize_block when no shift is positive), in 64-bit vector lanes. Only the AVX-512
 * builds have it (QG_SIMD_REQUANT); elsewhere _conv.pyx calls the fixedpoint block loops. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && QG_NR == 16
#define QG_SIMD_REQUANT 1
/* The rows r < mr of a tile: out + r * out_stride from acc + r * acc_stride, n channels from
   m0 + 0 etc. Each group of 8 channels' constants is loaded once for all rows of the tile. */
static inline void qg_requant_tile(const int32_t* acc, size_t acc_stride, size_t mr, size_t n,
                                   const int32_t* m0, const int32_t* left, const int64_t* nudge,
                                   const int64_t* neg_adjust, const int64_t* total_shift,
                                   int any_left, int32_t out_zp, int32_t act_min,
                                   int32_t act_max, int8_t* out, size_t out_stride)
{
    const __m512i lo = _mm512_set1_epi64((int64_t)act_min - out_zp);
    const __m512i hi = _mm512_set1_epi64((int64_t)act_max - out_zp);
    const __m512i zp = _mm512_set1_epi64(out_zp);
    const __m512i half = _mm512_set1_epi64((int64_t)1 << 30);
    for (size_t c = 0; c < n; c += 8) {
        const size_t left_n = n - c;
        const __mmask8 m = left_n >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left_n) - 1);
        const __m512i lsh = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, left + c));
        const __m512i mult = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, m0 + c));
        const __m512i ndg = _mm512_maskz_loadu_epi64(m, nudge + c);
        const __m512i nadj = _mm512_maskz_loadu_epi64(m, neg_adjust + c);
        const __m512i tsh = _mm512_maskz_loadu_epi64(m, total_shift + c);
        for (size_t r = 0; r < mr; r++) {
            __m512i x = _mm512_cvtepi32_epi64(
                _mm256_maskz_loadu_epi32(m, acc + r * acc_stride + c));
            if (any_left) {
                x = _mm512_sllv_epi64(x, lsh);
                x = _mm512_min_epi64(_mm512_max_epi64(x, _mm512_set1_epi64(INT32_MIN)),
                                     _mm512_set1_epi64(INT32_MAX));
            }
            const __m512i u = _mm512_add_epi64(_mm512_mul_epi32(x, mult), half);
            __m512i v = _mm512_add_epi64(u, ndg);
            v = _mm512_sub_epi64(v, _mm512_and_si512(_mm512_srai_epi64(u, 63), nadj));
            v = _mm512_srav_epi64(v, tsh);
            v = _mm512_min_epi64(_mm512_max_epi64(v, lo), hi);
            const __m128i b = _mm512_cvtepi64_epi8(_mm512_add_epi64(v, zp));
            int8_t* o = out + r * out_stride + c;
            if (m == 0xFF)
                _mm_storel_epi64((__m128i*)o, b);
            else
                _mm_mask_storeu_epi8(o, (__mmask16)m, b);
        }
    }
}

#else
#define QG_SIMD_REQUANT 0
static inline void qg_requant_tile(const int32_t* acc, size_t acc_stride, size_t mr, size_t n,
                                   const int32_t* m0, const int32_t* left, const int64_t* nudge,
                                   const int64_t* neg_adjust, const int64_t* total_shift,
                                   int any_left, int32_t out_zp, int32_t act_min,
                                   int32_t act_max, int8_t* out, size_t out_stride)
{
    /* never called either */
    (void)acc; (void)acc_stride; (void)mr; (void)n; (void)m0; (void)left; (void)nudge;
    (void)neg_adjust; (void)total_shift; (void)any_left; (void)out_zp; (void)act_min;
    (void)act_max; (void)out; (void)out_stride;
}
#endif

#endif /* FIXNET_QGEMM_H */

/* Max pooling of int8 and int16 NHWC (fixnet/_kernels/_pool.pyx): the maximum over a window
 * of pixels. Exact (a max), so every form below gives the same bits.
 *
 * A whole window of at most MP_TILE (9) pixels (every pixel of a 2 x 2 or 3 x 3 pool away from
 * the edges): its pixels lie at offsets from its first one that are the same for every output
 * pixel (mp_window_offsets, once per call), and one pass walks the channels a vector at a time,
 * loading the vector at every offset and storing their max (mp_pixel_tile: 4 loads for a
 * window of up to 4 pixels, else 9; the offsets are padded with 0, a repeat of the first
 * pixel: a max is idempotent). No loop over the window inside the channel loop: its cost does
 * not depend on where the compiler puts a three-iteration loop.
 * Any other window (clipped at an edge, or larger): mp_pixel, per vector of channels a loop
 * over the window's rows and columns.
 * The channels past the last whole vector: the scalar twins, over the same pixels.
 * int8: 16 channels a vector (pmaxsb on SSE4.1 / AVX2; SSE2 has only the unsigned pmaxub, so
 * there the bytes are flipped to unsigned order with xor 0x80 and back; smax on NEON).
 * int16: 8 channels a vector (pmaxsw, which SSE2 has; smax on NEON). */
#ifndef FIXNET_MAXPOOL_H
#define FIXNET_MAXPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MP_TILE 9           /* offsets of a window pass: a 3 x 3 window */
#define MP_SMALL 4          /* the pass of a window of at most 4 pixels reads 4 */

#if defined(__SSE4_1__)
#include <smmintrin.h>
typedef __m128i mp_vec;
#define MP_LOAD(p) _mm_loadu_si128((const __m128i*)(p))
#define MP_STORE(p, v) _mm_storeu_si128((__m128i*)(p), (v))
#define MP_MAX(a, b) _mm_max_epi8((a), (b))
#elif defined(__SSE2__)
#include <emmintrin.h>
typedef __m128i mp_vec;
#define MP_LOAD(p) _mm_xor_si128(_mm_loadu_si128((const __m128i*)(p)), _mm_set1_epi8((char)0x80))
#define MP_STORE(p, v) _mm_storeu_si128((__m128i*)(p), _mm_xor_si128((v), _mm_set1_epi8((char)0x80)))
#define MP_MAX(a, b) _mm_max_epu8((a), (b))
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
typedef int8x16_t mp_vec;
#define MP_LOAD(p) vld1q_s8(p)
#define MP_STORE(p, v) vst1q_s8((p), (v))
#define MP_MAX(a, b) vmaxq_s8((a), (b))
#endif

#if defined(__SSE2__)
typedef __m128i mp16_vec;
#define MP16_LOAD(p) _mm_loadu_si128((const __m128i*)(p))
#define MP16_STORE(p, v) _mm_storeu_si128((__m128i*)(p), (v))
#define MP16_MAX(a, b) _mm_max_epi16((a), (b))
#elif defined(__aarch64__) && defined(__ARM_NEON)
typedef int16x8_t mp16_vec;
#define MP16_LOAD(p) vld1q_s16(p)
#define MP16_STORE(p, v) vst1q_s16((p), (v))
#define MP16_MAX(a, b) vmaxq_s16((a), (b))
#endif

#define MP_MAX2(a, b) ((a) > (b) ? (a) : (b))

/* The scalar twin of a pass: dst[i] = max over j < k of p[j][i] for i in [i0, c). dst may be
   p[0] (each element is read before it is written). */
#define MP_SCALAR_PASS(T, dst, p, k, i0, c) do {                                            \
        ptrdiff_t i_, j_;                                                                   \
        for (i_ = (i0); i_ < (c); i_++) {                                                   \
            T m_ = (p)[0][i_];                                                              \
            for (j_ = 1; j_ < (k); j_++)                                                    \
                m_ = MP_MAX2((p)[j_][i_], m_);                                              \
            (dst)[i_] = m_;                                                                 \
        }                                                                                   \
    } while (0)

/* off[j] = the offset of window pixel j (row-major) from the window's first pixel, for a
   pool_h x pool_w window (pool_h * pool_w <= MP_TILE) in rows of row_len elements and pixels
   of c; off[j] = 0 for j >= pool_h * pool_w (a repeat of the first pixel). */
static inline void mp_window_offsets(ptrdiff_t* off, ptrdiff_t pool_h, ptrdiff_t pool_w,
                                     ptrdiff_t row_len, ptrdiff_t c)
{
    ptrdiff_t j;
    for (j = 0; j < MP_TILE; j++)
        off[j] = j < pool_h * pool_w ? (j / pool_w) * row_len + (j % pool_w) * c : 0;
}

/* ---- int8 ---------------------------------------------------------------------------------- */

/* dst[i] = max over (h, w) in [h0, h1) x [w0, w1) of src[h * row_len + w * c + i] for i < n
   (the window is not empty); src points at channel 0 of the chunk in pixel (0, 0). */
static inline void mp_chunk(int8_t* dst, const int8_t* src, ptrdiff_t row_len, ptrdiff_t c,
                            ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1, ptrdiff_t n)
{
    ptrdiff_t h, w, i;
#if defined(MP_LOAD)
    if (n == 16) {
        mp_vec acc = MP_LOAD(src + h0 * row_len + w0 * c);
        for (h = h0; h < h1; h++)
            for (w = w0; w < w1; w++)
                acc = MP_MAX(acc, MP_LOAD(src + h * row_len + w * c));
        MP_STORE(dst, acc);
        return;
    }
#endif
    {
        int8_t acc[16];
        memcpy(acc, src + h0 * row_len + w0 * c, (size_t)n);
        for (h = h0; h < h1; h++)
            for (w = w0; w < w1; w++) {
                const int8_t* p = src + h * row_len + w * c;
                for (i = 0; i < n; i++)
                    acc[i] = p[i] > acc[i] ? p[i] : acc[i];
            }
        memcpy(dst, acc, (size_t)n);
    }
}

/* One output pixel's c channels: full chunks of 16, then the rest. */
static inline void mp_pixel(int8_t* dst, const int8_t* image, ptrdiff_t row_len, ptrdiff_t c,
                            ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1)
{
    ptrdiff_t c0 = 0;
    for (; c0 + 16 <= c; c0 += 16)
        mp_chunk(dst + c0, image + c0, row_len, c, h0, h1, w0, w1, 16);
    if (c0 < c)
        mp_chunk(dst + c0, image + c0, row_len, c, h0, h1, w0, w1, c - c0);
}

/* dst[i] = max over j < MP_TILE of p[j][i], i < c. */
static inline void mp_pass9(int8_t* dst, const int8_t* const* p, ptrdiff_t c)
{
    ptrdiff_t i = 0;
#if defined(MP_LOAD)
    const int8_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
    const int8_t *p6 = p[6], *p7 = p[7], *p8 = p[8];
    for (; i + 16 <= c; i += 16) {
        const mp_vec a = MP_MAX(MP_LOAD(p0 + i), MP_LOAD(p1 + i));
        const mp_vec b = MP_MAX(MP_LOAD(p2 + i), MP_LOAD(p3 + i));
        const mp_vec d = MP_MAX(MP_LOAD(p4 + i), MP_LOAD(p5 + i));
        const mp_vec e = MP_MAX(MP_LOAD(p6 + i), MP_LOAD(p7 + i));
        MP_STORE(dst + i, MP_MAX(MP_MAX(MP_MAX(a, b), MP_MAX(d, e)), MP_LOAD(p8 + i)));
    }
#endif
    MP_SCALAR_PASS(int8_t, dst, p, MP_TILE, i, c);
}

/* dst[i] = max over j < MP_SMALL of p[j][i], i < c. */
static inline void mp_pass4(int8_t* dst, const int8_t* const* p, ptrdiff_t c)
{
    ptrdiff_t i = 0;
#if defined(MP_LOAD)
    const int8_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
    for (; i + 16 <= c; i += 16)
        MP_STORE(dst + i, MP_MAX(MP_MAX(MP_LOAD(p0 + i), MP_LOAD(p1 + i)),
                                 MP_MAX(MP_LOAD(p2 + i), MP_LOAD(p3 + i))));
#endif
    MP_SCALAR_PASS(int8_t, dst, p, MP_SMALL, i, c);
}

/* One output pixel whose window is whole: dst[i] = max over j < n of base[off[j] + i], i < c
   (n = pool_h * pool_w <= MP_TILE, off from mp_window_offsets). */
static inline void mp_pixel_tile(int8_t* dst, const int8_t* base, const ptrdiff_t* off,
                                 ptrdiff_t n, ptrdiff_t c)
{
    const int8_t* p[MP_TILE] = {base + off[0], base + off[1], base + off[2], base + off[3],
                                base + off[4], base + off[5], base + off[6], base + off[7],
                                base + off[8]};
    if (n <= MP_SMALL)
        mp_pass4(dst, p, c);
    else
        mp_pass9(dst, p, c);
}

/* ---- int16 --------------------------------------------------------------------------------- */

/* mp_chunk on int16 (8 channels a vector): dst[i] = max over the window of
   src[h * row_len + w * c + i] for i < n <= 8, row_len and c counted in int16 elements. */
static inline void mp_chunk16(int16_t* dst, const int16_t* src, ptrdiff_t row_len, ptrdiff_t c,
                              ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1, ptrdiff_t n)
{
    ptrdiff_t h, w, i;
#if defined(MP16_LOAD)
    if (n == 8) {
        mp16_vec acc = MP16_LOAD(src + h0 * row_len + w0 * c);
        for (h = h0; h < h1; h++)
            for (w = w0; w < w1; w++)
                acc = MP16_MAX(acc, MP16_LOAD(src + h * row_len + w * c));
        MP16_STORE(dst, acc);
        return;
    }
#endif
    {
        int16_t acc[8];
        memcpy(acc, src + h0 * row_len + w0 * c, (size_t)n * sizeof(int16_t));
        for (h = h0; h < h1; h++)
            for (w = w0; w < w1; w++) {
                const int16_t* p = src + h * row_len + w * c;
                for (i = 0; i < n; i++)
                    acc[i] = p[i] > acc[i] ? p[i] : acc[i];
            }
        memcpy(dst, acc, (size_t)n * sizeof(int16_t));
    }
}

/* One output pixel's c int16 channels: full chunks of 8, then the rest. */
static inline void mp_pixel16(int16_t* dst, const int16_t* image, ptrdiff_t row_len, ptrdiff_t c,
                              ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0, ptrdiff_t w1)
{
    ptrdiff_t c0 = 0;
    for (; c0 + 8 <= c; c0 += 8)
        mp_chunk16(dst + c0, image + c0, row_len, c, h0, h1, w0, w1, 8);
    if (c0 < c)
        mp_chunk16(dst + c0, image + c0, row_len, c, h0, h1, w0, w1, c - c0);
}

static inline void mp_pass9_16(int16_t* dst, const int16_t* const* p, ptrdiff_t c)
{
    ptrdiff_t i = 0;
#if defined(MP16_LOAD)
    const int16_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
    const int16_t *p6 = p[6], *p7 = p[7], *p8 = p[8];
    for (; i + 8 <= c; i += 8) {
        const mp16_vec a = MP16_MAX(MP16_LOAD(p0 + i), MP16_LOAD(p1 + i));
        const mp16_vec b = MP16_MAX(MP16_LOAD(p2 + i), MP16_LOAD(p3 + i));
        const mp16_vec d = MP16_MAX(MP16_LOAD(p4 + i), MP16_LOAD(p5 + i));
        const mp16_vec e = MP16_MAX(MP16_LOAD(p6 + i), MP16_LOAD(p7 + i));
        MP16_STORE(dst + i, MP16_MAX(MP16_MAX(MP16_MAX(a, b), MP16_MAX(d, e)),
                                     MP16_LOAD(p8 + i)));
    }
#endif
    MP_SCALAR_PASS(int16_t, dst, p, MP_TILE, i, c);
}

static inline void mp_pass4_16(int16_t* dst, const int16_t* const* p, ptrdiff_t c)
{
    ptrdiff_t i = 0;
#if defined(MP16_LOAD)
    const int16_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
    for (; i + 8 <= c; i += 8)
        MP16_STORE(dst + i, MP16_MAX(MP16_MAX(MP16_LOAD(p0 + i), MP16_LOAD(p1 + i)),
                                     MP16_MAX(MP16_LOAD(p2 + i), MP16_LOAD(p3 + i))));
#endif
    MP_SCALAR_PASS(int16_t, dst, p, MP_SMALL, i, c);
}

/* mp_pixel_tile on int16 (offsets counted in int16 elements). */
static inline void mp_pixel_tile16(int16_t* dst, const int16_t* base, const ptrdiff_t* off,
                                   ptrdiff_t n, ptrdiff_t c)
{
    const int16_t* p[MP_TILE] = {base + off[0], base + off[1], base + off[2], base + off[3],
                                 base + off[4], base + off[5], base + off[6], base + off[7],
                                 base + off[8]};
    if (n <= MP_SMALL)
        mp_pass4_16(dst, p, c);
    else
        mp_pass9_16(dst, p, c);
}

#endif /* FIXNET_MAXPOOL_H */

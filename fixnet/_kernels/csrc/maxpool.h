/* Max pooling of int8 and int16 NHWC (fixnet/_kernels/_pool.pyx): the maximum over a window
 * of pixels, one vector register of channels at a time, a partial chunk through a buffer
 * (the scalar twin); plain C elsewhere. Exact (a max).
 * int8: 16 channels (pmaxsb on SSE4.1 / AVX2; SSE2 has only the unsigned pmaxub, so there the
 * bytes are flipped to unsigned order with xor 0x80 and back; smax on NEON).
 * int16: 8 channels (pmaxsw, which SSE2 has; smax on NEON). */
#ifndef FIXNET_MAXPOOL_H
#define FIXNET_MAXPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE4_1__)
#include <smmintrin.h>
typedef __m128i mp_vec;
#define MP_LOAD(p) _mm_loadu_si128((const __m128i*)(p))
#define MP_STORE(p, v) _mm_storeu_si128((__m128i*)(p), (v))
#define MP_MAX(a, b) _mm_max_epi8((a), (b))
#define MP_FROM(v) (v)
#define MP_TO(v) (v)
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

/* ---- int16 ------------------------------------------------------------------------------ */

#if defined(__SSE2__)
#include <emmintrin.h>
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

#endif /* FIXNET_MAXPOOL_H */

/* The int16-activation GEMM micro-kernels, SSE2 (the x86-64 baseline): 2 x 4 tile, K in steps
 * of 8, pmaddwd on int16 weights.
 * Included by qgemm16.h (which defines the tile macros and the packing it reads); see there.
 *
 * int8's SSE2 tile (qgemm_sse2.h) without its widening of the activations: per 8 input
 * channels, one 16-byte load of each row (8 int16 as they are) and of each channel's 8 weights
 * (int16 since packing), 8 pmaddwd into 4 partial sums per row and channel, added across
 * lanes at the end (qg_sse2_reduce). The K tail (Cin % 8 values) goes through a zero-filled
 * copy, never past the row. SSE2 has no vector form of the requantization (requant_x86.h):
 * the epilogue is the scalar rule on the int32 tile.
 */
#ifndef FIXNET_QGEMM16_SSE2_H
#define FIXNET_QGEMM16_SSE2_H

/* The last n < 8 values of a row, zero-filled to 8. */
static inline __m128i q16_sse2_tail(const int16_t* x, size_t n)
{
    int16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(t, x, n * sizeof(int16_t));
    return _mm_loadu_si128((const __m128i*)t);
}

#define Q16_SSE2_MAC(acc, v, wj) acc = _mm_add_epi32(acc, _mm_madd_epi16(v, wj))

static inline void q16_tile(size_t taps, size_t cin, const int16_t** a, const void* wv,
                            const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const int16_t* w = (const int16_t*)wv;
    const size_t full = cin / 8, rem = cin % 8;
    __m128i a00 = _mm_setzero_si128(), a01 = a00, a02 = a00, a03 = a00;
    __m128i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x0 = a[2 * t];
        const int16_t* x1 = a[2 * t + 1];
        for (size_t k = 0; k <= full; k++) {
            __m128i v0, v1, w0, w1, w2, w3;
            if (k < full) {
                v0 = _mm_loadu_si128((const __m128i*)(x0 + 8 * k));
                v1 = _mm_loadu_si128((const __m128i*)(x1 + 8 * k));
            } else if (rem) {
                v0 = q16_sse2_tail(x0 + 8 * full, rem);
                v1 = q16_sse2_tail(x1 + 8 * full, rem);
            } else {
                break;
            }
            w0 = _mm_loadu_si128((const __m128i*)w);
            w1 = _mm_loadu_si128((const __m128i*)(w + 8));
            w2 = _mm_loadu_si128((const __m128i*)(w + 16));
            w3 = _mm_loadu_si128((const __m128i*)(w + 24));
            Q16_SSE2_MAC(a00, v0, w0);
            Q16_SSE2_MAC(a01, v0, w1);
            Q16_SSE2_MAC(a02, v0, w2);
            Q16_SSE2_MAC(a03, v0, w3);
            Q16_SSE2_MAC(a10, v1, w0);
            Q16_SSE2_MAC(a11, v1, w1);
            Q16_SSE2_MAC(a12, v1, w2);
            Q16_SSE2_MAC(a13, v1, w3);
            w += 32;
        }
    }
    _mm_storeu_si128((__m128i*)c, _mm_add_epi32(_mm_loadu_si128((const __m128i*)init),
                                                qg_sse2_reduce(a00, a01, a02, a03)));
    _mm_storeu_si128((__m128i*)(c + c_stride), _mm_add_epi32(
        _mm_loadu_si128((const __m128i*)(init + init_stride)), qg_sse2_reduce(a10, a11, a12, a13)));
}

/* One row x 4 channels (dense at batch 1): the tile's loop for a single row, then the rule. */
#define Q16_HAVE_ROW_Q16 1
static inline void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                               size_t nc, const fx_requant* q, size_t c0, int16_t* out)
{
    const int16_t* w = (const int16_t*)((const int8_t*)block + Q16_NR * sizeof(int32_t));
    const size_t full = cin / 8, rem = cin % 8;
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    int32_t acc[Q16_NR];
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x = a[t];
        for (size_t k = 0; k <= full; k++) {
            __m128i v;
            if (k < full)
                v = _mm_loadu_si128((const __m128i*)(x + 8 * k));
            else if (rem)
                v = q16_sse2_tail(x + 8 * full, rem);
            else
                break;
            Q16_SSE2_MAC(a0, v, _mm_loadu_si128((const __m128i*)w));
            Q16_SSE2_MAC(a1, v, _mm_loadu_si128((const __m128i*)(w + 8)));
            Q16_SSE2_MAC(a2, v, _mm_loadu_si128((const __m128i*)(w + 16)));
            Q16_SSE2_MAC(a3, v, _mm_loadu_si128((const __m128i*)(w + 24)));
            w += 32;
        }
    }
    _mm_storeu_si128((__m128i*)acc, _mm_add_epi32(_mm_loadu_si128((const __m128i*)block),
                                                  qg_sse2_reduce(a0, a1, a2, a3)));
    q16_requant_rows_scalar(acc, Q16_NR, 1, nc, q, c0, out, 0);
}

#endif /* FIXNET_QGEMM16_SSE2_H */

/* conv2d's GEMM micro-kernel, SSE2 (the x86-64 baseline): 2 x 4 tile, K in steps of 8, pmaddwd on int16 weights.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there. */
#ifndef FIXNET_QGEMM_SSE2_H
#define FIXNET_QGEMM_SSE2_H

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

/* One row (qgemm.h's qg_row_q8): 4 accumulators of one row, then requant.h's epilogue. */
#define QG_HAVE_ROW_Q8 1
static inline void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const qg_w_t* w = (const qg_w_t*)((const int8_t*)block + QG_NR * sizeof(int32_t));
    const size_t full = cin / 8, rem = cin % 8;
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    int32_t acc[QG_NR];
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x = a[t];
        for (size_t k = 0; k <= full; k++) {
            __m128i v;
            if (k < full) {
                v = qg_sse2_lo16(_mm_loadl_epi64((const __m128i*)(x + 8 * k)));
            } else if (rem) {
                int8_t tail[8];
                qg_tail(tail, x + 8 * full, rem);
                v = qg_sse2_lo16(_mm_loadl_epi64((const __m128i*)tail));
            } else {
                break;
            }
            a0 = _mm_add_epi32(a0, _mm_madd_epi16(v, _mm_loadu_si128((const __m128i*)w)));
            a1 = _mm_add_epi32(a1, _mm_madd_epi16(v, _mm_loadu_si128((const __m128i*)(w + 8))));
            a2 = _mm_add_epi32(a2, _mm_madd_epi16(v, _mm_loadu_si128((const __m128i*)(w + 16))));
            a3 = _mm_add_epi32(a3, _mm_madd_epi16(v, _mm_loadu_si128((const __m128i*)(w + 24))));
            w += 32;
        }
    }
    _mm_storeu_si128((__m128i*)acc, _mm_add_epi32(_mm_loadu_si128((const __m128i*)block),
                                                  qg_sse2_reduce(a0, a1, a2, a3)));
    fx_requant_rows(acc, QG_NR, 1, nc, q, c0, out, 0);
}

#endif /* FIXNET_QGEMM_SSE2_H */

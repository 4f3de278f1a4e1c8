/* conv2d's GEMM micro-kernel, AVX2: 3 x 8 tile, K in steps of 8, vpmovsxbw + vpmaddwd on int16 weights.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there. */
#ifndef FIXNET_QGEMM_AVX2_H
#define FIXNET_QGEMM_AVX2_H

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

#endif /* FIXNET_QGEMM_AVX2_H */

/* The int16-activation GEMM micro-kernels, AVX2 (and the AVX-512 VNNI build, compiled with its
 * flags): 4 x 8 tile, K in pairs ("c2"), int8 weights.
 * Included by qgemm16.h (which defines the tile macros and the packing it reads); see there.
 *
 * Channels in the 8 int32 lanes of one accumulator per row: per pair of input channels, one
 * load of the block's 16 weights (8 channels x 2) widened by vpmovsxbw, and per row one
 * vpbroadcastd of the pair straight from the int16 row (no widening of activations: that is
 * what int16 buys on this ISA), one vpmaddwd, one vpaddd. No horizontal sum at the end: the
 * accumulators are the channels in order, requantized on the registers. With int8 weights
 * widened in the loop, a GEMV (dense at batch 1) streams as many weight bytes as int8's.
 * An odd Cin ends with a pair of its last value and 0 (read as 16 bits: never past the row),
 * against the zero weight of the packing.
 */
#ifndef FIXNET_QGEMM16_AVX2_H
#define FIXNET_QGEMM16_AVX2_H

#define Q16_INLINE static inline __attribute__((always_inline))

/* The pair of int16 at p, broadcast to the 8 lanes (one vpbroadcastd from memory). */
Q16_INLINE __m256i q16_pair(const int16_t* p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* The last value of a row of odd length with 0 as its pair's second value, broadcast. */
Q16_INLINE __m256i q16_last(const int16_t* p)
{
    return _mm256_set1_epi32((int32_t)(uint16_t)*p);
}

/* 16 int8 weights (8 channels x 2 input channels) widened to int16. */
#define Q16_W(w) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w)))

#define Q16_MAC4(wv, v0, v1, v2, v3) do { \
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(v0, wv)); \
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(v1, wv)); \
        s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(v2, wv)); \
        s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(v3, wv)); \
    } while (0)

/* The 4 rows' sums over every tap, added to *s0 .. *s3: pairs two at a time in the loop, the
   last full pair and the odd value after it. */
Q16_INLINE void q16_avx2_sum4(size_t taps, size_t cin, const int16_t** a, const int8_t* w,
                              __m256i* r0, __m256i* r1, __m256i* r2, __m256i* r3)
{
    const size_t pairs = cin / 2, odd = cin & 1;
    __m256i s0 = *r0, s1 = *r1, s2 = *r2, s3 = *r3;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x0 = a[4 * t];
        const int16_t* x1 = a[4 * t + 1];
        const int16_t* x2 = a[4 * t + 2];
        const int16_t* x3 = a[4 * t + 3];
        size_t p = 0;
        for (; p + 2 <= pairs; p += 2, w += 32) {
            const __m256i wa = Q16_W(w), wb = Q16_W(w + 16);
            Q16_MAC4(wa, q16_pair(x0 + 2 * p), q16_pair(x1 + 2 * p), q16_pair(x2 + 2 * p),
                     q16_pair(x3 + 2 * p));
            Q16_MAC4(wb, q16_pair(x0 + 2 * p + 2), q16_pair(x1 + 2 * p + 2),
                     q16_pair(x2 + 2 * p + 2), q16_pair(x3 + 2 * p + 2));
        }
        if (p < pairs) {
            const __m256i wa = Q16_W(w);
            Q16_MAC4(wa, q16_pair(x0 + 2 * p), q16_pair(x1 + 2 * p), q16_pair(x2 + 2 * p),
                     q16_pair(x3 + 2 * p));
            w += 16;
        }
        if (odd) {
            const __m256i wa = Q16_W(w);
            Q16_MAC4(wa, q16_last(x0 + 2 * pairs), q16_last(x1 + 2 * pairs),
                     q16_last(x2 + 2 * pairs), q16_last(x3 + 2 * pairs));
            w += 16;
        }
    }
    *r0 = s0;
    *r1 = s1;
    *r2 = s2;
    *r3 = s3;
}

static inline void q16_tile(size_t taps, size_t cin, const int16_t** a, const void* wv,
                            const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    __m256i s0 = _mm256_loadu_si256((const __m256i*)init);
    __m256i s1 = _mm256_loadu_si256((const __m256i*)(init + init_stride));
    __m256i s2 = _mm256_loadu_si256((const __m256i*)(init + 2 * init_stride));
    __m256i s3 = _mm256_loadu_si256((const __m256i*)(init + 3 * init_stride));
    q16_avx2_sum4(taps, cin, a, (const int8_t*)wv, &s0, &s1, &s2, &s3);
    _mm256_storeu_si256((__m256i*)c, s0);
    _mm256_storeu_si256((__m256i*)(c + c_stride), s1);
    _mm256_storeu_si256((__m256i*)(c + 2 * c_stride), s2);
    _mm256_storeu_si256((__m256i*)(c + 3 * c_stride), s3);
}

/* Two rows of 8 requantized int32 to int16, clamped: [row a | row b] in the two 128-bit
   lanes. packs saturates to int16, exact because the bounds lie inside int16. */
Q16_INLINE __m256i q16_avx2_pack2(__m256i ya, __m256i yb, __m256i lo, __m256i hi)
{
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(ya, yb), 0xD8);
    return _mm256_min_epi16(_mm256_max_epi16(p, lo), hi);
}

/* Store the first n <= 8 int16 of v. */
Q16_INLINE void q16_avx2_store(int16_t* out, __m128i v, size_t n)
{
    if (n >= 8) {
        _mm_storeu_si128((__m128i*)out, v);
    } else {
        int16_t buf[8];
        _mm_storeu_si128((__m128i*)buf, v);
        memcpy(out, buf, n * sizeof(int16_t));
    }
}

#define Q16_HAVE_TILE_Q16 1
static inline void q16_tile_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                                size_t mr, size_t nc, const fx_requant* q, size_t c0,
                                int16_t* out, size_t out_stride)
{
    const int any_left = q->any_left;
    const __m256i lo = _mm256_set1_epi16((int16_t)q->act_min);
    const __m256i hi = _mm256_set1_epi16((int16_t)q->act_max);
    __m256i s0 = _mm256_loadu_si256((const __m256i*)block), s1 = s0, s2 = s0, s3 = s0;
    __m256i p01, p23;
    q16_avx2_sum4(taps, cin, a, (const int8_t*)block + 8 * sizeof(int32_t), &s0, &s1, &s2, &s3);
    p01 = q16_avx2_pack2(fx_mbqm8(s0, q, c0, any_left), fx_mbqm8(s1, q, c0, any_left), lo, hi);
    p23 = q16_avx2_pack2(fx_mbqm8(s2, q, c0, any_left), fx_mbqm8(s3, q, c0, any_left), lo, hi);
    q16_avx2_store(out, _mm256_castsi256_si128(p01), nc);
    if (mr > 1)
        q16_avx2_store(out + out_stride, _mm256_extracti128_si256(p01, 1), nc);
    if (mr > 2)
        q16_avx2_store(out + 2 * out_stride, _mm256_castsi256_si128(p23), nc);
    if (mr > 3)
        q16_avx2_store(out + 3 * out_stride, _mm256_extracti128_si256(p23, 1), nc);
}

/* One row x 8 channels: four accumulators over the pairs in turn (four independent chains of
   additions), summed at the end. */
#define Q16_HAVE_ROW_Q16 1
static inline void q16_row_q16(size_t taps, size_t cin, const int16_t** a, const void* block,
                               size_t nc, const fx_requant* q, size_t c0, int16_t* out)
{
    const size_t pairs = cin / 2, odd = cin & 1;
    const int8_t* w = (const int8_t*)block + 8 * sizeof(int32_t);
    __m256i s0 = _mm256_loadu_si256((const __m256i*)block);
    __m256i s1 = _mm256_setzero_si256(), s2 = s1, s3 = s1;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x = a[t];
        size_t p = 0;
        for (; p + 4 <= pairs; p += 4, w += 64) {
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(q16_pair(x + 2 * p), Q16_W(w)));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(q16_pair(x + 2 * p + 2), Q16_W(w + 16)));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(q16_pair(x + 2 * p + 4), Q16_W(w + 32)));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(q16_pair(x + 2 * p + 6), Q16_W(w + 48)));
        }
        for (; p < pairs; p++, w += 16)
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(q16_pair(x + 2 * p), Q16_W(w)));
        if (odd) {
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(q16_last(x + 2 * pairs), Q16_W(w)));
            w += 16;
        }
    }
    s0 = _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3));
    s0 = fx_mbqm8(s0, q, c0, q->any_left);
    {
        const __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(s0),
                                          _mm256_extracti128_si256(s0, 1));
        const __m128i v = _mm_min_epi16(_mm_max_epi16(p, _mm_set1_epi16((int16_t)q->act_min)),
                                        _mm_set1_epi16((int16_t)q->act_max));
        q16_avx2_store(out, v, nc);
    }
}

/* int32 rows in memory (the long-tap path): 8 channels at a time on fx_mbqm8. */
#define Q16_HAVE_REQUANT_ROWS 1
static inline void q16_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                    size_t n, const fx_requant* q, size_t c0, int16_t* out,
                                    size_t out_stride)
{
    const int any_left = q->any_left;
    const __m128i lo = _mm_set1_epi16((int16_t)q->act_min);
    const __m128i hi = _mm_set1_epi16((int16_t)q->act_max);
    for (size_t c = 0; c < n; c += 8) {
        const size_t m = n - c < 8 ? n - c : 8;
        for (size_t r = 0; r < rows; r++) {
            int32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            __m256i y;
            __m128i p;
            memcpy(buf, acc + r * acc_stride + c, m * sizeof(int32_t));
            y = fx_mbqm8(_mm256_loadu_si256((const __m256i*)buf), q, c0 + c, any_left);
            p = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
            q16_avx2_store(out + r * out_stride + c, _mm_min_epi16(_mm_max_epi16(p, lo), hi), m);
        }
    }
}

#endif /* FIXNET_QGEMM16_AVX2_H */

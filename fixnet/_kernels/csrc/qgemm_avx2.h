/* conv2d's GEMM micro-kernel, AVX2: 3 x 8 tile, K in steps of 8, vpmaddwd of the rows (widened
 * to int16 once per step) with the int16 weights read from memory (packed as int16: QG_W16).
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

/* The 12 accumulators of a 3 x 8 tile: row r, channel pair (2j, 2j + 1) in a{r}c{2j}{2j+1},
   4 partial sums of each channel per 128-bit half. */
typedef struct {
    __m256i a0c01, a0c23, a0c45, a0c67, a1c01, a1c23, a1c45, a1c67, a2c01, a2c23, a2c45, a2c67;
} qg_avx2_acc;

/* 16 int16 weights (two channels x 8 k). */
#define QG_AVX2_W(p) _mm256_loadu_si256((const __m256i*)(p))

/* One K step of 8: rows v0..v2 (qg_avx2_row) against the 8 x 8 int16 weights at w, one pair
   of channels at a time (each weight vector loaded where it is used). */
#define QG_AVX2_STEP(s, v0, v1, v2, w) do { \
        const __m256i v0_ = (v0), v1_ = (v1), v2_ = (v2); \
        (s).a0c01 = _mm256_add_epi32((s).a0c01, _mm256_madd_epi16(v0_, QG_AVX2_W(w))); \
        (s).a1c01 = _mm256_add_epi32((s).a1c01, _mm256_madd_epi16(v1_, QG_AVX2_W(w))); \
        (s).a2c01 = _mm256_add_epi32((s).a2c01, _mm256_madd_epi16(v2_, QG_AVX2_W(w))); \
        (s).a0c23 = _mm256_add_epi32((s).a0c23, _mm256_madd_epi16(v0_, QG_AVX2_W((w) + 16))); \
        (s).a1c23 = _mm256_add_epi32((s).a1c23, _mm256_madd_epi16(v1_, QG_AVX2_W((w) + 16))); \
        (s).a2c23 = _mm256_add_epi32((s).a2c23, _mm256_madd_epi16(v2_, QG_AVX2_W((w) + 16))); \
        (s).a0c45 = _mm256_add_epi32((s).a0c45, _mm256_madd_epi16(v0_, QG_AVX2_W((w) + 32))); \
        (s).a1c45 = _mm256_add_epi32((s).a1c45, _mm256_madd_epi16(v1_, QG_AVX2_W((w) + 32))); \
        (s).a2c45 = _mm256_add_epi32((s).a2c45, _mm256_madd_epi16(v2_, QG_AVX2_W((w) + 32))); \
        (s).a0c67 = _mm256_add_epi32((s).a0c67, _mm256_madd_epi16(v0_, QG_AVX2_W((w) + 48))); \
        (s).a1c67 = _mm256_add_epi32((s).a1c67, _mm256_madd_epi16(v1_, QG_AVX2_W((w) + 48))); \
        (s).a2c67 = _mm256_add_epi32((s).a2c67, _mm256_madd_epi16(v2_, QG_AVX2_W((w) + 48))); \
    } while (0)

/* Sum every tap of a 3 x 8 tile into s: full K steps in the loop, the tail (cin % 8 values,
   through zero-filled copies) after it. */
static inline __attribute__((always_inline)) void qg_avx2_sum(size_t taps, size_t cin, const int8_t** a, const qg_w_t* w,
                               qg_avx2_acc* acc)
{
    const size_t full = cin / 8, rem = cin % 8;
    qg_avx2_acc s;
    s.a0c01 = _mm256_setzero_si256();
    s.a0c23 = s.a0c45 = s.a0c67 = s.a0c01;
    s.a1c01 = s.a1c23 = s.a1c45 = s.a1c67 = s.a0c01;
    s.a2c01 = s.a2c23 = s.a2c45 = s.a2c67 = s.a0c01;
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x0 = a[3 * t];
        const int8_t* x1 = a[3 * t + 1];
        const int8_t* x2 = a[3 * t + 2];
        for (size_t k = 0; k < full; k++) {
            QG_AVX2_STEP(s, qg_avx2_row(x0 + 8 * k), qg_avx2_row(x1 + 8 * k),
                         qg_avx2_row(x2 + 8 * k), w);
            w += 64;
        }
        if (rem) {
            int8_t t0[8], t1[8], t2[8];
            qg_tail(t0, x0 + 8 * full, rem);
            qg_tail(t1, x1 + 8 * full, rem);
            qg_tail(t2, x2 + 8 * full, rem);
            QG_AVX2_STEP(s, qg_avx2_row(t0), qg_avx2_row(t1), qg_avx2_row(t2), w);
            w += 64;
        }
    }
    *acc = s;
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    qg_avx2_acc s;
    qg_avx2_sum(taps, cin, a, (const qg_w_t*)wv, &s);
    _mm256_storeu_si256((__m256i*)c, _mm256_add_epi32(
        _mm256_loadu_si256((const __m256i*)init), qg_avx2_reduce(s.a0c01, s.a0c23, s.a0c45, s.a0c67)));
    _mm256_storeu_si256((__m256i*)(c + c_stride), _mm256_add_epi32(
        _mm256_loadu_si256((const __m256i*)(init + init_stride)),
        qg_avx2_reduce(s.a1c01, s.a1c23, s.a1c45, s.a1c67)));
    _mm256_storeu_si256((__m256i*)(c + 2 * c_stride), _mm256_add_epi32(
        _mm256_loadu_si256((const __m256i*)(init + 2 * init_stride)),
        qg_avx2_reduce(s.a2c01, s.a2c23, s.a2c45, s.a2c67)));
}

/* The fused tile (qgemm.h): the three rows' sums requantized in registers, rows 0 and 1
   packed together, stored as 8-byte rows (nc < 8: through a copy). */
#define QG_HAVE_TILE_Q8 1
static inline __attribute__((always_inline)) void qg_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t mr, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out, size_t out_stride)
{
    const __m256i bias = _mm256_loadu_si256((const __m256i*)block);
    const int any_left = q->any_left;
    qg_avx2_acc s;
    __m256i y0, y1, y2, p01, p22;
    __m128i b01, b22;
    qg_avx2_sum(taps, cin, a, (const qg_w_t*)((const int8_t*)block + 8 * sizeof(int32_t)), &s);
    y0 = fx_mbqm8(_mm256_add_epi32(bias, qg_avx2_reduce(s.a0c01, s.a0c23, s.a0c45, s.a0c67)),
                  q, c0, any_left);
    y1 = fx_mbqm8(_mm256_add_epi32(bias, qg_avx2_reduce(s.a1c01, s.a1c23, s.a1c45, s.a1c67)),
                  q, c0, any_left);
    y2 = fx_mbqm8(_mm256_add_epi32(bias, qg_avx2_reduce(s.a2c01, s.a2c23, s.a2c45, s.a2c67)),
                  q, c0, any_left);
    /* [row 0 | row 1] and [row 2 | row 2] as int8, + zero point, clamped (fx_pack16) */
    p01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(y0, y1), 0xD8);
    p22 = _mm256_permute4x64_epi64(_mm256_packs_epi32(y2, y2), 0xD8);
    {
        const __m256i zp = _mm256_set1_epi16((int16_t)q->out_zp);
        const __m128i lo = _mm_set1_epi8((int8_t)q->act_min), hi = _mm_set1_epi8((int8_t)q->act_max);
        p01 = _mm256_adds_epi16(p01, zp);
        p22 = _mm256_adds_epi16(p22, zp);
        b01 = _mm_packs_epi16(_mm256_castsi256_si128(p01), _mm256_extracti128_si256(p01, 1));
        b22 = _mm_packs_epi16(_mm256_castsi256_si128(p22), _mm256_extracti128_si256(p22, 1));
        b01 = _mm_min_epi8(_mm_max_epi8(b01, lo), hi);
        b22 = _mm_min_epi8(_mm_max_epi8(b22, lo), hi);
    }
    if (nc >= 8) {
        _mm_storel_epi64((__m128i*)out, b01);
        if (mr > 1)
            _mm_storel_epi64((__m128i*)(out + out_stride), _mm_unpackhi_epi64(b01, b01));
        if (mr > 2)
            _mm_storel_epi64((__m128i*)(out + 2 * out_stride), b22);
    } else {
        int8_t buf[32];
        _mm_storeu_si128((__m128i*)buf, b01);
        _mm_storeu_si128((__m128i*)(buf + 16), b22);
        memcpy(out, buf, nc);
        if (mr > 1)
            memcpy(out + out_stride, buf + 8, nc);
        if (mr > 2)
            memcpy(out + 2 * out_stride, buf + 16, nc);
    }
}

/* One row (qgemm.h's qg_row_q8): 4 accumulators, K steps of 8. */
#define QG_HAVE_ROW_Q8 1
static inline void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const size_t full = cin / 8, rem = cin % 8;
    const qg_w_t* w = (const qg_w_t*)((const int8_t*)block + 8 * sizeof(int32_t));
    __m256i c01 = _mm256_setzero_si256(), c23 = c01, c45 = c01, c67 = c01, y;
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x = a[t];
        for (size_t k = 0; k <= full; k++) {
            __m256i v;
            if (k < full) {
                v = qg_avx2_row(x + 8 * k);
            } else if (rem) {
                int8_t tail[8];
                qg_tail(tail, x + 8 * full, rem);
                v = qg_avx2_row(tail);
            } else {
                break;
            }
            c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(v, QG_AVX2_W(w)));
            c23 = _mm256_add_epi32(c23, _mm256_madd_epi16(v, QG_AVX2_W(w + 16)));
            c45 = _mm256_add_epi32(c45, _mm256_madd_epi16(v, QG_AVX2_W(w + 32)));
            c67 = _mm256_add_epi32(c67, _mm256_madd_epi16(v, QG_AVX2_W(w + 48)));
            w += 64;
        }
    }
    y = _mm256_add_epi32(_mm256_loadu_si256((const __m256i*)block), qg_avx2_reduce(c01, c23, c45, c67));
    fx_store_n8(out, fx_pack8(fx_mbqm8(y, q, c0, q->any_left), q), nc);
}

#endif /* FIXNET_QGEMM_AVX2_H */

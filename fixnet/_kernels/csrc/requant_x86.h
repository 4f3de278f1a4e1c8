/* The requantization epilogue (requant.h) on x86-64: AVX2 (and the AVX-512 builds, which have
 * AVX2), 8 channels per vector. SSE2 has no signed 32 x 32 -> 64-bit multiply and no per-lane
 * shifts: the SSE2 build keeps requant.h's scalar form. Included by requant.h. */
#ifndef FIXNET_REQUANT_X86_H
#define FIXNET_REQUANT_X86_H

#if defined(__AVX2__)
#include <immintrin.h>

#define FX_HAVE_REQUANT_ROWS 1
#define FX_REQUANT_ISA "avx2"

#define FX_LOAD8(p) _mm256_loadu_si256((const __m256i*)(p))

/* The single rounding (requant.h) of 8 int32 accumulators, channels c .. c + 7 of q: |p| =
   |x| m0 exactly by vpmuludq (|INT32_MIN| = 2^31 as unsigned, m0 < 2^31), on even and odd
   lanes; (|p| + 2^(t - 1)) >> t as ((|p| >> (t - 1)) + 1) >> 1 with vpsrlvq (the counts
   t - 1 in q->right: AVX2 has no 64-bit arithmetic shift, |p| needs none); results above
   INT32_MAX (only where shift > 0: FX_RQ_LEFT) saturated; the sign of x restored (vpsignd). */
static inline __m256i fx_mbqm8_single(__m256i x, const fx_requant* q, size_t c, int saturate)
{
    const __m256i m0 = FX_LOAD8(q->m0 + c);
    const __m256i cnt = FX_LOAD8(q->right + c);
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i ax = _mm256_abs_epi32(x);
    __m256i pe = _mm256_mul_epu32(ax, m0);
    __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(ax, 32), _mm256_srli_epi64(m0, 32));
    pe = _mm256_srlv_epi64(pe, _mm256_and_si256(cnt, _mm256_set1_epi64x(0xFFFFFFFF)));
    po = _mm256_srlv_epi64(po, _mm256_srli_epi64(cnt, 32));
    pe = _mm256_srli_epi64(_mm256_add_epi64(pe, one), 1);
    po = _mm256_srli_epi64(_mm256_add_epi64(po, one), 1);
    if (saturate) {
        const __m256i lim = _mm256_set1_epi64x(INT32_MAX);
        pe = _mm256_blendv_epi8(pe, lim, _mm256_cmpgt_epi64(pe, lim));
        po = _mm256_blendv_epi8(po, lim, _mm256_cmpgt_epi64(po, lim));
    }
    return _mm256_sign_epi32(_mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA), x);
}

/* multiply_by_quantized_multiplier of 8 int32 accumulators, channels c .. c + 7 of q
   (or, with FX_RQ_SINGLE in any_left, fx_mbqm8_single):
   sat32(x << left) (sllv, then the lanes beyond hi_lim / lo_lim saturated), SRDHM as two
   vpmuldq (even and odd lanes) of 64-bit products + 2^30 whose bits 31..62 are the result,
   then the rounding divide by 2^right: (y >> right) + (remainder > half + [y < 0]). */
static inline __m256i fx_mbqm8(__m256i x, const fx_requant* q, size_t c, int any_left)
{
    const __m256i m0 = FX_LOAD8(q->m0 + c);
    const __m256i round = _mm256_set1_epi64x((int64_t)1 << 30);
    __m256i pe, po, y, rem, thr;
    if (any_left & FX_RQ_SINGLE)
        return fx_mbqm8_single(x, q, c, any_left & FX_RQ_LEFT);
    if (any_left) {
        __m256i sh = _mm256_sllv_epi32(x, FX_LOAD8(q->left + c));
        sh = _mm256_blendv_epi8(sh, _mm256_set1_epi32(INT32_MAX),
                                _mm256_cmpgt_epi32(x, FX_LOAD8(q->hi_lim + c)));
        sh = _mm256_blendv_epi8(sh, _mm256_set1_epi32(INT32_MIN),
                                _mm256_cmpgt_epi32(FX_LOAD8(q->lo_lim + c), x));
        x = sh;
    }
    pe = _mm256_add_epi64(_mm256_mul_epi32(x, m0), round);
    po = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m0, 32)),
                          round);
    y = _mm256_blend_epi32(_mm256_srli_epi64(pe, 31), _mm256_slli_epi64(po, 1), 0xAA);
    rem = _mm256_and_si256(y, FX_LOAD8(q->mask + c));
    thr = _mm256_sub_epi32(FX_LOAD8(q->half + c), _mm256_srai_epi32(y, 31));
    y = _mm256_srav_epi32(y, FX_LOAD8(q->right + c));
    return _mm256_sub_epi32(y, _mm256_cmpgt_epi32(rem, thr));
}

/* Two vectors of 8 multiplier results (a: channels 0-7, b: 8-15 of a row) to 16 int8:
   + out_zp and the clamp. int32 -> int16 and int16 -> int8 saturate and the zero point is
   added with saturation: exact, because a value that saturates anywhere lies outside
   [-128, 127] and so outside [act_min, act_max], on the same side. */
static inline __m128i fx_pack16(__m256i a, __m256i b, const fx_requant* q)
{
    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    __m128i r;
    p = _mm256_adds_epi16(p, _mm256_set1_epi16((int16_t)q->out_zp));
    r = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    r = _mm_max_epi8(r, _mm_set1_epi8((int8_t)q->act_min));
    return _mm_min_epi8(r, _mm_set1_epi8((int8_t)q->act_max));
}

/* One vector of 8 results to 8 int8 (the low 8 bytes). */
static inline __m128i fx_pack8(__m256i a, const fx_requant* q)
{
    __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    p = _mm_adds_epi16(p, _mm_set1_epi16((int16_t)q->out_zp));
    p = _mm_packs_epi16(p, p);
    p = _mm_max_epi8(p, _mm_set1_epi8((int8_t)q->act_min));
    return _mm_min_epi8(p, _mm_set1_epi8((int8_t)q->act_max));
}

/* Store the low n <= 8 bytes of v. */
static inline void fx_store_n8(int8_t* out, __m128i v, size_t n)
{
    if (n >= 8) {
        _mm_storel_epi64((__m128i*)out, v);
    } else {
        int8_t buf[16];
        _mm_storeu_si128((__m128i*)buf, v);
        memcpy(out, buf, n);
    }
}

static inline void fx_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                   size_t n, const fx_requant* q, size_t c0, int8_t* out,
                                   size_t out_stride)
{
    size_t c, r;
    const int any_left = q->any_left;
    for (c = 0; c < n; c += 8) {
        /* full vectors of accumulators: the rows hold at least n rounded up to 8 values
           only when the caller's stride says so; read a partial group through a copy */
        const size_t m = n - c < 8 ? n - c : 8;
        for (r = 0; r < rows; r++) {
            __m256i a;
            if (m == 8) {
                a = FX_LOAD8(acc + r * acc_stride + c);
            } else {
                int32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                memcpy(buf, acc + r * acc_stride + c, m * sizeof(int32_t));
                a = FX_LOAD8(buf);
            }
            fx_store_n8(out + r * out_stride + c, fx_pack8(fx_mbqm8(a, q, c0 + c, any_left), q), m);
        }
    }
}

#endif /* __AVX2__ */

#endif /* FIXNET_REQUANT_X86_H */

/* Elementwise binary ops of fixnet/_kernels/_merge.pyx.
 *
 * int8 add / subtract: out[i] = clamp(out_zp + MBQM(x_table[x[i]] + y_table[y[i]], out_m0,
 * out_shift)), the sum wrapping modulo 2^32, x_table / y_table the 256 rescaled values of each
 * input (built by AddCall; indexed by value + 128), MBQM = multiply_by_quantized_multiplier
 * with one multiplier for the tensor (q: requant.h's constants, every channel the same).
 * AVX2: 8 elements at a time, the table lookups scalar (faster than vpgatherdd here: 0.62
 * against 1.04 ns an element on an AMD EPYC), the epilogue requant.h's vector form
 * (fx_mbqm8, fx_pack8). Elsewhere (and for the last size % 8 elements): the scalar rule,
 * fx_requant_scalar, which is the same integers.
 *
 * int16 add / subtract, multiply, maximum / minimum (below): no tables (an input has 65536
 * values), the rule on every element; AVX2 and NEON 8 elements at a time with requant.h's
 * vector forms (fx_mbqm8; fx_mbqm4_k), the scalar twin (fx_mbqm_scalar) elsewhere and for the
 * last size % 8 elements.
 */
#ifndef FIXNET_BINARY_H
#define FIXNET_BINARY_H

#include <stddef.h>
#include <stdint.h>

#include "requant.h"

static inline void fx_add_scalar(const int8_t* x, const int8_t* y, int8_t* out, size_t n,
                                 const int32_t* x_table, const int32_t* y_table,
                                 const fx_requant* q)
{
    for (size_t i = 0; i < n; i++) {
        const int32_t s = (int32_t)((uint32_t)x_table[x[i] + 128] + (uint32_t)y_table[y[i] + 128]);
        out[i] = fx_requant_scalar(s, q, 0);
    }
}

#if defined(__AVX2__)
#define FX_ADD_ISA "avx2"
static inline void fx_add(const int8_t* x, const int8_t* y, int8_t* out, size_t n,
                          const int32_t* x_table, const int32_t* y_table, const fx_requant* q)
{
    const int any_left = q->any_left;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        int32_t s[8];
        for (int j = 0; j < 8; j++)
            s[j] = (int32_t)((uint32_t)x_table[x[i + j] + 128] + (uint32_t)y_table[y[i + j] + 128]);
        _mm_storel_epi64((__m128i*)(out + i),
                         fx_pack8(fx_mbqm8(_mm256_loadu_si256((const __m256i*)s), q, 0, any_left), q));
    }
    fx_add_scalar(x + i, y + i, out + i, n - i, x_table, y_table, q);
}
#else
#define FX_ADD_ISA "scalar"
#define fx_add fx_add_scalar
#endif

/* ---- int16 -------------------------------------------------------------------------------
 * Zero points are 0 (int16 tensors are symmetric; _merge.pyx checks), so out_zp adds nothing:
 *   add:      r = MBQM(x << left_shift, x) + MBQM(y << left_shift, y) (or -, if flip), int32
 *             wrapping modulo 2^32; out = clamp(MBQM(r, out))
 *   multiply: out = clamp(MBQM(x * y, out))                     |x * y| <= 2^30: exact in int32
 *   maximum:  out = clamp(max(MBQM(x, x), MBQM(y, y)))          (min, if flip)
 * with clamp to [act_min, act_max]. The fx_requant constants (requant.h) hold one multiplier,
 * the same in every lane (at least 8 lanes); one a kernel does not use is left as m0 = 0. */
typedef struct {
    fx_requant x, y, out;
    int32_t left_shift;         /* add: x << left_shift fits int32 (<= 16, checked) */
    int32_t flip;               /* add: 1 subtracts y; maximum: 1 takes the minimum */
    int32_t act_min, act_max;   /* in [-32768, 32767] */
} fx_binary16;

static inline int16_t fx16_clamp(int32_t v, const fx_binary16* k)
{
    return (int16_t)(v < k->act_min ? k->act_min : v > k->act_max ? k->act_max : v);
}

/* x << s as int32 (in range by the entry check; shifted as unsigned: defined for x < 0). */
static inline int32_t fx16_shl(int16_t x, int32_t s)
{
    return (int32_t)((uint32_t)(int32_t)x << s);
}

static inline void fx_add16_scalar(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                                   const fx_binary16* k)
{
    const uint32_t neg = k->flip ? 0xFFFFFFFFu : 0u;   /* (v ^ neg) - neg: v or -v, wrapping */
    for (size_t i = 0; i < n; i++) {
        const int32_t sx = fx_mbqm_scalar(fx16_shl(x[i], k->left_shift), &k->x, 0);
        const int32_t sy = fx_mbqm_scalar(fx16_shl(y[i], k->left_shift), &k->y, 0);
        const int32_t r = (int32_t)((uint32_t)sx + (((uint32_t)sy ^ neg) - neg));
        out[i] = fx16_clamp(fx_mbqm_scalar(r, &k->out, 0), k);
    }
}

static inline void fx_mul16_scalar(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                                   const fx_binary16* k)
{
    for (size_t i = 0; i < n; i++)
        out[i] = fx16_clamp(fx_mbqm_scalar((int32_t)x[i] * (int32_t)y[i], &k->out, 0), k);
}

static inline void fx_maximum16_scalar(const int16_t* x, const int16_t* y, int16_t* out,
                                       size_t n, const fx_binary16* k)
{
    for (size_t i = 0; i < n; i++) {
        const int32_t a = fx_mbqm_scalar(x[i], &k->x, 0), b = fx_mbqm_scalar(y[i], &k->y, 0);
        out[i] = fx16_clamp(k->flip ? (a < b ? a : b) : (a > b ? a : b), k);
    }
}

#if defined(__AVX2__)
#define FX_BINARY16_ISA "avx2"

static inline __m256i fx16_load8(const int16_t* p)
{
    return _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i*)p));
}

/* clamp 8 int32 results, then narrow to int16 (exact: they lie in int16 after the clamp). */
static inline void fx16_store8(int16_t* p, __m256i v, __m256i lo, __m256i hi)
{
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    _mm_storeu_si128((__m128i*)p, _mm_packs_epi32(_mm256_castsi256_si128(v),
                                                  _mm256_extracti128_si256(v, 1)));
}

static inline void fx_add16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                            const fx_binary16* k)
{
    const __m128i ls = _mm_cvtsi32_si128(k->left_shift);
    const __m256i neg = _mm256_set1_epi32(k->flip ? -1 : 0);
    const __m256i lo = _mm256_set1_epi32(k->act_min), hi = _mm256_set1_epi32(k->act_max);
    const int lx = k->x.any_left, ly = k->y.any_left, lout = k->out.any_left;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i sx = fx_mbqm8(_mm256_sll_epi32(fx16_load8(x + i), ls), &k->x, 0, lx);
        __m256i sy = fx_mbqm8(_mm256_sll_epi32(fx16_load8(y + i), ls), &k->y, 0, ly);
        sy = _mm256_sub_epi32(_mm256_xor_si256(sy, neg), neg);
        fx16_store8(out + i, fx_mbqm8(_mm256_add_epi32(sx, sy), &k->out, 0, lout), lo, hi);
    }
    fx_add16_scalar(x + i, y + i, out + i, n - i, k);
}

static inline void fx_mul16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                            const fx_binary16* k)
{
    const __m256i lo = _mm256_set1_epi32(k->act_min), hi = _mm256_set1_epi32(k->act_max);
    const int left = k->out.any_left;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i p = _mm256_mullo_epi32(fx16_load8(x + i), fx16_load8(y + i));
        fx16_store8(out + i, fx_mbqm8(p, &k->out, 0, left), lo, hi);
    }
    fx_mul16_scalar(x + i, y + i, out + i, n - i, k);
}

static inline void fx_maximum16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                                const fx_binary16* k)
{
    const __m256i lo = _mm256_set1_epi32(k->act_min), hi = _mm256_set1_epi32(k->act_max);
    const int lx = k->x.any_left, ly = k->y.any_left, take_min = k->flip;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i a = fx_mbqm8(fx16_load8(x + i), &k->x, 0, lx);
        const __m256i b = fx_mbqm8(fx16_load8(y + i), &k->y, 0, ly);
        fx16_store8(out + i, take_min ? _mm256_min_epi32(a, b) : _mm256_max_epi32(a, b), lo, hi);
    }
    fx_maximum16_scalar(x + i, y + i, out + i, n - i, k);
}

#elif defined(__aarch64__) && defined(__ARM_NEON)
#define FX_BINARY16_ISA "neon"

/* clamp two vectors of 4 int32 results, narrow to 8 int16 (exact after the clamp), store. */
static inline void fx16_store8(int16_t* p, int32x4_t a, int32x4_t b, int32x4_t lo, int32x4_t hi)
{
    a = vminq_s32(vmaxq_s32(a, lo), hi);
    b = vminq_s32(vmaxq_s32(b, lo), hi);
    vst1q_s16(p, vcombine_s16(vmovn_s32(a), vmovn_s32(b)));
}

static inline void fx_add16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                            const fx_binary16* k)
{
    /* constants loaded once, before the stores (which may alias k) */
    const fx_rq4 kx = fx_rq4_load(&k->x, 0), ky = fx_rq4_load(&k->y, 0);
    const fx_rq4 ko = fx_rq4_load(&k->out, 0);
    const int lx = k->x.any_left, ly = k->y.any_left, lout = k->out.any_left;
    const int32x4_t ls = vdupq_n_s32(k->left_shift), neg = vdupq_n_s32(k->flip ? -1 : 0);
    const int32x4_t lo = vdupq_n_s32(k->act_min), hi = vdupq_n_s32(k->act_max);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const int16x8_t vx = vld1q_s16(x + i), vy = vld1q_s16(y + i);
        const int32x4_t sx0 = fx_mbqm4_k(vshlq_s32(vmovl_s16(vget_low_s16(vx)), ls), kx, lx);
        const int32x4_t sx1 = fx_mbqm4_k(vshlq_s32(vmovl_high_s16(vx), ls), kx, lx);
        int32x4_t sy0 = fx_mbqm4_k(vshlq_s32(vmovl_s16(vget_low_s16(vy)), ls), ky, ly);
        int32x4_t sy1 = fx_mbqm4_k(vshlq_s32(vmovl_high_s16(vy), ls), ky, ly);
        sy0 = vsubq_s32(veorq_s32(sy0, neg), neg);
        sy1 = vsubq_s32(veorq_s32(sy1, neg), neg);
        fx16_store8(out + i, fx_mbqm4_k(vaddq_s32(sx0, sy0), ko, lout),
                    fx_mbqm4_k(vaddq_s32(sx1, sy1), ko, lout), lo, hi);
    }
    fx_add16_scalar(x + i, y + i, out + i, n - i, k);
}

static inline void fx_mul16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                            const fx_binary16* k)
{
    const fx_rq4 ko = fx_rq4_load(&k->out, 0);
    const int left = k->out.any_left;
    const int32x4_t lo = vdupq_n_s32(k->act_min), hi = vdupq_n_s32(k->act_max);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const int16x8_t vx = vld1q_s16(x + i), vy = vld1q_s16(y + i);
        fx16_store8(out + i, fx_mbqm4_k(vmull_s16(vget_low_s16(vx), vget_low_s16(vy)), ko, left),
                    fx_mbqm4_k(vmull_high_s16(vx, vy), ko, left), lo, hi);
    }
    fx_mul16_scalar(x + i, y + i, out + i, n - i, k);
}

static inline void fx_maximum16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                                const fx_binary16* k)
{
    const fx_rq4 kx = fx_rq4_load(&k->x, 0), ky = fx_rq4_load(&k->y, 0);
    const int lx = k->x.any_left, ly = k->y.any_left, take_min = k->flip;
    const int32x4_t lo = vdupq_n_s32(k->act_min), hi = vdupq_n_s32(k->act_max);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const int16x8_t vx = vld1q_s16(x + i), vy = vld1q_s16(y + i);
        const int32x4_t a0 = fx_mbqm4_k(vmovl_s16(vget_low_s16(vx)), kx, lx);
        const int32x4_t a1 = fx_mbqm4_k(vmovl_high_s16(vx), kx, lx);
        const int32x4_t b0 = fx_mbqm4_k(vmovl_s16(vget_low_s16(vy)), ky, ly);
        const int32x4_t b1 = fx_mbqm4_k(vmovl_high_s16(vy), ky, ly);
        if (take_min)
            fx16_store8(out + i, vminq_s32(a0, b0), vminq_s32(a1, b1), lo, hi);
        else
            fx16_store8(out + i, vmaxq_s32(a0, b0), vmaxq_s32(a1, b1), lo, hi);
    }
    fx_maximum16_scalar(x + i, y + i, out + i, n - i, k);
}

#else
#define FX_BINARY16_ISA "scalar"
#define fx_add16 fx_add16_scalar
#define fx_mul16 fx_mul16_scalar
#define fx_maximum16 fx_maximum16_scalar
#endif

#endif /* FIXNET_BINARY_H */

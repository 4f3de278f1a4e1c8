/* Depthwise on int16 activations, x86-64: AVX2 (the AVX-512 builds use it too: their int16
 * tile would be the same instructions on twice the lanes, and a 16-lane tile fills one
 * 256-bit register of int16) and SSE2. Two taps at a time: their int16 values interleaved
 * (punpcklwd / punpckhwd) and multiplied by the packed pairs of int16 weights with pmaddwd,
 * which sums the two products in int32 (exact: |x * w| <= 2^15 * 2^7 each), added to the
 * accumulators. Included by dwconv16.h, which defines the packing (slots) and the row. */
#ifndef FIXNET_DWCONV16_X86_H
#define FIXNET_DWCONV16_X86_H

#if defined(DW16_AVX2)

typedef struct { __m256i lo, hi; } dw16_acc_t;  /* slots 0-7 (channels 0-3, 8-11), 8-15 */
typedef struct { __m256i min, max; } dw16_bounds_t;
typedef __m256i dw16_out_t;

DW_INLINE dw16_bounds_t dw16_bounds_load(const fx_requant* q) {
    dw16_bounds_t b;
    b.min = _mm256_set1_epi16((int16_t)q->act_min);
    b.max = _mm256_set1_epi16((int16_t)q->act_max);
    return b;
}

DW_INLINE __m256i dw16_load(const int16_t* row, ptrdiff_t j) {
    return _mm256_loadu_si256((const __m256i*)(row + j));
}

/* Bias + every tap of the 16 lanes at value j of the rows r. Per pair of taps a and b:
   unpacklo(a, b) holds the pairs of channels 0-3 | 8-11 (slots 0-7), unpackhi those of
   4-7 | 12-15 (slots 8-15), the order of the packed weights. */
DW_INLINE dw16_acc_t dw16_tile_acc(const int16_t* const* r, ptrdiff_t taps, ptrdiff_t j,
                                   const uint8_t* pt) {
    dw16_acc_t acc;
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.lo = _mm256_loadu_si256((const __m256i*)pt);
    acc.hi = _mm256_loadu_si256((const __m256i*)(pt + 32));
    for (t = 0; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
        const __m256i a = dw16_load(r[t], j), b = dw16_load(r[t + 1], j);
        acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(
            _mm256_unpacklo_epi16(a, b), _mm256_loadu_si256((const __m256i*)w)));
        acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(
            _mm256_unpackhi_epi16(a, b), _mm256_loadu_si256((const __m256i*)(w + DW_TILE))));
    }
    if (t < taps) {
        /* the pair's second weight is 0: any second value will do, use a itself */
        const __m256i a = dw16_load(r[t], j);
        acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(
            _mm256_unpacklo_epi16(a, a), _mm256_loadu_si256((const __m256i*)w)));
        acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(
            _mm256_unpackhi_epi16(a, a), _mm256_loadu_si256((const __m256i*)(w + DW_TILE))));
    }
    return acc;
}

/* requant_x86.h's multiplier on slots 0-7 and 8-15, then vpackssdw, which interleaves the two
   by 64-bit halves of each 128-bit lane: [slots 0-3, 8-11 | 4-7, 12-15] = channels 0-15 in
   order. The saturation to int16 is exact (a value that saturates lies outside
   [act_min, act_max], on the same side); out_zp is 0 for int16 outputs (the Call checks it),
   so nothing is added before the clamp. */
DW_INLINE dw16_out_t dw16_epilogue(dw16_acc_t acc, const fx_requant* q, ptrdiff_t lane0,
                                   dw16_bounds_t b, int left) {
    const __m256i v = _mm256_packs_epi32(fx_mbqm8(acc.lo, q, (size_t)lane0, left),
                                         fx_mbqm8(acc.hi, q, (size_t)lane0 + 8, left));
    return _mm256_min_epi16(_mm256_max_epi16(v, b.min), b.max);
}

DW_INLINE void dw16_store(int16_t* out, dw16_out_t v, ptrdiff_t n) {
    if (n == DW_TILE) {
        _mm256_storeu_si256((__m256i*)out, v);
    } else {
        int16_t buf[DW_TILE];
        _mm256_storeu_si256((__m256i*)buf, v);
        memcpy(out, buf, (size_t)n * 2);
    }
}

#else  /* SSE2 */

typedef struct { __m128i a0, a1, a2, a3; } dw16_acc_t;   /* channels 0-3, 4-7, 8-11, 12-15 */
typedef struct { __m128i min, max; } dw16_bounds_t;
typedef struct { __m128i lo, hi; } dw16_out_t;           /* channels 0-7, 8-15 */

DW_INLINE dw16_bounds_t dw16_bounds_load(const fx_requant* q) {
    dw16_bounds_t b;
    b.min = _mm_set1_epi16((int16_t)q->act_min);
    b.max = _mm_set1_epi16((int16_t)q->act_max);
    return b;
}

DW_INLINE __m128i dw16_load(const int16_t* row, ptrdiff_t j) {
    return _mm_loadu_si128((const __m128i*)(row + j));
}

DW_INLINE dw16_acc_t dw16_tile_acc(const int16_t* const* r, ptrdiff_t taps, ptrdiff_t j,
                                   const uint8_t* pt) {
    dw16_acc_t acc;
    const __m128i* w = (const __m128i*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.a0 = _mm_loadu_si128((const __m128i*)pt);
    acc.a1 = _mm_loadu_si128((const __m128i*)(pt + 16));
    acc.a2 = _mm_loadu_si128((const __m128i*)(pt + 32));
    acc.a3 = _mm_loadu_si128((const __m128i*)(pt + 48));
    for (t = 0; t < taps; t += 2, w += 4) {
        /* an odd last tap pairs with itself: its second weight is 0 */
        const __m128i a0 = dw16_load(r[t], j), a1 = dw16_load(r[t], j + 8);
        const __m128i b0 = t + 1 < taps ? dw16_load(r[t + 1], j) : a0;
        const __m128i b1 = t + 1 < taps ? dw16_load(r[t + 1], j + 8) : a1;
        acc.a0 = _mm_add_epi32(acc.a0, _mm_madd_epi16(_mm_unpacklo_epi16(a0, b0),
                                                      _mm_loadu_si128(w)));
        acc.a1 = _mm_add_epi32(acc.a1, _mm_madd_epi16(_mm_unpackhi_epi16(a0, b0),
                                                      _mm_loadu_si128(w + 1)));
        acc.a2 = _mm_add_epi32(acc.a2, _mm_madd_epi16(_mm_unpacklo_epi16(a1, b1),
                                                      _mm_loadu_si128(w + 2)));
        acc.a3 = _mm_add_epi32(acc.a3, _mm_madd_epi16(_mm_unpackhi_epi16(a1, b1),
                                                      _mm_loadu_si128(w + 3)));
    }
    return acc;
}

/* SSE2 has no signed 32x32->64 multiply nor per-lane shifts: requant.h's scalar form per
   lane (as the int8 SSE2 epilogue), then the saturating pack to int16 and the clamp (exact,
   as on AVX2; out_zp is 0). */
DW_INLINE dw16_out_t dw16_epilogue(dw16_acc_t acc, const fx_requant* q, ptrdiff_t lane0,
                                   dw16_bounds_t b, int left) {
    int32_t a[DW_TILE];
    int lane;
    dw16_out_t v;
    (void)left;
    _mm_storeu_si128((__m128i*)a, acc.a0);
    _mm_storeu_si128((__m128i*)(a + 4), acc.a1);
    _mm_storeu_si128((__m128i*)(a + 8), acc.a2);
    _mm_storeu_si128((__m128i*)(a + 12), acc.a3);
    for (lane = 0; lane < DW_TILE; lane++)
        a[lane] = fx_mbqm_scalar(a[lane], q, (size_t)(lane0 + lane));
    v.lo = _mm_packs_epi32(_mm_loadu_si128((const __m128i*)a),
                           _mm_loadu_si128((const __m128i*)(a + 4)));
    v.hi = _mm_packs_epi32(_mm_loadu_si128((const __m128i*)(a + 8)),
                           _mm_loadu_si128((const __m128i*)(a + 12)));
    v.lo = _mm_min_epi16(_mm_max_epi16(v.lo, b.min), b.max);
    v.hi = _mm_min_epi16(_mm_max_epi16(v.hi, b.min), b.max);
    return v;
}

DW_INLINE void dw16_store(int16_t* out, dw16_out_t v, ptrdiff_t n) {
    if (n == DW_TILE) {
        _mm_storeu_si128((__m128i*)out, v.lo);
        _mm_storeu_si128((__m128i*)(out + 8), v.hi);
    } else {
        int16_t buf[DW_TILE];
        _mm_storeu_si128((__m128i*)buf, v.lo);
        _mm_storeu_si128((__m128i*)(buf + 8), v.hi);
        memcpy(out, buf, (size_t)n * 2);
    }
}

#endif

#endif /* FIXNET_DWCONV16_X86_H */

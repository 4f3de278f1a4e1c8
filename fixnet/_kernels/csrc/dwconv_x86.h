/* Depthwise micro-kernels on x86-64 (AVX-512, AVX2, SSE2): loading a tile's 16 channels,
 * summing every tap of one output pixel in registers (int16 tap pairs, pmaddwd), and the
 * epilogue. Included by dwconv.h, which defines the packing and the driver; see there. */
#ifndef FIXNET_DWCONV_X86_H
#define FIXNET_DWCONV_X86_H

#if defined(DW_AVX512)

DW_INLINE __m128i dw_load(const int8_t* row, ptrdiff_t c0) {
    return _mm_loadu_si128((const __m128i*)(row + c0));
}

/* All taps of one tile: returns the 16 int32 accumulators (channel order). */
DW_INLINE __m512i dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                  const uint8_t* pt) {
    __m512i acc = _mm512_loadu_si512((const void*)pt);
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    const __m512i pair_order = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    ptrdiff_t t;
    for (t = 0; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
        /* [x0 c0..15 | x1 c0..15] widened, then one vpermw to (c, tap) pair order */
        __m128i a = dw_load(rows[t], c0), b = dw_load(rows[t + 1], c0);
        __m512i x = _mm512_permutexvar_epi16(pair_order, _mm512_cvtepi8_epi16(
            _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1)));
        __m512i wv = _mm512_loadu_si512((const void*)w);
#if defined(__AVX512VNNI__)
        acc = _mm512_dpwssd_epi32(acc, x, wv);
#else
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, wv));
#endif
    }
    if (t < taps) {
        /* the pair's second weight is 0: any second value will do, use a itself */
        __m128i a = dw_load(rows[t], c0);
        __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, a)),
                                             _mm_unpackhi_epi8(a, a), 1);
        __m512i x = _mm512_cvtepi8_epi16(ab);
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, _mm512_loadu_si512((const void*)w)));
    }
    return acc;
}

DW_INLINE __m128i dw_epilogue(__m512i acc, const fx_requant* q, ptrdiff_t c0) {
    __m512i x = acc;
    __m512i m0 = _mm512_loadu_si512((const void*)(q->m0 + c0));
    __m512i round = _mm512_set1_epi64((int64_t)1 << 30);
    __m512i pe, po, y, rem, thr;
    if (q->any_left) {
        __m512i sh = _mm512_sllv_epi32(x, _mm512_loadu_si512((const void*)(q->left + c0)));
        sh = _mm512_mask_mov_epi32(sh, _mm512_cmpgt_epi32_mask(
            x, _mm512_loadu_si512((const void*)(q->hi_lim + c0))), _mm512_set1_epi32(INT32_MAX));
        sh = _mm512_mask_mov_epi32(sh, _mm512_cmplt_epi32_mask(
            x, _mm512_loadu_si512((const void*)(q->lo_lim + c0))), _mm512_set1_epi32(INT32_MIN));
        x = sh;
    }
    pe = _mm512_add_epi64(_mm512_mul_epi32(x, m0), round);
    po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m0, 32)),
                          round);
    y = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(pe, 31),
                                _mm512_slli_epi64(po, 1));
    rem = _mm512_and_si512(y, _mm512_loadu_si512((const void*)(q->mask + c0)));
    thr = _mm512_sub_epi32(_mm512_loadu_si512((const void*)(q->half + c0)), _mm512_srai_epi32(y, 31));
    y = _mm512_srav_epi32(y, _mm512_loadu_si512((const void*)(q->right + c0)));
    y = _mm512_mask_add_epi32(y, _mm512_cmpgt_epi32_mask(rem, thr), y, _mm512_set1_epi32(1));
    y = _mm512_max_epi32(y, _mm512_set1_epi32(q->act_min - q->out_zp));
    y = _mm512_min_epi32(y, _mm512_set1_epi32(q->act_max - q->out_zp));
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(y, _mm512_set1_epi32(q->out_zp)));
}

#elif defined(DW_AVX2) || defined(DW_SSE2)

DW_INLINE __m128i dw_load(const int8_t* row, ptrdiff_t c0) {
    return _mm_loadu_si128((const __m128i*)(row + c0));
}

#if defined(DW_AVX2)
typedef struct { __m256i lo, hi; } dw_acc_t;   /* channels 0-7, 8-15 */

DW_INLINE dw_acc_t dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                   const uint8_t* pt) {
    dw_acc_t acc;
    const int16_t* w = (const int16_t*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.lo = _mm256_loadu_si256((const __m256i*)pt);
    acc.hi = _mm256_loadu_si256((const __m256i*)(pt + 32));
    for (t = 0; t + 1 < taps; t += 2, w += 2 * DW_TILE) {
        __m128i a = dw_load(rows[t], c0), b = dw_load(rows[t + 1], c0);
        __m256i xl = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
        __m256i xh = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));
        acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(
            xl, _mm256_loadu_si256((const __m256i*)w)));
        acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(
            xh, _mm256_loadu_si256((const __m256i*)(w + DW_TILE))));
    }
    if (t < taps) {
        __m128i a = dw_load(rows[t], c0);
        /* the pair's second weight is 0: any second value will do, use a itself */
        __m256i xl = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, a));
        __m256i xh = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, a));
        acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(
            xl, _mm256_loadu_si256((const __m256i*)w)));
        acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(
            xh, _mm256_loadu_si256((const __m256i*)(w + DW_TILE))));
    }
    return acc;
}

DW_INLINE __m128i dw_epilogue(dw_acc_t acc, const fx_requant* q, ptrdiff_t c0) {
    return fx_pack16(fx_mbqm8(acc.lo, q, (size_t)c0, q->any_left),
                     fx_mbqm8(acc.hi, q, (size_t)c0 + 8, q->any_left), q);
}
#else  /* SSE2 */
typedef struct { __m128i a0, a1, a2, a3; } dw_acc_t;   /* channels 0-3, 4-7, 8-11, 12-15 */

DW_INLINE __m128i dw_sext_lo(__m128i v) {   /* int8 lanes 0-7 -> int16 */
    return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);
}
DW_INLINE __m128i dw_sext_hi(__m128i v) {
    return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8);
}

DW_INLINE dw_acc_t dw_tile_acc(const int8_t* const* rows, ptrdiff_t taps, ptrdiff_t c0,
                                   const uint8_t* pt) {
    dw_acc_t acc;
    const __m128i* w = (const __m128i*)(pt + DW_TILE * 4);
    ptrdiff_t t;
    acc.a0 = _mm_loadu_si128((const __m128i*)pt);
    acc.a1 = _mm_loadu_si128((const __m128i*)(pt + 16));
    acc.a2 = _mm_loadu_si128((const __m128i*)(pt + 32));
    acc.a3 = _mm_loadu_si128((const __m128i*)(pt + 48));
    for (t = 0; t < taps; t += 2, w += 4) {
        __m128i a = dw_load(rows[t], c0);
        __m128i b = t + 1 < taps ? dw_load(rows[t + 1], c0) : a;
        __m128i l = _mm_unpacklo_epi8(a, b), h = _mm_unpackhi_epi8(a, b);
        acc.a0 = _mm_add_epi32(acc.a0, _mm_madd_epi16(dw_sext_lo(l), _mm_loadu_si128(w)));
        acc.a1 = _mm_add_epi32(acc.a1, _mm_madd_epi16(dw_sext_hi(l), _mm_loadu_si128(w + 1)));
        acc.a2 = _mm_add_epi32(acc.a2, _mm_madd_epi16(dw_sext_lo(h), _mm_loadu_si128(w + 2)));
        acc.a3 = _mm_add_epi32(acc.a3, _mm_madd_epi16(dw_sext_hi(h), _mm_loadu_si128(w + 3)));
    }
    return acc;
}

/* SSE2 has no signed 32x32->64 multiply nor per-lane shifts: the epilogue is requant.h's
   scalar form per lane, then clamped in int16 lanes. */
DW_INLINE __m128i dw_epilogue(dw_acc_t acc, const fx_requant* q, ptrdiff_t c0) {
    int32_t a[DW_TILE];
    int lane;
    __m128i lo, hi;
    _mm_storeu_si128((__m128i*)a, acc.a0);
    _mm_storeu_si128((__m128i*)(a + 4), acc.a1);
    _mm_storeu_si128((__m128i*)(a + 8), acc.a2);
    _mm_storeu_si128((__m128i*)(a + 12), acc.a3);
    for (lane = 0; lane < DW_TILE; lane++)
        a[lane] = fx_mbqm_scalar(a[lane], q, (size_t)(c0 + lane));
    lo = _mm_packs_epi32(_mm_loadu_si128((const __m128i*)a),
                         _mm_loadu_si128((const __m128i*)(a + 4)));
    hi = _mm_packs_epi32(_mm_loadu_si128((const __m128i*)(a + 8)),
                         _mm_loadu_si128((const __m128i*)(a + 12)));
    lo = _mm_adds_epi16(lo, _mm_set1_epi16((int16_t)q->out_zp));
    hi = _mm_adds_epi16(hi, _mm_set1_epi16((int16_t)q->out_zp));
    lo = _mm_min_epi16(_mm_max_epi16(lo, _mm_set1_epi16((int16_t)q->act_min)),
                       _mm_set1_epi16((int16_t)q->act_max));
    hi = _mm_min_epi16(_mm_max_epi16(hi, _mm_set1_epi16((int16_t)q->act_min)),
                       _mm_set1_epi16((int16_t)q->act_max));
    return _mm_packs_epi16(lo, hi);
}
#endif

#endif

#endif /* FIXNET_DWCONV_X86_H */

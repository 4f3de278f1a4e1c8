/* conv2d's GEMM micro-kernel, AVX-512 VNNI: 8 x 16 tile, K in steps of 4, vpdpbusd (activations offset to uint8).
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there. */
#ifndef FIXNET_QGEMM_AVX512VNNI_H
#define FIXNET_QGEMM_AVX512VNNI_H

static inline __m512i qg_vnni_bcast(const int8_t* p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_xor_si512(_mm512_set1_epi32(v), _mm512_set1_epi8((char)0x80));
}

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    const qg_w_t* w = (const qg_w_t*)wv;
    const size_t full = cin / 4, rem = cin % 4;
    __m512i acc[QG_MR];
#pragma GCC unroll 16
    for (int r = 0; r < QG_MR; r++)
        acc[r] = _mm512_loadu_si512((const void*)(init + r * init_stride));
    for (size_t t = 0; t < taps; t++) {
        const int8_t* const* x = a + QG_MR * t;
        for (size_t k = 0; k < full; k++) {
            const __m512i wq = _mm512_loadu_si512((const void*)w);
#pragma GCC unroll 16
            for (int r = 0; r < QG_MR; r++)
                acc[r] = _mm512_dpbusd_epi32(acc[r], qg_vnni_bcast(x[r] + 4 * k), wq);
            w += 64;
        }
        if (rem) {
            /* the zero fill becomes 128 after the offset, against zero weights */
            const __m512i wq = _mm512_loadu_si512((const void*)w);
#pragma GCC unroll 16
            for (int r = 0; r < QG_MR; r++) {
                int8_t tail[4];
                qg_tail(tail, x[r] + 4 * full, rem);
                acc[r] = _mm512_dpbusd_epi32(acc[r], qg_vnni_bcast(tail), wq);
            }
            w += 64;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < QG_MR; r++)
        _mm512_storeu_si512((void*)(c + r * c_stride), acc[r]);
}

/* One row (qgemm.h's qg_row_q8): qg_tile's loop for a single row (no padding rows), then
   requant.h's epilogue. */
#define QG_HAVE_ROW_Q8 1
static inline void qg_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const qg_w_t* w = (const qg_w_t*)((const int8_t*)block + QG_NR * sizeof(int32_t));
    const size_t full = cin / 4, rem = cin % 4;
    __m512i acc = _mm512_loadu_si512(block);
    int32_t sums[QG_NR];
    for (size_t t = 0; t < taps; t++) {
        const int8_t* x = a[t];
        for (size_t k = 0; k < full; k++) {
            acc = _mm512_dpbusd_epi32(acc, qg_vnni_bcast(x + 4 * k),
                                      _mm512_loadu_si512((const void*)w));
            w += 64;
        }
        if (rem) {
            /* the zero fill becomes 128 after the offset, against zero weights */
            int8_t tail[4];
            qg_tail(tail, x + 4 * full, rem);
            acc = _mm512_dpbusd_epi32(acc, qg_vnni_bcast(tail), _mm512_loadu_si512((const void*)w));
            w += 64;
        }
    }
    _mm512_storeu_si512((void*)sums, acc);
    fx_requant_rows(sums, QG_NR, 1, nc, q, c0, out, 0);
}

#endif /* FIXNET_QGEMM_AVX512VNNI_H */

/* The micro-kernels of dense (and of every pointwise conv, which runs as dense), included
 * from fixnet/_kernels/_dense.pyx: a GEMM over the rows of the batch, one tap.
 *
 * Builds other than AVX2 use conv2d's kernels (qgemm.h) and packing: QD_* is QG_*. The AVX2
 * build has a kernel of its own for dense, 4 x 8 with K in pairs ("c2"): channels in the 8
 * int32 lanes of one accumulator per row (no horizontal reduction at the end), and a
 * broadcast pair of int16 inputs is a plain load (vpbroadcastd) from the tile's "panel", its
 * rows widened to int16 once and used by every block of 8 channels. Per pair of K: 1 weight
 * load + widen, then per row 1 broadcast load, 1 vpmaddwd, 1 vpaddd. With few input
 * channels (K = 8, 16: the expand layers of MobileNets) that is about half the instructions
 * of conv2d's 3x8c8 (three vphaddd per row per tile); with many, both are bound by
 * vpmaddwd. conv2d keeps 3x8c8: with K = Cin per tap and few channel blocks, widening every
 * tap's rows into a panel costs more than it saves (measured on 3x3 convs, 8 -> 8 channels).
 *
 * The interface (every build):
 *   QD_MR, QD_NR, QD_KR, QD_W16, QD_UINT8_INPUT  the tile and packing (fixnet._kernels.gemm_pack)
 *   qd_panel_bytes(taps, cin, rows)   bytes of a panel of `rows` rows (QD_MR or 1);
 *                                     <= QD_PANEL_MAX: the driver's stack buffer
 *   qd_panel_build(taps, cin, a, rows, panel)
 *   qd_tile_q8_panel(taps, cin, panel, block, mr, nc, q, c0, out, out_stride)
 *   qd_row_q8_panel(taps, cin, panel, block, nc, q, c0, out)
 *   qd_tile_q8(taps, cin, a, block, mr, nc, q, c0, out, out_stride)   on row pointers
 *   qd_row_q8(taps, cin, a, block, nc, q, c0, out)                    (long K)
 *   qd_row2_q8_panel / qd_row2_q8(..., block, block_bytes, nc, ...)  two adjacent blocks of
 *                                     one row, QD_NR < nc <= 2 QD_NR (qgemm.h's qg_row2_q8)
 * with the semantics of qgemm.h's qg_tile_q8 / qg_row_q8 (a panel is built from the same row
 * pointers); elsewhere the panel is the row pointers themselves.
 */
#ifndef FIXNET_QDENSE_H
#define FIXNET_QDENSE_H

#include "qgemm.h"

#define QD_PANEL_MAX 32768

#if defined(__AVX2__) && !(defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__))

#define QD_ISA "avx2-c2"
#define QD_MR 4
#define QD_NR 8
#define QD_KR 2
#define QD_W16 0
#define QD_UINT8_INPUT 0

#define QD_INLINE static inline __attribute__((always_inline))

/* ---- panels -------------------------------------------------------------------------------- */

/* Values of one widened row: cin rounded up to the pair. */
static inline size_t qd_panel_k(size_t cin) { return (cin + 1) & ~(size_t)1; }

/* Bytes of the panel of `taps` taps of a tile (rows = QG_MR) or of one row (rows = 1). */
static inline size_t qd_panel_bytes(size_t taps, size_t cin, size_t rows)
{
    return taps * rows * qd_panel_k(cin) * sizeof(int16_t);
}

/* n int8 at x widened to int16 at d, then a zero if n is odd (the pair's second value, against
   a zero weight). Reads exactly n bytes. */
QD_INLINE void qd_widen(int16_t* d, const int8_t* x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i*)(d + i),
                            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(x + i))));
    if (i + 8 <= n) {
        _mm_storeu_si128((__m128i*)(d + i), _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i*)(x + i))));
        i += 8;
    }
    for (; i < n; i++)
        d[i] = x[i];
    if (n & 1)
        d[n] = 0;
}

/* The panel of `rows` rows per tap: row r of tap t (a[t * rows + r]) at
   panel + (t * rows + r) * qd_panel_k(cin). */
static inline void qd_panel_build(size_t taps, size_t cin, const int8_t** a, size_t rows,
                                  void* panel)
{
    const size_t kp = qd_panel_k(cin);
    for (size_t i = 0; i < taps * rows; i++)
        qd_widen((int16_t*)panel + i * kp, a[i], cin);
}

/* ---- the tile on a panel ------------------------------------------------------------------- */

/* Pair p of a panel row, broadcast to the 8 lanes. */
#define QD_PAIR(row, p) _mm256_set1_epi32(qd_load32((row) + 2 * (p)))
QD_INLINE int32_t qd_load32(const int16_t* p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The 4 rows' sums (bias included) of one block over every tap of a panel. */
QD_INLINE void qd_sum4(size_t taps, size_t cin, const int16_t* panel,
                                 const void* block, __m256i* s0, __m256i* s1, __m256i* s2,
                                 __m256i* s3)
{
    const size_t kp = qd_panel_k(cin), pairs = kp / 2;
    const int8_t* w = (const int8_t*)block + 8 * sizeof(int32_t);
    __m256i a0 = _mm256_loadu_si256((const __m256i*)block), a1 = a0, a2 = a0, a3 = a0;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x0 = panel + t * 4 * kp;
        const int16_t* x1 = x0 + kp;
        const int16_t* x2 = x1 + kp;
        const int16_t* x3 = x2 + kp;
        for (size_t p = 0; p < pairs; p++, w += 16) {
            const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(QD_PAIR(x0, p), wv));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(QD_PAIR(x1, p), wv));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(QD_PAIR(x2, p), wv));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(QD_PAIR(x3, p), wv));
        }
    }
    *s0 = a0;
    *s1 = a1;
    *s2 = a2;
    *s3 = a3;
}

/* The fused tile on a panel (qgemm.h): 4 rows x 8 channels requantized on the accumulators,
   rows (0, 1) and (2, 3) packed together; nc < 8 channels and mr < 4 rows stored as such. */
QD_INLINE void qd_tile_q8_panel(size_t taps, size_t cin, const void* panel,
                                     const void* block, size_t mr, size_t nc,
                                     const fx_requant* q, size_t c0, int8_t* out,
                                     size_t out_stride)
{
    const int any_left = q->any_left;
    __m256i s0, s1, s2, s3, b;
    __m128i lo, hi;
    qd_sum4(taps, cin, (const int16_t*)panel, block, &s0, &s1, &s2, &s3);
    s0 = fx_mbqm8(s0, q, c0, any_left);
    s1 = fx_mbqm8(s1, q, c0, any_left);
    s2 = fx_mbqm8(s2, q, c0, any_left);
    s3 = fx_mbqm8(s3, q, c0, any_left);
    {
        /* int32 -> int16 -> int8 with saturation, + zero point, clamp (fx_pack16's argument):
           per 128-bit lane [row 0 | row 2] and [row 1 | row 3] */
        const __m256i zp = _mm256_set1_epi16((int16_t)q->out_zp);
        const __m256i p01 = _mm256_adds_epi16(_mm256_packs_epi32(s0, s1), zp);
        const __m256i p23 = _mm256_adds_epi16(_mm256_packs_epi32(s2, s3), zp);
        b = _mm256_packs_epi16(p01, p23);
        b = _mm256_max_epi8(b, _mm256_set1_epi8((int8_t)q->act_min));
        b = _mm256_min_epi8(b, _mm256_set1_epi8((int8_t)q->act_max));
    }
    /* bytes of lane 0: row 0 ch 0-3, row 1 ch 0-3, row 2 ch 0-3, row 3 ch 0-3; lane 1: the
       same for ch 4-7: interleave the two lanes' dwords */
    lo = _mm256_castsi256_si128(b);
    hi = _mm256_extracti128_si256(b, 1);
    {
        const __m128i r01 = _mm_unpacklo_epi32(lo, hi);     /* row 0 | row 1 */
        const __m128i r23 = _mm_unpackhi_epi32(lo, hi);     /* row 2 | row 3 */
        if (nc >= 8) {
            _mm_storel_epi64((__m128i*)out, r01);
            if (mr > 1)
                _mm_storel_epi64((__m128i*)(out + out_stride), _mm_unpackhi_epi64(r01, r01));
            if (mr > 2)
                _mm_storel_epi64((__m128i*)(out + 2 * out_stride), r23);
            if (mr > 3)
                _mm_storel_epi64((__m128i*)(out + 3 * out_stride), _mm_unpackhi_epi64(r23, r23));
        } else {
            int8_t buf[32];
            _mm_storeu_si128((__m128i*)buf, r01);
            _mm_storeu_si128((__m128i*)(buf + 16), r23);
            for (size_t r = 0; r < mr; r++)
                memcpy(out + r * out_stride, buf + 8 * r, nc);
        }
    }
}

/* One row on a one-row panel (qd_panel_build with rows = 1): four accumulators over the
   pairs in turn (four independent chains of additions), summed at the end. */
QD_INLINE void qd_row_q8_panel(size_t taps, size_t cin, const void* panel,
                                    const void* block, size_t nc, const fx_requant* q,
                                    size_t c0, int8_t* out)
{
    const size_t kp = qd_panel_k(cin), pairs = kp / 2;
    const int8_t* w = (const int8_t*)block + 8 * sizeof(int32_t);
    __m256i a0 = _mm256_loadu_si256((const __m256i*)block);
    __m256i a1 = _mm256_setzero_si256(), a2 = a1, a3 = a1;
    for (size_t t = 0; t < taps; t++) {
        const int16_t* x = (const int16_t*)panel + t * kp;
        size_t p = 0;
        for (; p + 4 <= pairs; p += 4, w += 64) {
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(QD_PAIR(x, p),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w))));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(QD_PAIR(x, p + 1),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + 16)))));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(QD_PAIR(x, p + 2),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + 32)))));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(QD_PAIR(x, p + 3),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + 48)))));
        }
        for (; p < pairs; p++, w += 16)
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(QD_PAIR(x, p),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w))));
    }
    a0 = _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3));
    fx_store_n8(out, fx_pack8(fx_mbqm8(a0, q, c0, q->any_left), q), nc);
}

/* ---- the tile on row pointers (for K too long for a panel): int32 sums, through a panel on
 * the stack, QD_KC values of K at a time; qd_tile_q8 and qd_row_q8 requantize them. */

#define QD_KC 256

static inline void qd_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    /* the block's weights without its bias head: sums start from init, one tap and one
       chunk of K at a time (the weights of a tap are its pairs, 16 bytes each) */
    const int8_t* w = (const int8_t*)wv;
    int16_t panel[4 * (QD_KC + 2)];
    __m256i a0 = _mm256_loadu_si256((const __m256i*)init);
    __m256i a1 = _mm256_loadu_si256((const __m256i*)(init + init_stride));
    __m256i a2 = _mm256_loadu_si256((const __m256i*)(init + 2 * init_stride));
    __m256i a3 = _mm256_loadu_si256((const __m256i*)(init + 3 * init_stride));
    for (size_t t = 0; t < taps; t++) {
        for (size_t k0 = 0; k0 < cin; k0 += QD_KC) {
            const size_t kc = cin - k0 < QD_KC ? cin - k0 : QD_KC;
            const size_t kp = qd_panel_k(kc);
            for (size_t r = 0; r < 4; r++)
                qd_widen(panel + r * kp, a[t * 4 + r] + k0, kc);
            for (size_t p = 0; p < kp / 2; p++, w += 16) {
                const __m256i wq = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w));
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(QD_PAIR(panel, p), wq));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(QD_PAIR(panel + kp, p), wq));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(QD_PAIR(panel + 2 * kp, p), wq));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(QD_PAIR(panel + 3 * kp, p), wq));
            }
        }
    }
    _mm256_storeu_si256((__m256i*)c, a0);
    _mm256_storeu_si256((__m256i*)(c + c_stride), a1);
    _mm256_storeu_si256((__m256i*)(c + 2 * c_stride), a2);
    _mm256_storeu_si256((__m256i*)(c + 3 * c_stride), a3);
}

static inline void qd_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t mr, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out, size_t out_stride)
{
    int32_t acc[QD_MR * QD_NR];
    qd_tile(taps, cin, a, (const int8_t*)block + QD_NR * sizeof(int32_t), (const int32_t*)block,
            0, acc, QD_NR);
    fx_requant_rows(acc, QD_NR, mr, nc, q, c0, out, out_stride);
}

static inline void qd_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                             size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    const int8_t* rows[QD_MR];
    for (size_t r = 0; r < QD_MR; r++)
        rows[r] = a[0];
    (void)taps;     /* dense: one tap */
    qd_tile_q8(1, cin, rows, block, 1, nc, q, c0, out, 0);
}

/* The scalar twin over the c2 packing (qgemm.h's qg_tile_scalar is generic over the tile
   macros; this is it for QD_*). */
static inline void qd_tile_q8_scalar(size_t taps, size_t cin, const int8_t** a,
                                     const void* block, size_t mr, size_t nc,
                                     const fx_requant* q, size_t c0, int8_t* out,
                                     size_t out_stride)
{
    const int8_t* w = (const int8_t*)block + QD_NR * sizeof(int32_t);
    const size_t groups = (cin + QD_KR - 1) / QD_KR;
    uint32_t acc[QD_MR][QD_NR];
    int32_t sums[QD_MR * QD_NR];
    for (size_t r = 0; r < QD_MR; r++)
        for (size_t j = 0; j < QD_NR; j++)
            acc[r][j] = (uint32_t)((const int32_t*)block)[j];
    for (size_t t = 0; t < taps; t++)
        for (size_t g = 0; g < groups; g++)
            for (size_t r = 0; r < QD_MR; r++)
                for (size_t kk = 0; kk < QD_KR && g * QD_KR + kk < cin; kk++)
                    for (size_t j = 0; j < QD_NR; j++)
                        acc[r][j] += (uint32_t)((int32_t)a[t * QD_MR + r][g * QD_KR + kk]
                            * (int32_t)w[((t * groups + g) * QD_NR + j) * QD_KR + kk]);
    for (size_t r = 0; r < QD_MR; r++)
        for (size_t j = 0; j < QD_NR; j++)
            sums[r * QD_NR + j] = (int32_t)acc[r][j];
    fx_requant_rows_scalar(sums, QD_NR, mr, nc, q, c0, out, out_stride);
}

#else   /* conv2d's kernels and packing */

#define QD_ISA QG_ISA
#define QD_MR QG_MR
#define QD_NR QG_NR
#define QD_KR QG_KR
#define QD_W16 QG_W16
#define QD_UINT8_INPUT QG_UINT8_INPUT

static inline size_t qd_panel_bytes(size_t taps, size_t cin, size_t rows)
{
    (void)cin;
    return taps * rows * sizeof(const int8_t*);
}

static inline void qd_panel_build(size_t taps, size_t cin, const int8_t** a, size_t rows,
                                  void* panel)
{
    (void)cin;
    memcpy(panel, a, taps * rows * sizeof(const int8_t*));
}

static inline void qd_tile_q8_panel(size_t taps, size_t cin, const void* panel,
                                    const void* block, size_t mr, size_t nc,
                                    const fx_requant* q, size_t c0, int8_t* out,
                                    size_t out_stride)
{
    qg_tile_q8(taps, cin, (const int8_t**)panel, block, mr, nc, q, c0, out, out_stride);
}

static inline void qd_row_q8_panel(size_t taps, size_t cin, const void* panel,
                                   const void* block, size_t nc, const fx_requant* q,
                                   size_t c0, int8_t* out)
{
    qg_row_q8(taps, cin, (const int8_t**)panel, block, nc, q, c0, out);
}

static inline void qd_row2_q8_panel(size_t taps, size_t cin, const void* panel,
                                    const void* block, size_t block_bytes, size_t nc,
                                    const fx_requant* q, size_t c0, int8_t* out)
{
    qg_row2_q8(taps, cin, (const int8_t**)panel, block, block_bytes, nc, q, c0, out);
}

#define qd_tile_q8 qg_tile_q8
#define qd_row_q8 qg_row_q8
#define qd_row2_q8 qg_row2_q8
#define qd_tile_q8_scalar qg_tile_q8_scalar
#define QD_HAVE_ROW2 1

#endif

/* Two adjacent blocks of one row (QD_NR < nc <= 2 QD_NR): qgemm.h's qg_row2_q8 where dense
   runs on conv2d's kernels, else two one-block calls. */
#ifndef QD_HAVE_ROW2
static inline void qd_row2_q8_panel(size_t taps, size_t cin, const void* panel,
                                    const void* block, size_t block_bytes, size_t nc,
                                    const fx_requant* q, size_t c0, int8_t* out)
{
    qd_row_q8_panel(taps, cin, panel, block, QD_NR, q, c0, out);
    qd_row_q8_panel(taps, cin, panel, (const int8_t*)block + block_bytes, nc - QD_NR, q,
                    c0 + QD_NR, out + QD_NR);
}

static inline void qd_row2_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                              size_t block_bytes, size_t nc, const fx_requant* q, size_t c0,
                              int8_t* out)
{
    qd_row_q8(taps, cin, a, block, QD_NR, q, c0, out);
    qd_row_q8(taps, cin, a, (const int8_t*)block + block_bytes, nc - QD_NR, q, c0 + QD_NR,
              out + QD_NR);
}
#endif

#endif /* FIXNET_QDENSE_H */

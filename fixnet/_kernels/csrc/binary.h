/* Elementwise add / subtract of two int8 tensors (fixnet/_kernels/_merge.pyx): out[i] =
 * clamp(out_zp + MBQM(x_table[x[i]] + y_table[y[i]], out_m0, out_shift)), the sum wrapping
 * modulo 2^32, x_table / y_table the 256 rescaled values of each input (built by AddCall;
 * indexed by value + 128), MBQM = multiply_by_quantized_multiplier with one multiplier for
 * the tensor (q: requant.h's constants, every channel the same).
 *
 * AVX2: 8 elements at a time, the table lookups scalar (faster than vpgatherdd here: 0.62
 * against 1.04 ns an element on an AMD EPYC), the epilogue requant.h's vector form
 * (fx_mbqm8, fx_pack8). Elsewhere (and for the last size % 8 elements): the scalar rule,
 * fx_requant_scalar, which is the same integers.
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

#endif /* FIXNET_BINARY_H */

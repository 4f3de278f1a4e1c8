/* Requantization of int32 accumulators to int8: the epilogue of every kernel that sums
 * products (conv2d's GEMM, dense, depthwise), one vector form per instruction set, each
 * bit-exact with the scalar rule below, which is fixedpoint.pxd's requantize_accumulator and
 * fixnet.oracle's:
 *
 *   out = clamp(out_zp + rounding_divide_by_pot(SRDHM(sat32(acc << left), m0), right),
 *               act_min, act_max)
 *
 * with left = max(shift, 0), right = max(-shift, 0), SRDHM(x, m0) = floor((x m0 + 2^30) / 2^31)
 * (the saturating rounding doubling high multiply; m0 >= 0 never saturates) and
 * rounding_divide_by_pot rounding ties away from zero.
 *
 * Or, chosen per call (fx_requant_init_rounding(..., single = 1); dense only: TFLite's
 * reference FULLY_CONNECTED, fixnet.oracle.multiply_by_quantized_multiplier_single), one
 * rounding of the exact int64 product, ties away from zero:
 *
 *   out = clamp(out_zp + sign(p) ((|p| + 2^(t - 1)) >> t), act_min, act_max),
 *   p = acc m0, t = 31 - shift in [1, 62]
 *
 * (no left shift, no saturation of acc; the result, up to 2^61 in magnitude when shift > 0,
 * saturates to [-(2^31 - 1), 2^31 - 1] before the clamp, which does not change the clamped
 * value; the vector forms and the scalar twin agree on that int32 too).
 *
 * fx_requant holds, per output channel, the constants the vector forms want (derived once
 * from m0 and shift by fx_requant_init), in arrays padded with zeros (fx_requant_padded), so
 * a kernel may load a whole vector of up to FX_RQ_PAD lanes at any channel it computes. The
 * padding channels requantize every accumulator to the zero point (m0 = 0): kernels never
 * store them anyway.
 *
 * Per ISA (requant_x86.h, requant_neon.h, chosen by the build's predefined macros), and a
 * scalar fallback here:
 *   fx_requant_rows(acc, acc_stride, rows, n, q, c0, out, out_stride)
 *       out[r * out_stride + j] = fx_requant_scalar(acc[r * acc_stride + j], q, c0 + j)
 *       for r < rows, j < n.
 */
#ifndef FIXNET_REQUANT_H
#define FIXNET_REQUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FX_RQ_PAD 16

typedef struct {
    const int32_t* m0;          /* in [2^30, 2^31), or 0 */
    const int32_t* left;        /* max(shift, 0) */
    const int32_t* right;       /* max(-shift, 0) */
    const int32_t* neg_right;   /* -right (a negative shift count: NEON's vrshl) */
    const int32_t* mask;        /* 2^right - 1 */
    const int32_t* half;        /* mask >> 1 */
    const int32_t* hi_lim;      /* INT32_MAX >> left: above it, acc << left saturates */
    const int32_t* lo_lim;      /* INT32_MIN >> left */
    /* the scalar form's (fixedpoint.pxd requant_constants): 2^31 * (2^right / 2),
       2^31 * [right > 0], 31 + right */
    const int64_t* nudge;
    const int64_t* neg_adjust;
    const int64_t* total_shift;
    int32_t out_zp, act_min, act_max;
    /* FX_RQ_LEFT: some channel has left > 0 (single rounding: some channel has shift > 0,
       so a result may exceed int32 and saturates); FX_RQ_SINGLE: the single rounding. The
       epilogues take this value as an argument (read once per tile): one test in a register
       chooses the rule. */
    int any_left;
} fx_requant;

#define FX_RQ_LEFT 1
#define FX_RQ_SINGLE 2

#define FX_RQ_ARRAYS 8          /* int32 arrays */
#define FX_RQ_ARRAYS64 3        /* int64 arrays (first in the block: 8-byte aligned) */

/* Channels of the padded arrays: C rounded up to FX_RQ_PAD, plus FX_RQ_PAD more, so a vector
   of up to FX_RQ_PAD lanes loaded at any channel c < C stays inside (grouped convs start
   their blocks at channels that are not multiples of the tile). */
static inline size_t fx_requant_padded(size_t channels) {
    return (channels + FX_RQ_PAD - 1) / FX_RQ_PAD * FX_RQ_PAD + FX_RQ_PAD;
}

/* Bytes of the block fx_requant_init fills for `channels` channels (4-byte aligned). */
static inline size_t fx_requant_bytes(size_t channels) {
    return fx_requant_padded(channels) * (FX_RQ_ARRAYS * sizeof(int32_t)
                                          + FX_RQ_ARRAYS64 * sizeof(int64_t));
}

/* Fill q and its arrays (in `block`, fx_requant_bytes(channels) bytes) from m0 and shift
   (both already checked: m0 in [2^30, 2^31) or 0, shift in [-31, 30]), for the double
   rounding (single = 0) or the single rounding (single = 1). With the single rounding the
   arrays hold, per channel, t = 31 - shift in the forms the epilogues want: left 0,
   right t - 1 (AVX2: (|p| >> (t - 1)) + 1 >> 1), neg_right -t (NEON: vrshl by -t), nudge
   2^(t - 1), neg_adjust 1, total_shift t (scalar: (p + 2^(t - 1) - [p < 0]) >> t, which is
   -((-p + 2^(t - 1)) >> t) for p < 0); mask, half, hi_lim, lo_lim unused (0). */
static inline void fx_requant_init_rounding(fx_requant* q, void* block, const int32_t* m0,
                                            const int32_t* shift, size_t channels,
                                            int32_t out_zp, int32_t act_min, int32_t act_max,
                                            int single) {
    size_t n = fx_requant_padded(channels), c;
    int64_t* a64 = (int64_t*)block;
    int64_t *nudge = a64, *neg_adjust = a64 + n, *total_shift = a64 + 2 * n;
    int32_t* a = (int32_t*)(a64 + FX_RQ_ARRAYS64 * n);
    int32_t *qm0 = a, *left = a + n, *right = a + 2 * n, *neg_right = a + 3 * n;
    int32_t *mask = a + 4 * n, *half = a + 5 * n, *hi = a + 6 * n, *lo = a + 7 * n;
    memset(block, 0, fx_requant_bytes(channels));
    q->any_left = 0;
    for (c = 0; c < n; c++) {
        int32_t s = c < channels ? shift[c] : 0;
        int32_t l = s > 0 ? s : 0, r = s < 0 ? -s : 0;
        qm0[c] = c < channels ? m0[c] : 0;
        if (single) {
            int32_t t = 31 - s;
            right[c] = t - 1;
            neg_right[c] = -t;
            nudge[c] = (int64_t)1 << (t - 1);
            neg_adjust[c] = 1;
            total_shift[c] = t;
            q->any_left |= l > 0;
            continue;
        }
        left[c] = l;
        right[c] = r;
        neg_right[c] = -r;
        mask[c] = (int32_t)(((int64_t)1 << r) - 1);
        half[c] = mask[c] >> 1;
        hi[c] = INT32_MAX >> l;
        lo[c] = INT32_MIN >> l;
        nudge[c] = (((int64_t)1 << r) >> 1) << 31;
        neg_adjust[c] = r > 0 ? ((int64_t)1 << 31) : 0;
        total_shift[c] = 31 + r;
        q->any_left |= l > 0;
    }
    q->m0 = qm0;
    q->left = left;
    q->right = right;
    q->neg_right = neg_right;
    q->mask = mask;
    q->half = half;
    q->hi_lim = hi;
    q->lo_lim = lo;
    q->nudge = nudge;
    q->neg_adjust = neg_adjust;
    q->total_shift = total_shift;
    q->out_zp = out_zp;
    q->act_min = act_min;
    q->act_max = act_max;
    if (single)
        q->any_left |= FX_RQ_SINGLE;
}

static inline void fx_requant_init(fx_requant* q, void* block, const int32_t* m0,
                                   const int32_t* shift, size_t channels, int32_t out_zp,
                                   int32_t act_min, int32_t act_max) {
    fx_requant_init_rounding(q, block, m0, shift, channels, out_zp, act_min, act_max, 0);
}

/* multiply_by_quantized_multiplier(acc, m0[c], shift[c]): branch-free scalar form. Both
   roundings (SRDHM, then the rounding divide by 2^right, ties away from zero) in one int64
   sum and one arithmetic shift: fixedpoint.pxd's requantize_precomputed, whose comment
   proves it equal to the two-step rule. */
static inline int32_t fx_mbqm_scalar(int32_t acc, const fx_requant* q, size_t c) {
    int64_t x = acc, u;
    int32_t l = q->left[c];
    if (q->any_left & FX_RQ_SINGLE) {   /* one rounding of p = acc m0, saturated to int32 */
        u = x * q->m0[c];
        u = (u + q->nudge[c] - ((u >> 63) & q->neg_adjust[c])) >> q->total_shift[c];
        return u > INT32_MAX ? INT32_MAX : u < -INT32_MAX ? -INT32_MAX : (int32_t)u;
    }
    if (l)
        x = acc > q->hi_lim[c] ? INT32_MAX
            : acc < q->lo_lim[c] ? INT32_MIN : (int32_t)((uint32_t)acc << l);
    u = x * q->m0[c] + ((int64_t)1 << 30);
    return (int32_t)((u + q->nudge[c] - ((u >> 63) & q->neg_adjust[c])) >> q->total_shift[c]);
}

/* requantize_accumulator(acc, m0[c], shift[c], out_zp, act_min, act_max). */
static inline int8_t fx_requant_scalar(int32_t acc, const fx_requant* q, size_t c) {
    int64_t v = (int64_t)q->out_zp + fx_mbqm_scalar(acc, q, c);
    v = v < q->act_min ? q->act_min : v;
    v = v > q->act_max ? q->act_max : v;
    return (int8_t)v;
}

static inline void fx_requant_rows_scalar(const int32_t* acc, size_t acc_stride, size_t rows,
                                          size_t n, const fx_requant* q, size_t c0,
                                          int8_t* out, size_t out_stride) {
    size_t r, j;
    for (r = 0; r < rows; r++)
        for (j = 0; j < n; j++)
            out[r * out_stride + j] = fx_requant_scalar(acc[r * acc_stride + j], q, c0 + j);
}

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include "requant_x86.h"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include "requant_neon.h"
#endif

#ifndef FX_HAVE_REQUANT_ROWS
#define FX_REQUANT_ISA "scalar"
static inline void fx_requant_rows(const int32_t* acc, size_t acc_stride, size_t rows,
                                   size_t n, const fx_requant* q, size_t c0, int8_t* out,
                                   size_t out_stride) {
    fx_requant_rows_scalar(acc, acc_stride, rows, n, q, c0, out, out_stride);
}
#endif

#endif /* FIXNET_REQUANT_H */

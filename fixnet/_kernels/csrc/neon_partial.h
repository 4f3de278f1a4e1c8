/* Loads and stores of fewer than 16 bytes on aarch64 NEON that touch no byte past them: the K
 * tail of a row of activations (qgemm_neon.h, qgemm_neondot.h) and the last, partial block of
 * output channels (the GEMM epilogues, depthwise's tail tile). Straight-line code in pieces of
 * 8, 4, 2 and 1 bytes chosen by the bits of n (the same branches for every call of a layer: the
 * predictor learns them), no library call (a variable-length memcpy inside a kernel becomes a
 * call, and a call makes the compiler spill every vector register it keeps across it).
 * aarch64 Linux is little-endian: byte i of a vector is byte i of memory. */
#ifndef FIXNET_NEON_PARTIAL_H
#define FIXNET_NEON_PARTIAL_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define NEON_INLINE static inline __attribute__((always_inline))
#else
#define NEON_INLINE static inline
#endif

/* A compiler barrier for loads: GCC's first scheduling pass (on at -O2) hoists every weight load
   of an unrolled K step to its top, which keeps 16 weight vectors live next to 16 accumulators
   and spills some; a kernel puts this between its groups of loads so that only a group's weights
   are live at a time. It emits no instruction (the out-of-order core reorders anyway). */
#if defined(__GNUC__) || defined(__clang__)
#define NEON_LOAD_FENCE() __asm__ __volatile__("" ::: "memory")
#else
#define NEON_LOAD_FENCE() ((void)0)
#endif

/* Bytes [0, n) of p in lanes [0, n), the other lanes 0; 0 < n < 16. */
NEON_INLINE int8x16_t neon_load_partial16(const int8_t* p, size_t n)
{
    uint64_t lo = 0, t = 0;
    if (n & 8) {
        memcpy(&lo, p, 8);
        p += 8;
    }
    if (n & 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        t = v;
        p += 4;
    }
    if (n & 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        t |= (uint64_t)v << ((n & 4) * 8);
        p += 2;
    }
    if (n & 1)
        t |= (uint64_t)(uint8_t)*p << ((n & 6) * 8);
    if (n & 8)
        return vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(lo), vcreate_u64(t)));
    return vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(t), vcreate_u64(0)));
}

/* Lanes [0, n) of v to p[0 .. n); 0 < n < 8. */
NEON_INLINE void neon_store_partial8(int8_t* p, int8x8_t v, size_t n)
{
    if (n & 4) {
        const uint32_t t = vget_lane_u32(vreinterpret_u32_s8(v), 0);
        memcpy(p, &t, 4);
        v = vext_s8(v, v, 4);
        p += 4;
    }
    if (n & 2) {
        const uint16_t t = vget_lane_u16(vreinterpret_u16_s8(v), 0);
        memcpy(p, &t, 2);
        v = vext_s8(v, v, 2);
        p += 2;
    }
    if (n & 1)
        *p = vget_lane_s8(v, 0);
}

/* Lanes [0, n) of v to p[0 .. n); 0 < n < 16. */
NEON_INLINE void neon_store_partial16(int8_t* p, int8x16_t v, size_t n)
{
    int8x8_t h = vget_low_s8(v);
    if (n & 8) {
        vst1_s8(p, h);
        h = vget_high_s8(v);
        p += 8;
    }
    if (n & 7)
        neon_store_partial8(p, h, n & 7);
}

#endif /* FIXNET_NEON_PARTIAL_H */

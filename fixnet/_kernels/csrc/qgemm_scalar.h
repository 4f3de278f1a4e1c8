/* conv2d's GEMM micro-kernel, any other target: the scalar twin is the kernel.
 * Included by qgemm.h (which defines the tile macros and the packing it reads); see there. */
#ifndef FIXNET_QGEMM_SCALAR_H
#define FIXNET_QGEMM_SCALAR_H

static inline void qg_tile(size_t taps, size_t cin, const int8_t** a, const void* wv,
                           const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    qg_tile_scalar(taps, cin, a, wv, init, init_stride, c, c_stride);
}

#endif /* FIXNET_QGEMM_SCALAR_H */

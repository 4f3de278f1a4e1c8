"""Oracle for convolutions (conv2d, depthwise_conv2d). Filled in with the conv kernels."""
__all__ = []

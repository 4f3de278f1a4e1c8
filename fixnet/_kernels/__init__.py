"""Integer-only Cython kernels. Private: call them through fixnet.runtime, which checks
shapes and dtypes once when it plans a model."""

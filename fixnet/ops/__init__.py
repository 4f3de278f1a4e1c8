"""IR ops: one module per op, each holding the op's shape rule, its float reference, its
quantization, and the runtime step that calls its Cython kernel (with the oracle beside it).

Where a Keras layer class becomes IR nodes: ``fixnet/keras/layers/``.
"""
from .base import OPS, KeepsWidened, Op, op_for, register  # noqa: F401  (the package's names)
from . import dense, affine, activation, softmax, reshape, conv, pool, merge, prelu, resize, conv_transpose, recurrent, embedding, mask  # noqa: F401  (fills OPS)

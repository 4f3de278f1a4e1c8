"""Oracle of the transposed convolution's zero insertion (fixnet/ops/conv_transpose.py; the step
inserts the zeros with NumPy, then a conv2d runs), on int8 or int16 tensors."""
import numpy as np

from .core import _check_act_zero_point
from .resize import _nhwc, _positive

__all__ = [
    "zero_insert",
]


def zero_insert(x, stride_h, stride_w, value):
    """Spread the input out by the strides, filling the gaps with ``value`` (the zero point, so
    the gaps are real 0.0): the first half of a transposed convolution.
    out[n, i, j, c] = x[n, i / stride_h, j / stride_w, c] where both divide exactly, else value.
    x: int8 (value a zero point in [-128, 127]) or int16 (value 0: int16 tensors are
    symmetric). Returns x's type [N, (H - 1) * stride_h + 1, (W - 1) * stride_w + 1, C]."""
    x, dtype = _nhwc(x, "zero_insert")
    _positive("zero_insert", stride_h=stride_h, stride_w=stride_w)
    _check_act_zero_point(value, dtype, "value")
    n, h, w, c = x.shape
    oh, ow = (h - 1) * stride_h + 1, (w - 1) * stride_w + 1
    out = np.empty((n, oh, ow, c), dtype)
    for i in range(oh):
        for j in range(ow):
            if i % stride_h == 0 and j % stride_w == 0:
                out[:, i, j, :] = x[:, i // stride_h, j // stride_w, :]
            else:
                out[:, i, j, :] = value
    return out

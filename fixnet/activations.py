"""Elementwise activation functions by their Keras names, in float64 NumPy.

Each entry: (function, clamp). ``clamp`` is (low, high) in real units when the function is a
plain clamp (it can then be fused into the clamp bounds of the layer before it), else None and
the int8 version is a 256-entry lookup table built at quantize time.
"""
import numpy as np


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))      # stable for large |x|


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

ACTIVATIONS = {
    "linear": (lambda x: x, (None, None)),
    "relu": (lambda x: np.maximum(x, 0.0), (0.0, None)),
    "relu6": (lambda x: np.clip(x, 0.0, 6.0), (0.0, 6.0)),
    "sigmoid": (_sigmoid, None),
    "tanh": (np.tanh, None),
    "softplus": (lambda x: np.logaddexp(0.0, x), None),
    "softsign": (lambda x: x / (1.0 + np.abs(x)), None),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))), None),
    "selu": (lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))), None),
    "swish": (lambda x: x * _sigmoid(x), None),
    "silu": (lambda x: x * _sigmoid(x), None),
    "exponential": (np.exp, None),
}


def relu_with_params(max_value=None, negative_slope=0.0, threshold=0.0):
    """Keras ReLU layer semantics: f(x) = max_value if x >= max_value; x if threshold < x <
    max_value; negative_slope * (x - threshold) otherwise. Returns (function, clamp)."""
    if negative_slope == 0.0 and threshold == 0.0:
        return ((lambda x: np.clip(x, 0.0, max_value) if max_value is not None else np.maximum(x, 0.0)),
                (0.0, max_value))

    def f(x):
        y = np.where(x > threshold, x, negative_slope * (x - threshold))
        return np.minimum(y, max_value) if max_value is not None else y
    return f, None

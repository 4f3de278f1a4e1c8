"""Elementwise activation functions by their Keras names, in float64 NumPy.

``activation(name, **params)`` returns (function, clamp). ``clamp`` is (low, high) in real
units when the function is a plain clamp (it is then fused into the clamp bounds of the layer
before it, or becomes a rescale), else None and the int8 version is a 256-entry lookup table
built at quantize time.
"""
import math

import numpy as np

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))      # stable for large |x|


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x, approximate=False):
    if approximate:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _relu(max_value=None, negative_slope=0.0, threshold=0.0):
    """Keras ReLU: max_value if x >= max_value; x if threshold < x < max_value;
    negative_slope * (x - threshold) otherwise."""
    if negative_slope == 0.0 and threshold == 0.0:
        if max_value is None:
            return (lambda x: np.maximum(x, 0.0)), (0.0, None)
        return (lambda x: np.clip(x, 0.0, max_value)), (0.0, float(max_value))

    def f(x):
        y = np.where(x > threshold, x, negative_slope * (x - threshold))
        return np.minimum(y, max_value) if max_value is not None else y
    return f, None


def _hard_sigmoid(keras3=True):
    # Keras 3: relu6(x + 3) / 6; Keras 2 and tf.keras 2: clip(0.2 x + 0.5, 0, 1)
    if keras3:
        return lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0
    return lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0)


FUNCTIONS = {
    "linear": lambda: ((lambda x: x), (None, None)),
    "relu": lambda **p: _relu(**p),
    "relu6": lambda: _relu(max_value=6.0),
    "leaky_relu": lambda negative_slope=0.2: ((lambda x: np.where(x >= 0, x, negative_slope * x)), None),
    "sigmoid": lambda: (_sigmoid, None),
    "hard_sigmoid": lambda keras3=True: (_hard_sigmoid(keras3), None),
    "hard_silu": lambda: ((lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0), None),
    "tanh": lambda: (np.tanh, None),
    "softplus": lambda: ((lambda x: np.logaddexp(0.0, x)), None),
    "softsign": lambda: ((lambda x: x / (1.0 + np.abs(x))), None),
    "elu": lambda alpha=1.0: ((lambda x: _elu(x, alpha)), None),
    "selu": lambda: ((lambda x: _SELU_SCALE * _elu(x, _SELU_ALPHA)), None),
    "swish": lambda: ((lambda x: x * _sigmoid(x)), None),
    "gelu": lambda approximate=False: ((lambda x: _gelu(x, approximate)), None),
    "mish": lambda: ((lambda x: x * np.tanh(np.logaddexp(0.0, x))), None),
    "exponential": lambda: (np.exp, None),
}
ALIASES = {"silu": "swish", "hard_swish": "hard_silu"}


def canonical(name):
    return ALIASES.get(name, name)


def saturation_window(name, **params):
    """(a, b) when the function is constant below a and above b (its int8 table then only
    needs inputs in [a, b], so the layer before can clamp to it and quantize finer), else None."""
    name = canonical(name)
    if name == "hard_sigmoid":
        return (-3.0, 3.0) if params.get("keras3", True) else (-2.5, 2.5)
    return None


def known(name):
    return canonical(name) in FUNCTIONS


def activation(name, **params):
    """(function, clamp) of activation ``name`` with layer parameters ``params``."""
    return FUNCTIONS[canonical(name)](**params)

"""Arithmetic written on tensors in functional code (``x / 255.``, ``relu6(x + 3.) * (1. / 6.)``,
``a * b``), as the two writers store it, mapped onto existing IR ops.

- tf.keras 2 (TF 2.4+) stores each call as a ``TFOpLambda`` layer: ``config["function"]`` names the
  TensorFlow function ("__operators__.add", "math.multiply", "nn.relu6", ...); its inbound node
  holds the first argument (a tensor, or ``["_CONSTANT_VALUE", -1, value]`` for a reversed
  operand like ``1. - x``) and the other arguments as keyword arguments (``{"y": 3.0, "name":
  null}``, or ``{"y": [layer, node, tensor]}`` for a tensor).
- Keras 3 stores each call as an operation in the layer list: ``class_name`` is the operation's
  class ("Add", "TrueDivide", "Relu6", ...; some are spelled like merge layers), ``module``
  "keras.src.ops.numpy" / "keras.src.ops.nn" (null in ``.h5`` files), ``config`` only the name
  and constructor arguments (no ``trainable``/``dtype`` as every layer has); the inbound node's
  ``args`` hold the operands, tensors as ``__keras_tensor__`` dicts, constants as plain numbers or
  ``__numpy__`` dicts.

Only the functions in the tables below are understood, by name: nothing is imported or
evaluated. A constant operand becomes an ``affine`` node (per-channel scale and offset over the
last axis), two tensor operands a ``binary`` node, an activation function an ``activation`` (or
``softmax``) node. Anything else is refused with the layer and the function named.
"""
import numpy as np

from .. import activations
from .layers import MAX_ACTIVATION_PARAM, Unsupported, broadcast_inputs, config_float

ARITH = ("add", "subtract", "multiply", "divide", "maximum", "minimum", "negative")

# tf.keras 2 TFOpLambda "function" -> (canonical function, {keyword: (activation param, default)})
TF_FUNCTIONS = {
    "__operators__.add": ("add", {}), "math.add": ("add", {}), "math.add_v2": ("add", {}),
    "math.subtract": ("subtract", {}), "math.multiply": ("multiply", {}),
    "math.truediv": ("divide", {}), "math.divide": ("divide", {}),
    "math.maximum": ("maximum", {}), "math.minimum": ("minimum", {}),
    "math.negative": ("negative", {}),
    "nn.relu": ("relu", {}), "nn.relu6": ("relu6", {}),
    "math.sigmoid": ("sigmoid", {}), "nn.sigmoid": ("sigmoid", {}),
    "math.tanh": ("tanh", {}), "nn.tanh": ("tanh", {}),
    "nn.silu": ("swish", {}), "nn.swish": ("swish", {}),
    "nn.elu": ("elu", {}), "nn.selu": ("selu", {}),
    "math.softplus": ("softplus", {}), "nn.softplus": ("softplus", {}),
    "math.softsign": ("softsign", {}), "nn.softsign": ("softsign", {}),
    "math.exp": ("exponential", {}),
    "nn.leaky_relu": ("leaky_relu", {"alpha": ("negative_slope", 0.2)}),
    "nn.gelu": ("gelu", {"approximate": ("approximate", False)}),
    "nn.softmax": ("softmax", {"axis": ("axis", -1)}), "math.softmax": ("softmax", {"axis": ("axis", -1)}),
}

# Keras 3 operation class -> the same
KERAS_OPS = {
    "Add": ("add", {}), "Subtract": ("subtract", {}), "Multiply": ("multiply", {}),
    "Divide": ("divide", {}), "TrueDivide": ("divide", {}),
    "Maximum": ("maximum", {}), "Minimum": ("minimum", {}), "Negative": ("negative", {}),
    "Relu": ("relu", {}), "Relu6": ("relu6", {}), "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}),
    "Silu": ("swish", {}), "Swish": ("swish", {}), "Elu": ("elu", {"alpha": ("alpha", 1.0)}),
    "Selu": ("selu", {}), "Softplus": ("softplus", {}), "Softsign": ("softsign", {}),
    "Exp": ("exponential", {}), "HardSigmoid": ("hard_sigmoid", {}), "HardSilu": ("hard_silu", {}),
    "LeakyRelu": ("leaky_relu", {"negative_slope": ("negative_slope", 0.2)}),
    "Gelu": ("gelu", {"approximate": ("approximate", True)}),
    "Softmax": ("softmax", {"axis": ("axis", -1)}),
}


class TensorArg:
    """A tensor operand of an operation call: its IR tensor name and shape (no batch)."""

    def __init__(self, index, name=None, shape=None):
        self.index, self.name, self.shape = index, name, shape

    def __repr__(self):
        return f"<tensor {self.name or self.index}>"


def describe(kind, function):
    return f"TensorFlow function 'tf.{function}'" if kind == "tf" else f"keras.ops operation '{function}'"


def problem(kind, function):
    """Why a function cannot be handled at all (not in the whitelist), or None."""
    table = TF_FUNCTIONS if kind == "tf" else KERAS_OPS
    if function in table:
        return None
    return f"{describe(kind, function)} is not supported; fixnet runs only whitelisted elementwise functions"


def constant(value, what):
    """A constant operand as a float64 array, from a number, a nested list of numbers, or a Keras 3
    ``__numpy__``/``__tensor__`` dict (its stored values; nothing is evaluated)."""
    if isinstance(value, dict) and value.get("class_name") in ("__numpy__", "__tensor__"):
        value = (value.get("config") or {}).get("value")
    if isinstance(value, bool) or value is None:
        raise Unsupported(f"{what} {value!r} is not a number")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Unsupported(f"{what} {value!r} is not a number or an array of numbers") from None
    if arr.dtype != np.float64 or not np.all(np.isfinite(arr)):
        raise Unsupported(f"{what} {value!r} is not a finite number")
    return arr


def per_channel(arr, shape, what):
    """A constant that broadcasts against a tensor of ``shape`` (no batch) without changing its
    shape and varies at most along the last axis, as a vector of the last axis' size."""
    c = shape[-1] if shape else 1
    if arr.ndim > len(shape) + 1 or any(d != 1 for d in arr.shape[:-1]) or \
            (arr.ndim and arr.shape[-1] not in (1, c)):
        raise Unsupported(f"{what} of shape {arr.shape} does not broadcast per channel against a "
                          f"tensor of shape {tuple(shape)}; only scalars and vectors of the last "
                          "axis are supported")
    return np.broadcast_to(arr.reshape(-1) if arr.ndim else arr, (c,)).astype(np.float64)


def _take_operands(fname, args, kwargs, n):
    """The ``n`` operands of a call: positional arguments first, then the writers' keyword
    names for the second operand."""
    ops = list(args)
    for key in ("x", "x1", "y", "x2"):        # TensorFlow's and keras.ops' operand names, in order
        if key in kwargs and len(ops) < n:
            ops.append(kwargs.pop(key))
    if len(ops) != n:
        raise Unsupported(f"{fname} called with {len(ops)} operand(s), expected {n}")
    return ops


def handle(layer, kind, function, args, kwargs):
    """Emit the IR for one call. ``args``/``kwargs``: the call's arguments, tensors as TensorArg."""
    table = TF_FUNCTIONS if kind == "tf" else KERAS_OPS
    fname = describe(kind, function)
    if function not in table:
        raise Unsupported(problem(kind, function))
    canon, param_spec = table[function]
    kwargs = dict(kwargs)
    if kind == "tf" and not isinstance(kwargs.get("name"), TensorArg):
        kwargs.pop("name", None)                 # only names the TensorFlow op
    if canon in ARITH:
        n = 1 if canon == "negative" else 2
        ops = _take_operands(fname, args, kwargs, n)
        if kwargs:
            raise Unsupported(f"{fname} with argument(s) {', '.join(sorted(kwargs))} is not supported")
        _arith(layer, fname, canon, ops)
        return
    if len(args) != 1 or not isinstance(args[0], TensorArg):
        raise Unsupported(f"{fname} expects one tensor argument, got {args!r}")
    x = args[0]
    params = {}
    for key, value in kwargs.items():
        if key not in param_spec:
            raise Unsupported(f"{fname} with argument '{key}' is not supported")
        pname, default = param_spec[key]
        if isinstance(value, TensorArg):
            raise Unsupported(f"{fname}: argument '{key}' is a tensor; only constants are supported")
        params[pname] = default if value is None else value
    if canon == "softmax":
        axis = params.get("axis", -1)
        if not isinstance(axis, int) or axis not in (-1, len(x.shape)):
            raise Unsupported(f"{fname} over axis {axis!r}; only the last axis is supported")
        layer.emit("softmax", [x.name], layer.outputs, {"axis": -1})
        return
    for pname, default in param_spec.values():          # every parameter explicit
        params.setdefault(pname, default)
    if canon in ("leaky_relu", "elu"):
        big = MAX_ACTIVATION_PARAM
        try:
            params = {k: config_float(v, f"{fname}: {k}", -big, big) for k, v in params.items()}
        except ValueError as e:
            raise ValueError(f"{e} (a damaged config)") from None
    elif canon == "gelu" and not isinstance(params["approximate"], bool):
        raise Unsupported(f"{fname}: approximate={params['approximate']!r} is not a bool")
    elif canon == "hard_sigmoid":
        params = {"keras3": True}                # keras.ops.hard_sigmoid is relu6(x + 3) / 6
    layer.emit("activation", [x.name], layer.outputs,
               {"fn": activations.canonical(canon), "params": params})


def _arith(layer, fname, canon, ops):
    tensors = [o for o in ops if isinstance(o, TensorArg)]
    if not tensors:
        raise Unsupported(f"{fname} of constants only")
    if canon == "negative":
        (x,) = ops
        c = x.shape[-1] if x.shape else 1
        layer.emit("affine", [x.name], layer.outputs, {"clamp": None},
                   {"scale": -np.ones(c), "offset": np.zeros(c)})
        return
    if len(tensors) == 2:
        a, b = ops
        if canon == "divide":
            raise Unsupported(f"{fname} of two tensors (a division by a tensor) is not supported")
        names = [a.name, b.name]
        if tuple(a.shape) != tuple(b.shape):
            names = broadcast_inputs(layer, names, [a.shape, b.shape], fname)
        layer.emit("binary", names, layer.outputs, {"kind": canon})
        return
    reversed_ = isinstance(ops[1], TensorArg)          # c - x, c / x, c * x, c + x
    x = ops[1] if reversed_ else ops[0]
    k = per_channel(constant(ops[0] if reversed_ else ops[1], "constant operand"), x.shape,
                    "constant operand")
    c = k.shape[0]
    one, zero = np.ones(c), np.zeros(c)
    if canon == "add":
        scale, offset = one, k
    elif canon == "subtract":
        scale, offset = (-one, k) if reversed_ else (one, -k)
    elif canon == "multiply":
        scale, offset = k, zero
    elif canon == "divide":
        if reversed_:
            raise Unsupported(f"{fname} of a constant by a tensor (a reciprocal) is not supported")
        if np.any(k == 0):
            raise Unsupported(f"{fname} by zero")
        scale, offset = 1.0 / k, zero
    else:
        raise Unsupported(f"{fname} of a tensor and a constant is not supported; only of two tensors")
    layer.emit("affine", [x.name], layer.outputs, {"clamp": None}, {"scale": scale, "offset": offset})

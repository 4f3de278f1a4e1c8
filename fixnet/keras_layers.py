"""Where each Keras layer class becomes IR nodes: one handler per class, in one registry.

A handler receives a ``KerasLayer`` (its config, its weights, the names and shapes of its input
tensors, the names of its outputs) and calls ``layer.emit(...)`` for each IR node it produces.
It raises ``Unsupported(reason)`` for a configuration fixnet cannot run; the loader collects
these over the whole model and reports them together.
"""
import numpy as np

from .activations import ACTIVATIONS

KERAS_LAYERS = {}

# layers whose presence means "run code stored in the file": refused outright
CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}

# Keras 3 `registered_name`s of built-in layers have no ">"; custom ones look like "Pkg>Name"


class Unsupported(Exception):
    """A layer (or its configuration) fixnet cannot run; the message says why."""


def keras_layer(*class_names):
    def deco(fn):
        for c in class_names:
            KERAS_LAYERS[c] = fn
        return fn
    return deco


class KerasLayer:
    """What a handler sees of one call of a Keras layer."""

    def __init__(self, name, class_name, config, weights, inputs, input_shapes, outputs, emit):
        self.name = name
        self.class_name = class_name
        self.config = config
        self.weights = weights              # fixnet.keras_h5.LayerWeights
        self.inputs = inputs                # tensor names
        self.input_shapes = input_shapes    # shapes without batch
        self.outputs = outputs              # tensor names this call must produce
        self._emit = emit

    def emit(self, op, inputs, outputs, attrs=None, weights=None, suffix=""):
        self._emit(op, inputs, outputs, attrs or {}, weights or {}, suffix)

    def tensor(self, suffix):
        """Name of an intermediate tensor private to this layer."""
        return f"{self.outputs[0]}/{suffix}"

    def single_input(self):
        if len(self.inputs) != 1:
            raise Unsupported(f"expects one input, got {len(self.inputs)}")
        return self.inputs[0], self.input_shapes[0]


def activation_name(ident):
    """Normalise a Keras activation identifier (string, or a serialized function) to a name."""
    if ident is None:
        return "linear"
    if isinstance(ident, str):
        name = ident.rsplit(".", 1)[-1]
    elif isinstance(ident, dict):
        cfg = ident.get("config")
        if isinstance(cfg, str):
            name = cfg
        elif isinstance(cfg, dict) and isinstance(cfg.get("name"), str) and ident.get("class_name") == "function":
            name = cfg["name"]
        else:
            raise Unsupported(f"activation {ident.get('class_name')!r} is not a built-in function")
    else:
        raise Unsupported(f"activation {ident!r} is not understood")
    return name.lower()


def emit_activation(layer, src, dst, name):
    """Emit the node(s) computing activation ``name`` from tensor src to tensor dst."""
    if name == "softmax":
        layer.emit("softmax", [src], [dst], {"axis": -1}, suffix="softmax")
    elif name in ACTIVATIONS:
        layer.emit("activation", [src], [dst], {"fn": name}, suffix=name)
    else:
        raise Unsupported(f"activation '{name}' is not supported yet")


def channel_axis_is_last(axis, rank):
    """True when a Keras ``axis`` (int or list, counting the batch axis) is the last axis."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis == -1 or axis == rank        # rank excludes batch, so the last axis is `rank`


# --- handlers --------------------------------------------------------------------------------

@keras_layer("Dense")
def dense(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    use_bias = cfg.get("use_bias", True)
    w = layer.weights.take(["kernel", "bias"] if use_bias else ["kernel"])
    kernel = w["kernel"]
    units = int(cfg.get("units", kernel.shape[-1]))
    if kernel.ndim != 2 or kernel.shape[1] != units or (shape and kernel.shape[0] != shape[-1]):
        layer.weights.misshapen("kernel", kernel.shape, (shape[-1] if shape else "?", units))
    weights = {"kernel": kernel}
    if use_bias:
        if w["bias"].shape != (units,):
            layer.weights.misshapen("bias", w["bias"].shape, (units,))
        weights["bias"] = w["bias"]
    act = activation_name(cfg.get("activation"))
    if act == "linear" or (act in ACTIVATIONS and ACTIVATIONS[act][1] is not None):
        clamp = ACTIVATIONS[act][1] if act != "linear" else None
        layer.emit("dense", [src], layer.outputs, {"clamp": clamp}, weights)
    else:
        pre = layer.tensor("preactivation")
        layer.emit("dense", [src], [pre], {"clamp": None}, weights)
        emit_activation(layer, pre, layer.outputs[0], act)


@keras_layer("BatchNormalization")
def batch_normalization(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    if not channel_axis_is_last(cfg.get("axis", -1), len(shape)):
        raise Unsupported(f"normalises axis {cfg.get('axis')} of a rank-{len(shape) + 1} tensor; "
                          "only the last (channels_last) axis is supported")
    names = (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
    w = layer.weights.take(names + ["moving_mean", "moving_variance"])
    c = shape[-1]
    for k, v in w.items():
        if v.shape != (c,):
            layer.weights.misshapen(k, v.shape, (c,))
    eps = float(cfg.get("epsilon", 1e-3))
    gamma = w.get("gamma", np.ones(c, np.float32)).astype(np.float64)
    beta = w.get("beta", np.zeros(c, np.float32)).astype(np.float64)
    inv = gamma / np.sqrt(w["moving_variance"].astype(np.float64) + eps)
    offset = beta - w["moving_mean"].astype(np.float64) * inv
    layer.emit("affine", [src], layer.outputs, {"clamp": None}, {"scale": inv, "offset": offset})


@keras_layer("Activation")
def activation(layer):
    src, _ = layer.single_input()
    name = activation_name(layer.config.get("activation"))
    if name == "linear":
        layer.emit("identity", [src], layer.outputs)
    else:
        emit_activation(layer, src, layer.outputs[0], name)


@keras_layer("ReLU")
def relu(layer):
    cfg = layer.config
    src, _ = layer.single_input()
    max_value = cfg.get("max_value")
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    threshold = float(cfg.get("threshold", 0.0) or 0.0)
    params = {"max_value": None if max_value is None else float(max_value),
              "negative_slope": slope, "threshold": threshold}
    layer.emit("activation", [src], layer.outputs, {"fn": "relu_params", "params": params})


@keras_layer("Softmax")
def softmax(layer):
    src, shape = layer.single_input()
    axis = layer.config.get("axis", -1)
    if not channel_axis_is_last(axis, len(shape)):
        raise Unsupported(f"softmax over axis {axis}; only the last axis is supported")
    layer.emit("softmax", [src], layer.outputs, {"axis": -1})


@keras_layer("Flatten")
def flatten(layer):
    src, shape = layer.single_input()
    if layer.config.get("data_format") == "channels_first" and len(shape) > 1:
        raise Unsupported("Flatten with data_format='channels_first' reorders data; "
                          "only channels_last is supported")
    layer.emit("reshape", [src], layer.outputs, {"shape": (-1,)})


@keras_layer("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout",
             "GaussianDropout", "GaussianNoise", "ActivityRegularization")
def identity_at_inference(layer):
    src, _ = layer.single_input()
    layer.emit("identity", [src], layer.outputs)

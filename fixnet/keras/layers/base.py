"""What every Keras layer handler builds on: the registry (KERAS_LAYERS, ``keras_layer``), the
``KerasLayer`` a handler receives, ``Unsupported``, and the checked readers of config values
(ints, floats, tuples, activations, window attributes)."""
import numpy as np

from ... import activations


KERAS_LAYERS = {}

# layers whose presence means "run code stored in the file": refused outright (TFOpLambda,
# a TensorFlow function called on tensors, is read by name against a whitelist: fixnet/keras/arithmetic.py)
CODE_LAYERS = {"Lambda", "SlicingOpLambda"}

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

    def __init__(self, name, class_name, config, weights, inputs, input_shapes, outputs, emit,
                 keras_version="3", output_name=None, input_masks=None):
        self.name = name
        self._output_name = output_name     # k -> the name of the call's output k
        # the sequence mask (a (T,) tensor name, see fixnet/ops/mask.py) of each input, or None
        self.input_masks = list(input_masks) if input_masks else [None] * len(inputs)
        self.output_masks = None            # {output tensor: mask tensor}, set by mask-aware handlers
        self.keras_version = keras_version    # of the writer: some definitions changed in Keras 3
        self.class_name = class_name
        self.config = config
        self.weights = weights              # fixnet.keras.weights.LayerWeights
        self.inputs = inputs                # tensor names
        self.input_shapes = input_shapes    # shapes without batch
        self.outputs = outputs              # tensor names this call must produce
        self._emit = emit

    def emit(self, op, inputs, outputs, attrs=None, weights=None, suffix=""):
        self._emit(op, inputs, outputs, attrs or {}, weights or {}, suffix)

    def output(self, k):
        """Name of the call's output ``k`` (a layer with several outputs: return_state)."""
        if k == 0 or self._output_name is None:
            if k:
                raise Unsupported(f"has {k + 1} outputs here; only one is supported")
            return self.outputs[0]
        return self._output_name(k)

    def tensor(self, suffix):
        """Name of an intermediate tensor private to this layer."""
        return f"{self.outputs[0]}/{suffix}"

    @property
    def keras3(self):
        try:
            return int(str(self.keras_version).split(".")[0]) >= 3
        except ValueError:
            return True

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


def activation_params(layer, name):
    """Parameters that make a named activation mean what it meant to the file's writer."""
    return {"keras3": layer.keras3} if activations.canonical(name) == "hard_sigmoid" else {}


def emit_activation(layer, src, dst, name):
    """Emit the node computing activation ``name`` from tensor src to tensor dst."""
    if name == "softmax":
        layer.emit("softmax", [src], [dst], {"axis": -1}, suffix="softmax")
    elif name == "linear":
        layer.emit("identity", [src], [dst], suffix="linear")
    elif activations.known(name):
        layer.emit("activation", [src], [dst], {"fn": activations.canonical(name),
                                                 "params": activation_params(layer, name)},
                   suffix=name)
    else:
        raise Unsupported(f"activation '{name}' is not supported yet")


def emit_with_activation(layer, op, inputs, attrs, weights, act_ident):
    """Emit a layer's main node, with its ``activation=`` fused as a clamp where it is one, or
    as a following node otherwise."""
    name = activation_name(act_ident)
    clamp = None
    if name != "linear" and activations.known(name):
        clamp = activations.activation(name, **activation_params(layer, name))[1]
    if name == "linear" or clamp is not None:
        layer.emit(op, inputs, layer.outputs, dict(attrs, clamp=clamp), weights)
        return
    pre = layer.tensor("preactivation")
    layer.emit(op, inputs, [pre], dict(attrs, clamp=None), weights)
    emit_activation(layer, pre, layer.outputs[0], name)


def channel_axis_is_last(axis, rank):
    """True when a Keras ``axis`` (int or list, counting the batch axis) is the last axis."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis == -1 or axis == rank        # rank excludes batch, so the last axis is `rank`


# Sizes in a layer config (kernel sizes, strides, paddings, units, ...) beyond this are not a
# real model's; the kernels take them as C ints.
MAX_CONFIG_INT = 1 << 20


def config_int(value, what, lo=1, hi=MAX_CONFIG_INT):
    """An integer from a layer config, checked to lie in [lo, hi]. A damaged value raises
    ValueError, which the loader reports as a damaged config naming the layer."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{what} = {value!r} is not an integer")
    if not lo <= value <= hi:
        raise ValueError(f"{what} = {value} is outside [{lo}, {hi}]")
    return int(value)


# Activation parameters (slopes, alpha, thresholds, max_value) beyond this magnitude are not a
# real model's (and would leave any int8 range): refused as a damaged config.
MAX_ACTIVATION_PARAM = 1e6


def config_float(value, what, lo=-float("inf"), hi=float("inf")):
    """A finite real number from a layer config, in [lo, hi] (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} = {value!r} is not a number")
    v = float(value)
    if not np.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{what} = {value!r} is not a finite number in [{lo}, {hi}]")
    return v


def ntuple(value, n, what, lo=1):
    """A Keras int-or-sequence argument as an n-tuple of ints, each in [lo, MAX_CONFIG_INT]."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise Unsupported(f"{what} {value!r} should have {n} entries")
        return tuple(config_int(v, what, lo) for v in value)
    return (config_int(value, what, lo),) * n


def require_channels_last(layer):
    fmt = layer.config.get("data_format") or "channels_last"
    if fmt != "channels_last":
        raise Unsupported(f"data_format='{fmt}' is not supported; fixnet runs channels_last "
                          "(NHWC) models: rebuild the model with channels_last")


def rank_of(class_name):
    return 1 if "1D" in class_name else 2


def window_attrs(layer, rank, kernel_key="kernel_size", default_strides=None):
    """kernel_size, strides, dilation and padding of a conv/pool layer, as 2D (H, W) tuples;
    a 1D layer gets H = 1."""
    cfg = layer.config
    k = ntuple(cfg[kernel_key], rank, kernel_key)
    strides = cfg.get("strides")
    s = ntuple(strides if strides is not None else (default_strides or 1), rank, "strides")
    d = ntuple(cfg.get("dilation_rate", 1), rank, "dilation_rate")
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same", "causal") or (padding == "causal" and rank != 1):
        raise Unsupported(f"padding '{padding}' is not supported")
    if rank == 1:
        k, s, d = (1,) + k, (1,) + s, (1,) + d
    return {"rank": rank, "kernel_size": k, "strides": s, "dilation": d, "padding": padding}

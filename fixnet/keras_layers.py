"""Where each Keras layer class becomes IR nodes: one handler per class, in one registry.

A handler receives a ``KerasLayer`` (its config, its weights, the names and shapes of its input
tensors, the names of its outputs) and calls ``layer.emit(...)`` for each IR node it produces.
It raises ``Unsupported(reason)`` for a configuration fixnet cannot run; the loader collects
these over the whole model and reports them together.
"""
import numpy as np

from . import activations

KERAS_LAYERS = {}

# layers whose presence means "run code stored in the file": refused outright (TFOpLambda,
# a TensorFlow function called on tensors, is read by name against a whitelist: fixnet.keras_ops)
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
        self.weights = weights              # fixnet.keras_h5.LayerWeights
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


# --- handlers --------------------------------------------------------------------------------

@keras_layer("Dense")
def dense(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    use_bias = cfg.get("use_bias", True)
    w = layer.weights.take(["kernel", "bias"] if use_bias else ["kernel"])
    kernel = w["kernel"]
    units = config_int(cfg.get("units", kernel.shape[-1]), "units")
    if kernel.ndim != 2 or kernel.shape[1] != units or (shape and kernel.shape[0] != shape[-1]):
        layer.weights.misshapen("kernel", kernel.shape, (shape[-1] if shape else "?", units))
    weights = {"kernel": kernel}
    if use_bias:
        if w["bias"].shape != (units,):
            layer.weights.misshapen("bias", w["bias"].shape, (units,))
        weights["bias"] = w["bias"]
    emit_with_activation(layer, "dense", [src], {}, weights, cfg.get("activation"))


@keras_layer("Conv1D", "Conv2D", "Convolution1D", "Convolution2D")
def conv(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    attrs = window_attrs(layer, rank)
    groups = config_int(cfg.get("groups", 1) or 1, "groups")
    use_bias = cfg.get("use_bias", True)
    w = layer.weights.take(["kernel", "bias"] if use_bias else ["kernel"])
    kernel = w["kernel"]
    filters = config_int(cfg.get("filters", kernel.shape[-1]), "filters")
    cin = shape[-1] if shape else None
    want = tuple(attrs["kernel_size"][2 - rank:]) + ((cin // groups) if cin else -1, filters)
    if kernel.shape != want:
        layer.weights.misshapen("kernel", kernel.shape, want)
    if rank == 1:
        kernel = kernel[None]
    weights = {"kernel": kernel}
    if use_bias:
        if w["bias"].shape != (filters,):
            layer.weights.misshapen("bias", w["bias"].shape, (filters,))
        weights["bias"] = w["bias"]
    emit_with_activation(layer, "conv2d", [src], dict(attrs, groups=groups), weights,
                         cfg.get("activation"))


@keras_layer("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise_conv(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    attrs = window_attrs(layer, rank)
    m = config_int(cfg.get("depth_multiplier", 1), "depth_multiplier")
    use_bias = cfg.get("use_bias", True)
    w = layer.weights.take(["depthwise_kernel", "bias"] if use_bias else ["depthwise_kernel"])
    kernel = w["depthwise_kernel"]
    want = tuple(attrs["kernel_size"][2 - rank:]) + (shape[-1], m)
    if kernel.shape != want:
        layer.weights.misshapen("depthwise_kernel", kernel.shape, want)
    weights = {"kernel": kernel[None] if rank == 1 else kernel}
    if use_bias:
        if w["bias"].shape != (shape[-1] * m,):
            layer.weights.misshapen("bias", w["bias"].shape, (shape[-1] * m,))
        weights["bias"] = w["bias"]
    emit_with_activation(layer, "depthwise_conv2d", [src], attrs, weights, cfg.get("activation"))


@keras_layer("SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D")
def separable_conv(layer):
    """A depthwise convolution (no bias) followed by a 1x1 convolution (with the bias and the
    activation)."""
    cfg = layer.config
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    attrs = window_attrs(layer, rank)
    m = config_int(cfg.get("depth_multiplier", 1), "depth_multiplier")
    use_bias = cfg.get("use_bias", True)
    names = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if use_bias else [])
    w = layer.weights.take(names)
    dk, pk = w["depthwise_kernel"], w["pointwise_kernel"]
    c = shape[-1]
    filters = config_int(cfg.get("filters", pk.shape[-1]), "filters")
    want_d = tuple(attrs["kernel_size"][2 - rank:]) + (c, m)
    want_p = (1,) * rank + (c * m, filters)
    if dk.shape != want_d:
        layer.weights.misshapen("depthwise_kernel", dk.shape, want_d)
    if pk.shape != want_p:
        layer.weights.misshapen("pointwise_kernel", pk.shape, want_p)
    mid = layer.tensor("depthwise")
    layer.emit("depthwise_conv2d", [src], [mid], dict(attrs, clamp=None),
               {"kernel": dk[None] if rank == 1 else dk}, suffix="depthwise")
    pointwise = {"rank": rank, "kernel_size": (1, 1), "strides": (1, 1), "dilation": (1, 1),
                 "padding": "valid", "groups": 1}
    weights = {"kernel": pk[None] if rank == 1 else pk}
    if use_bias:
        if w["bias"].shape != (filters,):
            layer.weights.misshapen("bias", w["bias"].shape, (filters,))
        weights["bias"] = w["bias"]
    emit_with_activation(layer, "conv2d", [mid], pointwise, weights, cfg.get("activation"))


@keras_layer("MaxPooling1D", "MaxPooling2D", "MaxPool1D", "MaxPool2D",
             "AveragePooling1D", "AveragePooling2D", "AvgPool1D", "AvgPool2D")
def pooling(layer):
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    pool = layer.config.get("pool_size", 2)
    attrs = window_attrs(layer, rank, kernel_key="pool_size", default_strides=pool)
    attrs["kind"] = "max" if "Max" in layer.class_name else "avg"
    attrs.pop("dilation")
    layer.emit("pool", [src], layer.outputs, attrs)


@keras_layer("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
             "GlobalMaxPooling2D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D",
             "GlobalMaxPool2D")
def global_pooling(layer):
    src, shape = layer.single_input()
    require_channels_last(layer)
    kind = "max" if "Max" in layer.class_name else "avg"
    if kind == "avg" and layer.input_masks[0] is not None:     # Keras averages present steps only
        layer.emit("masked_mean", [src, layer.input_masks[0]], layer.outputs,
                   {"keepdims": bool(layer.config.get("keepdims", False))})
        layer.output_masks = {}
        return
    layer.emit("global_pool", [src], layer.outputs,
               {"kind": kind, "rank": rank_of(layer.class_name),
                "keepdims": bool(layer.config.get("keepdims", False))})


@keras_layer("ZeroPadding1D", "ZeroPadding2D")
def zero_padding(layer):
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    p = layer.config.get("padding", 1)
    if rank == 1:
        pads = ((0, 0), ntuple(p, 2, "padding", lo=0))
    elif isinstance(p, (list, tuple)) and p and isinstance(p[0], (list, tuple)):
        if len(p) != 2:
            raise Unsupported(f"padding {p!r} should have 2 entries")
        pads = (ntuple(p[0], 2, "padding", lo=0), ntuple(p[1], 2, "padding", lo=0))
    else:
        h, w = ntuple(p, 2, "padding", lo=0)
        pads = ((h, h), (w, w))
    layer.emit("pad", [src], layer.outputs, {"pads": pads, "rank": rank})


MERGES = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Average": "average",
          "Maximum": "maximum", "Minimum": "minimum"}


def broadcast_inputs(layer, names, shapes, what):
    """Input tensor names of an elementwise op on tensors of equal shape: an input of shape
    (1, 1, C) beside (H, W, C) inputs (a squeeze-and-excitation scale, GlobalAveragePooling2D
    with keepdims) or (1, C) beside (L, C) is first repeated to the full shape by a nearest
    up-sampling node, which copies int8 codes exactly. Other shape mismatches are refused."""
    full = max(shapes, key=lambda s: int(np.prod(s)) if s else 1)
    out = []
    for i, (t, s) in enumerate(zip(names, shapes)):
        s = tuple(s)
        if s == tuple(full):
            out.append(t)
            continue
        rank = len(full) - 1
        if len(s) != len(full) or rank not in (1, 2) or s[-1] != full[-1] or any(d != 1 for d in s[:-1]):
            raise Unsupported(f"{what} of tensors of shapes {', '.join(str(tuple(x)) for x in shapes)}; "
                              "fixnet broadcasts only (1, 1, C) against (H, W, C) and (1, C) against (L, C)")
        size = (1, full[0]) if rank == 1 else (full[0], full[1])
        b = layer.tensor(f"broadcast{i}")
        layer.emit("upsample", [t], [b], {"rank": rank, "size": size, "interpolation": "nearest"},
                   suffix=f"broadcast{i}")
        out.append(b)
    return out


@keras_layer(*MERGES)
def merge(layer):
    kind = MERGES[layer.class_name]
    ins = layer.inputs
    if len(ins) < 2 or (kind == "subtract" and len(ins) != 2):
        raise Unsupported(f"{layer.class_name} of {len(ins)} inputs")
    if len({tuple(s) for s in layer.input_shapes}) > 1:
        ins = broadcast_inputs(layer, ins, layer.input_shapes, layer.class_name)
    if kind == "average" and len(ins) > 2:
        # sum pairwise, then one scale by 1/n
        acc = ins[0]
        for i, t in enumerate(ins[1:], 1):
            out = layer.tensor(f"sum{i}")
            layer.emit("binary", [acc, t], [out], {"kind": "add"}, suffix=f"add{i}")
            acc = out
        c = layer.input_shapes[0][-1]
        layer.emit("affine", [acc], layer.outputs, {"clamp": None},
                   {"scale": np.full(c, 1.0 / len(ins)), "offset": np.zeros(c)}, suffix="mean")
        return
    acc = ins[0]
    for i, t in enumerate(ins[1:], 1):
        last = i == len(ins) - 1
        out = layer.outputs[0] if last else layer.tensor(f"partial{i}")
        layer.emit("binary", [acc, t], [out], {"kind": kind}, suffix="" if last else f"{kind}{i}")
        acc = out


@keras_layer("Concatenate")
def concatenate(layer):
    if len(layer.inputs) < 2:
        raise Unsupported(f"Concatenate of {len(layer.inputs)} input")
    layer.emit("concat", layer.inputs, layer.outputs,
               {"axis": config_int(layer.config.get("axis", -1), "axis", lo=-64, hi=64)})


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
    eps = config_float(cfg.get("epsilon", 1e-3), "epsilon", lo=0.0)
    gamma = w.get("gamma", np.ones(c, np.float32)).astype(np.float64)
    beta = w.get("beta", np.zeros(c, np.float32)).astype(np.float64)
    inv = gamma / np.sqrt(w["moving_variance"].astype(np.float64) + eps)
    offset = beta - w["moving_mean"].astype(np.float64) * inv
    # The moving statistics describe the layer's input; data-free quantization reads them.
    attrs = {"clamp": None, "input_mean": w["moving_mean"].astype(np.float64),
             "input_var": w["moving_variance"].astype(np.float64)}
    layer.emit("affine", [src], layer.outputs, attrs, {"scale": inv, "offset": offset})


def _per_channel(value, c, what):
    """A scalar or a per-last-axis-channel vector (any broadcastable shape) as a vector of c."""
    v = np.asarray(value, np.float64)
    if v.size == 1:
        return np.full(c, float(v.ravel()[0]))
    squeezed = v.reshape(-1)
    if squeezed.size == c and (v.ndim <= 1 or all(d == 1 for d in v.shape[:-1])):
        return squeezed
    raise Unsupported(f"{what} of shape {v.shape} varies along more than the last axis")


@keras_layer("Rescaling")
def rescaling(layer):
    src, shape = layer.single_input()
    c = shape[-1]
    scale = _per_channel(layer.config.get("scale", 1.0), c, "scale")
    offset = _per_channel(layer.config.get("offset", 0.0), c, "offset")
    layer.emit("affine", [src], layer.outputs, {"clamp": None}, {"scale": scale, "offset": offset})


@keras_layer("Normalization")
def normalization(layer):
    """y = (x - mean) / max(sqrt(variance), 1e-7)  (or its inverse with invert=True)."""
    cfg = layer.config
    src, shape = layer.single_input()
    axis = cfg.get("axis", -1)
    if not (channel_axis_is_last(axis, len(shape)) or axis in (None, [], ())):
        raise Unsupported(f"normalises over axis {axis}; only the last axis is supported")
    c = shape[-1]
    if cfg.get("mean") is not None and cfg.get("variance") is not None:
        mean, var = cfg["mean"], cfg["variance"]
    else:
        w = layer.weights.take(["mean", "variance", "count"]) if len(layer.weights.items) == 3 \
            else layer.weights.take(["mean", "variance"])
        mean, var = w["mean"], w["variance"]
    mean = _per_channel(mean, c, "mean")
    std = np.maximum(np.sqrt(_per_channel(var, c, "variance")), 1e-7)
    if cfg.get("invert", False):
        scale, offset = std, mean
    else:
        scale, offset = 1.0 / std, -mean / std
    layer.emit("affine", [src], layer.outputs, {"clamp": None}, {"scale": scale, "offset": offset})


@keras_layer("Activation")
def activation(layer):
    src, _ = layer.single_input()
    emit_activation(layer, src, layer.outputs[0], activation_name(layer.config.get("activation")))


@keras_layer("ReLU")
def relu(layer):
    cfg = layer.config
    src, _ = layer.single_input()
    max_value = cfg.get("max_value")
    big = MAX_ACTIVATION_PARAM
    params = {"max_value": None if max_value is None else config_float(max_value, "max_value",
                                                                       lo=0.0, hi=big),
              "negative_slope": config_float(cfg.get("negative_slope", 0.0) or 0.0,
                                             "negative_slope", lo=0.0, hi=big),
              "threshold": config_float(cfg.get("threshold", 0.0) or 0.0, "threshold", -big, big)}
    layer.emit("activation", [src], layer.outputs, {"fn": "relu", "params": params})


@keras_layer("ReLU6")
def relu6(layer):
    src, _ = layer.single_input()
    layer.emit("activation", [src], layer.outputs, {"fn": "relu6"})


@keras_layer("LeakyReLU")
def leaky_relu(layer):
    cfg = layer.config
    src, _ = layer.single_input()
    slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
    layer.emit("activation", [src], layer.outputs,
               {"fn": "leaky_relu", "params": {"negative_slope": config_float(slope, "negative_slope", -MAX_ACTIVATION_PARAM,
                                                                  MAX_ACTIVATION_PARAM)}})


@keras_layer("ELU")
def elu(layer):
    src, _ = layer.single_input()
    layer.emit("activation", [src], layer.outputs,
               {"fn": "elu", "params": {"alpha": config_float(layer.config.get("alpha", 1.0), "alpha",
                                                     -MAX_ACTIVATION_PARAM, MAX_ACTIVATION_PARAM)}})


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


@keras_layer("Reshape")
def reshape(layer):
    src, _ = layer.single_input()
    target = layer.config["target_shape"]
    if not isinstance(target, (list, tuple)) or len(target) > 8:
        raise ValueError(f"target_shape = {target!r} is not a shape")
    target = tuple(-1 if d == -1 else config_int(d, "target_shape") for d in target)
    layer.emit("reshape", [src], layer.outputs, {"shape": target})


@keras_layer("Permute")
def permute(layer):
    src, _ = layer.single_input()
    dims = layer.config["dims"]
    if not isinstance(dims, (list, tuple)):
        raise ValueError(f"dims = {dims!r} is not a list of axes")
    layer.emit("transpose", [src], layer.outputs,
               {"perm": tuple(config_int(d, "dims", lo=1, hi=8) - 1 for d in dims)})


@keras_layer("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout",
             "GaussianDropout", "GaussianNoise", "ActivityRegularization")
def identity_at_inference(layer):
    src, _ = layer.single_input()
    layer.emit("identity", [src], layer.outputs)


@keras_layer("PReLU")
def prelu(layer):
    src, shape = layer.single_input()
    alpha = layer.weights.take(["alpha"])["alpha"]
    try:
        full = np.broadcast_to(alpha, shape)
    except ValueError:
        layer.weights.misshapen("alpha", alpha.shape, shape)
    layer.emit("prelu", [src], layer.outputs, {}, {"alpha": np.array(full, np.float64)})


# --- up-sampling, cropping, transposed convolution ---------------------------------------------

@keras_layer("UpSampling1D", "UpSampling2D")
def upsampling(layer):
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    size = ntuple(layer.config.get("size", 2), rank, "size")
    if min(size) < 1:
        raise Unsupported(f"size {size} must be >= 1")
    interpolation = str(layer.config.get("interpolation", "nearest")).lower()
    if interpolation not in ("nearest", "bilinear"):
        raise Unsupported(f"interpolation='{interpolation}' is not supported; "
                          "fixnet runs 'nearest' and 'bilinear'")
    layer.emit("upsample", [src], layer.outputs,
               {"rank": rank, "size": (1,) + size if rank == 1 else size,
                "interpolation": interpolation})


@keras_layer("Cropping1D", "Cropping2D")
def cropping(layer):
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    c = layer.config.get("cropping", 1 if rank == 1 else 0)
    if rank == 1:
        crops = ((0, 0), ntuple(c, 2, "cropping", lo=0))
    elif isinstance(c, (list, tuple)) and c and isinstance(c[0], (list, tuple)):
        if len(c) != 2:
            raise Unsupported(f"cropping {c!r} should have 2 entries")
        crops = (ntuple(c[0], 2, "cropping", lo=0), ntuple(c[1], 2, "cropping", lo=0))
    else:
        h, w = ntuple(c, 2, "cropping", lo=0)
        crops = ((h, h), (w, w))
    if min(min(p) for p in crops) < 0:
        raise Unsupported(f"cropping {c!r} is negative")
    layer.emit("crop", [src], layer.outputs, {"rank": rank, "crops": crops})


@keras_layer("Conv1DTranspose", "Conv2DTranspose", "Convolution1DTranspose",
             "Convolution2DTranspose")
def conv_transpose(layer):
    """Zero insertion, then a stride-1 Conv2D with the flipped kernel and explicit padding
    (see fixnet/ops/conv_transpose.py)."""
    from .ops.conv_transpose import plan

    cfg = layer.config
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = 1 if "1D" in layer.class_name else 2
    k = ntuple(cfg["kernel_size"], rank, "kernel_size")
    s = ntuple(cfg.get("strides", 1), rank, "strides")
    d = ntuple(cfg.get("dilation_rate", 1), rank, "dilation_rate")
    if d != (1,) * rank:
        raise Unsupported(f"dilation_rate {d} is not supported (only 1)")
    padding = str(cfg.get("padding", "valid")).lower()
    op = cfg.get("output_padding")
    if len(shape) != rank + 1:
        raise Unsupported(f"expects a rank-{rank + 1} input, got shape {tuple(shape)}")
    use_bias = cfg.get("use_bias", True)
    w = layer.weights.take(["kernel", "bias"] if use_bias else ["kernel"])
    kernel = w["kernel"]
    filters = config_int(cfg.get("filters", kernel.shape[-2]), "filters")
    want = k + (filters, shape[-1])
    if kernel.shape != want:
        layer.weights.misshapen("kernel", kernel.shape, want)
    try:
        zi_strides, attrs, conv_kernel = plan(
            tuple(shape[:-1]), kernel, s, padding,
            None if op is None else ntuple(op, rank, "output_padding", lo=0))
    except ValueError as e:
        raise Unsupported(str(e)) from None
    weights = {"kernel": conv_kernel}
    if use_bias:
        if w["bias"].shape != (filters,):
            layer.weights.misshapen("bias", w["bias"].shape, (filters,))
        weights["bias"] = w["bias"]
    src_in = src
    if zi_strides is not None:
        src_in = layer.tensor("zero_inserted")
        layer.emit("zero_insert", [src], [src_in], {"rank": rank, "strides": zi_strides},
                   suffix="zero_insert")
    emit_with_activation(layer, "conv2d", [src_in], attrs, weights, cfg.get("activation"))


# --- recurrent layers, sequences, masks ---------------------------------------------------------
# (IR ops: fixnet/ops/recurrent.py, embedding.py, mask.py; a mask is a (T,) tensor of 0.0/1.0
# that travels beside the sequence it belongs to: see keras_h5._Builder.propagate_mask)

RNN_CELLS = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}

# How Keras propagates a sequence mask through the layers that do not set one themselves
# (keras_h5._Builder.propagate_mask; the mask-aware handlers below set layer.output_masks):
# layers that keep their input's mask (supports_masking, the mask unchanged) ...
MASK_KEEPERS = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "BatchNormalization",
                "Rescaling", "Normalization", "Dropout", "SpatialDropout1D", "AlphaDropout",
                "GaussianDropout", "GaussianNoise", "ActivityRegularization", "TimeDistributed"}
# ... layers whose results a mask would change, which fixnet does not apply a mask in ...
MASK_USERS = {"Softmax"}
# ... and the layers whose call takes the mask (Keras 3 files name it: ``mask=``)
MASK_ARGUMENT = {"SimpleRNN", "GRU", "LSTM", "RNN", "Bidirectional", "TimeDistributed",
                 "GlobalAveragePooling1D", "GlobalAvgPool1D", "Softmax"}


def _rnn_activation(layer, cfg, key, default):
    name = activation_name(cfg[key]) if key in cfg else default
    if name == "linear":
        return {"fn": "linear", "params": {}}
    if not activations.known(name) or name == "softmax":
        raise Unsupported(f"{key} '{name}' is not supported in a recurrent layer")
    return {"fn": activations.canonical(name), "params": activation_params(layer, name)}


RNN_CELL_CLASSES = {"SimpleRNNCell": "SimpleRNN", "GRUCell": "GRU", "LSTMCell": "LSTM"}
# what the generic RNN wrapper's config holds (the rest is the cell's)
RNN_WRAPPER_KEYS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                    "time_major", "zero_output_for_mask")


def as_recurrent_layer(cls, cfg):
    """(class, config) of a recurrent layer; a generic ``RNN(cell)`` of one SimpleRNNCell,
    GRUCell or LSTMCell becomes the matching layer with the cell's config."""
    if cls != "RNN":
        return cls, cfg
    cell = cfg.get("cell")
    if not isinstance(cell, dict) or cell.get("class_name") not in RNN_CELL_CLASSES:
        what = cell.get("class_name") if isinstance(cell, dict) else "a list of cells"
        raise Unsupported(f"RNN of {what}; fixnet runs RNN of one SimpleRNNCell, GRUCell or "
                          "LSTMCell")
    merged = dict(cell.get("config") or {})
    merged.update({k: cfg[k] for k in RNN_WRAPPER_KEYS if k in cfg})
    return RNN_CELL_CLASSES[cell["class_name"]], merged


def rnn_attrs(layer, cls, cfg):
    """The IR attrs of a SimpleRNN/GRU/LSTM config (Unsupported for what fixnet cannot run)."""
    if cls not in RNN_CELLS:
        raise Unsupported(f"wraps a {cls}; only SimpleRNN, GRU and LSTM are supported")
    if cfg.get("stateful"):
        raise Unsupported("stateful=True carries states across predict calls; fixnet runs "
                          "stateless recurrent layers only (rebuild the model with stateful=False, "
                          "the weights are the same)")
    if cfg.get("time_major"):
        raise Unsupported("time_major=True is not supported (only batch-major sequences)")
    cell = RNN_CELLS[cls]
    attrs = {"cell": cell, "units": config_int(cfg["units"], "units"),
             "activation": _rnn_activation(layer, cfg, "activation", "tanh"),
             "return_sequences": bool(cfg.get("return_sequences", False)),
             "return_state": bool(cfg.get("return_state", False)),
             "go_backwards": bool(cfg.get("go_backwards", False)),
             "zero_output_for_mask": bool(cfg.get("zero_output_for_mask", False))}
    if cell != "simple_rnn":
        attrs["recurrent_activation"] = _rnn_activation(layer, cfg, "recurrent_activation", "sigmoid")
    if cell == "gru":
        # configs from before Keras 2.1.5 have no reset_after: they computed it the old way
        attrs["reset_after"] = bool(cfg.get("reset_after", False))
    return attrs


def rnn_weights(lw, attrs, use_bias, n_features):
    """{kernel, recurrent_kernel[, bias][, recurrent_bias]} of one recurrent layer, checked."""
    cell, U = attrs["cell"], attrs["units"]
    G = {"simple_rnn": 1, "gru": 3, "lstm": 4}[cell]
    w = lw.take(["kernel", "recurrent_kernel", "bias"] if use_bias else ["kernel", "recurrent_kernel"])
    if w["kernel"].shape != (n_features, G * U):
        lw.misshapen("kernel", w["kernel"].shape, (n_features, G * U))
    if w["recurrent_kernel"].shape != (U, G * U):
        lw.misshapen("recurrent_kernel", w["recurrent_kernel"].shape, (U, G * U))
    out = {"kernel": w["kernel"], "recurrent_kernel": w["recurrent_kernel"]}
    if use_bias:
        b = w["bias"]
        two = cell == "gru" and attrs["reset_after"]
        want = (2, G * U) if two else (G * U,)
        if b.shape != want:
            lw.misshapen("bias", b.shape, want)
        if two:
            out["bias"], out["recurrent_bias"] = b[0], b[1]
        else:
            out["bias"] = b
    return out


def _sequence_input(layer):
    """(x, shape, initial states, mask) of a recurrent layer's call: Keras lists the
    initial_state tensors after the sequence."""
    if not layer.inputs:
        raise Unsupported("called on no input")
    x, shape = layer.inputs[0], layer.input_shapes[0]
    if len(shape) != 2:
        raise Unsupported(f"input of shape {tuple(shape)}; a recurrent layer takes "
                          "(time steps, features) sequences")
    return x, shape, list(layer.inputs[1:]), layer.input_masks[0]


def emit_rnn(layer, attrs, weights, x, init, mask, outputs, suffix="", reverse_output=False):
    attrs = dict(attrs, n_initial_states=len(init), masked=mask is not None,
                 reverse_output=reverse_output)
    layer.emit("rnn", [x] + init + ([mask] if mask is not None else []), outputs, attrs, weights,
               suffix=suffix)


@keras_layer("RNN", *RNN_CELLS)
def recurrent(layer):
    cls, cfg = as_recurrent_layer(layer.class_name, layer.config)
    x, shape, init, mask = _sequence_input(layer)
    attrs = rnn_attrs(layer, cls, cfg)
    n_states = 2 if attrs["cell"] == "lstm" else 1
    if init and len(init) != n_states:
        raise Unsupported(f"called with {len(init)} initial state tensor(s); a {cls} "
                          f"has {n_states}")
    weights = rnn_weights(layer.weights, attrs, cfg.get("use_bias", True), shape[-1])
    outs = [layer.output(k) for k in range(1 + (n_states if attrs["return_state"] else 0))]
    emit_rnn(layer, attrs, weights, x, init, mask, outs)
    layer.output_masks = {outs[0]: mask} if mask is not None and attrs["return_sequences"] else {}


BIDIRECTIONAL_MERGES = {"sum": "add", "mul": "multiply", "ave": "average"}


@keras_layer("Bidirectional")
def bidirectional(layer):
    """Two rnn nodes (the backward one runs go_backwards and, returning sequences, flips its
    output back to input order, as Keras does), then their merge: concat, sum, mul, ave, or
    none (two outputs)."""
    cfg = layer.config
    x, shape, init, mask = _sequence_input(layer)
    inner = cfg["layer"]
    fcls, fcfg = as_recurrent_layer(inner["class_name"], inner["config"])
    back = cfg.get("backward_layer")
    bcls, bcfg = as_recurrent_layer(back["class_name"], back["config"]) if back else \
        (fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False)))
    fa, ba = rnn_attrs(layer, fcls, fcfg), rnn_attrs(layer, bcls, bcfg)
    if fa["return_sequences"] != ba["return_sequences"] or fa["return_state"] != ba["return_state"]:
        raise Unsupported("forward and backward layers differ in return_sequences/return_state")
    merge_mode = cfg.get("merge_mode", "concat")
    if merge_mode not in ("concat", "sum", "mul", "ave", None):
        raise Unsupported(f"merge_mode {merge_mode!r} is not supported")
    seqs = fa["return_sequences"]
    for a in (fa, ba):
        a["zero_output_for_mask"] = seqs        # Bidirectional forces it (both writers)
    n_states = 2 if fa["cell"] == "lstm" else 1
    n_states_b = 2 if ba["cell"] == "lstm" else 1
    if init and len(init) != n_states + n_states_b:
        raise Unsupported(f"called with {len(init)} initial state tensor(s), expected "
                          f"{n_states + n_states_b}")
    fw = rnn_weights(layer.weights.part("forward"), fa, fcfg.get("use_bias", True), shape[-1])
    bw = rnn_weights(layer.weights.part("forward", others=True), ba, bcfg.get("use_bias", True),
                     shape[-1])
    n_main = 2 if merge_mode is None else 1
    state_outs = [layer.output(n_main + k) for k in range(n_states + n_states_b)] \
        if fa["return_state"] else []
    if merge_mode is None:
        f_out, b_out = layer.output(0), layer.output(1)
    else:
        f_out, b_out = layer.tensor("forward"), layer.tensor("backward")
    emit_rnn(layer, fa, fw, x, init[:n_states], mask, [f_out] + state_outs[:n_states], "forward")
    emit_rnn(layer, ba, bw, x, init[n_states:], mask, [b_out] + state_outs[n_states:], "backward",
             reverse_output=seqs)
    mains = [f_out, b_out]
    if merge_mode == "concat":
        layer.emit("concat", [f_out, b_out], [layer.output(0)], {"axis": -1}, suffix="concat")
        mains = [layer.output(0)]
    elif merge_mode is not None:
        layer.emit("binary", [f_out, b_out], [layer.output(0)],
                   {"kind": BIDIRECTIONAL_MERGES[merge_mode]}, suffix=merge_mode)
        mains = [layer.output(0)]
    layer.output_masks = {t: mask for t in mains} if mask is not None and seqs else {}


# inner layers of a TimeDistributed that act on the last axis only, so that applying them to
# the whole (T, ...) tensor is applying them at every time step
_PER_LAST_AXIS = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "BatchNormalization",
                  "Rescaling", "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise",
                  "SpatialDropout1D", "ActivityRegularization"}


@keras_layer("TimeDistributed")
def time_distributed(layer):
    inner = layer.config["layer"]
    cls, cfg = inner["class_name"], inner.get("config", {})
    src, shape = layer.single_input()
    if cls == "Flatten":
        layer.emit("reshape", [src], layer.outputs, {"shape": (shape[0], -1)})
        return
    if cls not in _PER_LAST_AXIS or cls == "Softmax" and not channel_axis_is_last(
            cfg.get("axis", -1), len(shape) - 1):
        raise Unsupported(f"TimeDistributed({cls}) is not supported yet; fixnet runs "
                          f"TimeDistributed of {', '.join(sorted(_PER_LAST_AXIS))} and Flatten")
    if cls == "BatchNormalization" and not channel_axis_is_last(cfg.get("axis", -1), len(shape) - 1):
        raise Unsupported("TimeDistributed(BatchNormalization) over an axis but the last")
    KERAS_LAYERS[cls](KerasLayer(layer.name, cls, dict(cfg, axis=-1) if "axis" in cfg else cfg,
                                 layer.weights, layer.inputs, layer.input_shapes, layer.outputs,
                                 layer._emit, layer.keras_version))


@keras_layer("Embedding")
def embedding(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    table = layer.weights.take(["embeddings"])["embeddings"]
    v = config_int(cfg.get("input_dim", table.shape[0]), "input_dim")
    d = config_int(cfg.get("output_dim", table.shape[-1]), "output_dim")
    if table.shape != (v, d):
        layer.weights.misshapen("embeddings", table.shape, (v, d))
    layer.emit("embedding", [src], layer.outputs, {}, {"table": table})
    layer.output_masks = {}
    if cfg.get("mask_zero"):
        m = layer.tensor("mask")
        layer.emit("token_mask", [src], [m], suffix="mask")
        layer.output_masks = {layer.outputs[0]: m}


@keras_layer("Masking")
def masking(layer):
    src, shape = layer.single_input()
    value = config_float(layer.config.get("mask_value", 0.0), "mask_value")
    m = layer.tensor("mask")
    layer.emit("masking", [src], [layer.outputs[0], m], {"mask_value": value})
    layer.output_masks = {layer.outputs[0]: m}


@keras_layer("RepeatVector")
def repeat_vector(layer):
    """(C,) -> (n, C): a reshape to (1, C) and a nearest up-sampling by n along the time axis
    (a copy of int8 codes in int8)."""
    src, shape = layer.single_input()
    if len(shape) != 1:
        raise Unsupported(f"input of shape {tuple(shape)}; RepeatVector takes vectors")
    n = config_int(layer.config["n"], "n")
    row = layer.tensor("row")
    layer.emit("reshape", [src], [row], {"shape": (1, shape[0])}, suffix="row")
    layer.emit("upsample", [row], layer.outputs, {"rank": 1, "size": (1, n),
                                                  "interpolation": "nearest"})

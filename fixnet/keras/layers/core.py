"""Dense, normalisation, activations, shape changes, dropout, PReLU."""
import numpy as np

from .base import (MAX_ACTIVATION_PARAM, Unsupported, activation_name, channel_axis_is_last,
                   config_float, config_int, emit_activation, emit_with_activation, keras_layer)



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

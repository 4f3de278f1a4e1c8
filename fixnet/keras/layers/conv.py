"""Convolutions (plain, depthwise, separable, transposed), zero padding, up-sampling and
cropping."""
from .base import (Unsupported, config_int, emit_with_activation, keras_layer, ntuple, rank_of,
                   require_channels_last, window_attrs)


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


def _edge_pairs(value, rank, what):
    """Keras's ``padding`` / ``cropping`` value as ((top, bottom), (left, right)): an int, a
    pair (rows, columns) or two pairs; 1-D layers: one pair, for the length."""
    if rank == 1:
        return ((0, 0), ntuple(value, 2, what, lo=0))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        if len(value) != 2:
            raise Unsupported(f"{what} {value!r} should have 2 entries")
        return (ntuple(value[0], 2, what, lo=0), ntuple(value[1], 2, what, lo=0))
    h, w = ntuple(value, 2, what, lo=0)
    return ((h, h), (w, w))


@keras_layer("ZeroPadding1D", "ZeroPadding2D")
def zero_padding(layer):
    src, shape = layer.single_input()
    require_channels_last(layer)
    rank = rank_of(layer.class_name)
    pads = _edge_pairs(layer.config.get("padding", 1), rank, "padding")
    layer.emit("pad", [src], layer.outputs, {"pads": pads, "rank": rank})


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
    crops = _edge_pairs(c, rank, "cropping")
    if min(min(p) for p in crops) < 0:
        raise Unsupported(f"cropping {c!r} is negative")
    layer.emit("crop", [src], layer.outputs, {"rank": rank, "crops": crops})


@keras_layer("Conv1DTranspose", "Conv2DTranspose", "Convolution1DTranspose",
             "Convolution2DTranspose")
def conv_transpose(layer):
    """Zero insertion, then a stride-1 Conv2D with the flipped kernel and explicit padding
    (see fixnet/ops/conv_transpose.py)."""
    from ...ops.conv_transpose import plan

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

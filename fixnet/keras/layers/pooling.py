"""Max and average pooling, global pooling."""
from .base import (keras_layer, rank_of, require_channels_last, window_attrs)


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

#!/usr/bin/env python
"""Generate the layer-coverage fixtures ``layers_<group>_{k3,tfk2}`` (random weights).

Run by hand, never in CI, with the same Python as make_models.py::

    /path/to/venv-with-tf/bin/python models/make_layer_models.py [--only conv2d,merge]

Without ``--writer`` the script re-invokes itself once per Keras writer, then rewrites
models/README.md through ``make_models.write_readme()``.

Each group is one small untrained Functional model whose weights are overwritten with
seeded random values (numpy, identical for both writers wherever the shapes agree), so
biases, BatchNormalization statistics and PReLU slopes are non-trivial. Most groups
apply several differently configured layers to the same input, flatten every branch
and concatenate them into one output; the ``.npz`` key ``output_slices`` (JSON) says
which columns of the output come from which layer. Inputs are seeded random data:
64 test and 64 calibration samples.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import SEED, WRITERS  # noqa: E402
import fixture_common as fc  # noqa: E402

N = 64
GROUPS = ("conv2d", "conv1d", "depthwise", "pooling", "padding_reshape", "merge", "activations",
          "noise_norm", "channels_first", "upsampling", "upsampling1d", "tensor_ops",
          "mobilenetv3_small")
ACTIVATIONS = ("relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "softmax", "swish", "silu", "gelu",
               "elu", "selu", "softplus", "softsign", "exponential", "linear")

DESCRIPTION = {
    "conv2d": ("(7, 5, 4) N(0,1)", "Conv2D branches (4 filters each): 3x3 strides (2,1) valid and same; "
               "3x3 dilation (2,2) same and valid; (4,2) same; 2x2 strides 2 same; 4x4 strides 2 same; (2,4) valid; "
               "3x3 groups=2 same use_bias=False; 3x3 valid tanh; 1x1 sigmoid; 3x3 strides 2 same relu"),
    "conv1d": ("(15, 4) N(0,1)", "Conv1D k3 causal dilation 2; k4 causal relu; k3 dilation 3 same; k3 dilation 2 valid; "
               "k4 strides 2 same; k5 strides 3 valid; DepthwiseConv1D k3 depth_multiplier 2 same; DepthwiseConv1D "
               "k4 strides 2 valid; SeparableConv1D(5) k3 depth_multiplier 2 valid; SeparableConv1D(4) k3 strides 2 "
               "same relu"),
    "depthwise": ("(7, 6, 3) N(0,1)", "DepthwiseConv2D 3x3 dm1 same; 3x3 dm2 valid; (2,3) dm3 strides 2 same; "
                  "3x3 strides 2 same; 2x2 strides 2 valid no bias; 3x3 dilation 2 same relu; SeparableConv2D(4) "
                  "3x3 dm2 same; SeparableConv2D(4) 3x3 strides 2 valid no bias"),
    "pooling": ("`x2d` (7, 6, 3), `x1d` (11, 4) N(0,1)", "MaxPooling2D 2 valid, 3/s2 same, (3,2)/s(2,1) valid; "
                "AveragePooling2D 3/s2 valid, 2/s1 same, 3/s2 same; GlobalAverage/MaxPooling2D with and without "
                "keepdims; MaxPooling1D 2 valid, 3/s2 same; AveragePooling1D 3/s2 valid, 2/s1 same, 3/s2 same; "
                "GlobalAverage/MaxPooling1D with and without keepdims"),
    "padding_reshape": ("(5, 4, 3) N(0,1)", "ZeroPadding2D(1), ZeroPadding2D(((1,2),(0,3))); Permute((2,1,3)), "
                        "Permute((1,3,2)); Reshape((20,3)) → ZeroPadding1D(2) and ZeroPadding1D((1,3)); "
                        "Reshape((-1,6)); Reshape((4,5,3)); Flatten"),
    "merge": ("`in_a`, `in_b` (4, 3, 5) N(0,1)", "Add, Subtract, Multiply, Average, Maximum, Minimum of a and b; "
              "Add of three tensors; Concatenate axis -1, 1, 2; two outputs: `merge_flat` (240,) and "
              "`merge_cat2` (4, 9, 5)"),
    "activations": ("(10,) N(0,1)", "Dense(6, activation=a) and Activation(a) for a in " + ", ".join(ACTIVATIONS)
                    + "; ReLU(max_value=6), ReLU(negative_slope=0.1, threshold=0.5), LeakyReLU(0.2), ELU(0.7), "
                    "PReLU, Softmax, each after its own Dense(6); one output per activation layer (36 outputs)"),
    "noise_norm": ("(5, 4, 3) integers 0..255", "Rescaling(1/255, offset=-0.5) → Conv2D(4,3,same) → Dropout → "
                   "SpatialDropout2D → GaussianNoise → GaussianDropout → AlphaDropout → ActivityRegularization; "
                   "Normalization (adapted on x_calib) → Conv2D(4,1); Normalization(mean=, variance=) given "
                   "in the constructor"),
    "channels_first": ("(3, 8, 7) N(0,1)", "Conv2D(4, 3, same, data_format=\"channels_first\")"),
    "upsampling": ("(8, 8, 1) digits-like pixels k/16", "U-Net-style conv autoencoder (output 0, (8, 8, 1) "
                   "sigmoid): Conv2D relu → MaxPooling2D → Conv2D relu (skip) → MaxPooling2D → Conv2DTranspose 3x3 "
                   "s2 same relu, and Conv2DTranspose 3x3 s2 valid → Cropping2D(((0,1),(1,0))); Concatenate with "
                   "the skip → UpSampling2D(2) → Conv2D relu → Conv2D sigmoid. Output 1 (flattened branches on "
                   "the (2, 2, 4) bottleneck): Conv2DTranspose(1) 4x4 s2 same no bias; 2x2 s2 valid; 3x3 s2 same "
                   "output_padding 1; (3,2) s(2,1) valid output_padding (1,0); 3x3 s1 same; after a 1x1 Conv2D(2): "
                   "UpSampling2D((1,2)), UpSampling2D((2,3), bilinear); on the skip: Cropping2D(1), "
                   "Cropping2D((1,0))"),
    "upsampling1d": ("(16, 3) N(0,1)", "Conv1D relu → MaxPooling1D → Conv1DTranspose k3 s2 same relu → "
                     "UpSampling1D(2) → Cropping1D((1,2)); Conv1DTranspose k4 s2 valid; k3 s3 same "
                     "output_padding 1; k2 s1 valid no bias; UpSampling1D(3); Cropping1D(2)"),
    "tensor_ops": ("(8, 8, 3) integers 0..255", "arithmetic written on tensors in functional code (tf.keras 2 "
                   "stores TFOpLambda layers, Keras 3 keras.ops operations): x / 255. * 2. - 1. → Conv2D(8) → "
                   "hard-swish the MobileNetV3 way h * (relu6(h + 3.) * (1. / 6.)) → Conv2D(6, 1, strides 2) g; branches 1. - g, "
                   "g - 0.5, 0.5 + g, 2. * g, g / 4., -g, g * per-channel vector, relu, sigmoid, tanh, silu, "
                   "leaky_relu(0.1) of g; maximum, minimum, sum and difference of 1. - g and g - 0.5; "
                   "Keras 3 only: ops.hard_sigmoid(g). Keras 3 also writes `layers_tensor_ops_k3.keras`"),
    "mobilenetv3_small": ("(48, 48, 3) pixels 17 k, k = 0..15", "keras.applications.MobileNetV3Small(alpha=0.5, "
                          "include_top=False, pooling=\"avg\", include_preprocessing=True, weights=None): a "
                          "real-world architecture with hard-sigmoid / hard-swish written as tensor arithmetic "
                          "(tf.keras 2: TFOpLambda; Keras 3's application uses Activation layers) and "
                          "squeeze-and-excitation Multiply of (H, W, C) by (1, 1, C)"),
}


# --------------------------------------------------------------------------- weights
def randomize_weights(keras, model, rng, gains=None):
    """Overwrite every weight except Normalization's with seeded random values.

    Kernels N(0, gain^2 / fan_in) (gain 1 unless ``gains[layer.name]``), biases and
    BatchNormalization beta / moving_mean N(0, 0.3^2), gamma U(0.5, 1.5),
    moving_variance U(0.5, 2), PReLU alpha U(0.05, 0.5)."""
    gains = gains or {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) or not layer.weights:
            continue
        new = []
        for var, w in zip(layer.weights, layer.get_weights()):
            kind = var.name.split("/")[-1].split(":")[0]
            if kind == "kernel" and isinstance(layer, (keras.layers.DepthwiseConv1D,
                                                       keras.layers.DepthwiseConv2D)):
                kind = "depthwise_kernel"  # Keras 3 calls it "kernel", tf.keras 2 "depthwise_kernel"
            shp = w.shape
            if kind in ("kernel", "pointwise_kernel"):
                fan_in = int(np.prod(shp[:-1]))
                v = rng.standard_normal(shp) * gains.get(layer.name, 1.0) / np.sqrt(fan_in)
            elif kind == "depthwise_kernel":
                fan_in = int(np.prod(shp[:-2]))
                v = rng.standard_normal(shp) * gains.get(layer.name, 1.0) / np.sqrt(fan_in)
            elif kind in ("bias", "beta", "moving_mean"):
                v = rng.normal(0.0, 0.3, shp)
            elif kind == "gamma":
                v = rng.uniform(0.5, 1.5, shp)
            elif kind == "moving_variance":
                v = rng.uniform(0.5, 2.0, shp)
            elif kind == "alpha":
                v = rng.uniform(0.05, 0.5, shp)
            else:
                raise KeyError(f"{layer.name}: weight {var.name}")
            new.append(v.astype(np.float32))
        layer.set_weights(new)


# --------------------------------------------------------------------------- groups
def collect(keras, branches):
    """Flatten every (name, tensor) branch and concatenate; returns (output, slices)."""
    L = keras.layers
    flats, slices, start = [], [], 0
    for label, t in branches:
        shape = [int(d) for d in t.shape[1:]]
        size = int(np.prod(shape))
        flats.append(t if len(shape) == 1 else L.Flatten(name=f"flat_{label}")(t))
        slices.append({"branch": label, "shape": shape, "start": start, "stop": start + size})
        start += size
    return L.Concatenate(name="concat_out")(flats), slices


def build(keras, group, x_calib):
    """Returns (model, output_slices or None, kernel gains)."""
    L = keras.layers
    gains = {}
    if group == "conv2d":
        x = keras.Input(shape=(7, 5, 4))
        b = [
            ("conv_s21_valid", L.Conv2D(4, 3, strides=(2, 1), padding="valid", name="conv_s21_valid")(x)),
            ("conv_s21_same", L.Conv2D(4, 3, strides=(2, 1), padding="same", name="conv_s21_same")(x)),
            ("conv_d22_same", L.Conv2D(4, 3, dilation_rate=(2, 2), padding="same", name="conv_d22_same")(x)),
            ("conv_d22_valid", L.Conv2D(4, 3, dilation_rate=2, padding="valid", name="conv_d22_valid")(x)),
            ("conv_k42_same", L.Conv2D(4, (4, 2), padding="same", name="conv_k42_same")(x)),
            ("conv_k2_s2_same", L.Conv2D(4, 2, strides=2, padding="same", name="conv_k2_s2_same")(x)),
            ("conv_k4_s2_same", L.Conv2D(4, 4, strides=2, padding="same", name="conv_k4_s2_same")(x)),
            ("conv_k24_valid", L.Conv2D(4, (2, 4), padding="valid", name="conv_k24_valid")(x)),
            ("conv_groups2_nobias", L.Conv2D(4, 3, groups=2, padding="same", use_bias=False,
                                             name="conv_groups2_nobias")(x)),
            ("conv_tanh", L.Conv2D(4, 3, activation="tanh", name="conv_tanh")(x)),
            ("conv_sigmoid", L.Conv2D(4, 1, activation="sigmoid", name="conv_sigmoid")(x)),
            ("conv_s2_relu", L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv_s2_relu")(x)),
        ]
        gains = {"conv_tanh": 2.0, "conv_sigmoid": 2.0}
    elif group == "conv1d":
        x = keras.Input(shape=(15, 4))
        b = [
            ("c1_causal_d2", L.Conv1D(4, 3, padding="causal", dilation_rate=2, name="c1_causal_d2")(x)),
            ("c1_causal_k4_relu", L.Conv1D(4, 4, padding="causal", activation="relu", name="c1_causal_k4_relu")(x)),
            ("c1_d3_same", L.Conv1D(4, 3, dilation_rate=3, padding="same", name="c1_d3_same")(x)),
            ("c1_d2_valid", L.Conv1D(4, 3, dilation_rate=2, padding="valid", name="c1_d2_valid")(x)),
            ("c1_k4_s2_same", L.Conv1D(4, 4, strides=2, padding="same", name="c1_k4_s2_same")(x)),
            ("c1_k5_s3_valid", L.Conv1D(4, 5, strides=3, padding="valid", name="c1_k5_s3_valid")(x)),
            ("dw1_m2_same", L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="dw1_m2_same")(x)),
            ("dw1_k4_s2_valid", L.DepthwiseConv1D(4, strides=2, padding="valid", name="dw1_k4_s2_valid")(x)),
            ("sep1_m2_valid", L.SeparableConv1D(5, 3, depth_multiplier=2, padding="valid", name="sep1_m2_valid")(x)),
            ("sep1_s2_same_relu", L.SeparableConv1D(4, 3, strides=2, padding="same", activation="relu",
                                                    name="sep1_s2_same_relu")(x)),
        ]
    elif group == "depthwise":
        x = keras.Input(shape=(7, 6, 3))
        b = [
            ("dw_m1_same", L.DepthwiseConv2D(3, padding="same", name="dw_m1_same")(x)),
            ("dw_m2_valid", L.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", name="dw_m2_valid")(x)),
            ("dw_k23_m3_s2_same", L.DepthwiseConv2D((2, 3), strides=2, depth_multiplier=3, padding="same",
                                                    name="dw_k23_m3_s2_same")(x)),
            ("dw_s2_same", L.DepthwiseConv2D(3, strides=2, padding="same", name="dw_s2_same")(x)),
            ("dw_k2_s2_valid_nobias", L.DepthwiseConv2D(2, strides=2, padding="valid", use_bias=False,
                                                        name="dw_k2_s2_valid_nobias")(x)),
            ("dw_d2_same_relu", L.DepthwiseConv2D(3, dilation_rate=2, padding="same", activation="relu",
                                                  name="dw_d2_same_relu")(x)),
            ("sep_m2_same", L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same", name="sep_m2_same")(x)),
            ("sep_s2_valid_nobias", L.SeparableConv2D(4, 3, strides=2, padding="valid", use_bias=False,
                                                      name="sep_s2_valid_nobias")(x)),
        ]
    elif group == "pooling":
        x2 = keras.Input(shape=(7, 6, 3), name="x2d")
        x1 = keras.Input(shape=(11, 4), name="x1d")
        b = [
            ("max2_valid", L.MaxPooling2D(2, name="max2_valid")(x2)),
            ("max3_s2_same", L.MaxPooling2D(3, strides=2, padding="same", name="max3_s2_same")(x2)),
            ("max32_s21_valid", L.MaxPooling2D((3, 2), strides=(2, 1), padding="valid", name="max32_s21_valid")(x2)),
            ("avg3_s2_valid", L.AveragePooling2D(3, strides=2, padding="valid", name="avg3_s2_valid")(x2)),
            ("avg2_s1_same", L.AveragePooling2D(2, strides=1, padding="same", name="avg2_s1_same")(x2)),
            ("avg3_s2_same", L.AveragePooling2D(3, strides=2, padding="same", name="avg3_s2_same")(x2)),
            ("gap2", L.GlobalAveragePooling2D(name="gap2")(x2)),
            ("gap2_keep", L.GlobalAveragePooling2D(keepdims=True, name="gap2_keep")(x2)),
            ("gmp2", L.GlobalMaxPooling2D(name="gmp2")(x2)),
            ("gmp2_keep", L.GlobalMaxPooling2D(keepdims=True, name="gmp2_keep")(x2)),
            ("max1_valid", L.MaxPooling1D(2, name="max1_valid")(x1)),
            ("max1_3_s2_same", L.MaxPooling1D(3, strides=2, padding="same", name="max1_3_s2_same")(x1)),
            ("avg1_3_s2_valid", L.AveragePooling1D(3, strides=2, padding="valid", name="avg1_3_s2_valid")(x1)),
            ("avg1_2_s1_same", L.AveragePooling1D(2, strides=1, padding="same", name="avg1_2_s1_same")(x1)),
            ("avg1_3_s2_same", L.AveragePooling1D(3, strides=2, padding="same", name="avg1_3_s2_same")(x1)),
            ("gap1", L.GlobalAveragePooling1D(name="gap1")(x1)),
            ("gap1_keep", L.GlobalAveragePooling1D(keepdims=True, name="gap1_keep")(x1)),
            ("gmp1", L.GlobalMaxPooling1D(name="gmp1")(x1)),
            ("gmp1_keep", L.GlobalMaxPooling1D(keepdims=True, name="gmp1_keep")(x1)),
        ]
        out, slices = collect(keras, b)
        return keras.Model([x2, x1], out), slices, gains
    elif group == "padding_reshape":
        x = keras.Input(shape=(5, 4, 3))
        r = L.Reshape((20, 3), name="reshape_20x3")(x)
        b = [
            ("zp2_sym", L.ZeroPadding2D(1, name="zp2_sym")(x)),
            ("zp2_asym", L.ZeroPadding2D(((1, 2), (0, 3)), name="zp2_asym")(x)),
            ("perm_213", L.Permute((2, 1, 3), name="perm_213")(x)),
            ("perm_132", L.Permute((1, 3, 2), name="perm_132")(x)),
            ("zp1_sym", L.ZeroPadding1D(2, name="zp1_sym")(r)),
            ("zp1_asym", L.ZeroPadding1D((1, 3), name="zp1_asym")(r)),
            ("reshape_m1x6", L.Reshape((-1, 6), name="reshape_m1x6")(x)),
            ("reshape_4x5x3", L.Reshape((4, 5, 3), name="reshape_4x5x3")(x)),
        ]
    elif group == "merge":
        a = keras.Input(shape=(4, 3, 5), name="in_a")
        c = keras.Input(shape=(4, 3, 5), name="in_b")
        add = L.Add(name="add")([a, c])
        sub = L.Subtract(name="subtract")([a, c])
        mul = L.Multiply(name="multiply")([a, c])
        avg = L.Average(name="average")([a, c])
        mx = L.Maximum(name="maximum")([a, c])
        mn = L.Minimum(name="minimum")([a, c])
        add3 = L.Add(name="add3")([a, c, mul])
        cat_last = L.Concatenate(axis=-1, name="concat_last")([add, sub])
        cat_1 = L.Concatenate(axis=1, name="concat_axis1")([avg, mx])
        cat_2 = L.Concatenate(axis=2, name="merge_cat2")([mul, add3, mn])
        flat = L.Concatenate(axis=-1, name="merge_flat")(
            [L.Flatten(name="flat_last")(cat_last), L.Flatten(name="flat_axis1")(cat_1)])
        slices = [{"output": 0, "branch": "concat_last", "shape": [4, 3, 10], "start": 0, "stop": 120},
                  {"output": 0, "branch": "concat_axis1", "shape": [8, 3, 5], "start": 120, "stop": 240},
                  {"output": 1, "branch": "merge_cat2", "shape": [4, 9, 5], "start": 0, "stop": 180}]
        return keras.Model([a, c], [flat, cat_2]), slices, gains
    elif group == "activations":
        # One output per activation layer (each gets its own TFLite output scale; in one
        # concatenated output the exponential's range would swamp sigmoid & co), and one
        # linear Dense `pre_<name>` in front of every Activation / activation layer: when
        # several activations share one Dense output, the TFLite converter fuses a
        # ReLU into a copy of that FULLY_CONNECTED and quantizes the shared tensor with
        # the ReLU's range [0, max], wiping the negative inputs of its other consumers.
        x = keras.Input(shape=(10,))
        b = []
        for act in ACTIVATIONS:
            b.append((f"dense_{act}", L.Dense(6, activation=act, name=f"dense_{act}")(x)))
            gains[f"dense_{act}"] = 1.0 if act == "exponential" else 2.0
        for act in ACTIVATIONS:
            pre = L.Dense(6, name=f"pre_act_{act}")(x)
            gains[f"pre_act_{act}"] = 1.0 if act == "exponential" else 2.0
            b.append((f"act_{act}", L.Activation(act, name=f"act_{act}")(pre)))
        for layer in (L.ReLU(max_value=6.0, name="relu_max6"),
                      L.ReLU(negative_slope=0.1, threshold=0.5, name="relu_slope_thr"),
                      L.LeakyReLU(0.2, name="leaky_relu"),
                      L.ELU(0.7, name="elu_layer"),
                      L.PReLU(name="prelu"),
                      L.Softmax(name="softmax_layer")):
            pre = L.Dense(6, name=f"pre_{layer.name}")(x)
            gains[f"pre_{layer.name}"] = 3.0
            b.append((layer.name, layer(pre)))
        return keras.Model(x, [t for _, t in b]), None, gains
    elif group == "noise_norm":
        x = keras.Input(shape=(5, 4, 3))
        r = L.Rescaling(1.0 / 255, offset=-0.5, name="rescaling")(x)
        h = L.Conv2D(4, 3, padding="same", name="conv_after_rescaling")(r)
        h = L.Dropout(0.3, name="dropout")(h)
        h = L.SpatialDropout2D(0.2, name="spatial_dropout2d")(h)
        h = L.GaussianNoise(0.1, name="gaussian_noise")(h)
        h = L.GaussianDropout(0.2, name="gaussian_dropout")(h)
        h = L.AlphaDropout(0.1, name="alpha_dropout")(h)
        h = L.ActivityRegularization(l1=0.01, l2=0.001, name="activity_regularization")(h)
        norm = L.Normalization(axis=-1, name="norm_adapted")
        norm.adapt(x_calib)
        n = L.Conv2D(4, 1, name="conv_after_norm")(norm(x))
        mean = [float(v) for v in x_calib.mean(axis=(0, 1, 2))]
        var = [float(v) for v in x_calib.var(axis=(0, 1, 2))]
        g = L.Normalization(axis=-1, mean=mean, variance=var, name="norm_given")(x)
        b = [("noise_path", h), ("norm_adapted_path", n), ("norm_given", g)]
        gains = {"conv_after_rescaling": 4.0}
    elif group == "upsampling":
        x = keras.Input(shape=(8, 8, 1))
        e1 = L.Conv2D(4, 3, padding="same", activation="relu", name="enc1")(x)
        p1 = L.MaxPooling2D(2, name="pool1")(e1)                                      # 4x4x4
        e2 = L.Conv2D(4, 3, padding="same", activation="relu", name="enc2")(p1)
        p2 = L.MaxPooling2D(2, name="pool2")(e2)                                      # 2x2x4
        d_same = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu",
                                   name="deconv_s2_same_relu")(p2)                    # 4x4x4
        d_valid = L.Conv2DTranspose(2, 3, strides=2, padding="valid", name="deconv_s2_valid")(p2)  # 5x5x2
        c_valid = L.Cropping2D(((0, 1), (1, 0)), name="crop_asym")(d_valid)          # 4x4x2
        cat = L.Concatenate(name="skip_concat")([e2, d_same, c_valid])               # 4x4x10
        u1 = L.UpSampling2D(2, name="up_nearest")(cat)                                # 8x8x10
        h = L.Conv2D(4, 3, padding="same", activation="relu", name="dec1")(u1)
        img = L.Conv2D(1, 3, padding="same", activation="sigmoid", name="dec_out")(h)
        q = L.Conv2D(2, 1, name="squeeze")(p2)                                        # 2x2x2
        b = [
            ("deconv_k4_s2_same_nobias", L.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False,
                                                           name="deconv_k4_s2_same_nobias")(p2)),
            ("deconv_k2_s2_valid", L.Conv2DTranspose(1, 2, strides=2, padding="valid",
                                                     name="deconv_k2_s2_valid")(p2)),
            ("deconv_s2_same_op1", L.Conv2DTranspose(1, 3, strides=2, padding="same", output_padding=1,
                                                     name="deconv_s2_same_op1")(p2)),
            ("deconv_k32_s21_valid_op", L.Conv2DTranspose(1, (3, 2), strides=(2, 1), padding="valid",
                                                          output_padding=(1, 0),
                                                          name="deconv_k32_s21_valid_op")(p2)),
            ("deconv_s1_same", L.Conv2DTranspose(1, 3, padding="same", name="deconv_s1_same")(p2)),
            ("up_12", L.UpSampling2D((1, 2), name="up_12")(q)),
            ("up_23_bilinear", L.UpSampling2D((2, 3), interpolation="bilinear", name="up_23_bilinear")(q)),
            ("crop_sym1", L.Cropping2D(1, name="crop_sym1")(e2)),
            ("crop_h1", L.Cropping2D((1, 0), name="crop_h1")(e2)),
        ]
        out, slices = collect(keras, b)
        slices = [dict(sl, output=1) for sl in slices]
        return keras.Model(x, [img, out]), slices, {"dec_out": 2.0}
    elif group == "upsampling1d":
        x = keras.Input(shape=(16, 3))
        e = L.Conv1D(6, 3, padding="same", activation="relu", name="enc1d")(x)
        p = L.MaxPooling1D(2, name="pool1d")(e)                                       # 8x6
        d = L.Conv1DTranspose(6, 3, strides=2, padding="same", activation="relu", name="deconv1d_s2_same_relu")(p)
        u = L.UpSampling1D(2, name="up1d_2")(d)                                       # 32x6
        b = [
            ("crop1d_asym", L.Cropping1D((1, 2), name="crop1d_asym")(u)),
            ("deconv1d_k4_s2_valid", L.Conv1DTranspose(4, 4, strides=2, padding="valid",
                                                       name="deconv1d_k4_s2_valid")(p)),
            ("deconv1d_k3_s3_same_op1", L.Conv1DTranspose(4, 3, strides=3, padding="same", output_padding=1,
                                                          name="deconv1d_k3_s3_same_op1")(p)),
            ("deconv1d_k2_valid_nobias", L.Conv1DTranspose(4, 2, padding="valid", use_bias=False,
                                                           name="deconv1d_k2_valid_nobias")(p)),
            ("up1d_3", L.UpSampling1D(3, name="up1d_3")(p)),
            ("crop1d_sym", L.Cropping1D(2, name="crop1d_sym")(x)),
        ]
    elif group == "tensor_ops":
        # no layers here: operators and functions applied to symbolic tensors
        keras3 = str(getattr(keras, "__version__", "2")).startswith("3.")
        if keras3:
            ops = keras.ops
            relu, relu6, sigmoid, tanh, silu = ops.relu, ops.relu6, ops.sigmoid, ops.tanh, ops.silu
            leaky, maximum, minimum = (lambda t: ops.leaky_relu(t, negative_slope=0.1)), ops.maximum, ops.minimum
        else:
            import tensorflow as tf
            relu, relu6, sigmoid, tanh, silu = tf.nn.relu, tf.nn.relu6, tf.math.sigmoid, tf.math.tanh, tf.nn.silu
            leaky, maximum, minimum = (lambda t: tf.nn.leaky_relu(t, alpha=0.1)), tf.math.maximum, tf.math.minimum
        x = keras.Input(shape=(8, 8, 3))
        s = x / 255.0
        s = s * 2.0 - 1.0
        h = L.Conv2D(8, 3, padding="same", name="conv1")(s)
        hsig = relu6(h + 3.0) * (1.0 / 6.0)
        hs = h * hsig
        g = L.Conv2D(6, 1, strides=2, name="conv2")(hs)             # 4x4x6: keeps the .npz small
        r1 = 1.0 - g
        r2 = g - 0.5
        b = [
            ("rsub", r1), ("sub", r2), ("radd", 0.5 + g), ("rmul", 2.0 * g), ("div", g / 4.0), ("neg", -g),
            ("mul_vec", g * np.array([0.5, -1.0, 2.0, 1.5, -0.25, 3.0], np.float32)),
            ("relu", relu(g)), ("sigmoid", sigmoid(g)), ("tanh", tanh(g)), ("silu", silu(g)),
            ("leaky_relu", leaky(g)),
            ("maximum", maximum(r1, r2)), ("minimum", minimum(r1, r2)), ("add2", r1 + r2), ("sub2", r1 - r2),
        ]
        if keras3:
            b.append(("hard_sigmoid", keras.ops.hard_sigmoid(g)))
        gains = {"conv1": 2.0, "conv2": 1.5}
    elif group == "mobilenetv3_small":
        model = keras.applications.MobileNetV3Small(
            input_shape=(48, 48, 3), alpha=0.5, include_top=False, pooling="avg", weights=None,
            minimalistic=False, include_preprocessing=True)
        return model, None, gains
    elif group == "channels_first":
        x = keras.Input(shape=(3, 8, 7))
        out = L.Conv2D(4, 3, padding="same", data_format="channels_first", name="conv_cf")(x)
        return keras.Model(x, out), None, gains
    else:
        raise KeyError(group)
    out, slices = collect(keras, b)
    return keras.Model(x, out), slices, gains


def make_data(group, model_input_shapes):
    """Seeded inputs (same for both writers): list of (test, calib) in Keras input order."""
    rng = np.random.default_rng([SEED, GROUPS.index(group)])
    data = []
    for shape in model_input_shapes:
        if group in ("noise_norm", "tensor_ops"):
            t, c = (rng.integers(0, 256, (N,) + shape).astype(np.float32) for _ in range(2))
        elif group == "mobilenetv3_small":   # image-like pixels that compress: 17 k, k = 0..15
            t, c = ((rng.integers(0, 16, (N,) + shape) * 17).astype(np.float32) for _ in range(2))
        elif group == "upsampling":      # digits-like pixels: k / 16, k = 0..16
            t, c = ((rng.integers(0, 17, (N,) + shape) / 16.0).astype(np.float32) for _ in range(2))
        else:
            t, c = (rng.standard_normal((N,) + shape).astype(np.float32) for _ in range(2))
        data.append((t, c))
    return data


# Outputs left out of the .tflite model (see README): TFLite lowers softsign to
# ABS/ADD/DIV and its int8 DIV kernel aborts ("data[i] != 0") on these inputs.
TFLITE_DROP = {"activations": ("dense_softsign", "act_softsign")}

# Groups run with TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's plain CPU Conv2D kernel only
# supports NHWC ("The Conv2D op currently only supports the NHWC tensor format on the
# CPU"); the oneDNN one runs NCHW, so model.predict works.
NEEDS_ONEDNN = ("channels_first",)

# Per-file size limits tighter than fixture_common's default, in bytes.
# Keras 3 groups with keras.ops operations in the graph -> whether their .keras archive is kept
KERAS3_OPS_GROUPS = {"tensor_ops": True, "mobilenetv3_small": False}

SIZE_LIMIT = {"upsampling": 200 << 10, "upsampling1d": 200 << 10, "mobilenetv3_small": 2 << 20}

INPUT_SHAPES = {
    "conv2d": [(7, 5, 4)], "conv1d": [(15, 4)], "depthwise": [(7, 6, 3)],
    "pooling": [(7, 6, 3), (11, 4)], "padding_reshape": [(5, 4, 3)],
    "merge": [(4, 3, 5), (4, 3, 5)], "activations": [(10,)], "noise_norm": [(5, 4, 3)],
    "channels_first": [(3, 8, 7)], "upsampling": [(8, 8, 1)], "upsampling1d": [(16, 3)],
    "tensor_ops": [(8, 8, 3)], "mobilenetv3_small": [(48, 48, 3)],
}


# --------------------------------------------------------------------------- worker
def run_writer(writer, only):
    suffix, _ = WRITERS[writer]
    tf, keras, keras_version = fc.import_keras(writer)
    ctx = dict(tf=tf, keras=keras, writer=writer, keras_version=keras_version)
    for group in GROUPS:
        if only and group not in only:
            continue
        t0 = time.time()
        base = f"layers_{group}_{suffix}"
        fc.fresh_session(tf, keras)
        data = make_data(group, INPUT_SHAPES[group])
        xte, xca = [d[0] for d in data], [d[1] for d in data]
        model, slices, gains = build(keras, group, xca[0])
        shapes = [tuple(int(d) for d in t.shape[1:]) for t in model.inputs]
        assert shapes == INPUT_SHAPES[group], (shapes, INPUT_SHAPES[group])
        randomize_weights(keras, model, np.random.default_rng([SEED, 1000 + GROUPS.index(group)]), gains)
        extra = {"n_params": np.int64(model.count_params()),
                 "tf_enable_onednn_opts": np.str_(os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""))}
        if slices is not None:
            extra["output_slices"] = np.str_(json.dumps(slices))
        restore = None
        if group in KERAS3_OPS_GROUPS and writer == "keras3":
            # Keras 3 writes keras.ops operations into an .h5 it cannot read back ("Unknown layer:
            # 'TrueDivide'"; an "Add" operation is taken for the Add layer): make_fixture's reload
            # check reads the same model's .keras archive (kept in models/ for tensor_ops only)
            keep = KERAS3_OPS_GROUPS[group]
            keras_path = os.path.join(os.path.dirname(os.path.abspath(__file__)) if keep else
                                      tempfile.mkdtemp(prefix="fixnet_keras_"), base + ".keras")
            fc.remove(keras_path)
            model.save(keras_path)
            restore = keras.models.load_model
            keras.models.load_model = lambda path, **kw: restore(
                keras_path if str(path).endswith(base + ".h5") else path, **kw)
            extra["reload_check"] = np.str_("the .keras archive (Keras 3 cannot load its own .h5 of ops)")
        try:
            fc.make_fixture(ctx, model, base, xte if len(xte) > 1 else xte[0],
                            xca if len(xca) > 1 else xca[0], extra=extra,
                            tflite_drop_outputs=TFLITE_DROP.get(group, ()),
                            size_limit=SIZE_LIMIT.get(group, fc.SIZE_LIMIT))
        finally:
            if restore is not None:
                keras.models.load_model = restore
                if not KERAS3_OPS_GROUPS[group]:
                    shutil.rmtree(os.path.dirname(keras_path), ignore_errors=True)
        fc.log(writer, f"{base}: {time.time() - t0:.1f} s")


# --------------------------------------------------------------------------- README
def readme_section():
    import fixture_stats as fs
    return fs.layer_section(GROUPS, DESCRIPTION)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", choices=sorted(WRITERS))
    ap.add_argument("--only", default="", help="comma-separated group names (default: all)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        assert s in GROUPS, s
    if args.writer:
        run_writer(args.writer, only)
        return
    t0 = time.time()
    todo = only or list(GROUPS)
    plain = [g for g in todo if g not in NEEDS_ONEDNN]
    onednn = [g for g in todo if g in NEEDS_ONEDNN]
    if plain:
        fc.run_writers(__file__, ["--only", ",".join(plain)])
    if onednn:
        fc.run_writers(__file__, ["--only", ",".join(onednn)], {"TF_ENABLE_ONEDNN_OPTS": "1"})
    import make_models
    make_models.write_readme()
    print(f"make_layer_models.py: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The bench model zoo: Keras stand-ins for the real model files of issue 17.

Issue 17 timed fixnet against TFLite on Keras files nobody on the project wrote (a FER
emotion classifier, MobileNetV2 from two Keras writers, visual wake words, MLPerf Tiny's
anomaly-detection autoencoder, ResNet-8 and DS-CNN, ...). We do not have those files. The
models here are written from the published architecture descriptions, with the same layer
types, shapes and MACs, but their weights are not trained on real data: Keras's default
initialisers (seeded), then every BatchNormalization's moving statistics measured on the
model's calibration inputs (so that each one normalises what it really sees) and its gamma /
beta drawn at random (beta mostly positive: see BETA_MEAN). Speed does not depend on the
weights; the int8 ranges come out sane (the build checks TFLite's int8 output against Keras
float: SQNR > MIN_SQNR_DB).

    python bench/zoo.py list                       # the models, what they stand for, cached?
    python bench/zoo.py build zoo                  # build what is missing (TensorFlow needed)
    python bench/zoo.py build zoo_emotion --force  # rebuild one
    python bench/zoo.py check zoo                  # MACs (fixnet.cost) against issue 17's numbers

Per model ``<name>``, written to the git-ignored folder bench/zoo/ (never committed):
``<name>.h5`` (Keras 3's ``model.save``, or tf.keras 2's for a ``*_tfk2`` model, in a process
with TF_USE_LEGACY_KERAS=1), ``<name>.tflite`` (the fixtures' full-integer int8 conversion,
int8 in and out: models/fixture_common.py ``convert_tflite``), ``<name>.npz`` in the fixtures'
layout (models/README.md: ``x_test``, ``x_calib``, ``keras_float``, ``tflite_input_int8``,
``tflite_int8_raw``, ``tflite_int8``, ``tflite_{input,output}_{scale,zero_point}``, ...) plus
``zoo_*`` entries saying how it was made. bench/peers.py reads them like the fixtures
(``--models zoo``, or a zoo name) and builds them first when they are missing or were made by
an older recipe.

This module imports neither TensorFlow nor fixnet at import time (peers.py and the tests read
its table without them); building needs TensorFlow (and tf_keras for the tf.keras 2 writer).
"""
import argparse
import fnmatch
import os
import pathlib
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
MODELS_DIR = REPO / "models"
ZOO_DIR = HERE / "zoo"
RECIPE = 1              # bump when the data, weights or conversion of every model change
N_CALIB = 128           # calibration inputs (TFLite's representative dataset, fixnet's calib)
N_TEST = 100            # test inputs (timed, and the accuracy columns of peers.py)
MIN_SQNR_DB = 20.0      # TFLite int8 vs Keras float below this: the build fails
WRITER_SUFFIX = {"keras3": "k3", "tfkeras2": "tfk2"}
# BatchNormalization gamma ~ U(GAMMA_RANGE), beta ~ N(BETA_MEAN, BETA_SD). A positive beta keeps
# most units of a following ReLU / ReLU6 in its linear part. With beta ~ N(0, 0.25) a random
# MobileNet is chaotic: int8 noise grew ~1.3 dB per layer, and TFLite int8 reached 12-16 dB SQNR
# against Keras float on zoo_mnv2 / zoo_vww (18 on zoo_ad_mlp); with these values 23-37 dB.
GAMMA_RANGE = (0.5, 1.5)
BETA_MEAN, BETA_SD = 1.0, 0.5


class ZooModel:
    """One zoo entry. ``name``: the file stem (zoo_<family>, or zoo_<family>_<k3|tfk2> for a
    family made by both writers); ``writer``: keras3 or tfkeras2; ``shape``: the input shape
    without the batch; ``data``: the name of the input generator (INPUTS); ``issue_macs``:
    MACs per sample issue 17 gives for the real file (None where it gives none);
    ``stands_for``: the real model; ``arch``: the layers, one line; ``recipe``: RECIPE plus a
    per-model version, stored in the .npz (a cached model of another recipe is rebuilt)."""

    def __init__(self, family, writer, build, shape, data, issue_macs, stands_for, arch,
                 version=1, suffix=False):
        self.family, self.writer, self.build = family, writer, build
        self.name = f"zoo_{family}_{WRITER_SUFFIX[writer]}" if suffix else f"zoo_{family}"
        self.shape, self.data, self.issue_macs = tuple(shape), data, issue_macs
        self.stands_for, self.arch = stands_for, arch
        self.recipe = f"{RECIPE}.{version}"

    @property
    def h5(self):
        return ZOO_DIR / f"{self.name}.h5"

    def paths(self):
        return [ZOO_DIR / f"{self.name}{ext}" for ext in (".h5", ".tflite", ".npz")]

    def cached(self):
        """True if the three files exist and the .npz was made by this recipe."""
        if not all(p.exists() for p in self.paths()):
            return False
        try:
            with np.load(ZOO_DIR / f"{self.name}.npz") as d:
                return "zoo_recipe" in d.files and str(d["zoo_recipe"]) == self.recipe
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):   # a broken file
            return False


ZOO = {}


def zoo_model(family, shape, data, issue_macs, stands_for, arch, writers=("keras3",),
              version=1):
    """Register a builder ``build(keras, L) -> keras.Model`` (L = keras.layers) as zoo
    entries, one per writer (names with a _k3 / _tfk2 suffix when there are several)."""
    def register(build):
        for w in writers:
            m = ZooModel(family, w, build, shape, data, issue_macs, stands_for, arch, version,
                         suffix=len(writers) > 1)
            ZOO[m.name] = m
        return build
    return register


# ---------------------------------------------------------------------------------------------
# The architectures
# ---------------------------------------------------------------------------------------------
def _l2(keras, c):
    return keras.regularizers.l2(c)


@zoo_model("emotion", (64, 64, 1), "gray_pm1", 10.0e6,
           "the FER 'face_classification' emotion classifier (mini-Xception), 7 classes",
           "Conv2D(8,3,valid,no bias)+BN+ReLU x2; 4 residual modules of 16/32/64/128 filters: "
           "[SeparableConv2D(3,same,no bias)+BN+ReLU, SeparableConv2D+BN, MaxPooling2D(3,2,same)] "
           "+ shortcut Conv2D(1,strides 2,same,no bias)+BN, Add; Conv2D(7,3,same) -> "
           "GlobalAveragePooling2D -> softmax; l2(0.01) kernel regularisers")
def build_emotion(keras, L):
    reg = _l2(keras, 0.01)
    inp = keras.Input((64, 64, 1))
    x = inp
    for _ in range(2):
        x = L.Conv2D(8, 3, use_bias=False, kernel_regularizer=reg)(x)
        x = L.Activation("relu")(L.BatchNormalization()(x))
    for filters in (16, 32, 64, 128):
        shortcut = L.BatchNormalization()(
            L.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x))
        x = L.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                              depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
        x = L.Activation("relu")(L.BatchNormalization()(x))
        x = L.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                              depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        x = L.Add()([x, shortcut])
    x = L.Conv2D(7, 3, padding="same")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Activation("softmax", name="predictions")(x))


@zoo_model("mnv2", (96, 96, 3), "rgb_pm1", 10.7e6,
           "a MobileNetV2-style image classifier, saved by Keras 3 and by tf.keras 2",
           "keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, "
           "classes=10): ZeroPadding2D, Conv2D, DepthwiseConv2D, BN, ReLU(6.), Add, "
           "GlobalAveragePooling2D, Dense(softmax)", writers=("keras3", "tfkeras2"))
def build_mnv2(keras, L):
    return keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None,
                                          classes=10)


# MobileNetV1 at width 0.25: (pointwise filters, depthwise stride) of its 13 separable blocks
MOBILENET_V1_BLOCKS = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1),
                       (128, 1), (128, 1), (128, 1), (128, 1), (256, 2), (256, 1)]


@zoo_model("vww", (96, 96, 3), "rgb_01", 7.5e6,
           "MLPerf Tiny's visual wake words model (MobileNetV1 alpha 0.25 at 96x96), 2 classes",
           "Conv2D(8,3,strides 2,same)+BN+ReLU; 13 x [DepthwiseConv2D(3,same,strides 1|2)+BN+"
           "ReLU, Conv2D(16..256,1)+BN+ReLU]; AveragePooling2D(3) -> Flatten -> "
           "Dense(2,softmax); he_normal, l2(1e-4)")
def build_vww(keras, L):
    reg = _l2(keras, 1e-4)
    inp = keras.Input((96, 96, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", kernel_initializer="he_normal",
                 kernel_regularizer=reg)(inp)
    x = L.Activation("relu")(L.BatchNormalization()(x))
    for filters, stride in MOBILENET_V1_BLOCKS:
        x = L.DepthwiseConv2D(3, strides=stride, padding="same",
                              depthwise_initializer="he_normal", depthwise_regularizer=reg)(x)
        x = L.Activation("relu")(L.BatchNormalization()(x))
        x = L.Conv2D(filters, 1, padding="same", kernel_initializer="he_normal",
                     kernel_regularizer=reg)(x)
        x = L.Activation("relu")(L.BatchNormalization()(x))
    x = L.AveragePooling2D(pool_size=(3, 3))(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x))


@zoo_model("tiny_sep", (28, 28, 1), "gray_01", 0.04e6,
           "a tiny separable convnet (depthwise with 1 input channel and depth multiplier 2)",
           "SeparableConv2D(8,3,strides 2,same,depth_multiplier=2,relu) -> "
           "SeparableConv2D(20,3,valid,relu) -> GlobalAveragePooling2D -> Dense(10,softmax)")
def build_tiny_sep(keras, L):
    inp = keras.Input((28, 28, 1))
    x = L.SeparableConv2D(8, 3, strides=2, padding="same", depth_multiplier=2,
                          activation="relu")(inp)
    x = L.SeparableConv2D(20, 3, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(x))


@zoo_model("ad_mlp", (640,), "logmel_db", 0.26e6,
           "MLPerf Tiny's anomaly-detection autoencoder (ToyADMOS / DCASE 2020 task 2)",
           "Dense(128)+BN+ReLU x4 -> Dense(8)+BN+ReLU -> Dense(128)+BN+ReLU x4 -> Dense(640); "
           "input 5 frames x 128 log-mel bands")
def build_ad_mlp(keras, L):
    inp = keras.Input((640,))
    x = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.Activation("relu")(L.BatchNormalization()(L.Dense(units)(x)))
    return keras.Model(inp, L.Dense(640)(x))


@zoo_model("resnet8", (32, 32, 3), "rgb_01", None,
           "MLPerf Tiny's image classification ResNet-8 (CIFAR-10)",
           "Conv2D(16,3,same)+BN+ReLU; 3 residual stacks of 16/32/64 filters [Conv2D(3,strides "
           "1|2,same)+BN+ReLU, Conv2D(3,same)+BN, shortcut identity | Conv2D(1,strides 2), Add, "
           "ReLU]; AveragePooling2D(8) -> Flatten -> Dense(10,softmax); he_normal, l2(1e-4)")
def build_resnet8(keras, L):
    reg = _l2(keras, 1e-4)

    def conv(filters, k, strides=1):
        return L.Conv2D(filters, k, strides=strides, padding="same",
                        kernel_initializer="he_normal", kernel_regularizer=reg)

    inp = keras.Input((32, 32, 3))
    x = L.Activation("relu")(L.BatchNormalization()(conv(16, 3)(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.Activation("relu")(L.BatchNormalization()(conv(filters, 3, stride)(x)))
        y = L.BatchNormalization()(conv(filters, 3)(y))
        if stride != 1:
            x = conv(filters, 1, stride)(x)
        x = L.Activation("relu")(L.Add()([x, y]))
    x = L.Flatten()(L.AveragePooling2D(pool_size=8)(x))
    return keras.Model(inp, L.Dense(10, activation="softmax")(x))


@zoo_model("dscnn", (49, 10, 1), "mfcc", None,
           "MLPerf Tiny's keyword spotting DS-CNN (Speech Commands, 12 classes)",
           "Conv2D(64,(10,4),strides 2,same)+BN+ReLU -> Dropout(0.2); 4 x [DepthwiseConv2D(3,"
           "same)+BN+ReLU, Conv2D(64,1)+BN+ReLU]; Dropout(0.4) -> AveragePooling2D((25,5)) -> "
           "Flatten -> Dense(12,softmax); l2(1e-4); input 49 frames x 10 MFCCs")
def build_dscnn(keras, L):
    reg = _l2(keras, 1e-4)
    inp = keras.Input((49, 10, 1))
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg)(inp)
    x = L.Dropout(0.2)(L.Activation("relu")(L.BatchNormalization()(x)))
    for _ in range(4):
        x = L.DepthwiseConv2D(3, padding="same", depthwise_regularizer=reg)(x)
        x = L.Activation("relu")(L.BatchNormalization()(x))
        x = L.Conv2D(64, 1, padding="same", kernel_regularizer=reg)(x)
        x = L.Activation("relu")(L.BatchNormalization()(x))
    x = L.Flatten()(L.AveragePooling2D(pool_size=(25, 5))(L.Dropout(0.4)(x)))
    return keras.Model(inp, L.Dense(12, activation="softmax")(x))


@zoo_model("inception", (32, 32, 3), "rgb_01", None,
           "an Inception-style (GoogLeNet v1 blocks) small image classifier",
           "Conv2D(32,3,same,relu) -> MaxPooling2D(2); 2 inception modules [Conv2D 1x1 | 1x1 -> "
           "3x3 | 1x1 -> 5x5 | MaxPooling2D(3,1,same) -> 1x1, all relu, Concatenate] -> "
           "MaxPooling2D(2) -> inception module -> GlobalAveragePooling2D -> Dense(10,softmax)")
def build_inception(keras, L):
    def module(x, f1, f3r, f3, f5r, f5, fp):
        b1 = L.Conv2D(f1, 1, activation="relu")(x)
        b2 = L.Conv2D(f3, 3, padding="same", activation="relu")(
            L.Conv2D(f3r, 1, activation="relu")(x))
        b3 = L.Conv2D(f5, 5, padding="same", activation="relu")(
            L.Conv2D(f5r, 1, activation="relu")(x))
        b4 = L.Conv2D(fp, 1, activation="relu")(L.MaxPooling2D(3, strides=1, padding="same")(x))
        return L.Concatenate()([b1, b2, b3, b4])

    inp = keras.Input((32, 32, 3))
    x = L.MaxPooling2D(2)(L.Conv2D(32, 3, padding="same", activation="relu")(inp))
    x = module(x, 16, 16, 24, 4, 8, 8)
    x = module(x, 32, 24, 48, 8, 16, 16)
    x = L.MaxPooling2D(2)(x)
    x = module(x, 48, 32, 64, 8, 16, 16)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(x))


@zoo_model("conv1d", (128, 9), "imu", None,
           "a Conv1D human-activity classifier (UCI HAR windows: 128 steps x 9 IMU channels)",
           "Conv1D(64,3,relu) -> Conv1D(64,3,relu) -> Dropout(0.5) -> MaxPooling1D(2) -> Flatten "
           "-> Dense(100,relu) -> Dense(6,softmax)")
def build_conv1d(keras, L):
    inp = keras.Input((128, 9))
    x = L.Conv1D(64, 3, activation="relu")(inp)
    x = L.Conv1D(64, 3, activation="relu")(x)
    x = L.Flatten()(L.MaxPooling1D(2)(L.Dropout(0.5)(x)))
    x = L.Dense(100, activation="relu")(x)
    return keras.Model(inp, L.Dense(6, activation="softmax")(x))


@zoo_model("mlp", (784,), "mnist_flat", None,
           "the Keras MNIST MLP example (784 -> 512 -> 512 -> 10)",
           "Dense(512,relu) -> Dropout(0.2) -> Dense(512,relu) -> Dropout(0.2) -> "
           "Dense(10,softmax)")
def build_mlp(keras, L):
    inp = keras.Input((784,))
    x = L.Dropout(0.2)(L.Dense(512, activation="relu")(inp))
    x = L.Dropout(0.2)(L.Dense(512, activation="relu")(x))
    return keras.Model(inp, L.Dense(10, activation="softmax")(x))


# ---------------------------------------------------------------------------------------------
# Inputs: synthetic, in each model's input range (no data set is downloaded)
# ---------------------------------------------------------------------------------------------
def _resize_linear(a, size, axis):
    """Linear interpolation of `a` along `axis` to `size` points (end points kept)."""
    n = a.shape[axis]
    if n == 1:
        return np.repeat(a, size, axis=axis)
    pos = np.linspace(0.0, n - 1.0, size)
    i0 = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = (pos - i0).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
    return np.take(a, i0, axis=axis) * (1 - frac) + np.take(a, i0 + 1, axis=axis) * frac


def smooth_field(rng, n, shape, coarse=8, detail=0.1):
    """n random fields of `shape` (channels last): normal noise on a grid `coarse` times
    coarser along every axis but the last, linearly interpolated, plus `detail` x fine noise;
    each field standardised to mean 0, standard deviation 1."""
    small = [max(2, -(-d // coarse)) for d in shape[:-1]] + [shape[-1]]
    f = rng.standard_normal((n, *small))
    for axis, d in enumerate(shape[:-1], start=1):
        f = _resize_linear(f, d, axis)
    f = f + detail * rng.standard_normal(f.shape)
    axes = tuple(range(1, f.ndim))
    return (f - f.mean(axis=axes, keepdims=True)) / f.std(axis=axes, keepdims=True)


def synthetic_images(rng, n, shape):
    """8-bit images (as floats 0..255): smooth random fields with random brightness and
    contrast, rounded and clipped as a camera's pixels are."""
    f = smooth_field(rng, n, shape)
    bright = rng.uniform(70, 185, (n,) + (1,) * len(shape))
    contrast = rng.uniform(25, 60, (n,) + (1,) * len(shape))
    return np.clip(np.round(bright + contrast * f), 0, 255)


def _gray_pm1(rng, n, shape):            # face_classification: x / 255 * 2 - 1
    return synthetic_images(rng, n, shape) / 127.5 - 1.0


def _rgb_pm1(rng, n, shape):             # mobilenet_v2.preprocess_input: x / 127.5 - 1
    return synthetic_images(rng, n, shape) / 127.5 - 1.0


def _unit(rng, n, shape):                # x / 255
    return synthetic_images(rng, n, shape) / 255.0


def _mnist_flat(rng, n, shape):
    """Digit-like 28x28 images, flattened: dark background, bright smooth strokes, / 255."""
    f = smooth_field(rng, n, (28, 28, 1), coarse=5, detail=0.0)
    img = np.clip(np.round(255 * (f - 0.8) / 1.2), 0, 255)
    return img.reshape(n, -1) / 255.0


def _logmel_db(rng, n, shape):
    """5 frames x 128 log-mel bands in dB (DCASE baseline features), flattened: a smooth
    spectral envelope per clip, a little variation per frame."""
    env = smooth_field(rng, n, (128, 1), coarse=16, detail=0.0)[:, None, :, 0]
    frames = env * 12.0 - 35.0 + 2.0 * rng.standard_normal((n, 5, 128))
    return frames.reshape(n, 640)


def _mfcc(rng, n, shape):
    """49 frames x 10 MFCCs: smooth in time, coefficient 0 (log energy) the largest."""
    scale = np.array([40.0, 18, 12, 9, 7, 6, 5, 4, 3.5, 3])
    offset = np.array([-120.0, 10, 0, 0, 0, 0, 0, 0, 0, 0])
    f = smooth_field(rng, n, (49, 10), coarse=6, detail=0.2)
    return (offset + scale * f)[..., None]


def _imu(rng, n, shape):
    """128 steps x 9 IMU channels (body / total acceleration in g, gyroscope in rad/s):
    a few sinusoids of walking frequencies plus noise."""
    t = np.arange(128) / 50.0
    freq = rng.uniform(0.8, 2.5, (n, 1, 9))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 9))
    amp = rng.uniform(0.1, 0.8, (n, 1, 9))
    base = np.array([0.0] * 3 + [1.0, 0.0, 0.0] + [0.0] * 3)
    sig = base + amp * np.sin(2 * np.pi * freq * t[None, :, None] + phase)
    return sig + 0.05 * rng.standard_normal((n, 128, 9))


INPUTS = {"gray_pm1": (_gray_pm1, "synthetic 8-bit grayscale images / 127.5 - 1 (in [-1, 1])"),
          "rgb_pm1": (_rgb_pm1, "synthetic 8-bit RGB images / 127.5 - 1 (in [-1, 1])"),
          "rgb_01": (_unit, "synthetic 8-bit RGB images / 255 (in [0, 1])"),
          "gray_01": (_unit, "synthetic 8-bit grayscale images / 255 (in [0, 1])"),
          "mnist_flat": (_mnist_flat, "synthetic digit-like 28x28 images / 255, flattened"),
          "logmel_db": (_logmel_db, "synthetic log-mel frames in dB (about -80..10)"),
          "mfcc": (_mfcc, "synthetic MFCC frames (coefficient 0 about -200..-40)"),
          "imu": (_imu, "synthetic IMU windows: sinusoids of 0.8-2.5 Hz plus noise")}


def make_inputs(spec, n, seed):
    """n float32 inputs for zoo model `spec`, reproducible from `seed`."""
    fn, _ = INPUTS[spec.data]
    x = fn(np.random.default_rng(seed), n, spec.shape).astype(np.float32)
    assert x.shape == (n,) + spec.shape, (spec.name, x.shape)
    return x


def model_seed(name):
    """A seed per model family, stable across runs and machines."""
    return zlib.crc32(name.rsplit("_k3", 1)[0].rsplit("_tfk2", 1)[0].encode()) % (2 ** 31)


# ---------------------------------------------------------------------------------------------
# Weights: Keras's initialisers, then BatchNormalization statistics from the data
# ---------------------------------------------------------------------------------------------
def settle_batchnorm(keras, model, x, rng):
    """Give every BatchNormalization (in the order the graph computes them) the moving mean
    and variance of its input on `x`, gamma ~ U(GAMMA_RANGE), beta ~ N(BETA_MEAN, BETA_SD): each
    then sees inputs of the statistics it was set for, as after training, and the activations
    keep a sane range through a deep random network. Returns how many were set."""
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for bn in bns:
        probe = keras.Model(model.inputs, bn.input)
        a = np.asarray(probe.predict(x, verbose=0, batch_size=64), np.float64)
        axes = tuple(range(a.ndim - 1))            # channels last
        c = a.shape[-1]
        gamma = rng.uniform(*GAMMA_RANGE, c)
        beta = rng.normal(BETA_MEAN, BETA_SD, c)
        stats = {"gamma": gamma, "beta": beta, "moving_mean": a.mean(axis=axes),
                 "moving_variance": a.var(axis=axes)}
        order = [w.name.split("/")[-1].split(":")[0] for w in bn.weights]
        bn.set_weights([stats[k].astype(np.float32) for k in order])
    return len(bns)


# ---------------------------------------------------------------------------------------------
# Building one model (in its own process, the writer's Keras)
# ---------------------------------------------------------------------------------------------
def _fixture_common():
    """models/fixture_common.py (the fixtures' TFLite conversion and run), imported from
    models/ as the fixture scripts import it."""
    if str(MODELS_DIR) not in sys.path:
        sys.path.insert(0, str(MODELS_DIR))
    import fixture_common
    return fixture_common


def build_one(name):
    """Build zoo model `name` with this process's Keras (the caller set TF_USE_LEGACY_KERAS
    for the writer) and write its .h5, .tflite and .npz to ZOO_DIR (each through a temporary
    name, the .npz last: a build that fails leaves no cache entry)."""
    spec = ZOO[name]
    fc = _fixture_common()
    tf, keras, keras_version = fc.import_keras(spec.writer)
    fc.fresh_session(tf, keras)
    t0 = time.time()
    seed = model_seed(name)
    x_calib = make_inputs(spec, N_CALIB, seed)
    x_test = make_inputs(spec, N_TEST, seed + 1)
    keras.utils.set_random_seed(seed)
    model = spec.build(keras, keras.layers)
    n_bn = settle_batchnorm(keras, model, x_calib, np.random.default_rng(seed + 2))
    kf = np.asarray(model.predict(x_test, verbose=0, batch_size=32), np.float32)
    assert np.all(np.isfinite(kf)), name

    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    tmp = {ext: ZOO_DIR / f".{name}.tmp{ext}" for ext in (".h5", ".tflite", ".npz")}
    try:
        _write(spec, model, keras, tf, fc, keras_version, x_calib, x_test, kf, seed, n_bn, tmp)
    finally:
        for p in tmp.values():                     # left over only when the build failed
            if p.exists():
                p.unlink()
    fc.log(spec.writer, f"{name}: built in {time.time() - t0:.0f} s ({model.count_params():,} "
                        f"parameters)")


def _write(spec, model, keras, tf, fc, keras_version, x_calib, x_test, kf, seed, n_bn, tmp):
    """build_one's files: the .h5 (checked by reloading it), the int8 .tflite (checked:
    SQNR against Keras float above MIN_SQNR_DB) and the .npz, each written to its `tmp` name,
    then all renamed into place, the .npz last."""
    name = spec.name
    model.save(str(tmp[".h5"]))
    again = keras.models.load_model(str(tmp[".h5"]), compile=False)
    diff = float(np.abs(np.asarray(again.predict(x_test, verbose=0, batch_size=32)) - kf).max())
    assert diff <= 1e-5, f"{name}: the reloaded .h5 differs from the model by {diff}"

    in_names, out_names = fc.keras_io_names(model)
    tfl, how = fc.convert_tflite(tf, model, spec.writer, [x_calib], in_names)
    tmp[".tflite"].write_bytes(tfl)
    ins, outs, _, _, mapping = fc.tflite_io_map(tf, tfl, in_names, out_names, [spec.shape],
                                                [kf.shape[1:]])
    xq, (raw,) = fc.run_tflite(tf, tfl, [x_test], ins, outs, "BUILTIN_REF")
    _, (raw_auto,) = fc.run_tflite(tf, tfl, [x_test], ins, outs, "AUTO")
    (in_s, in_zp), (out_s, out_zp) = ins[0]["quantization"], outs[0]["quantization"]
    deq = ((raw.astype(np.float32) - np.float32(out_zp)) * np.float32(out_s)).astype(np.float32)
    sqnr = fc.sqnr_db(kf, deq)
    fc.log(spec.writer, f"{name}: TFLite int8 (reference kernels) vs Keras float: SQNR "
                        f"{sqnr:.1f} dB; {int(np.sum(raw != raw_auto))} int8 outputs differ "
                        "between XNNPACK and the reference kernels")
    if not sqnr > MIN_SQNR_DB:
        raise RuntimeError(f"{name}: TFLite int8 SQNR {sqnr:.1f} dB against Keras float is "
                           f"below {MIN_SQNR_DB} dB: the int8 ranges are not sane")
    _, data_how = INPUTS[spec.data]
    npz = {
        "x_test": x_test, "x_calib": x_calib, "keras_float": kf,
        "keras_input_names": np.array(in_names), "keras_output_names": np.array(out_names),
        "tflite_input_int8": xq[0], "tflite_int8_raw": raw, "tflite_int8": deq,
        "tflite_input_scale": np.float32(in_s), "tflite_input_zero_point": np.int64(in_zp),
        "tflite_output_scale": np.float32(out_s), "tflite_output_zero_point": np.int64(out_zp),
        "tflite_converter": np.str_(how), "tflite_kernels": np.str_("BUILTIN_REF"),
        "tflite_io_mapping": np.str_(mapping),
        "tflite_xnnpack_vs_ref_ndiff": np.int64(np.sum(raw != raw_auto)),
        "tflite_sqnr_db": np.float64(sqnr),
        "writer": np.str_(spec.writer), "keras_version": np.str_(keras_version),
        "tf_version": np.str_(tf.__version__), "n_params": np.int64(model.count_params()),
        "zoo_recipe": np.str_(spec.recipe), "zoo_stands_for": np.str_(spec.stands_for),
        "zoo_arch": np.str_(spec.arch), "zoo_seed": np.int64(seed),
        "zoo_inputs": np.str_(f"{data_how}; {N_CALIB} calibration (seed {seed}), {N_TEST} "
                              f"test (seed {seed + 1}), made by bench/zoo.py"),
        "zoo_weights": np.str_(
            f"not trained: Keras default initialisers after keras.utils.set_random_seed({seed}); "
            f"{n_bn} BatchNormalization layers given the moving mean / variance of their input "
            f"on x_calib, gamma ~ U{GAMMA_RANGE}, beta ~ N({BETA_MEAN}, {BETA_SD}) "
            f"(seed {seed + 2})"),
        "zoo_made": np.str_(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
    }
    np.savez_compressed(tmp[".npz"], **npz)
    for ext in (".h5", ".tflite", ".npz"):           # the .npz last: it marks a finished build
        os.replace(tmp[ext], ZOO_DIR / f"{name}{ext}")


def writer_env(spec):
    """The environment of the process that builds `spec` (models/make_models.py's writers)."""
    sys.path.insert(0, str(MODELS_DIR))
    try:
        from make_models import WRITERS
    finally:
        sys.path.remove(str(MODELS_DIR))
    env = dict(os.environ)
    env.update(WRITERS[spec.writer][1])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env["PYTHONHASHSEED"] = "0"
    return env


def ensure(names, force=False, python=None, log=print):
    """Build the zoo models of `names` that are not cached (all of them with `force`), each in
    a child process of `python` (default this one). Returns {name: error} for the ones that
    could not be built (TensorFlow missing, a conversion failure, ...)."""
    failed = {}
    for name in names:
        spec = ZOO[name]
        if spec.cached() and not force:
            continue
        log(f"zoo: building {name} ({spec.writer}) in {ZOO_DIR} ...")
        r = subprocess.run([python or sys.executable, str(pathlib.Path(__file__).resolve()),
                            "_child", name], env=writer_env(spec), capture_output=True,
                           text=True)
        if r.returncode != 0 or not spec.cached():
            tail = [ln for ln in r.stderr.splitlines() if ln.strip()]
            failed[name] = tail[-1] if tail else f"exit code {r.returncode}"
            log(f"zoo: {name} not built: {failed[name]}")
        else:
            for ln in r.stdout.splitlines():       # the build's own lines, not TensorFlow's
                if ln.startswith("[") and f"] {name}" in ln:
                    log("  " + ln)
    return failed


# ---------------------------------------------------------------------------------------------
# Names, and the check against issue 17
# ---------------------------------------------------------------------------------------------
def resolve(pattern):
    """The zoo names `pattern` means: 'zoo' (all), a name, a family name (zoo_mnv2: both
    writers) or a shell pattern; [] if none."""
    if pattern == "zoo":
        return list(ZOO)
    if pattern in ZOO:
        return [pattern]
    family = [n for n, s in ZOO.items() if f"zoo_{s.family}" == pattern]
    return family or [n for n in ZOO if fnmatch.fnmatch(n, pattern)]


def check(names, log=print):
    """Per cached model: MACs per sample from fixnet.cost against issue 17's number (within
    10 %), fixnet int8 and TFLite int8 SQNR against Keras float. Needs fixnet importable."""
    import fixnet
    from fixnet.cost import macs as graph_macs

    rows, ok = [], True
    for name in names:
        spec = ZOO[name]
        if not spec.cached():
            log(f"{name}: not built (python bench/zoo.py build {name})")
            ok = False
            continue
        with np.load(ZOO_DIR / f"{name}.npz") as d:
            x_test, x_calib, kf = d["x_test"], d["x_calib"], d["keras_float"]
            tfl_sqnr = float(d["tflite_sqnr_db"])
        fm = fixnet.load(str(spec.h5))
        m = graph_macs(fm.graph)
        y = fm.quantize(x_calib).predict(x_test)
        err = np.asarray(kf, np.float64) - y
        fx_sqnr = 10 * np.log10(np.sum(np.asarray(kf, np.float64) ** 2) / np.sum(err ** 2))
        near = "" if spec.issue_macs is None else (
            "ok" if abs(m / spec.issue_macs - 1) <= 0.10 else "OFF")
        ok = ok and near != "OFF" and fx_sqnr > MIN_SQNR_DB
        rows.append((name, m, spec.issue_macs, near, fx_sqnr, tfl_sqnr))
    log(f"{'model':<16} {'MACs/sample':>12} {'issue 17':>9} {'':>3} {'SQNR fixnet':>12} "
        f"{'SQNR TFLite':>12}")
    for name, m, issue, near, fx, tq in rows:
        log(f"{name:<16} {m:>12,} {'' if issue is None else f'{issue / 1e6:.2f} M':>9} "
            f"{near:>3} {fx:>9.1f} dB {tq:>9.1f} dB")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="models: " + ", ".join(ZOO))
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the zoo models, what they stand for, and which are built")
    b = sub.add_parser("build", help="build the models that are missing (TensorFlow needed)")
    b.add_argument("models", nargs="*", default=["zoo"], help="names, families, patterns, zoo")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    c = sub.add_parser("check", help="MACs (fixnet.cost) vs issue 17, fixnet and TFLite SQNR")
    c.add_argument("models", nargs="*", default=["zoo"])
    ch = sub.add_parser("_child")
    ch.add_argument("name")
    args = p.parse_args(argv)
    if args.cmd == "_child":
        build_one(args.name)
        return 0
    if args.cmd == "list":
        for name, s in ZOO.items():
            print(f"{name:<16} {'built' if s.cached() else '-':<6} {s.writer:<9} "
                  f"{s.stands_for}\n{'':<16} {s.arch}")
        return 0
    names = []
    for pat in args.models:
        found = resolve(pat)
        if not found:
            p.error(f"no zoo model matches {pat!r}; known: {', '.join(ZOO)}")
        names += [n for n in found if n not in names]
    if args.cmd == "build":
        t0 = time.time()
        failed = ensure(names, force=args.force)
        print(f"zoo: {len(names) - len(failed)} of {len(names)} models in {ZOO_DIR} "
              f"({time.time() - t0:.0f} s)")
        return 1 if failed else 0
    return 0 if check(names) else 1


if __name__ == "__main__":
    sys.exit(main())

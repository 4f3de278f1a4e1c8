#!/usr/bin/env python
"""Generate the application-like CNN fixtures (trained on scikit-learn digits).

Run by hand, never in CI, with the same Python as make_models.py::

    /path/to/venv-with-tf/bin/python models/make_cnn_models.py [--only cnn_digits,multi_io]

Without ``--writer`` the script re-invokes itself once per Keras writer (Keras 3 ->
``*_k3.*``, tf.keras 2 with TF_USE_LEGACY_KERAS=1 -> ``*_tfk2.*``), then rewrites
models/README.md through ``make_models.write_readme()``.

Per model ``<name>_<k3|tfk2>``: ``.h5`` (``model.save``), ``.tflite`` (full-integer int8),
``.npz`` (data and golden outputs; see fixture_common.py and README.md). Besides:

* ``cnn_digits_k3.keras`` and ``multi_io_k3.keras`` -- Keras 3 native archives;
* ``cnn_digits_{k3,tfk2}.json`` (``model.to_json()``) + ``cnn_digits_k3.weights.h5``
  (Keras 3 ``save_weights``) / ``cnn_digits_tfk2.weights.h5`` (tf.keras 2
  ``save_weights`` in its classic HDF5 layout) and
  ``cnn_digits_tfk2_saving_lib.weights.h5`` (what tf.keras 2.21 writes for a
  ``*.weights.h5`` name) -- the same weights as ``cnn_digits_<w>.h5``, so
  ``cnn_digits_<w>.npz`` is their golden data too (the script checks that each
  reloads to the same outputs within 1e-6).
"""
import argparse
import os
import sys
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import HERE, WRITERS, load_split  # noqa: E402
import fixture_common as fc  # noqa: E402

BATCH = 32
LR = 1e-3
MODELS = ("cnn_digits", "kws_dscnn", "kws_conv1d", "resnet_small", "mobilenet_small",
          "concat_branches", "multi_io", "mobilenetv2")
# epochs and the accuracy below which the script fails
TRAIN = {
    "cnn_digits": (30, 0.97),
    "kws_dscnn": (20, 0.95),
    "kws_conv1d": (40, 0.93),
    "resnet_small": (10, 0.93),
    "mobilenet_small": (30, 0.95),
    "concat_branches": (40, 0.93),
    "multi_io": (60, 0.95),
    "mobilenetv2": (8, 0.80),
}
# Models whose BatchNormalization moving statistics are re-estimated after training:
# MobileNetV2's momentum 0.999 leaves them near (0, 1) after a few epochs; in
# resnet_small (momentum 0.99) the activations grow faster than the moving averages
# follow (test accuracy ~0.1-0.5 from the moving statistics while train accuracy is 0.97).
RECALIBRATE_BN = ("resnet_small", "mobilenetv2")
INPUT_GRID = 2.0 ** -10  # every float input is a multiple of this (see README)

ARCH = {
    "cnn_digits": ("(32, 32, 1)", "Conv2D(16,3,same,relu) → MaxPooling2D → Conv2D(32,3,valid,use_bias=False) → "
                   "BatchNormalization → ReLU → AveragePooling2D → Conv2D(32,3,strides=2,same) → ReLU → "
                   "Flatten → Dropout(0.3) → Dense(10,softmax)"),
    "kws_dscnn": ("(49, 10, 1)", "Conv2D(32,(10,4),strides=(2,2),same) + BN + ReLU; 3 × [DepthwiseConv2D(3,same) + "
                  "BN + ReLU + Conv2D(32,1) + BN + ReLU], the 2nd with depth_multiplier=2; "
                  "GlobalAveragePooling2D → Dense(10,softmax)"),
    "kws_conv1d": ("(49, 10)", "Conv1D(24,5,causal,dilation_rate=2,relu) → SeparableConv1D(32,3,same) → BN → ReLU → "
                   "MaxPooling1D(2) → DepthwiseConv1D(3,valid) → AveragePooling1D(2,same) → "
                   "Conv1D(32,3,strides=2) → GlobalMaxPooling1D → Dense(10,softmax)"),
    "resnet_small": ("(32, 32, 1)", "Conv2D(16,3,same)+BN+ReLU; identity block [Conv-BN-ReLU-Conv-BN, Add(skip), "
                     "ReLU]; projection block [Conv(32,3,stride 2)-BN-ReLU-Conv(32,3)-BN, skip Conv2D(32,1,stride 2)"
                     "+BN, Add, ReLU]; GlobalAveragePooling2D → Dense(10,softmax)"),
    "mobilenet_small": ("(32, 32, 1)", "ZeroPadding2D(((0,1),(0,1))) → Conv2D(16,3,strides=2,valid,no bias) + BN + "
                        "ReLU(6.); 2 × [SeparableConv2D(32,3,same) + BN + ReLU(6.)]; DepthwiseConv2D(3,strides=2,"
                        "same,depth_multiplier=2,no bias) + BN + ReLU(max_value=6); Conv2D(64,1,no bias) + BN + "
                        "ReLU(6.); GlobalAveragePooling2D → Dropout(0.2) → Dense(10,softmax)"),
    "concat_branches": ("(32, 32, 1)", "stem Conv2D(16,3,strides=2,same,relu); branches Conv2D(8,1,relu) | "
                        "Conv2D(8,3,same,relu) | MaxPooling2D(3,strides=1,same) → Conv2D(8,1,relu); "
                        "Concatenate(axis=-1) → [Conv2D(16,3,strides=2,same,relu) | Conv2D(16,1,relu) → "
                        "AveragePooling2D(2)] → Concatenate(axis=1) (16×8×16) → Conv2D(64,3,strides=2,same,relu) → "
                        "GlobalAveragePooling2D → "
                        "Dense(10,softmax)"),
    "multi_io": ("`image` (8, 8, 1), `features` (4,)",
                 "image: Conv2D(8,3,same,relu) → MaxPooling2D → Flatten → Dense(32,relu) = h; features: nested "
                 "Sequential `feature_mlp` [Dense(16,relu), Dense(32,relu)] = f; `shared_dense` Dense(32,tanh) "
                 "called on h and on f (a, b); d = Subtract(a,b), p = Multiply(a,b), m = Average(d,p), "
                 "Maximum(h,f); Concatenate(d,p,m,max) → Dropout(0.2) → `class` Dense(10,softmax); "
                 "m → Dense(8,relu) → `ink` Dense(1,sigmoid). Outputs [class (10,), ink (1,)]"),
    "mobilenetv2": ("(96, 96, 3)", "`keras.applications.MobileNetV2(alpha=0.35, weights=None, "
                    "input_shape=(96, 96, 3), classes=10)` (ZeroPadding2D, Conv2D, DepthwiseConv2D, BN, "
                    "ReLU(6.), Add, GlobalAveragePooling2D, Dense(softmax))"),
}


# --------------------------------------------------------------------------- data
def grid(x):
    return (np.round(np.asarray(x, np.float64) / INPUT_GRID) * INPUT_GRID).astype(np.float32)


def prepare(tf, name, x8):
    """(N, 8, 8) digits in [0, 1] -> the model's input (array, or list for multi_io)."""
    img = x8[..., None].astype(np.float32)
    if name in ("cnn_digits", "resnet_small", "mobilenet_small", "concat_branches"):
        return grid(tf.image.resize(img, (32, 32), method="bilinear").numpy())
    if name == "kws_dscnn":
        return grid(tf.image.resize(img, (49, 10), method="bilinear").numpy())
    if name == "kws_conv1d":
        return grid(tf.image.resize(img, (49, 10), method="bilinear").numpy()[..., 0])
    if name == "mobilenetv2":
        # nearest-neighbour 12x12 blocks: keeps the .npz small (bilinear 96x96x3 inputs do not compress)
        up = np.repeat(np.repeat(img, 12, axis=1), 12, axis=2)
        return np.repeat(up, 3, axis=3).astype(np.float32)
    if name == "multi_io":
        q = x8.reshape(-1, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(-1, 4)  # quadrant means TL, TR, BL, BR
        return [img, grid(q)]
    raise KeyError(name)


def ink(x8):
    """multi_io regression target: fraction of pixels above 0.5."""
    return (x8 > 0.5).reshape(len(x8), -1).mean(axis=1).astype(np.float32)[:, None]


# --------------------------------------------------------------------------- models
def build(keras, name):
    L = keras.layers
    if name == "cnn_digits":
        return keras.Sequential([
            keras.Input(shape=(32, 32, 1)),
            L.Conv2D(16, 3, padding="same", activation="relu"),
            L.MaxPooling2D(2),
            L.Conv2D(32, 3, padding="valid", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.AveragePooling2D(2),
            L.Conv2D(32, 3, strides=2, padding="same"),
            L.ReLU(),
            L.Flatten(),
            L.Dropout(0.3),
            L.Dense(10, activation="softmax"),
        ])
    if name == "kws_dscnn":
        inp = keras.Input(shape=(49, 10, 1))
        h = L.Conv2D(32, (10, 4), strides=(2, 2), padding="same")(inp)
        h = L.ReLU()(L.BatchNormalization()(h))
        for mult in (1, 2, 1):
            h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=mult)(h)
            h = L.ReLU()(L.BatchNormalization()(h))
            h = L.Conv2D(32, 1)(h)
            h = L.ReLU()(L.BatchNormalization()(h))
        h = L.GlobalAveragePooling2D()(h)
        return keras.Model(inp, L.Dense(10, activation="softmax")(h))
    if name == "kws_conv1d":
        return keras.Sequential([
            keras.Input(shape=(49, 10)),
            L.Conv1D(24, 5, padding="causal", dilation_rate=2, activation="relu"),
            L.SeparableConv1D(32, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling1D(2),
            L.DepthwiseConv1D(3, padding="valid"),
            L.AveragePooling1D(2, padding="same"),
            L.Conv1D(32, 3, strides=2),
            L.GlobalMaxPooling1D(),
            L.Dense(10, activation="softmax"),
        ])
    if name == "resnet_small":
        inp = keras.Input(shape=(32, 32, 1))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(inp)))
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(y))
        x = L.ReLU()(L.Add()([x, y]))
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, strides=2, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(32, 3, padding="same")(y))
        s = L.BatchNormalization()(L.Conv2D(32, 1, strides=2)(x))
        x = L.ReLU()(L.Add()([s, y]))
        x = L.GlobalAveragePooling2D()(x)
        return keras.Model(inp, L.Dense(10, activation="softmax")(x))
    if name == "mobilenet_small":
        inp = keras.Input(shape=(32, 32, 1))
        h = L.ZeroPadding2D(((0, 1), (0, 1)))(inp)
        h = L.Conv2D(16, 3, strides=2, padding="valid", use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization()(h))
        for _ in range(2):
            h = L.SeparableConv2D(32, 3, padding="same")(h)
            h = L.ReLU(6.0)(L.BatchNormalization()(h))
        h = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, use_bias=False)(h)
        h = L.ReLU(max_value=6)(L.BatchNormalization()(h))
        h = L.Conv2D(64, 1, use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization()(h))
        h = L.Dropout(0.2)(L.GlobalAveragePooling2D()(h))
        return keras.Model(inp, L.Dense(10, activation="softmax")(h))
    if name == "concat_branches":
        inp = keras.Input(shape=(32, 32, 1))
        x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
        b1 = L.Conv2D(8, 1, activation="relu")(x)
        b2 = L.Conv2D(8, 3, padding="same", activation="relu")(x)
        b3 = L.Conv2D(8, 1, activation="relu")(L.MaxPooling2D(3, strides=1, padding="same")(x))
        c = L.Concatenate(axis=-1)([b1, b2, b3])
        t1 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(c)
        t2 = L.AveragePooling2D(2)(L.Conv2D(16, 1, activation="relu")(c))
        h = L.Concatenate(axis=1)([t1, t2])
        h = L.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
        h = L.GlobalAveragePooling2D()(h)
        return keras.Model(inp, L.Dense(10, activation="softmax")(h))
    if name == "multi_io":
        image = keras.Input(shape=(8, 8, 1), name="image")
        features = keras.Input(shape=(4,), name="features")
        h = L.Conv2D(8, 3, padding="same", activation="relu")(image)
        h = L.Flatten()(L.MaxPooling2D(2)(h))
        h = L.Dense(32, activation="relu")(h)
        feature_mlp = keras.Sequential([
            keras.Input(shape=(4,)),
            L.Dense(16, activation="relu"),
            L.Dense(32, activation="relu"),
        ], name="feature_mlp")
        f = feature_mlp(features)
        shared = L.Dense(32, activation="tanh", name="shared_dense")
        a, b = shared(h), shared(f)
        # every tensor has at most two consumers: training then gives the same weights run
        # to run (with three or more, the order in which TensorFlow sums their gradients
        # varied between processes and so did the trained model)
        diff = L.Subtract()([a, b])
        prod = L.Multiply()([a, b])
        avg = L.Average()([diff, prod])
        z = L.Concatenate()([diff, prod, avg, L.Maximum()([h, f])])
        cls = L.Dense(10, activation="softmax", name="class")(L.Dropout(0.2)(z))
        ink_out = L.Dense(1, activation="sigmoid", name="ink")(L.Dense(8, activation="relu")(avg))
        return keras.Model([image, features], [cls, ink_out])
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(96, 96, 3), classes=10)
    raise KeyError(name)


def recalibrate_batchnorm(keras, model, x, label, batch=128):
    """'Precise BN': replace every BatchNormalization's moving statistics by their
    average over training-mode passes on ``x`` (momentum k/(k+1) for batch k), then
    restore the configured momentum. Used where the moving averages lag behind the
    weights after a short training (see RECALIBRATE_BN)."""
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in bns]
    n = len(x) // batch
    for k in range(n):
        for l in bns:
            l.momentum = k / (k + 1.0)
        model(x[k * batch:(k + 1) * batch], training=True)
    for l, m in zip(bns, saved):
        l.momentum = m
    print(f"{label}: re-estimated moving statistics of {len(bns)} BatchNormalization layers "
          f"over {n * batch} training images", flush=True)


# --------------------------------------------------------------------------- worker
def run_writer(writer, only):
    suffix, _ = WRITERS[writer]
    tf, keras, keras_version = fc.import_keras(writer)
    ctx = dict(tf=tf, keras=keras, writer=writer, keras_version=keras_version)
    x_train, y_train, x_calib, x_test, y_test = load_split()
    for name in MODELS:
        if only and name not in only:
            continue
        t0 = time.time()
        base = f"{name}_{suffix}"
        fc.fresh_session(tf, keras)
        xtr, xca, xte = prepare(tf, name, x_train), prepare(tf, name, x_calib), prepare(tf, name, x_test)
        model = build(keras, name)
        epochs, min_acc = TRAIN[name]
        if name == "multi_io":
            model.compile(optimizer=keras.optimizers.Adam(LR),
                          loss={"class": "sparse_categorical_crossentropy", "ink": "binary_crossentropy"})
            model.fit(xtr, {"class": y_train, "ink": ink(x_train)}, epochs=epochs, batch_size=BATCH,
                      shuffle=True, verbose=0)
        else:
            model.compile(optimizer=keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(xtr, y_train, epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0)
        fc.log(writer, f"{base}: trained {epochs} epochs in {time.time() - t0:.1f} s")
        extra = {"n_params": np.int64(model.count_params()), "epochs": np.int64(epochs)}
        if name in RECALIBRATE_BN:
            before = float(np.mean(model.predict(xte, verbose=0).argmax(1) == y_test))
            recalibrate_batchnorm(keras, model, xtr, f"[{writer}] {base}")
            extra["acc_before_bn_recalibration"] = np.float32(before)
            fc.log(writer, f"{base}: test acc before BN re-estimation {before:.4f}")
        for l in model.layers:
            if isinstance(l, keras.layers.BatchNormalization):
                mv = np.asarray(l.moving_variance)
                assert np.abs(mv - 1).max() > 1e-2, (base, l.name)
        labels = y_test if name != "multi_io" else {"y_test": y_test.astype(np.int64), "y_test_1": ink(x_test)}
        kf, _ = fc.make_fixture(ctx, model, base, xte, xca, y_test=labels, extra=extra,
                                size_limit=(5 << 19) if name == "mobilenetv2" else fc.SIZE_LIMIT,
                                include_optimizer=name != "mobilenetv2")
        acc = float(np.mean(kf[0].argmax(1) == y_test))
        fc.log(writer, f"{base}: keras float test acc {acc:.4f} ({time.time() - t0:.1f} s in all)")
        assert acc >= min_acc, f"{base}: accuracy {acc} < {min_acc}"
        if name in ("cnn_digits", "multi_io"):
            other_formats(ctx, model, name, suffix, xte, kf)


def other_formats(ctx, model, name, suffix, xte, kf):
    """Part C: .keras archive (Keras 3) and JSON + weights-only HDF5 (cnn_digits)."""
    keras, writer = ctx["keras"], ctx["writer"]
    feed = xte

    def check(m, what):
        got = [np.asarray(o) for o in fc.as_list(m.predict(feed, verbose=0, batch_size=32))]
        d = max(float(np.abs(a - b).max()) for a, b in zip(got, kf))
        fc.log(writer, f"{name}_{suffix}: {what} reload max abs diff {d:.3g}")
        assert d <= 1e-6, (what, d)

    if writer == "keras3":
        path = os.path.join(HERE, f"{name}_{suffix}.keras")
        fc.remove(path)
        model.save(path)
        with zipfile.ZipFile(path) as z:
            fc.log(writer, f"{os.path.basename(path)}: members {z.namelist()}")
        check(keras.models.load_model(path, compile=False), ".keras")
    if name == "cnn_digits":
        jpath = os.path.join(HERE, f"{name}_{suffix}.json")
        wpath = os.path.join(HERE, f"{name}_{suffix}.weights.h5")
        with open(jpath, "w") as f:
            f.write(model.to_json())

        def from_json():
            with open(jpath) as f:
                return keras.models.model_from_json(f.read())

        fc.remove(wpath)
        if writer == "keras3":
            model.save_weights(wpath)  # Keras 3 weights format (the only one it writes)
            m2 = from_json()
            m2.load_weights(wpath)
            check(m2, "json + weights.h5")
        else:
            # tf_keras 2.21 sends any "*.weights.h5" name to its Keras-3-style writer
            # (saving_lib); the classic tf.keras HDF5 weights layout comes from a plain
            # ".h5" name, so write that and rename it.
            tmp = os.path.join(HERE, f"{name}_{suffix}.legacy_tmp.h5")
            fc.remove(tmp)
            model.save_weights(tmp)
            m2 = from_json()
            m2.load_weights(tmp)
            check(m2, "json + legacy HDF5 weights")
            os.replace(tmp, wpath)
            # ... and what tf.keras 2.21 itself writes for a "*.weights.h5" name
            spath = os.path.join(HERE, f"{name}_{suffix}_saving_lib.weights.h5")
            fc.remove(spath)
            model.save_weights(spath)
            m3 = from_json()
            m3.load_weights(spath)
            check(m3, "json + saving_lib weights.h5")


# --------------------------------------------------------------------------- README
def readme_section():
    """Markdown for models/README.md, from the .npz files present (no TensorFlow)."""
    import fixture_stats as fs
    return fs.cnn_section(MODELS, ARCH, TRAIN)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", choices=sorted(WRITERS))
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        assert s in MODELS, s
    if args.writer:
        run_writer(args.writer, only)
        return
    t0 = time.time()
    fc.run_writers(__file__, ["--only", args.only] if only else [])
    import make_models
    make_models.write_readme()
    print(f"make_cnn_models.py: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

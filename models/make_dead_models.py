#!/usr/bin/env python
"""Generate the dead-channel fixtures: a digits CNN whose filters were killed after training.

Run by hand, never in CI, with the same Python as make_models.py::

    /path/to/venv-with-tf/bin/python models/make_dead_models.py

Without ``--writer`` the script re-invokes itself once per Keras writer (Keras 3 ->
``dead_digits_k3.*``, tf.keras 2 with TF_USE_LEGACY_KERAS=1 -> ``dead_digits_tfk2.*``),
then rewrites models/README.md through ``make_models.write_readme()``.

Real trained convnets often hold filters whose weights decayed to ~1e-34 (or exactly 0)
while the bias, after BatchNormalization folding, is 0.3-0.8: the int32 bias of such a
channel is ~1e33 steps of ``input_scale * weight_scale``. This script makes that case on
purpose. It trains the CNN below on scikit-learn's digits (8x8x1, the split of
make_models.py), then sets the kernels of the filters in ``DEAD`` to 1e-30, 1e-34 or
exactly 0 and their bias / BatchNormalization beta to a non-zero value (0.3-0.8, one
negative), with moving mean 0 and moving variance 0 (what a filter whose output stays ~0
ends with), and fine-tunes the rest for a few epochs with those values held (so the
network is a trained network that has dead filters, as in the wild). Files per writer:
``.h5`` (``model.save``, without optimizer), ``.tflite`` (full-integer int8), ``.npz``
(data, Keras float outputs, TFLite int8 outputs; see fixture_common.py), plus
``dead_channels`` in the ``.npz``: one ``"layer:channel"`` string per killed channel.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import WRITERS, load_split  # noqa: E402
import fixture_common as fc  # noqa: E402

BATCH = 32
LR = 1e-3
MODELS = ("dead_digits",)
TRAIN = {"dead_digits": (40, 0.95)}          # epochs before the kill, minimum test accuracy
FINE_TUNE_EPOCHS = 6
SIZE_LIMIT = 200 << 10

ARCH = {
    "dead_digits": ("(8, 8, 1)", "Conv2D(12,3,same,no bias) → BN → ReLU → DepthwiseConv2D(3,same) → BN → "
                    "ReLU → Conv2D(16,3,same) → BN → ReLU → MaxPooling2D(2) → Flatten → Dense(24,relu) → "
                    "Dense(10,softmax); after training the filters below are killed"),
}

# layer name -> [(channel, kernel value, bias / beta)]. The layers are named in build().
DEAD = {
    "conv_a": [(2, 1e-30, 0.3), (5, 1e-34, 0.8), (9, 0.0, 0.55)],
    "dw": [(3, 1e-30, 0.4), (7, 1e-34, -0.26)],
    "conv_b": [(4, 1e-34, 0.6), (11, 0.0, -0.258838), (13, 1e-30, 0.45)],
    "fc": [(6, 1e-34, 0.5), (15, 0.0, 0.7)],
}
# the BatchNormalization after each killed conv (its beta carries the bias)
BN_AFTER = {"conv_a": "bn_a", "dw": "bn_dw", "conv_b": "bn_b"}


def build(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        L.Conv2D(12, 3, padding="same", use_bias=False, name="conv_a"),
        L.BatchNormalization(name="bn_a"),
        L.ReLU(name="relu_a"),
        L.DepthwiseConv2D(3, padding="same", name="dw"),
        L.BatchNormalization(name="bn_dw"),
        L.ReLU(name="relu_dw"),
        L.Conv2D(16, 3, padding="same", name="conv_b"),
        L.BatchNormalization(name="bn_b"),
        L.ReLU(name="relu_b"),
        L.MaxPooling2D(2, name="pool"),
        L.Flatten(name="flatten"),
        L.Dense(24, activation="relu", name="fc"),
        L.Dense(10, activation="softmax", name="out"),
    ])


def kill(model):
    """Set the DEAD filters: kernel value, bias (or the following BN's beta), BN moving
    mean 0 and variance 0."""
    for name, chans in DEAD.items():
        layer = model.get_layer(name)
        ws = [np.array(w) for w in layer.get_weights()]
        for c, value, b in chans:
            if name == "dw":                      # depthwise kernel [KH, KW, C, 1]
                ws[0][:, :, c, :] = value
            else:                                 # [KH, KW, Cin, Cout] or [K, C]
                ws[0][..., c] = value
            if name in BN_AFTER:
                if len(ws) > 1:
                    ws[1][c] = 0.0                # the conv's own bias: the BN's beta carries it
            else:
                ws[1][c] = b
        layer.set_weights(ws)
        if name in BN_AFTER:
            bn = model.get_layer(BN_AFTER[name])
            gamma, beta, mean, var = [np.array(w) for w in bn.get_weights()]
            for c, _, b in chans:
                beta[c], mean[c], var[c] = b, 0.0, 0.0
            bn.set_weights([gamma, beta, mean, var])


def run_writer(writer):
    suffix, _ = WRITERS[writer]
    tf, keras, keras_version = fc.import_keras(writer)
    ctx = dict(tf=tf, keras=keras, writer=writer, keras_version=keras_version)
    x_train, y_train, x_calib, x_test, y_test = load_split()
    xtr, xca, xte = (x[..., None].astype(np.float32) for x in (x_train, x_calib, x_test))
    for name in MODELS:
        t0 = time.time()
        base = f"{name}_{suffix}"
        fc.fresh_session(tf, keras)
        model = build(keras)
        epochs, min_acc = TRAIN[name]
        model.compile(optimizer=keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(xtr, y_train, epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0)
        trained = float(np.mean(model.predict(xte, verbose=0).argmax(1) == y_test))
        kill(model)
        killed = float(np.mean(model.predict(xte, verbose=0).argmax(1) == y_test))

        class HoldDead(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                kill(self.model)

        model.fit(xtr, y_train, epochs=FINE_TUNE_EPOCHS, batch_size=BATCH, shuffle=True, verbose=0,
                  callbacks=[HoldDead()])
        kill(model)                               # exact values, moving statistics included
        fc.log(writer, f"{base}: test acc trained {trained:.4f}, after the kill {killed:.4f}; "
                       f"{time.time() - t0:.1f} s")
        dead = [f"{layer}:{c}" for layer, chans in DEAD.items() for c, _, _ in chans]
        extra = {"n_params": np.int64(model.count_params()), "epochs": np.int64(epochs),
                 "fine_tune_epochs": np.int64(FINE_TUNE_EPOCHS), "acc_trained": np.float32(trained),
                 "acc_after_kill": np.float32(killed), "dead_channels": np.array(dead)}
        kf, reloaded = fc.make_fixture(ctx, model, base, xte, xca, y_test=y_test, extra=extra,
                                       size_limit=SIZE_LIMIT, include_optimizer=False)
        # the dead values survive the file: read them back
        for layer, chans in DEAD.items():
            k = np.asarray(reloaded.get_layer(layer).get_weights()[0])
            for c, value, _ in chans:
                got = k[:, :, c, :] if layer == "dw" else k[..., c]
                assert np.all(got == np.float32(value)), (base, layer, c)
        acc = float(np.mean(kf[0].argmax(1) == y_test))
        fc.log(writer, f"{base}: keras float test acc {acc:.4f} ({time.time() - t0:.1f} s in all)")
        assert acc >= min_acc, f"{base}: accuracy {acc} < {min_acc}"


# --------------------------------------------------------------------------- README
DEAD_TEXT = """
## Dead-channel fixtures (`make_dead_models.py`)

Trained digits CNNs in which some filters were killed after training, as weight decay
leaves them in real networks: kernel 1e-30, 1e-34 or exactly 0 while the bias (or the
following BatchNormalization's beta, with moving mean 0 and moving variance 0) stays
non-zero, then a few epochs of fine-tuning of the rest with those values held. After
BatchNorm folding each such channel outputs a constant, and its int32 bias would be
~1e30 steps of `input_scale * weight_scale`. `dead_channels` in the `.npz` lists them
(`layer:channel`); killed: {dead}.
"""


def readme_section():
    """Markdown for models/README.md, from the .npz files present (no TensorFlow)."""
    import fixture_stats as fs
    dead = "; ".join(f"`{layer}` " + ", ".join(f"{c} ({v:g}, bias {b:g})" for c, v, b in chans)
                     for layer, chans in DEAD.items())
    table = fs.cnn_section(MODELS, ARCH, TRAIN)
    rows = []
    for writer, (suffix, _) in WRITERS.items():
        d = fs._load(f"dead_digits_{suffix}")
        if d is not None and "acc_trained" in d:
            rows.append(f"| `dead_digits_{suffix}` | {float(d['acc_trained']):.4f} | "
                        f"{float(d['acc_after_kill']):.4f} | {int(d['fine_tune_epochs'])} |")
    acc = "\n".join(["", "| model | test acc before the kill | right after it | fine-tune epochs |",
                     "| --- | --- | --- | --- |", *rows])
    return DEAD_TEXT.format(dead=dead) + "\n" + table + "\n" + acc + "\n"


def main():
    fc.writers_main(__file__, __doc__, run_writer)


if __name__ == "__main__":
    main()

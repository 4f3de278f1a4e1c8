#!/usr/bin/env python
"""Generate the any-length fixtures: models whose input is (None, 8), a sequence of any
number of steps, without recurrent layers (int8 runs them at any length; fixnet/lengths.py).

Run by hand, never in CI, with the same Python as make_models.py::

    /path/to/venv-with-tf/bin/python models/make_anylength_models.py

Without ``--writer`` the script re-invokes itself once per Keras writer (Keras 3 ->
``*_k3.*``, tf.keras 2 with TF_USE_LEGACY_KERAS=1 -> ``*_tfk2.*``), then rewrites
models/README.md through ``make_models.write_readme()``.

Data: sklearn's digits (the split of make_models.py), each 8x8 image read as a sequence of
8 rows of 8 pixels. The models are trained on the 8-row sequences and on their first 5
rows (two length buckets, one length per batch), so they classify both.

Per model ``<name>_<k3|tfk2>``: ``.h5`` (``model.save``) and ``.npz`` with the keys of the
other fixtures (models/README.md: ``x_test``, ``x_calib``, ``y_test``, ``keras_float``; with
suffixes ``_0``, ``_1`` for the two-input ``anylen_two``), at 8 rows, and the same at the
second length under ``short_`` (``short_x_test``: the first 5 rows, ``short_keras_float``;
for anylen_two, whose second input ``cols`` holds the image's columns as steps, their top
4 pixels, ``short_x_test_1`` has 4 columns); ``model.predict`` at each length (the script
checks that reloading the .h5 reproduces both within 1e-6), ``writer``, ``keras_version``,
``tf_version``. No int8 peer: TFLite's converter needs a fixed length.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import HERE, WRITERS, load_split  # noqa: E402
import fixture_common as fc  # noqa: E402

MODELS = ("anylen_conv", "anylen_strided", "anylen_two")
SHORT = 5                       # the second stored length (the first rows of each image)
EPOCHS = {"anylen_conv": 40, "anylen_strided": 10, "anylen_two": 30}
MIN_ACC = {"anylen_conv": 0.88, "anylen_strided": 0.5, "anylen_two": 0.88}
ARCH = {
    "anylen_conv": "Input(None, 8) → Conv1D(32, 3, same, relu) → Dense(32, relu) per step → "
                   "GlobalMaxPooling1D → Dense(10, softmax)",
    "anylen_strided": "Input(None, 8) → Conv1D(8, 3, strides=2, same, relu) → "
                      "GlobalMaxPooling1D → Dense(10, softmax) (int8 refuses it: the stride "
                      "halves the length)",
    "anylen_two": "two inputs of any length, each its own length: `rows` (None, 8) → "
                  "Conv1D(24, 3, same, relu) → GlobalMaxPooling1D; `cols` (None, 4) (the "
                  "image's columns, top 4 pixels) → Dense(24, relu) per step → "
                  "GlobalMaxPooling1D; Concatenate → Dense(10, softmax)",
}


def columns(x):
    """The second input of anylen_two: the image's columns as steps, their top 4 pixels."""
    return np.ascontiguousarray(x.transpose(0, 2, 1)[:, :, :4])


def build(keras, name):
    L = keras.layers
    x = keras.Input(shape=(None, 8), name="rows")
    if name == "anylen_two":
        c = keras.Input(shape=(None, 4), name="cols")
        a = L.GlobalMaxPooling1D(name="gmax_rows")(
            L.Conv1D(24, 3, padding="same", activation="relu", name="conv")(x))
        b = L.GlobalMaxPooling1D(name="gmax_cols")(L.Dense(24, activation="relu", name="per_col")(c))
        y = L.Dense(10, activation="softmax", name="probs")(L.Concatenate(name="cat")([a, b]))
        return keras.Model([x, c], y, name=name)
    if name == "anylen_conv":
        h = L.Conv1D(32, 3, padding="same", activation="relu", name="conv")(x)
        h = L.Dense(32, activation="relu", name="per_step")(h)
    else:
        h = L.Conv1D(8, 3, strides=2, padding="same", activation="relu", name="conv_s2")(x)
    h = L.GlobalMaxPooling1D(name="gmax")(h)
    y = L.Dense(10, activation="softmax", name="probs")(h)
    return keras.Model(x, y, name=name)


def feed(name, x, steps):
    """The model's input(s) for images ``x`` cut to their first ``steps`` rows (and, for
    anylen_two, the columns input of length 8 when steps == 8, else 8 - steps + 1, so the
    two inputs have different lengths)."""
    if name != "anylen_two":
        return x[:, :steps]
    cols = columns(x)
    return [x[:, :steps], cols if steps == 8 else cols[:, :8 - steps + 1]]


def run_writer(writer):
    suffix, _ = WRITERS[writer]
    tf, keras, keras_version = fc.import_keras(writer)
    x_train, y_train, x_calib, x_test, y_test = load_split()
    for name in MODELS:
        t0 = time.time()
        fc.fresh_session(tf, keras)
        model = build(keras, name)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(1234)
        for _ in range(EPOCHS[name]):
            order = rng.permutation(len(x_train))
            for start in range(0, len(order), 32):
                idx = order[start:start + 32]
                steps = 8 if (start // 32) % 2 == 0 else SHORT      # both lengths, by batch
                model.train_on_batch(feed(name, x_train[idx], steps), y_train[idx])
        kf = model.predict(feed(name, x_test, 8), verbose=0)
        kf5 = model.predict(feed(name, x_test, SHORT), verbose=0)
        acc, acc5 = np.mean(kf.argmax(1) == y_test), np.mean(kf5.argmax(1) == y_test)
        fc.log(writer, f"{name}: test accuracy {acc:.4f} (8 rows), {acc5:.4f} ({SHORT} rows)")
        assert acc >= MIN_ACC[name], (name, acc)
        base = f"{name}_{suffix}"
        h5 = os.path.join(HERE, base + ".h5")
        fc.remove(h5)
        model.save(h5, include_optimizer=False)
        again = keras.models.load_model(h5, compile=False)
        diff = max(float(np.abs(again.predict(feed(name, x_test, 8), verbose=0) - kf).max()),
                   float(np.abs(again.predict(feed(name, x_test, SHORT), verbose=0) - kf5).max()))
        assert diff <= 1e-6, (name, diff)
        two = name == "anylen_two"
        sfx = (lambda k, i: f"{k}_{i}") if two else (lambda k, i: k)
        npz = dict(y_test=y_test.astype(np.int64), writer=np.str_(writer),
                   keras_version=np.str_(keras_version), tf_version=np.str_(tf.__version__))
        for prefix, steps, out in (("", 8, kf), ("short_", SHORT, kf5)):
            for i, a in enumerate(fc.as_list(feed(name, x_test, steps))):
                npz[prefix + sfx("x_test", i)] = a.astype(np.float32)
            npz[prefix + sfx("keras_float", 0)] = out.astype(np.float32)
        for i, a in enumerate(fc.as_list(feed(name, x_calib, 8))):
            npz[sfx("x_calib", i)] = a.astype(np.float32)
        np.savez_compressed(os.path.join(HERE, base + ".npz"), **npz)
        fc.log(writer, f"{name}: wrote {base}.h5/.npz (reload diff {diff:.2g}, "
                       f"{time.time() - t0:.0f} s)")


README_TEXT = """
## Any-length fixtures (`make_anylength_models.py`)

Models whose input is `(None, 8)`: a sequence of any number of 8-pixel steps (the digits
images read row by row), without recurrent layers, for int8 at any length
(tests/test_anylength_int8.py). Trained (Adam 3e-3, batch 32) on the 8-row sequences and on
their first 5 rows, one length per batch. The `.npz` holds `x_test` (8 rows), `x_calib`,
`y_test`, `keras_float`, and the same at the second length as `short_x_test` (the first 5
rows) and `short_keras_float`; `anylen_two` has a second input `cols` (the columns as steps,
their top 4 pixels; `_0`/`_1` suffixes as for other multi-input fixtures), 4 steps long in
`short_x_test_1`, so its two inputs run at different lengths. No TFLite peer (its converter
needs a fixed length). Both writers train to bit-identical weights here (same seeds, the same
TensorFlow ops under `enable_op_determinism`): the two files differ in their HDF5 layout and
config only.
"""


def _one(d, key):
    return d[key] if key in d else d[key + "_0"]


def readme_section():
    """Markdown for models/README.md, from the .npz files present (no TensorFlow)."""
    rows = []
    for name in MODELS:
        for writer, (suffix, _) in WRITERS.items():
            path = os.path.join(HERE, f"{name}_{suffix}.npz")
            if not os.path.exists(path):
                rows.append(f"| `{name}_{suffix}` | {ARCH[name]} | not generated | |")
                continue
            d = np.load(path)
            y = d["y_test"]
            rows.append(f"| `{name}_{suffix}` | {ARCH[name]} "
                        f"| {np.mean(_one(d, 'keras_float').argmax(1) == y):.4f} "
                        f"| {np.mean(_one(d, 'short_keras_float').argmax(1) == y):.4f} |")
    return "\n".join([README_TEXT.rstrip("\n"), "",
                      "| model | architecture | Keras float acc (8 rows) | (5 rows) |",
                      "| --- | --- | --- | --- |", *rows]) + "\n"


def main():
    fc.writers_main(__file__, __doc__, run_writer)


if __name__ == "__main__":
    main()

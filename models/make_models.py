#!/usr/bin/env python
"""Generate the Keras HDF5 test fixtures in this folder (models/).

Run by hand, never in CI, with a Python that has real TensorFlow::

    pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 scikit-learn
    /path/to/venv-with-tf/bin/python models/make_models.py

Without arguments the script re-invokes itself once per Keras writer, each in a
fresh process (Keras 3 and tf.keras 2 cannot live in one process):

    --writer keras3    Keras 3 (``keras``), legacy HDF5 writer, files *_k3.*
    --writer tfkeras2  tf.keras 2 (``tf_keras``, TF_USE_LEGACY_KERAS=1), files *_tfk2.*

then, without TensorFlow, reads the produced .npz files back and writes
models/README.md with the measured accuracies.

For every model it writes ``<name>.h5`` (model.save), ``<name>.tflite`` (full
integer int8 TFLite model) and ``<name>.npz`` (test data and reference outputs).
Everything is seeded; a run takes a couple of minutes on 2 cores.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1234
N_TEST = 360
N_CALIB = 200
EPOCHS = 60
BATCH = 32
MIN_ACC = 0.95

WRITERS = {
    # writer name -> (file suffix, extra environment)
    "keras3": ("k3", {"TF_USE_LEGACY_KERAS": "0", "KERAS_BACKEND": "tensorflow"}),
    "tfkeras2": ("tfk2", {"TF_USE_LEGACY_KERAS": "1"}),
}
MODELS = ("mlp_seq", "mlp_func")


# --------------------------------------------------------------------------- data
def load_split():
    """Deterministic stratified split of sklearn's digits: train / calib / test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=N_TEST, stratify=y, random_state=SEED)
    x_train, x_calib, y_train, y_calib = train_test_split(
        x_rest, y_rest, test_size=N_CALIB, stratify=y_rest, random_state=SEED)
    return x_train, y_train, x_calib, x_test, y_test


# --------------------------------------------------------------------------- helpers
def round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quantize_input(x, scale, zero_point):
    """TFLite's QUANTIZE: q = clip(round_half_away(x / scale) + zp, -128, 127)."""
    q = round_half_away(x.astype(np.float32) / np.float32(scale)) + int(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def seed_everything(tf):
    import random

    random.seed(SEED)
    np.random.seed(SEED)
    tf.random.set_seed(SEED)
    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()


# --------------------------------------------------------------------------- worker
def run_writer(writer):
    suffix, _ = WRITERS[writer]
    import tensorflow as tf

    if writer == "keras3":
        import keras
        keras_version = keras.__version__
        assert keras_version.startswith("3."), keras_version
    else:
        # With TF_USE_LEGACY_KERAS=1, tf.keras is tf_keras (Keras 2).
        import tf_keras
        keras = tf.keras
        keras_version = tf_keras.__version__
        assert keras.layers.Dense is tf_keras.layers.Dense, "TF_USE_LEGACY_KERAS=1 not honoured"
        assert keras_version.startswith("2."), keras_version
    print(f"[{writer}] tensorflow {tf.__version__}, keras {keras_version}", flush=True)

    x_train, y_train, x_calib, x_test, y_test = load_split()
    layers = keras.layers

    def build(name):
        if name == "mlp_seq":
            return keras.Sequential([
                keras.Input(shape=(64,)),
                layers.Dense(64, activation="relu"),
                layers.Dropout(0.2),
                layers.Dense(32),
                layers.BatchNormalization(),
                layers.ReLU(),
                layers.Dense(10, activation="softmax"),
            ])
        inp = keras.Input(shape=(8, 8))
        h = layers.Flatten()(inp)
        h = layers.BatchNormalization()(h)
        h = layers.Dense(48)(h)
        h = layers.BatchNormalization()(h)
        h = layers.Activation("relu")(h)
        h = layers.Dropout(0.1)(h)
        h = layers.Dense(10)(h)
        out = layers.Softmax()(h)
        return keras.Model(inp, out)

    for name in MODELS:
        seed_everything(tf)
        keras.backend.clear_session()
        seed_everything(tf)
        base = f"{name}_{suffix}"
        flat = name == "mlp_seq"
        shape = (-1, 64) if flat else (-1, 8, 8)
        xtr = x_train.reshape(shape)
        xca = x_calib.reshape(shape)
        xte = x_test.reshape(shape)

        model = build(name)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(xtr, y_train, epochs=EPOCHS, batch_size=BATCH, shuffle=True, verbose=0)
        keras_float = model.predict(xte, verbose=0).astype(np.float32)
        acc = float(np.mean(keras_float.argmax(1) == y_test))
        print(f"[{writer}] {base}: keras float test acc {acc:.4f}", flush=True)
        assert acc >= MIN_ACC, f"{base}: accuracy {acc} < {MIN_ACC}"

        # BatchNorm moving statistics must have moved away from their initial
        # (0, 1). Note: in mlp_func the second BatchNormalization follows
        # BN -> Dense, whose beta/bias get no gradient through it, so its
        # moving_mean only picks up tiny values; its moving_variance is what moves.
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                mm = np.asarray(layer.moving_mean)
                mv = np.asarray(layer.moving_variance)
                print(f"[{writer}] {base}: {layer.name} |mean|max {np.abs(mm).max():.4g} |var-1|max {np.abs(mv - 1).max():.4g}", flush=True)
                assert np.abs(mm).max() > 0 and np.abs(mv - 1).max() > 1e-1, layer.name

        h5_path = os.path.join(HERE, base + ".h5")
        if os.path.exists(h5_path):
            os.remove(h5_path)
        model.save(h5_path)
        assert os.path.getsize(h5_path) < 1 << 20, h5_path

        # Reload with the same Keras and compare.
        reloaded = keras.models.load_model(h5_path)
        again = reloaded.predict(xte, verbose=0)
        diff = float(np.abs(again - keras_float).max())
        print(f"[{writer}] {base}: reload max abs diff {diff:.3g}", flush=True)
        assert diff <= 1e-6, f"{base}: reloaded model differs by {diff}"

        # Full-integer TFLite conversion.
        def representative_dataset():
            for i in range(len(xca)):
                yield [xca[i:i + 1].astype(np.float32)]

        def configure(conv):
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative_dataset
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
            return conv

        try:
            tfl = configure(tf.lite.TFLiteConverter.from_keras_model(model)).convert()
            how = "from_keras_model"
        except Exception as exc:  # pragma: no cover - depends on the TF/Keras pair
            if writer != "keras3":
                raise
            print(f"[{writer}] from_keras_model failed ({exc!r}); using model.export()",
                  flush=True)
            import shutil
            import tempfile
            tmp = tempfile.mkdtemp(prefix="fixnet_export_")
            try:
                model.export(os.path.join(tmp, "sm"))
                tfl = configure(tf.lite.TFLiteConverter.from_saved_model(
                    os.path.join(tmp, "sm"))).convert()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            how = "from_saved_model(model.export())"
        tfl_path = os.path.join(HERE, base + ".tflite")
        with open(tfl_path, "wb") as f:
            f.write(tfl)
        print(f"[{writer}] {base}: tflite via {how}, {len(tfl)} bytes", flush=True)

        # Reference outputs come from TFLite's reference kernels (BUILTIN_REF, no
        # delegate). The default interpreter (XNNPACK delegate) is run too and
        # compared, for information only.
        def run_tflite(resolver):
            interp = tf.lite.Interpreter(
                model_content=tfl, num_threads=1,
                experimental_op_resolver_type=getattr(
                    tf.lite.experimental.OpResolverType, resolver))
            interp.allocate_tensors()
            din = interp.get_input_details()[0]
            dout = interp.get_output_details()[0]
            assert din["dtype"] == np.int8 and dout["dtype"] == np.int8, (din, dout)
            in_scale, in_zp = din["quantization"]
            xq = quantize_input(xte, in_scale, in_zp)
            out = np.empty((len(xq), 10), dtype=np.int8)
            for i in range(len(xq)):
                interp.set_tensor(din["index"], xq[i:i + 1])
                interp.invoke()
                out[i] = interp.get_tensor(dout["index"]).reshape(10)
            return din, dout, xq, out

        din, dout, xq, raw = run_tflite("BUILTIN_REF")
        in_scale, in_zp = din["quantization"]
        out_scale, out_zp = dout["quantization"]
        _, _, _, raw_default = run_tflite("AUTO")
        ndiff = int(np.sum(raw_default != raw))
        print(f"[{writer}] {base}: default interpreter (XNNPACK) vs BUILTIN_REF: "
              f"{ndiff} differing int8 outputs, max |diff| "
              f"{int(np.abs(raw_default.astype(np.int16) - raw).max())}", flush=True)
        deq = ((raw.astype(np.float32) - np.float32(out_zp)) * np.float32(out_scale)).astype(np.float32)
        tacc = float(np.mean(deq.argmax(1) == y_test))
        agree = float(np.mean(deq.argmax(1) == keras_float.argmax(1)))
        print(f"[{writer}] {base}: tflite int8 acc {tacc:.4f}, agreement {agree:.4f}", flush=True)

        np.savez_compressed(
            os.path.join(HERE, base + ".npz"),
            x_test=xte.astype(np.float32),
            y_test=y_test.astype(np.int64),
            x_calib=xca.astype(np.float32),
            keras_float=keras_float,
            tflite_int8=deq,
            tflite_int8_raw=raw,
            tflite_input_int8=xq,
            tflite_input_scale=np.float32(in_scale),
            tflite_input_zero_point=np.int64(in_zp),
            tflite_output_scale=np.float32(out_scale),
            tflite_output_zero_point=np.int64(out_zp),
            tflite_converter=np.str_(how),
            tflite_kernels=np.str_("BUILTIN_REF"),
            writer=np.str_(writer),
            keras_version=np.str_(keras_version),
            tf_version=np.str_(tf.__version__),
        )


# --------------------------------------------------------------------------- README
README_HEAD = """\
# models/ — Keras HDF5 test fixtures

Generated by `make_models.py` (the MLPs), `make_cnn_models.py` and
`make_layer_models.py` (the CNN, layer-coverage and other-format fixtures, described
after the MLPs). This README is written by `make_models.write_readme()`, which every
script calls at its end: edit the scripts, not this file.

Small MLPs trained on scikit-learn's bundled `load_digits()` (8x8 images scaled
to [0, 1] by /16, 10 classes), each saved in HDF5 by two writers:

* `*_k3.*` — Keras 3 (`keras` {k3_keras}, TensorFlow backend), `model.save("x.h5")`,
  i.e. Keras 3's legacy HDF5 writer.
* `*_tfk2.*` — tf.keras 2 (`tf_keras` {tfk2_keras}, selected with `TF_USE_LEGACY_KERAS=1`).

TensorFlow {tf_version}.

| model | architecture | input |
| --- | --- | --- |
| `mlp_seq_{{k3,tfk2}}` | Sequential: Input(64) → Dense(64, relu) → Dropout(0.2) → Dense(32) → BatchNormalization → ReLU → Dense(10, softmax) | (N, 64) |
| `mlp_func_{{k3,tfk2}}` | Functional: Input(8, 8) → Flatten → BatchNormalization → Dense(48) → BatchNormalization → Activation(relu) → Dropout(0.1) → Dense(10) → Softmax | (N, 8, 8) |

Layers keep their default names. Data split (fixed seed {seed}, stratified):
{n_test} test samples, {n_calib} calibration samples taken from the training
portion, the remaining {n_train} train. All models use the same split. Training:
Adam(1e-3), sparse categorical crossentropy, {epochs} epochs, batch {batch}.

## Files per model `<name>`

* `<name>.h5` — the trained model, `model.save(path)`.
* `<name>.tflite` — TensorFlow Lite full-integer model: `TFLiteConverter`
  (`from_keras_model`; for Keras 3, `model.export()` + `from_saved_model` if that
  fails — the `.npz` key `tflite_converter` records which), `Optimize.DEFAULT`,
  a representative dataset of the {n_calib} calibration samples one at a time,
  `TFLITE_BUILTINS_INT8`, int8 input and output.
* `<name>.npz` (`np.load`) with keys:
  * `x_test` float32 (model input shape), `y_test` int64, `x_calib` float32;
  * `keras_float` float32 — `model.predict(x_test)` of the trained model (the
    script asserts that reloading the `.h5` with the same Keras reproduces it
    within 1e-6);
  * `tflite_input_int8` int8 — `x_test` quantized for the TFLite model:
    `clip(round_half_away_from_zero(x / input_scale) + input_zero_point, -128, 127)`,
    computed in float32;
  * `tflite_int8_raw` int8 — the TFLite interpreter's raw outputs on it, one sample
    at a time, with TFLite's reference kernels
    (`experimental_op_resolver_type=OpResolverType.BUILTIN_REF`, no delegate);
    `tflite_int8` float32 — the same dequantized, `(raw - output_zero_point) * output_scale`;
  * `tflite_input_scale`, `tflite_input_zero_point`, `tflite_output_scale`,
    `tflite_output_zero_point` (scalars), `tflite_converter`, `tflite_kernels` (strings);
  * `writer` (`"keras3"` or `"tfkeras2"`), `keras_version`, `tf_version` (strings).

## Notes

* The interpreter is TensorFlow's own `tf.lite.Interpreter` (it warns that it is
  deprecated in favour of `ai_edge_litert`, but works in TF 2.21; `ai-edge-litert`
  was not needed). The script also runs the default interpreter (XNNPACK
  delegate) and prints how many int8 outputs differ from the reference kernels
  (0 when these fixtures were made). TFLite's optimized builtin kernels without
  the delegate (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`) do differ: their int8
  FULLY_CONNECTED outputs are off by 1 LSB on a few dozen activations per
  layer over the test set, which moves a handful of final outputs by 1–8 LSB. The
  reference kernels (equal to XNNPACK here) are the ones to match bit for bit.
* The TFLite converter folds every BatchNormalization into the neighbouring
  FULLY_CONNECTED; the `.tflite` graphs are FULLY_CONNECTED x3 + SOFTMAX
  (`mlp_seq`), (SHAPE/STRIDED_SLICE/PACK +) RESHAPE + FULLY_CONNECTED x2 + SOFTMAX
  (`mlp_func`). Weights are int8 per-output-channel symmetric (zero point 0),
  biases int32, activations int8 per-tensor asymmetric; the softmax output is
  scale 1/256, zero point -128.
* In `mlp_func` the first BatchNormalization's beta and the first Dense's bias get
  no gradient (a BatchNormalization follows them), so they stay ~1e-3, and the
  second BatchNormalization's moving_mean stays ~2e-3; its moving_variance and the
  first one's moving statistics are far from (0, 1). Input pixels that are always
  0 give moving_variance ~0 in the first BatchNormalization (epsilon 1e-3 matters).

## Regenerate

```
python -m venv /path/to/venv-with-tf
/path/to/venv-with-tf/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 scikit-learn
/path/to/venv-with-tf/bin/python models/make_models.py         # MLPs (~30 s)
/path/to/venv-with-tf/bin/python models/make_cnn_models.py     # CNNs, .keras, JSON + weights (~12-16 min)
/path/to/venv-with-tf/bin/python models/make_layer_models.py   # layer coverage (~1 min)
/path/to/venv-with-tf/bin/python models/make_models.py --readme-only
```

`make_cnn_models.py` and `make_layer_models.py` take `--only name1,name2` to remake
some models; each ends by rewriting this README from all `.npz` files present.

The script runs itself once per writer in a subprocess (`--writer keras3`,
`--writer tfkeras2` with `TF_USE_LEGACY_KERAS=1`), then writes this README. It is
seeded (python `random`, numpy, TensorFlow, `keras.utils.set_random_seed`,
op determinism; the .h5, .tflite and .npz files come out byte-identical run to
run on the same machine) and takes about 30 s on 2 cores. It is never run in CI.

## Measured on test set ({n_test} samples)

| model | writer | Keras float acc | TFLite int8 acc | top-1 agreement int8 vs float | max abs diff int8 vs float | input scale / zp | output scale / zp |
| --- | --- | --- | --- | --- | --- | --- | --- |
"""


def write_readme():
    rows = []
    meta = {}
    for writer, (suffix, _) in WRITERS.items():
        for name in MODELS:
            base = f"{name}_{suffix}"
            d = np.load(os.path.join(HERE, base + ".npz"))
            meta[writer] = str(d["keras_version"])
            meta["tf"] = str(d["tf_version"])
            kf, ti, y = d["keras_float"], d["tflite_int8"], d["y_test"]
            rows.append(
                f"| `{base}` | {writer} | {np.mean(kf.argmax(1) == y):.4f} "
                f"| {np.mean(ti.argmax(1) == y):.4f} "
                f"| {np.mean(ti.argmax(1) == kf.argmax(1)):.4f} "
                f"| {np.abs(ti - kf).max():.4f} "
                f"| {float(d['tflite_input_scale']):.8g} / {int(d['tflite_input_zero_point'])} "
                f"| {float(d['tflite_output_scale']):.8g} / {int(d['tflite_output_zero_point'])} |")
            n_train = 1797 - N_TEST - N_CALIB
    text = README_HEAD.format(
        k3_keras=meta["keras3"], tfk2_keras=meta["tfkeras2"], tf_version=meta["tf"],
        seed=SEED, n_test=N_TEST, n_calib=N_CALIB, n_train=n_train,
        epochs=EPOCHS, batch=BATCH)
    text += "\n".join(rows) + "\n"
    import fixture_stats  # CNN / layer / other-format sections, from their .npz files
    text += fixture_stats.extended_readme()
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write(text)
    print(text)


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", choices=sorted(WRITERS),
                    help="run one writer in this process (default: all, each in a subprocess)")
    ap.add_argument("--readme-only", action="store_true",
                    help="only rewrite README.md from the .npz files present")
    args = ap.parse_args()
    if args.readme_only:
        write_readme()
        return
    if args.writer:
        run_writer(args.writer)
        return
    for writer, (_, extra_env) in WRITERS.items():
        env = dict(os.environ)
        env.update(extra_env)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain kernels, reproducible numbers
        env["PYTHONHASHSEED"] = "0"
        cmd = [sys.executable, os.path.abspath(__file__), "--writer", writer]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)
    write_readme()


if __name__ == "__main__":
    main()

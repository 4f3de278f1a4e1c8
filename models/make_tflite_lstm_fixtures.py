#!/usr/bin/env python
"""Fixtures for TFLite's int8 UNIDIRECTIONAL_SEQUENCE_LSTM: small Keras LSTMs trained on
scikit-learn's digits (each 8x8 image read as 8 time steps of 8 features), converted to
full-integer int8 .tflite files, with TFLite's outputs on the test images.

Run by hand, never in CI (TensorFlow 2.21 + tf_keras; the converter fuses a tf_keras LSTM
into UNIDIRECTIONAL_SEQUENCE_LSTM when converting a batch-1 concrete function; a Keras 3
LSTM converts to READ_VARIABLE / WHILE ops instead):

    TF_USE_LEGACY_KERAS=1 /work/tfenv/bin/python models/make_tflite_lstm_fixtures.py

Writes models/tflite/lstm/<name>.tflite and <name>.npz with ``x`` (int8 input codes),
``ref`` (OpResolverType.BUILTIN_REF outputs, int8), ``builtin`` (BUILTIN_WITHOUT_DEFAULT_
DELEGATES), ``ops`` (the operators of the file) and ``keras_float`` (the Keras model's float
outputs). Every sample is run on its own after ``interpreter.reset_all_variables()``:
TFLite keeps an LSTM's state in variable tensors across invoke() calls.

Also prints what the converter writes for LSTM variants it does not fuse into this op (no
fixture is kept for those).
"""
import os
import subprocess
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_models import load_split  # noqa: E402
from fixture_common import quantize_input  # noqa: E402

OUT = os.path.join(HERE, "tflite", "lstm")
N_TEST = 200
SEED = 7


def tf_modules():
    import tensorflow as tf
    import tf_keras as keras
    return tf, keras


def train(keras, model, x, y, epochs):
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def convert(tf, model, x_calib):
    shape = (1,) + tuple(model.inputs[0].shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
    def fn(x):
        return {"out": model(x, training=False)}

    def representative_dataset():
        for i in range(len(x_calib)):
            yield [x_calib[i:i + 1]]
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def run(tf, tfl, xq, resolver):
    it = tf.lite.Interpreter(model_content=tfl, num_threads=1,
                             experimental_op_resolver_type=getattr(
                                 tf.lite.experimental.OpResolverType, resolver))
    it.allocate_tensors()
    (i,), (o,) = it.get_input_details(), it.get_output_details()
    out = []
    for k in range(len(xq)):
        it.reset_all_variables()
        it.set_tensor(i["index"], xq[k:k + 1])
        it.invoke()
        out.append(it.get_tensor(o["index"])[0].copy())
    ops = [d["op_name"] for d in it._get_ops_details()]
    return np.array(out), ops, i["quantization"]


def write(tf, name, model, x_calib, x_test):
    tfl = convert(tf, model, x_calib)
    it = tf.lite.Interpreter(model_content=tfl)
    scale, zp = it.get_input_details()[0]["quantization"]
    xq = quantize_input(x_test, scale, zp)
    ref, ops, _ = run(tf, tfl, xq, "BUILTIN_REF")
    builtin, _, _ = run(tf, tfl, xq, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    if "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops:
        raise SystemExit(f"{name}: the converter did not fuse the LSTM: {ops}")
    with open(os.path.join(OUT, name + ".tflite"), "wb") as f:
        f.write(tfl)
    extra = {}
    if ref.ndim == 2:           # the classifiers' float outputs (small)
        extra["keras_float"] = model.predict(x_test, verbose=0)
    np.savez_compressed(os.path.join(OUT, name + ".npz"), x=xq, ref=ref, builtin=builtin,
                        ops=np.array(ops), tf_version=np.str_(tf.__version__), **extra)
    same = int((ref == builtin).sum())
    print(f"{name}: {len(tfl)} bytes, ops {ops}, input zp {zp}, ref == builtin on "
          f"{same}/{ref.size}")


PROBES = {"relu": "LSTM(16, activation='relu')",
          "hard_sigmoid": "LSTM(16, recurrent_activation='hard_sigmoid')",
          "go_backwards": "LSTM(16, go_backwards=True)",
          "no_bias": "LSTM(16, use_bias=False)"}


def probe(key):
    """What the converter writes for an LSTM variant (printed, not kept); run in a child
    process: the converter or interpreter may crash on some (a segfault was seen)."""
    tf, keras = tf_modules()
    _, _, x_calib, _, _ = load_split()
    L = keras.layers
    layer = {"relu": L.LSTM(16, activation="relu"),
             "hard_sigmoid": L.LSTM(16, recurrent_activation="hard_sigmoid"),
             "go_backwards": L.LSTM(16, go_backwards=True),
             "no_bias": L.LSTM(16, use_bias=False)}[key]
    model = keras.Sequential([keras.Input((8, 8)), layer, L.Dense(10)])
    try:
        tfl = convert(tf, model, x_calib[:20])
        it = tf.lite.Interpreter(model_content=tfl)
        it.allocate_tensors()
        print(f"probe {PROBES[key]}: ops {[d['op_name'] for d in it._get_ops_details()]}")
    except Exception as e:  # noqa: BLE001 - reported
        print(f"probe {PROBES[key]}: conversion failed: {str(e).splitlines()[0][:200]}")


def main():
    tf, keras = tf_modules()
    tf.random.set_seed(SEED)
    keras.utils.set_random_seed(SEED)
    os.makedirs(OUT, exist_ok=True)
    x_train, y_train, x_calib, x_test, y_test = load_split()
    x_test = x_test[:N_TEST]
    L = keras.layers

    # return_sequences=False: LSTM -> STRIDED_SLICE (last step) -> FULLY_CONNECTED
    last = train(keras, keras.Sequential([keras.Input((8, 8)), L.LSTM(24),
                                          L.Dense(10, activation="softmax")]),
                 x_train, y_train, 15)
    write(tf, "digits_lstm_last", last, x_calib, x_test)

    # return_sequences=True, stacked; and the first LSTM alone (its sequence is the output)
    stacked = train(keras, keras.Sequential([
        keras.Input((8, 8)), L.LSTM(20, return_sequences=True, name="seq"), L.LSTM(16),
        L.Dense(10, activation="softmax")]), x_train, y_train, 15)
    write(tf, "digits_lstm_stacked", stacked, x_calib, x_test)
    seq = keras.Model(stacked.inputs, stacked.get_layer("seq").output)
    write(tf, "digits_lstm_seq", seq, x_calib, x_test)

    # centred inputs (input zero point near 0), the image read by columns, 12 units without
    # unit_forget_bias
    mean = x_train.mean(axis=0, keepdims=True)
    cols = (lambda x: np.transpose(x - mean, (0, 2, 1)).astype(np.float32))
    centred = train(keras, keras.Sequential([
        keras.Input((8, 8)), L.LSTM(12, unit_forget_bias=False), L.Dense(10, activation="softmax")]),
        cols(x_train), y_train, 15)
    write(tf, "digits_lstm_centred", centred, cols(x_calib), cols(x_test))

    for key in PROBES:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", key],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("probe ")]
        print(lines[-1] if lines else f"probe {PROBES[key]}: the child process ended with "
              f"status {r.returncode} (the converter or interpreter crashed)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        probe(sys.argv[2])
    else:
        main()

#!/usr/bin/env python
"""Small int8 .tflite models of TFLite's data-movement operators (SLICE, STRIDED_SLICE with
strides and shrinking, SPLIT, SPLIT_V, UNPACK, GATHER, DEPTH_TO_SPACE, SPACE_TO_DEPTH,
REVERSE_V2; PADV2; and PRELU), each after a 1x1 convolution on scikit-learn's digits, converted by TFLite's
converter (full-integer int8, int8 I/O) with TFLite's outputs on the test digits.

Run by hand, never in CI, with a Python that has tensorflow 2.21, tf_keras and scikit-learn::

    TF_USE_LEGACY_KERAS=1 /path/to/venv-with-tf/bin/python models/make_tflite_data_ops.py

Writes models/tflite/data_ops/<name>.tflite and <name>.npz: ``x`` (int8 input codes of the
test digits), ``ref_<k>`` (output k, TFLite's reference kernels, OpResolverType.BUILTIN_REF; where those
lack an operator's version, the builtin kernels', which ``kernels`` says), ``builtin_<k>``
(the default interpreter's), ``ops`` (the operators in the file).
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tflite", "data_ops")
N_TEST = 48


def cases(tf):
    """name -> (channels of the 1x1 conv, function of its output giving the model's outputs)."""
    return {
        "split": (6, lambda t: tf.split(t, 3, axis=-1)),
        "split_v": (5, lambda t: tf.split(t, [2, 3], axis=-1)),
        "slice": (4, lambda t: [tf.slice(t, [0, 1, 2, 1], [-1, 5, 4, 2])]),
        "strided": (4, lambda t: [t[:, ::2, 1::3, :], t[:, 3, :, 1:3]]),
        "unpack": (3, lambda t: tf.unstack(t, axis=-1)),
        "gather": (6, lambda t: [tf.gather(t, [5, 0, 3], axis=-1), tf.gather(t, [7, 1], axis=1)]),
        "depth_to_space": (8, lambda t: [tf.nn.depth_to_space(t, 2)]),
        "space_to_depth": (3, lambda t: [tf.nn.space_to_depth(t, 2)]),
        "reverse": (4, lambda t: [tf.reverse(t, axis=[2])]),
        "padv2": (4, lambda t: [tf.pad(t, [[0, 0], [1, 2], [2, 1], [0, 0]],
                                       constant_values=0.75)]),
        # not data movement: Keras' PReLU (one slope per element, and one per channel) after a
        # convolution without ReLU, so both branches are taken
        "prelu": (4, "prelu"),
    }


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return x[:300], x[-N_TEST:]


def build(tf, channels, fn):
    inp = tf.keras.Input((8, 8, 1))
    t = tf.keras.layers.Conv2D(channels, 1, activation=None if fn == "prelu" else "relu",
                               kernel_initializer=
                               tf.keras.initializers.RandomNormal(stddev=1.0, seed=1),
                               bias_initializer=tf.keras.initializers.RandomUniform(-0.2, 0.2,
                                                                                    seed=2))(inp)
    if fn == "prelu":
        slopes = tf.keras.initializers.RandomUniform(-0.5, 0.9, seed=3)
        outs = [tf.keras.layers.PReLU(alpha_initializer=slopes)(t),
                tf.keras.layers.PReLU(alpha_initializer=slopes, shared_axes=[1, 2])(t)]
    else:
        outs = tf.keras.layers.Lambda(lambda v: fn(v))(t)
    return tf.keras.Model(inp, outs if isinstance(outs, (list, tuple)) else [outs])


def convert(tf, model, calib):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def run(tf, path, x, kind):
    it = tf.lite.Interpreter(model_path=path, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    outs = sorted(it.get_output_details(), key=lambda o: o["name"])
    got = [[] for _ in outs]
    for k in range(len(x)):
        it.set_tensor(d["index"], x[k:k + 1])
        it.invoke()
        for j, o in enumerate(outs):
            got[j].append(it.get_tensor(o["index"]).copy())
    return [np.concatenate(g) for g in got], [o["name"] for o in outs]


def main():
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema

    os.makedirs(OUT, exist_ok=True)
    calib, test = digits()
    for name, (channels, fn) in cases(tf).items():
        model = build(tf, channels, fn)
        blob = convert(tf, model, calib)
        path = os.path.join(OUT, name + ".tflite")
        with open(path, "wb") as f:
            f.write(blob)
        m = schema.ModelT.InitFromPackedBuf(bytearray(blob), 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        ops = [names[max(m.operatorCodes[o.opcodeIndex].builtinCode,
                         m.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)]
               for o in m.subgraphs[0].operators]
        it = tf.lite.Interpreter(model_path=path)
        d = it.get_input_details()[0]
        scale, zp = d["quantization"]
        x = np.clip(np.round(test / scale + zp), -128, 127).astype(np.int8)
        builtin, out_names = run(tf, path, x, tf.lite.experimental.OpResolverType.BUILTIN)
        try:
            ref, _ = run(tf, path, x, tf.lite.experimental.OpResolverType.BUILTIN_REF)
            kernels = "BUILTIN_REF"
        except ValueError as e:       # an op version the reference resolver lacks
            print(f"{name}: the reference kernels cannot run it ({str(e).splitlines()[0]}); "
                  "ref_<k> are the builtin kernels' outputs")
            ref, kernels = builtin, "BUILTIN"
        arrays = {"x": x, "ops": np.array(ops), "output_names": np.array(out_names),
                  "kernels": np.array(kernels)}
        arrays.update({f"ref_{k}": v for k, v in enumerate(ref)})
        arrays.update({f"builtin_{k}": v for k, v in enumerate(builtin)})
        np.savez_compressed(os.path.join(OUT, name + ".npz"), **arrays)
        print(f"{name}: {' '.join(ops)}; outputs {[v.shape for v in ref]}")


if __name__ == "__main__":
    main()

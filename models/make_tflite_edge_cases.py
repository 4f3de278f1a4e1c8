#!/usr/bin/env python
"""TFLite files in shapes today's converter no longer writes but real files hold, made by editing
a converted fixture, with TFLite's own outputs on them.

Run by hand, never in CI, with a Python that has tensorflow 2.21::

    /path/to/venv-with-tf/bin/python models/make_tflite_edge_cases.py

Writes models/tflite/edge/<name>.tflite and <name>.npz (``x``: int8 input codes; ``y_ref``:
TFLite's reference kernels' outputs, OpResolverType.BUILTIN_REF; ``y_builtin``: the default
interpreter's; ``source``: the fixture it was edited from; ``edit``: what was changed).

Cases:

* ``fc_rank4_input``: cnn_digits_k3.int8io.tflite with its Flatten (SHAPE, STRIDED_SLICE, PACK,
  RESHAPE) removed, so that FULLY_CONNECTED reads the [1, H, W, C] convolution output itself and
  flattens it, as files written by TensorFlow 1's converter do (TFLite Micro's micro_speech
  model: DEPTHWISE_CONV_2D -> FULLY_CONNECTED).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "tflite")
OUT = os.path.join(SRC, "edge")
N_INPUTS = 32


def load(schema, path):
    with open(path, "rb") as f:
        buf = f.read()
    return schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)


def save(schema, model, path):
    import flatbuffers
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(b.Output())


def op_names(schema, model):
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes]


def fc_rank4_input(schema, model):
    g = model.subgraphs[0]
    codes = op_names(schema, model)
    ops = g.operators
    k = next(i for i, op in enumerate(ops) if codes[op.opcodeIndex] == "FULLY_CONNECTED")
    reshape = ops[k - 1]
    assert codes[reshape.opcodeIndex] == "RESHAPE", codes[reshape.opcodeIndex]
    assert ops[k].inputs[0] == reshape.outputs[0]
    ops[k].inputs[0] = reshape.inputs[0]
    drop = {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"}
    g.operators = [op for op in ops if codes[op.opcodeIndex] not in drop]
    shape = [int(s) for s in g.tensors[reshape.inputs[0]].shape]
    return f"Flatten removed: FULLY_CONNECTED reads the {shape} tensor itself"


CASES = {"fc_rank4_input": ("cnn_digits_k3.int8io", fc_rank4_input)}


def run(tf, path, x, kind):
    it = tf.lite.Interpreter(model_path=path, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for k in range(len(x)):
        it.set_tensor(d["index"], x[k:k + 1])
        it.invoke()
        out.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(out)


def main():
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema

    os.makedirs(OUT, exist_ok=True)
    for name, (source, edit) in CASES.items():
        model = load(schema, os.path.join(SRC, source + ".tflite"))
        what = edit(schema, model)
        path = os.path.join(OUT, name + ".tflite")
        save(schema, model, path)
        it = tf.lite.Interpreter(model_path=path)
        d = it.get_input_details()[0]
        rng = np.random.default_rng(0)
        x = rng.integers(-128, 128, size=(N_INPUTS,) + tuple(d["shape"][1:])).astype(d["dtype"])
        ref = run(tf, path, x, tf.lite.experimental.OpResolverType.BUILTIN_REF)
        builtin = run(tf, path, x, tf.lite.experimental.OpResolverType.BUILTIN)
        np.savez_compressed(os.path.join(OUT, name + ".npz"), x=x, y_ref=ref, y_builtin=builtin,
                            source=source, edit=what, tf_version=tf.__version__)
        print(f"{name}: {what}; {len(x)} inputs")


if __name__ == "__main__":
    main()

"""Check fixnet against TensorFlow Lite on .tflite files you have (yours, a model zoo's, a benchmark's).

Two steps, because fixnet never imports TensorFlow:

    # 1. in an environment with TensorFlow (tensorflow-cpu), record TFLite's outputs
    python tools/tflite_check.py reference model.tflite other.tflite -o refs/ [--n 64] [--seed 0]

    # 2. in fixnet's environment, load each file with fixnet and compare
    python tools/tflite_check.py compare model.tflite other.tflite --refs refs/

``reference`` draws ``--n`` random inputs per input tensor (integer: uniform over every code of
its type; float: unit normal, the file not saying what reals it expects) and runs them one at a
time, each from the initial state, through TFLite's reference kernels
(``OpResolverType.BUILTIN_REF``) and its default optimised kernels (``BUILTIN``, XNNPACK). It writes ``refs/<stem>.npz`` with ``x_<i>``,
``ref_<j>`` and ``builtin_<j>``.

``compare`` loads each file with ``fixnet.load`` (a refusal is printed with its reason), predicts
the same inputs in the file's own I/O types and prints, per output, how many values equal the
reference kernels' values, the largest difference, and the same against the optimised kernels.
Exit status 1 if any file is refused or any value differs from the reference kernels.
"""
import argparse
import os
import sys

import numpy as np


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def _inputs(details, n, rng):
    xs = []
    for d in details:
        shape = [int(s) for s in d["shape"]]
        # a first dimension of 1 is the batch axis: samples stack along it; any other first
        # dimension is part of the sample (each sample is the whole tensor, one more axis)
        full = [n] + shape[1:] if shape and shape[0] == 1 else [n] + shape
        dt = np.dtype(d["dtype"])
        if dt.kind in "iu":
            info = np.iinfo(dt)
            xs.append(rng.integers(info.min, info.max + 1, size=full, dtype=np.int64).astype(dt))
        else:
            xs.append(rng.normal(0.0, 1.0, size=full).astype(dt))
    return xs


def reference(args):
    import tensorflow as tf

    os.makedirs(args.out, exist_ok=True)
    kinds = {"ref": tf.lite.experimental.OpResolverType.BUILTIN_REF,
             "builtin": tf.lite.experimental.OpResolverType.BUILTIN}
    for path in args.files:
        rng = np.random.default_rng(args.seed)
        stored = {}
        xs = None
        for key, kind in kinds.items():
            try:
                it = tf.lite.Interpreter(model_path=path, experimental_op_resolver_type=kind)
                it.allocate_tensors()
            except Exception as e:  # noqa: BLE001 - report and go on to the next file
                print(f"{path}: TFLite ({key}) cannot run it: {e}")
                break
            ins, outs = it.get_input_details(), it.get_output_details()
            if xs is None:
                xs = _inputs(ins, args.n, rng)
            got = [[] for _ in outs]
            try:
                run_samples(it, ins, outs, xs, got, args.n)
            except (RuntimeError, ValueError) as e:
                print(f"{path}: TFLite ({key}) fails on it: {str(e).splitlines()[0]}")
                break
            for j, g in enumerate(got):
                stored[f"{key}_{j}"] = np.concatenate(g)
        else:
            for i, x in enumerate(xs):
                stored[f"x_{i}"] = x
            dest = os.path.join(args.out, _stem(path) + ".npz")
            np.savez_compressed(dest, **stored)
            print(f"{path}: {args.n} inputs -> {dest}")


def run_samples(it, ins, outs, xs, got, n):
    """Each of the n samples through interpreter ``it`` from its initial state, its outputs
    appended to ``got`` (one list per output)."""
    for k in range(n):
        # each sample from the initial state (a recurrent model's state would otherwise carry
        # over from the previous sample; fixnet's predict starts every call afresh)
        it.reset_all_variables()
        for d, x in zip(ins, xs):
            it.set_tensor(d["index"], x[k:k + 1] if x.ndim == len(d["shape"]) else x[k])
        it.invoke()
        for j, d in enumerate(outs):
            got[j].append(it.get_tensor(d["index"]).copy())


def _diff(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}", False
    same = int(np.count_nonzero(a == b))
    big = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return f"{same}/{a.size} equal, max |diff| {big:g}", same == a.size


def compare(args):
    import fixnet

    bad = 0
    for path in args.files:
        ref = os.path.join(args.refs, _stem(path) + ".npz")
        if not os.path.exists(ref):
            print(f"{path}: no reference outputs at {ref}; run the 'reference' step first")
            bad += 1
            continue
        d = np.load(ref)
        try:
            qm = fixnet.load(path)
        except fixnet.FixnetError as e:
            print(f"{path}: refused: {e}")
            bad += 1
            continue
        xs = []
        while f"x_{len(xs)}" in d:
            xs.append(d[f"x_{len(xs)}"])
        n_out = 0
        while f"ref_{n_out}" in d:
            n_out += 1
        # ask for the file's own output type: codes for an int8/uint8 output, floats otherwise
        kind = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8",
                np.dtype(np.int16): "int16"}.get(d["ref_0"].dtype,
                                                                               "float32")
        outs = []
        whole = [x.ndim == len(qm.tensors[t].shape) + 2 for x, t in zip(xs, qm.inputs)]
        for k in range(len(xs[0])):
            one = [x[k] if w else x[k:k + 1] for x, w in zip(xs, whole)]
            one = qm.predict(one if len(one) > 1 else one[0], output=kind)
            outs.append(list(one) if isinstance(one, (list, tuple)) else [one])
        for j in range(n_out):
            got = np.concatenate([o[j] for o in outs])
            line, ok = _diff(got, d[f"ref_{j}"])
            bline, _ = _diff(got, d[f"builtin_{j}"]) if f"builtin_{j}" in d else ("-", True)
            print(f"{path} output {j}: reference kernels {line}; optimised kernels {bline}")
            bad += not ok
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference", help="record TFLite's outputs (needs TensorFlow)")
    r.add_argument("files", nargs="+")
    r.add_argument("-o", "--out", required=True)
    r.add_argument("--n", type=int, default=64)
    r.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare", help="compare fixnet with the recorded outputs")
    c.add_argument("files", nargs="+")
    c.add_argument("--refs", required=True)
    args = p.parse_args(argv)
    if args.cmd == "reference":
        reference(args)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())

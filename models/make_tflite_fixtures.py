#!/usr/bin/env python
"""TFLite-file fixtures: `.tflite` files as people have them, with TensorFlow Lite's own outputs.

For the issue "run the .tflite files people already have, bit-exact with TFLite": the test suite
compares fixnet on a `.tflite` file against TFLite's outputs stored here, without TensorFlow.

Run by hand, never in CI, in the TensorFlow venv (tensorflow-cpu 2.21, tf-keras 2.21, keras 3)::

    nice -n 5 /path/to/venv-with-tf/bin/python models/make_tflite_fixtures.py [--only a_k3,b_tfk2]
    /path/to/venv-with-tf/bin/python models/make_tflite_fixtures.py --readme   # no TensorFlow

Written into models/tflite/ (the fixtures' own files are only read):

* ``<name>.int8io.tflite``: the fixture's Keras model (``<name>.h5``, else ``<name>.keras``)
  converted full-integer: TFLiteConverter (``from_keras_model``; for Keras 3, the
  ``model.export()`` SavedModel if that fails), Optimize.DEFAULT, representative dataset = the
  fixture's ``x_calib`` one sample at a time, supported_ops = [TFLITE_BUILTINS_INT8],
  inference_input_type = inference_output_type = tf.int8, per-channel weights (the default).
  This is the recipe of the fixture's own ``<name>.tflite``; ``same_bytes_as_fixture`` says
  whether the bytes came out identical.
* ``<name>.uint8io.tflite``: the same with tf.uint8 input and output (the tutorial case), not
  for the two largest models (NO_UINT8IO).
* ``<name>.16x8.npz`` for the existing ``models/<name>.16x8.tflite`` (not rewritten).
* ``<stem>.npz`` next to every ``<stem>.tflite`` (and the 16x8 ones), see NPZ_KEYS.

Each fixture is converted and run in a child process of its own, with its writer's environment
(TF_USE_LEGACY_KERAS=1 for ``*_tfk2``); a conversion error or a crash is recorded in
``models/tflite/FAILED.json``, not fatal. The script ends by rewriting models/README.md
(``make_models.write_readme()`` takes ``readme_section()`` from here).
"""
import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import HERE, WRITERS, quantize_input  # noqa: E402

OUT = os.path.join(HERE, "tflite")
FAMILIES = ("mlp_seq", "mlp_func", "cnn_digits", "kws_dscnn", "kws_conv1d", "mobilenet_small",
            "mobilenetv2", "resnet_small", "concat_branches", "multi_io",
            "layers_conv2d", "layers_conv1d", "layers_depthwise", "layers_pooling",
            "layers_padding_reshape", "layers_merge", "layers_activations", "layers_noise_norm",
            "layers_channels_first", "layers_upsampling", "layers_upsampling1d",
            "layers_tensor_ops", "layers_mobilenetv3_small")
FIXTURES = tuple(f"{fam}_{sfx}" for fam in FAMILIES for sfx, _ in WRITERS.values())
# the existing 16x8 files of the convnets (models/<name>.16x8.tflite), read, never written
FIXTURES_16X8 = tuple(f"{fam}_{sfx}" for fam in ("cnn_digits", "kws_dscnn", "mobilenet_small",
                                                 "resnet_small")
                      for sfx, _ in WRITERS.values())
VARIANTS = ("int8io", "uint8io")
# no uint8io file for the two largest models (0.45-0.65 MB each): it would repeat the int8io
# graph plus two QUANTIZE ops, which the small models cover, and keep tflite/ under ~15 MB
NO_UINT8IO = ("mobilenetv2", "layers_mobilenetv3_small")
N_RUN = 64                  # test inputs run through every interpreter
# test inputs whose every intermediate tensor is stored, per variant ...
N_TENSORS = {"int8io": 4, "16x8": 2, "uint8io": 0}
TENSOR_BUDGET = 1 << 20     # ... 1 when one input's intermediates exceed this many bytes
# short name -> tf.lite.experimental.OpResolverType member
RESOLVERS = {"ref": "BUILTIN_REF",                           # reference kernels
             "xnnpack": "BUILTIN",                           # optimised kernels + XNNPACK delegate
             "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}  # optimised kernels alone

NPZ_KEYS = """
* `variant` (`int8io`, `uint8io`, `16x8`), `tflite_file` (the file's path under models/),
  `tflite_sha256`, `tflite_bytes`, `converter_settings` (JSON), `same_bytes_as_fixture` (int8io:
  whether the bytes equal the fixture's `models/<name>.tflite`);
* I/O in Keras order, `_<i>` suffixed when the model has several inputs or outputs (as in the
  fixture's own `.npz`: i = the position in `keras_input_names` / `keras_output_names`; no
  entries for the `dropped_outputs`):
  * `input` (`input_0`, ...): what was set on the input tensor for the first 64 `x_test`
    samples: int8 / uint8 codes, `clip(round_half_away(x / scale) + zp)`, or for 16x8 the
    float32 `x_test` itself (its QUANTIZE is in the graph); `input_scale`, `input_zero_point`,
    `input_dtype`;
  * `out_ref`, `out_xnnpack`, `out_builtin`: the raw output codes (int8 / uint8; int16 for
    16x8, the codes behind the final DEQUANTIZE, with `out_*_float` the float outputs) from
    `OpResolverType.BUILTIN_REF` (reference kernels), `BUILTIN` (optimised kernels with the
    default XNNPACK delegate) and `BUILTIN_WITHOUT_DEFAULT_DELEGATES` (optimised kernels
    alone); `output_scale`, `output_zero_point`, `output_dtype`;
  * `ndiff_xnnpack_vs_ref`, `ndiff_builtin_vs_ref`, `ndiff_xnnpack_vs_builtin` (number of
    output values that differ), `maxdiff_xnnpack_vs_ref`, `maxdiff_builtin_vs_ref` (largest
    |difference| in codes); `<kind>_error` where an interpreter cannot run the model (then no
    `out_<kind>`); `xnnpack_rerun_ndiff`: output values where a second XNNPACK interpreter,
    run alongside on the same inputs, disagreed with the stored `out_xnnpack` (0: reproduced);
* `keras_input_names`, `keras_output_names`, `tflite_input_names`, `tflite_output_names`,
  `signature_input_keys`, `signature_output_keys` (how the TFLite tensors map to Keras order);
* `ops` (builtin op names in execution order), `op_inputs`, `op_outputs` (JSON lists of tensor
  indices per op), `xnnpack_delegate_nodes` (DELEGATE nodes in the XNNPACK interpreter's plan:
  > 0 means the delegate took part of the graph);
* per-op comparison of the optimised kernels without delegate against the reference kernels on
  all 64 inputs (`experimental_preserve_all_tensors=True`): `op_ndiff_builtin_vs_ref`,
  `op_maxdiff_builtin_vs_ref`, `op_nvalues` (int64 per op, over the op's outputs);
* int8io and 16x8 files (uint8io: `tensors_n` = 0, none stored; their graph is the int8io one
  plus a QUANTIZE at each end): every intermediate tensor for the first `tensors_n` inputs
  (int8io 4, 16x8 2; 1 when one input's intermediates exceed 1 MiB: `mobilenetv2`) from the
  `tensors_kernels` interpreter (the reference kernels where they run the model, else the
  optimised ones):
  `t<index>` (shape `(tensors_n,) + tensor shape`, the tensor's own dtype) for every op output;
  `tensors` (JSON list, one entry per tensor of the model: index, name, dtype, shape, scale and
  zero point — or `per_channel: n` for per-channel weights, whose scales are in the `.tflite` —,
  `stored`);
* `tf_version`, `numpy_version`, `python_version`, `machine`, `platform`, `writer`,
  `keras_file` (the Keras file converted), `dropped_outputs` (Keras outputs left out of the
  TFLite model, as in the fixture's own `.tflite`: `layers_activations`' softsign outputs).
"""


def log(name, msg):
    print(f"[{name}] {msg}", flush=True)


# --------------------------------------------------------------------------- conversion
def load_model(tf, name, fx):
    """(model, the file read) of fixture `name`: its .h5, else its .keras, in the Keras that wrote
    it (make_tflite16x8_goldens.load_keras). Keras 3 cannot read back some .h5 files it wrote
    (layers_mobilenetv3_small_k3: "Only input tensors may be passed as positional arguments"):
    for a layer-coverage fixture the model is then rebuilt by make_layer_models.build and given
    the .h5's weights, and must reproduce the fixture's keras_float."""
    from make_tflite16x8_goldens import load_keras
    try:
        model, _, read = load_keras(tf, name)
        return model, read
    except Exception as exc:  # noqa: BLE001 - try the rebuild below
        if not name.startswith("layers_") or not name.endswith("_k3"):
            raise
        log(name, f"cannot load: {str(exc).splitlines()[0][:200]}; rebuilding")
    import keras
    import make_layer_models
    group = name[len("layers_"):-len("_k3")]
    model, _, _ = make_layer_models.build(keras, group, fx["x_calib"])
    model.load_weights(os.path.join(HERE, name + ".h5"))
    diff = float(np.abs(model.predict(fx["x_test"], verbose=0) - fx["keras_float"]).max())
    log(name, f"rebuilt model + .h5 weights: max |diff| to keras_float {diff:.3g}")
    assert diff <= 1e-5, diff
    return model, f"{name}.h5 (weights only, into make_layer_models.build('{group}'))"


def converter_for(tf, model, keras3, tmp):
    """The conversion routes to try in order, as (how, function configure -> .tflite bytes):
    from_keras_model, then (Keras 3 only) the model.export() SavedModel."""
    def keras_route(configure):
        return configure(tf.lite.TFLiteConverter.from_keras_model(model)).convert()

    def export_route(configure):
        sm = os.path.join(tmp, "sm")
        if not os.path.exists(sm):
            model.export(sm, verbose=False)
        return configure(tf.lite.TFLiteConverter.from_saved_model(sm)).convert()
    routes = [("from_keras_model", keras_route)]
    if keras3:
        routes.append(("from_saved_model(model.export())", export_route))
    return routes


def convert(tf, model, keras3, calib, in_names, io_dtype, tmp):
    """Full-integer conversion with `io_dtype` (tf.int8 / tf.uint8) input and output, the
    fixture_common recipe: the calibration samples one at a time, as a list (one input) or a
    dict keyed by Keras input name (the converter orders inputs by signature name)."""
    n = len(calib[0])

    def representative_dataset():
        for i in range(n):
            if len(calib) == 1:
                yield [calib[0][i:i + 1].astype(np.float32)]
            else:
                yield {nm: c[i:i + 1].astype(np.float32) for nm, c in zip(in_names, calib)}

    def configure(conv):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = io_dtype
        conv.inference_output_type = io_dtype
        return conv

    errors = []
    for how, route in converter_for(tf, model, keras3, tmp):
        try:
            return route(configure), how
        except Exception as exc:  # noqa: BLE001 - try the next route, else re-raise
            errors.append(exc)
    raise errors[-1]


def settings_json(how, io, n_calib):
    return json.dumps({"converter": how, "optimizations": ["DEFAULT"],
                       "supported_ops": ["TFLITE_BUILTINS_INT8"],
                       "representative_dataset": f"x_calib of the fixture, {n_calib} samples "
                                                 "one at a time",
                       "inference_input_type": io, "inference_output_type": io,
                       "weights": "per-channel (default)"})


# --------------------------------------------------------------------------- running
def interpreter(tf, tfl, kind, preserve=False):
    it = tf.lite.Interpreter(
        model_content=tfl, num_threads=1,
        experimental_op_resolver_type=getattr(tf.lite.experimental.OpResolverType,
                                              RESOLVERS[kind]),
        experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


def quantize(x, dtype, scale, zero_point):
    """TFLite's QUANTIZE of float x to int8 / uint8 codes (round half away from zero)."""
    if dtype == np.int8:
        return quantize_input(x, scale, zero_point)
    assert dtype == np.uint8, dtype
    q = quantize_input(x, scale, int(zero_point) - 128).astype(np.int16) + 128
    return q.astype(np.uint8)


def final_dequantize_inputs(ops, out_indices):
    """For a float-output model: the tensor feeding the DEQUANTIZE that makes each output."""
    by_out = {o: op for op in ops for o in op["outputs"]}
    res = []
    for j in out_indices:
        op = by_out[j]
        assert op["op_name"] == "DEQUANTIZE", op["op_name"]
        res.append(int(op["inputs"][0]))
    return res


def tensor_table(it, stored):
    rows = []
    for t in it.get_tensor_details():
        qp = t["quantization_parameters"]
        row = {"index": int(t["index"]), "name": t["name"], "dtype": np.dtype(t["dtype"]).name,
               "shape": [int(s) for s in t["shape"]], "stored": int(t["index"]) in stored}
        if len(qp["scales"]) == 1:
            row["scale"] = float(qp["scales"][0])
            row["zero_point"] = int(qp["zero_points"][0])
        elif len(qp["scales"]) > 1:
            row["per_channel"] = len(qp["scales"])
            row["quantized_dimension"] = int(qp["quantized_dimension"])
        rows.append(row)
    return json.dumps(rows)


def run_all(tf, tfl, xs, in_idx, out_idx, code_idx, n_tensors):
    """Run the first N_RUN samples through every interpreter of RESOLVERS.

    in_idx / out_idx: TFLite tensor indices in Keras order; code_idx: the tensors whose codes
    are the raw outputs (out_idx, or the DEQUANTIZE inputs of a float-output model). Returns
    npz entries (without suffixes: lists, one per output)."""
    res = {}
    its = {}
    for kind in RESOLVERS:
        try:
            # preserve_all_tensors for the kernels compared op by op (no delegate there)
            its[kind] = interpreter(tf, tfl, kind, preserve=kind != "xnnpack")
        except Exception as exc:  # noqa: BLE001 - e.g. an op the reference kernels lack
            res[f"{kind}_error"] = np.str_(str(exc).splitlines()[0])
    if "xnnpack" in its:
        # a second XNNPACK interpreter on the same inputs: its outputs are not always
        # reproducible (layers_upsampling1d_tfk2: 51 or ~27000 values differing from the
        # reference kernels, run to run); xnnpack_rerun_ndiff records it
        its["xnnpack_rerun"] = interpreter(tf, tfl, "xnnpack")
    base = its.get("ref") or its["builtin"]
    ops = base._get_ops_details()
    res["ops"] = np.array([o["op_name"] for o in ops])
    res["op_inputs"] = np.str_(json.dumps([[int(i) for i in o["inputs"]] for o in ops]))
    res["op_outputs"] = np.str_(json.dumps([[int(i) for i in o["outputs"]] for o in ops]))
    if "xnnpack" in its:
        res["xnnpack_delegate_nodes"] = np.int64(
            sum(o["op_name"] == "DELEGATE" for o in its["xnnpack"]._get_ops_details()))
    inter_kind = "ref" if "ref" in its else "builtin"
    op_outs = [[int(i) for i in o["outputs"] if i >= 0] for o in ops]
    stored = sorted({i for outs in op_outs for i in outs})
    det = {t["index"]: t for t in base.get_tensor_details()}
    per_input = sum(int(np.prod(det[i]["shape"])) * np.dtype(det[i]["dtype"]).itemsize
                    for i in stored)
    n_keep = max(1, min(n_tensors, TENSOR_BUDGET // max(per_input, 1))) if n_tensors else 0
    if not n_keep:
        stored = []
    tensors = {i: [] for i in stored}
    op_ndiff = np.zeros(len(ops), np.int64)
    op_maxdiff = np.zeros(len(ops), np.int64)
    op_nvalues = np.zeros(len(ops), np.int64)
    outs = {kind: [[] for _ in code_idx] for kind in its}
    floats = {kind: [[] for _ in out_idx] for kind in its}
    float_out = code_idx != out_idx
    for s in range(len(xs[0])):
        for kind, it in its.items():
            for x, j in zip(xs, in_idx):
                it.set_tensor(j, x[s:s + 1])
            it.invoke()
            if float_out and kind.startswith("xnnpack"):
                # delegated graphs do not preserve intermediates: the codes from the floats
                # (exact: (q - zp) * scale in float32 inverts for 16-bit q)
                for k, (j, c) in enumerate(zip(out_idx, code_idx)):
                    y = it.get_tensor(j)[0]
                    d = det[c]
                    sc, zp = d["quantization"]
                    q = np.round(y / np.float32(sc)) + zp
                    outs[kind][k].append(q.astype(d["dtype"]))
            else:
                for k, c in enumerate(code_idx):
                    outs[kind][k].append(it.get_tensor(c)[0].copy())
            if float_out:
                for k, j in enumerate(out_idx):
                    floats[kind][k].append(it.get_tensor(j)[0].copy())
        if s < n_keep:
            for i in stored:
                tensors[i].append(its[inter_kind].get_tensor(i).copy())
        if "ref" in its and "builtin" in its:
            for k, o in enumerate(op_outs):
                for i in o:
                    a = its["ref"].get_tensor(i).astype(np.int64)
                    b = its["builtin"].get_tensor(i).astype(np.int64)
                    op_nvalues[k] += a.size
                    if a.shape != b.shape:
                        op_ndiff[k] += a.size
                        continue
                    d = np.abs(a - b)
                    op_ndiff[k] += int(np.count_nonzero(d))
                    op_maxdiff[k] = max(op_maxdiff[k], int(d.max(initial=0)))
    if "ref" in its and "builtin" in its:
        res["op_ndiff_builtin_vs_ref"] = op_ndiff
        res["op_maxdiff_builtin_vs_ref"] = op_maxdiff
        res["op_nvalues"] = op_nvalues
    if "xnnpack_rerun" in its:
        again = outs.pop("xnnpack_rerun")
        floats.pop("xnnpack_rerun")
        del its["xnnpack_rerun"]
        res["xnnpack_rerun_ndiff"] = np.int64(sum(
            int(np.count_nonzero(np.stack(a) != np.stack(b)))
            for a, b in zip(outs["xnnpack"], again)))
    for kind in its:
        res[f"out_{kind}"] = [np.stack(v) for v in outs[kind]]
        if float_out:
            res[f"out_{kind}_float"] = [np.stack(v) for v in floats[kind]]
    if float_out and "ref" in its:   # the codes recovered from XNNPACK's floats: check the rule
        for k, c in enumerate(code_idx):
            sc, zp = det[c]["quantization"]
            back = np.round(res["out_ref_float"][k] / np.float32(sc)) + zp
            assert np.array_equal(back, res["out_ref"][k]), "float -> code inversion is not exact"
    if "xnnpack" in its and "builtin" in its:
        res["ndiff_xnnpack_vs_builtin"] = [
            np.int64(np.count_nonzero(a != b))
            for a, b in zip(res["out_builtin"], res["out_xnnpack"])]
    for kind in ("xnnpack", "builtin"):
        if kind in its and "ref" in its:
            res[f"ndiff_{kind}_vs_ref"] = [
                np.int64(np.count_nonzero(a != b))
                for a, b in zip(res["out_ref"], res[f"out_{kind}"])]
            res[f"maxdiff_{kind}_vs_ref"] = [
                np.int64(np.abs(a.astype(np.int64) - b).max(initial=0))
                for a, b in zip(res["out_ref"], res[f"out_{kind}"])]
    res["tensors_kernels"] = np.str_(RESOLVERS[inter_kind])
    res["tensors_n"] = np.int64(n_keep)
    for i in stored:
        res[f"t{i}"] = np.stack(tensors[i])
    res["tensors"] = np.str_(tensor_table(base, set(stored)))
    return res


def flatten(res, multi, out_ids, in_keys=("input", "input_scale", "input_zero_point")):
    """Lists become `_<i>` keys (several inputs or outputs; i = the position in Keras order,
    out_ids for the outputs, which skip those left out of the TFLite model, as the fixture's
    own npz does) or the bare key (one input and one output)."""
    flat = {}
    for k, v in res.items():
        if not isinstance(v, list):
            flat[k] = v
            continue
        if multi:
            ids = range(len(v)) if k in in_keys else out_ids
            for i, a in zip(ids, v):
                flat[f"{k}_{i}"] = a
        else:
            assert len(v) == 1, k
            flat[k] = v[0]
    return flat


def versions(tf):
    return {"tf_version": np.str_(tf.__version__), "numpy_version": np.str_(np.__version__),
            "python_version": np.str_(platform.python_version()),
            "machine": np.str_(platform.machine()), "platform": np.str_(platform.platform())}


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def io_names(fx, model=None):
    """Keras input and output layer names: from the fixture's npz (the MLP fixtures' npz has
    none: then from the model, or placeholders for a one-input one-output model)."""
    if "keras_input_names" in fx:
        return ([str(n) for n in fx["keras_input_names"]],
                [str(n) for n in fx["keras_output_names"]])
    if model is not None:
        from fixture_common import keras_io_names
        return keras_io_names(model)
    assert "x_test" in fx and "keras_float" in fx
    return ["input"], ["output"]


def write_variant(tf, name, stem, tfl, fx, settings, extra, names):
    """Run `tfl` on the fixture's first N_RUN test inputs, write <stem>.npz (and return a
    one-line summary). `names`: (Keras input names, Keras output names)."""
    from fixture_common import tflite_io_map
    in_names, out_names = names
    dropped = set(str(n) for n in fx["tflite_dropped_outputs"]) \
        if "tflite_dropped_outputs" in fx else set()
    keep = [i for i, n in enumerate(out_names) if n not in dropped]
    multi = len(in_names) > 1 or len(out_names) > 1
    sfx = (lambda k, i: f"{k}_{i}") if multi else (lambda k, i: k)
    xs = [fx[sfx("x_test", i)][:N_RUN] for i in range(len(in_names))]
    kf_shapes = [fx[sfx("keras_float", i)].shape[1:] for i in keep]
    ins, outs, ikeys, okeys, _ = tflite_io_map(
        tf, tfl, in_names, [out_names[i] for i in keep], [x.shape[1:] for x in xs], kf_shapes)
    feed = []
    res = {"input_scale": [], "input_zero_point": [], "input": []}
    for x, d in zip(xs, ins):
        sc, zp = d["quantization"]
        if d["dtype"] == np.float32:
            q = x.astype(np.float32)
        else:
            q = quantize(x, d["dtype"], sc, zp)
        feed.append(q)
        res["input"].append(q)
        res["input_scale"].append(np.float32(sc))
        res["input_zero_point"].append(np.int64(zp))
    res["input_dtype"] = np.array([np.dtype(d["dtype"]).name for d in ins])
    out_idx = [d["index"] for d in outs]
    code_idx = out_idx
    probe = interpreter(tf, tfl, "builtin")
    if outs[0]["dtype"] == np.float32:
        code_idx = final_dequantize_inputs(probe._get_ops_details(), out_idx)
    det = {t["index"]: t for t in probe.get_tensor_details()}
    res["output_scale"] = [np.float32(det[c]["quantization"][0]) for c in code_idx]
    res["output_zero_point"] = [np.int64(det[c]["quantization"][1]) for c in code_idx]
    res["output_dtype"] = np.array([np.dtype(det[c]["dtype"]).name for c in code_idx])
    t0 = time.time()
    res.update(run_all(tf, tfl, feed, [d["index"] for d in ins], out_idx, code_idx,
                       N_TENSORS[stem.rsplit(".", 1)[1]]))
    npz = flatten(res, multi, keep)
    if dropped:   # no out_*_<i> for them
        npz["dropped_outputs"] = np.array(sorted(dropped))
    npz.update({
        "variant": np.str_(stem.rsplit(".", 1)[1]),
        "tflite_file": np.str_(f"tflite/{stem}.tflite" if stem.endswith("io")
                               else f"{name}.16x8.tflite"),
        "tflite_sha256": np.str_(sha256(tfl)), "tflite_bytes": np.int64(len(tfl)),
        "converter_settings": np.str_(settings),
        "keras_input_names": np.array(in_names),
        "keras_output_names": np.array(out_names),
        "tflite_input_names": np.array([d["name"] for d in ins]),
        "tflite_output_names": np.array([d["name"] for d in outs]),
        "signature_input_keys": np.array(ikeys), "signature_output_keys": np.array(okeys),
        "writer": fx["writer"], **versions(tf), **extra})
    path = os.path.join(OUT, stem + ".npz")
    np.savez_compressed(path, **npz)
    nd = {k: (int(sum(int(v) for kk, v in npz.items() if kk.startswith(f"ndiff_{k}")))
              if any(kk.startswith(f"ndiff_{k}") for kk in npz) else "n/a")
          for k in ("xnnpack_vs_ref", "builtin_vs_ref", "xnnpack_vs_builtin")}
    errs = [k for k in RESOLVERS if f"{k}_error" in npz]
    msg = (f"{stem}: {len(tfl)} B tflite, {os.path.getsize(path)} B npz, "
           f"{len(npz['ops'])} ops, tensors of {int(npz['tensors_n'])} inputs; differing outputs: "
           + ", ".join(f"{k} {v}" for k, v in nd.items())
           + (f"; cannot run: {errs}" if errs else "") + f" ({time.time() - t0:.0f} s)")
    log(name, msg)
    return msg


def child(name, kind):
    """Make the files of fixture `name`: kind "keras" (int8io + uint8io from its Keras file) or
    "16x8" (outputs of the existing 16x8 file)."""
    import tensorflow as tf
    fx = np.load(os.path.join(HERE, name + ".npz"))
    if kind == "16x8":
        with open(os.path.join(HERE, name + ".16x8.tflite"), "rb") as f:
            tfl = f.read()
        g = np.load(os.path.join(HERE, name + ".tflite16x8.npz"))
        write_variant(tf, name, f"{name}.16x8", tfl, fx,
                      str(g["tflite16x8_converter_settings"]), {}, io_names(fx))
        return 0
    model, read = load_model(tf, name, fx)
    in_names, out_names = io_names(fx, model)
    if "tflite_dropped_outputs" in fx:
        dropped = {str(n) for n in fx["tflite_dropped_outputs"]}
        model = _without_outputs(model, out_names, dropped)
    sfx = (lambda i: f"_{i}") if len(in_names) > 1 or len(out_names) > 1 else (lambda i: "")
    calib = [fx[f"x_calib{sfx(i)}"] for i in range(len(in_names))]
    fixture_tfl = os.path.join(HERE, name + ".tflite")
    fixture_sha = None
    if os.path.exists(fixture_tfl):
        with open(fixture_tfl, "rb") as f:
            fixture_sha = sha256(f.read())
    variants = [("int8io", tf.int8), ("uint8io", tf.uint8)]
    if name.rsplit("_", 1)[0] in NO_UINT8IO:
        variants = variants[:1]
        for ext in (".tflite", ".npz"):
            stale = os.path.join(OUT, f"{name}.uint8io{ext}")
            if os.path.exists(stale):
                os.remove(stale)
    with tempfile.TemporaryDirectory(prefix="fixnet_tfl_") as tmp:
        for variant, io in variants:
            t0 = time.time()
            tfl, how = convert(tf, model, name.endswith("_k3"), calib, in_names, io, tmp)
            log(name, f"{variant}: converted ({how}) in {time.time() - t0:.0f} s")
            stem = f"{name}.{variant}"
            with open(os.path.join(OUT, stem + ".tflite"), "wb") as f:
                f.write(tfl)
            extra = {"keras_file": np.str_(read)}
            if variant == "int8io":
                extra["same_bytes_as_fixture"] = np.bool_(sha256(tfl) == fixture_sha)
            write_variant(tf, name, stem, tfl, fx,
                          settings_json(how, io.name, len(calib[0])), extra,
                          (in_names, out_names))
    return 0


def _without_outputs(model, out_names, dropped):
    """The same layers without the outputs the fixture's TFLite model left out (the converter
    fails on them; fixture_common.make_fixture's tflite_drop_outputs)."""
    keras = sys.modules[type(model).__module__.split(".")[0]]
    return keras.Model(model.inputs, [o for o, n in zip(model.outputs, out_names)
                                      if n not in dropped])


# --------------------------------------------------------------------------- README
README_TEXT = """
## TFLite-file fixtures (`make_tflite_fixtures.py`, in `tflite/`)

`.tflite` files as people have them, with TensorFlow Lite's own outputs, so that fixnet can be
compared with TFLite on a `.tflite` file without TensorFlow. For every CNN / MLP / layer fixture
(both writers) the script converts the fixture's Keras file (`.h5`, else `.keras`) full-integer
— TFLiteConverter (`from_keras_model`; for Keras 3 the `model.export()` SavedModel if that
fails), `Optimize.DEFAULT`, representative dataset = the fixture's `x_calib` one sample at a
time, `supported_ops = [TFLITE_BUILTINS_INT8]`, per-channel weights (the default) — twice:

* `tflite/<name>.int8io.tflite`: `inference_input_type = inference_output_type = tf.int8` (the
  recipe of the fixture's own `<name>.tflite`, but applied to the model read back from its file
  rather than to the model in memory when the fixture was made: `same_bytes_as_fixture` in the
  npz says whether the bytes came out identical; the notes below say where the outputs differ);
* `tflite/<name>.uint8io.tflite`: the same with `tf.uint8` input and output (the tutorial case:
  QUANTIZE uint8 -> int8 after the input and int8 -> uint8 before each output); not for
  `mobilenetv2` and `layers_mobilenetv3_small` (size: their int8io graph plus two QUANTIZE ops,
  which the smaller models cover);
* and, for the existing 16x8 files `<name>.16x8.tflite` of `cnn_digits`, `kws_dscnn`,
  `mobilenet_small`, `resnet_small` (read, not rewritten; float input and output),
  `tflite/<name>.16x8.npz`.

Each `.tflite` has a `tflite/<stem>.npz` (`np.load`) with its outputs on the first 64 `x_test`
samples from three interpreters (one sample at a time, `num_threads=1`) and, for the int8io and
16x8 files, every intermediate tensor of the first inputs. Keys:
""" + NPZ_KEYS + """
`tflite/FAILED.json` lists the fixtures whose conversion or run failed, with the error (`{}`
when none did). `tflite/ROUNDING.md` (from `probe_tflite_rounding.py`) says which requantization
rounding each interpreter uses.

Regenerate (about 30 minutes on 2 busy cores, or two runs in parallel with `--only` the `_k3`
and the `_tfk2` names; `--only a_k3,b_tfk2`, `--kinds keras|16x8` for part of it; `--readme`
rewrites this README from the files present, without TensorFlow). The conversions are
deterministic (the same bytes run to run):

```
nice -n 5 /path/to/venv-with-tf/bin/python models/make_tflite_fixtures.py
nice -n 5 /path/to/venv-with-tf/bin/python models/probe_tflite_rounding.py
```

Measured on the 64 inputs: values of the int8io model's outputs where the default interpreter
(XNNPACK) and the optimised kernels without delegate differ from the reference kernels, the
ops where the latter difference starts (from the per-op comparison: ops whose outputs differ
although their inputs do not), and the sizes (.tflite / .npz, KiB).
"""


def table_rows():
    rows = []
    for name in FIXTURES + tuple(f"{n}.16x8" for n in FIXTURES_16X8):
        stems = [name] if name.endswith(".16x8") else [
            f"{name}.{v}" for v in VARIANTS
            if v == "int8io" or name.rsplit("_", 1)[0] not in NO_UINT8IO]
        paths = [os.path.join(OUT, s + ".npz") for s in stems]
        if not all(os.path.exists(p) for p in paths):
            rows.append([f"`{name}`", "not generated", "", "", "", ""])
            continue
        with np.load(paths[0]) as d:
            g = {k: d[k] for k in d.files}

        def total(key):
            ks = [k for k in g if k == key or k.startswith(key + "_")]
            return str(sum(int(g[k]) for k in ks)) if ks else "—"
        differ = ", ".join(sorted(set(source_ops(g)))) or "none" \
            if "op_ndiff_builtin_vs_ref" in g else ""
        notes = []
        for kind in RESOLVERS:
            if f"{kind}_error" in g:
                notes.append(f"{RESOLVERS[kind]} cannot run it: "
                             f"{str(g[kind + '_error'])[:90]}")
        if "same_bytes_as_fixture" in g:
            notes.append("same bytes as `" + name + ".tflite`" if bool(g["same_bytes_as_fixture"])
                         else "bytes differ from `" + name + ".tflite`")
        if int(g.get("xnnpack_rerun_ndiff", 0)):
            notes.append(f"XNNPACK not reproducible: a second interpreter differed on "
                         f"{int(g['xnnpack_rerun_ndiff'])} values")
        nfx = differs_from_fixture(name, g)
        if nfx:
            notes.append(f"REF outputs differ from the fixture's `tflite_int8_raw` on {nfx} values")
        if "dropped_outputs" in g:
            notes.append("outputs left out: " + ", ".join(map(str, g["dropped_outputs"])))
        notes.append(f"intermediates of {int(g['tensors_n'])} inputs")
        size = lambda p: f"{os.path.getsize(p) / 1024:.0f}"  # noqa: E731
        sizes = "; ".join(f"{size(os.path.join(HERE, str(np.load(p)['tflite_file'])))} / {size(p)}"
                          for p in paths)
        rows.append([f"`{name}`", f"{len(g['ops'])}", total("ndiff_xnnpack_vs_ref"),
                     total("ndiff_builtin_vs_ref"), differ, sizes,
                     "; ".join(notes).replace("|", "\\|")])
    return rows


def _outputs(g, key):
    """{Keras output position: array} of out_<kind> entries (`key`) in an npz dict."""
    if key in g:
        return {0: g[key]}
    return {int(k[len(key) + 1:]): v for k, v in g.items()
            if k.startswith(key + "_") and k[len(key) + 1:].isdigit()}


def differs_from_fixture(name, g):
    """Values of the int8io model's reference-kernel outputs (or the kernels the fixture used)
    that differ from the fixture's own .tflite outputs stored in <name>.npz (first N_RUN)."""
    if str(g.get("variant")) != "int8io":
        return 0
    with np.load(os.path.join(HERE, name + ".npz")) as fx:
        kind = {"BUILTIN_REF": "ref", "BUILTIN_WITHOUT_DEFAULT_DELEGATES": "builtin"}.get(
            str(fx["tflite_kernels"]) if "tflite_kernels" in fx else "BUILTIN_REF")
        ours = _outputs(g, f"out_{kind}")
        theirs = _outputs({k: fx[k] for k in fx.files}, "tflite_int8_raw")
    return sum(int(np.count_nonzero(ours[i] != theirs[i][:N_RUN])) for i in ours if i in theirs)


def uint8_vs_int8():
    """(values compared, {(fixture, interpreter): values where uint8io's codes - 128 differ
    from int8io's}), over all fixtures with both files and all interpreters."""
    n, nd = 0, {}
    for name in FIXTURES:
        a, b = (os.path.join(OUT, f"{name}.{v}.npz") for v in VARIANTS)
        if not (os.path.exists(a) and os.path.exists(b)):
            continue
        with np.load(a) as da, np.load(b) as db:
            ga, gb = dict(da), dict(db)
        for kind in RESOLVERS:
            oa, ob = _outputs(ga, f"out_{kind}"), _outputs(gb, f"out_{kind}")
            for i in oa:
                if i in ob:
                    n += oa[i].size
                    d = int(np.count_nonzero(ob[i].astype(np.int64) - 128 != oa[i]))
                    if d:
                        nd[name, kind] = nd.get((name, kind), 0) + d
    return n, nd


def source_ops(g):
    """Names of the ops whose outputs differ between the optimised and the reference kernels
    although every input they read (from other ops) is the same in both: where differences
    start, rather than where they are passed on."""
    nd = np.asarray(g["op_ndiff_builtin_vs_ref"])
    ins, outs = json.loads(str(g["op_inputs"])), json.loads(str(g["op_outputs"]))
    differs = {t for k, o in enumerate(outs) if nd[k] > 0 for t in o}
    return [str(g["ops"][k]) for k in range(len(nd))
            if nd[k] > 0 and not any(t in differs for t in ins[k])]


HEADER = ["fixture", "ops", "XNNPACK≠REF", "builtin≠REF", "ops where builtin≠REF starts",
          "sizes int8io; uint8io (.tflite / .npz KiB)", "notes"]


def readme_section():
    """Markdown for models/README.md, from the files present (no TensorFlow)."""
    rows = table_rows()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT)) \
        if os.path.isdir(OUT) else 0
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(r + [""] * (len(HEADER) - len(r))) + " |" for r in rows]
    failed = {}
    if os.path.exists(os.path.join(OUT, "FAILED.json")):
        with open(os.path.join(OUT, "FAILED.json")) as f:
            failed = json.load(f)
    n, nd = uint8_vs_int8()
    where = "; ".join(f"`{f}` with {RESOLVERS[k]}: {v}" for (f, k), v in sorted(nd.items()))
    tail = [f"\nuint8io against int8io (all interpreters, all fixtures with both files): the uint8 "
            f"output codes minus 128 differ from the int8 ones on {sum(nd.values())} of {n} "
            f"values" + (f" ({where})" if nd else "") + f". `tflite/` holds "
            f"{total / 2**20:.1f} MiB."]
    tail += [f"* `{k}` failed: `{v[:300]}`" for k, v in sorted(failed.items())]
    return README_TEXT.lstrip("\n") + "\n" + "\n".join(lines) + "\n" + "\n".join(tail) + "\n"


# --------------------------------------------------------------------------- parent
def run_child(name, kind):
    """Run child(name, kind) in a fresh process with the writer's environment; returns None,
    or the error of a child that failed."""
    suffix = name.rsplit("_", 1)[1]
    env = dict(os.environ)
    env.update(next(extra for sfx, extra in WRITERS.values() if sfx == suffix))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env["PYTHONHASHSEED"] = "0"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                           "--kind", kind], env=env, capture_output=True, text=True)
    for ln in proc.stdout.splitlines():
        print(ln, flush=True)
    if proc.returncode == 0:
        return None
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()
            and not ln.startswith(("W0000", "I0000", "WARNING: All log", "  warnings.warn"))
            and "cuInit" not in ln and "UserWarning" not in ln]
    msg = f"{how}: " + " | ".join(tail[-4:])[:800]
    log(name, "FAILED " + msg)
    return msg


def run_jobs(jobs):
    """Run the (fixture, kind) jobs one child process each; merge their errors into
    tflite/FAILED.json."""
    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    errors = {}
    for name, kind in jobs:
        errors[name if kind == "keras" else f"{name}.16x8"] = run_child(name, kind)
    failed_path = os.path.join(OUT, "FAILED.json")
    failed = {}
    if os.path.exists(failed_path):   # read at the end: runs with --only may overlap
        with open(failed_path) as f:
            failed = json.load(f)
    failed.update(errors)
    failed = {k: v for k, v in failed.items() if v}
    with open(failed_path, "w") as f:
        json.dump(failed, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(jobs)} jobs in {time.time() - t0:.0f} s; failed: {sorted(failed)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated fixture names (default: all)")
    ap.add_argument("--kinds", default="keras,16x8",
                    help="which jobs: keras (int8io + uint8io from the Keras file), 16x8")
    ap.add_argument("--readme", action="store_true",
                    help="only rewrite models/README.md from the files present (no TensorFlow)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite models/README.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--kind", choices=("keras", "16x8"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.kind)
    if not args.readme:
        kinds = args.kinds.split(",")
        jobs = [(n, "keras") for n in FIXTURES if "keras" in kinds] + \
            [(n, "16x8") for n in FIXTURES_16X8 if "16x8" in kinds]
        if args.only:
            only = set(args.only.split(","))
            unknown = only - set(FIXTURES) - set(FIXTURES_16X8)
            if unknown:
                ap.error(f"unknown fixture(s) {sorted(unknown)}")
            jobs = [j for j in jobs if j[0] in only]
        run_jobs(jobs)
    if not args.no_readme:
        import make_models
        make_models.write_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())

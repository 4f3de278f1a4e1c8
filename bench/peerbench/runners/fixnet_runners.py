"""fixnet's runners: int8 (the baseline of every ratio), int8 with float in/out, int16
activations (issue 19), the NumPy float reference; and fixnet in its other kernel builds, timed
alone in a child process each."""
import hashlib
import json
import os
import pathlib
import re
import statistics

import numpy as np

from fixnet.cli.measure import calls_per_sample, seconds_per_call

from .base import Runner, bind
from .children import read_spec, run_child, write_spec


def fixnet_runners(m, fm, want, threads=1):
    """fixnet int8 (and with float in/out) of the loaded model `fm`: quantized here with the
    fixture's calibration data. Raises what quantize() or a first predict raises (a model
    fixnet cannot run in int8 yet is a result of the run, reported in its row)."""
    qm = fm.quantize(m.x_calib)
    tkw, tnote = thread_kw(threads)
    out = [codes_runner("fixnet_int8", "fixnet int8", qm, m, threads)]
    if "fixnet_int8_float_io" in want:
        out.append(Runner("fixnet_int8_float_io", "fixnet int8 (float in/out)",
                          {n: bind(qm.predict, m.x[n], **tkw) for n in m.batches},
                          f"qm.predict(x{tnote})"))
    for r in out:                 # a run-time failure is reported here, not in the timing loop
        r.calls[m.timed[0]]()
    return out


def fixnet_tflite_runner(m, threads=1):
    """fixnet running the fixture's int8 .tflite itself (fixnet.load of the file: TFLite's
    scales, zero points and weights; its reference kernels' integers, bit for bit), fed the
    int8 codes TFLite is fed: the same model as the TFLite runners, on fixnet's kernels."""
    import fixnet
    if not m.tflite.exists():
        from .base import Unavailable
        raise Unavailable(f"no {m.tflite.name}")
    qm = fixnet.load(str(m.tflite))
    r = codes_runner("fixnet_tflite", "fixnet int8 on the .tflite", qm, m, threads)
    r.calls[m.timed[0]]()
    return r


def fixnet_file_runner(m, qm, threads=1):
    """fixnet on a .tflite file given on --models (`qm`: fixnet.load of it; `m`:
    TfliteFileInputs), fed what TFLite is fed: the file's own input types (int8 / uint8 codes,
    or floats that predict quantizes with the file's input scale), outputs in the file's own
    type (float32 where its outputs mix types). A batch above 1 of a file whose batch axis
    TFLite cannot resize runs sample by sample, as TFLite's does. The timed calls are run once
    here (fixnet failing to run the file is then a reason to skip it)."""
    types = {qm.io_types.get(o, "float32") for o in qm.outputs}
    output = types.pop() if len(types) == 1 else "float32"
    oqs = [None if output == "float32" else
           (float(q.scale), int(q.zero_point) + (128 if output == "uint8" else 0))
           for q in qm.output_qparams]
    tkw, tnote = thread_kw(threads)
    one_input = len(m.specs) == 1

    def predict(xs):
        return qm.predict(xs[0] if one_input else xs, output=output, **tkw)

    calls = {}
    for n in m.batches:
        if n > 1 and m.batch_free is False:
            calls[n] = _sample_by_sample(predict, m.x[n])
        else:
            calls[n] = bind(predict, m.x[n])
    r = Runner("fixnet_tflite", "fixnet on the .tflite file (fixnet.load)", calls,
               f"qm.predict(x, output='{output}'{tnote}), x in the file's input type",
               oqs[0] if len(oqs) == 1 else oqs)
    for n in m.timed:
        r.calls[n]()
    return r


def _sample_by_sample(predict, xs):
    """predict on every sample of `xs` (a list, one array per input) in turn, concatenated."""
    samples = [[np.ascontiguousarray(x[i:i + 1]) for x in xs] for i in range(xs[0].shape[0])]

    def run():
        ys = [predict(s) for s in samples]
        if isinstance(ys[0], (list, tuple)):
            return [np.concatenate([y[j] for y in ys]) for j in range(len(ys[0]))]
        return np.concatenate(ys)
    return run


def thread_kw(threads):
    """predict's thread keyword and its note: the same thread budget as the peers
    (num_threads left out at 1: the call as users make it)."""
    return ({"num_threads": threads}, f", num_threads={threads}") if threads > 1 else ({}, "")


def codes_runner(key, label, qm, m, threads):
    """The Runner of quantized model `qm` on `m`'s inputs, codes in (the input's type: int8, or
    int16) and codes out: float inputs quantized beforehand with the input's qparams, integer
    inputs (token ids) as they are. Outputs in their type (int8 or int16; float32 where a
    model's outputs have both types, as predict gives codes of one type only)."""
    qp = qm.input_qparams[0]
    xq = {n: x if qp is None or np.issubdtype(x.dtype, np.integer)
          else np.ascontiguousarray(qp.quantize(x)) for n, x in m.x.items()}
    types = {q.type_name for q in qm.output_qparams}
    output = types.pop() if len(types) == 1 else "float32"
    oqs = ([(float(q.scale), int(q.zero_point)) for q in qm.output_qparams]
           if output != "float32" else [None] * len(qm.output_qparams))
    tkw, tnote = thread_kw(threads)
    return Runner(key, label,
                  {n: bind(qm.predict, xq[n], output=output, **tkw) for n in m.batches},
                  f"qm.predict(x_q, output='{output}'{tnote})", oqs[0] if len(oqs) == 1 else oqs)


def fixnet_int16_runner(m, fm, threads=1):
    """fixnet with int16 activations everywhere (FloatModel.quantize(calibration,
    activations="int16"): int8 weights, symmetric int16 tensors), int16 codes in and out: TFLite
    16x8's counterpart. Raises what quantize() or a first predict raises (reported in the
    model's row, as "failed: ...")."""
    try:
        qm = fm.quantize(m.x_calib, activations="int16")
    except Exception as e:  # noqa: BLE001 - said with the call that failed
        raise RuntimeError(f"quantize(calib, activations='int16') raised "
                           f"{type(e).__name__}: {e}") from e
    r = codes_runner("fixnet_int16", "fixnet int16", qm, m, threads)
    try:                         # a run-time failure is reported here, not in the timing loop
        r.calls[m.timed[0]]()
    except Exception as e:  # noqa: BLE001 - said with the call that failed
        hint = (" (a kernel of this fixnet build takes int8 arrays only: no int16 kernel for "
                "that layer yet)" if re.search(r"expected '(const )?int8_t' but got 'short'",
                                               str(e)) else "")
        raise RuntimeError(f"{r.note} on the all-int16 model raised {type(e).__name__}: "
                           f"{e}{hint}") from e
    return r


def fixnet_float_runner(m, fm):
    """fixnet's NumPy float reference (FloatModel.predict) of the loaded model `fm`."""
    r = Runner("fixnet_float", "fixnet float reference (NumPy)",
               {n: bind(fm.predict, m.x[n]) for n in m.batches}, "fm.predict(x)")
    r.calls[m.timed[0]]()
    return r


def fixnet_child(spec_path):
    """--fixnet-child: time fixnet int8 alone on one layer bench, in this process's kernel
    build (FIXNET_ISA), and print JSON: the build, the timing and the int8 outputs' digest."""
    import fixnet
    import fixnet._kernels as kernels

    spec = read_spec(spec_path)
    d = np.load(spec["npz"])
    qm = fixnet.load(spec["h5"]).quantize(d["x_calib"])
    x = np.ascontiguousarray(qm.input_qparams[0].quantize(d["x"]))
    x_acc = np.ascontiguousarray(qm.input_qparams[0].quantize(d["x_acc"]))
    tkw = {"num_threads": spec["threads"]} if spec.get("threads", 1) > 1 else {}
    call = (lambda: qm.predict(x, output="int8", **tkw))
    for _ in range(spec["warmup"]):
        call()
    inner = calls_per_sample(call, spec["sample_s"])
    samples = [seconds_per_call(call, inner) for _ in range(spec["rounds"])]
    y = np.ascontiguousarray(qm.predict(x_acc, output="int8"))
    print(json.dumps({"isa": kernels.ISA, "median_us": statistics.median(samples) * 1e6,
                      "p25_us": float(np.percentile(samples, 25)) * 1e6,
                      "p75_us": float(np.percentile(samples, 75)) * 1e6,
                      "calls_per_sample": inner, "rounds": len(samples),
                      "int8_digest": int8_digest(y)}))
    return 0


def int8_digest(y):
    """sha256 of an int8 output's bytes: the same in two builds means bit-identical outputs."""
    return hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()


def fixnet_other_builds(m, fm_qm_digest, isas, args, tmpdir):
    """Time fixnet on the layer bench `m` with each of `isas` (a subprocess each)."""
    npz = pathlib.Path(tmpdir) / f"{m.name}-child.npz"
    np.savez(npz, x_calib=m.x_calib, x=m.x[1 if 1 in m.timed else m.timed[0]],
             x_acc=m.x[m.acc])
    spec = write_spec(pathlib.Path(tmpdir) / f"{m.name}-child.json",
                      {"h5": str(m.h5), "npz": str(npz), "rounds": args.rounds,
                       "warmup": args.warmup, "sample_s": args.sample_ms / 1000,
                       "threads": args.threads})
    out = {}
    for isa in isas:
        r = run_child("--fixnet-child", spec, dict(os.environ, FIXNET_ISA=isa))
        if r.returncode != 0:
            out[isa] = {"status": f"failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"}
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["status"] = "ok"
        res["bit_identical"] = res.pop("int8_digest") == fm_qm_digest
        out[isa] = res
    return out

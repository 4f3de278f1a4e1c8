"""One model (a fixture, a zoo model or a layer bench): build its runners, time them, check their
outputs against Keras float; the model's entry of the results."""
import os

import fixnet
from fixnet.cost import macs as graph_macs

from .accuracy import accuracy, apply_counting_rule
from .catalog import BASELINE, RUNNER_KEYS, TFLITE_FLOAT_KEYS
from .measure import blas_limit, measure, summarize
from .runners.base import Unavailable
from .runners.fixnet_runners import (fixnet_float_runner, fixnet_int16_runner, fixnet_tflite_runner,
                                     fixnet_other_builds, fixnet_runners, int8_digest)
from .runners.keras_float import keras_runner
from .runners.onnx_runtime import onnx_runners
from .runners.tflite import tflite_16x8_runners, tflite_float_runners, tflite_runners
from .text import one_line


def bench_model(m, args, want, console, labels, tmpdir=None):
    """The results of model `m` (ModelInputs) for the runners `want`: per runner its label,
    status, note, times per batch and accuracy (or why it did not run), the MACs, and for a
    layer bench fixnet's other kernel builds. `labels`: runner key -> label for the rows of
    runners that did not build."""
    runners, status, fm = build_runners(m, args, want, console, labels)
    macs = graph_macs(fm.graph) if fm is not None else None
    per_batch = {}
    for n in m.timed:
        if not runners:
            break
        console.print(f"  {m.name} batch {n}: {len(runners)} runners x {args.rounds} "
                      "interleaved rounds")
        with blas_limit(args.threads):
            samples, inner = measure(runners, n, args.rounds, args.sample_ms / 1000, args.warmup)
        per_batch[n] = summarize(samples, inner, macs, n)

    out, raw_fixnet = runner_entries(runners, status, m, per_batch)
    res = {"kind": m.kind, "what": m.what, "macs_per_sample": macs, "runners": out,
           "accuracy_samples": m.acc,
           "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}   # after timing
    res["best_peer_sqnr_db"] = apply_counting_rule(out)
    if m.kind == "rnn":
        res["tflite_error"] = m.tflite_error
        res["outputs"] = len(m.keras_outs)
    if m.kind == "micro" and args.micro_isa_list:
        res["fixnet_builds"] = other_builds(m, macs, raw_fixnet, args, console, tmpdir)
    return res


def build_runners(m, args, want, console, labels):
    """The runners of `want` that build on `m`: (runners, key -> (label, why) for those that
    did not, the loaded fixnet FloatModel or None). A peer that fails is reported, not fatal;
    fixnet int8 failing stops the run, except on a recurrent model (its row says why)."""
    runners, status = [], {}

    def attempt(keys, build):
        keys = [k for k in keys if k in want]
        if not keys:
            return
        try:
            made = build()
        except Unavailable as e:
            for k in keys:
                status[k] = (labels.get(k, k), str(e))
            return
        except Exception as e:  # noqa: BLE001 - a broken peer is reported, not fatal
            for k in keys:
                status[k] = (labels.get(k, k), f"failed: {type(e).__name__}: {e}")
            return
        made = made if isinstance(made, list) else [made]
        runners.extend(r for r in made if r.key in want)

    def with_failures(build):
        def run():
            made, failed = build()
            for k, label, why in failed:
                status[k] = (label, why)
            return made
        return run

    try:
        fm = fixnet.load(str(m.h5))
    except Exception as e:  # noqa: BLE001 - reported below (fatal but for a recurrent model)
        fm = None
        for k in ["fixnet_int8", "fixnet_int8_float_io", "fixnet_float", "fixnet_int16"]:
            status[k] = (labels.get(k, k), f"failed: {type(e).__name__}: {e}")
    if fm is not None:
        attempt(["fixnet_int8", "fixnet_int8_float_io"],
                lambda: fixnet_runners(m, fm, want, args.threads))
        attempt(["fixnet_float"], lambda: fixnet_float_runner(m, fm))
        attempt(["fixnet_int16"], lambda: fixnet_int16_runner(m, fm, args.threads))
    attempt(["fixnet_tflite"], lambda: fixnet_tflite_runner(m, args.threads))
    if not any(r.key == BASELINE for r in runners):
        why = one_line(status.get(BASELINE, ("", "?"))[1], 400)
        if m.kind != "rnn":
            raise SystemExit(f"peers.py: fixnet itself failed on {m.name}: {why}")
        # a recurrent model fixnet does not run in int8 (yet): its row says why, and the
        # peers are timed all the same (without the fixnet / peer ratios)
        console.print(f"  fixnet int8 {why}; timing the peers without it")
    attempt(["tflite_xnnpack", "tflite_builtin", "tflite_ref"],
            with_failures(lambda: tflite_runners(m, want, args.tflite, args.threads)))
    if m.kind == "rnn" and m.tflite_error is not None:
        attempt(TFLITE_FLOAT_KEYS,
                with_failures(lambda: tflite_float_runners(m, want, args.tflite, args.threads)))
    attempt(["tflite_16x8"],
            with_failures(lambda: tflite_16x8_runners(m, want, args.tflite, args.threads)))
    attempt(["keras"], lambda: keras_runner(m, args.threads, args.warmup))
    attempt(["ort_float", "ort_int8"],
            with_failures(lambda: onnx_runners(m, args.threads, want)))
    return runners, status, fm


def runner_entries(runners, status, m, per_batch):
    """Each runner's entry of the results, in RUNNER_KEYS order: its times (per_batch), its
    accuracy on the accuracy samples; or the status of one that did not build. Returns
    (key -> entry, fixnet int8's raw output or None)."""
    out, raw_fixnet = {}, None
    for key in RUNNER_KEYS:
        r = next((r for r in runners if r.key == key), None)
        if r is not None:
            try:
                sq, top1, raw, per_output = accuracy(r, m)
            except Exception as e:  # noqa: BLE001 - e.g. outputs that do not match Keras's
                why = f"failed: accuracy check: {type(e).__name__}: {e}"
                out[key] = {"label": r.label, "status": why.splitlines()[0][:120],
                            "note": r.note + "; " + why}
                continue
            if key == BASELINE:
                raw_fixnet = raw
            entry = {"label": r.label, "status": "ok", "note": r.note,
                     "batches": {str(n): per_batch[n][key] for n in m.timed},
                     "sqnr_db": sq, "top1_agree_keras": top1}
            if len(per_output) > 1:
                entry["sqnr_db_outputs"] = per_output
            if hasattr(r, "chosen"):
                entry["keras_method"] = {str(n): v for n, v in r.chosen.items()}
            out[key] = entry
        elif key in status:
            label, why = status[key]
            short = "not installed" if why.startswith("not installed") or \
                why.startswith("tensorflow not installed") else why.splitlines()[0][:120]
            out[key] = {"label": label, "status": short, "note": why}
    return out, raw_fixnet


def other_builds(m, macs, raw_fixnet, args, console, tmpdir):
    """fixnet on the layer bench `m` in each build of args.micro_isa_list (a child process
    each): timing, GMAC/s, and whether its int8 outputs are those of this process's build."""
    console.print(f"  {m.name}: fixnet with FIXNET_ISA={','.join(args.micro_isa_list)} "
                  "(subprocess each)")
    other = fixnet_other_builds(m, int8_digest(raw_fixnet), args.micro_isa_list, args, tmpdir)
    b = 1 if 1 in m.timed else m.timed[0]
    for isa, r in other.items():
        if r["status"] == "ok":
            r["gmacs"] = macs * b / (r["median_us"] * 1e-6) / 1e9
            r["batch"] = b
    return other

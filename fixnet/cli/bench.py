"""`fixnet bench`: latency percentiles, throughput, GMAC/s and peak memory of a model's int8
path (and of its float NumPy reference) on this machine, timed on random float32 inputs
(the int8 time includes quantizing them and dequantizing the outputs); --json saves the
results, --compare prints saved results side by side.

What is timed. Inputs are one seeded random float32 batch (seed 0), uniform over the range
the int8 model's input quantization covers (``QParams.real_range`` of each input: the
calibration data's range, or the data-free input range), one array per input for a model
with several inputs. int8: ``QuantizedModel.predict(x, num_threads=--threads)`` on those
floats, as a user passes them: quantizing at the input and dequantizing the float32 outputs
are inside the time. float: ``FloatModel.predict(x)``, the NumPy reference, on the same
batch (NumPy's BLAS uses the threads it is configured for: OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS or MKL_NUM_THREADS, recorded in the JSON when set). Each path is warmed up
(--warmup calls, default 3: plans buffers, fills caches), then each of --runs calls is timed
on its own with time.perf_counter (default: as many as fill 2 seconds, at least 20, at most
100,000; settings.runs in the JSON is then null, each path's "runs" the count). A .fxn
file holds no float weights, so its float path is reported as not available.

Reported: latency p50/p90/p99/mean/min in ms (NumPy's linear-interpolation percentiles),
throughput = batch / p50 in samples/s, GMAC/s = MACs per sample (fixnet.cost) x batch / p50,
peak resident memory: after loading and quantizing (getrusage ru_maxrss, KiB on Linux,
bytes on macOS), then during each path's runs (on Linux, after garbage collection and
glibc's malloc_trim, the high-water mark is reset by writing 5 to /proc/self/clear_refs and
read back as VmHWM from /proc/self/status after the runs: "peak_rss_scope": "path"; where
that is not possible, ru_maxrss, the process's peak so far: "process"; either way the whole
process's memory, Python, NumPy and the models held included), the int8 arena
(``qm.memory_plan(batch).peak_bytes``), the kernel build in use, the CPU, its cores, the
versions, the host and the model file's sha256.

The JSON file (``--json OUT``), schema "fixnet-bench/1" (a reader refuses another major
version)::

    {"schema": "fixnet-bench/1", "timestamp": "2026-11-29T22:00:00Z",
     "host": {"hostname", "cpu", "machine", "cores", "cores_usable", "platform", "isa",
              "isa_forced", "builds_runnable", "python", "numpy", "fixnet", "blas_threads_env"},
     "model": {"file", "path", "sha256", "format": "fxn" | "tflite" | "keras-h5" | "keras" | "json",
               "weights_file", "weights_sha256", "name", "inputs", "outputs",
               "macs_per_sample"},
     "calibration": {"kind": "data" | "data-free" | "fxn" | "tflite", "data", "samples", "input_range"},
     "settings": {"batch", "threads", "runs", "warmup", "seed", "input_ranges"},
     "load_peak_rss_bytes": peak RSS after loading and quantizing,
     "int8": PATH, "float": PATH or null, "float_note": why float is null (or null),
     "speedup": float p50 / int8 p50, or null,
     "profile": PROFILE (with --profile) or null; absent in files written before it}

    PATH = {"latency_ms": {"p50", "p90", "p99", "mean", "min", "max"}, "runs",
            "throughput_per_s", "gmacs_per_s", "macs_per_sample", "peak_rss_bytes",
            "peak_rss_scope": "path" | "process", "arena_bytes" (int8 only, else null),
            "timed": what one timed call does}

    PROFILE = the int8 pass step by step, QuantizedModel.profile(x, runs, num_threads) on the
        same x (its first 256 rows at most: one pass) (see fixnet/profile.py):
        {"model", "batch", "lengths", "num_threads", "runs" (rounds), "isa",
         "pass_us": median microseconds of the whole pass (kernel calls only),
         "steps_us": the sum of the steps' medians, "macs": of the pass (whole batch),
         "steps": [{"index" (in the model's steps), "name", "layer", "op", "shape" (output,
                    batch included), "macs", "time_us" (median, the call alone),
                    "share_pct" (of steps_us), "gmacs_per_s" (null without MACs),
                    "parts" (threads the call is split over)}],
         "views": names of the steps that are views of their input (no kernel, no row)}

``--compare A.json B.json ...`` (no MODEL) prints such files side by side, one column per
file, with a row of int8 throughput relative to the first file for the files that benchmark
the same model (same sha256). One file is accepted too: it prints that file's results (a
JSON copied back from another machine).
"""
import datetime
import hashlib
import json
import os
import warnings

import numpy as np

from ..errors import ArgumentError, CalibrationError, DataFileError
from ..fileio import write_atomically
from . import UsageError
from .common import finite_float, positive_int, thread_count
from .files import check_output_path
from .measure import FILL_SECONDS, MIN_RUNS, host_info, peak_rss_bytes, time_path

HELP = ("time a model's int8 path and float reference: latency percentiles, throughput, "
        "GMAC/s, peak memory; --json saves the results, --compare prints saved ones side by side")
EXAMPLE = """fixnet bench model.h5 --calib calib.npz --json pi5.json
  fixnet bench model.fxn --batch 8 --threads 4 --runs 200
  fixnet bench --compare pi4.json pi5.json"""

SCHEMA = "fixnet-bench/1"
SEED = 0
PROG = "fixnet bench"


def add_arguments(p):
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a .fxn file (int8 only), or a Keras .h5/.keras file, or an "
                        "architecture .json with --weights")
    p.add_argument("--weights", metavar="W", help="the weights file of an architecture .json")
    p.add_argument("--calib", metavar="DATA",
                   help="calibration data for a Keras model (.npy, .npz[:name], an image "
                        "folder); without it the model is quantized data-free")
    p.add_argument("--input-range", nargs=2, type=finite_float, metavar=("LO", "HI"),
                   help="data-free quantization of a model that does not start with a "
                        "Rescaling or Normalization layer: the range of its input values")
    p.add_argument("--batch", type=positive_int, metavar="N", help="samples per call (default 1)")
    p.add_argument("--length", type=positive_int, metavar="T",
                   help="steps per sample for a model whose input has a dimension of any "
                        "length (default: the --calib data's length)")
    p.add_argument("--threads", type=thread_count, metavar="N",
                   help="native threads of the int8 predict (num_threads; default 1)")
    p.add_argument("--runs", type=positive_int, metavar="N",
                   help=f"timed calls per path (default: as many as fill {FILL_SECONDS:g} s, "
                        f"at least {MIN_RUNS})")
    p.add_argument("--warmup", type=positive_int, metavar="N",
                   help="untimed calls before the timed ones (default 3)")
    p.add_argument("--no-float", action="store_true",
                   help="time the int8 path only (no float reference)")
    p.add_argument("--profile", action="store_true",
                   help="also time each step of the int8 pass alone: a table of time, share, "
                        "MACs and GMAC/s per layer (--runs rounds; default: about 1 s)")
    p.add_argument("--json", metavar="OUT", help=f"write the results as JSON (schema {SCHEMA})")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="print results saved with --json side by side, one column per file "
                        "(no MODEL; one file prints its results alone)")


def run(args):
    _check_usage(args)                 # UsageError: exit 2, one line (fixnet.cli.main)
    if args.compare:
        results = [(path, read_result(path)) for path in args.compare]
        print(compare_table(results))
        return 0
    if args.json:                   # fail before the runs, not after them
        check_output_path(args.json, "--json", {"MODEL": args.model, "--weights": args.weights})
    result = bench_model(args)
    if args.json:                   # before printing: a reader closing stdout early loses nothing
        write_atomically(args.json, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    print(result_text(result))
    if args.json:
        print(f"\nresults written to {args.json} (schema {SCHEMA})")
    return 0


def _check_usage(args):
    run_options = [("--weights", args.weights), ("--calib", args.calib),
                   ("--input-range", args.input_range), ("--batch", args.batch),
                   ("--length", args.length),
                   ("--threads", args.threads), ("--runs", args.runs),
                   ("--warmup", args.warmup), ("--no-float", args.no_float or None),
                   ("--profile", args.profile or None), ("--json", args.json)]
    if args.compare:
        if args.model:
            raise UsageError(f"--compare reads saved results and takes no MODEL "
                             f"(got {args.model})")
        given = [name for name, v in run_options if v is not None]
        if given:
            raise UsageError(f"{given[0]} applies to a benchmark run, not to --compare")
        return
    if not args.model:
        raise UsageError("give a MODEL to benchmark, or --compare A.json B.json ...")
    if args.calib is not None and args.input_range is not None:
        raise UsageError("--input-range is for data-free quantization; --calib gives the "
                         "calibration data instead")
    fmt = _model_format(args.model, args.weights)
    if fmt in ("fxn", "tflite"):
        for name, v in (("--calib", args.calib), ("--input-range", args.input_range)):
            if v is not None:
                raise UsageError(f"{name}: {args.model} is a .{fmt} file, quantized already")
    elif fmt == "json" and args.weights is None:
        raise UsageError(f"{args.model}: an architecture .json needs its weights: --weights W")
    if args.input_range is not None and not args.input_range[0] < args.input_range[1]:
        raise UsageError(f"--input-range {args.input_range[0]:g} {args.input_range[1]:g}: "
                         "LO must be below HI")


# -- running one benchmark -----------------------------------------------------------------

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_format(path, weights):
    from ..fxn import is_fxn_file
    if weights is not None:
        return "json"                 # an architecture file and its weights, as fixnet.load
    if is_fxn_file(path):
        return "fxn"
    from ..tflite import is_tflite_file
    if is_tflite_file(path):
        return "tflite"
    low = path.lower()
    if low.endswith(".json"):
        return "json"
    if low.endswith(".keras"):
        return "keras"
    return "keras-h5"


def _quantize(fm, args):
    """The QuantizedModel of ``fm`` and the calibration record."""
    from .data import read_data
    from ..quant.datafree import DataFreeWarning

    if args.calib is not None:
        calib = read_data(args.calib, fm.input_shapes, fm.graph.inputs, what="--calib")
        samples = int((calib[0] if isinstance(calib, list) else calib).shape[0])
        qm = fm.quantize(calib)
        return qm, {"kind": "data", "data": args.calib, "samples": samples, "input_range": None,
                    "lengths": list(qm.lengths_of(calib if isinstance(calib, list) else [calib]))}
    input_range = tuple(args.input_range) if args.input_range else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataFreeWarning)
            qm = fm.quantize(None, input_range=input_range)
    except CalibrationError as e:
        if input_range is None and "input_range" in str(e):
            raise ArgumentError(
                f"{args.model}: data-free quantization needs the model's input range (it does "
                "not start with a Rescaling or Normalization layer): give --calib DATA, or "
                "--input-range LO HI") from None
        raise
    return qm, {"kind": "data-free", "data": None, "samples": 0,
                "input_range": list(input_range) if input_range else None}


def bench_lengths(qm, args, calibration):
    """The lengths (one per dimension of any length, qm.length_symbols) the benchmark runs
    at: --length, else the calibration data's; () for fixed shapes. ArgumentError naming
    --length when it is needed and missing, or given for a model of fixed shapes."""
    if not qm.length_symbols:
        if args.length is not None:
            raise ArgumentError(f"--length: {args.model} has fixed input shapes "
                                f"({', '.join(str(s) for s in qm.input_shapes)}); --length is for "
                                "an input of any length")
        return ()
    if args.length is not None:
        return (args.length,) * len(qm.length_symbols)
    if calibration.get("lengths"):
        return tuple(calibration["lengths"])
    raise ArgumentError(f"--length: {args.model} has an input of any length "
                        f"({', '.join(str(s) for s in qm.input_shapes)}): give --length T, the "
                        "steps per sample to time")


def random_inputs(qm, batch, seed=SEED, lengths=()):
    """One float32 batch per input, uniform over the range its int8 quantization covers;
    an array for a one-input model, else a list. ``lengths``: for an input of any length."""
    rng = np.random.default_rng(seed)
    xs, ranges = [], []
    shapes = qm.shapes_for(lengths)
    for shape, qp in zip([shapes[t] for t in qm.inputs], qm.input_qparams):
        lo, hi = (float(v) for v in qp.real_range)
        xs.append(rng.uniform(lo, hi, size=(batch,) + tuple(shape)).astype(np.float32))
        ranges.append([lo, hi])
    return (xs[0] if len(xs) == 1 else xs), ranges


def bench_model(args):
    """Load (and quantize) args.model, time its paths; the result dict of the JSON schema."""
    import fixnet
    from ..cost import macs, model_macs

    path = args.model
    batch = args.batch or 1
    threads = args.threads or 1
    warmup = args.warmup if args.warmup is not None else 3
    fmt = _model_format(path, args.weights)
    loaded = fixnet.load(path, args.weights)
    if fmt in ("fxn", "tflite"):
        fm, qm = None, loaded
        calibration = {"kind": fmt, "data": None, "samples": 0, "input_range": None}
    else:
        fm = loaded
        qm, calibration = _quantize(fm, args)

    load_peak = peak_rss_bytes()
    lengths = bench_lengths(qm, args, calibration)
    calibration.pop("lengths", None)
    x, ranges = random_inputs(qm, batch, lengths=lengths)
    int8_macs = model_macs(qm, lengths)
    timed = (f"QuantizedModel.predict(x, num_threads={threads}) on float32 x of batch {batch}: "
             "quantize at the input, int8 kernels, dequantized float32 outputs")
    int8 = time_path(lambda: qm.predict(x, num_threads=threads), args.runs, warmup, batch,
                     int8_macs, timed)
    int8["arena_bytes"] = int(qm.memory_plan(batch, length=lengths or None).peak_bytes)

    flt, note = None, None
    if fm is None:
        note = f"a .{fmt} file holds no float weights: no float path"
    elif args.no_float:
        note = "not timed (--no-float)"
    else:
        flt = time_path(lambda: fm.predict(x), args.runs, warmup, batch,
                        macs(fm.graph, [a.shape[1:] for a in (x if isinstance(x, list) else [x])]),
                        f"FloatModel.predict(x) (NumPy reference) on the same float32 x of "
                        f"batch {batch}")

    profile = None
    if args.profile:
        from ..runtime import MAX_ROWS_PER_PASS
        rows = [a[:MAX_ROWS_PER_PASS] for a in (x if isinstance(x, list) else [x])]
        profile = qm.profile(rows if isinstance(x, list) else rows[0], runs=args.runs,
                             num_threads=threads).to_dict()

    weights = args.weights
    result = {
        "schema": SCHEMA,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": host_info(),
        "model": {
            "file": os.path.basename(path), "path": path, "sha256": _sha256(path),
            "format": fmt,
            "weights_file": os.path.basename(weights) if weights else None,
            "weights_sha256": _sha256(weights) if weights else None,
            "name": qm.name,
            "inputs": [list(s) for s in qm.input_shapes],
            "outputs": [list(qm.tensors[t].shape) for t in qm.outputs],
            "macs_per_sample": int(int8_macs),
        },
        "calibration": calibration,
        "settings": {"batch": batch, "lengths": list(lengths) or None, "threads": threads,
                     "runs": args.runs, "warmup": warmup,
                     "seed": SEED, "input_ranges": ranges},
        "load_peak_rss_bytes": load_peak,
        "int8": int8,
        "float": flt,
        "float_note": note,
        "speedup": flt["latency_ms"]["p50"] / int8["latency_ms"]["p50"] if flt else None,
        "profile": profile,
    }
    return result


# -- printing ------------------------------------------------------------------------------

def _ms(v):
    return f"{v:.4g}" if v < 1000 else f"{v:.0f}"


def _num(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _mib(b):
    if b >= 2 ** 20:
        return f"{b / 2 ** 20:.1f} MiB"
    return f"{b / 2 ** 10:.1f} KiB" if b >= 2 ** 10 else f"{b} B"


def _calibration_text(cal):
    if cal["kind"] == "data":
        return f"{cal['data']} ({cal['samples']} samples)"
    if cal["kind"] == "data-free":
        src = (f"--input-range {cal['input_range'][0]:g} {cal['input_range'][1]:g}"
               if cal.get("input_range") else "the input range its first layer implies")
        return f"data-free (ranges derived from the model; {src})"
    return f"none: a .{cal['kind']} file is quantized already"


def _rstrip_lines(text):
    return "\n".join(line.rstrip() for line in text.splitlines())


def length_text(settings):
    """", length 12" for a run at the lengths of an input of any length, else ""."""
    lengths = settings.get("lengths")
    return f", length {', '.join(map(str, lengths))}" if lengths else ""


def result_text(r):
    from ..tables import render_table

    m, h, s = r["model"], r["host"], r["settings"]
    weights = f" + {m['weights_file']}" if m.get("weights_file") else ""
    lines = [
        f"model: {m['path']}{weights} (sha256 {m['sha256'][:16]}...), inputs "
        f"{[tuple(i) for i in m['inputs']]}, {m['macs_per_sample']:,} MACs/sample",
        f"calibration: {_calibration_text(r['calibration'])}",
        f"kernel build: {h['isa']}" + (f" (forced by FIXNET_ISA={h['isa_forced']})"
                                       if h.get("isa_forced") else ""),
        f"CPU: {h['cpu']} ({h['machine']}), {h['cores']} cores"
        + (f", {h['cores_usable']} usable" if h["cores_usable"] != h["cores"] else "")
        + f"; host {h['hostname']}",
        f"Python {h['python']}, NumPy {h['numpy']}, fixnet {h['fixnet']}; {r['timestamp']}",
        f"batch {s['batch']}{length_text(s)}, int8 threads {s['threads']}, {s['warmup']} warm-up calls, "
        f"random float32 inputs in "
        + ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in s["input_ranges"]),
        "peak RSS after loading" + (" and quantizing" if r["calibration"]["kind"] not in ("fxn", "tflite")
                                     else "") + f": {_mib(r['load_peak_rss_bytes'])}",
        "",
    ]
    paths = [("int8", r["int8"])] + ([("float (NumPy)", r["float"])] if r["float"] else [])
    rows = [["timed runs"] + [str(p["runs"]) for _, p in paths]]
    for key, label in (("p50", "latency p50, ms"), ("p90", "latency p90, ms"),
                       ("p99", "latency p99, ms"), ("mean", "latency mean, ms"),
                       ("min", "latency min, ms")):
        rows.append([label] + [_ms(p["latency_ms"][key]) for _, p in paths])
    rows.append(["throughput, samples/s"] + [_num(p["throughput_per_s"]) for _, p in paths])
    rows.append(["GMAC/s"] + [f"{p['gmacs_per_s']:.3g}" for _, p in paths])
    rows.append(["peak RSS during the runs"] + [
        _mib(p["peak_rss_bytes"]) + ("" if p.get("peak_rss_scope") == "path" else " (process)")
        for _, p in paths])
    rows.append(["int8 arena (memory plan)", _mib(r["int8"]["arena_bytes"])]
                + [""] * (len(paths) - 1))
    if r["speedup"] is not None:
        rows.append(["int8 speed-up over float (p50)", f"{r['speedup']:.2f}x", "1.00x"])
    table = render_table(f"fixnet bench: {m['file']}", ["", *[n for n, _ in paths]], rows)
    out = "\n".join(lines) + _rstrip_lines(table)
    if r["float"] is None:
        out += f"\nfloat path: {r['float_note']}"
    if r.get("profile"):
        out += "\n\n" + _rstrip_lines(profile_from_dict(r["profile"]).table())
    return out


def profile_from_dict(d):
    """The Profile of a result's "profile" record (to print it)."""
    from ..profile import Profile, StepTime

    steps = [StepTime(index=s["index"], name=s["name"], layer=s["layer"], op=s["op"],
                      shape=tuple(s["shape"]), macs=s["macs"], time_us=s["time_us"],
                      share=s["share_pct"], parts=s.get("parts", 1)) for s in d["steps"]]
    return Profile(model=d["model"], batch=d["batch"], num_threads=d["num_threads"],
                   runs=d["runs"], pass_us=d["pass_us"], steps=steps, views=list(d["views"]),
                   lengths=tuple(d.get("lengths") or ()), isa=d.get("isa") or "")


# -- reading saved results -----------------------------------------------------------------

_NUMBER_FIELDS = [("int8", "latency_ms", k) for k in ("p50", "p90", "p99", "mean", "min")] + [
    ("int8", "throughput_per_s"), ("int8", "gmacs_per_s"), ("int8", "peak_rss_bytes"),
    ("settings", "batch"), ("settings", "threads"), ("host", "cores")]
_TEXT_FIELDS = [("host", "hostname"), ("host", "cpu"), ("host", "isa"), ("model", "file"),
                ("model", "sha256"), ("timestamp",)]


def _field(d, keys, path):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            raise DataFileError(f"{path}: a {SCHEMA} result without the field "
                                f"{'.'.join(keys)}")
        d = d[k]
    return d


def read_result(path):
    """A result dict saved by ``fixnet bench --json``, checked; DataFileError naming the file."""
    try:
        with open(path, "rb") as f:
            r = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise DataFileError(f"{path}: not a JSON file ({' '.join(str(e).split())[:100]})") from None
    schema = r.get("schema") if isinstance(r, dict) else None
    if not isinstance(schema, str) or not schema.startswith("fixnet-bench/"):
        raise DataFileError(f"{path}: not a fixnet bench result (no \"schema\": \"{SCHEMA}\"; "
                            "write one with fixnet bench MODEL --json OUT)")
    if schema != SCHEMA:
        raise DataFileError(f"{path}: schema {schema!r}, this fixnet reads {SCHEMA!r}")
    for keys in _NUMBER_FIELDS:
        v = _field(r, keys, path)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise DataFileError(f"{path}: field {'.'.join(keys)} is {v!r}, not a number >= 0")
    for keys in _TEXT_FIELDS:
        if not isinstance(_field(r, keys, path), str):
            raise DataFileError(f"{path}: field {'.'.join(keys)} is not a string")
    flt = _field(r, ("float",), path)
    if flt is not None:
        v = _field(flt, ("latency_ms", "p50"), path)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise DataFileError(f"{path}: field float.latency_ms.p50 is {v!r}, not a number > 0")
    if not _field(r, ("int8", "latency_ms", "p50"), path) > 0:
        raise DataFileError(f"{path}: field int8.latency_ms.p50 is 0")
    return r


def compare_table(results):
    """The side-by-side table of saved results [(file, result)], one column per file."""
    from ..tables import render_table

    first = results[0][1]
    columns = [""] + [f"{r['host']['hostname']}: {r['host']['cpu']} ({os.path.basename(p)})"
                      for p, r in results]
    rs = [r for _, r in results]

    def row(label, fn):
        return [label] + [fn(r) for r in rs]

    rows = [
        row("model", lambda r: f"{r['model']['file']} ({r['model']['sha256'][:8]})"),
        row("kernel build (ISA)", lambda r: r["host"]["isa"]),
        row("CPU", lambda r: r["host"]["cpu"]),
        row("cores", lambda r: str(r["host"]["cores"])),
        row("fixnet, Python, NumPy", lambda r: f"{r['host'].get('fixnet', '?')}, "
            f"{r['host'].get('python', '?')}, {r['host'].get('numpy', '?')}"),
        row("measured (UTC)", lambda r: r["timestamp"].replace("T", " ").rstrip("Z")),
        row("batch", lambda r: str(r["settings"]["batch"])),
        row("int8 threads", lambda r: str(r["settings"]["threads"])),
        row("int8 p50, ms", lambda r: _ms(r["int8"]["latency_ms"]["p50"])),
        row("int8 p90, ms", lambda r: _ms(r["int8"]["latency_ms"]["p90"])),
        row("int8 p99, ms", lambda r: _ms(r["int8"]["latency_ms"]["p99"])),
        row("int8 throughput, samples/s", lambda r: _num(r["int8"]["throughput_per_s"])),
        row("int8 GMAC/s", lambda r: f"{r['int8']['gmacs_per_s']:.3g}"),
        row("peak RSS, int8 runs", lambda r: _mib(r["int8"]["peak_rss_bytes"])),
        row("float p50, ms", lambda r: _ms(r["float"]["latency_ms"]["p50"]) if r["float"]
            else "n/a"),
        row("int8 speed-up over float", lambda r: f"{r['speedup']:.2f}x" if r.get("speedup")
            else "n/a"),
    ]
    same = [r["model"]["sha256"] == first["model"]["sha256"] for r in rs]
    if len(rs) > 1 and any(same[1:]):
        t0 = first["int8"]["throughput_per_s"]
        rows.append(row("int8 throughput vs the first", lambda r: (
            f"{r['int8']['throughput_per_s'] / t0:.2f}x"
            if r["model"]["sha256"] == first["model"]["sha256"] else "other model")))
    text = _rstrip_lines(render_table("fixnet bench results", columns, rows))
    if len(rs) > 1 and not all(same):
        text += ("\nnote: not every file benchmarks the model of the first file (sha256 "
                 "differs): no ratio for those")
    return text

"""`fixnet quantize`: convert a Keras model to an int8 fixnet model (.fxn), its activation
ranges measured on calibration data (.npy, .npz or a folder of images), or derived from the
model without data; then a summary: each layer's int8 output scale, zero point and accumulator
headroom, the file and weight sizes, the overflow proof, the dead channels widened, and how
close the int8 outputs are to the float model's on the calibration data."""
import os
import sys
import time
import warnings

import numpy as np

from ..errors import (CalibrationError, ConfigError, DataFileError, ModelFileError,
                      OverflowRiskError)
from ..quant.config import ACTIVATION_TYPES, WEIGHT_TYPES, QuantConfig, parse_override
from ..quant.ranges import DEFAULT_PERCENTILE, METHODS
from . import UsageError, one_line
from .common import finite_float
from .data import read_data
from .files import check_output_path, data_path, is_quantized, open_model

HELP = "convert a Keras model to an int8 .fxn file, ranges measured on calibration data"
EXAMPLE = """fixnet quantize model.h5 --calib calib.npy -o model.fxn
  fixnet quantize model.h5 --calib data.npz:x_calib -o model.fxn --method minmax
  fixnet quantize model.keras --calib images/ --image-range 0 1 -o model.fxn
  fixnet quantize model.json --weights model.weights.h5 --input-range 0 1 -o model.fxn
  fixnet quantize model.h5 --calib calib.npy -o model.fxn --activations int16
  fixnet quantize model.h5 --calib calib.npy -o model.fxn --override 'block_1_*:activations=int16'
  fixnet quantize model.h5 --calib calib.npy -o model.fxn --target-sqnr 30 --validation val.npy"""

ACCURACY_SAMPLES = 256       # calibration samples the summary compares int8 with float on


def _percentile(text):
    import argparse
    v = finite_float(text)
    if not 50.0 < v <= 100.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (50, 100]")
    return v


def add_arguments(p):
    p.add_argument("model", metavar="MODEL",
                   help="a Keras .h5 or .keras file, or a Keras .json architecture with --weights")
    p.add_argument("--calib", metavar="DATA",
                   help="calibration inputs (a few hundred representative samples): an .npy "
                        "file, an .npz file with the array named after a colon (data.npz:x), "
                        "or a folder of images (resized to the input; needs Pillow). Without "
                        "it: data-free quantization (less accurate)")
    p.add_argument("-o", dest="output", metavar="OUT.fxn", required=True,
                   help="the int8 model file to write (written atomically; never the input)")
    p.add_argument("--weights", metavar="W",
                   help="the weights file (.weights.h5 or .h5) of a .json architecture")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="how each activation range is chosen from its calibration histogram: "
                        "minmax (nothing clipped), percentile, mse, entropy (KL divergence), or "
                        "auto (per tensor, the widest of those within 10%% of the least error; "
                        "default)")
    p.add_argument("--percentile", metavar="P", type=_percentile, default=None,
                   help=f"for --method percentile (and auto's percentile candidate): clip "
                        f"100 - P %% on each side, P in (50, 100] (default {DEFAULT_PERCENTILE})")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="do not correct each layer's bias for the mean output shift its weight "
                        "rounding causes")
    p.add_argument("--weight-rounding", choices=("nearest", "adaptive"), default="adaptive",
                   help="round int8 weights to nearest, or adaptively to minimise each layer's "
                        "output error on the calibration data (default)")
    p.add_argument("--weight-clipping", choices=("none", "mse"), default="none",
                   help="none: weights scaled to their largest |w| (default); mse: per channel, "
                        "the clipping threshold of least squared error")
    p.add_argument("--no-per-channel", dest="per_channel", action="store_false",
                   help="one weight scale per tensor instead of one per output channel")
    p.add_argument("--input-range", metavar=("LO", "HI"), nargs=2, type=finite_float,
                   action="append",
                   help="without --calib: the range of the model's input values (for a model "
                        "that does not start with a Rescaling or Normalization layer); once for "
                        "all inputs, or once per input in order")
    p.add_argument("--image-range", metavar=("LO", "HI"), nargs=2, type=finite_float,
                   default=None,
                   help="a folder of images: map pixel values 0..255 to LO..HI (default 0 255; "
                        "e.g. 0 1 for a model trained on images scaled to [0, 1])")
    p.add_argument("--softmax-levels", type=int, choices=(255, 256), default=255,
                   help="softmax outputs have scale 1/255 (default: 0 and 1 exact) or TFLite's "
                        "1/256")
    p.add_argument("--on-overflow-risk", choices=("error", "warn"), default="error",
                   help="when no proof exists that a layer's int32 accumulator cannot wrap: "
                        "fail (default) or warn and write the model anyway")
    p.add_argument("--activations", choices=ACTIVATION_TYPES, default=None,
                   help="activation type of every layer with int16 kernels: int8 (default) or "
                        "int16 (symmetric, with int8 weights: TFLite's 16x8 mode)")
    p.add_argument("--weight-type", choices=WEIGHT_TYPES, default=None,
                   help="int8 (default), codebook16 (16 k-means levels per layer, stored as "
                        "4-bit indices), codebook16-channel (a codebook per output channel) or "
                        "int4 (uniform, 15 levels per channel)")
    p.add_argument("--override", metavar="NAME:KEY=VALUE", action="append", default=[],
                   help="a per-layer setting (NAME a layer name or an fnmatch pattern; KEY one "
                        "of activations, method, per_channel, weights), e.g. "
                        "conv_1:activations=int16; repeat for more")
    p.add_argument("--target-sqnr", metavar="DB", type=finite_float, default=None,
                   help="move the layers that cost the most to int16 until the output SQNR "
                        "against the float model reaches DB (measured on --validation, else on "
                        "the calibration data)")
    p.add_argument("--target-agreement", metavar="F", type=finite_float, default=None,
                   help="the same for top-1 agreement with the float model, F in (0, 1]")
    p.add_argument("--validation", metavar="DATA",
                   help="inputs the accuracy target is measured on (as --calib takes them)")
    p.add_argument("--config", metavar="FILE",
                   help="start from a saved quantization config: a .json file of "
                        "QuantConfig.to_dict(), or a .fxn file (the config it was made with); "
                        "the options above replace its settings")


def check_arguments(args):
    """UsageError for options that do not go together (before anything is read)."""
    if not args.output.lower().endswith(".fxn"):
        raise UsageError(f"-o {args.output}: give a file name ending in .fxn")
    if args.calib is not None and args.input_range:
        raise UsageError("--input-range is for data-free quantization (without --calib); with "
                         "--calib the ranges are measured on the data")
    if args.input_range:
        for lo, hi in args.input_range:
            if not lo < hi:
                raise UsageError(f"--input-range {lo:g} {hi:g}: LO must be below HI")
    if args.image_range is not None:
        if args.calib is None or not os.path.isdir(data_path(args.calib)):
            raise UsageError("--image-range applies to --calib with a folder of images")
        if args.image_range[0] == args.image_range[1]:
            raise UsageError("--image-range: LO and HI must differ")
    if args.percentile is not None and args.method not in ("percentile", "auto", None):
        raise UsageError(f"--percentile goes with --method percentile or auto, not "
                         f"--method {args.method}")
    check_output_path(args.output, "-o", {
        "MODEL": args.model, "--weights": args.weights,
        "--calib": data_path(args.calib) if args.calib is not None else None})


def _input_range(args, n_inputs):
    """--input-range as FloatModel.quantize takes it: None, one pair, or one per input."""
    if not args.input_range:
        return None
    if len(args.input_range) == 1:
        return tuple(args.input_range[0])
    if len(args.input_range) != n_inputs:
        raise UsageError(f"--input-range given {len(args.input_range)} times; the model has "
                         f"{n_inputs} input(s): give it once, or once per input")
    return [tuple(r) for r in args.input_range]


def _require_finite(arrays, spec):
    for i, a in enumerate(arrays):
        if a.dtype.kind != "f":
            continue
        finite = np.isfinite(a)
        bad = a.size - int(np.count_nonzero(finite))
        if bad:
            sample = int(np.argmin(finite.reshape(a.shape[0], -1).all(axis=1)))
            where = f" (input {i})" if len(arrays) > 1 else ""
            raise DataFileError(f"--calib {spec}{where}: holds {bad} NaN or infinite value(s), "
                                f"the first in sample {sample}")


def _check_datafree_input(fm, args):
    """Without --calib or --input-range: UsageError unless the model itself says its input
    range (a Rescaling or Normalization layer at the input)."""
    from ..quant.datafree import input_statistics
    try:
        input_statistics(fm.graph, None)
    except CalibrationError:
        raise UsageError(f"MODEL {args.model}: without --calib, data-free quantization needs "
                         "the range of the model's input, and the model does not start with a "
                         "Rescaling or Normalization layer: give --calib DATA (better), or "
                         "--input-range LO HI") from None


def quant_config(args):
    """The QuantConfig the options ask for: --config's (or the defaults), with every option
    given on the command line set on it."""
    base = QuantConfig()
    if args.config is not None:
        base = read_config(args.config)
    settings = {}
    if args.method is not None:
        settings["method"] = args.method
    if args.percentile is not None:
        settings["percentile"] = args.percentile
    flags = {"per_channel": args.per_channel is False, "bias_correction": args.bias_correction is False,
             "weight_rounding": args.weight_rounding != "adaptive",
             "weight_clipping": args.weight_clipping != "none",
             "softmax_levels": args.softmax_levels != 255,
             "on_overflow_risk": args.on_overflow_risk != "error"}
    for key, given in flags.items():
        if given or args.config is None:
            value = getattr(args, key)
            settings[key] = None if value == "none" else value
    for key, value in (("activations", args.activations), ("weights", args.weight_type),
                       ("target_sqnr", args.target_sqnr), ("target_agreement", args.target_agreement)):
        if value is not None:
            settings[key] = value
    try:
        if args.override:
            settings["overrides"] = base.overrides + tuple(
                QuantConfig(overrides=[parse_override(o)]).overrides[0] for o in args.override)
        import dataclasses
        return dataclasses.replace(base, **settings)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def read_config(path):
    """The QuantConfig of a .json file or recorded in a .fxn file (UsageError otherwise)."""
    import json
    if path.lower().endswith(".fxn"):
        from ..runtime import load_fxn
        config = load_fxn(path).config
        if config is None:
            raise UsageError(f"--config {path}: the file records no quantization config (it "
                             "was written before configs were recorded)")
        return config
    try:
        with open(path, encoding="utf-8") as f:
            return QuantConfig.from_dict(json.load(f))
    except OSError as e:
        raise UsageError(f"--config {path}: cannot be read ({e.strerror or e})") from None
    except (ValueError, ConfigError) as e:
        raise UsageError(f"--config {path}: not a quantization config ({e})") from None


def run(args):
    check_arguments(args)
    t0 = time.perf_counter()
    fm = open_model(args.model, args.weights)
    if is_quantized(fm):
        raise ModelFileError(f"MODEL {args.model}: is already an int8 fixnet model (.fxn); "
                             "quantize takes a Keras model (.h5, .keras, or .json with --weights)")
    input_range = _input_range(args, len(fm.input_shapes))
    if args.calib is not None:
        image_range = tuple(args.image_range) if args.image_range else (0.0, 255.0)
        x = read_data(args.calib, fm.input_shapes, fm.graph.inputs, what="--calib",
                      image_range=image_range)
        xs = x if isinstance(x, list) else [x]
        _require_finite(xs, args.calib)
    else:
        x = xs = None
        if input_range is None:
            _check_datafree_input(fm, args)
        print("fixnet quantize: note: no --calib: data-free quantization (activation ranges "
              "derived from the model's BatchNormalization statistics and the input range, not "
              "measured); a few hundred representative inputs given with --calib usually make "
              "a more accurate int8 model", file=sys.stderr)
    config = quant_config(args)
    validation = None
    if args.validation is not None:
        validation = read_data(args.validation, fm.input_shapes, fm.graph.inputs,
                               what="--validation")
    options = dict(input_range=input_range, progress="auto", validation=validation)
    if sys.stderr.isatty() and xs is not None:
        # the progress bar covers the calibration pass; adaptive rounding comes after it
        print(f"fixnet quantize: calibrating on {xs[0].shape[0]} samples, then rounding the "
              "weights" + (" (adaptive rounding takes longest)"
                           if args.weight_rounding == "adaptive" else "") + " ...",
              file=sys.stderr)
    t1 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            qm = fm.quantize(x, config, **options)
        except OverflowRiskError as e:                     # name the option, not the keyword
            e.args = (str(e).replace("pass on_overflow_risk='warn'",
                                     "give --on-overflow-risk warn to write the model anyway"),)
            raise
    t2 = time.perf_counter()
    for w in caught:
        if w.category.__name__ != "DataFreeWarning":      # said above, in the CLI's words
            print(f"fixnet quantize: warning: {one_line(w.message)}", file=sys.stderr)
    qm.save(args.output)
    t3 = time.perf_counter()
    print(summary(args, fm, qm, xs))
    if getattr(qm, "adjustment", None) is not None:
        print(f"adjust: {qm.adjustment.summary()}")
    print(f"time: {t3 - t0:.2f} s (reading the model and data {t1 - t0:.2f} s, quantizing "
          f"{t2 - t1:.2f} s, writing {t3 - t2:.2f} s)")
    if xs is not None:
        print(accuracy_line(fm, qm, xs))
    return 0


def summary(args, fm, qm, xs):
    """What quantize made: per int8 step the output's scale, zero point and accumulator
    headroom; the settings; file and weight sizes; the overflow proof; the dead channels
    widened."""
    from ..report import widened_channels
    from ..tables import render_table
    from .inspect import (bytes_text, overflow_line, shapes_text,
                          smallest_headroom, step_parameters)

    shapes = {t: s.shape for t, s in qm.tensors.items()}
    bounds = smallest_headroom(qm)
    rows = []
    for s in qm.steps:
        qp = qm.tensors[s.outputs[0]].qparams
        b = bounds.get((s.layer, s.op))
        rows.append((s.layer, s.op, qp.type_name, shapes_text(shapes, s.outputs), f"{qp.scale:.4g}",
                     qp.zero_point, "" if b is None else f"{b.headroom_bits:.1f}"))
    c = qm.config
    how = (f"calibrated on {xs[0].shape[0]} samples of {args.calib}, method {c.method}"
           if xs is not None else "data-free")
    lines = [render_table(f"{args.output}: int8 model of {args.model} ({how})",
                         ["layer", "op", "type", "output shape", "scale", "zero pt",
                          "headroom bits"], rows)]
    lines.append(
        f"settings: method {c.method}"
        + (f", percentile {c.percentile:g}" if c.method in ("percentile", "auto") else "")
        + f", weights {'per channel' if c.per_channel else 'per tensor'}, "
        f"{c.weight_rounding} rounding"
        + (", mse weight clipping" if c.weight_clipping else "")
        + f", bias correction {'on' if c.bias_correction else 'off'}, softmax scale "
        f"1/{c.softmax_levels}, activations {c.activations}"
        + (f", weights {c.weights}" if c.weights != "int8" else ""))
    lines += [f"override {p!r}: " + ", ".join(f"{k}={v}" for k, v in ov.set_keys().items())
              for p, ov in c.overrides]
    int8_bytes = sum(int(a.nbytes) for s in qm.steps for a in step_parameters(s))
    float_bytes = 4 * sum(int(w.size) for n in fm.graph.nodes for w in n.weights.values())
    lines.append(f"file: {args.output}, {bytes_text(os.path.getsize(args.output))}")
    lines.append(f"weights: {bytes_text(int8_bytes)} as int8 weights and int32 biases, "
                 f"{bytes_text(float_bytes)} as float32"
                 + (f" ({float_bytes / int8_bytes:.1f}x smaller)" if int8_bytes else ""))
    lines.append(overflow_line(qm))
    widened = widened_channels(qm)
    if widened:
        rows = [(r["layer"], r["op"], r["channel"],
                 "" if r["natural_scale"] is None else f"{r['natural_scale']:.3g}",
                 f"{r['scale']:.3g}", f"{r['bias']:.6g}") for r in widened]
        lines.append(render_table(
            "dead channels whose weight scale was widened to hold their bias (they output "
            "~their bias)", ["layer", "op", "channel", "weight scale", "widened scale", "bias"],
            rows))
    else:
        lines.append("dead channels widened: none")
    return "\n".join(lines)


def accuracy_line(fm, qm, xs):
    """How close the int8 outputs are to the float model's on (up to ACCURACY_SAMPLES of) the
    calibration inputs: SQNR per output, and the argmax agreement of vector outputs."""
    from ..metrics import sqnr_db
    sub = [np.asarray(a[:ACCURACY_SAMPLES], np.float32) for a in xs]
    n = sub[0].shape[0]
    ref = fm.predict(sub if len(sub) > 1 else sub[0])
    out = qm.predict(sub if len(sub) > 1 else sub[0])
    if len(qm.outputs) == 1:
        ref, out = [ref], [out]
    parts = []
    for name, r, q in zip(qm.outputs, ref, out):
        text = f"'{name}' SQNR {sqnr_db(r, q):.1f} dB"
        if r.ndim == 2 and r.shape[1] > 1:
            agree = float(np.mean(r.argmax(1) == q.argmax(1)))
            text += f", argmax agreement {100 * agree:.1f}%"
        parts.append(text)
    return (f"int8 vs float on {n} calibration samples (not held-out data): "
            + "; ".join(parts))

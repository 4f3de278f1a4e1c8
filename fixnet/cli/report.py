"""`fixnet report`: quantize a Keras model and write a self-contained HTML page of what the
int8 network lost against the float one: per-layer SQNR, weight and activation histograms with
the int8 ranges, clipped tails, accumulator headroom, saturations, dead channels, and a
conclusion line naming the layer that costs the most.

The page needs no network to be viewed (plots are inline SVG and PNG data). MODEL is a Keras
file (quantized here with --calib, compared with its float model), or an int8 file without a
float model (a .tflite or .fxn): then --calib is only the data the numbers are measured on, and
each layer's SQNR is its own: its int8 output against the same layer computed exactly from its
dequantized int8 inputs and weights."""
import json
import os

from ..errors import DataFileError
from ..fileio import write_atomically
from . import UsageError
from .common import finite_float, positive_int
from .files import check_output_path, data_path

HELP = "write an HTML page of what int8 quantization loses, layer by layer, against the float model"
EXAMPLE = """fixnet report model.h5 --calib data.npz:x_calib --html report.html
  fixnet report model.h5 --calib calib.npy --eval data.npz:x_test --eval-labels data.npz:y_test --html report.html --json report.json"""

METHODS = ("auto", "minmax", "percentile", "mse", "entropy")


def add_arguments(p):
    p.add_argument("model", help="a Keras .h5 or .keras file, an architecture .json with "
                                 "--weights, or an int8 .tflite or .fxn file (no float model)")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="calibration data: .npy, .npz (file.npz:name) or a folder of images "
                        "(for a .tflite or .fxn file: the data the numbers are measured on)")
    p.add_argument("--html", required=True, metavar="OUT", help="the HTML file to write")
    p.add_argument("--eval", metavar="DATA",
                   help="evaluation data: the per-layer numbers are measured on it (instead of "
                        "the calibration data), and the outputs are compared with the float model's")
    p.add_argument("--eval-labels", metavar="DATA",
                   help="integer class labels of the --eval data (.npy or file.npz:name): "
                        "adds float and int8 accuracy")
    p.add_argument("--weights", metavar="FILE", help="the weights file of an architecture .json")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="how activation ranges are chosen (default: auto)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="do not correct the biases for the mean shift of weight rounding")
    p.add_argument("--weight-rounding", choices=("adaptive", "nearest"), default="adaptive",
                   help="how weights are rounded to int8 (default: adaptive)")
    p.add_argument("--input-range", nargs=2, type=finite_float, metavar=("LO", "HI"),
                   help="the model input's real range (used when data-free ranges are needed)")
    p.add_argument("--samples", type=positive_int, metavar="N",
                   help="samples the per-layer numbers and histograms are measured on (the "
                        "first N of --eval, else of --calib; default: as many as fit in 512 MB "
                        "of copies of every tensor, at most 512)")
    p.add_argument("--json", metavar="OUT", help="also write the numbers behind the page as JSON")


QUANTIZING = {"method": "auto", "no_bias_correction": False, "weight_rounding": "adaptive",
              "input_range": None}


def _load_model(args):
    """The FloatModel of a Keras file, or the QuantizedModel of an int8 file (.tflite, .fxn)."""
    import fixnet
    return fixnet.load(args.model, args.weights)


def _read_labels(spec):
    import numpy as np
    from .data import read_data
    y = read_data(spec, [()], what="--eval-labels")
    if y.dtype.kind not in "iub" and not np.all(np.equal(np.mod(y, 1), 0)):
        raise DataFileError(f"--eval-labels {spec}: holds non-integer values; give class indices")
    return y.astype(np.int64)


def run(args):
    from ..html_report import html_report, _matplotlib
    from .data import read_data

    if args.eval_labels and not args.eval:
        raise UsageError("--eval-labels: give --eval DATA too (the labels are of those samples)")
    inputs = {"MODEL": args.model, "--weights": args.weights, **{opt: data_path(v) for opt, v in (
                  ("--calib", args.calib), ("--eval", args.eval), ("--eval-labels", args.eval_labels))
                  if v}}
    for opt, path in (("--html", args.html), ("--json", args.json)):
        if path:
            check_output_path(path, opt, inputs)
    _matplotlib()                       # fail early, before the work, when matplotlib is missing
    from ..runtime import QuantizedModel
    model = _load_model(args)
    int8_file = isinstance(model, QuantizedModel)
    if int8_file:
        set_ = [f"--{k.replace('_', '-')}" for k, v in QUANTIZING.items() if getattr(args, k) != v]
        if set_ or args.eval_labels:
            raise UsageError(f"{args.model}: an int8 file without a float model; these "
                             "options need the Keras model: "
                             + ", ".join(set_ + (["--eval-labels"] if args.eval_labels else [])))
        names = list(model.inputs)
        shapes = model.input_shapes
    else:
        names, shapes = list(model.graph.inputs), model.input_shapes
    calib = read_data(args.calib, shapes, names, what="--calib")
    ev = read_data(args.eval, shapes, names, what="--eval") if args.eval else None
    labels = _read_labels(args.eval_labels) if args.eval_labels else None
    if labels is not None:
        n_eval = (ev[0] if isinstance(ev, list) else ev).shape[0]
        if labels.shape[0] != n_eval:
            raise DataFileError(f"--eval-labels {args.eval_labels}: {labels.shape[0]} labels for "
                                f"{n_eval} samples in --eval {args.eval}")

    first = calib[0] if isinstance(calib, list) else calib
    if int8_file:
        qm, fm = model, None
        details = [("model", os.path.abspath(args.model)),
                   ("data", f"{args.calib} ({first.shape[0]} samples)"),
                   ("quantization", "the file's own (no float model: each layer's SQNR is its "
                                    "own)")]
    else:
        fm = model
        qm = fm.quantize(calib, method=args.method, bias_correction=not args.no_bias_correction,
                         weight_rounding=args.weight_rounding,
                         input_range=tuple(args.input_range) if args.input_range else None)
        details = [("model", os.path.abspath(args.model)),
                   ("calibration data", f"{args.calib} ({first.shape[0]} samples)"),
                   ("quantization", f"method {args.method}, weight rounding {args.weight_rounding}, "
                                    f"bias correction {'off' if args.no_bias_correction else 'on'}"
                    + (f", input range {args.input_range}" if args.input_range else ""))]
    if ev is not None:
        e0 = ev[0] if isinstance(ev, list) else ev
        details.append(("evaluation data", f"{args.eval} ({e0.shape[0]} samples)"
                        + (f", labels {args.eval_labels}" if args.eval_labels else "")))
    rep = html_report(qm, ev if ev is not None else calib, float_model=fm, eval_x=ev,
                      labels=labels, title=os.path.basename(args.model), max_samples=args.samples,
                      details=details)
    rep.save(args.html)
    if args.json:
        write_atomically(args.json, json.dumps(rep.to_dict(), indent=1).encode("utf-8"))
    for m in rep.outputs:
        line = f"output {m['output']}: SQNR {m['sqnr_db']:.1f} dB"
        if "top1_agreement" in m:
            line += f", top-1 agreement with float {100 * m['top1_agreement']:.2f}%"
        if "accuracy_int8" in m:
            line += (f", accuracy float {100 * m['accuracy_float']:.2f}% int8 "
                     f"{100 * m['accuracy_int8']:.2f}%")
        print(line)
    print(rep.conclusion)
    print(f"wrote {args.html} ({os.path.getsize(args.html) / 1e3:.0f} kB, "
          f"{sum(rep.plots.values())} plots)" + (f" and {args.json}" if args.json else ""))
    return 0

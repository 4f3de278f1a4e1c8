"""`fixnet predict`: run a model on input data (.npy, .npz or a folder of images) and write
its outputs to an .npy file (one output) or an .npz file (any number, named by the model's
output tensors). A fixnet .fxn model runs the int8 kernels; a Keras file runs fixnet's float
reference (float32 outputs only)."""
import os
import time

import numpy as np

from ..errors import DataFileError, InputError
from ..runtime import MAX_THREADS
from . import UsageError
from .data import read_data
from .files import check_output_path, data_path, is_quantized, open_model, save_arrays
from .common import finite_float, positive_int, thread_count

HELP = "run a model (.fxn: int8 kernels; Keras: float reference) on input data, write the outputs"
EXAMPLE = """fixnet predict model.fxn x_test.npy -o probs.npy
  fixnet predict model.fxn data.npz:x_test -o codes.npy --output int8 --batch 256 --threads 2
  fixnet predict model.fxn images/ --image-range 0 1 -o probs.npy
  fixnet predict multi_output.fxn x.npz -o outputs.npz
  fixnet predict model.h5 x_test.npy -o float_probs.npy"""

DEFAULT_BATCH = 1024


def add_arguments(p):
    p.add_argument("model", metavar="MODEL",
                   help="a fixnet .fxn model (int8), or a Keras .h5/.keras file or .json "
                        "architecture with --weights (the float reference)")
    p.add_argument("input", metavar="INPUT",
                   help="the inputs: an .npy file, an .npz file with the array named after a "
                        "colon (data.npz:x_test; for several inputs, the arrays named as the "
                        "inputs, or data.npz:a,b), or a folder of images (resized to the input; "
                        "needs Pillow). Float and integer arrays are real values, except that, "
                        "for a .fxn model, an int8 array is taken as int8 codes of the model's "
                        "input quantization and a uint8 array as those codes + 128, as "
                        "QuantizedModel.predict takes them (see `fixnet inspect MODEL` for the "
                        "input's scale and zero point)")
    p.add_argument("-o", dest="out", metavar="OUT", required=True,
                   help="where to write the outputs: OUT.npy (a one-output model) or OUT.npz "
                        "(the outputs named by the model's output tensors); written atomically")
    p.add_argument("--output", dest="output_type", choices=("float32", "int8", "uint8"),
                   default="float32",
                   help="float32: dequantized outputs (default); int8: the raw int8 codes "
                        "(see `fixnet inspect` for their scale and zero point); uint8: the codes "
                        "+ 128")
    p.add_argument("--batch", metavar="N", type=positive_int, default=DEFAULT_BATCH,
                   help=f"samples per predict call (default {DEFAULT_BATCH}); an .npy INPUT is "
                        "memory-mapped, so only N samples are read at a time; the outputs are "
                        "the same for every N")
    p.add_argument("--threads", metavar="N", type=thread_count,
                   default=1,
                   help=f"native threads for the int8 kernels (1 to {MAX_THREADS}, default 1); "
                        "the outputs are the same for every N")
    p.add_argument("--weights", metavar="W",
                   help="the weights file (.weights.h5 or .h5) of a .json architecture")
    p.add_argument("--image-range", metavar=("LO", "HI"), nargs=2, type=finite_float,
                   default=None,
                   help="a folder of images: map pixel values 0..255 to LO..HI (default 0 255; "
                        "use what the model was calibrated with)")
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary line")


def _as_model_input(a, quantized):
    """One batch as predict takes it: contiguous in memory (read from a memory map); integer
    and boolean arrays as float32 real values, except int8/uint8 codes for an int8 model."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind in "biu" and not (quantized and a.dtype in (np.int8, np.uint8)):
        a = a.astype(np.float32)
    return a


def run(args):
    out_lower = args.out.lower()
    if not out_lower.endswith((".npy", ".npz")):
        raise UsageError(f"-o {args.out}: give a file name ending in .npy (one output) or .npz")
    if args.image_range is not None:
        if not os.path.isdir(data_path(args.input)):
            raise UsageError("--image-range applies to an INPUT folder of images")
        if args.image_range[0] == args.image_range[1]:
            raise UsageError("--image-range: LO and HI must differ")
    check_output_path(args.out, "-o", {"MODEL": args.model, "--weights": args.weights,
                                       "INPUT": data_path(args.input)})
    model = open_model(args.model, args.weights)
    quantized = is_quantized(model)
    if quantized:
        names, shapes, in_names = model.outputs, model.input_shapes, model.inputs
        out_shapes = [model.tensors[t].shape for t in names]
    else:
        if args.output_type != "float32":
            raise UsageError(f"--output {args.output_type} needs an int8 model (.fxn); MODEL "
                             f"{args.model} is a Keras model, run by the float reference "
                             "(float32 outputs): make one with `fixnet quantize`")
        if args.threads != 1:
            raise UsageError(f"--threads is for an int8 model (.fxn); MODEL {args.model} is a "
                             "Keras model, run by the single-threaded float reference")
        names, shapes, in_names = model.graph.outputs, model.input_shapes, model.graph.inputs
        out_shapes = model.output_shapes
    if out_lower.endswith(".npy") and len(names) > 1:
        raise UsageError(f"-o {args.out}: the model has {len(names)} outputs "
                         f"({', '.join(names)}); an .npy file holds one: give an .npz file name")

    image_range = tuple(args.image_range) if args.image_range else (0.0, 255.0)
    x = read_data(args.input, shapes, in_names, what="INPUT", image_range=image_range, mmap=True)
    xs = x if isinstance(x, list) else [x]
    n = xs[0].shape[0]
    if any(a.shape[0] != n for a in xs):
        raise DataFileError(f"INPUT {args.input}: the inputs' arrays hold different numbers of "
                            f"samples ({', '.join(str(a.shape[0]) for a in xs)})")
    dtype = np.float32 if args.output_type == "float32" else np.dtype(args.output_type)
    if any(d is None for s in out_shapes for d in s):     # outputs as long as the inputs
        out_shapes = ([model.shapes_for(model.lengths_of(xs))[t] for t in names] if quantized
                      else [model.graph.shapes_for([a.shape[1:] for a in xs])[t] for t in names])
    results = [np.empty((n,) + tuple(s), dtype) for s in out_shapes]

    elapsed = 0.0
    for start in range(0, n, args.batch):
        stop = min(n, start + args.batch)
        batch = [_as_model_input(a[start:stop], quantized) for a in xs]
        arg = batch if len(batch) > 1 else batch[0]
        t0 = time.perf_counter()
        try:
            if quantized:
                y = model.predict(arg, output=args.output_type, num_threads=args.threads)
            else:
                y = model.predict(arg)
        except InputError as e:
            raise DataFileError(f"INPUT {args.input}, samples {start} to {stop - 1}: {e}") from None
        elapsed += time.perf_counter() - t0
        for res, yi in zip(results, y if len(names) > 1 else [y]):
            res[start:stop] = yi
    save_arrays(args.out, dict(zip(names, results)))

    if not args.quiet:
        engine = (f"int8 kernels, {args.threads} thread{'s' if args.threads > 1 else ''}"
                  if quantized else "float reference")
        rate = f"{n / elapsed:,.0f} samples/s" if elapsed > 0 else "too fast to time"
        print(f"fixnet predict: {n:,} samples in {elapsed:.3f} s ({rate}; {engine}, batches "
              f"of {min(args.batch, n)}); {args.output_type} outputs "
              f"{', '.join(f'{t} {r.shape}' for t, r in zip(names, results))} -> {args.out}")
    return 0

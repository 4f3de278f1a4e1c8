"""The step protocol, a leaf below the ops and the runtime: what a tensor is (TensorSpec), what
one kernel call is (Step), the static overflow bound a step proves (OverflowBound), and the
checks of the arrays and arguments a model is given (shape, dtype, finiteness, threads, output
type). It imports only fixnet.errors, fixnet.quant.qparams (QParams), the thread limit of the
kernels' pass and NumPy."""
import operator
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ._kernels._pass import MAX_THREADS
from .errors import (ArgumentError, FixnetError, InputDtypeError, InputShapeError,
                     NonFiniteInputError)
from .quant.qparams import QParams

NONFINITE_POLICIES = ("error", "clip")


@dataclass
class TensorSpec:
    shape: Tuple[Optional[int], ...]    # without batch; None: follows an input's length
    qparams: QParams
    # per dimension: None (fixed), or the length symbol it follows (fixnet/lengths.py: the
    # k-th None dimension of the model's inputs); None here: no dimension follows one
    length_of: Optional[Tuple[Optional[int], ...]] = None


@dataclass
class OverflowBound:
    """Static proof for one layer: the worst |accumulator| any input can produce, against the
    limit of the accumulator the layer runs with: 2^31 for int32 (every int8 layer, most
    int16 ones), 2^47 for the int64 accumulators of a wide step (an int16 dense or conv2d
    whose int32 proof fails; the int64 requantization needs |acc| < 2^47)."""
    layer: str
    op: str
    worst: np.ndarray               # int64 [channels]: worst-case |accumulator| per output channel
    what: str = "accumulator"
    limit_bits: int = 31            # proven when every worst case is below 2^limit_bits

    @property
    def accumulator(self):
        """"int32" or "int64": the accumulator type the layer's kernel sums in."""
        return "int32" if self.limit_bits == 31 else "int64"

    @property
    def headroom_bits(self):
        """Bits left before the limit (>= 0 means proven; negative means it can overflow)."""
        w = max(int(self.worst.max()) if self.worst.size else 0, 1)
        return float(self.limit_bits) - float(np.log2(w))

    @property
    def proven(self):
        return int(self.worst.max() if self.worst.size else 0) < 2 ** self.limit_bits


class Step:
    """One kernel call. Subclasses implement ``bind`` (fast path) and ``oracle`` (ground truth).

    Inputs of any length (a None dimension; fixnet/lengths.py): a step is built once, at
    quantize time, from shapes that hold None where a dimension follows an input's length.
    Its tuple and list attributes may hold None only as such a dimension: for each run the
    runtime gives ``bind`` and ``oracle`` a shallow copy (QuantizedModel.steps_for) whose
    every None in a tuple or list attribute is the call's length (its arrays are shared, so
    weights packed once serve every length), and ``bind(bufs)`` receives buffers of the run's
    shapes, e.g. (batch, T, F) with T the call's length, T >= 1. A step's tensors follow at
    most one input's length. Integers computed from a length at quantize time (a divisor,
    a window size) cannot serve other lengths: ``quantize`` then fails on the None (a
    TypeError), and the quantizer refuses the layer, naming it."""
    op = ""
    alias = False     # True: output buffer is a reshaped view of the input buffer, no kernel runs
    # True: bind writes into the output buffers what every later call relies on (the memory
    # plan then never lets another tensor use that memory; see fixnet/memory_plan.py)
    persistent_outputs = False
    # the activation type of the step's inputs and outputs (one type per step): 8 (int8) or
    # 16 (int16, symmetric); the quantizer sets it from the output's QParams after building
    # the step (an op's quantize may read ``q.qparams(t).bits`` to choose tables); files
    # written before int16 existed hold int8 steps
    bits = 8

    def __init__(self, name, layer, inputs, outputs):
        self.name = name          # node name
        self.layer = layer        # Keras layer name (for messages)
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    def bind(self, bufs):
        """Return the kernel Call object (a fixnet._kernels._step.KernelCall, run in the
        pass's C loop) bound to the given buffers, or a zero-argument Python callable."""
        raise NotImplementedError

    def oracle(self, ins):
        """Pure-NumPy integer result: list of int8 input arrays -> list of int8 outputs."""
        raise NotImplementedError

    def accumulators(self, ins):
        """int64 accumulators before requantization (None for ops without one)."""
        return None

    def overflow_bound(self) -> Optional[OverflowBound]:
        return None


# -- the arrays a model is given -----------------------------------------------------------

def split_inputs(x, shapes):
    """predict's ``x`` as one entry per model input. A model with several inputs takes a list
    or tuple of arrays (one per input); a one-input model takes an array, anything np.asarray
    makes one of (a nested list of samples), or a list holding its one input array."""
    if not isinstance(x, (list, tuple)):
        return [x]
    if len(shapes) != 1:
        return list(x)
    batch_rank = len(shapes[0]) + 1
    if x and all(isinstance(xi, np.ndarray) and xi.ndim == batch_rank for xi in x):
        return list(x)      # arrays with a batch axis: one per input (one expected)
    return [x]              # samples: a nested list, or a list of single-sample arrays


def check_inputs(x, names, shapes, allow_int8, code_dtypes=None):
    """predict's ``x`` as a list of checked arrays, one per input (``names``, ``shapes``
    without batch), all of one batch size (see split_inputs, check_input_array). Raises
    InputShapeError / InputDtypeError naming the input. ``code_dtypes``: per input, the dtype
    of its codes (int8 or int16; default int8)."""
    xs = split_inputs(x, shapes)
    code_dtypes = code_dtypes or [np.dtype(np.int8)] * len(names)
    if len(xs) != len(names):
        raise InputShapeError(f"model takes {len(names)} input(s) ({', '.join(names)}), got "
                              f"{len(xs)} array(s)")
    out = []
    for name, shape, xi, codes in zip(names, shapes, xs, code_dtypes):
        xi = check_input_array(xi, name, shape, allow_int8, codes)
        if out and xi.shape[0] != out[0].shape[0]:
            raise InputShapeError(f"input '{name}' has batch size {xi.shape[0]}, input "
                                  f"'{names[0]}' has {out[0].shape[0]}")
        out.append(xi)
    return out


def input_codes(x, specs, rounding):
    """``x`` (an array, or a list, one per input TensorSpec of ``specs``) with its finite
    float arrays made codes by TFLite's QUANTIZE rule (QParams.quantize_tflite) where
    ``rounding`` (a QuantizedModel's input_rounding) is "tflite", a model read from a .tflite
    file; anything else (and every input under "fixnet") as it is: predict checks and
    quantizes it as usual."""
    if rounding != "tflite":
        return x
    one = not isinstance(x, (list, tuple))
    xs = [x] if one else list(x)
    if len(xs) != len(specs):
        return x
    xs = [s.qparams.quantize_tflite(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
          and np.all(np.isfinite(v)) else v for v, s in zip(xs, specs)]
    return xs[0] if one else xs


def check_nonfinite_policy(nonfinite, where):
    if nonfinite not in NONFINITE_POLICIES:
        raise FixnetError(f"{where}: nonfinite must be one of {NONFINITE_POLICIES}, "
                          f"not {nonfinite!r}")


def nonfinite_input_error(name, bad):
    return NonFiniteInputError(f"input '{name}' holds {bad} NaN or infinite value(s); int8 "
                               "cannot represent them (predict's nonfinite='clip' clips them)")


def require_finite(x, name):
    """x (a float array) unchanged, or NonFiniteInputError naming the input."""
    bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise nonfinite_input_error(name, bad)
    return x


def clip_nonfinite(x):
    """predict's nonfinite="clip": +inf -> the largest float32 (quantizes to code 127), -inf
    -> the most negative (code -128), NaN -> 0.0 (the zero point). A copy if x has any."""
    if np.isfinite(x).all():
        return x
    big = np.finfo(np.float32).max
    return np.nan_to_num(x, nan=0.0, posinf=big, neginf=-big)


def check_input_array(x, name, shape, allow_int8, code_dtype=np.int8):
    """Validate one input array against the model's input ``shape`` (without batch).
    ``code_dtype``: int8 (int8 and uint8 arrays are codes) or int16 (an int16 input: int16
    arrays are its codes, int8/uint8 arrays are refused)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise InputDtypeError(f"input '{name}': cannot be made into an array ({e})") from None
    if allow_int8 and code_dtype == np.int16:
        if x.dtype == np.int16:
            pass
        elif x.dtype in (np.int8, np.uint8):
            raise InputDtypeError(f"input '{name}' is int16 (symmetric, zero point 0): pass real "
                                  f"numbers, or its int16 codes; {x.dtype} codes are not its type")
        elif x.dtype != np.float32:
            x = x.astype(np.float32)
    elif x.dtype == np.int8 and allow_int8:
        pass
    elif x.dtype == np.uint8 and allow_int8:
        # uint8 codes u mean the same as int8 codes u - 128 (zero point + 128), as TFLite's
        # uint8 input type: e.g. camera pixels for a model whose input range is [0, 255]
        x = np.bitwise_xor(x.view(np.int8), np.int8(-128))
    elif x.dtype.kind == "f" or (x.dtype.kind in "iu" and (not allow_int8 or x.dtype.itemsize > 1)):
        # integers are the real numbers they are (token ids, counts), except int8/uint8 for
        # the int8 model, which are codes
        if x.dtype != np.float32:
            x = x.astype(np.float32)
    elif allow_int8:
        raise InputDtypeError(f"input '{name}': dtype {x.dtype} is not accepted; pass real "
                              "numbers (float32, or integers wider than 8 bits), or int8/uint8 "
                              "codes (int8 means already quantized with the model's input "
                              "scale/zero point; uint8 the same codes + 128)")
    else:
        raise InputDtypeError(f"input '{name}': dtype {x.dtype} is not accepted; pass real "
                              "numbers (float32, or any float or integer dtype)")
    want = tuple(shape)
    if x.ndim != len(want) + 1 or any(w is not None and d != w for d, w in zip(x.shape[1:], want)):
        hint = ""
        if x.shape == want:
            hint = "; this looks like a single sample: add a batch axis (x[None])"
        raise InputShapeError(f"input '{name}': expected shape (batch, {', '.join(map(str, want))})"
                              f"{',' if len(want) == 1 else ''} got {x.shape}{hint}")
    return x


# -- the arguments of predict and profile ---------------------------------------------------

def check_num_threads(num_threads, where="predict"):
    """predict's num_threads as an int in [1, MAX_THREADS], or ArgumentError naming it."""
    if not isinstance(num_threads, bool):
        try:
            n = operator.index(num_threads)
        except TypeError:
            n = None
        if n is not None and 1 <= n <= MAX_THREADS:
            return n
    raise ArgumentError(f"{where}: num_threads must be an integer from 1 to {MAX_THREADS}, "
                        f"not {num_threads!r}")


def check_runs(runs, where):
    """A count of timed rounds: None, or an int >= 1; ArgumentError naming ``runs``."""
    if runs is None:
        return None
    if not isinstance(runs, bool):
        try:
            n = operator.index(runs)
        except TypeError:
            n = None
        if n is not None and n >= 1:
            return n
    raise ArgumentError(f"{where}: runs must be an integer >= 1 (or None), not {runs!r}")


def output_is_float(output):
    """True for output="float32", False for "int8"/"uint8"/"int16" (codes); FixnetError
    naming the argument for anything else."""
    if isinstance(output, str):
        if output == "float32":
            return True
        if output in ("int8", "uint8", "int16"):
            return False
    raise FixnetError(f"predict: output must be 'float32', 'int8', 'uint8' or 'int16', not "
                      f"{output!r}")


def check_output_codes(output, names, specs):
    """ArgumentError when ``output`` asks for codes of a type an output tensor does not have:
    "int8"/"uint8" for int8 outputs, "int16" for int16 outputs."""
    want = 16 if output == "int16" else 8
    for name, spec in zip(names, specs):
        if spec.qparams.bits != want:
            raise ArgumentError(f"predict: output={output!r}, but output '{name}' is "
                                f"{spec.qparams.type_name}; ask for output="
                                f"{'int16' if spec.qparams.bits == 16 else 'int8'!r} or 'float32'")

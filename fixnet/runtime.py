"""QuantizedModel: a flat list of integer kernel steps over buffers planned once per batch size.

Float appears only at the two boundaries of predict: quantizing a float input and dequantizing
the outputs. Everything between is int8 tensors and integer kernels.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ._kernels import _elementwise
from .errors import InputDtypeError, InputShapeError, NonFiniteInputError, FixnetError
from .quant.qparams import QParams

MAX_ROWS_PER_PASS = 256      # larger batches run in chunks, so the arena stays small
_ARENAS_KEPT = 4


@dataclass
class TensorSpec:
    shape: Tuple[int, ...]          # without batch
    qparams: QParams


@dataclass
class OverflowBound:
    """Static proof for one layer: the worst |int32 accumulator| any input can produce."""
    layer: str
    op: str
    worst: np.ndarray               # int64 [channels]: worst-case |accumulator| per output channel
    what: str = "accumulator"

    @property
    def headroom_bits(self):
        """Bits left before int32 wraps (>= 0 means proven; negative means it can wrap)."""
        w = max(int(self.worst.max()) if self.worst.size else 0, 1)
        return 31.0 - float(np.log2(w))

    @property
    def proven(self):
        return int(self.worst.max() if self.worst.size else 0) < 2 ** 31


class Step:
    """One kernel call. Subclasses implement ``bind`` (fast path) and ``oracle`` (ground truth)."""
    op = ""
    alias = False     # True: output buffer is a reshaped view of the input buffer, no kernel runs

    def __init__(self, name, layer, inputs, outputs):
        self.name = name          # node name
        self.layer = layer        # Keras layer name (for messages)
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    def bind(self, bufs):
        """Return a zero-argument callable that runs the Cython kernel on the given buffers."""
        raise NotImplementedError

    def oracle(self, ins):
        """Pure-NumPy integer result: list of int8 input arrays -> list of int8 outputs."""
        raise NotImplementedError

    def accumulators(self, ins):
        """int64 accumulators before requantization (None for ops without one)."""
        return None

    def overflow_bound(self) -> Optional[OverflowBound]:
        return None


class _Arena:
    """Everything planned for one batch size: int8 buffers, the kernel calls bound to them, and
    the float boundaries (an InputStage per input, an OutputStage per output and dtype)."""
    __slots__ = ("bufs", "calls", "loads", "float_stores", "int8_stores")

    def __init__(self, bufs, calls, loads, float_stores, int8_stores):
        self.bufs = bufs
        self.calls = tuple(calls)
        self.loads = tuple(loads)
        self.float_stores = tuple(float_stores)
        self.int8_stores = tuple(int8_stores)


class _FastPlan:
    """What predict's fast path needs for one (output, input shape) of a one-input model."""
    __slots__ = ("arena", "load", "calls", "stores", "single_output")

    def __init__(self, arena, stores):
        self.arena = arena
        self.load = arena.loads[0]
        self.calls = arena.calls
        self.stores = tuple(stores)
        self.single_output = len(self.stores) == 1


class QuantizedModel:
    """An int8 network ready to run. Build one with ``fixnet.load(path).quantize(data)``."""

    def __init__(self, steps: List[Step], tensors, inputs, outputs, name="model", source=""):
        self.steps = steps
        self.tensors = tensors        # name -> TensorSpec
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.name = name
        self.source = source
        self._arenas = OrderedDict()  # batch size -> _Arena, the most recently used last
        self._fast = {}               # (output, input shape) -> _FastPlan (one-input models)

    # -- properties users look at -------------------------------------------------------
    @property
    def input_shapes(self):
        return [self.tensors[t].shape for t in self.inputs]

    @property
    def input_qparams(self):
        return [self.tensors[t].qparams for t in self.inputs]

    @property
    def output_qparams(self):
        return [self.tensors[t].qparams for t in self.outputs]

    def __repr__(self):
        return (f"<QuantizedModel '{self.name}': {len(self.steps)} int8 steps, "
                f"inputs {self.input_shapes}, outputs {[self.tensors[t].shape for t in self.outputs]}>")

    # -- running --------------------------------------------------------------------------
    def predict(self, x, output="float32", check_overflow=False):
        """Run the int8 network.

        x: float32/float64 array (quantized at the input with the input's scale and zero
           point), or int8 (taken as already quantized); shape (batch,) + input shape. A list
           of arrays for a model with several inputs.
        x may also be uint8: the int8 codes + 128 (zero point + 128), like TFLite's uint8
           input type (camera pixels, for a model whose input range is [0, 255]).
        output: "float32" (dequantized, the default), "int8" (raw codes; see output_qparams)
           or "uint8" (the codes + 128).
        check_overflow: run through the NumPy oracle with int64 accumulators instead, raising
           fixnet.AccumulatorOverflowError naming the layer if any int32 accumulator would
           wrap (same results, much slower); ``last_check`` then holds per-layer counts.
        Returns one array, or a list for a model with several outputs; new arrays every call
        (never views of the model's internal buffers).
        """
        if check_overflow:
            return self._predict_checked(x, output)
        # Fast path: one C-contiguous float32/int8 array of a shape seen before (so its arena
        # and the checks of every argument are done): a dict lookup, the input stage (a
        # C-level dtype/shape check, then copy or quantize into the arena), the kernel calls
        # and the output stage (a new array). Anything else goes through _predict.
        try:
            plan = self._fast[output, x.shape]
        except (AttributeError, KeyError, TypeError):
            return self._predict(x, output)
        if plan.load(x):        # -1: not a dtype/layout the stage takes; > 0: NaN or inf
            return self._predict(x, output)
        for call in plan.calls:
            call()
        if plan.single_output:
            return plan.stores[0]()
        return [store() for store in plan.stores]

    def _predict(self, x, output):
        """predict for any input: checks (with the error messages), conversions, chunks of
        MAX_ROWS_PER_PASS rows; registers the fast path for the shape when it applies."""
        if output == "uint8":
            return _as_uint8(self.predict(x, "int8"))     # the int8 fast path, then + 128
        if output not in ("float32", "int8"):
            raise FixnetError(f"predict: output must be 'float32', 'int8' or 'uint8', not {output!r}")
        as_float = output == "float32"
        xs = self._check_inputs(x)
        n = xs[0].shape[0]
        if 0 < n <= MAX_ROWS_PER_PASS:
            arena = self._arena(n)
            self._run_pass(arena, xs)
            stores = arena.float_stores if as_float else arena.int8_stores
            results = [store() for store in stores]
            if (len(self.inputs) == 1 and isinstance(x, np.ndarray)
                    and n in self._arenas and self._arenas[n] is arena):
                self._fast[output, x.shape] = _FastPlan(arena, stores)
            return results[0] if len(results) == 1 else results
        results = [np.empty((n,) + self.tensors[t].shape, np.float32 if as_float else np.int8)
                   for t in self.outputs]
        for start in range(0, n, MAX_ROWS_PER_PASS):
            stop = min(n, start + MAX_ROWS_PER_PASS)
            arena = self._arena(stop - start)
            self._run_pass(arena, [xi[start:stop] for xi in xs])
            stores = arena.float_stores if as_float else arena.int8_stores
            for res, store in zip(results, stores):
                res[start:stop] = store()
        return results[0] if len(results) == 1 else results

    def _run_pass(self, arena, xs):
        for name, stage, xi in zip(self.inputs, arena.loads, xs):
            bad = stage(np.ascontiguousarray(xi))
            if bad:
                raise NonFiniteInputError(f"input '{name}' holds {bad} NaN or infinite "
                                          f"value(s); int8 cannot represent them")
        for call in arena.calls:
            call()

    def _predict_checked(self, x, output):
        from .checked import run_checked
        if output == "uint8":
            return _as_uint8(self._predict_checked(x, "int8"))
        if output not in ("float32", "int8"):
            raise FixnetError(f"predict: output must be 'float32', 'int8' or 'uint8', not {output!r}")
        outs, self.last_check = run_checked(self, x)
        if output == "float32":
            outs = [self.tensors[t].qparams.dequantize(o) for t, o in zip(self.outputs, outs)]
        return outs[0] if len(outs) == 1 else outs

    def predict_oracle(self, x):
        """The same network run step by step with the pure-NumPy oracle (int8 outputs).
        Slow; it is the ground truth the Cython kernels are checked against."""
        xs = self._check_inputs(x)
        vals = {}
        for t, xi in zip(self.inputs, xs):
            vals[t] = xi if xi.dtype == np.int8 else self.tensors[t].qparams.quantize(xi)
        for s in self.steps:
            outs = s.oracle([vals[t] for t in s.inputs])
            for t, o in zip(s.outputs, outs):
                vals[t] = o.reshape((o.shape[0],) + self.tensors[t].shape)
        res = [vals[t] for t in self.outputs]
        return res[0] if len(res) == 1 else res

    def _check_inputs(self, x):
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.inputs):
            raise InputShapeError(f"model takes {len(self.inputs)} input(s) "
                                  f"({', '.join(self.inputs)}), got {len(xs)} array(s)")
        out = []
        n = None
        for name, xi in zip(self.inputs, xs):
            xi = check_input_array(xi, name, self.tensors[name].shape, allow_int8=True)
            if n is not None and xi.shape[0] != n:
                raise InputShapeError(f"input '{name}' has batch size {xi.shape[0]}, another "
                                      f"input has {n}")
            n = xi.shape[0]
            out.append(xi)
        return out

    def _arena(self, n):
        """Buffers for batch size n and the kernel calls bound to them, planned once."""
        arena = self._arenas.get(n)
        if arena is not None:
            self._arenas.move_to_end(n)
            return arena
        bufs = {}
        for t in self.inputs:
            bufs[t] = np.empty((n,) + self.tensors[t].shape, np.int8)
        calls = []
        for s in self.steps:
            if s.alias:
                src = bufs[s.inputs[0]]
                bufs[s.outputs[0]] = src.reshape((n,) + self.tensors[s.outputs[0]].shape)
                continue
            for t in s.outputs:
                bufs[t] = np.empty((n,) + self.tensors[t].shape, np.int8)
            calls.append(s.bind(bufs))
        arena = _Arena(bufs, calls,
                       [_elementwise.InputStage(bufs[t], self.tensors[t].qparams.scale,
                                                self.tensors[t].qparams.zero_point)
                        for t in self.inputs],
                       [self._output_stage(bufs[t], t, True) for t in self.outputs],
                       [self._output_stage(bufs[t], t, False) for t in self.outputs])
        self._arenas[n] = arena
        while len(self._arenas) > _ARENAS_KEPT:
            _, old = self._arenas.popitem(last=False)
            self._fast = {k: p for k, p in self._fast.items() if p.arena is not old}
        return arena

    def _output_stage(self, buf, name, as_float):
        qp = self.tensors[name].qparams
        return _elementwise.OutputStage(buf, qp.scale, qp.zero_point, as_float)

    # -- the overflow proof --------------------------------------------------------------
    def overflow_bounds(self):
        return [b for b in (s.overflow_bound() for s in self.steps) if b is not None]

    def overflow_report(self):
        """Per-layer static bound on every int32 accumulator, with headroom in bits."""
        from .report import OverflowReport
        return OverflowReport(self.overflow_bounds())

    def report(self, x):
        """Where the quantization error comes from, layer by layer, on inputs ``x``: SQNR of
        each int8 tensor against the float network, share of values clipped by each range,
        int8 saturation counts, accumulator headroom and weight range use. Returns an
        ErrorReport: ``print(report)`` for a table, ``report.to_dict()`` for records. (A model
        read from a .fxn file has no float network: SQNR and clipping are then left empty.)"""
        from .report import error_report
        return error_report(self, getattr(self, "float_graph", None), x)

    def dequantized_weights(self):
        """The float weights this int8 network really computes with, reconstructed from its
        integers: {step name: {"kernel": ..., "bias": ...}} in Keras's layouts (Dense [in, out],
        Conv [KH, KW, in, out], Depthwise [KH, KW, C, multiplier]), with any BatchNorm folded in.
        See fixnet/dequantize.py."""
        from .dequantize import dequantized_weights
        return dequantized_weights(self)

    # -- the portable file -----------------------------------------------------------------
    def save(self, path):
        """Write the int8 network to one versioned ``.fxn`` file (see fixnet/fxn.py): int8
        weights, int32 biases, multipliers, tables and the graph; no float weights.
        ``fixnet.load(path)`` reads it back with bit-identical predictions."""
        from .fxn import save_model
        save_model(self, path)


def _as_uint8(out):
    """int8 codes q -> uint8 codes q + 128 (same scale, zero point + 128)."""
    if isinstance(out, list):
        return [_as_uint8(o) for o in out]
    return np.bitwise_xor(out, np.int8(-128)).view(np.uint8)


def check_input_array(x, name, shape, allow_int8):
    """Validate one input array against the model's input ``shape`` (without batch)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise InputDtypeError(f"input '{name}': cannot be made into an array ({e})") from None
    if x.dtype == np.int8 and allow_int8:
        pass
    elif x.dtype == np.uint8 and allow_int8:
        # uint8 codes u mean the same as int8 codes u - 128 (zero point + 128), as TFLite's
        # uint8 input type: e.g. camera pixels for a model whose input range is [0, 255]
        x = np.bitwise_xor(x.view(np.int8), np.int8(-128))
    elif x.dtype.kind == "f":
        if x.dtype != np.float32:
            x = x.astype(np.float32)
    else:
        allowed = "float32, int8 or uint8" if allow_int8 else "float32"
        raise InputDtypeError(f"input '{name}': dtype {x.dtype} is not accepted; pass {allowed} "
                              "(int8 means already quantized with the model's input scale/zero "
                              "point; uint8 the same codes + 128)")
    want = tuple(shape)
    if x.shape[1:] != want or x.ndim != len(want) + 1:
        hint = ""
        if x.shape == want:
            hint = "; this looks like a single sample: add a batch axis (x[None])"
        raise InputShapeError(f"input '{name}': expected shape (batch, {', '.join(map(str, want))})"
                              f"{',' if len(want) == 1 else ''} got {x.shape}{hint}")
    return x

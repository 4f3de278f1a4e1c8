"""Steps that run TensorFlow Lite's own int8 semantics where they differ from fixnet's.

TfliteSoftmaxStep: SOFTMAX on int8 as TFLite's reference kernel computes it (gemmlowp
fixed-point exp and reciprocal; fixnet.oracle.tflite.softmax_reference), from the ints its
Prepare derives from the input scale and beta (fixnet.oracle.tflite.softmax_params). The
elementwise ops need no step of their own: fixnet.tflite.tables.table_for gives the table
fixnet's LookupStep runs.

TfliteConstantBinaryStep: ADD / SUB / MUL / MAXIMUM / MINIMUM of an activation and a constant
of the file that broadcasts to it (a per-channel bias, a scalar): TFLite's broadcast kernels
compute each element by the rule of equal shapes, so fixnet's binary kernel runs on the
activation and the constant broadcast to the batch (made once per batch size, at bind).
TfliteBroadcastBinaryStep: the same for two activations where one broadcasts to the other
(a squeeze-and-excite gate [N, 1, 1, C] times [N, H, W, C]): the smaller is copied to the
full shape into a buffer of the step's own before each call.
TfliteTileStep: TILE (a broadcasting copy of codes).
TfliteResizeBilinearStep: RESIZE_BILINEAR on int8 as TFLite's reference kernel computes it
(ResizeBilinearInteger: 10-bit fixed-point source positions and weights, the four codes
weighted in int64, rounded half away from zero at 2^20).

A .fxn file stores the step by class name and state; the .fxn registry finds it among the
Step subclasses of the fixnet package once this module is imported (fixnet imports it).
"""
import numpy as np

from .._kernels import _tflite_softmax
from .. import oracle
from .._kernels import _merge
from ..ops.merge import BinaryStep
from ..oracle import tflite as tfl
from ..step import OverflowBound, Step

# output quantization TFLite requires of an int8 SOFTMAX (activations.cc SoftmaxPrepare)
SOFTMAX_OUTPUT_SCALE = 1.0 / 256
SOFTMAX_OUTPUT_ZERO_POINT = -128
# exp(0) in Q12.19: the largest term of a row's int32 sum
_SUM_TERM_MAX = 1 << 19


class TfliteSoftmaxStep(Step):
    """int8 [..., C] logits -> int8 probabilities (scale 1/256, zero point -128) over the last
    axis, as TFLite's BUILTIN_REF SOFTMAX. ``params``: {input_multiplier, input_left_shift,
    diff_min} (ints, ``softmax_params(input_scale, beta)``); ``channels``: C (at most 4095)."""
    op = "tflite_softmax"

    def __init__(self, name, layer, inputs, outputs, params, channels):
        super().__init__(name, layer, inputs, outputs)
        self.params = {k: int(params[k]) for k in _tflite_softmax.TFLITE_SOFTMAX_PARAMS}
        self.channels = int(channels)

    @classmethod
    def from_scales(cls, name, layer, inputs, outputs, input_scale, channels, beta=1.0):
        """The step of a SOFTMAX whose input has scale ``input_scale`` (float32) and whose
        option beta is ``beta``, with the params TFLite's Prepare computes."""
        return cls(name, layer, inputs, outputs, tfl.softmax_params(input_scale, beta), channels)

    def bind(self, bufs):
        c = self.channels
        return _tflite_softmax.TfliteSoftmaxCall(bufs[self.inputs[0]].reshape(-1, c),
                                                 self.params, bufs[self.outputs[0]].reshape(-1, c))

    def oracle(self, ins):
        x = np.asarray(ins[0])
        y = tfl.softmax_reference(x.reshape(-1, self.channels), **self.params)
        return [y.reshape(x.shape)]

    def overflow_bound(self):
        # the int32 row sum of Q12.19 exponentials, each at most exp(0) = 2^19
        return OverflowBound(self.layer, self.op,
                             np.array([self.channels * _SUM_TERM_MAX], np.int64), what="exp sum")


class TfliteConstantBinaryStep(BinaryStep):
    """One activation input and a constant operand: ``constant``, int8 codes of one sample in
    the output's sample shape (the file's constant broadcast); ``constant_first``: the constant
    is the op's first operand (x - c or c - x). ``kind`` and ``params``: BinaryStep's."""

    def __init__(self, name, layer, inputs, outputs, kind, params, constant, constant_first):
        super().__init__(name, layer, inputs, outputs, kind, params)
        self.constant = np.ascontiguousarray(constant, np.int8)
        self.constant_first = bool(constant_first)

    def operands(self, x):
        """(first, second) flat operands for the activation codes ``x`` [N, ...sample]."""
        n = x.size // max(self.constant.size, 1)
        c = np.ascontiguousarray(np.broadcast_to(self.constant, (n,) + self.constant.shape))
        x, c = x.reshape(-1), c.reshape(-1)
        return (c, x) if self.constant_first else (x, c)

    def bind(self, bufs):
        call = getattr(_merge, self.kernel.capitalize() + "Call")
        first, second = self.operands(bufs[self.inputs[0]])
        return call(first, second, self.kernel_params(), bufs[self.outputs[0]].reshape(-1))

    def oracle(self, ins):
        x = np.asarray(ins[0])
        first, second = self.operands(x)
        return [getattr(oracle, self.kernel)(first, second, self.kernel_params()).reshape(x.shape)]

    def accumulators(self, ins):
        """add / subtract: the int32 sum of the two rescaled operands (checked execution);
        the other kernels' intermediates are bounded by overflow_bound."""
        if self.kernel != "add":
            return None
        return oracle.add_accumulators(*self.operands(np.asarray(ins[0])), self.kernel_params())


class TfliteBroadcastBinaryStep(BinaryStep):
    """Two activation inputs of sample shapes ``shapes`` (same rank) that broadcast to the
    output's sample shape ``out_shape``; ``kind`` and ``params``: BinaryStep's."""

    def __init__(self, name, layer, inputs, outputs, kind, params, shapes, out_shape):
        super().__init__(name, layer, inputs, outputs, kind, params)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.out_shape = tuple(int(d) for d in out_shape)

    def full(self, x, shape, n):
        return np.broadcast_to(x.reshape((n,) + shape), (n,) + self.out_shape)

    def bind(self, bufs):
        y = bufs[self.outputs[0]]
        n = y.size // max(int(np.prod(self.out_shape)), 1)
        views, flat, fills = [], [], []
        for t, shape in zip(self.inputs, self.shapes):
            x = bufs[t]
            if shape == self.out_shape:
                flat.append(x.reshape(-1))
            else:                   # this step's own buffer, refilled before every call
                buf = np.empty((n,) + self.out_shape, x.dtype)
                fills.append((buf, self.full(x, shape, n)))
                flat.append(buf.reshape(-1))
        call = getattr(_merge, self.kernel.capitalize() + "Call")(
            flat[0], flat[1], self.kernel_params(), y.reshape(-1))

        def run():
            for buf, src in fills:
                np.copyto(buf, src)
            call()
        return run

    def operands(self, ins):
        n = np.asarray(ins[0]).size // max(int(np.prod(self.shapes[0])), 1)
        return [np.ascontiguousarray(self.full(np.asarray(x), s, n)).reshape(-1)
                for x, s in zip(ins, self.shapes)]

    def oracle(self, ins):
        first, second = self.operands(ins)
        y = getattr(oracle, self.kernel)(first, second, self.kernel_params())
        return [y.reshape((-1,) + self.out_shape)]

    def accumulators(self, ins):
        """add / subtract: the int32 sum of the two rescaled operands (checked execution)."""
        if self.kernel != "add":
            return None
        return oracle.add_accumulators(*self.operands(ins), self.kernel_params())


def _div_toward_zero(a, b):
    """C++'s integer division (truncation toward zero) of int arrays by a positive int."""
    a = np.asarray(a, np.int64)
    return np.where(a >= 0, a // b, -((-a) // b))


def bilinear_taps(out_size, in_size, align_corners, half_pixel_centers):
    """Per output index along one axis: the two source indices and the weight of the second,
    in 1/1024 (ComputeInterpolationValuesInteger of TFLite's ResizeBilinearInteger)."""
    scale = ((1 << 10) * in_size + out_size // 2) // out_size
    if align_corners and out_size > 1:
        scale = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    v = np.arange(out_size, dtype=np.int64) * scale
    if half_pixel_centers:
        v = v + scale // 2 - (1 << 9)
    lo = np.maximum(_div_toward_zero(v, 1 << 10), 0)
    hi = np.minimum(_div_toward_zero(v + (1 << 10) - 1, 1 << 10), in_size - 1)
    return lo, hi, v - (lo << 10)


class TfliteResizeBilinearStep(Step):
    """int8 [N, H, W, C] -> [N, OH, OW, C], input and output quantized alike; ``taps``: the
    (lo, hi, weight) arrays of bilinear_taps for H and for W. A NumPy computation (int64
    temporaries per call): a small op in the models that use it."""
    op = "tflite_resize_bilinear"

    def __init__(self, name, layer, inputs, outputs, nhwc_in, nhwc_out, align_corners,
                 half_pixel_centers):
        super().__init__(name, layer, inputs, outputs)
        self.nhwc_in, self.nhwc_out = tuple(nhwc_in), tuple(nhwc_out)
        self.align_corners, self.half_pixel_centers = bool(align_corners), bool(half_pixel_centers)

    def compute(self, x):
        (h, w, c), (oh, ow, _) = self.nhwc_in, self.nhwc_out
        x4 = np.asarray(x).reshape((-1, h, w, c)).astype(np.int64)
        y0, y1, wy = bilinear_taps(oh, h, self.align_corners, self.half_pixel_centers)
        x0, x1, wx = bilinear_taps(ow, w, self.align_corners, self.half_pixel_centers)
        one = 1 << 10
        acc = np.zeros((x4.shape[0], oh, ow, c), np.int64)
        for rows, ry in ((y0, one - wy), (y1, wy)):
            for cols, rx in ((x0, one - wx), (x1, wx)):
                acc += x4[:, rows][:, :, cols] * (ry[:, None, None] * rx[None, :, None])
        half = np.where(acc > 0, 1 << 19, -(1 << 19))
        return np.clip(_div_toward_zero(acc + half, 1 << 20), -128, 127).astype(np.int8)

    def bind(self, bufs):
        x, y = bufs[self.inputs[0]], bufs[self.outputs[0]].reshape((-1,) + self.nhwc_out)
        return lambda: np.copyto(y, self.compute(x))

    def oracle(self, ins):
        return [self.compute(ins[0])]


class TfliteTileStep(Step):
    """TILE of a sample of shape ``shape`` by ``multiples`` (one per sample axis; the batch
    axis is not tiled): output[..., j * s + i, ...] = x[..., i, ...], one broadcasting copy
    into the planned buffer (each axis viewed as (multiple, size))."""
    op = "tile"

    def __init__(self, name, layer, inputs, outputs, shape, multiples):
        super().__init__(name, layer, inputs, outputs)
        self.shape = tuple(int(d) for d in shape)
        self.multiples = tuple(int(m) for m in multiples)

    def views(self, x, y):
        ins = sum(((1, d) for d in self.shape), ())
        outs = sum(((m, d) for m, d in zip(self.multiples, self.shape)), ())
        return x.reshape((-1,) + ins), y.reshape((-1,) + outs)

    def bind(self, bufs):
        x, y = self.views(bufs[self.inputs[0]], bufs[self.outputs[0]])
        return lambda: np.copyto(y, x)

    def oracle(self, ins):
        x = np.asarray(ins[0]).reshape((-1,) + self.shape)
        return [np.tile(x, (1,) + self.multiples)]


class TfliteGatherStep(Step):
    """A static rearrangement of one sample's codes: output element j is input element
    ``index[j]`` (both flattened per sample; the batch axis untouched). TFLite's operators that
    only move codes along the sample axes (SLICE, STRIDED_SLICE with strides or shrinking,
    SPLIT, SPLIT_V, UNPACK, GATHER with constant indices, DEPTH_TO_SPACE, SPACE_TO_DEPTH,
    REVERSE_V2) become one of these, their index map computed once by applying the operator to
    the element numbers (fixnet/tflite/op_rules_gather.py). One np.take per call."""
    op = "gather_codes"

    def __init__(self, name, layer, inputs, outputs, index, in_size):
        super().__init__(name, layer, inputs, outputs)
        self.index = np.ascontiguousarray(index, np.int64).reshape(-1)
        self.in_size = int(in_size)
        if self.index.size and (self.index.min() < 0 or self.index.max() >= self.in_size):
            raise ValueError(f"gather step '{name}': an index outside the {self.in_size} "
                             "values of a sample")

    def bind(self, bufs):
        x = bufs[self.inputs[0]].reshape(-1, self.in_size)
        y = bufs[self.outputs[0]].reshape(-1, self.index.size)
        return lambda: np.take(x, self.index, axis=1, out=y)

    def oracle(self, ins):
        x = np.asarray(ins[0])
        return [x.reshape(-1, self.in_size)[:, self.index]]

"""upsample and crop: Keras UpSampling1D/2D and Cropping1D/2D (NHWC; 1D layers are H = 1).

int8 or int16 (one type per step: the input's and the output's): nearest up-sampling and
cropping only move codes, so the output keeps the input's scale and zero point
(fixnet.quant.quantizer.SAME_QPARAMS_OPS). Bilinear up-sampling (integer factors) takes a
weighted mean of four codes with exact integer weights and rounds once; its output lies between
its inputs, so it keeps them too. The steps are NumPy copies into the planned buffers (the same
code on every kernel build); their oracles are in fixnet/oracle/resize.py.
"""
import numpy as np

from .. import oracle
from ..errors import UnsupportedLayerError
from ..quant.qparams import acc_input_max
from ..step import OverflowBound, Step
from .base import Op, register
from .conv import as_nhwc_shape

INTERPOLATIONS = ("nearest", "bilinear")


def spatial_input(node, shape):
    """(H, W, C) of a rank-1 or rank-2 spatial op's input ``shape`` (H = 1 for rank 1),
    refusing a shape of another rank."""
    rank = node.attrs["rank"]
    if len(shape) != rank + 1:
        raise UnsupportedLayerError(f"{node.describe()}: expects a rank-{rank + 1} input, got {shape}")
    return as_nhwc_shape(shape, rank)


def as_nhwc(node, x):
    """float64 NHWC view of a batch ``x`` of the op's input."""
    x = np.asarray(x, np.float64)
    return x.reshape((x.shape[0],) + as_nhwc_shape(x.shape[1:], node.attrs["rank"]))


def check_same_type(name, x, y):
    """ValueError naming the step unless buffers ``x`` and ``y`` are both int8 or both int16
    (one activation type per step)."""
    if x.dtype != y.dtype or x.dtype not in (np.int8, np.int16):
        raise ValueError(f"{name}: input {x.dtype}, output {y.dtype}: one activation type per "
                         f"step (both int8 or both int16)")


def _out_shape(rank, h, w, c):
    return (w, c) if rank == 1 else (h, w, c)


def _bilinear_float(x4, sh, sw):
    """Float64 bilinear up-sampling with TensorFlow's half-pixel centres (tf.image.resize)."""
    n, h, w, c = x4.shape

    def axis_taps(n_in, s):
        lo, hi, w_lo, w_hi = oracle.bilinear_taps(n_in, s)
        return lo, hi, w_hi / (2.0 * s)          # lerp fraction in [0, 1)

    lo_h, hi_h, fy = axis_taps(h, sh)
    lo_w, hi_w, fx = axis_taps(w, sw)
    fx = fx[None, None, :, None]
    top = x4[:, lo_h][:, :, lo_w] + (x4[:, lo_h][:, :, hi_w] - x4[:, lo_h][:, :, lo_w]) * fx
    bottom = x4[:, hi_h][:, :, lo_w] + (x4[:, hi_h][:, :, hi_w] - x4[:, hi_h][:, :, lo_w]) * fx
    return top + (bottom - top) * fy[None, :, None, None]


@register
class Upsample(Op):
    """attrs: rank, size = (size_h, size_w) (size_h = 1 for rank 1), interpolation."""
    name = "upsample"

    def infer_shapes(self, node, in_shapes):
        h, w, c = spatial_input(node, in_shapes[0])
        if node.attrs.get("interpolation", "nearest") not in INTERPOLATIONS:
            raise UnsupportedLayerError(f"{node.describe()}: interpolation "
                                        f"'{node.attrs['interpolation']}' is not supported")
        sh, sw = node.attrs["size"]
        return [_out_shape(node.attrs["rank"], h * sh, w * sw, c)]

    def run_float(self, node, inputs):
        x4 = as_nhwc(node, inputs[0])
        rank = node.attrs["rank"]
        sh, sw = node.attrs["size"]
        if node.attrs.get("interpolation", "nearest") == "bilinear":
            y = _bilinear_float(x4, sh, sw)
        else:
            y = np.repeat(np.repeat(x4, sh, axis=1), sw, axis=2)
        return [y.reshape((x4.shape[0],) + _out_shape(rank, *y.shape[1:]))]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        rank = node.attrs["rank"]
        nhwc_in = as_nhwc_shape(q.shape(node.inputs[0]), rank)
        cls = BilinearUpsampleStep if node.attrs.get("interpolation", "nearest") == "bilinear" \
            else UpsampleStep
        return cls(node.name, node.layer, node.inputs, node.outputs, node.attrs["size"], nhwc_in)


class _UpsampleStep(Step):
    """An up-sampling step: integer factors ``size`` (size_h, size_w) of an NHWC input
    ``nhwc_in`` (H = 1 for rank 1)."""

    def __init__(self, name, layer, inputs, outputs, size, nhwc_in):
        super().__init__(name, layer, inputs, outputs)
        self.size = tuple(int(v) for v in size)
        self.nhwc_in = tuple(int(v) for v in nhwc_in)


class UpsampleStep(_UpsampleStep):
    """Nearest-neighbour up-sampling: one broadcasting copy, no arithmetic."""
    op = "upsample_nearest"

    def bind(self, bufs):
        (sh, sw), (h, w, c) = self.size, self.nhwc_in
        x = bufs[self.inputs[0]].reshape((-1, h, 1, w, 1, c))
        y = bufs[self.outputs[0]].reshape((-1, h, sh, w, sw, c))   # a view: the planned buffer
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{self.name}: batch {x.shape[0]} in, {y.shape[0]} out")
        check_same_type(self.name, x, y)
        return lambda: np.copyto(y, x)

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return [oracle.upsample_nearest(x4, *self.size)]


class BilinearUpsampleStep(_UpsampleStep):
    """Bilinear up-sampling by integer factors, separable, in int32: rows first (weights sum
    to 2 * size_h), then columns (to 2 * size_w), then one rounding division by their product
    D: floor((acc + D / 2) / D), as the oracle. |acc| + D / 2 <= 128.5 * D for int8, far inside
    int32; 32768.5 * D for int16, inside int32 while size_h * size_w < 16384 (the overflow
    bound states it; bind refuses more). Scratch arrays are allocated once, at bind."""
    op = "upsample_bilinear"

    def _worst(self, bits):
        """The largest |int32| the step holds: the weighted sum plus the rounding term."""
        d = 4 * self.size[0] * self.size[1]
        return acc_input_max(bits) * d + d // 2

    def overflow_bound(self):
        # int8's bound (128.5 * D) is proven for any factor a model can hold; int16 states it
        if self.bits != 16:
            return None
        return OverflowBound(self.layer, self.op, np.array([self._worst(16)], np.int64),
                             what="weighted sum")

    def bind(self, bufs):
        (sh, sw), (h, w, c) = self.size, self.nhwc_in
        x = bufs[self.inputs[0]].reshape((-1, h, w, c))
        y = bufs[self.outputs[0]].reshape((-1, h * sh, w * sw, c))
        n = x.shape[0]
        if y.shape[0] != n:
            raise ValueError(f"{self.name}: batch {n} in, {y.shape[0]} out")
        check_same_type(self.name, x, y)
        if self._worst(16 if x.dtype == np.int16 else 8) >= 2 ** 31:
            raise ValueError(f"{self.name}: factors {sh} x {sw}: the int32 weighted sum of "
                             f"{x.dtype} codes could wrap")
        lo_h, hi_h, a_lo, a_hi = (t.astype(np.intp) for t in oracle.bilinear_taps(h, sh))
        lo_w, hi_w, b_lo, b_hi = (t.astype(np.intp) for t in oracle.bilinear_taps(w, sw))
        a_lo, a_hi = (v.astype(np.int32)[None, :, None, None] for v in (a_lo, a_hi))
        b_lo, b_hi = (v.astype(np.int32)[None, None, :, None] for v in (b_lo, b_hi))
        d = np.int32(4 * sh * sw)
        half = np.int32(2 * sh * sw)
        x32 = np.empty((n, h, w, c), np.int32)
        rows, tmp_r = (np.empty((n, h * sh, w, c), np.int32) for _ in range(2))
        acc, tmp_c = (np.empty((n, h * sh, w * sw, c), np.int32) for _ in range(2))

        def run():
            np.copyto(x32, x)
            np.take(x32, lo_h, axis=1, out=rows)
            np.multiply(rows, a_lo, out=rows)
            np.take(x32, hi_h, axis=1, out=tmp_r)
            np.multiply(tmp_r, a_hi, out=tmp_r)
            np.add(rows, tmp_r, out=rows)                  # rows: weights sum to 2 * size_h
            np.take(rows, lo_w, axis=2, out=acc)
            np.multiply(acc, b_lo, out=acc)
            np.take(rows, hi_w, axis=2, out=tmp_c)
            np.multiply(tmp_c, b_hi, out=tmp_c)
            np.add(acc, tmp_c, out=acc)                    # acc: weights sum to D
            np.add(acc, half, out=acc)
            np.floor_divide(acc, d, out=acc)
            np.copyto(y, acc, casting="unsafe")            # a mean of codes: in x's type
        return run

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return [oracle.upsample_bilinear(x4, *self.size)]


@register
class Crop(Op):
    """attrs: rank, crops = ((top, bottom), (left, right)) ((0, 0) rows for rank 1)."""
    name = "crop"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        h, w, c = spatial_input(node, s)
        (t, b), (l, r) = node.attrs["crops"]
        oh, ow = h - t - b, w - l - r
        if min(t, b, l, r) < 0 or oh < 1 or ow < 1:
            raise UnsupportedLayerError(f"{node.describe()}: cropping {node.attrs['crops']} does "
                                        f"not fit an input of {s}")
        return [_out_shape(node.attrs["rank"], oh, ow, c)]

    def run_float(self, node, inputs):
        x4 = as_nhwc(node, inputs[0])
        (t, b), (l, r) = node.attrs["crops"]
        y = x4[:, t:x4.shape[1] - b, l:x4.shape[2] - r]
        return [y.reshape((x4.shape[0],) + _out_shape(node.attrs["rank"], *y.shape[1:]))]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        rank = node.attrs["rank"]
        return CropStep(node.name, node.layer, node.inputs, node.outputs, node.attrs["crops"],
                        as_nhwc_shape(q.shape(node.inputs[0]), rank))


class CropStep(Step):
    """Cropping: one strided copy, no arithmetic."""
    op = "crop"

    def __init__(self, name, layer, inputs, outputs, crops, nhwc_in):
        super().__init__(name, layer, inputs, outputs)
        self.crops = tuple(tuple(int(v) for v in p) for p in crops)
        self.nhwc_in = tuple(int(v) for v in nhwc_in)

    def bind(self, bufs):
        (t, b), (l, r) = self.crops
        h, w, c = self.nhwc_in
        x = bufs[self.inputs[0]].reshape((-1, h, w, c))[:, t:h - b, l:w - r]
        y = bufs[self.outputs[0]].reshape((-1, h - t - b, w - l - r, c))
        if x.shape != y.shape:
            raise ValueError(f"{self.name}: cropped input {x.shape}, output {y.shape}")
        check_same_type(self.name, x, y)
        return lambda: np.copyto(y, x)

    def oracle(self, ins):
        (t, b), (l, r) = self.crops
        return [oracle.crop_nhwc(ins[0].reshape((-1,) + self.nhwc_in), t, b, l, r)]

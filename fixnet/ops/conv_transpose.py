"""Transposed convolution (Keras Conv1DTranspose / Conv2DTranspose) as zero insertion followed
by an ordinary convolution.

A transposed convolution with stride s, kernel k and TensorFlow padding pad_before computes

    y[o] = sum over (i, t) with i * s + t - pad_before = o of x[i] * w[t]

which is exactly a stride-1 correlation of the zero-inserted input xd (xd[i * s] = x[i], 0
between) with the spatially flipped kernel w'[u] = w[k - 1 - u], padded by k - 1 - pad_before
before and by whatever makes the output length right after. So the loader emits two IR nodes:

    zero_insert (this module)  ->  conv2d (fixnet/ops/conv.py, explicit padding)

In int8 the gaps are filled with the input's zero point (exactly real 0.0) and the padding too
(int16: 0, the zero point of every int16 tensor),
so the integer arithmetic is that of the verified conv2d kernel and oracle, with its
quantization, overflow proof, bias correction and BatchNorm folding; zero_insert keeps the
input's scale and zero point (fixnet.quant.quantizer.SAME_QPARAMS_OPS).

Output length and padding follow Keras and TensorFlow (``tf.nn.conv_transpose``), see
``transpose_axis``.
"""
import numpy as np

from .. import oracle
from ..step import Step
from .base import Op, register
from .conv import as_nhwc_shape
from .resize import as_nhwc, check_same_type, spatial_input


def transpose_axis(size, kernel, stride, padding, output_padding=None):
    """Output length of a transposed convolution along one axis, and the (before, after)
    padding of the equivalent stride-1 correlation over the zero-inserted input.

    size: input length >= 1; kernel, stride >= 1; padding "valid" or "same"; output_padding
    None or 0 <= output_padding < stride. The output length is Keras's (tf.keras 2
    ``deconv_output_length``, Keras 3 ``compute_conv_transpose_output_shape``): valid
    size * stride + max(kernel - stride, 0), same size * stride, or with output_padding
    (size - 1) * stride + kernel - 2 * (kernel // 2 if same else 0) + output_padding.
    TensorFlow then pads the forward convolution of that length as usual: valid 0, same
    max((size - 1) * stride + kernel - out, 0) // 2 before. Raises ValueError for a
    configuration TensorFlow refuses."""
    size, kernel, stride = int(size), int(kernel), int(stride)
    if size < 1 or kernel < 1 or stride < 1:
        raise ValueError(f"length {size}, kernel {kernel}, stride {stride} must be >= 1")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding '{padding}' is not supported (valid or same)")
    if output_padding is None:
        out = size * stride + (max(kernel - stride, 0) if padding == "valid" else 0)
    else:
        op = int(output_padding)
        if not 0 <= op < stride:
            raise ValueError(f"output_padding {op} must be >= 0 and smaller than the stride {stride}")
        out = (size - 1) * stride + kernel - 2 * (kernel // 2 if padding == "same" else 0) + op
    if padding == "same":
        forward = -(-out // stride)
        before = max((size - 1) * stride + kernel - out, 0) // 2
    else:
        forward = (out - kernel) // stride + 1 if out >= kernel else 0
        before = 0
    if forward != size:
        raise ValueError(f"output length {out} does not convolve back to the input length {size}")
    pad_before = kernel - 1 - before
    dilated = (size - 1) * stride + 1
    pad_after = out + kernel - 1 - dilated - pad_before
    if pad_before < 0 or pad_after < 0:
        raise ValueError(f"kernel {kernel}, stride {stride}, padding '{padding}' needs cropping")
    return out, (pad_before, pad_after)


def as_correlation_kernel(kernel):
    """Keras's transposed-convolution kernel [KH, KW, Cout, Cin] -> the Conv2D kernel
    [KH, KW, Cin, Cout] of the equivalent correlation: flipped in space, channels swapped."""
    return np.ascontiguousarray(np.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)))


def plan(in_lengths, kernel, strides, padding, output_padding=None):
    """The two IR nodes of a rank-1 or rank-2 transposed convolution.

    in_lengths: (L,) or (H, W); kernel: Keras's [K, Cout, Cin] or [KH, KW, Cout, Cin];
    strides, output_padding: per axis (output_padding None or a tuple with None entries).
    Returns (zero_insert_strides or None when every stride is 1, conv2d attrs, conv2d kernel
    [KH, KW, Cin, Cout]), 1D cases as H = 1. Raises ValueError for a configuration TensorFlow
    refuses or fixnet cannot run."""
    rank = len(in_lengths)
    kernel = np.asarray(kernel)
    if rank not in (1, 2) or kernel.ndim != rank + 2:
        raise ValueError(f"kernel of shape {kernel.shape} for a rank-{rank} input")
    ops = (None,) * rank if output_padding is None else tuple(output_padding)
    pads = [transpose_axis(in_lengths[i], kernel.shape[i], strides[i], padding, ops[i])[1]
            for i in range(rank)]
    strides = tuple(int(v) for v in strides)
    if rank == 1:
        kernel, strides, pads = kernel[None], (1,) + strides, [(0, 0)] + pads
    attrs = {"rank": rank, "kernel_size": tuple(kernel.shape[:2]), "strides": (1, 1),
             "dilation": (1, 1), "padding": tuple(tuple(p) for p in pads), "groups": 1}
    return (None if strides == (1, 1) else strides), attrs, as_correlation_kernel(kernel)


@register
class ZeroInsert(Op):
    """attrs: rank, strides = (stride_h, stride_w) (stride_h = 1 for rank 1). Output
    ((H - 1) * stride_h + 1, (W - 1) * stride_w + 1, C), the input at every stride-th
    position and real 0.0 between."""
    name = "zero_insert"

    def infer_shapes(self, node, in_shapes):
        h, w, c = spatial_input(node, in_shapes[0])
        sh, sw = node.attrs["strides"]
        oh, ow = (h - 1) * sh + 1, (w - 1) * sw + 1
        return [(ow, c) if node.attrs["rank"] == 1 else (oh, ow, c)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        (out,) = self.infer_shapes(node, [x.shape[1:]])
        y = np.zeros((x.shape[0],) + as_nhwc_shape(out, node.attrs["rank"]))
        sh, sw = node.attrs["strides"]
        y[:, ::sh, ::sw] = as_nhwc(node, x)
        return [y.reshape((x.shape[0],) + tuple(out))]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0])]

    def quantize(self, node, q):
        return ZeroInsertStep(node.name, node.layer, node.inputs, node.outputs,
                              node.attrs["strides"], q.qparams(node.inputs[0]).zero_point,
                              as_nhwc_shape(q.shape(node.inputs[0]), node.attrs["rank"]))


class ZeroInsertStep(Step):
    """Zero insertion: the gaps are filled with the zero point once, at bind, then each run
    copies the input to every stride-th position (so the memory plan gives the output memory
    of its own: persistent_outputs)."""
    op = "zero_insert"
    persistent_outputs = True

    def __init__(self, name, layer, inputs, outputs, strides, value, nhwc_in):
        super().__init__(name, layer, inputs, outputs)
        self.strides = tuple(int(v) for v in strides)
        self.value = int(value)
        self.nhwc_in = tuple(int(v) for v in nhwc_in)

    def bind(self, bufs):
        (sh, sw), (h, w, c) = self.strides, self.nhwc_in
        x = bufs[self.inputs[0]].reshape((-1, h, w, c))
        out = bufs[self.outputs[0]]
        y = out.reshape((-1, (h - 1) * sh + 1, (w - 1) * sw + 1, c))
        if x.shape[0] != y.shape[0] or not out.flags.c_contiguous:    # reshape must be a view
            raise ValueError(f"{self.name}: buffers of {x.shape} and {out.shape} do not fit")
        check_same_type(self.name, x, y)
        if y.dtype == np.int16 and self.value != 0:
            raise ValueError(f"{self.name}: value {self.value}: int16 tensors are symmetric, "
                             f"their zero point is 0")
        y.fill(self.value)
        dst = y[:, ::sh, ::sw]
        return lambda: np.copyto(dst, x)

    def oracle(self, ins):
        x4 = ins[0].reshape((-1,) + self.nhwc_in)
        return [oracle.zero_insert(x4, *self.strides, self.value)]

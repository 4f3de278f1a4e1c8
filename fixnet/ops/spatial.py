"""Window geometry shared by convolutions and pooling, with TensorFlow's padding rules, and the
float window gather the float references use.

All shapes are NHWC without batch: (H, W, C). A 1D layer is the 2D case with H = 1.
"""
import math

import numpy as np


def out_size_and_pads(size, kernel, stride, dilation, padding):
    """Output length and (pad_before, pad_after) along one axis.

    padding: "valid", "same" (TensorFlow: the odd extra pixel goes after, i.e. bottom/right),
    "causal" (all padding before), or an explicit (before, after) pair.
    """
    span = (kernel - 1) * dilation + 1
    if size is None:
        # an axis of any length (a None dimension): the output length is any too; the pads
        # are known unless "same" padding at a stride depends on the length (then None:
        # the float reference computes them per run, int8 needs a fixed length there)
        if padding == "valid":
            return None, (0, 0)
        if padding == "same":
            total = span - 1
            return None, ((total // 2, total - total // 2) if stride == 1 else (None, None))
        if padding == "causal":
            return None, (span - 1, 0)
        return None, tuple(padding)
    if padding == "valid":
        before = after = 0
    elif padding == "same":
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + span - size, 0)
        before, after = total // 2, total - total // 2
    elif padding == "causal":
        before, after = span - 1, 0
    else:
        before, after = padding
    out = (size + before + after - span) // stride + 1
    if out < 1:
        raise ValueError(f"window of {span} does not fit an input of {size} (+{before}+{after} padding)")
    return out, (before, after)


def geometry(in_hw, kernel, strides, dilation, padding):
    """(out_h, out_w, (top, bottom), (left, right)) for a 2D window op. ``padding`` is one
    rule for both axes ("valid", "same", "causal") or a pair of per-axis rules/(before, after)."""
    per_axis = (padding, padding) if isinstance(padding, str) else padding
    oh, ph = out_size_and_pads(in_hw[0], kernel[0], strides[0], dilation[0], per_axis[0])
    ow, pw = out_size_and_pads(in_hw[1], kernel[1], strides[1], dilation[1], per_axis[1])
    return oh, ow, ph, pw


def windows(x, kernel, strides, dilation, pads, fill):
    """Gather every window of a float NHWC batch: returns [N, OH, OW, KH, KW, C].
    Positions outside the input hold ``fill``."""
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dilation
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    v = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(1, 2))
    # v: [N, H', W', C, span_h, span_w] -> dilate, stride, move C last
    v = v[:, ::sh, ::sw, :, ::dh, ::dw]
    oh = (xp.shape[1] - span_h) // sh + 1
    ow = (xp.shape[2] - span_w) // sw + 1
    return np.moveaxis(v[:, :oh, :ow], 3, 5)

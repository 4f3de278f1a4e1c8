"""Bias correction: remove the mean output shift that rounding a layer's weights to int8 causes.

For a dense/conv layer with float kernel W and int8 reconstruction W' = w_q * scale, the output
error for an input x is (W' - W) x; over the calibration data its mean is (W' - W) E[x], with
E[x] the mean of the layer's float input (per channel from calibration, per element in data-free
mode; the layer is run on it, so zero padding counts). That shift is subtracted from the
layer's int32 bias, in bias codes
(input_scale * weight_scale[c]), per output channel, at the scales the layer was quantized
with (a channel widened for its bias, see qparams.quantize_channels, is corrected in codes of
its widened scale). The bias stays within int32 and each channel's overflow proof (which reads
the adjusted bias) still has to hold, or that channel's correction is dropped.
"""
import copy

import numpy as np

from .. import layouts
from ..lengths import ANY_LENGTH
from ..ops import op_for
from .qparams import round_half_away

CORRECTED_OPS = ("dense", "conv2d", "depthwise_conv2d")


def mean_output_shift(node, mean_input, input_shape, w_q, w_scale):
    """Per output channel, the mean over output positions of (W' - W) applied to the mean input
    (real units; per channel or per element, broadcast to ``input_shape``, so that padding
    counts as the zeros it is); W' = w_q * w_scale are the weight rows as quantized."""
    rows = w_q.astype(np.float64) * w_scale.reshape((-1,) + (1,) * (w_q.ndim - 1))
    diff = copy.copy(node)
    kernel = node.weights["kernel"]
    diff.weights = {"kernel": layouts.keras_from_rows(node.op, rows).reshape(kernel.shape)
                    - np.asarray(kernel, np.float64)}
    diff.attrs = dict(node.attrs, clamp=None)
    # a dimension of any length is taken as ANY_LENGTH steps: the shift of a padded layer
    # then weighs its edges as such a sequence does (with no padding the length is no matter)
    shape = tuple(ANY_LENGTH if d is None else d for d in input_shape)
    x = np.broadcast_to(np.asarray(mean_input, np.float64), shape)[None]
    (shift,) = op_for(diff).run_float(diff, [x])
    return shift.reshape(-1, shift.shape[-1]).mean(axis=0)


def correct_bias(node, step, q, mean_input):
    """Fold the correction of ``node``'s mean output shift into ``step``'s int32 bias (in
    place). Nothing happens for other ops or without a mean input."""
    if node.op not in CORRECTED_OPS or mean_input is None or node.name not in q.weights:
        return
    w_q, w_scale = q.weights[node.name]
    shift = mean_output_shift(node, mean_input, q.shape(node.inputs[0]), w_q, w_scale)
    bias_scale = q.qparams(node.inputs[0]).scale * w_scale
    delta = round_half_away(-shift / bias_scale).astype(np.int64)
    if not np.any(delta):
        return
    before = step.bias
    step.adjust_bias(delta)
    bound = step.overflow_bound()
    if bound is not None and not bound.proven:
        # keep each channel's proof rather than its correction
        unproven = np.asarray(bound.worst) >= 2 ** 31
        step.bias = np.where(unproven, before, step.bias).astype(np.int32)

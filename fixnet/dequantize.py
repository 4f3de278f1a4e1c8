"""The float weights an int8 network really computes with, reconstructed from its integers.

For a step with int8 weights w_q, int32 bias and per-channel fixed-point multipliers
M[c] = m0[c] * 2^(shift[c] - 31) = s_in * s_w[c] / s_out, the effective weight scale is
s_w[c] = M[c] * s_out / s_in (the multiplier's own rounding included), the weights are
w_q * s_w and the bias is (bias + x_zp * sum w_q) * s_in * s_w, undoing the zero-point fold.
"""
import numpy as np

from . import layouts


def _multiplier(m0, shift):
    return np.asarray(m0, np.float64) * np.exp2(np.asarray(shift, np.float64) - 31.0)


def weight_rows(step):
    """A weighted step's int8 weights as rows [C, K], one per output channel (fixnet.layouts)."""
    return layouts.flat_rows(layouts.rows_from_step(step.op, step.w_q))


def weighted(step):
    """True for a step with a layer's int8 weights and per-channel multipliers (dense, conv,
    depthwise, affine); not for a global average pooling's fixed weights."""
    return getattr(step, "w_q", None) is not None and hasattr(step, "m0") \
        and layouts.has_rows(step.op)


def effective_weight_scale(step, tensors):
    """Per output channel, the weight scale the step's multiplier really applies:
    M[c] * s_out / s_in (float64 [C])."""
    s_in = tensors[step.inputs[0]].qparams.scale
    s_out = tensors[step.outputs[0]].qparams.scale
    return _multiplier(step.m0, step.shift) * s_out / s_in


def zero_weight_channels(step, tensors):
    """[(channel, weight scale, real bias)] of the channels of a weighted step whose int8
    weights are all 0 while its bias is not: channels that output a constant (dead filters
    whose weight scale was widened for their bias, see qparams.quantize_channels). Derived
    from the integers alone, so it works for a model read from a .fxn file too."""
    if not weighted(step):
        return []
    rows = weight_rows(step).astype(np.int64)
    s_in = tensors[step.inputs[0]].qparams.scale
    s_w = effective_weight_scale(step, tensors)
    dead = ~rows.any(axis=1) & (step.bias != 0)          # all-zero rows: no zero-point term in bias
    return [(int(c), float(s_w[c]), float(step.bias[c]) * s_in * float(s_w[c]))
            for c in np.flatnonzero(dead)]


def step_weights(step, tensors):
    """{"kernel": ..., "bias": ...} in Keras's layout for a dense/conv/depthwise/affine step,
    or None for steps without weights."""
    if not weighted(step):
        return None
    s_in = tensors[step.inputs[0]].qparams.scale
    x_zp = tensors[step.inputs[0]].qparams.zero_point
    s_w = effective_weight_scale(step, tensors)                      # per output channel
    rows = layouts.rows_from_step(step.op, step.w_q)                 # [C, ...]
    sum_w = layouts.flat_rows(rows).astype(np.int64).sum(axis=1)
    scaled = rows.astype(np.float64) * s_w.reshape((-1,) + (1,) * (rows.ndim - 1))
    kernel = layouts.keras_from_rows(step.op, scaled, getattr(step, "depth_multiplier", 1))
    bias = (step.bias.astype(np.int64) + x_zp * sum_w) * s_in * s_w
    return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}


def dequantized_weights(qm):
    """{step name: {"kernel", "bias"}} for every step of ``qm`` that has weights."""
    out = {}
    for s in qm.steps:
        w = step_weights(s, qm.tensors)
        if w is not None:
            out[s.name] = w
    return out

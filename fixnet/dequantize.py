"""The float weights an int8 network really computes with, reconstructed from its integers.

For a step with int8 weights w_q, int32 bias and per-channel fixed-point multipliers
M[c] = m0[c] * 2^(shift[c] - 31) = s_in * s_w[c] / s_out, the effective weight scale is
s_w[c] = M[c] * s_out / s_in (the multiplier's own rounding included), the weights are
w_q * s_w and the bias is (bias + x_zp * sum w_q) * s_in * s_w, undoing the zero-point fold.
"""
import numpy as np


def _multiplier(m0, shift):
    return np.asarray(m0, np.float64) * np.exp2(np.asarray(shift, np.float64) - 31.0)


def step_weights(step, tensors):
    """{"kernel": ..., "bias": ...} in Keras's layout for a dense/conv/depthwise/affine step,
    or None for steps without weights."""
    w_q = getattr(step, "w_q", None)
    if w_q is None or not hasattr(step, "m0"):
        return None
    s_in = tensors[step.inputs[0]].qparams.scale
    x_zp = tensors[step.inputs[0]].qparams.zero_point
    s_out = tensors[step.outputs[0]].qparams.scale
    s_w = _multiplier(step.m0, step.shift) * s_out / s_in            # per output channel
    w = w_q.astype(np.float64)
    if step.op == "depthwise_conv2d":                                  # [KH, KW, C*M]
        kernel = w * s_w
        sum_w = w_q.astype(np.int64).reshape(-1, w_q.shape[-1]).sum(axis=0)
        m = getattr(step, "depth_multiplier", 1)
        kernel = kernel.reshape(w.shape[0], w.shape[1], -1, m)
    elif step.op == "affine":                                          # [C]
        kernel = w * s_w
        sum_w = w_q.astype(np.int64)
    else:                                                              # [C, ...]
        flat = w.reshape(w.shape[0], -1)
        sum_w = w_q.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)
        kernel = (flat * s_w[:, None]).reshape(w.shape)
        kernel = kernel.T if kernel.ndim == 2 else np.transpose(kernel, (1, 2, 3, 0))
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

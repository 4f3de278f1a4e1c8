"""Oracle for PReLU (learned per-element negative slopes). Its functions take x (int8 or
int16: the output has its type), alpha and one ``params`` mapping, the one the kernel
(fixnet/_kernels/_prelu.pyx) takes: exactly the keys PRELU_PARAMS; a missing or unknown key is
an error naming it."""
import numpy as np

from .core import (_act, _check_act_output_range, _check_act_zero_point, _params,
                   multiply_by_quantized_multiplier)

__all__ = ["PRELU_PARAMS", "prelu", "prelu_accumulators"]

# The keys of the params mapping (the fields of the kernel's struct, _kernels/params.pxd).
PRELU_PARAMS = ("in_zp", "pos_m0", "pos_shift", "neg_m0", "neg_shift", "out_zp", "act_min",
                "act_max")


def prelu_accumulators(x, alpha, params):
    """int64 [outer, inner]: x - in_zp where it is >= 0, (x - in_zp) * alpha elsewhere
    (params: prelu's mapping; only in_zp is read here)."""
    in_zp = _params(params, PRELU_PARAMS, "prelu")[0]
    x, dtype = _act(x, "x")
    _check_act_zero_point(in_zp, dtype, "in_zp")
    v = x - int(in_zp)
    return np.where(v >= 0, v, v * np.asarray(alpha, np.int64))


def prelu(x, alpha, params):
    """x's type [outer, inner]: clamp(out_zp + MBQM(v, pos)) for v = x - in_zp >= 0, and
    clamp(out_zp + MBQM(v * alpha, neg)) for v < 0; alpha: int8 [inner]; params: a mapping
    with exactly the keys PRELU_PARAMS (int16: zero points 0, bounds in int16)."""
    (in_zp, pos_m0, pos_shift, neg_m0, neg_shift, out_zp, act_min,
     act_max) = _params(params, PRELU_PARAMS, "prelu")
    x, dtype = _act(x, "x")
    _check_act_zero_point(in_zp, dtype, "in_zp")
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    v = x - int(in_zp)
    pos = multiply_by_quantized_multiplier(np.maximum(v, 0), pos_m0, pos_shift).astype(np.int64)
    neg = multiply_by_quantized_multiplier(np.minimum(v, 0) * np.asarray(alpha, np.int64),
                                           neg_m0, neg_shift).astype(np.int64)
    r = np.where(v >= 0, pos, neg) + int(out_zp)
    return np.clip(r, act_min, act_max).astype(dtype)

"""Oracle of affine, a per-channel scale and offset (fixnet/ops/affine.py; kernel channel_affine in fixnet/_kernels/_affine.pyx)."""
from .core import (_act, _check_act_output_range, _clamp_to, _int64, _wrap_int32,
                   multiply_by_quantized_multiplier)

__all__ = [
    "channel_affine_accumulators",
    "channel_affine",
]


def channel_affine_accumulators(x, w, bias):
    """Exact int64 accumulators of channel_affine: bias[c] + x[n, c] * w[c].

    x: int8 or int16 [N, C]; w: int8 [C]; bias: int32 [C]. Returns int64 [N, C].
    """
    x, _ = _act(x, "x")
    w = _int64(w, "w", -128, 127)
    bias = _int64(bias, "bias")
    if x.ndim != 2 or w.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
        raise ValueError(f"channel_affine: x {x.shape}, w {w.shape}, bias {bias.shape} "
                         f"must be [N, C], [C], [C]")
    return bias[None, :] + x * w[None, :]


def channel_affine(x, w, bias, m0, shift, out_zp, act_min, act_max):
    """Per-channel scale and offset (e.g. a BatchNorm that could not be folded).

    out[n, c] = clamp(out_zp + multiply_by_quantized_multiplier(bias[c] + x[n, c] * w[c],
    m0[c], shift[c]), act_min, act_max), the accumulator taken modulo 2^32 as int32.
    x: int8 or int16 [N, C] (int16: out_zp 0, bounds in int16); w: int8 [C]; bias, m0,
    shift: int32 [C]. Returns x's type [N, C].
    """
    _, dtype = _act(x, "x")
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    acc = _wrap_int32(channel_affine_accumulators(x, w, bias))
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier(acc, m0, shift),
                     act_min, act_max)

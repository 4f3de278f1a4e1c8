"""Oracle of the activation steps (fixnet/ops/activation.py): rescale (requantize) and lookup tables; kernels in fixnet/_kernels/_elementwise.pyx."""
import numpy as np

from .core import (_check_output_range, _check_zero_point, _clamp_to_int8, _int64,
                   multiply_by_quantized_multiplier)

__all__ = [
    "requantize",
    "lookup",
]


def requantize(x, in_zp, m0, shift, out_zp, act_min, act_max):
    """Move int8 data to another (scale, zero point): real factor in_scale / out_scale.

    out = clamp(out_zp + multiply_by_quantized_multiplier(x - in_zp, m0, shift),
    act_min, act_max). x: int8, any shape; in_zp, out_zp in [-128, 127]. Returns int8.
    """
    _check_zero_point(in_zp, "in_zp")
    _check_output_range(out_zp, act_min, act_max)
    x = _int64(x, "x", -128, 127)
    return _clamp_to_int8(out_zp, multiply_by_quantized_multiplier(x - in_zp, m0, shift),
                          act_min, act_max)


def lookup(x, table):
    """out = table[x + 128]: an int8 -> int8 function given as 256 entries. Returns int8."""
    table = np.asarray(table)
    if table.shape != (256,):
        raise ValueError(f"lookup: table has shape {table.shape}, expected (256,)")
    x = _int64(x, "x", -128, 127)
    return table[x + 128].astype(np.int8)

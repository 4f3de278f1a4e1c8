"""Oracle of the activation steps (fixnet/ops/activation.py): rescale (requantize) and lookup tables; kernels in fixnet/_kernels/_elementwise.pyx."""
import numpy as np

from .core import (ACTIVATION_RANGES, _check_act_output_range, _check_act_zero_point, _clamp_to,
                   _int64, multiply_by_quantized_multiplier)

__all__ = [
    "requantize",
    "lookup",
]

# Entries of a lookup table: one per code of the input's type.
TABLE_LENGTHS = {np.dtype(np.int8): 256, np.dtype(np.int16): 65536}


def _codes(x):
    """(int64 copy of x, its activation type): int16 arrays are int16 codes; any other integer
    array is int8 codes, and its values must lie in [-128, 127]."""
    dtype = np.dtype(np.int16) if np.asarray(x).dtype == np.int16 else np.dtype(np.int8)
    lo, hi = ACTIVATION_RANGES[dtype]
    return _int64(x, "x", lo, hi), dtype


def requantize(x, in_zp, m0, shift, out_zp, act_min, act_max, out_dtype=None):
    """Move codes to another (scale, zero point, type): real factor in_scale / out_scale.

    out = clamp(out_zp + multiply_by_quantized_multiplier(x - in_zp, m0, shift),
    act_min, act_max). x: int8 or int16 codes, any shape (int16 arrays are int16 codes, other
    integer arrays int8 codes); out_dtype: the output's type, int8 or int16 (default: x's):
    the one call whose input and output types may differ. in_zp follows x's type (int16: 0),
    out_zp and the bounds out's. Returns out_dtype.
    """
    x, in_dtype = _codes(x)
    out_dtype = in_dtype if out_dtype is None else np.dtype(out_dtype)
    if out_dtype not in ACTIVATION_RANGES:
        raise TypeError(f"requantize: out_dtype must be int8 or int16, not {out_dtype}")
    _check_act_zero_point(in_zp, in_dtype, "in_zp")
    _check_act_output_range(out_dtype, out_zp, act_min, act_max)
    return _clamp_to(out_dtype, out_zp, multiply_by_quantized_multiplier(x - in_zp, m0, shift),
                     act_min, act_max)


def lookup(x, table):
    """out = table[x - min]: a function of one activation type to itself, one entry per code.
    int8 x (and other integer arrays, values in [-128, 127]): 256 entries indexed by x + 128,
    int8 out; int16 x: 65536 entries indexed by x + 32768, int16 out."""
    x, dtype = _codes(x)
    table = np.asarray(table)
    if table.shape != (TABLE_LENGTHS[dtype],):
        raise ValueError(f"lookup: table has shape {table.shape}, expected "
                         f"({TABLE_LENGTHS[dtype]},) for {dtype} x")
    return table[x - ACTIVATION_RANGES[dtype][0]].astype(dtype)

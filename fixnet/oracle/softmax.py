"""Oracle of softmax (fixnet/ops/softmax.py; kernel fixnet/_kernels/_softmax.pyx)."""
import numpy as np

from .core import _int64

__all__ = [
    "softmax",
]

# int16: the longest exp table (one entry per difference max(x) - x) and the largest levels.
TABLE_16_MAX = 65536
LEVELS_16_MAX = 32767


def softmax(x, exp_table, levels=None):
    """Row-wise softmax on int8 or int16 logits.

    int8 x [N, C]: output scale 1/levels, zero point -128. exp_table: int32 [256], entry d ~
    2^K * exp(-input_scale * d), entries in [0, exp_table[0]], C * exp_table[0] < 2^31 and
    levels * exp_table[0] < 2^31. Per row: e_i = exp_table[max(x) - x_i], s = sum e_i,
    out_i = clamp((levels * e_i + s // 2) // s - 128, -128, 127), levels in 1..256 (default
    256: TFLite's scale 1/256; 255: 0 and 1 both exact). Returns int8 [N, C].

    int16 x [N, C]: output scale 1/levels, zero point 0, levels in 1..32767 (default 32767: 0
    and 1 both exact). exp_table: int32 [L], 1 <= L <= 65536, entries as above, a difference
    d >= L taking 0 (the table ends where its entries round to 0); C * exp_table[0] < 2^31
    (the int32 row sum; the numerator levels * e_i + s // 2 is not an int32).
    out_i = (levels * e_i + s // 2) // s, in [0, levels]. Returns int16 [N, C].
    """
    if np.asarray(x).dtype == np.int16:
        return _softmax16(x, exp_table, LEVELS_16_MAX if levels is None else levels)
    levels = 256 if levels is None else levels
    if not 1 <= int(levels) <= 256:
        raise ValueError(f"softmax: levels = {levels} must be in 1..256")
    levels = int(levels)
    x = _int64(x, "x", -128, 127)
    table = _int64(exp_table, "exp_table", 0)
    if x.ndim != 2:
        raise ValueError(f"softmax: x has shape {x.shape}, expected [N, C]")
    if table.shape != (256,):
        raise ValueError(f"softmax: exp_table has shape {table.shape}, expected (256,)")
    top = _check_entries(table)
    if x.shape[1] * top >= 2 ** 31 or levels * top >= 2 ** 31:
        raise ValueError("softmax: C * exp_table[0] and levels * exp_table[0] must be < 2^31")
    if x.shape[1] == 0:
        return np.zeros(x.shape, dtype=np.int8)
    e = table[x.max(axis=1, keepdims=True) - x]
    s = e.sum(axis=1, keepdims=True)
    return np.clip((levels * e + s // 2) // s - 128, -128, 127).astype(np.int8)


def _softmax16(x, exp_table, levels):
    if not 1 <= int(levels) <= LEVELS_16_MAX:
        raise ValueError(f"softmax: levels = {levels} must be in 1..{LEVELS_16_MAX} for int16")
    levels = int(levels)
    x = np.asarray(x).astype(np.int64)
    table = _int64(exp_table, "exp_table", 0)
    if x.ndim != 2:
        raise ValueError(f"softmax: x has shape {x.shape}, expected [N, C]")
    if table.ndim != 1 or not 1 <= table.shape[0] <= TABLE_16_MAX:
        raise ValueError(f"softmax: exp_table has shape {table.shape}, expected (L,) with "
                         f"1 <= L <= {TABLE_16_MAX}")
    if x.shape[1] * _check_entries(table) >= 2 ** 31:
        raise ValueError("softmax: C * exp_table[0] must be < 2^31 (the int32 row sum)")
    if x.shape[1] == 0:
        return np.zeros(x.shape, dtype=np.int16)
    d = x.max(axis=1, keepdims=True) - x
    e = np.where(d < table.shape[0], table[np.minimum(d, table.shape[0] - 1)], 0)
    s = e.sum(axis=1, keepdims=True)
    return ((levels * e + s // 2) // s).astype(np.int16)    # e <= s: in [0, levels]


def _check_entries(table):
    """exp_table[0], after checking that it is > 0 and that every entry lies in
    [0, exp_table[0]] (with C * exp_table[0] < 2^31, every row sum is then a positive int32)."""
    top = int(table[0])
    if top <= 0 or table.max() > top:
        raise ValueError("softmax: exp_table entries must lie in [0, exp_table[0]], "
                         "exp_table[0] > 0")
    return top

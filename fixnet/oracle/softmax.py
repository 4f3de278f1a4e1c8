"""Oracle of softmax (fixnet/ops/softmax.py; kernel fixnet/_kernels/_softmax.pyx)."""
import numpy as np

from .core import _int64

__all__ = [
    "softmax",
]


def softmax(x, exp_table, levels=256):
    """Row-wise softmax on int8 logits; output scale 1/levels, zero point -128.

    x: int8 [N, C]. exp_table: int32 [256], entry d ~ 2^K * exp(-input_scale * d), entries
    in [0, exp_table[0]], C * exp_table[0] < 2^31 and 256 * exp_table[0] < 2^31.
    Per row: e_i = exp_table[max(x) - x_i], s = sum e_i,
    out_i = clamp((levels * e_i + s // 2) // s - 128, -128, 127), levels in 1..256 (256:
    TFLite's scale 1/256; 255: 0 and 1 both exact). Returns int8 [N, C].
    """
    if not 1 <= int(levels) <= 256:
        raise ValueError(f"softmax: levels = {levels} must be in 1..256")
    levels = int(levels)
    x = _int64(x, "x", -128, 127)
    table = _int64(exp_table, "exp_table", 0)
    if x.ndim != 2:
        raise ValueError(f"softmax: x has shape {x.shape}, expected [N, C]")
    if table.shape != (256,):
        raise ValueError(f"softmax: exp_table has shape {table.shape}, expected (256,)")
    top = int(table[0])
    if top <= 0 or table.max() > top:
        raise ValueError("softmax: exp_table entries must lie in [0, exp_table[0]], "
                         "exp_table[0] > 0")
    if x.shape[1] * top >= 2 ** 31 or levels * top >= 2 ** 31:
        raise ValueError("softmax: C * exp_table[0] and levels * exp_table[0] must be < 2^31")
    if x.shape[1] == 0:
        return np.zeros(x.shape, dtype=np.int8)
    e = table[x.max(axis=1, keepdims=True) - x]
    s = e.sum(axis=1, keepdims=True)
    return np.clip((levels * e + s // 2) // s - 128, -128, 127).astype(np.int8)

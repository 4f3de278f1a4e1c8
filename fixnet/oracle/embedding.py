"""Oracle of embedding, an int8 row lookup (fixnet/ops/embedding.py; kernel in
fixnet/_kernels/_embedding.pyx). Ids (N, T) in, rows (N, T, C) out."""
import numpy as np

from .core import _check_zero_point, _int64

__all__ = [
    "embedding_bad_ids",
    "embedding",
]


def embedding_bad_ids(ids, ids_zp, vocab):
    """The token ids (code - ids_zp) of ``ids`` outside [0, vocab), in the order they occur
    (empty when every id has a row). ids: int8, any shape."""
    _check_zero_point(ids_zp, "ids_zp")
    k = _int64(ids, "ids", -128, 127) - int(ids_zp)
    return k[(k < 0) | (k >= int(vocab))].ravel()


def embedding(ids, ids_zp, table):
    """out[..., :] = table[ids[...] - ids_zp]: each int8 code is the token id plus ids_zp
    (ids_zp -128: code k - 128 is id k, ids 0..255), the table int8 [V, D] codes of the output.

    Raises ValueError for an id outside [0, V) (the op turns it into an InputError naming
    the layer). Returns int8 of shape ids.shape + (D,)."""
    table = np.asarray(table)
    if table.dtype != np.int8 or table.ndim != 2:
        raise ValueError(f"embedding: table must be int8 [V, D], got {table.dtype} {table.shape}")
    bad = embedding_bad_ids(ids, ids_zp, table.shape[0])
    if bad.size:
        raise ValueError(f"embedding: token id {int(bad[0])} is outside [0, {table.shape[0]})")
    k = _int64(ids, "ids", -128, 127) - int(ids_zp)
    return table[k]

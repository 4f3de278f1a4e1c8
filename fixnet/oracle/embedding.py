"""Oracle of embedding, a row lookup (fixnet/ops/embedding.py; kernel in
fixnet/_kernels/_embedding.pyx). Ids (N, T) in, rows (N, T, C) out, of one activation type:
int8 (ids: token id + ids_zp) or int16 (ids: the token ids, ids_zp 0)."""
import numpy as np

from .core import _act, _check_act_zero_point, _same_act

__all__ = [
    "embedding_bad_ids",
    "embedding",
]


def embedding_bad_ids(ids, ids_zp, vocab):
    """The token ids (code - ids_zp) of ``ids`` outside [0, vocab), in the order they occur
    (empty when every id has a row). ids: int8 (ids_zp in [-128, 127]) or int16 (ids_zp 0),
    any shape."""
    k, dtype = _act(ids, "ids")
    _check_act_zero_point(ids_zp, dtype, "ids_zp")
    k = k - int(ids_zp)
    return k[(k < 0) | (k >= int(vocab))].ravel()


def embedding(ids, ids_zp, table):
    """out[..., :] = table[ids[...] - ids_zp]: each code is the token id plus ids_zp (int8:
    ids_zp -128, code k - 128 is id k, ids 0..255; int16: ids_zp 0, the code is the id), the
    table [V, D] the output's codes, of the ids' type.

    Raises ValueError for an id outside [0, V) (the op turns it into an InputError naming
    the layer). Returns the ids' type, of shape ids.shape + (D,)."""
    table = np.asarray(table)
    if table.dtype not in (np.int8, np.int16) or table.ndim != 2:
        raise ValueError(f"embedding: table must be int8 or int16 [V, D], got {table.dtype} "
                         f"{table.shape}")
    _same_act(table.dtype, (ids, "ids"))
    bad = embedding_bad_ids(ids, ids_zp, table.shape[0])
    if bad.size:
        raise ValueError(f"embedding: token id {int(bad[0])} is outside [0, {table.shape[0]})")
    k = np.asarray(ids).astype(np.int64) - int(ids_zp)
    return table[k]

"""int8 arrays of few distinct values stored as 4-bit indices into tables of int8 codes.

Codebook and int4 weights (fixnet/quant/codebook.py) use at most 16 distinct int8 codes per
layer or per output channel; so may any int8 array, whatever made it. ``palette_form`` finds
the smallest of three forms, when one is smaller than the plain array: one table for the
whole array, or one table per slice along the first or the last axis (the output channel of
dense and conv weights [C, ...], of depthwise weights [KH, KW, C]). ``expand_palette`` turns
the stored form back into the identical int8 array, checking everything it reads.

Stored form of an int8 array of shape S with N elements, with T codes per table and the
table's ``axis`` (None: the whole array is one row of N values; an axis: the array's R =
S[axis] slices along it are the rows, each of n = N / R values in C order of the other
axes): one uint8 array, a row per table, [R, T + ceil(n / 2)] (axis None: [T + ceil(N / 2)]):
    bytes 0 .. T - 1     the table: index k stands for the int8 code in byte k (two's
                         complement), 1 <= T <= 16
    bytes T ..           the indices, two per byte: value 2i of the row in the low 4 bits of
                         byte T + i, value 2i + 1 in the high 4 bits; a row of odd length
                         ends with a 0 nibble
"""
import numpy as np

MAX_CODES = 16              # 4-bit indices


def palette_form(a):
    """(axis, stored uint8 array, T) of int8 array ``a`` in its smallest palette form, or None
    if no form is smaller than ``a`` itself (more than 16 distinct values per table, a short
    array, another dtype)."""
    if a.dtype != np.int8 or a.size < 4:
        return None
    best = None
    for axis in _axes(a):
        rows = _rows(a, axis)
        present = np.zeros((rows.shape[0], 256), bool)
        present[np.arange(rows.shape[0])[:, None], rows.astype(np.int64) + 128] = True
        t = int(present.sum(axis=1).max())
        cost = rows.shape[0] * (t + (rows.shape[1] + 1) // 2)
        if t <= MAX_CODES and cost < a.size and (best is None or cost < best[0]):
            best = (cost, axis, rows, present, t)
    if best is None:
        return None
    _, axis, rows, present, t = best
    stored = _encode(rows, present, t)
    return axis, (stored[0] if axis is None else stored), t


def _axes(a):
    """The table axes tried: the whole array, then the first and the last axis."""
    if a.ndim < 2:
        return (None,)
    return (None, 0, a.ndim - 1)


def _rows(a, axis):
    """``a`` as rows [R, n]: one row (axis None) or its slices along ``axis``."""
    if axis is None:
        return a.reshape(1, -1)
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


def _encode(rows, present, t):
    """[R, t + ceil(n / 2)] uint8: per row of int8 ``rows`` [R, n], whose distinct values are
    marked in ``present`` [R, 256] (value v at v + 128), its table (its values ascending,
    padded with its largest) and its packed indices."""
    r, n = rows.shape
    count = present.sum(axis=1)
    order = np.argsort(~present, axis=1, kind="stable")[:, :t]         # present values first
    pad = np.arange(t)[None, :] >= count[:, None]
    last = np.take_along_axis(order, np.maximum(count - 1, 0)[:, None], 1)
    table = (np.where(pad, last, order) - 128).astype(np.int8).view(np.uint8)
    rank = np.cumsum(present, axis=1) - 1                                # value -> its index
    idx = np.take_along_axis(rank, rows.astype(np.int64) + 128, 1).astype(np.uint8)
    if n % 2:
        idx = np.concatenate([idx, np.zeros((r, 1), np.uint8)], axis=1)
    return np.concatenate([table, idx[:, 0::2] | (idx[:, 1::2] << 4)], axis=1)


def stored_shape(shape, axis, t):
    """The stored uint8 array's shape for an int8 array of ``shape``, ``axis``, ``t`` codes."""
    size = int(np.prod(shape, dtype=np.int64))
    if axis is None:
        return (t + (size + 1) // 2,)
    r = shape[axis]
    return (r, t + ((size // r if r else 0) + 1) // 2)


def expand_palette(stored, axis, t, shape):
    """The int8 array of ``shape`` (C-contiguous) that ``stored`` (uint8 of stored_shape(shape,
    axis, t)) holds. Raises ValueError saying what does not fit: an index beyond its table,
    a padding nibble that is not 0."""
    size = int(np.prod(shape, dtype=np.int64))
    r = 1 if axis is None else shape[axis]
    n = size // r if r else 0
    stored = stored.reshape(r, -1)
    table = stored[:, :t].view(np.int8)
    packed = stored[:, t:]
    idx = np.stack([packed & 15, packed >> 4], axis=-1).reshape(r, -1)
    if n % 2 and np.any(idx[:, n]):
        raise ValueError("the padding nibble after a row of odd length is not 0")
    idx = idx[:, :n]
    if idx.size and int(idx.max()) >= t:
        raise ValueError(f"index {int(idx.max())} is beyond its table of {t} codes")
    values = np.take_along_axis(table, idx.astype(np.int64), 1)
    if axis is None:
        return np.ascontiguousarray(values.reshape(shape), np.int8)
    moved = (shape[axis],) + tuple(d for i, d in enumerate(shape) if i != axis)
    return np.ascontiguousarray(np.moveaxis(values.reshape(moved), 0, axis), np.int8)

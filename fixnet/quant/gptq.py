"""The arithmetic of adaptive rounding (fixnet/quant/rounding.py says what it is for): int8 codes
for float weight rows that minimise the expected squared output error e^T H e given the second
moment H of the rows' inputs (the optimal-brain-quantization update of GPTQ, Frantar et al.,
ICLR 2023). Pure NumPy on arrays: it knows nothing of layers, so the ops (a recurrent layer's
quantization) and the quantizer both use it."""
import numpy as np

from .codebook import nearest_levels
from .qparams import WEIGHT_MAX, round_half_away

MAX_INPUTS = 2048           # K above this (a K x K moment over 32 MiB): round to nearest
DAMPING = 0.01              # added to H's diagonal, relative to its mean: keeps the update stable


def round_rows_scaled(rows, scale, moment, damping=DAMPING):
    """int8 codes [C, K] for float rows [C, K] whose every element has its own ``scale``
    [C, K] (a row made of parts quantized at different scales, e.g. a recurrent layer's kernel
    and recurrent kernel rows side by side), minimising sum over rows of e^T H e with one
    H = ``moment`` [K, K] (real units). Nearest rounding when K > MAX_INPUTS."""
    rows = np.asarray(rows, np.float64)
    scale = np.asarray(scale, np.float64)
    if rows.shape[1] > MAX_INPUTS or rows.shape[1] == 0:
        return np.clip(round_half_away(rows / scale), -WEIGHT_MAX, WEIGHT_MAX)
    return _round_groups(rows[None], scale[None], np.asarray(moment, np.float64)[None], damping)[0]


def _round_groups(w, scale, h, damping, levels=None):
    """GPTQ on G groups at once: w [G, R, K] rows, scale [G, R] (per row) or [G, R, K] (per
    element), h [G, K, K]. In each group the columns are taken in order of decreasing input
    energy; each is rounded to nearest after the errors of the columns before it were
    compensated. levels: None (codes are the integers in [-127, 127]) or [G, R, L], each row's
    allowed codes, ascending (a codebook, fixnet/quant/codebook.py): the nearest of them."""
    g, r, k = w.shape
    h = np.array(h, np.float64)
    diag = np.diagonal(h, axis1=1, axis2=2).copy()                 # [G, K]
    dead = diag <= 0
    live = np.where(dead, 0.0, diag)
    n_live = np.maximum((~dead).sum(axis=1), 1)
    mean_diag = np.where(live.sum(axis=1) > 0, live.sum(axis=1) / n_live, 1.0)      # [G]
    h = np.where(dead[:, :, None] | dead[:, None, :], 0.0, h)
    idx = np.arange(k)
    h[:, idx, idx] = np.where(dead, mean_diag[:, None], diag) + damping * mean_diag[:, None]
    order = np.argsort(-h[:, idx, idx], axis=1, kind="stable")       # [G, K]
    h = np.take_along_axis(np.take_along_axis(h, order[:, :, None], axis=1), order[:, None, :], axis=2)
    w = np.take_along_axis(w, order[:, None, :], axis=2).copy()
    if scale.ndim == 3:
        scale = np.take_along_axis(scale, order[:, None, :], axis=2)
    try:
        # upper Cholesky factor of H^-1: its row i holds the update of the later columns
        u = np.swapaxes(np.linalg.cholesky(np.linalg.inv(h)), 1, 2)
    except np.linalg.LinAlgError:
        u = None
    q = np.empty_like(w)
    for i in range(k):
        si = scale[:, :, i] if scale.ndim == 3 else scale
        if levels is None:
            qi = np.clip(round_half_away(w[:, :, i] / si), -WEIGHT_MAX, WEIGHT_MAX)
        else:
            qi = nearest_levels((w[:, :, i] / si)[:, :, None], levels)[:, :, 0]
        q[:, :, i] = qi
        if u is not None and i + 1 < k:
            err = (w[:, :, i] - qi * si) / u[:, i, i][:, None]                # [G, R]
            w[:, :, i + 1:] -= err[:, :, None] * u[:, i, None, i + 1:]
    out = np.empty_like(q)
    np.put_along_axis(out, np.broadcast_to(order[:, None, :], q.shape), q, axis=2)
    return out

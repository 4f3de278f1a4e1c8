"""Calibration: run the float reference on sample inputs and record each tensor's range.
Memory stays bounded: only running min/max per tensor is kept, batches stream through."""
import numpy as np

from ..errors import CalibrationError
from .. import reference

DEFAULT_BATCH = 128


def iter_batches(data, graph, batch_size=DEFAULT_BATCH):
    """Yield lists of float arrays (one per model input) from calibration ``data``.

    data: an array of samples (models with one input); a list/tuple with one array per input;
    or any iterable of batches (each an array, or a list of arrays for several inputs).
    """
    n_in = len(graph.inputs)
    shapes = [graph.shapes[t] for t in graph.inputs]

    def as_inputs(batch, where):
        parts = list(batch) if isinstance(batch, (list, tuple)) and n_in > 1 else [batch]
        if len(parts) != n_in:
            raise CalibrationError(f"calibration {where}: model takes {n_in} inputs, got {len(parts)}")
        out = []
        for t, s, p in zip(graph.inputs, shapes, parts):
            try:
                p = np.asarray(p, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise CalibrationError(f"calibration {where}: input '{t}' is not numeric ({e})") from None
            if p.shape[1:] != tuple(s) or p.ndim != len(s) + 1:
                raise CalibrationError(f"calibration {where}: input '{t}' has shape {p.shape}, "
                                       f"expected (batch, {', '.join(map(str, s))})")
            if not np.all(np.isfinite(p)):
                raise CalibrationError(f"calibration {where}: input '{t}' holds NaN or infinity")
            out.append(p)
        return out

    if isinstance(data, np.ndarray) or (n_in > 1 and isinstance(data, (list, tuple))
                                        and all(isinstance(d, np.ndarray) for d in data)
                                        and len(data) == n_in
                                        and all(d.ndim == len(s) + 1 for d, s in zip(data, shapes))):
        full = as_inputs(data, "data")
        for i in range(0, full[0].shape[0], batch_size):
            yield [p[i:i + batch_size] for p in full]
        return
    try:
        it = iter(data)
    except TypeError:
        raise CalibrationError(f"calibration data of type {type(data).__name__} is neither an array "
                               "nor an iterable of batches") from None
    for k, batch in enumerate(it):
        yield as_inputs(batch, f"batch {k}")


class MinMaxObserver:
    """Running min and max of every tensor."""

    def __init__(self):
        self.ranges = {}
        self.samples = 0

    def __call__(self, tensor, value):
        if value.size == 0:
            return
        lo, hi = float(value.min()), float(value.max())
        if tensor in self.ranges:
            a, b = self.ranges[tensor]
            self.ranges[tensor] = (min(a, lo), max(b, hi))
        else:
            self.ranges[tensor] = (lo, hi)


def collect_ranges(graph, data, batch_size=DEFAULT_BATCH):
    """{tensor: (min, max)} over all calibration samples, and the sample count."""
    obs = MinMaxObserver()
    for xs in iter_batches(data, graph, batch_size):
        obs.samples += xs[0].shape[0]
        reference.run(graph, xs, observe=obs)
    if obs.samples == 0:
        raise CalibrationError("calibration data is empty: pass at least one sample")
    return obs.ranges, obs.samples

"""Calibration: run the float reference once over sample inputs and keep, per tensor, a
fixed-size histogram (fixnet.quant.histogram) and its mean; the ranges are then chosen from the
histograms by a calibration method (fixnet.quant.ranges). Memory stays bounded: batches stream
through and no activation is stored."""
import math
import sys
import time

import numpy as np

from ..errors import CalibrationError
from .. import reference
from .histogram import DEFAULT_BINS, StreamingHistogram
from .ranges import DEFAULT_PERCENTILE, choose_range, minmax_range
from .rounding import SecondMoment, VectorMoment

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
            if p.ndim != len(s) + 1 or any(w is not None and d != w   # None: any length
                                           for d, w in zip(p.shape[1:], s)):
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
        full = [data] if isinstance(data, np.ndarray) else list(data)
        if n_in > 1 and len(full) != n_in:
            as_inputs(full, "data")                        # raises: wrong number of inputs
        n = full[0].shape[0] if full[0].ndim else 0
        if any(p.shape[:1] != (n,) for p in full):
            raise CalibrationError("calibration data: the inputs hold different numbers of samples "
                                   f"({', '.join(str(p.shape[0]) for p in full)})")
        if n == 0:
            as_inputs(full if n_in > 1 else full[0], "data")   # shape errors still name the input
        for i in range(0, n, batch_size):                  # converted batch by batch: no float64 copy
            yield as_inputs([p[i:i + batch_size] for p in full] if n_in > 1 else full[0][i:i + batch_size],
                            f"data[{i}:{i + batch_size}]")
        return
    try:
        it = iter(data)
    except TypeError:
        raise CalibrationError(f"calibration data of type {type(data).__name__} is neither an array "
                               "nor an iterable of batches") from None
    for k, batch in enumerate(it):
        yield as_inputs(batch, f"batch {k}")


class TensorStats:
    """What calibration keeps of one tensor: a fixed-size histogram of its values and the sum of
    each channel (last axis) over samples and positions, for the mean input that bias correction
    needs. Memory: ``nbins`` + channels numbers, however many samples stream through."""

    __slots__ = ("hist", "sum", "count")

    def __init__(self, nbins):
        self.hist = StreamingHistogram(nbins)
        self.sum = None
        self.count = 0

    def add(self, value):
        self.hist.add(value)
        rows = value.reshape(-1, value.shape[-1]) if value.ndim > 1 else value.reshape(-1, 1)
        s = rows.sum(axis=0)
        self.sum = s if self.sum is None else self.sum + s
        self.count += rows.shape[0]

    @property
    def mean(self):
        """Mean of each channel (last axis) over samples and positions."""
        return self.sum / max(self.count, 1)

    @property
    def range(self):
        return self.hist.min, self.hist.max


class SoftmaxWindow:
    """What the int8 range of a softmax's input must hold. A logit more than
    D = ln(512 (C - 1)) below its row's largest adds less than exp(-D) to the row's sum, and the
    C - 1 of them together less than half a step of the int8 probabilities (1/256 or 1/255):
    clipping a logit up to (row max - D) moves no probability by more than that.
    Keeps the lowest per-row lower bound max(row min, row max - D), and the largest logit as the
    upper bound. (Clipping the winner down to second largest + D would be exact on the
    calibration rows too, but a row that was not seen, with a larger winner and a second logit
    within D of it, then loses probability from its largest output: on layers_activations'
    softmax_layer one such test row cost 1.5 dB of output SQNR.)"""

    __slots__ = ("lo", "hi")

    def __init__(self):
        self.lo, self.hi = math.inf, -math.inf

    @staticmethod
    def depth(classes):
        return math.log(2.0 * 256.0 * max(classes - 1, 1))

    def add(self, value):
        rows = value.reshape(-1, value.shape[-1])
        if rows.shape[1] < 2:
            lower = upper = rows[:, 0]
        else:
            upper = rows.max(axis=1)
            lower = np.maximum(rows.min(axis=1), upper - self.depth(rows.shape[1]))
        self.lo = min(self.lo, float(lower.min()))
        self.hi = max(self.hi, float(upper.max()))


class InputLattice:
    """Whether a model input's calibration values all lie on a uniform grid k * step (digit
    pixels k/16, 8-bit images k/255, integer features) with 0 on it, and if so the int8 range
    that represents every grid point exactly. Quantizing such an input to a scale of step/m
    (m a whole number) adds no rounding error at the input, where min/max's scale would round
    most values. Memory stays bounded: at most ``cap`` distinct values are kept, after that
    (or on a value off any grid) the input falls back to its min/max range."""

    def __init__(self, cap=4096):
        self.cap = cap
        self.values = np.empty(0, np.float64)
        self.alive = True

    def add(self, value):
        if not self.alive:
            return
        u = np.unique(np.asarray(value, np.float64))
        if not np.all(np.isfinite(u)):
            self.alive = False
            return
        self.values = np.union1d(self.values, u)
        if self.values.size > self.cap:
            self.alive, self.values = False, np.empty(0, np.float64)

    def range(self):
        """(lo, hi) whose int8 grid holds every seen value exactly, or None."""
        v = self.values
        if not self.alive or v.size < 3:
            return None
        step = float(np.min(np.diff(v)))
        if step <= 0:
            return None
        k = v / step
        if np.max(np.abs(k - np.round(k))) > 1e-3:      # not one grid with 0 on it
            return None
        k_lo, k_hi = min(0, int(np.round(k[0]))), max(0, int(np.round(k[-1])))
        m = 255 // (k_hi - k_lo) if k_hi > k_lo else 0
        if m < 1:                                         # more than 256 grid points
            return None
        scale = step / m
        return k_lo * step, k_lo * step + 255 * scale


class Observer:
    """Feeds every tensor the float reference produces into its TensorStats; the input of every
    softmax (read by nothing else) into a SoftmaxWindow; and, with ``moments``, the input of
    every dense/conv layer into the layer's SecondMoment (for adaptive weight rounding)."""

    def __init__(self, graph, nbins=DEFAULT_BINS, moments=False):
        self.nbins = nbins
        self.stats = {}
        self.windows = {}
        self.moments = {}
        self.samples = 0
        self.readers = {}
        self.lattices = {t: InputLattice() for t in graph.inputs}
        users = graph.consumers()
        self.producers = {t: n for n in graph.nodes for t in n.outputs}
        for n in graph.nodes:
            if n.op == "softmax" and len(users.get(n.inputs[0], [])) == 1 \
                    and n.inputs[0] not in graph.outputs:
                self.windows[n.inputs[0]] = SoftmaxWindow()
            if moments and SecondMoment.wanted(n):
                self.readers.setdefault(n.inputs[0], []).append(n)
                self.moments[n.name] = SecondMoment(n)
        # a recurrent layer shows its step inputs as "<node>/xh" (ops/recurrent.py)
        self.vectors = {f"{n.name}/xh": n.name for n in graph.nodes if n.op == "rnn"}
        if moments:
            for n in graph.nodes:
                if n.op == "rnn":
                    self.moments[n.name] = VectorMoment()

    def __call__(self, tensor, value):
        if value.size == 0:
            return
        if tensor in self.vectors:
            m = self.moments.get(self.vectors[tensor])
            if m is not None:
                m.add(value)
            return
        if not np.all(np.isfinite(value)):
            # finite inputs (checked) made a NaN or infinity: the weights that produced it are
            # not finite, or so large that float64 overflows
            producer = self.producers.get(tensor)
            who = producer.describe() if producer is not None else f"tensor '{tensor}'"
            raise CalibrationError(f"{who}: its output on the calibration data holds NaN or "
                                   "infinity (are its weights finite and of sensible size?)")
        st = self.stats.get(tensor)
        if st is None:
            st = self.stats[tensor] = TensorStats(self.nbins)
        st.add(value)
        if tensor in self.lattices:
            self.lattices[tensor].add(value)
        if tensor in self.windows:
            self.windows[tensor].add(value)
        for n in self.readers.get(tensor, ()):
            self.moments[n.name].add(n, value)

    @property
    def ranges(self):
        return {t: st.range for t, st in self.stats.items()}


def _length(data, graph):
    """Number of samples in ``data`` if it can be known without consuming it, else None."""
    n_in = len(graph.inputs)
    if isinstance(data, np.ndarray):
        return data.shape[0] if data.ndim else None
    if isinstance(data, (list, tuple)) and data:
        first = data[0]
        if n_in > 1 and len(data) == n_in and all(isinstance(d, np.ndarray) for d in data) \
                and data[0].ndim == len(graph.shapes[graph.inputs[0]]) + 1:
            return first.shape[0]
        try:
            return sum(len(b[0]) if (n_in > 1 and isinstance(b, (list, tuple))) else len(b)
                       for b in data)
        except TypeError:
            return None
    return None


class _Progress:
    """A rich progress bar that appears only for runs longer than ``delay`` seconds, on a
    terminal (or always/never with progress=True/False)."""

    def __init__(self, mode, total, description="calibrating", delay=1.0):
        self.mode, self.total, self.description, self.delay = mode, total, description, delay
        self.start = time.monotonic()
        self.bar = None
        self.task = None
        self.done = 0

    def _enabled(self):
        if self.mode is False or self.mode is None:
            return False
        if self.mode is True:
            return True
        return sys.stderr.isatty() and time.monotonic() - self.start >= self.delay

    def advance(self, n):
        self.done += n
        if self.bar is None and self._enabled():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("samples"), TimeElapsedColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total, completed=self.done)
        elif self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def collect_statistics(graph, data, batch_size=DEFAULT_BATCH, nbins=DEFAULT_BINS, progress="auto",
                       second_moments=False):
    """One pass of the float reference over ``data`` (see iter_batches; a generator is consumed
    once). Returns the Observer: ``stats`` {tensor: TensorStats}, ``samples``, and with
    ``second_moments`` the ``moments`` {node name: SecondMoment} of dense/conv inputs.

    progress: "auto" (a progress bar on a terminal for runs over a second), True, or False.
    """
    obs = Observer(graph, nbins, moments=second_moments)
    bar = _Progress(progress, _length(data, graph))
    try:
        for xs in iter_batches(data, graph, batch_size):
            n = xs[0].shape[0]
            obs.samples += n
            reference.run(graph, xs, observe=obs)
            bar.advance(n)
    finally:
        bar.close()
    if obs.samples == 0:
        raise CalibrationError("calibration data is empty: pass at least one sample")
    return obs


INPUT_MARGIN = 0.05


def widened_input_range(lo_hi, margin=INPUT_MARGIN):
    """A model input's min/max range widened by ``margin`` of its width on each side that is
    not 0, for inputs that recurrent layers read: the calibration set's extremes are a
    sample's, new data go beyond them, and a value clipped there enters the state for every
    later step (on rnn_sensor 0.3% of the test values were beyond; clipping them cost 7 dB
    of output SQNR, the 10% coarser grid 0.8 dB). Other inputs keep min/max: there the
    margin cost more than it saved (layers_activations: 5 dB on one output). An input that
    never goes below (above) 0 keeps 0 as its bound."""
    lo, hi = lo_hi
    w = (hi - lo) * margin
    return (lo - w if lo < 0 else lo), (hi + w if hi > 0 else hi)


def calibrated_ranges(obs, method, percentile=DEFAULT_PERCENTILE, skip=(), softmax_window=True,
                      widen=()):
    """{tensor: (lo, hi)} chosen by ``method`` from each tensor's statistics in the Observer
    ``obs``. Tensors in ``skip`` keep their min/max; those in ``widen`` (model inputs that
    recurrent layers read) get it widened by widened_input_range, except with minmax. A
    softmax's input (with softmax_window)
    gets the range its rows' SoftmaxWindow bounds need, at most its min/max. A model input whose
    values lie on a grid (see InputLattice) gets, except with minmax, the range that represents them exactly."""
    out = {}
    for t, st in obs.stats.items():
        grid = obs.lattices[t].range() if t in obs.lattices and method != "minmax" else None
        if grid is not None:
            out[t] = grid
        elif t in widen and method != "minmax":
            out[t] = widened_input_range(minmax_range(st.hist))
        elif t in skip or method == "minmax":
            out[t] = minmax_range(st.hist)
        elif softmax_window and t in obs.windows:
            w = obs.windows[t]
            out[t] = (max(w.lo, st.hist.min), min(w.hi, st.hist.max))
        else:
            out[t] = choose_range(st.hist, method, percentile)
    return out

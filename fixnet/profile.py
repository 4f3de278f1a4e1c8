"""Where the time of one int8 pass goes, step by step: what ``qm.profile(x)`` returns and
``fixnet bench MODEL --profile`` prints (TensorFlow Lite's ``benchmark_model
--enable_op_profiling`` gives the same view of a .tflite model).

How it is measured (fixnet/runtime.py, QuantizedModel.profile; the clock is in
fixnet/_kernels/_pass.pyx, Arena.time_steps): the model's steps are bound to an arena of their
own in which no two tensors share memory, and the real pass runs once on ``x``, so every
buffer then holds what that pass computed from ``x`` and each kernel call can run again alone
on its real input. Then, in each of ``runs`` rounds, every call is timed alone (split over
threads as the pass with ``num_threads`` splits it), one after the other, and then the whole
pass; the rounds interleave the steps so that drift of the machine hits each step alike. A
step's time is the median of its rounds. The sum of the steps' medians against the median of
the whole pass shows what the pass adds between steps (nothing but a C loop: the difference
is noise and cache effects, either sign).

Rows: one per kernel call, in the order the pass runs them. A step that is a view of its input
(``Step.alias``: reshape, flatten) runs no kernel and has no row; ``Profile.views`` names those.
MACs come from fixnet.cost.step_macs (the count ``fixnet inspect`` and ``fixnet bench`` use),
for the whole batch; GMAC/s is MACs / time.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .cost import step_macs


@dataclass
class StepTime:
    """One kernel call of the pass.

    index: the step's position in ``qm.steps``; name, layer, op: the step's node name, Keras
    layer and op (``Step.op``); shape: its first output's shape, batch axis included; macs:
    multiply-accumulates of the call (the whole batch; 0 for ops without them); time_us:
    median microseconds of the call run alone; share: percent of the sum of every call's
    median; parts: how many parts the pass splits the call into over threads (1: the
    calling thread alone)."""
    index: int
    name: str
    layer: str
    op: str
    shape: Tuple[int, ...]
    macs: int
    time_us: float
    share: float
    parts: int = 1

    @property
    def gmacs_per_s(self) -> Optional[float]:
        """Multiply-accumulates per second / 1e9, or None for a step without MACs."""
        return self.macs / (self.time_us * 1e3) if self.macs and self.time_us > 0 else None

    def to_dict(self):
        return {"index": self.index, "name": self.name, "layer": self.layer, "op": self.op,
                "shape": list(self.shape), "macs": int(self.macs), "time_us": self.time_us,
                "share_pct": self.share, "gmacs_per_s": self.gmacs_per_s, "parts": self.parts}


@dataclass
class Profile:
    """The time per step of one pass of a QuantizedModel (see the module docstring).

    ``print(profile)`` (or ``profile.table()``) for the table, ``profile.to_dict()`` for
    records; ``steps`` holds a StepTime per kernel call. pass_us: median microseconds of the
    whole pass (the kernel calls in their C loop: no input quantization or output stage);
    runs: the timed rounds; views: names of the steps that are views of their input (no
    kernel, no row)."""
    model: str
    batch: int
    num_threads: int
    runs: int
    pass_us: float
    steps: List[StepTime] = field(default_factory=list)
    views: List[str] = field(default_factory=list)
    lengths: Tuple[int, ...] = ()
    isa: str = ""

    @property
    def steps_us(self) -> float:
        """The sum of the steps' median times, in microseconds."""
        return float(sum(s.time_us for s in self.steps))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the pass (the whole batch)."""
        return int(sum(s.macs for s in self.steps))

    def to_dict(self):
        return {"model": self.model, "batch": self.batch, "lengths": list(self.lengths) or None,
                "num_threads": self.num_threads, "runs": self.runs, "isa": self.isa,
                "pass_us": self.pass_us, "steps_us": self.steps_us, "macs": self.macs,
                "steps": [s.to_dict() for s in self.steps], "views": list(self.views)}

    def table(self) -> str:
        from .tables import render_table

        split = self.num_threads > 1
        columns = ["#", "layer", "op", "output shape", "MACs", "time, µs", "share",
                   "GMAC/s"] + (["parts"] if split else [])
        rows = []
        for s in self.steps:
            rate = s.gmacs_per_s
            rows.append([str(s.index), s.layer, s.op, "x".join(map(str, s.shape)),
                         f"{s.macs:,}" if s.macs else "-", _us(s.time_us), f"{s.share:.1f}%",
                         f"{rate:.3g}" if rate is not None else "-"]
                        + ([str(s.parts)] if split else []))
        total = self.steps_us
        rows.append(["", "total (sum of steps)", "", "", f"{self.macs:,}", _us(total),
                     "100.0%", f"{self.macs / (total * 1e3):.3g}" if self.macs and total > 0
                     else "-"] + ([""] if split else []))
        length = f", length {', '.join(map(str, self.lengths))}" if self.lengths else ""
        title = (f"profile of {self.model}: batch {self.batch}{length}, num_threads "
                 f"{self.num_threads}, median of {self.runs} rounds"
                 + (f", kernels {self.isa}" if self.isa else ""))
        lines = [render_table(title, columns, rows, min_width=0)]
        diff = self.pass_us - total
        lines.append(f"whole pass: {_us(self.pass_us)} µs (median); sum of the steps run alone: "
                     f"{_us(total)} µs; pass - sum: {diff:+.3g} µs "
                     f"({diff / max(len(self.steps), 1):+.3g} µs per step)")
        if self.views:
            lines.append(f"{len(self.views)} step(s) are views of their input and run no kernel "
                         f"(not listed): {', '.join(self.views)}")
        return "\n".join(lines)

    __str__ = table


def _us(v):
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def make_profile(model, steps, shapes, batch, ns, parts, num_threads, lengths=(), isa=""):
    """The Profile of one run of QuantizedModel.profile.

    steps: the run's steps (QuantizedModel.steps_for), in order; shapes: {tensor: shape
    without batch} of the run; ns: int64 [rounds, calls + 1], Arena.time_steps's clock (one
    column per kernel call, i.e. per step that is not a view, then the whole pass); parts:
    per call, the parts the pass splits it into."""
    medians = np.median(ns, axis=0) / 1e3
    total = float(medians[:-1].sum())
    rows, views = [], []
    calls = iter(range(ns.shape[1] - 1))
    for index, s in enumerate(steps):
        if s.alias:
            views.append(s.layer or s.name)
            continue
        k = next(calls)
        out = shapes[s.outputs[0]]
        per_sample = step_macs(s, out, shapes[s.inputs[0]] if s.inputs else None)
        rows.append(StepTime(index=index, name=s.name, layer=s.layer, op=s.op or type(s).__name__,
                             shape=(batch,) + tuple(int(d) for d in out),
                             macs=int(per_sample) * batch, time_us=float(medians[k]),
                             share=100.0 * float(medians[k]) / total if total > 0 else 0.0,
                             parts=int(parts[k])))
    return Profile(model=model, batch=batch, num_threads=num_threads, runs=int(ns.shape[0]),
                   pass_us=float(medians[-1]), steps=rows, views=views,
                   lengths=tuple(lengths), isa=isa)

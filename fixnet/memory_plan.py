"""Where each int8 tensor of a QuantizedModel lives during predict: offsets into one block.

Planned once per batch size, from the steps alone. A tensor is live from the step that writes
it (the input stage, before step 0, for a model input) to the last step that reads it (the
end of the pass for a model output: the output stages read it after the last step). Tensors
whose lifetimes do not overlap share memory. Conventions that keep the kernels correct:

* A step's outputs never share memory with its inputs (both are live at that step): no kernel
  has to support reading and writing the same buffer.
* An alias step (``Step.alias``: a reshape or flatten whose output is a view of its input)
  adds no memory: both names are one storage, live from the first write to the last read of
  either.
* A step with ``Step.persistent_outputs`` writes at bind time what later calls rely on (the
  gaps of a zero insertion): its outputs get memory no other tensor uses.

Placement is greedy by size (largest first, each at the lowest aligned offset that does not
overlap a placed tensor live at the same time), as TensorFlow Lite's arena planner does.
"""
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

ALIGN = 64          # bytes: every buffer starts on a cache line (and any SIMD alignment)


@dataclass
class TensorPlacement:
    """One tensor (or alias group) in the block: bytes [offset, offset + nbytes), live from
    step ``first`` to step ``last`` inclusive (-1: the input stage; len(steps): the output
    stage). ``names``: the tensor and its aliases (views of the same memory)."""
    names: List[str]
    offset: int
    nbytes: int
    first: int
    last: int


@dataclass
class MemoryPlan:
    """The memory of one pass at one batch size (``QuantizedModel.memory_plan(batch)``).

    peak_bytes: the block holding every tensor (what one arena allocates);
    total_bytes: the sum of the tensors' sizes (what one buffer per tensor would take)."""
    batch: int
    peak_bytes: int
    total_bytes: int
    tensors: List[TensorPlacement] = field(default_factory=list)

    def placement(self, name) -> TensorPlacement:
        for t in self.tensors:
            if name in t.names:
                return t
        raise KeyError(name)

    def __str__(self):
        lines = [f"memory plan, batch {self.batch}: peak {self.peak_bytes} bytes, "
                 f"{self.total_bytes} bytes in {len(self.tensors)} tensors "
                 f"({self.peak_bytes / max(self.total_bytes, 1):.0%})",
                 f"{'offset':>10} {'bytes':>10} {'steps':>9}  tensor"]
        for t in sorted(self.tensors, key=lambda t: (t.offset, t.first)):
            lines.append(f"{t.offset:>10} {t.nbytes:>10} {t.first:>4}..{t.last:<4} "
                         f"{' = '.join(t.names)}")
        return "\n".join(lines)


def _round_up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


def plan_memory(steps, shapes: Dict[str, tuple], inputs, outputs, batch, itemsizes=None) -> MemoryPlan:
    """The MemoryPlan of ``steps`` (QuantizedModel.steps) at ``batch`` rows; ``shapes``:
    tensor name -> shape without the batch axis; ``itemsizes``: tensor name -> bytes per
    value (1 for int8, 2 for int16; default 1)."""
    itemsizes = itemsizes or {}
    root = {}                              # tensor -> the tensor whose storage it uses
    groups: Dict[str, dict] = {}           # root -> {"names", "first", "last", "nbytes", ...}
    end = len(steps)

    def add(name, first):
        root[name] = name
        groups[name] = {"names": [name], "first": first, "last": first, "private": False,
                        "nbytes": batch * itemsizes.get(name, 1)
                        * int(np.prod(shapes[name], dtype=np.int64))}

    def use(name, when):
        g = groups[root[name]]
        g["last"] = max(g["last"], when)

    for t in inputs:
        if t not in root:
            add(t, -1)
    for i, s in enumerate(steps):
        for t in s.inputs:
            use(t, i)
        if s.alias:
            src, dst = s.inputs[0], s.outputs[0]
            root[dst] = root[src]
            groups[root[src]]["names"].append(dst)
            continue
        for t in s.outputs:
            add(t, i)
            groups[t]["private"] = bool(getattr(s, "persistent_outputs", False))
    for t in outputs:
        use(t, end)

    placed = []       # (offset, nbytes, first, last)
    result = []
    order = sorted(groups.items(), key=lambda kv: (-kv[1]["nbytes"], kv[1]["first"], kv[0]))
    for name, g in order:
        first, last = (-1, end) if g["private"] else (g["first"], g["last"])
        size = _round_up(max(g["nbytes"], 1), ALIGN)
        busy = sorted((o, o + n) for o, n, f, l in placed if f <= last and first <= l)
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((offset, size, first, last))
        result.append(TensorPlacement(g["names"], offset, g["nbytes"], g["first"], g["last"]))
    peak = max((o + n for o, n, _, _ in placed), default=0)
    total = sum(g["nbytes"] for g in groups.values())
    result.sort(key=lambda t: (t.first, t.names[0]))
    return MemoryPlan(batch, peak, total, result)


def allocate(plan: MemoryPlan, shapes: Dict[str, tuple], dtypes=None):
    """(block, {tensor name: array of (batch,) + shape, a view into block}); ``dtypes``:
    tensor name -> its dtype (default int8)."""
    dtypes = dtypes or {}
    block = np.zeros(max(plan.peak_bytes, 1) + ALIGN, np.int8)
    start = (-block.ctypes.data) % ALIGN        # the first ALIGN-aligned byte
    bufs = {}
    for t in plan.tensors:
        for name in t.names:
            view = block[start + t.offset:start + t.offset + t.nbytes]
            bufs[name] = view.view(dtypes.get(name, np.int8)).reshape((plan.batch,) + tuple(shapes[name]))
    return block, bufs

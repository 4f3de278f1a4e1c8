"""Checked execution: the network run step by step through the NumPy oracle with int64
accumulators, raising AccumulatorOverflowError (naming the layer) if any int32 accumulator the
kernels use would wrap (or an int64 one of a wide step would reach 2^47), and counting how
often each layer saturates at the clamp of its output type.

The outputs are bit-identical to ``QuantizedModel.predict`` (the kernels are bit-exact with
the oracle); only slower.
"""
import numpy as np

from . import oracle
from .errors import AccumulatorOverflowError
from .step import require_finite
from .tables import render_table

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _accumulators(step, ins):
    """int64 intermediates of a step that the kernels hold in int32, or None."""
    acc = step.accumulators(ins)
    if acc is not None:
        return acc
    if step.op in ("add", "subtract", "average"):
        return oracle.add_accumulators(ins[0].reshape(-1), ins[1].reshape(-1),
                                       step.kernel_params())
    return None


def _is_wide(step):
    """True for a step with int64 accumulators (fixnet.ops.base.WideAccumulators)."""
    return getattr(step, "acc_bits", 32) == 64


def _unclamped(step, acc):
    """out_zp + requantized accumulator, before the clamp (None where the step has none)."""
    m0, shift, zp = getattr(step, "m0", None), getattr(step, "shift", None), getattr(step, "out_zp", None)
    if m0 is None or zp is None or acc is None or np.ndim(m0) == 0:
        return None
    c = np.asarray(m0).shape[0]
    if acc.shape[-1] != c:
        return None
    if _is_wide(step):
        return oracle.multiply_by_quantized_multiplier_wide(acc, m0, shift) + zp
    inside = np.clip(acc, INT32_MIN, INT32_MAX)
    rule = (oracle.multiply_by_quantized_multiplier_single
            if getattr(step, "rounding", "double") == "single"
            else oracle.multiply_by_quantized_multiplier)
    return rule(inside, m0, shift).astype(np.int64) + zp


class CheckReport:
    """What a checked run saw, per layer: the largest |int32 accumulator| and how many
    outputs the clamp cut (values the requantized result put beyond the output type's range:
    [-128, 127] for int8, [-32768, 32767] for int16)."""

    def __init__(self):
        self.records = []

    def to_dict(self):
        return {"layers": [dict(r) for r in self.records]}

    def __iter__(self):
        return iter(self.records)

    def __str__(self):
        rows = [(r["layer"], r["op"], r["max_abs_accumulator"], r["saturated"], r["outputs"],
                 f"{100.0 * r['saturated'] / max(r['outputs'], 1):.2f}%") for r in self.records]
        return render_table("checked execution", ["layer", "op", "max |acc|", "saturated",
                                                  "outputs", "share"], rows)


def run_checked(qm, x, nonfinite="error"):
    """Run ``qm`` on ``x`` through the oracle with overflow checks (``nonfinite`` as for
    predict). Returns (int8 outputs, CheckReport); raises AccumulatorOverflowError on the
    first accumulator that wraps. Nothing is stored on ``qm``: the caller keeps the report
    (predict keeps it per thread, as ``qm.last_check``)."""
    xs = qm._check_inputs(x, nonfinite)
    lengths = qm.lengths_of(xs)          # inputs of any length: this call's shapes and steps
    shapes = qm.shapes_for(lengths)
    vals = {}
    for t, xi in zip(qm.inputs, xs):
        vals[t] = xi if xi.dtype.kind == "i" else qm.tensors[t].qparams.quantize(require_finite(xi, t))
    report = CheckReport()
    for s in qm.steps_for(lengths):
        ins = [vals[t] for t in s.inputs]
        acc = _accumulators(s, ins)
        max_abs = None
        if acc is not None:
            acc = np.asarray(acc, np.int64)
            max_abs = int(np.abs(acc).max()) if acc.size else 0
            # int32 accumulators must not wrap; a wide step's int64 ones must stay below
            # 2^47, the bound of its requantization
            lo, hi, kind = ((-oracle.WIDE_ACC_LIMIT + 1, oracle.WIDE_ACC_LIMIT - 1,
                             "int64 accumulator would exceed 2^47") if _is_wide(s)
                            else (INT32_MIN, INT32_MAX, "int32 accumulator would wrap"))
            if acc.size and (acc.max() > hi or acc.min() < lo):
                where = np.unravel_index(np.argmax(np.abs(acc)), acc.shape)
                raise AccumulatorOverflowError(
                    f"layer '{s.layer}' ({s.op}): an {kind}: {int(acc[where])} at index "
                    f"{tuple(int(i) for i in where)} is outside [{lo}, {hi}]")
        outs = s.oracle(ins)
        for t, o in zip(s.outputs, outs):
            vals[t] = o.reshape((o.shape[0],) + shapes[t])
        raw = _unclamped(s, acc)
        saturated = 0
        if raw is not None:
            out_qp = qm.tensors[s.outputs[0]].qparams
            lo, hi = out_qp.qmin, out_qp.qmax
            # below the type's minimum is a fused ReLU doing its job when the clamp starts at
            # real 0
            lower_is_activation = getattr(s, "act_min", lo) == s.out_zp
            saturated = int(np.count_nonzero(raw > hi))
            if not lower_is_activation:
                saturated += int(np.count_nonzero(raw < lo))
        report.records.append({"layer": s.layer, "op": s.op, "max_abs_accumulator": max_abs,
                               "saturated": saturated, "outputs": int(sum(o.size for o in outs))})
    return [vals[t] for t in qm.outputs], report

"""Reports as structured records (``to_dict``) and as readable tables (``str``)."""
import numpy as np

from . import layouts

from .metrics import sqnr_db
from .tables import render_table


class OverflowReport:
    """Static accumulator bound per layer: worst case over every input, in bits of headroom
    below the limit of the layer's accumulator ("accumulator": int32, limit 2^31; or int64,
    limit 2^47, for the int16 dense/conv2d layers whose int32 proof fails)."""

    def __init__(self, bounds):
        self.records = [{
            "layer": b.layer, "op": b.op, "what": b.what, "channels": int(b.worst.size),
            "accumulator": b.accumulator,
            "worst_abs": int(b.worst.max()) if b.worst.size else 0,
            "headroom_bits": round(b.headroom_bits, 2), "proven": bool(b.proven),
        } for b in bounds]

    @property
    def proven(self):
        return all(r["proven"] for r in self.records)

    def to_dict(self):
        return {"proven": self.proven, "layers": [dict(r) for r in self.records]}

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __str__(self):
        rows = [(r["layer"], r["op"], r["what"], r["accumulator"], r["worst_abs"],
                 f"{r['headroom_bits']:.1f}", "yes" if r["proven"] else "NO")
                for r in self.records]
        return render_table("int32 overflow proof (worst case over all inputs; headroom below "
                            "2^31, or 2^47 for the int64 accumulators of a wide int16 layer)",
                            ["layer", "op", "what", "acc", "worst |acc|", "headroom bits",
                             "proven"], rows)


ADJUST_ROWS = 10       # layers the printed "adjust" section lists


class ErrorReport:
    """Where the quantization error comes from, per layer (per runtime step):

    - sqnr_db: float reference vs dequantized int8 output of the step, on the given inputs
      (error accumulated from the network's input up to here);
    - clipped: share of the float values outside the int8 range chosen for the tensor;
    - saturated: outputs the int8 clamp cut (checked execution's count);
    - max_abs_accumulator and headroom_bits: the largest int32 accumulator seen, and the static
      proof's headroom (bits below 2^31 in the worst case over all inputs);
    - weight_range_use: mean over output channels of max|w_q| / 127 (1.0 = full int8 range);
    and, in ``widened`` (``to_dict()["widened_channels"]``, a second table when printed), the
    channels whose weight scale quantize() widened to hold their bias (dead filters; see
    widened_channels); in ``internal`` (``to_dict()["internal"]``, a third table), the values
    inside recurrent layers, per gate and state over every time step: the gates'
    pre-activations and values and the states h and c, each with its SQNR against the float
    layer's, the share of float values beyond its int16 range (clipped) and the int16 codes
    at either end of it (saturated); in ``adjust`` (``to_dict()["adjust"]``, printed for the
    layers that gain most), for each layer that could run int16, the model's output SQNR with
    that layer alone moved to int16 and the gain over the model as it is (a model quantized in
    this process only: a .fxn file has no calibration to re-quantize from).

    Without a float network (a .tflite or .fxn file: ``reference`` "layer"), sqnr_db and clipped
    are each layer's own share instead, where it can be taken: its int8 output against the same
    layer computed exactly (no rounding, the fused activation's bounds only) from its dequantized
    int8 inputs and weights (see local_records); the layers whose output is a requantized
    accumulator (dense, conv, depthwise, affine, average pooling...) have one.
    """

    def __init__(self, records, widened=(), internal=(), adjust=(), reference="model"):
        self.records = records
        self.widened = list(widened)
        self.internal = list(internal)
        self.adjust = list(adjust)
        self.reference = reference

    def to_dict(self):
        return {"reference": self.reference, "layers": [dict(r) for r in self.records],
                "widened_channels": [dict(r) for r in self.widened],
                "internal": [dict(r) for r in self.internal],
                "adjust": [dict(r) for r in self.adjust]}

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __str__(self):
        def f(v, fmt):
            return "" if v is None else format(v, fmt)
        rows = [(r["layer"], r["op"], r["type"], f(r["sqnr_db"], ".1f"),
                 f(100 * r["clipped"], ".3f") if r["clipped"] is not None else "",
                 r["saturated"], f(r["headroom_bits"], ".1f"), f(r["weight_range_use"], ".2f"))
                for r in self.records]
        title = ("quantization error by layer" if self.reference == "model" else
                 "quantization error by layer (no float model: SQNR and clipped % are each "
                 "layer's own, against its exact computation on its dequantized int8 inputs)")
        text = render_table(title,
                            ["layer", "op", "type", "SQNR dB", "clipped %", "saturated",
                             "headroom bits", "weight range use"], rows)
        if self.adjust:
            arows = [(r["layer"], f(r["sqnr_db"], ".2f"), f(r["gain_db"], "+.2f"))
                     for r in self.adjust[:ADJUST_ROWS]]
            text += "\n\n" + render_table(
                f"adjust: output SQNR with one layer moved to int16 (the {min(len(self.adjust), ADJUST_ROWS)} "
                f"that gain most; now {self.adjust[0]['base_db']:.2f} dB)",
                ["layer", "SQNR dB", "gain dB"], arows)
        if self.internal:
            irows = [(r["layer"], r["what"], f(r["sqnr_db"], ".1f"),
                      f(100 * r["clipped"], ".3f") if r["clipped"] is not None else "",
                      r["saturated"], f(r["scale"], ".3g")) for r in self.internal]
            text += "\n\n" + render_table(
                "inside recurrent layers: gates and states over every time step (int16)",
                ["layer", "what", "SQNR dB", "clipped %", "saturated", "scale"], irows)
        if not self.widened:
            return text
        wrows = [(r["layer"], r["op"], r["channel"], f(r["natural_scale"], ".3g"),
                  f(r["scale"], ".3g"), f(r["bias"], ".6g")) for r in self.widened]
        return text + "\n\n" + render_table(
            "channels whose weight scale was widened to hold their bias (they output ~their bias)",
            ["layer", "op", "channel", "weight scale", "widened scale", "bias"], wrows)


def widened_channels(qm):
    """Records {layer, op, channel, natural_scale, scale, bias, derived} of the channels whose
    weight scale quantize() widened for their bias (qparams.quantize_channels): from the
    steps' ``widened`` when the model was quantized in this process; for a model read from a
    .fxn file (which stores only the integers), derived from them: the channels whose int8
    weights are all 0 while their bias is not (natural_scale None, derived True). A widened
    channel whose weights kept small non-zero codes cannot be told apart there and is not
    listed."""
    from .dequantize import zero_weight_channels
    out = []
    for s in qm.steps:
        if "widened" in vars(s):
            out += [{"layer": s.layer, "op": s.op, "channel": w.channel,
                     "natural_scale": w.natural_scale, "scale": w.scale, "bias": w.bias,
                     "derived": False} for w in s.widened]
        else:
            out += [{"layer": s.layer, "op": s.op, "channel": c, "natural_scale": None,
                     "scale": scale, "bias": bias, "derived": True}
                    for c, scale, bias in zero_weight_channels(s, qm.tensors)]
    return out


def error_report(qm, float_graph, x):
    """Build an ErrorReport for QuantizedModel ``qm`` on inputs ``x`` (see qm.report)."""
    from . import reference
    from .checked import run_checked

    xs = qm._check_inputs(x)
    floats = {}
    if float_graph is not None:      # a model read from a .fxn file has no float weights
        reference.run(float_graph, [np.asarray(v, np.float64) for v in xs],
                      observe=lambda t, v: floats.__setitem__(t, v))
    ints = tensor_codes(qm, xs)
    _, check = run_checked(qm, x)
    bounds = {}
    for b in qm.overflow_bounds():
        bounds.setdefault((b.layer, b.op), b)
    local = {} if float_graph is not None else local_records(qm, ints)
    records, internal = [], []
    for s, c in zip(qm.steps, check):
        if hasattr(s, "internal_values"):
            internal += _internal_records(s, [ints[t] for t in s.inputs], floats)
        t = s.outputs[0]
        qp = qm.tensors[t].qparams
        ref = floats.get(t)
        sqnr = clipped = None
        if ref is not None:
            sqnr = sqnr_db(ref, qp.dequantize(ints[t]))
            lo, hi = qp.real_range
            clipped = float(np.mean((ref < lo - qp.scale / 2) | (ref > hi + qp.scale / 2)))
        elif s.name in local:
            sqnr, clipped = local[s.name]
        b = bounds.get((s.layer, s.op))
        w = getattr(s, "w_q", None)
        use = None
        if w is not None and layouts.has_rows(s.op):
            rows = layouts.flat_rows(layouts.rows_from_step(s.op, w))
            use = float(np.abs(rows.astype(np.int32)).max(axis=1).mean() / 127.0)
        records.append({"layer": s.layer, "op": s.op, "tensor": t,
                        "sqnr_db": None if sqnr is None else float(sqnr),
                        "clipped": clipped, "saturated": c["saturated"],
                        "max_abs_accumulator": c["max_abs_accumulator"],
                        "headroom_bits": None if b is None else round(b.headroom_bits, 2),
                        "weight_range_use": use, "scale": qp.scale, "zero_point": qp.zero_point,
                        "type": qp.type_name})
    adjust = []
    calibrated = getattr(qm, "calibrated", None)
    if calibrated is not None and float_graph is not None:
        adjust = calibrated.int16_gains(qm, xs)
    return ErrorReport(records, widened_channels(qm), internal, adjust,
                       reference="model" if float_graph is not None else "layer")


def tensor_codes(qm, xs, observe=None):
    """{tensor: integer codes} of every tensor of ``qm`` on its checked inputs ``xs``
    (qm._check_inputs), through the oracle (bit-identical to the kernels); ``observe(t, v)``,
    if given, is called with each step output as it is computed."""
    ints = {}
    for t, xi in zip(qm.inputs, xs):
        ints[t] = xi if xi.dtype.kind == "i" else qm.tensors[t].qparams.quantize(xi)
    lengths = qm.lengths_of(xs)          # inputs of any length: this call's shapes
    shapes = qm.shapes_for(lengths)
    for s in qm.steps_for(lengths):
        for t, o in zip(s.outputs, s.oracle([ints[t] for t in s.inputs])):
            ints[t] = o.reshape((o.shape[0],) + shapes[t])
            if observe is not None:
                observe(t, ints[t])
    return ints


def local_records(qm, ints):
    """{step name: (SQNR dB, clipped share)} of the steps of a model without a float network
    that can be recomputed exactly from their dequantized int8 inputs:

    - a step whose output is a requantized accumulator (``accumulators`` and per-channel or
      scalar ``m0``/``shift``: dense, conv, depthwise, affine, global average pooling...): the
      exact value acc * M (M = m0 * 2^(shift - 31), the multiplier the step applies; acc the
      exact integer sum of the inputs times the weights, around their zero points);
    - an elementwise add, subtract, multiply, average, maximum or minimum of two tensors: the
      same operation on their dequantized values.

    Each against the step's rounded output, relative to the output zero point. The exact value
    is clamped only where act_min/act_max are tighter than the output type's range, or act_min
    is real 0 (a fused ReLU/ReLU6: the model's, not quantization's); the type's own bounds are
    quantization's: what lies beyond them counts as clipped (so a ReLU6 whose range is exactly
    [0, 6] counts its cut as clipping). ``ints``: every tensor's integers on the report's
    inputs."""
    out = {}
    for s in qm.steps:
        if len(s.outputs) != 1:
            continue
        y = ints[s.outputs[0]]
        qp = qm.tensors[s.outputs[0]].qparams
        p = getattr(s, "params", None)
        if s.op in _BINARY and len(s.inputs) == 2 and isinstance(p, dict) and all(
                k in p for k in ("out_zp", "act_min", "act_max")):
            a, b = (qm.tensors[t].qparams.dequantize(ints[t]) for t in s.inputs)
            try:
                real = _BINARY[s.op](a, b)
            except ValueError:
                continue
            if real.size == y.size:
                out[s.name] = _local(p["out_zp"] + real.reshape(y.shape) / qp.scale,
                                     p["act_min"], p["act_max"], y, p["out_zp"], qp.scale)
            continue
        if not all(hasattr(s, a) for a in ("accumulators", "m0", "shift", "act_min", "act_max",
                                            "out_zp")):
            continue
        try:
            acc = np.asarray(s.accumulators([ints[t] for t in s.inputs]), np.float64)
        except (AttributeError, TypeError, ValueError, NotImplementedError):
            continue
        m = np.asarray(s.m0, np.float64) * np.exp2(np.asarray(s.shift, np.float64) - 31.0)
        if acc.size != y.size or m.size == 0 or (m.size > 1 and m.size != y.shape[-1]):
            continue
        exact = s.out_zp + acc.reshape(y.shape) * (m if m.size > 1 else float(m.reshape(-1)[0]))
        out[s.name] = _local(exact, s.act_min, s.act_max, y, s.out_zp, qp.scale)
    return out


# the elementwise binary steps local_records recomputes on their dequantized inputs
_BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
           "average": lambda a, b: (a + b) / 2, "maximum": np.maximum, "minimum": np.minimum}


def _local(exact, act_min, act_max, y, out_zp, scale):
    """(SQNR dB, clipped share) of integer output ``y`` against the exact codes ``exact``
    around zero point ``out_zp`` (see local_records for which bounds are the model's)."""
    qmin, qmax = np.iinfo(y.dtype).min, np.iinfo(y.dtype).max
    lo = act_min if act_min > qmin or act_min == out_zp else -np.inf
    hi = act_max if act_max < qmax else np.inf
    exact = np.clip(exact, lo, hi)
    clipped = float(np.mean((exact < qmin - 0.5) | (exact > qmax + 0.5)))
    ref = (exact - out_zp) * scale
    got = (y.astype(np.float64) - out_zp) * scale
    return float(sqnr_db(ref, got)), clipped


def _internal_records(step, ins, floats):
    """ErrorReport.internal records of one recurrent step (see ErrorReport)."""
    out = []
    scales = step.internal_scales()
    for name, v in step.internal_values(ins).items():
        what = ("pre-activation of gate " + name[4:] if name.startswith("pre_")
                else "state " + name if name in ("h", "c") else "gate " + name)
        ref = floats.get(f"{step.name}/{name}")
        sqnr = clipped = None
        if ref is not None and ref.shape == v.shape:
            sqnr = float(sqnr_db(ref, v))
            clipped = float(np.mean(np.abs(ref) > 32767.5 * scales[name]))
        codes = np.rint(v / scales[name])
        out.append({"layer": step.layer, "what": what, "name": f"{step.name}/{name}",
                    "sqnr_db": sqnr, "clipped": clipped,
                    "saturated": int(np.count_nonzero((codes >= 32767) | (codes <= -32768))),
                    "scale": scales[name]})
    return out


class WeightOptionsReport:
    """What each weight option (qparams.WEIGHT_OPTIONS) costs, per layer with a kernel and for
    the whole model:

    - records, one per dense/conv/depthwise layer: ``weights`` (their count) and, per option,
      ``<option>_db``: the weight-only SQNR of the layer's float weights (BatchNorm folded in,
      as quantized) against their dequantized codes (int8: 255 uniform levels per channel;
      codebook16: 16 k-means levels per layer; codebook16-channel: 16 per channel; int4: 15
      uniform levels per channel), taken alone: no bias, no widening, no adaptive rounding;
      and ``<option>_bits``: the bits per weight the .fxn file stores them in (4-bit indices
      and their tables of codes, or 8 where that is not smaller; before deflate);
    - model: {option: SQNR of the model's outputs quantized with that option against the float
      outputs, on the given inputs}, when a quantize function and inputs were given; and
      bits: {option: bits per weight over every layer}.
    """

    def __init__(self, records, model=None, options=None):
        self.records = records
        self.model = dict(model or {})
        self.options = tuple(options or ())
        total = sum(r["weights"] for r in records) or 1
        self.bits = {o: sum(r[o + "_bits"] * r["weights"] for r in records) / total
                     for o in self.options}

    def to_dict(self):
        return {"layers": [dict(r) for r in self.records], "model": dict(self.model),
                "bits": dict(self.bits)}

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __str__(self):
        rows = [(r["layer"], r["op"], r["weights"]) +
                tuple(f"{r[o + '_db']:.1f} ({r[o + '_bits']:.1f})" for o in self.options) +
                (f"{r['codebook16_db'] - r['int4_db']:+.1f}",) for r in self.records]
        text = render_table("weight-only SQNR dB by layer, float weights vs dequantized codes "
                            "(bits per weight in the .fxn file)",
                            ["layer", "op", "weights"] + [f"{o} dB" for o in self.options] +
                            ["codebook16 - int4 dB"], rows)
        rows = [(o, f"{self.bits[o]:.2f}", f"{self.model[o]:.2f}" if o in self.model else "")
                for o in self.options]
        return text + "\n\n" + render_table(
            "whole model: bits per weight in the .fxn file, output SQNR dB when quantized with "
            "each weight option" if self.model else "whole model: bits per weight in the .fxn file",
            ["weights", "bits per weight"] + (["output SQNR dB"] if self.model else []),
            [r if self.model else r[:2] for r in rows])


def weight_options(model, x=None, quantize=None, per_channel=True):
    """A WeightOptionsReport for ``model`` (a FloatModel, or a float Graph): per layer with a
    kernel, the weight-only SQNR of each weight option and the bits it stores a weight in
    (scales per channel, or per layer with ``per_channel`` False); with inputs ``x`` and
    ``quantize`` (a function of an option name returning the QuantizedModel quantized with
    it, e.g. ``lambda w: fm.quantize(calib, weights=w)``), also each option's output SQNR
    against the float model on ``x``. Prints nothing: ``print(report)`` shows the tables."""
    from .fxn.palette import palette_form
    from .passes import optimize
    from .quant.qparams import WEIGHT_OPTIONS, weight_codes

    graph = getattr(model, "graph", model)
    records = []
    for n in optimize(graph).nodes:
        if n.op not in layouts.KERNEL_OPS or "kernel" not in n.weights:
            continue
        rows = layouts.flat_rows(layouts.rows_from_keras(n.op, n.weights["kernel"]))
        r = {"layer": n.layer or n.name, "op": n.op, "weights": int(rows.size)}
        for option in WEIGHT_OPTIONS:
            codes, scale = weight_codes(rows, per_channel, option)
            r[option + "_db"] = float(sqnr_db(rows, codes.astype(np.float64) * scale[:, None]))
            form = palette_form(codes)
            r[option + "_bits"] = 8.0 * (codes.size if form is None else form[1].size) / max(codes.size, 1)
        records.append(r)
    outputs = {}
    if x is not None and quantize is not None:
        outputs = _output_sqnr(graph, x, quantize, WEIGHT_OPTIONS)
    return WeightOptionsReport(records, outputs, WEIGHT_OPTIONS)


def _output_sqnr(graph, x, quantize, options):
    """{option: SQNR of quantize(option)'s outputs on ``x`` against the float graph's}, all
    outputs of the model taken together."""
    from . import reference

    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    ref = np.concatenate([np.ravel(o) for o in reference.run(graph, [np.asarray(v, np.float64)
                                                                     for v in xs])])
    out = {}
    for option in options:
        got = quantize(option).predict(xs if len(xs) > 1 else xs[0])
        got = got if isinstance(got, list) else [got]
        out[option] = float(sqnr_db(ref, np.concatenate([np.ravel(o) for o in got])))
    return out

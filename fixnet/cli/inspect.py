"""`fixnet inspect`: one line per layer of a model (op, output shape, parameters,
multiply-accumulates); for a fixnet .fxn file also each output's int8 scale and zero point, the
int32 accumulator headroom and how the weights are scaled; totals at the end."""
import os

import numpy as np

from ..tables import render_table
from .files import is_quantized, open_model

HELP = ("one line per layer: op, output shape, parameters, MACs; for a .fxn also scales, "
        "zero points, accumulator headroom")
EXAMPLE = """fixnet inspect model.h5
  fixnet inspect model.fxn
  fixnet inspect model.json --weights model.weights.h5"""


def add_arguments(p):
    p.add_argument("model", metavar="MODEL",
                   help="a Keras .h5 or .keras file, a Keras .json architecture (with "
                        "--weights), or a fixnet .fxn file")
    p.add_argument("--weights", metavar="W",
                   help="the weights file (.weights.h5 or .h5) of a .json architecture")


def run(args):
    model = open_model(args.model, args.weights)
    if is_quantized(model):
        print(describe_quantized(model, args.model))
    else:
        print(describe_float(model, args.model))
    return 0


def shapes_text(shapes, outputs):
    """Output shapes, compact (tables are narrow): "48x48x16", "10", "Tx32" (T: a dimension
    of any length), several joined by ", "."""
    return ", ".join("x".join("T" if d is None else str(d) for d in shapes[t]) or "scalar"
                     for t in outputs)


def any_length_note(shapes, inputs):
    """A line saying how a dimension of any length (T) is counted, or None."""
    if any(d is None for t in inputs for d in shapes[t]):
        return ("T: a dimension of any length (the input's number of steps); MACs/sample are "
                "per step there (counted at T = 1)")
    return None


def bytes_text(n):
    return f"{n:,} bytes ({n / 1024:.1f} KiB)" if n >= 1024 else f"{n:,} bytes"


def describe_float(fm, path):
    """The layer table and totals of a FloatModel (the graph as read from the Keras file)."""
    from ..cost import node_macs
    g = fm.graph
    rows, params, macs = [], 0, 0
    for n in g.nodes:
        m = node_macs(n, g.shapes[n.outputs[0]], g)
        p = sum(int(w.size) for w in n.weights.values())
        params += p
        macs += m
        rows.append((n.layer, n.keras_class, n.op, shapes_text(g.shapes, n.outputs),
                     f"{p:,}" if p else "", f"{m:,}" if m else ""))
    title = (f"{path}: Keras model '{fm.name}', inputs {shapes_text(g.shapes, g.inputs)}, "
             f"outputs {shapes_text(g.shapes, g.outputs)}")
    table = render_table(title, ["layer", "Keras class", "op", "output shape", "parameters",
                                 "MACs/sample"], rows)
    return "\n".join([
        table, *filter(None, [any_length_note(g.shapes, g.inputs)]),
        f"parameters: {params:,}",
        f"multiply-accumulates per sample: {macs:,} (dense, conv, depthwise and recurrent layers)",
        # Keras keeps its weights in float32 (fixnet reads some, e.g. BatchNorm's, as float64)
        f"weight bytes: {bytes_text(4 * params)} as float32 (`fixnet quantize` makes "
        "the int8 model)",
    ])


def step_parameters(step):
    """The parameter arrays of an int8 step: int8 weights (w_q, a recurrent layer's r_q,
    PReLU's alpha_q, an Embedding's table_q), int32 biases (a recurrent layer's bx and bh) and
    a recurrent layer's per-token input projections (token_gx, int32: a folded Embedding)."""
    keys = ("w_q", "r_q", "alpha_q", "table_q", "bias", "bx", "bh", "token_gx")
    return [a for a in (getattr(step, k, None) for k in keys)
            if isinstance(a, np.ndarray)]


def weight_scales(step, tensors):
    """How many distinct scales a weighted step's int8 weights have over its output channels
    (1: per-tensor quantization; up to one per channel), None for steps without them."""
    from ..dequantize import effective_weight_scale

    if getattr(step, "w_q", None) is None or not hasattr(step, "m0"):
        return None
    return len(np.unique(effective_weight_scale(step, tensors)))


def _scaling_text(scales):
    """The weight scaling of the weighted layers: per channel, per tensor, or a mix."""
    per_tensor = sum(1 for n in scales if n == 1)
    per_channel = len(scales) - per_tensor
    if not scales:
        return "no weighted layers"
    if per_tensor == 0:
        return f"one scale per output channel in all {per_channel} weighted layers"
    if per_channel == 0:
        return f"one scale per tensor in all {per_tensor} weighted layers"
    return (f"one scale per output channel in {per_channel} weighted layers, one in "
            f"{per_tensor} (per tensor, or channels of equal scale)")


def smallest_headroom(qm):
    """{(layer, op): OverflowBound with the fewest headroom bits} of qm's overflow proof."""
    out = {}
    for b in qm.overflow_bounds():
        key = (b.layer, b.op)
        if key not in out or b.headroom_bits < out[key].headroom_bits:
            out[key] = b
    return out


def describe_quantized(qm, path):
    """The layer table and totals of a QuantizedModel (the int8 steps of a .fxn file)."""
    from ..cost import step_macs
    from ..fxn import read_manifest
    shapes = {t: s.shape for t, s in qm.tensors.items()}
    bounds = smallest_headroom(qm)
    rows, params, macs, nbytes, scales = [], 0, 0, 0, []
    for s in qm.steps:
        t = s.outputs[0]
        qp = qm.tensors[t].qparams
        m = step_macs(s, shapes[t], shapes[s.inputs[0]] if s.inputs else None)
        arrays = step_parameters(s)
        p = sum(int(a.size) for a in arrays)
        params += p
        macs += m
        nbytes += sum(int(a.nbytes) for a in arrays)
        b = bounds.get((s.layer, s.op))
        n_scales = weight_scales(s, qm.tensors)
        if n_scales is not None:
            scales.append(n_scales)
        rows.append((s.layer, s.op, step_types(s, qm.tensors), shapes_text(shapes, s.outputs),
                     f"{p:,}" if p else "", f"{m:,}" if m else "", f"{qp.scale:.4g}",
                     qp.zero_point, "" if b is None else f"{b.headroom_bits:.1f}"
                     + ("" if b.accumulator == "int32" else f" ({b.accumulator})")))
    try:
        origin = f" (converted from {read_manifest(path)['converted_from']})"
    except Exception:       # the model itself was read: the manifest is there; be safe anyway
        origin = ""
    title = f"{path}: fixnet {model_types(qm)} model '{qm.name}'{origin}"
    table = render_table(title, ["layer", "op", "type", "output shape", "params", "MACs/sample",
                                 "scale", "zero pt", "headroom bits"], rows)
    lines = [table, "(type: activations in -> out (weights are int8); scale, zero pt: of the "
                    "output; headroom bits: how far the int32 accumulator stays below 2^31 in "
                    "the worst case over all inputs, or an int64 one (an int16 layer whose "
                    "int32 proof fails) below 2^47)",
             *filter(None, [any_length_note(shapes, qm.inputs)])]
    for kind, names in (("input", qm.inputs), ("output", qm.outputs)):
        for t in names:
            qp = qm.tensors[t].qparams
            lo, hi = qp.real_range
            lines.append(f"{kind} '{t}' {tuple(shapes[t])}: {qp.type_name} scale {qp.scale:.6g}, "
                         f"zero point {qp.zero_point} (real values {lo:.6g} to {hi:.6g})")
    lines += [f"parameters: {params:,}",
              "weights: int8, " + _scaling_text(scales),
              f"multiply-accumulates per sample: {macs:,} (dense, conv, depthwise and recurrent layers)",
              f"weight bytes: {bytes_text(nbytes)} (int8 weights, int32 biases), "
              f"file {bytes_text(os.path.getsize(path))}"]
    lines.append(overflow_line(qm))
    lines.append(dead_channels_line(qm))
    config = getattr(qm, "config", None)
    if getattr(qm, "io_types", None) is not None:      # fixnet.load of a .tflite file
        lines.append("quantization: TFLite's converter's (scales, zero points and weights read "
                     "from the .tflite file); model inputs and outputs: " + ", ".join(
                         f"'{t}' {kind}" for t, kind in qm.io_types.items()
                         if t in qm.inputs or t in qm.outputs))
    else:
        lines.append("quantization config: " + ("not recorded (a file written before configs "
                                                "were recorded)" if config is None else
                                                config.describe().replace("\n", "; ")))
    return "\n".join(lines)


def step_types(step, tensors):
    """"int8", "int16", or "int8->int16" for a convert: the activation types of a step."""
    ins = {tensors[t].qparams.type_name for t in step.inputs}
    out = tensors[step.outputs[0]].qparams.type_name
    return out if ins <= {out} else f"{'/'.join(sorted(ins))}->{out}"


def model_types(qm):
    """"int8", "int16" or "int8/int16" (mixed): the activation types of a model's steps."""
    kinds = sorted({s.qparams.type_name for s in qm.tensors.values()})
    return "/".join(kinds)


def dead_channels_line(qm):
    """The channels whose int8 weights are all 0 while their bias is not (dead filters whose
    weight scale quantize widened: they output about their bias), by layer."""
    from ..report import widened_channels
    by_layer = {}
    for r in widened_channels(qm):
        by_layer.setdefault(f"'{r['layer']}' ({r['op']})", []).append(str(r["channel"]))
    if not by_layer:
        return "dead channels (int8 weights all 0, bias not): none"
    return ("dead channels (int8 weights all 0, bias not; they output about their bias): "
            + "; ".join(f"{k} channel{'s' if len(v) > 1 else ''} {', '.join(v)}"
                        for k, v in by_layer.items()))


def overflow_line(qm):
    """One line on the int32 overflow proof: whether it holds, and the tightest layer."""
    bounds = qm.overflow_bounds()
    if not bounds:
        return "int32 overflow proof: no accumulating layers"
    worst = min(bounds, key=lambda b: b.headroom_bits)
    risky = [b for b in bounds if not b.proven]
    where = f"layer '{worst.layer}' ({worst.op}, {worst.what})"
    if risky:
        return (f"int32 overflow proof: does NOT hold for {len(risky)} layer(s); worst "
                f"{where}: {worst.headroom_bits:.1f} bits")
    wide = sorted({b.layer for b in bounds if b.accumulator == "int64"})
    also = (f"; int64 accumulators (int32 cannot be proven with int16 inputs) in "
            f"{', '.join(wide)}" if wide else "")
    return (f"int32 overflow proof: holds for every layer; least headroom "
            f"{worst.headroom_bits:.1f} bits in {where}{also}")

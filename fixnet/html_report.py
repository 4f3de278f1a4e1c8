"""A self-contained HTML page showing what an int8 network lost against its float model.

``html_report(qm, x)`` takes a QuantizedModel made by ``FloatModel.quantize`` (it keeps the
float graph) and the data to measure on, and returns an HtmlReport whose ``html`` is one page
that needs nothing but itself to be viewed: no stylesheet, script, font or image is fetched;
bar charts are inline SVG, histograms PNG images in ``data:`` URIs, all drawn by matplotlib
(the optional extra ``plot``).

The page holds
- per-layer numbers from ``qm.report(x)`` (fixnet/report.py): SQNR against the float model,
  share of values clipped by the int8 range, int8 saturations, accumulator headroom, weight
  range use, scale and zero point; and the channels whose weight scale was widened for their
  bias (dead filters);
- bar charts of SQNR, headroom bits and saturation counts per layer;
- a histogram of each weighted layer's float weights with the int8 range the quantizer chose
  (per channel: the narrowest and widest channel's range);
- a histogram of each layer's float output on ``x`` with the int8 range of its tensor and the
  tails outside it (the values the int8 network clips) in red;
- with evaluation data, output-level numbers (SQNR of the outputs, top-1 agreement with the
  float model, accuracy when labels are given);
- a conclusion line naming the Keras layer that costs the most: the one adding the most
  quantization noise between its input and its output (see ``layer_costs``).
"""
import html
import math

import numpy as np

from . import layouts
from .errors import ArgumentError
from .html_plots import HIST_BINS, Plots, activation_hist, bar_chart, weight_hist
from .html_plots import load_matplotlib as _matplotlib  # noqa: F401  (cli/report.py asks it)
from .metrics import sqnr_db

MAX_WEIGHT_PLOTS = 64        # histograms per kind: a MobileNet-size page stays a few MB
MAX_ACTIVATION_PLOTS = 64
MEASURE_BUDGET = 512 << 20   # bytes the per-layer measurement may hold (see auto_samples)


# -- what each layer costs ----------------------------------------------------------------------

def _noise(sqnr_db):
    """Noise power relative to the signal's, from an SQNR in dB (inf dB -> 0)."""
    if sqnr_db is None:
        return None
    if sqnr_db == float("inf"):
        return 0.0
    if sqnr_db == float("-inf"):
        return float("inf")
    return 10.0 ** (-sqnr_db / 10.0)


def _db(noise):
    return float("inf") if noise == 0 else (float("-inf") if noise == float("inf")
                                            else -10.0 * math.log10(noise))


def layer_costs(qm, records, input_sqnr):
    """Per Keras layer (its steps grouped: e.g. a Dense and its softmax), the quantization noise
    it adds: the relative noise power (10^(-SQNR/10)) of its output minus the largest of its
    inputs'. ``records``: ErrorReport records; ``input_sqnr``: {model input tensor: SQNR dB}.

    Returns [{layer, ops, sqnr_in, sqnr_out, noise_added}] in step order (sqnr_in None when no
    input's SQNR is known, e.g. a layer fed by a tensor without a record)."""
    sqnr = dict(input_sqnr)
    for r in records:
        sqnr[r["tensor"]] = r["sqnr_db"]
    groups = {}
    for s in qm.steps:
        groups.setdefault(s.layer, []).append(s)
    out = []
    for layer, steps in groups.items():
        made = {t for s in steps for t in s.outputs}
        read = {t for s in steps for t in s.inputs}
        ins = [t for s in steps for t in s.inputs if t not in made]
        outs = [t for s in steps for t in s.outputs[:1] if t not in read] or [steps[-1].outputs[0]]
        n_in = [_noise(sqnr.get(t)) for t in ins if sqnr.get(t) is not None]
        n_out = [_noise(sqnr.get(t)) for t in outs if sqnr.get(t) is not None]
        if not n_out:
            continue
        ni, no = (max(n_in) if n_in else None), max(n_out)
        added = no - (ni or 0.0) if not (no == float("inf") and ni == float("inf")) else 0.0
        out.append({"layer": layer, "ops": [s.op for s in steps],
                    "sqnr_in": None if ni is None else _db(ni), "sqnr_out": _db(no),
                    "noise_added": added})
    return out


def _fmt_db(v):
    return "n/a" if v is None else ("exact" if v == float("inf") else f"{v:.1f} dB")


def local_costs(qm, records):
    """layer_costs for a model without a float network: per layer (its steps grouped), the
    noise power of its own (10^(-SQNR/10) of the records' layer-local SQNR, the largest of its
    steps'); sqnr_in None, sqnr_out that SQNR."""
    by_layer = {}
    for r in records:
        if r["sqnr_db"] is not None:
            by_layer.setdefault(r["layer"], []).append(r)
    out = []
    for layer, rs in by_layer.items():
        worst = max(rs, key=lambda r: _noise(r["sqnr_db"]))
        out.append({"layer": layer, "ops": [r["op"] for r in rs], "sqnr_in": None,
                    "sqnr_out": worst["sqnr_db"], "noise_added": _noise(worst["sqnr_db"])})
    return out


def conclusion_line(costs, records, local=False):
    """One sentence naming the layer that adds the most quantization noise (``local``: of its
    own, from layer-local SQNRs: a model without a float network)."""
    if not costs:
        return "no layer has an SQNR to compare (no float model?)"
    worst = max(costs, key=lambda c: c["noise_added"])
    if local:
        return (f"layer '{worst['layer']}' ({'+'.join(worst['ops'])}) adds the most quantization "
                f"noise of its own: {_fmt_db(worst['sqnr_out'])} SQNR against its exact "
                f"computation on its dequantized int8 inputs ({100 * worst['noise_added']:.3g}% "
                "noise power relative to the signal)")
    if worst["noise_added"] <= 0:
        return ("no layer adds measurable quantization noise: every int8 tensor equals the "
                "float one on this data")
    rs = [r for r in records if r["layer"] == worst["layer"]]
    clipped = max((r["clipped"] or 0.0) for r in rs)
    saturated = sum(r["saturated"] for r in rs)
    extra = []
    if clipped > 0:
        extra.append(f"{100 * clipped:.3g}% of its float outputs lie outside its int8 range")
    if saturated:
        extra.append(f"{saturated} outputs saturated")
    return (f"layer '{worst['layer']}' ({'+'.join(worst['ops'])}) costs the most accuracy: SQNR "
            f"goes from {_fmt_db(worst['sqnr_in'])} at its input to {_fmt_db(worst['sqnr_out'])} "
            f"at its output (it adds {100 * worst['noise_added']:.3g}% noise power relative to "
            f"the signal)" + ("; " + ", ".join(extra) if extra else ""))


# -- data gathered for the plots ----------------------------------------------------------------

def _activation_histograms(qm, xs, wanted):
    """{tensor: (counts, edges, vmin, vmax)} of the float model's values of the ``wanted``
    tensors on inputs ``xs`` (bins spanning both the values and the tensor's int8 range); for
    a model without a float network, of its dequantized int8 values."""
    from . import reference
    hists = {}

    def observe(t, v):
        if t not in wanted:
            return
        v = np.asarray(v, np.float64).ravel()
        v = v[np.isfinite(v)]
        lo, hi = qm.tensors[t].qparams.real_range
        vmin, vmax = (float(v.min()), float(v.max())) if v.size else (lo, hi)
        edges = np.linspace(min(lo, vmin), max(hi, vmax), HIST_BINS + 1)
        if edges[-1] <= edges[0]:
            edges = np.linspace(edges[0] - 1, edges[0] + 1, HIST_BINS + 1)
        hists[t] = (np.histogram(v, edges)[0], edges, vmin, vmax)

    if getattr(qm, "float_graph", None) is not None:
        reference.run(qm.float_graph, [np.asarray(x, np.float64) for x in xs], observe=observe)
        return hists
    # no float model: the int8 values themselves, dequantized (the oracle's, bit-identical)
    from .report import tensor_codes
    tensor_codes(qm, xs, lambda t, v: observe(t, qm.tensors[t].qparams.dequantize(v)))
    return hists


def _float_kernels(qm):
    """{tensor: float kernel} of the float graph's weighted nodes, keyed by output tensor."""
    out = {}
    if getattr(qm, "float_graph", None) is None:
        return out
    for n in qm.float_graph.nodes:
        k = n.weights.get("kernel")
        if k is not None:
            out[n.outputs[0]] = np.asarray(k)
    return out


def _weight_data(qm):
    """[(step, float weights [K, C] per output channel, per-channel int8 range [C], source)]
    of the weighted steps."""
    from .dequantize import effective_weight_scale, step_weights, weighted
    floats = _float_kernels(qm)
    out = []
    for s in qm.steps:
        if not weighted(s):
            continue
        scale = effective_weight_scale(s, qm.tensors)
        k, source = floats.get(s.outputs[0]), "float model"
        rows = None
        if k is not None and s.op in layouts.KERNEL_OPS and k.size == s.w_q.size:
            rows = layouts.flat_rows(layouts.rows_from_keras(s.op, k))
        if rows is None or rows.shape[0] != scale.size:
            k, source = step_weights(s, qm.tensors)["kernel"], "dequantized int8"
            rows = layouts.flat_rows(layouts.rows_from_keras(s.op, k))
        out.append((s, np.asarray(rows, np.float64).T, 127.0 * scale, source))
    return out


# -- the page (its plots: fixnet/html_plots.py) ---------------------------------------------------

_CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1250px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
.conclusion{background:#fff4e0;border-left:4px solid #e09000;padding:.6em 1em;font-weight:bold}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ccc;padding:2px 6px}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f0f0f0}
tr.worst td{background:#fff0f0}
.grid{display:flex;flex-wrap:wrap;gap:6px} figure.plot{margin:0}
figure.plot svg{max-width:100%;height:auto}
.note{color:#666;font-size:.85em}
"""


def _cell(v, fmt="", numeric=True):
    if v is None:
        s = ""
    elif isinstance(v, float) and math.isinf(v):
        s = "∞" if v > 0 else "-∞"
    else:
        s = format(v, fmt)
    return f'<td class="n">{html.escape(s)}</td>' if numeric else f"<td>{html.escape(s)}</td>"


def _table(columns, rows, row_class=None):
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_class(i)}"' if row_class and row_class(i) else ""
        body.append(f"<tr{cls}>" + "".join(r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class HtmlReport:
    """The page (``html``), its conclusion line, the numbers behind it (``to_dict()``) and the
    number of plots it draws (``plots``: {"svg": n, "png": n})."""

    def __init__(self, html_text, conclusion, error_report, costs, outputs, plots, samples):
        self.html = html_text
        self.conclusion = conclusion
        self.error_report = error_report
        self.costs = costs
        self.outputs = outputs
        self.plots = plots
        self.samples = samples

    def to_dict(self):
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, np.generic):
                return clean(v.item())
            return v
        return clean({"conclusion": self.conclusion, "samples": self.samples,
                      **self.error_report.to_dict(), "layer_costs": self.costs,
                      "outputs": self.outputs})

    def save(self, path):
        """Write the page to ``path`` atomically (an existing file stays whole on a failure)."""
        from .fileio import write_atomically
        write_atomically(path, self.html.encode("utf-8"))


def _first(xs, n):
    return [np.asarray(a)[:n] for a in xs]


def output_metrics(qm, float_model, x, labels=None):
    """Per model output: SQNR of the int8 outputs against the float model's on ``x``, top-1
    agreement (outputs with a class axis), accuracy against ``labels`` (first output)."""
    p_f = float_model.predict(x)
    p_q = qm.predict(x)
    p_f = p_f if isinstance(p_f, list) else [p_f]
    p_q = p_q if isinstance(p_q, list) else [p_q]
    out = []
    for i, (name, f, q) in enumerate(zip(qm.outputs, p_f, p_q)):
        m = {"output": name, "samples": int(f.shape[0]), "sqnr_db": float(sqnr_db(f, q))}
        if f.ndim == 2 and f.shape[1] > 1:
            m["top1_agreement"] = float(np.mean(f.argmax(1) == q.argmax(1)))
            if labels is not None and i == 0:
                y = np.asarray(labels).reshape(-1)
                if y.shape[0] != f.shape[0]:
                    raise ArgumentError(f"labels: {y.shape[0]} labels for {f.shape[0]} "
                                        "evaluation samples")
                m["accuracy_float"] = float(np.mean(f.argmax(1) == y))
                m["accuracy_int8"] = float(np.mean(q.argmax(1) == y))
        out.append(m)
    return out


def auto_samples(qm, budget=MEASURE_BUDGET, lengths=()):
    """How many samples the per-layer measurement takes by default: as many as keep the float
    and int8 copies of every tensor (qm.report holds them all at once) within ``budget``
    bytes, between 8 and 512. ``lengths``: the data's, for a model with inputs of any
    length (qm.lengths_of; without them such a dimension counts 1)."""
    per_sample = sum(math.prod(1 if d is None else d for d in shape)
                     for shape in qm.shapes_for(lengths).values())
    return int(min(512, max(8, budget // max(1, 18 * per_sample))))


def html_report(qm, x, *, float_model=None, eval_x=None, labels=None, title=None,
                max_samples=None, details=None):
    """Build the HtmlReport of QuantizedModel ``qm`` (made by ``FloatModel.quantize``) on
    inputs ``x`` (the first ``max_samples`` are used for the per-layer numbers and plots;
    None: ``auto_samples(qm)``, e.g. all of a small model's, 16 of a 96x96 MobileNetV2's).
    ``float_model``, ``eval_x`` [, ``labels``]: output-level numbers on the evaluation data.
    ``details``: [(label, value)] shown at the top (files, options)."""
    float_free = getattr(qm, "float_graph", None) is None
    plots = Plots()
    xs = qm._check_inputs(x)
    xs = _first(xs, max_samples or auto_samples(qm, lengths=qm.lengths_of(xs)))
    n = int(xs[0].shape[0])
    rep = qm.report(xs if len(xs) > 1 else xs[0])
    records = rep.records
    input_sqnr = {t: float(sqnr_db(v, qm.tensors[t].qparams.dequantize(
        qm.tensors[t].qparams.quantize(v)))) for t, v in zip(qm.inputs, xs)
        if v.dtype.kind == "f"}
    if float_free:
        costs = local_costs(qm, records)
        conclusion = conclusion_line(costs, records, local=True)
    else:
        costs = layer_costs(qm, records, input_sqnr)
        conclusion = conclusion_line(costs, records)
    worst = max(costs, key=lambda c: c["noise_added"])["layer"] if costs else None
    outputs = []
    if eval_x is not None and float_model is not None:
        outputs = output_metrics(qm, float_model, eval_x, labels)

    parts = _head(title or qm.name, details, n, conclusion, local=float_free)
    parts += _outputs_section(outputs)
    parts += _layers_section(records, worst, local=float_free)
    parts += _summary_plots(plots, records, n, local=float_free)
    parts += _internal_section(rep)
    parts += _widened_section(rep)
    parts += _weights_section(plots, qm)
    parts += _activations_section(plots, qm, xs, records)
    parts += _footer(plots)
    return HtmlReport("\n".join(parts), conclusion, rep, costs, outputs, dict(plots.count), n)


def _head(title, details, n, conclusion, local=False):
    """The page head, the details table and the conclusion."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>fixnet report: {html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>fixnet int8 report: {html.escape(title)}</h1>"]
    info = list(details or []) + [("samples measured", f"{n} (per-layer numbers and plots)")]
    parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                                     for k, v in info) + "</table>")
    parts.append(f'<p class="conclusion" id="conclusion">{html.escape(conclusion)}</p>')
    if local:
        parts.append('<p class="note">No float model (a .tflite or .fxn file): each layer\'s SQNR is '
                     'its own, its int8 output against the same layer computed exactly from its '
                     'dequantized int8 inputs and weights; the layer named adds the most noise '
                     'power (10^(-SQNR/10)) of its own.</p>')
        return parts
    parts.append('<p class="note">The layer named is the one adding the most quantization noise '
                 'power (10^(-SQNR/10) against the float model) between its input and its output; '
                 'a Keras layer\'s steps (e.g. a Dense and its softmax) count together.</p>')
    return parts


def _outputs_section(outputs):
    """Output-level numbers on the evaluation data (none without them)."""
    parts = []
    if outputs:
        parts.append("<h2>Outputs on the evaluation data</h2>")
        cols = [("top1_agreement", "top-1 agreement with float %"),
                ("accuracy_float", "float accuracy %"), ("accuracy_int8", "int8 accuracy %")]
        cols = [c for c in cols if any(c[0] in m for m in outputs)]
        rows = [[_cell(m["output"], numeric=False), _cell(m["samples"]), _cell(m["sqnr_db"], ".1f")]
                + [_cell(None if k not in m else 100 * m[k], ".2f") for k, _ in cols]
                for m in outputs]
        parts.append(_table(["output", "samples", "SQNR dB"] + [c[1] for c in cols], rows))
    return parts


def _layers_section(records, worst, local=False):
    """The per-layer table, the worst layer marked."""
    parts = []
    parts.append("<h2>Per layer</h2>")
    rows = [[_cell(r["layer"], numeric=False), _cell(r["op"], numeric=False),
             _cell(r["tensor"], numeric=False), _cell(r["sqnr_db"], ".1f"),
             _cell(None if r["clipped"] is None else 100 * r["clipped"], ".3f"),
             _cell(r["saturated"]), _cell(r["max_abs_accumulator"]),
             _cell(r["headroom_bits"], ".1f"), _cell(r["weight_range_use"], ".2f"),
             _cell(r["scale"], ".4g"), _cell(r["zero_point"])] for r in records]
    parts.append(_table(["layer", "op", "tensor", "SQNR dB", "clipped %", "saturated",
                         "max |accumulator|", "headroom bits", "weight range use", "scale",
                         "zero point"], rows,
                        row_class=lambda i: "worst" if records[i]["layer"] == worst else ""))
    first = ('SQNR: the layer\'s own, its exact computation on its dequantized int8 inputs vs its '
             'int8 output (no float model). Clipped: share of exact values outside the '
             'tensor\'s int8 range. ' if local else
             'SQNR: float model vs dequantized int8 tensor, error accumulated '
             'from the input. Clipped: share of float values outside the tensor\'s int8 range. ')
    parts.append('<p class="note">' + first +
                 'Saturated: int8 outputs the clamp cut. Headroom: bits below 2^31 of the worst '
                 'int32 accumulator over all inputs (static proof). Weight range use: mean over '
                 'channels of max|w_q|/127.'
                 + (' A softmax\'s input is clipped on purpose below the values that can still '
                    'change its int8 probabilities: judge it by the softmax output\'s SQNR.'
                    if any(r["op"] == "softmax" for r in records) else "") + '</p>')
    return parts


def _summary_plots(plots, records, n, local=False):
    """Bar charts of SQNR, headroom and saturations per layer."""
    parts = []
    labels_ = [f"{r['layer']}" + (f" ({r['op']})" if r["op"] not in r["layer"] else "") for r in records]
    parts.append("<h2>Summary plots</h2><div class='grid'>")
    parts.append(bar_chart(plots, labels_, [r["sqnr_db"] for r in records],
                            "each layer's own SQNR (no float model)" if local else
                            "SQNR against the float model per layer", "dB", "#4878a8"))
    hr = [(lab, r["headroom_bits"]) for lab, r in zip(labels_, records) if r["headroom_bits"] is not None]
    if hr:
        parts.append(bar_chart(plots, [h[0] for h in hr], [h[1] for h in hr],
                                "int32 accumulator headroom (worst case)", "bits", "#58a058",
                                ref=0.0))
    parts.append(bar_chart(plots, labels_, [r["saturated"] for r in records],
                            f"int8 saturations per layer ({n} samples)", "count", "#c06030",
                            log=True))
    parts.append("</div>")
    return parts


def _internal_section(rep):
    """Recurrent layers' gates and states (none without them)."""
    parts = []
    if rep.internal:
        parts.append("<h2>Inside recurrent layers: gates and states</h2>")
        rows = [[_cell(r["layer"], numeric=False), _cell(r["what"], numeric=False),
                 _cell(r["sqnr_db"], ".1f"),
                 _cell(None if r["clipped"] is None else 100 * r["clipped"], ".3f"),
                 _cell(r["saturated"]), _cell(r["scale"], ".3g")] for r in rep.internal]
        parts.append(_table(["layer", "what", "SQNR dB", "clipped %", "saturated (int16)", "scale"],
                            rows))
        parts.append('<p class="note">Every time step of every sample: the int16 values the '
                     'integer step computes against the float layer\'s.</p>')
    return parts


def _widened_section(rep):
    """The channels whose weight scale was widened for their bias."""
    parts = []
    parts.append("<h2>Channels widened to hold their bias (dead filters)</h2>")
    if rep.widened:
        rows = [[_cell(w["layer"], numeric=False), _cell(w["op"], numeric=False), _cell(w["channel"]),
                 _cell(w["natural_scale"], ".3g"), _cell(w["scale"], ".3g"), _cell(w["bias"], ".6g")]
                for w in rep.widened]
        parts.append(_table(["layer", "op", "channel", "weight scale", "widened scale", "bias"], rows))
        parts.append('<p class="note">These channels\' weights are (nearly) all zero: they output '
                     '~their bias; their weight scale was widened so the bias fits int32.</p>')
    else:
        parts.append("<p>none</p>")
    return parts


def _weights_section(plots, qm):
    """Weight histograms against their int8 ranges."""
    parts = []
    weights = _weight_data(qm)
    shown = weights[:MAX_WEIGHT_PLOTS]
    parts.append("<h2>Weights and their int8 ranges</h2>")
    if len(weights) > len(shown):
        parts.append(f'<p class="note">the first {len(shown)} of {len(weights)} weighted layers</p>')
    parts.append("<div class='grid'>")
    for s, w, ranges, source in shown:
        parts.append(weight_hist(plots, s, w, ranges, source))
    parts.append("</div>")
    return parts


def _activations_section(plots, qm, xs, records):
    """Activation histograms against their int8 ranges, the most clipped first."""
    parts = []
    cand = [(i, s) for i, s in enumerate(qm.steps) if s.op != "reshape"]
    rec_by_tensor = {r["tensor"]: r for r in records}
    if len(cand) > MAX_ACTIVATION_PLOTS:     # the most clipped first, then in order
        keep = sorted(cand, key=lambda c: (-(rec_by_tensor.get(c[1].outputs[0], {}).get("clipped") or 0), c[0]))
        cand = sorted(keep[:MAX_ACTIVATION_PLOTS])
    wanted = {s.outputs[0] for _, s in cand}
    hists = _activation_histograms(qm, xs, wanted)
    parts.append("<h2>Activations against their int8 ranges (clipped tails in red)</h2>")
    total = sum(1 for s in qm.steps if s.op != "reshape")
    if total > len(cand):
        parts.append(f'<p class="note">{len(cand)} of {total} layer outputs: the most clipped</p>')
    parts.append("<div class='grid'>")
    for _, s in cand:
        t = s.outputs[0]
        if t in hists:
            clipped = (rec_by_tensor.get(t) or {}).get("clipped")
            parts.append(activation_hist(plots, s, t, hists[t], qm.tensors[t].qparams, clipped))
    parts.append("</div>")
    return parts


def _footer(plots):
    """The plot count and the end of the page."""
    parts = []
    n_plots = plots.count["svg"] + plots.count["png"]
    parts.append(f'<p class="note" id="plot-count" data-svg="{plots.count["svg"]}" '
                 f'data-png="{plots.count["png"]}">{n_plots} plots; made by fixnet</p>')
    parts.append("</body></html>")
    return parts

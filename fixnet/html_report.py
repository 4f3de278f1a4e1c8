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
import base64
import html
import io
import math
import re

import numpy as np

from .errors import ArgumentError, FixnetError
from .metrics import sqnr_db

MAX_WEIGHT_PLOTS = 64        # histograms per kind: a MobileNet-size page stays a few MB
MAX_ACTIVATION_PLOTS = 64
HIST_BINS = 60
PNG_DPI = 80
MEASURE_BUDGET = 512 << 20   # bytes the per-layer measurement may hold (see auto_samples)


def _matplotlib():
    """matplotlib's Figure class, imported on first use (the optional extra ``plot``)."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise FixnetError("the HTML report draws its plots with matplotlib: "
                          "pip install 'fixnet[plot]'") from None
    return Figure


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


def conclusion_line(costs, records):
    """One sentence naming the layer that adds the most quantization noise."""
    if not costs:
        return "no layer has an SQNR to compare (no float model?)"
    worst = max(costs, key=lambda c: c["noise_added"])
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
    tensors on inputs ``xs`` (bins spanning both the values and the tensor's int8 range)."""
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

    reference.run(qm.float_graph, [np.asarray(x, np.float64) for x in xs], observe=observe)
    return hists


def _float_kernels(qm):
    """{tensor: float kernel} of the float graph's weighted nodes, keyed by output tensor."""
    out = {}
    for n in qm.float_graph.nodes:
        k = n.weights.get("kernel")
        if k is not None:
            out[n.outputs[0]] = np.asarray(k)
    return out


def _weight_data(qm):
    """[(step, float weights [K, C] per output channel, per-channel int8 range [C], source)]
    of the weighted steps."""
    from .dequantize import effective_weight_scale, step_weights
    floats = _float_kernels(qm)
    out = []
    for s in qm.steps:
        if getattr(s, "w_q", None) is None or not hasattr(s, "m0"):
            continue
        scale = effective_weight_scale(s, qm.tensors)
        channels = scale.size
        k, source = floats.get(s.outputs[0]), "float model"
        last = None if k is None else (k.shape[-1] * k.shape[-2] if s.op == "depthwise_conv2d"
                                       and k.ndim == 4 else k.shape[-1])
        if k is None or k.size != s.w_q.size or last != channels:
            k, source = step_weights(s, qm.tensors)["kernel"], "dequantized int8"
        out.append((s, np.asarray(k, np.float64).reshape(-1, channels), 127.0 * scale, source))
    return out


# -- drawing ---------------------------------------------------------------------------------------

class _Plots:
    """Figures rendered to inline SVG or PNG data: URIs; counts what it made."""

    def __init__(self):
        self.Figure = _matplotlib()
        self.count = {"svg": 0, "png": 0}

    def figure(self, w, h, margins=None):
        """A figure and its axes; ``margins`` (left, bottom, right, top) fixes the layout
        (fast) instead of a tight layout measured at save time."""
        fig = self.Figure(figsize=(w, h))
        if margins:
            fig.subplots_adjust(*margins)
        fig.fixnet_tight = margins is None
        return fig, fig.add_subplot(1, 1, 1)

    def svg(self, fig, alt):
        import matplotlib
        self.count["svg"] += 1
        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none",
                                    "svg.hashsalt": f"fixnet-{self.count['svg']}"}):
            if fig.fixnet_tight:
                fig.tight_layout()
            fig.savefig(buf, format="svg")
        text = buf.getvalue()
        text = text[text.index("<svg"):]       # no XML prolog, no metadata (dates, links)
        text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
        return (f'<figure class="plot" data-plot="svg" title="{html.escape(alt)}">{text}'
                f'</figure>')

    def png(self, fig, alt):
        self.count["png"] += 1
        buf = io.BytesIO()
        if fig.fixnet_tight:
            fig.tight_layout()
        fig.savefig(buf, format="png", dpi=PNG_DPI)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return (f'<figure class="plot" data-plot="png"><img alt="{html.escape(alt)}" '
                f'src="data:image/png;base64,{data}"></figure>')


def _bar_chart(plots, labels, values, title, ylabel, color, ref=None, log=False):
    w = min(12.0, max(6.0, 0.22 * len(labels) + 2.0))
    fig, ax = plots.figure(w, 2.8)
    pos = np.arange(len(labels))
    vals = [0.0 if (v is None or not np.isfinite(v)) else v for v in values]
    ax.bar(pos, vals, color=color, width=0.7)
    for i, v in enumerate(values):
        if v is not None and np.isinf(v):
            ax.annotate("∞" if v > 0 else "-∞", (i, 0), ha="center", va="bottom", fontsize=7)
    if ref is not None:
        ax.axhline(ref, color="#888", lw=0.8, ls="--")
    if log and any(v > 0 for v in vals):
        ax.set_yscale("symlog", linthresh=1)
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6 if len(labels) > 30 else 7)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    return plots.svg(fig, title)


_HIST_MARGINS = (0.13, 0.2, 0.98, 0.88)


def _short(text, n=52):
    """A plot title that fits its small figure."""
    return text if len(text) <= n else text[:n - 1] + "…"


def _log_y(ax):
    """A log count axis with a few labelled decades and no minor ticks (cheap to draw)."""
    from matplotlib.ticker import LogLocator, NullLocator
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=4))
    ax.yaxis.set_minor_locator(NullLocator())


def _weight_hist(plots, step, w, ranges, source):
    fig, ax = plots.figure(3.8, 2.1, _HIST_MARGINS)
    flat = w.ravel()
    rmin, rmax = float(ranges.min()), float(ranges.max())
    lim = max(float(np.abs(flat).max()) if flat.size else 0.0, rmax) * 1.05 or 1.0
    ax.hist(flat, bins=np.linspace(-lim, lim, HIST_BINS + 1), color="#4878a8")
    _log_y(ax)
    if rmin == rmax:
        for v in (-rmax, rmax):
            ax.axvline(v, color="#c03030", lw=1)
        label = f"int8 range ±{rmax:.3g}"
    else:
        ax.axvspan(-rmax, -rmin, color="#c03030", alpha=0.15, lw=0, zorder=0)
        ax.axvspan(rmin, rmax, color="#c03030", alpha=0.15, lw=0, zorder=0)
        for v in (-rmax, rmax):
            ax.axvline(v, color="#c03030", lw=1)
        label = f"per-channel int8 ranges ±{rmin:.3g} .. ±{rmax:.3g}"
    outside = int(np.sum(np.abs(w) > ranges[None, :] * (1 + 1 / 254)))
    ax.set_title(_short(f"{step.layer} ({step.op}) weights"), fontsize=8)
    ax.set_xlabel(label + (f"; {outside} beyond their range" if outside else "")
                  + ("" if source == "float model" else f"; {source} weights"), fontsize=7)
    ax.tick_params(labelsize=6)
    return plots.png(fig, f"weights of {step.layer}")


def _activation_hist(plots, step, tensor, hist, qparams, clipped):
    counts, edges, vmin, vmax = hist
    lo, hi = qparams.real_range
    fig, ax = plots.figure(3.8, 2.1, _HIST_MARGINS)
    centers = (edges[:-1] + edges[1:]) / 2
    inside = (centers >= lo - qparams.scale / 2) & (centers <= hi + qparams.scale / 2)
    width = edges[1] - edges[0]
    ax.bar(centers[inside], counts[inside], width=width, color="#4878a8", lw=0)
    if (~inside).any():
        ax.bar(centers[~inside], counts[~inside], width=width, color="#d03030", lw=0,
               label="clipped")
    ax.axvline(lo, color="#c03030", lw=1)
    ax.axvline(hi, color="#c03030", lw=1)
    if counts.any():
        _log_y(ax)
    ax.set_title(_short(f"{step.layer} ({step.op}) output" + (f" '{tensor}'" if tensor != step.layer else "")), fontsize=8)
    ax.set_xlabel(f"int8 range [{lo:.3g}, {hi:.3g}]; float values [{vmin:.3g}, {vmax:.3g}]"
                  + (f"; {100 * clipped:.2f}% clipped" if clipped else ""), fontsize=7)
    ax.tick_params(labelsize=6)
    return plots.png(fig, f"output of {step.layer}")


# -- the page ---------------------------------------------------------------------------------------

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
    if getattr(qm, "float_graph", None) is None:
        raise FixnetError(f"{qm.source or qm.name}: the report compares the int8 network with "
                          "its float model: quantize the Keras model (a .fxn file has no float "
                          "weights)")
    plots = _Plots()
    xs = qm._check_inputs(x)
    xs = _first(xs, max_samples or auto_samples(qm, lengths=qm.lengths_of(xs)))
    n = int(xs[0].shape[0])
    rep = qm.report(xs if len(xs) > 1 else xs[0])
    records = rep.records
    input_sqnr = {t: float(sqnr_db(v, qm.tensors[t].qparams.dequantize(
        qm.tensors[t].qparams.quantize(v)))) for t, v in zip(qm.inputs, xs) if v.dtype != np.int8}
    costs = layer_costs(qm, records, input_sqnr)
    conclusion = conclusion_line(costs, records)
    worst = max(costs, key=lambda c: c["noise_added"])["layer"] if costs else None
    outputs = []
    if eval_x is not None and float_model is not None:
        outputs = output_metrics(qm, float_model, eval_x, labels)

    title = title or qm.name
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>fixnet report: {html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>fixnet int8 report: {html.escape(title)}</h1>"]
    info = list(details or []) + [("samples measured", f"{n} (per-layer numbers and plots)")]
    parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                                     for k, v in info) + "</table>")
    parts.append(f'<p class="conclusion" id="conclusion">{html.escape(conclusion)}</p>')
    parts.append('<p class="note">The layer named is the one adding the most quantization noise '
                 'power (10^(-SQNR/10) against the float model) between its input and its output; '
                 'a Keras layer\'s steps (e.g. a Dense and its softmax) count together.</p>')

    if outputs:
        parts.append("<h2>Outputs on the evaluation data</h2>")
        cols = [("top1_agreement", "top-1 agreement with float %"),
                ("accuracy_float", "float accuracy %"), ("accuracy_int8", "int8 accuracy %")]
        cols = [c for c in cols if any(c[0] in m for m in outputs)]
        rows = [[_cell(m["output"], numeric=False), _cell(m["samples"]), _cell(m["sqnr_db"], ".1f")]
                + [_cell(None if k not in m else 100 * m[k], ".2f") for k, _ in cols]
                for m in outputs]
        parts.append(_table(["output", "samples", "SQNR dB"] + [c[1] for c in cols], rows))

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
    parts.append('<p class="note">SQNR: float model vs dequantized int8 tensor, error accumulated '
                 'from the input. Clipped: share of float values outside the tensor\'s int8 range. '
                 'Saturated: int8 outputs the clamp cut. Headroom: bits below 2^31 of the worst '
                 'int32 accumulator over all inputs (static proof). Weight range use: mean over '
                 'channels of max|w_q|/127.'
                 + (' A softmax\'s input is clipped on purpose below the values that can still '
                    'change its int8 probabilities: judge it by the softmax output\'s SQNR.'
                    if any(r["op"] == "softmax" for r in records) else "") + '</p>')

    labels_ = [f"{r['layer']}" + (f" ({r['op']})" if r["op"] not in r["layer"] else "") for r in records]
    parts.append("<h2>Summary plots</h2><div class='grid'>")
    parts.append(_bar_chart(plots, labels_, [r["sqnr_db"] for r in records],
                            "SQNR against the float model per layer", "dB", "#4878a8"))
    hr = [(lab, r["headroom_bits"]) for lab, r in zip(labels_, records) if r["headroom_bits"] is not None]
    if hr:
        parts.append(_bar_chart(plots, [h[0] for h in hr], [h[1] for h in hr],
                                "int32 accumulator headroom (worst case)", "bits", "#58a058",
                                ref=0.0))
    parts.append(_bar_chart(plots, labels_, [r["saturated"] for r in records],
                            f"int8 saturations per layer ({n} samples)", "count", "#c06030",
                            log=True))
    parts.append("</div>")

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

    weights = _weight_data(qm)
    shown = weights[:MAX_WEIGHT_PLOTS]
    parts.append("<h2>Weights and their int8 ranges</h2>")
    if len(weights) > len(shown):
        parts.append(f'<p class="note">the first {len(shown)} of {len(weights)} weighted layers</p>')
    parts.append("<div class='grid'>")
    for s, w, ranges, source in shown:
        parts.append(_weight_hist(plots, s, w, ranges, source))
    parts.append("</div>")

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
            parts.append(_activation_hist(plots, s, t, hists[t], qm.tensors[t].qparams, clipped))
    parts.append("</div>")
    n_plots = plots.count["svg"] + plots.count["png"]
    parts.append(f'<p class="note" id="plot-count" data-svg="{plots.count["svg"]}" '
                 f'data-png="{plots.count["png"]}">{n_plots} plots; made by fixnet</p>')
    parts.append("</body></html>")
    return HtmlReport("\n".join(parts), conclusion, rep, costs, outputs, dict(plots.count), n)

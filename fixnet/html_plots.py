"""The plots of the HTML report (fixnet/html_report.py): bar charts per layer and histograms of
weights and activations against their int8 ranges, drawn by matplotlib (the optional extra
``plot``, imported on first use) as inline SVG or PNG."""
import base64
import html
import io
import re

import numpy as np

from .errors import FixnetError

HIST_BINS = 60
PNG_DPI = 80


def load_matplotlib():
    """matplotlib's Figure class, imported on first use (the optional extra ``plot``)."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise FixnetError("the HTML report draws its plots with matplotlib: "
                          "pip install 'fixnet[plot]'") from None
    return Figure


class Plots:
    """Figures rendered to inline SVG or PNG data: URIs; counts what it made."""

    def __init__(self):
        self.Figure = load_matplotlib()
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


def bar_chart(plots, labels, values, title, ylabel, color, ref=None, log=False):
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


def weight_hist(plots, step, w, ranges, source):
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


def activation_hist(plots, step, tensor, hist, qparams, clipped):
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

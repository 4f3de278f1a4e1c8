"""Plain-text tables for reports and the command line (rich, imported only when a table is
shown). A leaf: it imports nothing of fixnet."""
import io


def render_table(title, columns, rows, min_width=110):
    """A plain-text table drawn by rich (imported only when a table is shown), as wide as its
    content (at least ``min_width``) so that no cell is cut, with the title on its own line."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    t = Table()
    for i, c in enumerate(columns):
        t.add_column(c, no_wrap=True, justify="left" if i == 0 or c in (
            "layer", "op", "what", "Keras class", "tensor", "kind", "name") else "right")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    wide = Console(width=100000, color_system=None, force_terminal=False)
    width = max(min_width, Measurement.get(wide, wide.options, t).maximum)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(t)
    return "\n".join([title] + [line.rstrip() for line in buf.getvalue().rstrip().splitlines()])


class Statistics:
    """Records of min, max, mean and standard deviation (FloatModel.statistics), printed as
    a table; ``records`` holds the dicts."""

    def __init__(self, title, records):
        self.title = title
        self.records = list(records)

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __str__(self):
        rows = [(r["kind"], r["layer"], r["name"], "x".join(map(str, r["shape"][1:] if
                 r["kind"] == "activation" else r["shape"])), f"{r['min']:.4g}",
                 f"{r['max']:.4g}", f"{r['mean']:.4g}", f"{r['std']:.4g}") for r in self.records]
        return render_table(self.title, ["kind", "layer", "name", "shape", "min", "max", "mean",
                                         "std"], rows)

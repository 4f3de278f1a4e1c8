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
            "layer", "op", "what", "Keras class", "tensor") else "right")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    wide = Console(width=100000, color_system=None, force_terminal=False)
    width = max(min_width, Measurement.get(wide, wide.options, t).maximum)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(t)
    return "\n".join([title] + [line.rstrip() for line in buf.getvalue().rstrip().splitlines()])

"""Reports as structured records (``to_dict``) and as readable tables (``str``)."""
import io


def render_table(title, columns, rows):
    """A plain-text table drawn by rich (imported only when a table is shown)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 or c in ("layer", "op", "what", "Keras class") else "right")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    buf = io.StringIO()
    Console(file=buf, width=110, color_system=None, force_terminal=False).print(t)
    return buf.getvalue().rstrip()


class OverflowReport:
    """Static int32 accumulator bound per layer: worst case over every input, in bits of headroom."""

    def __init__(self, bounds):
        self.records = [{
            "layer": b.layer, "op": b.op, "what": b.what, "channels": int(b.worst.size),
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
        rows = [(r["layer"], r["op"], r["what"], r["worst_abs"], f"{r['headroom_bits']:.1f}",
                 "yes" if r["proven"] else "NO") for r in self.records]
        return render_table("int32 overflow proof (worst case over all int8 inputs)",
                            ["layer", "op", "what", "worst |acc|", "headroom bits", "proven"], rows)

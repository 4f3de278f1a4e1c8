"""Error messages made to fit one line of a table or a note."""
import re


def one_line(text, limit=300):
    """A multi-line message (an error listing layers, say) on one line."""
    return " ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())[:limit]


def first_line(text, limit=300):
    """The first non-blank line of a message, at most `limit` characters."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


def why(text, name, limit=200):
    """An error for a table note: one line, without the model file's path (the row names the
    model), at most `limit` characters."""
    text = re.sub(r"\S*" + re.escape(name) + r"\.h5: ", "", one_line(text, 10_000))
    text = text.rstrip(" :.")
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."

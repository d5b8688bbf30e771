"""Plain-text tables for the terminal and markdown tables for summaries."""
from __future__ import annotations

import math
import re


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def text_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_MARKDOWN_SPECIAL = re.compile(r"([\\`\[\]|])")


def markdown_text(text) -> str:
    """A string shown in markdown on one line, HTML escaped and markdown's link, image, code and table characters
    backslash-escaped, so a name like `<img src=x>`, `![x](http://…)`, `[click](…)`, three backticks or `a|b` can
    neither inject markup nor split a table cell; the text still reads as written."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown_code(text) -> str:
    """`text` as an inline code span on one line (a backtick inside it cannot close the span, a pipe cannot split a
    table cell)."""
    text = " ".join(str(text).split()).replace("|", "¦")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"{fence}{text}{fence}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(c) -> str:
        return markdown_text(c if isinstance(c, str) else fmt(c))

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def drift_text(drift: float | None, interval) -> str:
    """'+0.07 [-0.12, +0.26]': a drift per doubling of the scale with its interval (when there is one)."""
    if drift is None:
        return "–"
    text = f"{drift:+.2f}"
    return text + (f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval is not None else "")


def regret_text(regret: float | None) -> str:
    if regret is None:
        return "–"
    return "∞ (diverged)" if math.isinf(regret) else f"{regret:.3g}"


AXIS_PREFIX = {"width": "w", "depth": "L"}


def scale_text(axis: str, value: int) -> str:
    """A value on an axis, short: 32 (width), 8 (depth), 77k or 1.2M (tokens)."""
    if axis != "tokens":
        return str(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def scale_header(axis: str, value: int) -> str:
    """A column header for the optimum at one value of an axis: w32, L8, 77k tok."""
    return f"{AXIS_PREFIX[axis]}{value}" if axis in AXIS_PREFIX else f"{scale_text(axis, value)} tok"

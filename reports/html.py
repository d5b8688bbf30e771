"""The self-contained HTML report: one file, figures inline as base64 PNG, no script and nothing fetched from outside."""
from __future__ import annotations

import base64
import math
import re
import time
from pathlib import Path

import jinja2

from mupbench.transfer import DEFAULT_TOLERANCE, INTERVAL
from mupbench.reports import plots
from mupbench.reports.summary import AGREEMENT_MARK
from mupbench.reports.tables import scale_header

TEMPLATES = Path(__file__).with_name("templates")


def _num(value, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def _yesno(value) -> str:
    return "–" if value is None else ("yes" if value else "no")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _slug(text: str, i: int) -> str:
    return f"a{i}-" + (re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-")[:40] or "ablation")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(num=_num, yesno=_yesno, duration=_duration, param=plots.param_label)
    return env


def figures(sweep) -> dict:
    """Every figure of the report as a data URI, with what the page says about it."""
    axes = sweep.axes
    palettes = {axis: plots.scale_palette(values) for axis, values in axes.items()}
    out = {"overview": [], "ablations": {}, "coord_checks": []}
    for axis in axes:  # one overview per axis: widths, depths and token counts share no x axis
        entries = [e for e in sweep.entries if e["axis"] == axis]
        if entries:
            out["overview"].append({"axis": axis, "figure": _data_uri(plots.overview_figure(entries, axis=axis))})
    for name in sweep.ablations():
        verdicts = {v.parameterization: v for v in sweep.verdicts if v.ablation == name}
        if not verdicts:
            continue
        axis = next(iter(verdicts.values())).axis
        runs = sweep.runs[(sweep.runs["ablation"] == name) & sweep.runs["status"].isin(["ok", "diverged"])
                          & (sweep.runs["axis"] == axis)]
        lr_png, clipped = plots.lr_sweep_figure(runs, verdicts, palettes[axis], axis)
        curves = sweep.curves[(sweep.curves["ablation"] == name) & (sweep.curves["axis"] == axis)]
        out["ablations"][name] = {
            "lr": _data_uri(lr_png),
            "clipped": clipped,
            "curves": _data_uri(plots.curves_figure(curves, list(verdicts), palettes[axis], axis)),
            "axis": axis,
        }
    for check in (sweep.coord_check or {}).get("checks", []):
        try:
            out["coord_checks"].append((_data_uri(plots.coord_check_figure(check)), None))
        except (ValueError, KeyError, TypeError) as e:
            out["coord_checks"].append((None, f"cannot plot this check: {e}"))
    return out


def render_html(sweep, results: dict) -> str:
    """The report page of a loaded sweep (reports.sweep.SweepData) and its results.json document."""
    meta = results["sweep"]
    entries = results["verdicts"]
    figs = figures(sweep)
    tally = [(k, sum(e["agreement"] == k for e in entries)) for k in AGREEMENT_MARK]
    verdict_tally = [(k, sum(e["verdict"] == k for e in entries)) for k in ("transfers", "shifts", "inconclusive")]
    started = {e["ablation"] for e in entries}
    pending = [p for p in meta["progress"] if p["finished"] == 0]
    sections = []
    for i, name in enumerate(sweep.ablations()):
        rows = [e for e in entries if e["ablation"] == name]
        if not rows:
            continue
        info = sweep.info.get(name, {})
        sections.append({"id": _slug(name, i), "name": name, "info": info, "rows": rows,
                         "figures": figs["ablations"].get(name)})
    checks = []
    for check, (uri, problem) in zip((sweep.coord_check or {}).get("checks", []), figs["coord_checks"]):
        slopes = check.get("slopes", [])
        expected = check.get("expected", "pass")  # an SP check is expected to fail: it shows the check has teeth
        checks.append({"check": check, "figure": uri, "problem": problem, "slopes": slopes, "expected": expected,
                       "as_expected": bool(check.get("passed")) == (expected == "pass"),
                       "failed": [s for s in slopes if not s.get("passed", True)]})
    counts = meta["counts"]
    context = {
        "meta": meta,
        "title": f"mupbench · {', '.join(meta['suites']) or 'sweep'} · {meta['preset'] or 'unknown preset'}",
        "generated_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(sweep.generated_at)),
        "created_at": (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(sweep.created_at))
                       if sweep.created_at else "unknown"),
        "counts": counts,
        "percent": 100.0 * counts["finished"] / counts["planned"] if counts["planned"] else 0.0,
        "entries": entries,
        "axes": meta["axes"],
        "scale_header": scale_header,
        "tally": tally,
        "verdict_tally": verdict_tally,
        "agreement_label": AGREEMENT_MARK,
        "pending": pending,
        "n_started": len(started),
        "overview": figs["overview"],
        "sections": sections,
        "ids": {s["name"]: s["id"] for s in sections},
        "coord_checks": checks,
        "coord_check_error": sweep.coord_check_error,
        "tolerance": sweep.tolerance,
        "delta": sweep.tolerance if sweep.tolerance is not None else DEFAULT_TOLERANCE,
        "interval": INTERVAL,
    }
    return _environment().get_template("report.html").render(**context)

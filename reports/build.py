"""`write_report`: a sweep directory → report.html, results.json, summary.md and junit.xml."""
from __future__ import annotations

from pathlib import Path

from mupbench.errors import UserError
from mupbench.store import atomic_write
from mupbench.reports import junit, results, summary
from mupbench.reports.html import render_html
from mupbench.reports.sweep import load

REPORT_DIR = "report"
FILES = ("report.html", "results.json", "summary.md", "junit.xml")


def output_paths(sweep_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Where the four files go: `out` as a directory, or as the HTML file with the others beside it; default
    DIR/report/."""
    out = Path(out) if out is not None else Path(sweep_dir) / REPORT_DIR
    if out.suffix.lower() in (".html", ".htm"):
        html, folder = out, out.parent
    else:
        html, folder = out / "report.html", out
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a directory: give --out a directory or an .html path")
    return {"report.html": html, **{name: folder / name for name in FILES[1:]}}


def write_report(sweep_dir: str | Path, out: str | Path | None = None, tolerance: float | None = None) -> dict[str, Path]:
    """Read the sweep (store + analysis), write the four report files, and return their paths by name."""
    paths = output_paths(sweep_dir, out)
    sweep = load(sweep_dir, tolerance)
    document = results.results_document(sweep)
    page = render_html(sweep, document)
    paths["report.html"].parent.mkdir(parents=True, exist_ok=True)
    paths["results.json"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write(paths["report.html"], page)
    results.write_results(paths["results.json"], document)
    summary.write_summary(paths["summary.md"], summary.sweep_summary(sweep, document))
    junit.write_junit(paths["junit.xml"], junit.verdict_cases(document["verdicts"]), suite_name=_suite_name(document))
    return paths


def _suite_name(document: dict) -> str:
    meta = document["sweep"]
    return "mupbench." + "+".join(meta["suites"] or ["sweep"]) + (f".{meta['preset']}" if meta["preset"] else "")

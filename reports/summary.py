"""summary.md: a compact markdown summary for a pull-request comment or a CI step summary ($GITHUB_STEP_SUMMARY)."""
from __future__ import annotations

import math
from pathlib import Path

from mupbench.store import atomic_write
from mupbench.transfer import INTERVAL
from mupbench.reports.tables import (
    drift_text,
    fmt,
    markdown_code,
    markdown_table,
    markdown_text,
    regret_text,
    scale_header,
)

AGREEMENT_MARK = {"agree": "✅ agree", "disagree": "❌ disagree", "inconclusive": "⚠️ inconclusive",
                  "no expectation": "no expectation"}


def summary_markdown(title: str, headers: list[str], rows: list[list], intro: list[str] = (),
                     notes: list[str] = ()) -> str:
    """A '### title' heading, intro lines, a markdown table, then notes as a bullet list."""
    parts = [f"### {markdown_text(title)}"]
    if intro:
        parts.append("\n".join(intro))
    parts.append(markdown_table(headers, rows) if rows else "_nothing to show yet_")
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def sweep_summary(sweep, results: dict) -> str:
    """The summary of a loaded sweep (reports.sweep.SweepData) and its results.json document: one table per axis
    swept (width, depth, tokens), each with a column per value of it."""
    meta = results["sweep"]
    entries = results["verdicts"]
    tally = {k: sum(e["agreement"] == k for e in entries) for k in AGREEMENT_MARK}
    c = meta["counts"]
    title = f"mupbench · {', '.join(meta['suites']) or 'sweep'} · {meta['preset'] or '?'}"
    judged = ", ".join(f"{n} {k}" for k, n in tally.items() if n)
    corpus = meta["corpus"]
    text = markdown_text  # names, paths and devices come from the user and the machine
    intro = [
        f"**{judged or 'no verdicts yet'}** (of {len(entries)} verdicts) · "
        f"{c['finished']}/{c['planned']} runs finished ({c['diverged']} diverged, {c['failed']} failed)"
        + ("" if c["complete"] else " · **sweep incomplete**"),
        text(f"device {', '.join(meta['devices']) or '?'} · torch {', '.join(meta['versions'].get('torch', ['?']))} · "
             f"rev {', '.join(meta['git_revs']) or '?'} · "
             f"corpus {corpus['name'] + ' ' + corpus['sha256'][:12] if corpus else '?'}"),
    ]
    tables = []
    for axis, scales in meta["axes"].items():
        rows = []
        for e in (e for e in entries if e["axis"] == axis):
            opt = e["optimal_log2_lr"]
            rows.append([
                e["ablation"], e["parameterization"], e["expected"] if e["expected"] != "unknown" else "–",
                e["verdict"] + ("" if e["complete"] else " (partial)"), AGREEMENT_MARK[e["agreement"]],
                *[fmt(opt.get(str(w))) for w in scales], drift_text(e["drift_per_doubling"], e["drift_interval"]),
                regret_text(math.inf if e["regret_diverged"] else e["transfer_regret"]), e["strict_transfer"],
                e["n_seeds"],
            ])
        if rows:
            headers = ["ablation", "param", "expected", "observed", "agreement",
                       *[scale_header(axis, w) for w in scales], f"drift/2x {axis} [{INTERVAL}]", "regret", "same argmin",
                       "seeds"]
            tables.append((axis, headers, rows))
    notes = [f"{markdown_code(e['ablation'])} {text(e['parameterization'])}: {text(e['reason'])}"
             for e in entries if e["agreement"] in ("disagree", "inconclusive") or not e["complete"]]
    delta = entries[0]["tolerance"] if entries else None
    notes.append("w*N* / L*N* / *N* tok: optimal log2 LR at width *N*, depth *N*, or a training length of *N* tokens; "
                 f"drift: log2 LR per doubling of that axis with its {INTERVAL} interval over seeds (paired bootstrap); "
                 f"transfers when the interval lies within ±δ{f' = ±{delta:g}' if delta is not None else ''}"
                 " and the regret is within noise, shifts when it excludes 0 and |drift| > δ; regret: the largest "
                 "scale's loss at the smallest scale's best LR minus its best (∞: diverged); same argmin: Lingle's "
                 "criterion")
    if not tables:
        return summary_markdown(title, [], [], intro, notes)
    parts = [summary_markdown(title, *tables[0][1:], intro)]
    parts += [f"**{axis}**\n\n" + markdown_table(headers, rows) + "\n" for axis, headers, rows in tables[1:]]
    if len(tables) > 1:
        parts[0] = parts[0].replace("\n\n| ", f"\n\n**{tables[0][0]}**\n\n| ", 1)
    parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(parts)


def write_summary(path: str | Path, text: str) -> Path:
    return atomic_write(path, text)

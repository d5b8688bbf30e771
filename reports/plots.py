"""The report's figures (pandas + seaborn on matplotlib's Agg canvas), returned as PNG bytes.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot, so no global figure state is kept and
no display is needed.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory
from PIL import Image

from mupbench.reports.tables import scale_text
from mupbench.transfer import INTERVAL

DPI = 100
PARAM_LABEL = {"mup": "μP", "sp": "SP"}
PARAM_COLOR = {"mup": "#1f6fb2", "sp": "#d0512a"}
VERDICT_COLOR = {"transfers": "#1a7f37", "shifts": "#b35900", "inconclusive": "#6e7781"}
AGREEMENT_COLOR = {"agree": "#1a7f37", "disagree": "#cf222e", "inconclusive": "#6e7781", "no expectation": "#57606a"}
# The y axis of a loss-vs-LR plot spans the losses within this many grid steps of each width's optimum.
BASIN_STEPS = 2
STYLE = {"axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "legend.title_fontsize": 8}


def param_label(param: str) -> str:
    return PARAM_LABEL.get(param, param)


def scale_palette(scales: list[int]) -> dict[int, tuple]:
    """Sequential colours, light = small, dark = large (narrow/wide, shallow/deep, short/long); the same value has the
    same colour in every figure of its axis."""
    colors = sns.color_palette("crest", n_colors=max(len(scales), 2))
    if len(scales) == 1:
        colors = colors[-1:]
    return dict(zip(scales, colors))


def png(fig: Figure) -> bytes:
    """PNG bytes, reduced to a 256-colour palette: a third of the size, no visible loss for line plots."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08, facecolor="white")
    image = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                     dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()


def _figure(width_in: float, height_in: float) -> Figure:
    return Figure(figsize=(width_in, height_in), layout="constrained")


# --- loss vs learning rate --------------------------------------------------------------------------------------
def _means(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean final loss per (parameterization, scale, log2 LR) over seeds; inf where any seed diverged."""
    return runs.groupby(["parameterization", "scale", "log2_lr"], as_index=False)["final_val_loss"].mean()


def loss_limits(runs: pd.DataFrame) -> tuple[float, float, bool]:
    """(bottom, top, clipped): the y range that shows every scale's basin; `clipped` when higher losses are cut off."""
    means = _means(runs)
    finite = means[np.isfinite(means["final_val_loss"])]
    if finite.empty:
        return 0.0, 1.0, False
    tops = []
    for _, g in finite.groupby(["parameterization", "scale"]):
        g = g.sort_values("log2_lr").reset_index(drop=True)
        i = int(g["final_val_loss"].idxmin())
        tops.append(g["final_val_loss"].iloc[max(0, i - BASIN_STEPS): i + BASIN_STEPS + 1].max())
    lo, hi = float(finite["final_val_loss"].min()), float(max(tops))
    pad = max(0.08 * (hi - lo), 0.02 * abs(lo), 1e-3)
    top = hi + pad
    return lo - pad, top, bool((finite["final_val_loss"] > top).any())


def _parabola_value(x: float, g: pd.DataFrame) -> float:
    """The loss at a refined optimum x: the parabola through the grid argmin and its neighbours (as the analysis)."""
    g = g.sort_values("log2_lr")
    xs, ys = g["log2_lr"].to_numpy(float), g["final_val_loss"].to_numpy(float)
    i = int(np.argmin(np.where(np.isfinite(ys), ys, np.inf)))
    if 0 < i < len(xs) - 1 and np.isfinite(ys[i - 1: i + 2]).all():
        a, b, c = np.polyfit(xs[i - 1: i + 2], ys[i - 1: i + 2], 2)
        if a > 0:
            return float(a * x * x + b * x + c)
    return float(ys[i])


def lr_sweep_figure(runs: pd.DataFrame, verdicts: dict, palette: dict, axis: str = "width") -> tuple[bytes, bool]:
    """Final validation loss vs log2 LR for one ablation: a panel per parameterization (shared y), a line per value
    of the axis (`scale` column: width, depth or tokens), each one's optimum starred, diverged runs as × under the
    top edge, losses above the axis as ▲ on it. Returns (png, whether the y axis clips high losses)."""
    params = list(verdicts)
    bottom, top, clipped = loss_limits(runs)
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", rc=STYLE):
        fig = _figure(4.1 * len(params) + 0.9, 3.2)
        axes = fig.subplots(1, len(params), sharey=True, squeeze=False)[0]
        for ax, param in zip(axes, params):
            v = verdicts[param]
            data = runs[runs["parameterization"] == param]
            finite = data[np.isfinite(data["final_val_loss"])]
            many_seeds = data["seed"].nunique() > 1
            if not finite.empty:
                sns.lineplot(data=finite, x="log2_lr", y="final_val_loss", hue="scale", palette=palette,
                             hue_order=[w for w in palette if w in set(finite["scale"])], marker="o", markersize=4,
                             errorbar=("pi", 100) if many_seeds else None, ax=ax, legend=False, linewidth=1.4)
            edge = blended_transform_factory(ax.transData, ax.transAxes)
            means = _means(data)
            for k, (scale, g) in enumerate(means.groupby("scale")):
                color = palette[int(scale)]
                bad = g[~np.isfinite(g["final_val_loss"])]
                # stacked down from the top edge, one row per scale, so every scale's divergence stays visible
                ax.scatter(bad["log2_lr"], np.full(len(bad), 0.96 - 0.06 * k), marker="x", s=36, color=color,
                           transform=edge, clip_on=False, zorder=5, linewidths=1.6)
                high = g[np.isfinite(g["final_val_loss"]) & (g["final_val_loss"] > top)]
                ax.scatter(high["log2_lr"], np.full(len(high), 0.985), marker="^", s=22, color=color,
                           transform=edge, clip_on=False, zorder=5)
            for o in v.optima:
                if o.optimal_log2_lr is None:
                    continue
                g = means[means["scale"] == o.scale]
                ax.scatter([o.optimal_log2_lr], [_parabola_value(o.optimal_log2_lr, g)], marker="*", s=150,
                           color=palette[o.scale], edgecolor="black", linewidth=0.6, zorder=6)
            ax.set_ylim(bottom, top)
            ax.set_xlabel("log2 learning rate")
            ax.set_ylabel("final validation loss")
            spread = f" · spread {v.spread:.2f}" if v.spread is not None else ""
            ax.set_title(f"{param_label(param)}: {v.verdict}{spread}", color=VERDICT_COLOR.get(v.verdict, "black"),
                         loc="left", fontweight="bold")
            grid = sorted(data["log2_lr"].unique())
            if grid:
                ax.set_xticks(grid)
                ax.set_xticklabels([f"{x:g}" for x in grid])
                ax.set_xlim(grid[0] - 0.4, grid[-1] + 0.4)
        handles = [Line2D([], [], color=palette[w], marker="o", markersize=4, label=scale_text(axis, w))
                   for w in palette if w in set(runs["scale"])]
        handles.append(Line2D([], [], ls="", marker="*", markersize=10, color="grey", markeredgecolor="black",
                              label="optimum"))
        if not np.isfinite(runs["final_val_loss"]).all():
            handles.append(Line2D([], [], ls="", marker="x", markersize=6, color="grey", label="diverged"))
        if clipped:
            handles.append(Line2D([], [], ls="", marker="^", markersize=5, color="grey", label="off scale"))
        fig.legend(handles=handles, title=axis, loc="outside right upper", frameon=False)
        return png(fig), clipped


# --- training curves --------------------------------------------------------------------------------------------
def curves_figure(curves: pd.DataFrame, params: list[str], palette: dict, axis: str = "width") -> bytes:
    """Validation loss vs step of the runs at each scale's grid optimum (seed band with several seeds)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", rc=STYLE):
        fig = _figure(4.1 * len(params) + 0.9, 3.2)
        axes = fig.subplots(1, len(params), sharey=True, squeeze=False)[0]
        for ax, param in zip(axes, params):
            data = curves[(curves["parameterization"] == param) & curves["loss"].notna()]
            if not data.empty:
                sns.lineplot(data=data, x="step", y="loss", hue="scale", palette=palette,
                             hue_order=[w for w in palette if w in set(data["scale"])], marker="o", markersize=3,
                             errorbar=("pi", 100) if data["seed"].nunique() > 1 else None, ax=ax, legend=False,
                             linewidth=1.4)
                for scale, g in data.groupby("scale"):
                    last = g[g["step"] == g["step"].max()]
                    lr = g["log2_lr"].iloc[0]
                    ax.annotate(f"$2^{{{lr:g}}}$", (last["step"].iloc[0], last["loss"].mean()), xytext=(3, 0),
                                textcoords="offset points", fontsize=7, color=palette[int(scale)], va="center")
            else:
                ax.text(0.5, 0.5, "no finished run at an optimum", ha="center", va="center", transform=ax.transAxes,
                        color="grey")
            ax.set_title(f"{param_label(param)}: validation loss at each {axis}'s best LR", loc="left")
            ax.set_xlabel("step")
            ax.set_ylabel("validation loss")
            ax.margins(x=0.12)
        handles = [Line2D([], [], color=palette[w], marker="o", markersize=3, label=scale_text(axis, w))
                   for w in palette if w in set(curves["scale"])]
        if handles:
            fig.legend(handles=handles, title=axis, loc="outside right upper", frameon=False)
        return png(fig)


# --- overview: optimum vs width (or depth, or tokens) for every ablation ----------------------------------------
def overview_figure(entries: list[dict], columns: int = 6, axis: str = "width") -> bytes:
    """Small multiples, one panel per ablation: optimal log2 LR vs log2 of the axis (the entries' scales) per
    parameterization, each optimum with its interval over seeds (transfer.CONFIDENCE) as a bar, and the wedge of drifts within ±δ (the
    tolerance, log2 LR per doubling) around the smallest scale's optimum. Every panel spans the same number of log2
    units, so equal slopes look equal."""
    by_ablation: dict[str, list[dict]] = {}
    for e in entries:
        by_ablation.setdefault(e["ablation"], []).append(e)
    names = list(by_ablation)
    cols = min(columns, len(names))
    rows = math.ceil(len(names) / cols)
    points = {}
    span = 2.0
    for e in entries:
        pts = sorted((int(w), x) for w, x in e["optimal_log2_lr"].items() if x is not None)
        points[(e["ablation"], e["parameterization"])] = pts
        if pts:
            ys = [x for _, x in pts] + [b for iv in e.get("interval", {}).values() for b in iv]
            span = max(span, max(ys) - min(ys) + 1.0)
    all_widths = sorted({w for pts in points.values() for w, _ in pts})
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", rc=STYLE):
        size = 2.25 if len(names) > 3 else 3.2  # a few ablations get bigger panels
        fig = _figure(size * cols, size * 0.87 * rows + 0.5)
        axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, names):
            centre = []
            worst = "agree"
            for e in by_ablation[name]:
                pts = points[(name, e["parameterization"])]
                color = PARAM_COLOR.get(e["parameterization"], "#555555")
                if e["agreement"] == "disagree" or (e["agreement"] == "inconclusive" and worst != "disagree"):
                    worst = e["agreement"]
                if not pts:
                    continue
                xs = [math.log2(w) for w, _ in pts]
                ys = [x for _, x in pts]
                centre.append((max(ys) + min(ys)) / 2)
                reach = np.array([xs[0], xs[-1]])
                ax.fill_between(reach, ys[0] - e["tolerance"] * (reach - xs[0]), ys[0] + e["tolerance"] * (reach - xs[0]),
                                color=color, alpha=0.13, lw=0)
                ax.plot(xs, ys, marker="o", markersize=3.5, color=color, lw=1.5,
                        ls="-" if e["verdict"] != "inconclusive" else ":")
                bars = [(math.log2(int(w)), iv) for w, iv in e.get("interval", {}).items()]
                if bars:
                    ax.vlines([x for x, _ in bars], [iv[0] for _, iv in bars], [iv[1] for _, iv in bars], color=color,
                              lw=1.2, alpha=0.8)
            if centre:
                c = (max(centre) + min(centre)) / 2
                ax.set_ylim(c - span / 2, c + span / 2)
            title_color = AGREEMENT_COLOR["disagree"] if worst == "disagree" else "black"
            mark = {"disagree": " ✗", "inconclusive": " ?"}.get(worst, "")
            ax.set_title(plain_text(_shorten(name, 26)) + mark, color=title_color, fontsize=8.5, loc="left")
            ax.tick_params(labelsize=7, pad=1)
        if all_widths:
            for ax in axes[-1]:
                ax.set_xticks([math.log2(w) for w in all_widths])
                ax.set_xticklabels([scale_text(axis, w) for w in all_widths])
        fig.supxlabel(f"{axis} (log scale)", fontsize=9)
        fig.supylabel("optimal log2 LR", fontsize=9)
        params = sorted({e["parameterization"] for e in entries}, key=lambda p: (p != "mup", p))
        handles = [Line2D([], [], color=PARAM_COLOR.get(p, "#555555"), marker="o", markersize=3.5,
                          label=f"{param_label(p)} optimum, {INTERVAL} interval (shaded: drift within ±δ)") for p in params]
        handles.append(Line2D([], [], color="grey", ls=":", label="inconclusive"))
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False, fontsize=8)
        return png(fig)


def plain_text(text) -> str:
    """A user's string (an ablation or module name) shown as written: `$` would start matplotlib's mathtext."""
    return str(text).replace("$", r"\$")


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --- coordinate check -------------------------------------------------------------------------------------------
def coord_check_figure(check: dict) -> bytes:
    """One panel per step (a row per quantity recorded), one line per module: mean |x| vs width, log-log."""
    records = pd.DataFrame(check.get("records", []))
    if records.empty:
        raise ValueError("a coord check without records has nothing to plot")
    quantities = [q for q in ("mean_abs", "mean_abs_delta") if q in records and records[q].notna().any()]
    steps = sorted(records["step"].unique())
    failed = {(s.get("module"), s.get("step"), s.get("quantity", "mean_abs"))
              for s in check.get("slopes", []) if not s.get("passed", True)}
    modules = list(dict.fromkeys(records["module"]))
    colors = dict(zip(modules, sns.color_palette("husl" if len(modules) > 10 else "tab10", len(modules))))
    label = {"mean_abs": "mean |x|", "mean_abs_delta": "mean |Δx|"}
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", rc=STYLE):
        fig = _figure(2.5 * len(steps) + 1.8, 2.3 * len(quantities) + 0.3)
        axes = fig.subplots(len(quantities), len(steps), sharex=True, sharey="row", squeeze=False)
        for r, q in enumerate(quantities):
            for c, step in enumerate(steps):
                ax = axes[r][c]
                data = records[(records["step"] == step) & records[q].notna() & (records[q] > 0)]
                if data.empty:
                    ax.text(0.5, 0.5, "nothing to plot", ha="center", va="center", transform=ax.transAxes, color="grey")
                for module, g in data.groupby("module", sort=False):
                    g = g.groupby("width", as_index=False)[q].mean()  # several seeds: their mean per width
                    bad = (module, step, q) in failed
                    ax.plot(g["width"], g[q], marker="o", markersize=3, color=colors[module], lw=2.0 if bad else 1.1,
                            ls="--" if bad else "-")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"step {step}", loc="left")
                if c == 0:
                    ax.set_ylabel(label[q])
                if r == len(quantities) - 1:
                    ax.set_xlabel(check.get("axis", "width"))
        widths = sorted(records["width"].unique())
        for ax in axes[-1]:
            ax.set_xticks(widths)
            ax.set_xticklabels([str(w) for w in widths])
            ax.minorticks_off()
        handles = [Line2D([], [], color=colors[m], marker="o", markersize=3, label=plain_text(m)) for m in modules]
        if failed:
            handles.append(Line2D([], [], color="grey", ls="--", lw=2.0, label="slope check failed"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=7)
        return png(fig)

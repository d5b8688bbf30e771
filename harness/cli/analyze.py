"""`mupbench analyze`: the optimal LR per width (or depth, or duration) and a transfer verdict per (ablation,
parameterization)."""
from __future__ import annotations

import json

from mupbench.cli.args import tolerance
from mupbench.transfer import DEFAULT_TOLERANCE, INTERVAL
from mupbench.reports.tables import drift_text, regret_text, scale_header, text_table


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="optimal LR per width, depth or duration and transfer verdicts of a sweep")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print JSON: {'verdicts': [...]}")
    p.add_argument("--tolerance", type=tolerance, default=None,
                   help=f"δ: the drift of the optimum (log2 LR per doubling of width, depth or tokens) that still counts as transferring "
                        f"(default {DEFAULT_TOLERANCE:g})")
    p.set_defaults(func=cmd_analyze)


def load_verdicts(sweep_dir, delta=None):
    """The verdicts of a sweep directory (mupbench.transfer.analyze checks δ)."""
    from mupbench.store import Store
    from mupbench.transfer import analyze

    store = Store(sweep_dir)
    runs = store.runs()
    store.close()
    return analyze(runs, delta)


def cmd_analyze(args) -> int:
    verdicts = load_verdicts(args.dir, args.tolerance)
    if args.json:
        print(json.dumps({"verdicts": [v.to_json() for v in verdicts]}, indent=1))
        return 0
    print_table(verdicts)
    return 0


def print_verdicts(sweep_dir, delta) -> int:
    print_table(load_verdicts(sweep_dir, delta))
    return 0


def print_table(verdicts) -> None:
    """One table per axis swept (width, depth, tokens), a column per value of it."""
    for axis in dict.fromkeys(v.axis for v in verdicts):
        group = [v for v in verdicts if v.axis == axis]
        scales = sorted({w for v in group for w in v.scales})
        rows = []
        for v in group:
            opt = v.optimal_log2_lr
            rows.append([v.ablation, v.parameterization, v.verdict, *[opt.get(w) for w in scales],
                         drift_text(v.drift_per_doubling, v.drift_interval), regret_text(v.transfer_regret),
                         v.strict_transfer, v.n_seeds, v.n_runs])
        print(text_table(["ablation", "param", "verdict", *[scale_header(axis, w) for w in scales],
                          f"drift/2x {axis} [{INTERVAL}]", "regret", "same argmin", "seeds", "runs"], rows))
        for v in group:
            if v.verdict == "inconclusive" or v.notes:
                print(f"  {v.ablation}/{v.parameterization}: " + "; ".join([v.reason] * (v.verdict == "inconclusive")
                                                                             + v.notes))
        print()
    tol = verdicts[0].tolerance if verdicts else DEFAULT_TOLERANCE
    print(f"columns w<N> / L<N> / <N> tok: optimal log2 LR at width N, depth N or N training tokens (seed-mean curves); "
          f"drift: log2 LR per doubling of that axis with its {INTERVAL} interval over seeds; transfers when the interval lies "
          f"within ±{tol:g} (δ), shifts when it excludes 0 and |drift| > δ; regret: the largest scale's loss at the "
          "smallest scale's best LR minus its best (∞: diverged); same argmin: Lingle's criterion; seeds, runs: what the "
          "verdict rests on (sequential seeds included)")

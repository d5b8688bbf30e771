"""`mupbench analyze`: the optimal LR per width and a transfer verdict per (ablation, parameterization)."""
from __future__ import annotations

import json

from harness.cli.args import tolerance
from harness.errors import UserError
from reports.tables import text_table


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="optimal LR per width and transfer verdicts of a sweep")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print JSON: {'verdicts': [...]}")
    p.add_argument("--tolerance", type=tolerance, default=None, help="allowed spread of optima in log2 LR (default one grid step)")
    p.set_defaults(func=cmd_analyze)


def load_verdicts(sweep_dir, tolerance=None):
    from harness.store import Store
    from harness.transfer import analyze

    if tolerance is not None and not tolerance >= 0:
        raise UserError(f"--tolerance must be >= 0, got {tolerance}")
    store = Store(sweep_dir)
    runs = store.runs()
    store.close()
    return analyze(runs, tolerance)


def cmd_analyze(args) -> int:
    verdicts = load_verdicts(args.dir, args.tolerance)
    if args.json:
        print(json.dumps({"verdicts": [v.to_json() for v in verdicts]}, indent=1))
        return 0
    print_table(verdicts)
    return 0


def print_verdicts(sweep_dir, tolerance) -> int:
    print_table(load_verdicts(sweep_dir, tolerance))
    return 0


def print_table(verdicts) -> None:
    widths = sorted({w for v in verdicts for w in v.widths})
    rows = []
    for v in verdicts:
        opt = v.optimal_log2_lr
        rows.append([v.ablation, v.parameterization, v.verdict, *[opt.get(w) for w in widths],
                     v.drift_per_doubling, v.transfer_regret, v.wider_is_better])
    print(text_table(["ablation", "param", "verdict", *[f"w{w}" for w in widths], "drift/2x", "regret", "wider better"],
                     rows))
    for v in verdicts:
        if v.verdict == "inconclusive":
            print(f"  {v.ablation}/{v.parameterization}: {v.reason}")
    print("\ncolumns w<N>: optimal log2 LR at width N; drift: log2 LR per width doubling; "
          "regret: largest width's loss at the smallest width's best LR minus its best")

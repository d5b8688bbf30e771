"""`mupbench export DIR`: a sweep's runs as a table (CSV, Parquet or JSON lines) for a notebook.

One row per stored run: every setting (the store's columns and the whole run spec flattened: model.*, train.*,
data.*, extra.*), status, final_val_loss (inf: diverged; empty: failed), wall time — the frame
`mupbench.transfer.analyze_frame` takes, so the verdicts can be redone from the file. With --curves, the loss curves
in long form beside it: one row per (run, step, split) with the run's settings.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from mupbench.errors import UserError

FORMATS = ("csv", "parquet", "jsonl")
PARQUET_HINT = 'pip install "mupbench[parquet]"'
CURVE_KEYS = ["run_hash", "ablation", "parameterization", "axis", "width", "depth", "steps", "tokens", "lr", "log2_lr",
              "seed", "status"]


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a sweep's runs (and curves) as a table: csv, parquet or jsonl")
    p.add_argument("dir", help="a sweep directory")
    p.add_argument("--format", default="csv", choices=FORMATS, help="csv | parquet | jsonl (default csv)")
    p.add_argument("--curves", action="store_true",
                   help="also write the loss curves in long form (run, step, split, loss), beside the runs as "
                        "<name>-curves.<format>")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the runs' file (default DIR/runs.<format>); - writes the runs to standard output (csv, jsonl)")
    p.set_defaults(func=cmd_export)


def runs_frame(store) -> pd.DataFrame:
    """One row per stored run: the store's columns, then the run spec flattened (model.width, train.lr, ...)."""
    runs = store.runs()
    specs = pd.json_normalize([json.loads(s) for s in runs["spec"]]) if len(runs) else pd.DataFrame()
    specs.index = runs.index
    runs = runs.drop(columns=["spec"])
    return pd.concat([runs, specs.drop(columns=[c for c in specs.columns if c in runs.columns])], axis=1)


def curves_frame(store, runs: pd.DataFrame) -> pd.DataFrame:
    """The loss curves in long form, each point with its run's settings."""
    curves = store.curves().sort_values(["run_hash", "split", "step"], kind="stable")
    return runs[CURVE_KEYS].merge(curves, on="run_hash", how="inner")


def _jsonl(frame: pd.DataFrame) -> str:
    """JSON lines; a missing value is null and a diverged run's loss Infinity (read back as inf by json and pandas)."""
    def value(x):
        if hasattr(x, "item"):  # numpy scalars
            x = x.item()
        if isinstance(x, float) and math.isnan(x):
            return None
        return x

    return "".join(json.dumps({k: value(v) for k, v in row.items()}) + "\n" for row in frame.to_dict("records"))


def write(frame: pd.DataFrame, path: Path | None, fmt: str) -> None:
    """Write `frame` as `fmt` to `path` (None: standard output), atomically: a reader sees the old file or the new."""
    from mupbench.store import atomic_write

    if fmt == "parquet":
        atomic_write(path, writer=lambda f: frame.to_parquet(f, index=False))
        return
    text = frame.to_csv(index=False) if fmt == "csv" else _jsonl(frame)
    if path is None:
        sys.stdout.write(text)
    else:
        atomic_write(path, text)


def cmd_export(args) -> int:
    from mupbench.store import Store

    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError(f"--format parquet needs pyarrow, which is not installed here: {PARQUET_HINT}") from None
    to_stdout = args.out == "-"
    if to_stdout and args.format == "parquet":
        raise UserError("--format parquet cannot go to standard output: give --out FILE")
    if to_stdout and args.curves:
        raise UserError("--curves writes a second file: give --out FILE (or leave it out) instead of -")
    sweep_dir = Path(args.dir)
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir} is not a directory: give a sweep directory (`mupbench run --out DIR` made it)")
    out = None if to_stdout else Path(args.out) if args.out else sweep_dir / f"runs.{args.format}"
    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a directory: give a file path")
    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out {out}: its directory {out.parent} does not exist")
    store = Store(sweep_dir)
    try:
        runs = runs_frame(store)
        curves = curves_frame(store, runs) if args.curves else None
    finally:
        store.close()
    write(runs, out, args.format)
    if out is not None:
        print(f"runs: {out} ({len(runs)} rows)")
    if curves is not None:
        path = out.with_name(f"{out.stem}-curves{out.suffix}")
        write(curves, path, args.format)
        print(f"curves: {path} ({len(curves)} rows)")
    return 0

"""`mupbench bench kernels`: time the Triton kernels against torch on a CUDA GPU (kernels/bench.py measures)."""
from __future__ import annotations

from pathlib import Path

from harness.cli.args import Parser


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the Triton kernels against torch on a CUDA GPU")
    what = p.add_subparsers(dest="what", parser_class=Parser, required=True, metavar="kernels")
    k = what.add_parser("kernels", help="RMSNorm, attention and the training step vs torch eager, compile and SDPA")
    k.add_argument("--out", type=Path, default=Path("reports/benchmarks"),
                   help="directory for the JSON and markdown results (default: reports/benchmarks)")
    k.add_argument("--quick", action="store_true", help="fewer shapes and shorter timings: a smoke run of a few minutes")
    k.set_defaults(func=cmd_bench_kernels)


def cmd_bench_kernels(args) -> int:
    from kernels.bench import run

    return run(args.out, quick=args.quick)

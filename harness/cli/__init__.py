"""The `mupbench` command line — the top floor: the only place that parses arguments, prints tables and turns a
`UserError` into one line and exit status 2. One module per command; the work is done by the modules below.

    args.py         shared parsing (the one-line-error parser, numbers, lists, --model, ablation selection)
    run.py          run, status
    analyze.py      analyze
    explain.py      explain, list
    report.py       report
    coord_check.py  coord-check
    gate.py         gate
    bench.py        bench kernels
"""
from __future__ import annotations

import sys

from harness.cli import analyze, bench, coord_check, explain, gate, report, run
from harness.cli.args import Parser
from harness.errors import UserError

COMMANDS = [run, analyze, explain, report, coord_check, gate, bench]


def build_parser() -> Parser:
    parser = Parser(prog="mupbench", description="μP learning-rate transfer benchmark")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args)
    except UserError as e:
        print(f"mupbench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0

"""`mupbench report DIR`: the report of a finished or partial sweep; also written at the end of `mupbench run`."""
from __future__ import annotations

from mupbench.cli.args import tolerance
from mupbench.transfer import DEFAULT_TOLERANCE


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="HTML report, results.json, summary.md and junit.xml of a sweep")
    p.add_argument("dir", help="sweep directory")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="a directory for the four files, or the .html path with the others beside it "
                        "(default DIR/report/)")
    p.add_argument("--tolerance", type=tolerance, default=None,
                   help="δ: the drift of the optimum, log2 LR per width doubling, that still counts as transferring "
                        f"(default {DEFAULT_TOLERANCE:g})")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from mupbench.directory import check_writable
    from mupbench.reports.build import output_paths, write_report  # plotting libraries load only when a report is written

    folder = output_paths(args.dir, args.out)["results.json"].parent
    check_writable(folder, "--out" if args.out else "the report directory")  # before the work, not after it
    print_paths(write_report(args.dir, args.out, args.tolerance))
    return 0


def print_paths(paths: dict) -> None:
    print("report: " + paths["report.html"].as_posix())
    for name in ("results.json", "summary.md", "junit.xml"):
        print(f"        {paths[name].as_posix()}")

"""`mupbench bench kernels` (time the Triton kernels against torch on a CUDA GPU; kernels/bench.py measures) and
`mupbench bench tune` (time or compile every candidate kernel config; kernels/tune.py)."""
from __future__ import annotations

from pathlib import Path

from mupbench.cli.args import Parser
from mupbench.errors import UserError
from mupbench.reports.tables import text_table


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the Triton kernels against torch on a CUDA GPU, or tune their configs")
    what = p.add_subparsers(dest="what", parser_class=Parser, required=True, metavar="kernels|tune")
    k = what.add_parser("kernels", help="RMSNorm, attention and the training step vs torch eager, compile and SDPA")
    k.add_argument("--out", type=Path, default=Path("reports/benchmarks"),
                   help="directory for the JSON and markdown results (default: reports/benchmarks)")
    size = k.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer shapes and shorter timings: a smoke run")
    size.add_argument("--lease", action="store_true",
                      help="every baseline at the target shapes, short timings: about three minutes (scripts/gpu-check "
                           "--lease runs it)")
    k.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph timings")
    k.add_argument("--no-train-step", action="store_true", help="skip the training-step benchmark")
    k.set_defaults(func=cmd_bench_kernels)
    t = what.add_parser("tune", help="time every candidate attention config; write a table to pin (kernels/pinned.py)")
    t.add_argument("--out", type=Path, default=None,
                   help="JSON file for the tuned table (default: reports/benchmarks/pinned-configs-<gpu>.json)")
    t.add_argument("--quick", action="store_true", help="only the first two shapes")
    t.add_argument("--compile-only", action="store_true",
                   help="no GPU needed: compile every candidate for sm_90 as the JIT would and print registers, "
                        "spill bytes, shared memory and MMA instructions")
    t.set_defaults(func=cmd_bench_tune)


def cmd_bench_kernels(args) -> int:
    from mupbench.kernels.bench import run

    train_step = None
    if not args.no_train_step:
        from mupbench.train_bench import measure_train_step as train_step
    size = "quick" if args.quick else "lease" if args.lease else "full"
    return run(args.out, size=size, train_step=train_step, graphs=not args.no_graphs)


def cmd_bench_tune(args) -> int:
    from mupbench.kernels import bench, tune

    if args.compile_only:
        rows = tune.compile_report()
        print(text_table(["kernel", "config", "head dim", "registers", "spill bytes", "shared KB", "MMA",
                          "kept at this head dim"],
                         [[r["kernel"], r["config"], r["head_dim"], r.get("registers", "-"), r.get("spill_bytes", "-"),
                           r.get("smem_kb", "-"), r.get("mma", r.get("error", "-")), "yes" if r["fits"] else "no"]
                          for r in rows]))
        return 0
    reason = bench.unavailable_reason()
    if reason:
        raise UserError(reason.removeprefix("mupbench: error: ").replace("bench kernels", "bench tune"))
    import torch

    result = tune.tune(quick=args.quick)
    out = args.out or Path("reports/benchmarks") / f"pinned-configs-{bench._slug(torch.cuda.get_device_name())}.json"
    print(f"wrote {tune.write(result, out)}: set MUPBENCH_KERNEL_CONFIGS to it, or copy its entries to kernels/pinned.py")
    return 0

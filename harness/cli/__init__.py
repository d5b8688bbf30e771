"""The `mupbench` command line — the top floor: the only place that parses arguments, prints tables and turns errors
into exit codes. One module per command; the work is done by the modules below.

Exit codes mean one thing in every command:

    0    pass (or the command did what was asked)
    1    a judged regression (`gate`, a drifting μP `coord-check`, a sweep in which no run finished)
    2    a usage or input error: one line `mupbench: error: …`, before any work where it can be found before
    3    an internal error (an exception nobody anticipated): one line, the full traceback saved to a file it names
    130  interrupted (Ctrl-C)

    args.py         shared parsing (the one-line-error parser, numbers, lists, --model, ablation selection)
    ablation_code.py  the code behind user ablations: carried by their runs, checked against a sweep directory
    run.py          run, status
    analyze.py      analyze
    explain.py      explain, list
    report.py       report
    export.py       export (the runs as a table: csv, parquet, jsonl)
    coord_check.py  coord-check
    gate.py         gate
    bench.py        bench kernels, bench tune
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
import time
import traceback

from mupbench.cli.args import Parser
from mupbench.errors import UserError


def commands() -> list:
    """The command modules, imported when the parser is built: inside `main`, where Ctrl-C is handled."""
    from mupbench.cli import analyze, bench, coord_check, explain, export, gate, report, run

    return [run, analyze, explain, report, export, coord_check, gate, bench]


def build_parser() -> Parser:
    parser = Parser(prog="mupbench", description="μP learning-rate transfer benchmark")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for command in commands():
        command.add_parser(sub)
    return parser


class _Interrupts:
    """Ctrl-C raises KeyboardInterrupt as usual, and is remembered: library code that swallows the interrupt (an
    import cut short) and then fails some other way still ends as an interrupt, exit 130, not a traceback."""

    def __init__(self, exiting: bool = False):
        self.seen = False
        self.previous = None
        self.exiting = exiting  # the process ends next: a Ctrl-C from here on cannot undo the work done

    def __enter__(self):
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # leave an ignored SIGINT ignored
            try:
                self.previous = signal.signal(signal.SIGINT, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN if self.exiting else self.previous)
        return False


def entry() -> None:
    """The `mupbench` command (and `python -m mupbench.cli`): main's exit status, which a Ctrl-C arriving while the
    interpreter shuts down after the work is done cannot turn into a death by SIGINT."""
    sys.exit(main(exiting=True))


def main(argv: list[str] | None = None, exiting: bool = False) -> int:
    with _Interrupts(exiting) as interrupts:
        try:
            return _main(argv)
        except KeyboardInterrupt:  # files are written atomically, runs stored in transactions: nothing half-written
            print("\nmupbench: interrupted", file=sys.stderr)
            return 130
        except Exception as e:
            if interrupts.seen:
                print("\nmupbench: interrupted", file=sys.stderr)
                return 130
            return internal_error(e, sys.argv[1:] if argv is None else argv)


INTERNAL_ERROR = 3


def internal_error(e: BaseException, argv: list[str]) -> int:
    """Exit 3 for an exception nobody anticipated: one line naming it and the file holding its full traceback (in
    $TMPDIR, so a read-only or full sweep directory cannot lose it)."""
    where = "not saved"
    try:
        fd, path = tempfile.mkstemp(prefix=f"mupbench-traceback-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"mupbench {' '.join(map(str, argv))}\n\n")
            traceback.print_exception(type(e), e, e.__traceback__, file=f)
        where = f"saved to {path}"
    except OSError:
        pass
    text = " ".join(f"{type(e).__name__}: {e}".split())
    text = text if len(text) <= 300 else text[:297] + "..."
    print(f"mupbench: internal error: {text} (traceback {where}); please report it with that file", file=sys.stderr)
    return INTERNAL_ERROR


def _main(argv: list[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        try:
            return args.func(args)
        except SystemExit as e:
            # A command returns its status; an exit from inside one is user code's (a model, an ablations file).
            raise UserError(f"user code called sys.exit({e.code!r}) inside `mupbench {args.command}`: "
                            "remove the exit from your model or ablations file") from None
    except UserError as e:
        print(f"mupbench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:  # the disk, not the input: full, read-only, gone
        print(f"mupbench: error: {os_error(e)}", file=sys.stderr)
        return 2


def os_error(e: OSError) -> str:
    """One line for an OSError that reached the top: what failed on which file, and what to do."""
    where = f" {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"disk full while writing{where}: free some space and run the same command again (finished runs are kept)"
    if e.errno == errno.EROFS:
        return f"read-only file system:{where} cannot be written: choose a writable directory"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}: choose a directory you can write in"
    return f"{e.strerror or e}{':' + where if where else ''}"

"""Command line of vmap_core: ``python -m vmap_core`` or ``vmap-core``.

Each subcommand is a function in ``COMMANDS`` that adds its parser to the
subparsers and sets ``func`` (parsed args -> exit code).  With no
subcommand (no arguments, or options only), ``DEFAULT_COMMAND`` runs.  rich, when
installed (``pip install vmap_core[bench]``), draws the progress bar and
tables; without it the output is plain text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap

from . import __version__

DEFAULT_COMMAND = "usercopy"
PAGE_SIZE = 4096  # usercopy_cell's buffers are whole pages


# -- argument types -----------------------------------------------------------

def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    return 0 if s.strip() == "0" else _positive_int(s)


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite: {s!r}")
    return v


def _int_list(s: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]: positive, sorted, without duplicates."""
    counts = sorted({_positive_int(tok) for tok in s.split(",") if tok.strip()})
    if not counts:
        _raise(f"empty list: {s!r}")
    return counts


def _mode_list(s: str) -> list[str]:
    """'node,global' -> ['node', 'global']: known modes, in order, without duplicates."""
    from .usercopy import MODES
    modes = list(dict.fromkeys(m.strip() for m in s.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        _raise(f"unknown mode(s) {', '.join(bad) or '(none given)'}; "
               f"choose from {','.join(MODES)}")
    return modes


def _raise(msg: str):
    raise argparse.ArgumentTypeError(msg)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help says what happens)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


# -- output helpers -----------------------------------------------------------

def _rich_console(stderr: bool = False):
    """A rich Console, or None where rich is not installed."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(stderr=stderr)


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


@contextlib.contextmanager
def _progress_bar(desc: str):
    """Yield a callback ``(done, total, cell)`` that draws a transient bar on stderr."""
    err = _rich_console(stderr=True)
    if err is not None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task(desc, total=None)

            def update(done, total, cell):
                what = f"{desc}: {cell[0]}, {_threads(cell[1])}" if cell else desc
                bar.update(task, completed=done, total=total, description=what)
            yield update
        return
    tty = sys.stderr.isatty()

    def plain(done, total, cell):
        if tty:
            n = 30 * done // max(total, 1)
            what = f"{cell[0]}, {_threads(cell[1])}" if cell else "done"
            sys.stderr.write(f"\r{desc} [{'#' * n}{'.' * (30 - n)}] {done}/{total} {what:<24}")
            sys.stderr.flush()
    try:
        yield plain
    finally:
        if tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# -- usercopy -----------------------------------------------------------------

def _add_usercopy(sub) -> None:
    p = sub.add_parser(
        "usercopy", formatter_class=_Help,
        help="lookup lock contention of hardened-usercopy copies, per lock mode",
        description="Model of the kernel series' workload: native threads (no GIL) copy "
        "through vmalloc'ed buffers, each copy checked by a lookup of its area, while a "
        "writer allocates and frees areas; requests/s per lock mode and thread count.")
    p.add_argument("--buffers", type=_positive_int, default=1000,
                   help="areas allocated in the space (wrk's 1000 connections)")
    p.add_argument("--threads", type=_int_list, default=None, metavar="N,N,...",
                   help="thread counts to run (default: 1, 2, 4, ... up to 2x the CPU count)")
    p.add_argument("--copy-size", type=_positive_int, default=1024,
                   help="bytes copied per request (nginx's default page plus headers)")
    p.add_argument("--buffer-size", type=_positive_int, default=65536,
                   help="bytes of each buffer, a multiple of 4096")
    p.add_argument("--churn-us", type=_positive_int, default=100,
                   help="the writer allocates and frees one area every this many microseconds")
    p.add_argument("--seconds", type=_positive_float, default=0.5,
                   help="run time of each cell in each round")
    p.add_argument("--rounds", type=_positive_int, default=3,
                   help="interleaved repetitions of the sweep; each cell keeps its best")
    p.add_argument("--modes", type=_mode_list,
                   default="nocheck,unlocked,global,node,rwlock,optimistic",
                   metavar="MODE,...", help="lock modes to run")
    p.add_argument("--work-ns", type=_nonneg_int, default=0,
                   help="extra CPU work per request besides the copy, in nanoseconds")
    p.add_argument("--nr-nodes", type=_positive_int, default=None,
                   help="busy-tree nodes (default: the kernel's rule, CPUs clamped to 1..128)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--plot", metavar="PATH",
                   help="write a PNG of requests/s against threads (needs vmap_core[plot])")
    p.set_defaults(func=_cmd_usercopy, parser=p)


def _cmd_usercopy(args) -> int:
    from . import usercopy as uc
    if args.buffer_size % PAGE_SIZE:
        args.parser.error(f"--buffer-size must be a multiple of the page size, {PAGE_SIZE}")
    if args.copy_size > args.buffer_size:
        args.parser.error(f"--copy-size {args.copy_size} exceeds --buffer-size {args.buffer_size}")
    for opt, path in (("--json", args.json), ("--plot", args.plot)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            args.parser.error(f"{opt} {path}: no such directory")
    if args.plot:
        try:
            uc.require_matplotlib()
        except uc.MissingExtra as e:
            print(f"vmap-core: {e}", file=sys.stderr)
            return 2
    threads = args.threads or uc.default_threads()
    cell = {k: getattr(args, k) for k in ("buffers", "buffer_size", "copy_size", "seconds",
                                          "churn_us", "work_ns", "nr_nodes", "rounds")}
    try:
        with _progress_bar("usercopy") as progress:
            rows = uc.run_sweep(args.modes, threads, progress=progress, **cell)
    except (RuntimeError, ValueError, MemoryError) as e:
        print(f"vmap-core: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vmap-core: interrupted", file=sys.stderr)
        return 130
    work = f", work {args.work_ns} ns" if args.work_ns else ""
    title = (f"usercopy: {args.buffers} buffers of {args.buffer_size} B, copies of "
             f"{args.copy_size} B, churn {args.churn_us} us{work}, best of {args.rounds} x "
             f"{args.seconds:g} s/cell")
    out = _rich_console()
    if out is not None:
        out.print(uc.format_table(rows, title=title))
        out.print()
        out.print(uc.summary(rows), markup=False)
    else:
        print(title, uc.format_text(rows), "", textwrap.fill(uc.summary(rows)), sep="\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(uc.to_json(rows, {**cell, "modes": args.modes, "threads": threads}),
                      f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        uc.plot(rows, args.plot, title=title)
        print(f"wrote {args.plot}")
    return 0


# -- entry point --------------------------------------------------------------

from .cli_info import _add_info  # noqa: E402  (info, map, replay: their own modules)
from .cli_map import _add_map  # noqa: E402
from .cli_replay import _add_replay  # noqa: E402
from .cli_test_vmalloc import add_test_vmalloc as _add_test_vmalloc  # noqa: E402

COMMANDS = [_add_usercopy, _add_info, _add_map, _add_test_vmalloc, _add_replay]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every subcommand in ``COMMANDS``."""
    ap = argparse.ArgumentParser(
        prog=prog or "vmap-core",
        description="vmap_core: the Linux vmalloc address-space allocator. "
        f"With no command (or options only), runs '{DEFAULT_COMMAND}'.")
    ap.add_argument("--version", action="version", version=f"vmap_core {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return ap


def main(argv=None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, DEFAULT_COMMAND)  # options alone go to the default command
    try:
        parser = build_parser(prog)
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.error("a command is needed")
        return args.func(args)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)

"""``python -m vmap_core test-vmalloc``: the scenarios of Linux lib/test_vmalloc.c.

The command's parser, runner and table; the scenarios and their driver are
in :mod:`vmap_core.kernel.scenarios`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
import time
from typing import Any

from . import common

NAME = "test-vmalloc"
INT_MAX = (1 << 31) - 1          # the module's default run_test_mask


def add_parser(sub: Any) -> None:
    from ..kernel import scenarios as tv
    tests = "; ".join(f"{1 << i}: {s.name}" for i, s in enumerate(tv.SCENARIOS))
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="the scenarios of Linux lib/test_vmalloc.c, per lock mode",
        description="The kernel's vmalloc test module over a space laid out like x86-64's "
        "vmalloc range (32 TiB): its scenarios, parameters and summary (passed/failed, "
        "average microseconds per test), on a fresh space for each lock mode, with Python "
        "threads sharing the space.  Afterwards everything lazy or pooled is purged, "
        "check() must pass and the space must be empty.  Exit status 1 when a scenario "
        "did not do what it should or the space is not sound.  Integers are read as the "
        f"kernel reads module parameters: decimal, 0x hexadecimal, 0 octal.  Tests: {tests}.")
    p.add_argument("--run-test-mask", type=common.kernel_int, default=INT_MAX, metavar="MASK",
                   help="scenarios to run, a bit each (0x7ff: all eleven)")
    p.add_argument("--nr-threads", type=common.kernel_int, default=0, metavar="N",
                   help="workers, clamped to 1..65535 as the kernel does")
    p.add_argument("--test-loop-count", type=common.kernel_int,
                   default=tv.DEFAULT_TEST_LOOP_COUNT, metavar="N",
                   help=f"loops of each looping scenario (kernel default "
                   f"{tv.KERNEL_TEST_LOOP_COUNT:,}; scaled down for Python)")
    p.add_argument("--test-repeat-count", type=common.kernel_int, default=1, metavar="N",
                   help="runs of each scenario per worker")
    p.add_argument("--sequential-test-order", type=common.kernel_bool, nargs="?", const=True,
                   default=False, metavar="BOOL",
                   help="run the scenarios in mask order instead of shuffled per worker")
    p.add_argument("--nr-pages", type=common.kernel_int, default=0, metavar="N",
                   help="pages of fix_size_alloc_test and vm_map_ram_test (0: one)")
    p.add_argument("--use-huge", type=common.kernel_bool, nargs="?", const=True, default=False,
                   metavar="BOOL", help="vmalloc_huge in fix_size_alloc_test")
    p.add_argument("--locks", type=common.lock_list, default=None, metavar="LOCK,...",
                   help="lock modes, a fresh space each (default: node,global,rwlock,"
                   "optimistic; node alone with --reference)")
    p.add_argument("--reference", action="store_true",
                   help="run on the pure-Python ReferenceSpace instead of the core")
    p.add_argument("--seed", type=common.kernel_int, default=None,
                   help="seed of the random draws (default: a fresh one, printed)")
    p.add_argument("--kernel-log", action="store_true",
                   help="also print the module's own summary lines (per worker)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from ..kernel import scenarios as tv
    common.check_out_dir(args.parser, "--json", args.json)
    if not tv.selected(args.run_test_mask):
        args.parser.error(f"--run-test-mask {args.run_test_mask:#x} selects no test "
                          f"(bits 0..{len(tv.SCENARIOS) - 1}, mask {tv.ALL_TESTS_MASK:#x})")
    cls = tv.space_class(args.reference)
    locks = args.locks or list(tv.default_locks(args.reference))
    params = tv.Params(run_test_mask=args.run_test_mask, nr_threads=args.nr_threads,
                       test_loop_count=args.test_loop_count,
                       test_repeat_count=args.test_repeat_count,
                       sequential_test_order=args.sequential_test_order,
                       nr_pages=args.nr_pages, use_huge=args.use_huge)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    t0 = time.perf_counter()
    try:
        with common.progress_bar(NAME) as progress:
            runs = tv.run_locks(locks, params, seed=seed, reference=args.reference,
                                progress=progress)
    except (RuntimeError, ValueError, MemoryError, KeyError, AssertionError) as e:
        print(f"vmap-core: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vmap-core: interrupted", file=sys.stderr)
        return 130
    total = time.perf_counter() - t0
    head = (f"test_vmalloc on {cls.__name__} [{tv.VMALLOC_START:#x}, {tv.VMALLOC_END:#x}) "
            f"(32 TiB)\n{tv.describe(params, seed)}")
    out = common.console()
    if args.kernel_log:
        for r in runs:
            print(f"== {r.impl}, lock {r.lock}", *tv.kernel_lines(r), sep="\n")
    out.print(head, markup=False)
    out.print(format_table(runs))
    out.print(textwrap.fill(TABLE_NOTE, 79), markup=False)
    out.print()
    for r in runs:
        out.print(tv.verdict(r), markup=False)
    ok = all(r.ok for r in runs)
    print(f"{'PASS' if ok else 'FAIL'}: {len(runs)} lock mode(s) in {total:.1f} s")
    if args.json:
        common.write_json(args.json, tv.to_json(runs, command=shlex.join(sys.argv)))
        print(f"wrote {args.json}")
    return 0 if ok else 1


def _pass_fail(rows: list[dict[str, Any]]) -> str:
    """passed/failed of one scenario over the lock modes: once if all agree."""
    cells = [f"{r['passed']}/{r['failed']}" for r in rows]
    return cells[0] if len(set(cells)) == 1 else " ".join(cells)


TABLE_NOTE = ("p/f: passed/failed, summed over workers (per lock mode where they differ). "
              "Per lock mode: average µs per run of the scenario (all repeats / repeat "
              "count), mean over workers.  † supposed to fail (the kernel's comment).")


def format_table(runs: list[Any], *, title: str | None = None) -> Any:
    """A rich Table: a row per scenario with its passed/failed counts and, per
    lock mode, the average microseconds per run of the scenario (TABLE_NOTE);
    red where a scenario did not do what it should."""
    table = common.table(title, collapse_padding=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("test", overflow="fold", min_width=16)
    table.add_column("p/f", justify="right", no_wrap=True)
    for r in runs:
        table.add_column(r.lock, justify="right", no_wrap=True)
    summaries = [r.summary() for r in runs]
    for k, row in enumerate(summaries[0] if summaries else []):
        rows = [s[k] for s in summaries]
        bad = not all(r["as_expected"] for r in rows)
        red = (lambda x: f"[bold red]{x}[/]") if bad else (lambda x: x)
        name = row["name"] + (" †" if row["supposed_to_fail"] else "")
        table.add_row(str(row["id"]), name, red(_pass_fail(rows)),
                      *[(f"[bold red]{r['avg_usec']:,.0f}[/]" if not r["as_expected"]
                         else f"{r['avg_usec']:,.0f}") for r in rows])
    table.add_section()
    table.add_row("", "wall s, all tests", "", *[f"{r.wall_s:.2f}" for r in runs])
    table.add_row("", "check(), empty", "", *[
        ("ok" if r.empty else "[bold red]NOT EMPTY[/]") if r.check_ok
        else "[bold red]FAILED[/]" for r in runs])
    return table

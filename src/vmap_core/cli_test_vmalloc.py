"""``python -m vmap_core test-vmalloc``: the scenarios of Linux lib/test_vmalloc.c.

The subcommand's parser and runner; the scenarios and the driver are in
:mod:`vmap_core.test_vmalloc`.  :func:`add_test_vmalloc` is listed in
``vmap_core.cli.COMMANDS``; it imports the shared helpers of :mod:`vmap_core.cli`
when called, so that this module does not import cli at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
import time


def _int(s: str) -> int:
    """An int as the kernel's module_param reads it: decimal, 0x hex or 0 octal."""
    try:
        return int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None


def _bool(s: str) -> bool:
    """A bool module_param: 1/0, y/n, yes/no, true/false, on/off."""
    v = s.strip().lower()
    if v in ("1", "y", "yes", "true", "on"):
        return True
    if v in ("0", "n", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {s!r}")


def _lock_list(s: str) -> list[str]:
    locks = list(dict.fromkeys(m.strip() for m in s.split(",") if m.strip()))
    from .reference import LOCK_MODES
    bad = [m for m in locks if m not in LOCK_MODES]
    if bad or not locks:
        raise argparse.ArgumentTypeError(
            f"unknown lock mode(s) {', '.join(bad) or '(none given)'}; "
            f"choose from {','.join(LOCK_MODES)}")
    return locks


def add_test_vmalloc(sub) -> None:
    from . import test_vmalloc as tv
    from .cli import _Help
    tests = "; ".join(f"{1 << i}: {s.name}" for i, s in enumerate(tv.SCENARIOS))
    p = sub.add_parser(
        "test-vmalloc", formatter_class=_Help,
        help="the scenarios of Linux lib/test_vmalloc.c, per lock mode",
        description="The kernel's vmalloc test module over a space laid out like x86-64's "
        "vmalloc range (32 TiB): its scenarios, parameters and summary (passed/failed, "
        "average microseconds per test), on a fresh space for each lock mode, with Python "
        "threads sharing the space.  Afterwards everything lazy or pooled is purged, "
        "check() must pass and the space must be empty.  Exit status 1 when a scenario "
        f"did not do what it should or the space is not sound.  Tests: {tests}.")
    p.add_argument("--run-test-mask", type=_int, default=tv.INT_MAX, metavar="MASK",
                   help="scenarios to run, a bit each (0x7ff: all eleven)")
    p.add_argument("--nr-threads", type=_int, default=0, metavar="N",
                   help="workers, clamped to 1..65535 as the kernel does")
    p.add_argument("--test-loop-count", type=_int, default=tv.DEFAULT_TEST_LOOP_COUNT,
                   metavar="N", help="loops of each looping scenario (kernel default "
                   f"{tv.KERNEL_TEST_LOOP_COUNT:,}; scaled down for Python)")
    p.add_argument("--test-repeat-count", type=_int, default=1, metavar="N",
                   help="runs of each scenario per worker")
    p.add_argument("--sequential-test-order", type=_bool, nargs="?", const=True,
                   default=False, metavar="BOOL",
                   help="run the scenarios in mask order instead of shuffled per worker")
    p.add_argument("--nr-pages", type=_int, default=0, metavar="N",
                   help="pages of fix_size_alloc_test and vm_map_ram_test (0: one)")
    p.add_argument("--use-huge", type=_bool, nargs="?", const=True, default=False,
                   metavar="BOOL", help="vmalloc_huge in fix_size_alloc_test")
    p.add_argument("--locks", type=_lock_list, default=None, metavar="LOCK,...",
                   help="lock modes, a fresh space each (default: node,global,rwlock,"
                   "optimistic; node alone with --reference)")
    p.add_argument("--reference", action="store_true",
                   help="run on the pure-Python ReferenceSpace instead of the core")
    p.add_argument("--seed", type=_int, default=None,
                   help="seed of the random draws (default: a fresh one, printed)")
    p.add_argument("--kernel-log", action="store_true",
                   help="also print the module's own summary lines (per worker)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.set_defaults(func=_cmd_test_vmalloc, parser=p)


def _cmd_test_vmalloc(args) -> int:
    from . import test_vmalloc as tv
    from .cli import _progress_bar, _rich_console
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        args.parser.error(f"--json {args.json}: no such directory")
    if not tv.selected(args.run_test_mask):
        args.parser.error(f"--run-test-mask {args.run_test_mask:#x} selects no test "
                          f"(bits 0..{len(tv.SCENARIOS) - 1}, mask {tv.ALL_TESTS_MASK:#x})")
    try:
        cls = tv.space_class(args.reference)
    except ImportError as e:
        print(f"vmap-core: the Cython core is not built ({e}); run `python setup.py "
              "build_ext --inplace`, or pass --reference", file=sys.stderr)
        return 2
    locks = args.locks or list(tv.default_locks(args.reference))
    params = tv.Params(run_test_mask=args.run_test_mask, nr_threads=args.nr_threads,
                       test_loop_count=args.test_loop_count,
                       test_repeat_count=args.test_repeat_count,
                       sequential_test_order=args.sequential_test_order,
                       nr_pages=args.nr_pages, use_huge=args.use_huge)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    t0 = time.perf_counter()
    try:
        with _progress_bar("test-vmalloc") as progress:
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
    out = _rich_console()
    if out is None:
        print(head, tv.format_text(runs), sep="\n")
    else:
        if args.kernel_log:
            for r in runs:
                print(f"== {r.impl}, lock {r.lock}", *tv.kernel_lines(r), sep="\n")
        out.print(head, markup=False, highlight=False)
        out.print(tv.format_table(runs))
        out.print(textwrap.fill(tv.TABLE_NOTE, 79), markup=False, highlight=False)
        out.print()
        for r in runs:
            out.print(tv.verdict(r), markup=False, highlight=False)
    ok = all(r.ok for r in runs)
    print(f"{'PASS' if ok else 'FAIL'}: {len(runs)} lock mode(s) in {total:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(tv.to_json(runs, command=shlex.join(sys.argv)), f, indent=2, default=str)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1

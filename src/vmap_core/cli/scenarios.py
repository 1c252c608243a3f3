"""``python -m vmap_core test-vmalloc``: the scenarios of Linux lib/test_vmalloc.c.

The command's parser, runner and tables; the scenarios are in
:mod:`vmap_core.kernel.scenarios`, the drivers in :mod:`vmap_core.kernel.driver`,
the cover letter's figures in :mod:`vmap_core.anchors`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import textwrap
import time
from typing import Any

from . import common

NAME = "test-vmalloc"
COMPARISONS = ("cover-letter",)


def add_parser(sub: Any) -> None:
    from ..kernel import driver as drv
    from ..kernel import scenarios as tv
    tests = "; ".join(f"{1 << i}: {s.name}" for i, s in enumerate(tv.SCENARIOS))
    presets = "; ".join(f"{k}: {v}" for k, v in drv.PRESET_HELP.items())
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="the scenarios of Linux lib/test_vmalloc.c, per kernel and lock design",
        description="The kernel's vmalloc test module over a space laid out like x86-64's "
        "vmalloc range (32 TiB): its scenarios, parameters, presets and Summary lines, on a "
        "fresh space for each design (kernel profile and lock).  The workers are native "
        "threads without the GIL (--driver native), or Python threads (--driver python, "
        "also the only driver of pcpu_alloc_test and vm_map_ram_test).  --cpus emulates a "
        "machine: its nodes, lazy_max_pages and the CPUs the workers allocate from, "
        "whatever the threads that really run.  Afterwards everything lazy or pooled is "
        "purged, check() must pass and the space must be empty.  Exit status 1 when a "
        "scenario did not do what it should or the space is not sound.  Integers are read "
        "as the kernel reads module parameters: decimal, 0x hexadecimal, 0 octal.  "
        f"Tests: {tests}.  Presets (test_vmalloc.sh): {presets}.")
    g = p.add_argument_group("module parameters (the kernel's defaults unless a preset sets them)")
    g.add_argument("--run-test-mask", type=common.kernel_int, default=None, metavar="MASK",
                   help=f"scenarios to run, a bit each (default {tv.KERNEL_RUN_TEST_MASK}; "
                   "0x7ff: all eleven)")
    g.add_argument("--nr-threads", type=common.kernel_int, default=None, metavar="N",
                   help="workers, clamped to 1..65535 as the kernel does (default 0: one; "
                   "with --compare, the CPUs this process may run on)")
    g.add_argument("--test-loop-count", type=common.kernel_int, default=None, metavar="N",
                   help=f"loops of each looping scenario (default {tv.KERNEL_TEST_LOOP_COUNT:,}; "
                   f"{tv.DEFAULT_TEST_LOOP_COUNT:,} with --driver python)")
    g.add_argument("--test-repeat-count", type=common.kernel_int, default=None, metavar="N",
                   help="runs of each scenario per worker (default 1)")
    g.add_argument("--sequential-test-order", type=common.kernel_bool, nargs="?", const=True,
                   default=None, metavar="BOOL",
                   help="run the scenarios in mask order instead of shuffled per worker")
    g.add_argument("--nr-pages", type=common.kernel_int, default=None, metavar="N",
                   help="pages of fix_size_alloc_test and vm_map_ram_test (0: one)")
    g.add_argument("--use-huge", type=common.kernel_bool, nargs="?", const=True, default=None,
                   metavar="BOOL", help="vmalloc_huge in fix_size_alloc_test")
    p.add_argument("--preset", choices=tuple(drv.PRESETS), default=None,
                   help="the module parameters of a test_vmalloc.sh preset; options given "
                   "explicitly win")
    p.add_argument("--cpus", type=common.int_in(1, 4096), default=None, metavar="N",
                   help="emulate an N-CPU machine: min(N, 128) nodes (one under 6.8), "
                   "lazy_max_pages = fls(N) * 32 MiB / PAGE_SIZE, num_online_cpus() = N, and "
                   "worker i allocating from CPU i %% N (default: this machine; 64, the "
                   "3970X's, with --compare cover-letter)")
    p.add_argument("--kernel", type=common.kernel_list, default=None, metavar="K,...",
                   help="kernel profiles: 6.8, 6.9, 6.16 (default the newest)")
    p.add_argument("--lock", "--locks", dest="locks", type=common.design_lock_list, default=None,
                   metavar="LOCK,...",
                   help="lock designs, each combined with every kernel it fits (default: "
                   "each kernel's: split (6.8 only) or node, then global, rwlock, "
                   "optimistic; node alone with --reference)")
    p.add_argument("--driver", choices=("native", "python"), default=None,
                   help="native threads without the GIL (default), or Python threads")
    p.add_argument("--reference", action="store_true",
                   help="run on the pure-Python ReferenceSpace (Python threads) instead of "
                   "the core")
    p.add_argument("--rounds", type=common.int_in(1, 100), default=None,
                   help="runs of every design, interleaved; the table keeps each design's "
                   "fastest and shows the spread (default 1; 3 with --compare)")
    p.add_argument("--compare", choices=COMPARISONS, default=None,
                   help="cover-letter: the series' cover letter (3970X, run_test_mask=7 "
                   "nr_threads=64: 10m51s before, 51s after) beside the model's wall time "
                   "per design, before/after ratio and share of time waiting for locks")
    p.add_argument("--seed", type=common.kernel_int, default=None,
                   help="seed of the random draws (default: a fresh one, printed)")
    p.add_argument("--kernel-log", action="store_true",
                   help="also print the module's own Summary lines (per worker)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.set_defaults(func=run, parser=p)


def _params(args: argparse.Namespace, native: bool, cpus: int | None) -> Any:
    """Params from the options given, else the preset's, else the defaults."""
    from ..kernel import driver as drv
    from ..kernel import scenarios as tv
    online = cpus or os.cpu_count() or 1
    given = {k: getattr(args, k) for k in ("run_test_mask", "nr_threads", "test_loop_count",
                                           "test_repeat_count", "sequential_test_order",
                                           "nr_pages", "use_huge")}
    values: dict[str, Any] = {
        "test_loop_count": tv.KERNEL_TEST_LOOP_COUNT if native else tv.DEFAULT_TEST_LOOP_COUNT}
    if args.compare:
        values["nr_threads"] = drv.available_cpus()
    if args.preset:
        values.update(drv.preset_params(args.preset, online))
    values.update({k: v for k, v in given.items() if v is not None})
    return tv.Params(online_cpus=online, **values)


def run(args: argparse.Namespace) -> int:
    from .. import profiles
    from ..kernel import driver as drv
    from ..kernel import scenarios as tv
    parser = args.parser
    common.check_out_dir(parser, "--json", args.json)
    if args.reference and args.driver == "native":
        parser.error("--reference runs on Python threads: it cannot take --driver native")
    native = not args.reference and args.driver != "python"
    cpus = args.cpus
    if cpus is None and args.compare == "cover-letter":
        from .. import anchors
        cpus = anchors.COVER_LETTER_CPUS
    params = _params(args, native, cpus)
    if not tv.selected(params.run_test_mask):
        parser.error(f"--run-test-mask {params.run_test_mask:#x} selects no test "
                     f"(bits 0..{len(tv.SCENARIOS) - 1}, mask {tv.ALL_TESTS_MASK:#x})")
    if native and params.effective().nr_threads > common.MAX_NATIVE_THREADS:
        parser.error(f"--nr-threads {params.nr_threads}: the native driver runs at most "
                     f"{common.MAX_NATIVE_THREADS} threads (--driver python takes more)")
    if native and drv.not_native(params.run_test_mask):
        parser.error(f"--run-test-mask {params.run_test_mask:#x}: "
                     f"{', '.join(drv.not_native(params.run_test_mask))} run only on Python "
                     f"threads: give --driver python (native: mask {drv.NATIVE_MASK:#x})")
    try:
        if args.compare and args.kernel is None and args.locks is None:
            design_list = list(drv.COVER_LETTER_DESIGNS)
        else:
            kernels = args.kernel or [profiles.NEWEST]
            locks = args.locks or (["node"] if args.reference else None)
            design_list = drv.designs(kernels, locks)
    except ValueError as e:
        parser.error(str(e))
    rounds = args.rounds or (3 if args.compare else 1)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    t0 = time.perf_counter()
    by_design: dict[str, list[Any]] = {}

    def run_rounds() -> None:
        with common.progress_bar(NAME) as progress:
            for k in range(rounds):
                def prog(done, total, cell, k=k):
                    progress(k * total + done, rounds * total, cell)
                for r in drv.run_designs(design_list, params, seed=seed,
                                         reference=args.reference, native=native, cpus=cpus,
                                         progress=prog):
                    by_design.setdefault(r.design, []).append(r)

    _, status = common.guarded(run_rounds, (RuntimeError, ValueError, MemoryError, KeyError,
                                            AssertionError))
    if status:
        return status
    total = time.perf_counter() - t0
    best = [min(rs, key=lambda r: r.wall_s) for rs in by_design.values()]
    out = common.console()
    if args.kernel_log:
        for r in best:
            print(f"== {r.impl}, {r.design}", *drv.kernel_lines(r), sep="\n")
    out.print(header(best[0], params, seed, cpus), markup=False)
    out.print(format_table(best))
    note = TABLE_NOTE if len(best) <= 4 else TABLE_NOTE_BY_DESIGN + "  " + scenario_legend(best)
    out.print(textwrap.fill(note, 79), markup=False)
    if rounds > 1 or args.compare:
        out.print()
        out.print(format_designs(by_design, compare=args.compare))
        out.print(textwrap.fill(designs_note(by_design, args.compare), 79), markup=False)
    out.print()
    for r in best:
        out.print(drv.verdict(r), markup=False)
    ok = all(r.ok for rs in by_design.values() for r in rs)
    print(f"{'PASS' if ok else 'FAIL'}: {common.plural(len(best), 'design')} x "
          f"{common.plural(rounds, 'round')} in {total:.1f} s")
    if args.json:
        runs = [r for rs in by_design.values() for r in rs]
        data = drv.to_json(runs, command=shlex.join(sys.argv))
        data["rounds"] = rounds
        data["designs"] = design_rows(by_design)
        if args.compare:
            data["compare"] = compare_json(args.compare)
        common.write_json(args.json, data)
        print(f"wrote {args.json}")
    return 0 if ok else 1


def header(r: Any, params: Any, seed: int, cpus: int | None) -> str:
    from ..kernel import driver as drv
    from ..kernel import scenarios as tv
    p = r.params
    if r.driver == "native":
        how = f"native driver: {common.plural(p.nr_threads, 'native thread')} without the GIL"
    else:
        how = f"Python driver: {common.plural(p.nr_threads, 'Python thread')}"
    if cpus is None:
        mach = f"this machine's {common.plural(params.online_cpus, 'online CPU')}"
    else:
        m = drv.machine(None, cpus)
        mach = (f"an emulated {cpus}-CPU machine ({common.plural(m['nr_nodes'], 'node')} "
                f"from 6.9 on, lazy_max_pages {m['lazy_max_pages']:,})")
    return (f"test_vmalloc on {r.impl} [{tv.VMALLOC_START:#x}, {tv.VMALLOC_END:#x}) (32 TiB), "
            f"{how}, {drv.available_cpus()} CPUs available; {mach}\n"
            f"{drv.describe(params, seed)}")


def _pass_fail(rows: list[dict[str, Any]]) -> str:
    """passed/failed/xfailed of one scenario over the designs: once if all agree."""
    cells = [f"{r['passed']}/{r['failed']}/{r['xfailed']}" for r in rows]
    return cells[0] if len(set(cells)) == 1 else " ".join(cells)


TABLE_NOTE = ("p/f/x: passed/failed/xfailed, summed over workers (per design where they "
              "differ).  Per design (kernel/lock): average µs per run of the scenario (all "
              "repeats / repeat count), mean over workers.  † expected to fail (the "
              "kernel's xfail).")


TABLE_NOTE_BY_DESIGN = ("Per design (kernel/lock) and scenario id: average µs per run of "
                        "the scenario (all repeats / repeat count), mean over workers; red "
                        "where it did not do what it should; † expected to fail (the "
                        "kernel's xfail).  Scenarios, with passed/failed/xfailed summed over "
                        "workers (per design where they differ):")


def format_table(runs: list[Any], *, title: str | None = None) -> Any:
    """A rich Table of the average microseconds per run of each scenario
    (TABLE_NOTE): a row per scenario and a column per design for up to four
    designs, else a row per design and a column per scenario id, so that it
    fits 80 columns; red where a scenario did not do what it should."""
    if len(runs) > 4:
        return _format_by_design(runs, title)
    table = common.table(title, collapse_padding=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("test", overflow="fold", min_width=12)
    table.add_column("p/f/x", justify="right", no_wrap=True)
    for r in runs:
        table.add_column(r.design.replace("/", "\n"), justify="right", no_wrap=True)
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
    table.add_row("", "check(), empty", "", *[_check_cell(r) for r in runs])
    return table


def _check_cell(r: Any) -> str:
    if not r.check_ok:
        return "[bold red]FAILED[/]"
    return "ok" if r.empty else "[bold red]NOT EMPTY[/]"


def _format_by_design(runs: list[Any], title: str | None) -> Any:
    from .. import measure
    table = common.table(title, collapse_padding=True)
    table.add_column("design", no_wrap=True)
    summaries = [r.summary() for r in runs]
    for row in summaries[0]:
        table.add_column(str(row["id"]) + (" †" if row["supposed_to_fail"] else ""),
                         justify="right", no_wrap=True)
    table.add_column("wall s", justify="right", no_wrap=True)
    table.add_column("check", justify="right", no_wrap=True)
    for r, rows in zip(runs, summaries):
        table.add_row(r.design, *[(f"[bold red]{measure.si(x['avg_usec'])}[/]"
                                   if not x["as_expected"] else measure.si(x["avg_usec"]))
                                  for x in rows], f"{r.wall_s:.2f}", _check_cell(r))
    return table


def scenario_legend(runs: list[Any]) -> str:
    """'id name p/f/x' of each scenario, p/f/x summed over the designs' runs."""
    summaries = [r.summary() for r in runs]
    parts = []
    for k, row in enumerate(summaries[0]):
        rows = [s[k] for s in summaries]
        parts.append(f"{row['id']} {row['name']} {_pass_fail(rows)}")
    return "; ".join(parts) + "."


def design_rows(by_design: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Per design: every round's wall time, the fastest, its spread and noise,
    lock wait share and contention of the fastest round, speedup over 6.8."""
    from .. import measure
    rows = []
    for design, rs in by_design.items():
        walls = [r.wall_s for r in rs]
        b = min(rs, key=lambda r: r.wall_s)
        locks = b.locks or {}
        acq = sum(locks.get(k, {}).get("acquisitions", 0)
                  for k in ("busy", "lazy", "pool", "free", "global", "purge"))
        rows.append({
            "design": design, "kernel": b.kernel, "lock": b.lock, "wall_s": b.wall_s,
            "rounds_wall_s": walls, "spread": measure.spread(walls),
            "noisy": measure.is_noisy(walls),
            "lock_wait_share": b.lock_wait_share,
            "contended": locks.get("contended"), "acquisitions": acq or None,
            "contended_share": (locks["contended"] / acq) if acq else None,
        })
    base = next((r for r in rows if r["kernel"] == "6.8"), None)
    for r in rows:
        r["speedup_vs_6_8"] = base["wall_s"] / r["wall_s"] if base and r["wall_s"] else None
    return rows


def format_designs(by_design: dict[str, list[Any]], compare: str | None = None) -> Any:
    """Per design: wall time (fastest round, ± spread, ~ noisy), speedup over
    6.8, the share of the workers' time spent waiting for locks, and the
    contended share of lock acquisitions; with the cover letter's figures
    beside them for --compare cover-letter."""
    from .. import anchors
    rows = design_rows(by_design)
    t = common.table(None, collapse_padding=True)
    t.add_column("design", no_wrap=True)
    if compare:
        t.add_column("kernel\nwall s", justify="right", no_wrap=True)
        t.add_column("kernel\nslowpath", justify="right", no_wrap=True)
    t.add_column("wall s", justify="right", no_wrap=True)
    t.add_column("±", justify="right", no_wrap=True)
    t.add_column("vs 6.8", justify="right", no_wrap=True)
    t.add_column("lock\nwait", justify="right", no_wrap=True)
    t.add_column("contended\nacquired", justify="right", no_wrap=True)
    for r in rows:
        cells = [r["design"]]
        if compare:
            k = anchors.COVER_LETTER_BY_KEY.get(r["design"])
            cells += [f"{k.wall_s:.2f}", f"{k.slowpath_share:.2%}"] if k else ["", ""]
        sp = r["spread"]
        cells += [f"{r['wall_s']:.2f}" + ("~" if r["noisy"] else ""),
                  f"{sp:.0%}" if sp is not None else "",
                  f"{r['speedup_vs_6_8']:.2f}x" if r["speedup_vs_6_8"] else "",
                  f"{r['lock_wait_share']:.1%}" if r["lock_wait_share"] is not None else "",
                  f"{r['contended_share']:.2%}" if r["contended_share"] is not None else ""]
        t.add_row(*cells)
    return t


def designs_note(by_design: dict[str, list[Any]], compare: str | None) -> str:
    from .. import anchors
    rows = design_rows(by_design)
    n = len(next(iter(by_design.values())))
    text = (f"wall s: the fastest of {common.plural(n, 'round')} (± their spread, ~ noisy: "
            "rounds more than 10% apart); vs 6.8: 6.8's wall time over the design's; lock "
            "wait: time the workers waited for locks (the locks' statistics, contended "
            "paths only) over nr_threads x wall time; contended acquired: the share of lock "
            "acquisitions that had to wait.")
    if compare == "cover-letter":
        before = next((r for r in rows if r["design"] == "6.8/split"), None)
        after = next((r for r in rows if r["design"] == "6.9/node"), None)
        text += (f"  The cover letter measured {anchors.COVER_LETTER_SETUP}: "
                 f"{anchors.COVER_LETTER[0].wall_s:.1f} s before the series, "
                 f"{anchors.COVER_LETTER[1].wall_s:.1f} s after "
                 f"({anchors.COVER_LETTER_SPEEDUP:.1f}x), and "
                 "native_queued_spin_lock_slowpath fell from 93.07% to 16.51% of cycles "
                 "(perf; page allocation and zeroing then dominate, which the model does "
                 "not do).")
        if before and after:
            text += (f"  Here 6.9/node took {after['wall_s']:.2f} s against 6.8's "
                     f"{before['wall_s']:.2f} s ({before['wall_s'] / after['wall_s']:.2f}x)")
            if before["contended_share"] is not None and after["contended_share"] is not None:
                text += (f", with {before['contended_share']:.2%} of 6.8's lock acquisitions "
                         f"contended against {after['contended_share']:.2%} of 6.9's")
            text += f", on {drv_threads(by_design)} of {common.machine_name()}."
    return text


def drv_threads(by_design: dict[str, list[Any]]) -> str:
    r = next(iter(by_design.values()))[0]
    return common.plural(r.params.nr_threads, "thread")


def compare_json(name: str) -> dict[str, Any]:
    from .. import anchors
    if name == "cover-letter":
        return {"setup": anchors.COVER_LETTER_SETUP,
                "cpus": anchors.COVER_LETTER_CPUS, "nr_threads": anchors.COVER_LETTER_THREADS,
                "rows": [dataclasses.asdict(r) for r in anchors.COVER_LETTER],
                "speedup": anchors.COVER_LETTER_SPEEDUP}
    raise ValueError(name)

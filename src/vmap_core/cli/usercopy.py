"""``python -m vmap_core usercopy``: lookup lock contention of hardened-usercopy
copies, per lock design (the sweep is :mod:`vmap_core.usercopy`, the seed's
comparison :mod:`vmap_core.seed`)."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from typing import Any

from . import common

NAME = "usercopy"
PAGE_SIZE = 4096                 # the cells' buffers are whole pages
COMPARISONS = ("seed",)


def add_parser(sub: Any) -> None:
    from ..usercopy import MODES
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="lookup lock contention of hardened-usercopy copies, per lock design",
        description="Model of the kernel series' workload: native threads (no GIL) copy "
        "through vmalloc'ed buffers, each copy checked by a lookup of its area, while a "
        "writer allocates and frees areas; requests/s per lock design and thread count.  "
        "--compare seed runs the seed's machine in the model beside the seed's table.")
    p.add_argument("--buffers", type=common.int_in(1, 1_000_000), default=None,
                   help="areas allocated in the space (default 1000, wrk's 1000 connections; "
                   "4000 with --compare seed)")
    p.add_argument("--threads", type=common.int_list(common.MAX_NATIVE_THREADS), default=None, metavar="N,N,...",
                   help="thread counts to run (default: 1, 2, 4, ... up to 2x the CPUs this "
                   "process may run on; with --compare seed, those CPUs)")
    p.add_argument("--copy-size", type=common.int_in(1, 1 << 30), default=1024,
                   help="bytes copied per checked copy (nginx's default page plus headers)")
    p.add_argument("--buffer-size", type=common.int_in(PAGE_SIZE, 1 << 30), default=65536,
                   help="bytes of each buffer, a multiple of 4096 (64 KiB: SMC's "
                   "net.smc.wmem / net.smc.rmem)")
    p.add_argument("--churn-us", type=common.int_in(1, 60_000_000), default=100,
                   help="the writer allocates and frees one area every this many microseconds")
    p.add_argument("--lazy-writer", action="store_true",
                   help="the writer frees lazily as vfree() does (purges past lazy_max_pages; "
                   "always with --compare seed)")
    p.add_argument("--seconds", type=common.float_in(0, 3600), default=0.5,
                   help="run time of each cell in each round")
    p.add_argument("--rounds", type=common.int_in(1, 1000), default=3,
                   help="interleaved repetitions of the sweep; each cell keeps its best")
    p.add_argument("--modes", type=common.design_list(MODES), default=None,
                   metavar="MODE,...",
                   help=f"designs to run: {','.join(MODES)} (the newest kernel's, or "
                   "--kernel's), or KERNEL/MODE such as 6.8/split, 6.9/node (default: all "
                   "six; the seed's designs with --compare seed)")
    p.add_argument("--kernel", type=common.kernel_list, default=None, metavar="K",
                   help="kernel profile of the plain modes: 6.8 (one busy tree: 'node' "
                   "becomes 'split'), 6.9 (upward walk), 6.16 (downward walk, the default)")
    p.add_argument("--work-ns", type=common.int_in(0, 10_000_000), default=0,
                   help="CPU work per request besides the copies and lookups, in nanoseconds")
    p.add_argument("--lookups-per-request", type=common.int_in(1, 100_000), default=None,
                   metavar="N", help="checked copies per request (default 1; 4 with "
                   "--compare seed: both ends write and read once per request)")
    p.add_argument("--nr-nodes", type=common.nr_nodes_arg, default=None,
                   help="busy-tree nodes (default: the kernel's rule, CPUs clamped to 1..128)")
    p.add_argument("--python-threads", action="store_true",
                   help="Python threads as the workers (check_copy() and a memoryview copy "
                   "per request) instead of native ones; they run in parallel only on a "
                   "free-threaded CPython with the GIL off, and cannot run 'unlocked'")
    p.add_argument("--cpus", type=common.int_in(1, 4096), default=None, metavar="N",
                   help="emulate an N-CPU machine: min(N, 128) nodes and lazy_max_pages = "
                   "fls(N) * 32 MiB / PAGE_SIZE, whatever the threads that run (default: "
                   "this machine; 48, the seed's, with --compare seed)")
    p.add_argument("--compare", choices=COMPARISONS, default=None,
                   help="seed: the seed's machine in the model (48 nodes, SMC's 64 KiB "
                   "buffers of 1000 connections, a lazy writer), the seed's rows beside the "
                   "model's ratios, measured in one run")
    p.add_argument("--calibrate", action="store_true",
                   help="with --compare seed: first fit --work-ns and --lookups-per-request "
                   "to the seed's global and no-lookup rows, then predict the others")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--plot", metavar="PATH",
                   help="write a picture of the results, in the format its extension names "
                   "(PNG without one; needs matplotlib)")
    p.add_argument("--log", action="store_true", help="plot requests/s on a log scale")
    p.add_argument("--ratio", action="store_true",
                   help="plot ratios to nocheck instead of requests/s")
    p.set_defaults(func=run, parser=p)


def _check(args: argparse.Namespace) -> None:
    """Every usage error, before any work."""
    from .. import usercopy as uc
    parser = args.parser
    if args.buffer_size % PAGE_SIZE:
        parser.error(f"--buffer-size must be a multiple of the page size, {PAGE_SIZE}")
    if args.copy_size > args.buffer_size:
        parser.error(f"--copy-size {args.copy_size} exceeds --buffer-size {args.buffer_size}")
    if args.python_threads and args.compare:
        parser.error("--python-threads runs the plain sweep, not --compare")
    if args.calibrate and args.compare != "seed":
        parser.error("--calibrate fits the seed's rows: it needs --compare seed")
    if args.nr_nodes is not None and args.cpus is not None:
        parser.error("--nr-nodes and --cpus both set the nodes: give one")
    if args.kernel and len(args.kernel) > 1:
        parser.error("--kernel takes one profile here (designs of several: --modes K/MODE,...)")
    common.check_out_dir(parser, "--json", args.json)
    common.check_image_path(parser, "--plot", args.plot, "--plot")
    try:
        uc.check_memory(args.buffers, args.buffer_size)
    except MemoryError as e:
        parser.error(f"--buffers x --buffer-size: {e}")


def _designs(args: argparse.Namespace) -> list[str]:
    from .. import usercopy as uc
    from .. import profiles
    modes = args.modes or list(uc.MODES)
    if not args.kernel:
        return modes
    profile = profiles.resolve(args.kernel[0])
    out = []
    for m in modes:
        if "/" in m or m in uc.CHECK_MODES:
            out.append(m)
        elif m == "node" and not profile.nodes:
            out.append(f"{profile.name}/split")
        else:
            out.append(f"{profile.name}/{m}")
    for m in out:
        try:
            uc.parse_design(m)
        except ValueError as e:
            args.parser.error(f"--modes {m}: {e}")
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    from .. import measure, seed
    from .. import usercopy as uc
    if args.compare == "seed":
        args.buffers = args.buffers or seed.Setup.buffers
        args.lazy_writer = True
    args.buffers = args.buffers or 1000
    _check(args)
    if args.compare == "seed":
        return run_seed(args)
    threads = args.threads or uc.default_threads()
    lookups = args.lookups_per_request or 1
    cell = {k: getattr(args, k) for k in ("buffers", "buffer_size", "copy_size", "seconds",
                                          "churn_us", "work_ns", "nr_nodes", "rounds",
                                          "lazy_writer")}
    cell["lookups"] = lookups
    if args.cpus is not None:
        s = seed.Setup(cpus=args.cpus)
        cell.update(nr_nodes=s.nr_nodes, lazy_max_pages=s.lazy_max_pages)
    designs = _designs(args)
    runner = None
    if args.python_threads:
        from ..usercopy_python import MODES as PY_MODES, gil_note, python_cell
        if args.modes is None:          # the default: every design Python can run
            designs = [d for d in designs if uc.parse_design(d)[1] in PY_MODES]
        elif any(uc.parse_design(d)[1] not in PY_MODES for d in designs):
            args.parser.error("--python-threads cannot run mode 'unlocked' (a lookup without "
                              "any lock has no Python-level call)")
        runner = python_cell
        print(f"usercopy with Python threads: {gil_note()}")
    def sweep() -> list[dict[str, Any]]:
        with common.progress_bar(NAME) as progress:
            return uc.run_sweep(designs, threads, progress=progress, runner=runner, **cell)

    rows, status = common.guarded(sweep)
    if rows is None:
        return status
    extra = (f", work {args.work_ns} ns" if args.work_ns else "") + (
        f", {lookups} lookups/request" if lookups > 1 else "") + (
        ", lazy writer" if args.lazy_writer else "") + (
        f", {args.cpus} CPUs emulated" if args.cpus else "")
    kind = ", Python threads" if args.python_threads else ""
    title = (f"usercopy{kind}: {args.buffers} buffers of {common.human_size(args.buffer_size)}, "
             f"copies of {args.copy_size} B, churn {args.churn_us} us{extra}, best of "
             f"{args.rounds} x {args.seconds:g} s/cell")
    out = common.console()
    out.print(format_table(rows, title=title))
    out.print()
    out.print(textwrap.fill(summary(rows), 79), markup=False)
    out.print(textwrap.fill(f"Measured on {measure.machine_name()}.", 79), markup=False)
    if args.json:
        common.write_json(args.json, uc.to_json(
            rows, {**cell, "modes": designs, "threads": threads, "cpus_emulated": args.cpus,
                     "workers": "python" if args.python_threads else "native"}))
        print(f"wrote {args.json}")
    if args.plot:
        fmt = common.save_figure(figure(rows, title=title, log=args.log, ratio=args.ratio),
                                 args.plot)
        print(f"wrote {args.plot} ({fmt.upper()})")
    return 0


def run_seed(args: argparse.Namespace) -> int:
    """--compare seed [--calibrate]."""
    from .. import anchors, measure, seed
    from .. import usercopy as uc
    threads = args.threads or [measure.available_cpus()]
    setup = seed.Setup(cpus=args.cpus or anchors.SEED_CPUS, buffers=args.buffers,
                       buffer_size=args.buffer_size, copy_size=args.copy_size,
                       churn_us=args.churn_us,
                       lookups=args.lookups_per_request or seed.DEFAULT_LOOKUPS,
                       work_ns=args.work_ns, threads=threads[0])
    designs = args.modes or [d for d, _ in seed.DESIGNS]
    def sweep() -> tuple[Any, seed.Setup, list[dict[str, Any]]]:
        cal, cell = None, setup
        with common.progress_bar(NAME) as progress:
            if args.calibrate:
                cal = seed.calibrate(cell, seconds=min(args.seconds, 0.3),
                                     rounds=min(args.rounds, 2), progress=progress)
                cell = dataclasses.replace(cell, work_ns=cal.work_ns, lookups=cal.lookups)
            return cal, cell, uc.run_sweep(designs, threads, seconds=args.seconds,
                                           rounds=args.rounds, progress=progress,
                                           **cell.cell_kwargs())

    done, status = common.guarded(sweep)
    if done is None:
        return status
    cal, setup, rows = done
    cmp = seed.compare_rows([r for r in rows if r["threads"] == threads[0]])
    preds = seed.predictions(cmp, setup.lookups) if cal else []
    out = common.console()
    out.print(textwrap.fill(seed_setup_text(setup, threads), 79), markup=False)
    out.print()
    title = (f"the seed's table beside the model's, {common.plural(threads[0], 'thread')}, "
             f"best of {args.rounds} x {args.seconds:g} s")
    out.print(format_seed_table(cmp, title=title))
    out.print(textwrap.fill(SEED_TABLE_NOTE, 79), markup=False)
    if cal is not None:
        out.print()
        out.print(format_predictions(preds, cal))
    out.print()
    out.print(textwrap.fill(seed.summary(cmp, preds, cal), 79), markup=False)
    if args.json:
        data = uc.to_json(rows, {**setup.cell_kwargs(), "seconds": args.seconds,
                                 "rounds": args.rounds, "threads": threads, "modes": designs,
                                 "cpus_emulated": setup.cpus})
        data["compare"] = {
            "seed": {"setup": anchors.SEED_SETUP, "buffers": anchors.SEED_BUFFER_REASON,
                     "rows": [dataclasses.asdict(r) | {"ratio": r.ratio}
                              for r in anchors.SEED]},
            "rows": [{k: v for k, v in r.items() if k in uc.RESULT_KEYS or k.startswith("seed")
                      or k == "ratio_to_nocheck"} for r in cmp],
            "calibration": dataclasses.asdict(cal) if cal else None,
            "predictions": preds,
            "order": seed.order(cmp), "seed_order": seed.SEED_ORDER,
        }
        common.write_json(args.json, data)
        print(f"wrote {args.json}")
    if args.plot:
        fmt = common.save_figure(figure_seed(cmp, title="usercopy --compare seed: " + title,
                                             log=args.log), args.plot)
        print(f"wrote {args.plot} ({fmt.upper()})")
    return 0


def seed_setup_text(setup: Any, threads: list[int]) -> str:
    from .. import anchors, measure
    return (f"The seed: {anchors.SEED_SETUP}.  The model: {measure.machine_name()}, "
            f"{common.plural(threads[0], 'native thread')} copying, {setup.cpus} CPUs "
            f"emulated ({setup.nr_nodes} nodes, lazy_max_pages {setup.lazy_max_pages:,}), "
            f"{anchors.SEED_BUFFER_REASON}; copies of {setup.copy_size} B, "
            f"{setup.lookups} checked copies and {setup.work_ns:,} ns of other work per "
            f"request; a writer allocating and lazily freeing an area every "
            f"{setup.churn_us} us.")


SEED_TABLE_NOTE = ("req/s: requests/s (the model's: best round, ± the spread of the rounds, ~ "
                   "noisy: rounds more than 10% apart or faster than its floor); ratio: to "
                   "no lookup.  Per lookup: node locks taken, the share that started in a "
                   "node not holding the area, contended acquisitions, optimistic retries.  "
                   "The seed's second runs: per-node 564,961, rwlock 442,534.")


def _g(x: float | None, fmt: str = ".3g") -> str:
    return "" if x is None else format(x, fmt)


def _small(x: float | None) -> str:
    """A per-lookup count in at most 5 characters: 22.7, 1.46, 0.41, 3e-04, 0."""
    if x is None:
        return ""
    if x == 0:
        return "0"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.01:
        return f"{x:.2f}"
    return f"{x:.0e}"


def format_seed_table(cmp: list[dict[str, Any]], *, title: str | None = None) -> Any:
    """One row per design: the seed's requests/s and ratio, the model's (best,
    spread, ratio), and the per-lookup counts; fits 80 columns."""
    from .. import anchors, measure
    t = common.table(title, collapse_padding=True)
    for name in ("design", "seed\nreq/s", "seed\nratio", "model\nreq/s", "±", "model\nratio",
                 "locks\n/lkp", "off\n1st", "cont\n/lkp", "retry\n/lkp"):
        t.add_column(name, justify="left" if name == "design" else "right", no_wrap=True)
    for r in cmp:
        sp = measure.spread(r["rounds"])
        t.add_row(r["design"],
                  measure.si(r["seed_requests_per_s"]) if r["seed_requests_per_s"] else "",
                  _g(r["seed_ratio"], ".3f"),
                  measure.si(r["requests_per_s"]) + ("~" if r["noisy"] else ""),
                  f"{sp:.0%}" if sp is not None else "",
                  _g(r["ratio_to_nocheck"], ".3f"),
                  _small(r["node_locks_per_lookup"]),
                  _g(r["off_first_node"], ".0%"),
                  _small(r["contended_per_lookup"]),
                  _small(r["retries_per_lookup"]))
    kz = anchors.SEED_BY_KEY["kzalloc"]
    t.add_row("kzalloc", measure.si(kz.requests_per_s), f"{kz.ratio:.3f}", *[""] * 7)
    return t


def format_predictions(preds: list[dict[str, Any]], cal: Any) -> Any:
    t = common.table(f"calibrated at {cal.threads} threads: {cal.lookups} lookups and "
                     f"{cal.work_ns:,} ns of other work per request; predictions",
                     collapse_padding=True)
    for name in ("design", "predicted", "seed", "error", "verdict", "ns/lookup", "needed"):
        t.add_column(name, justify="left" if name in ("design", "verdict") else "right",
                     no_wrap=True)
    for p in preds:
        t.add_row(p["design"], f"{p['predicted_ratio']:.3f}" + ("~" if p["noisy"] else ""),
                  _g(p["seed_ratio"], ".3f"),
                  f"{p['error']:+.0%}" if p.get("error") is not None else "",
                  "not measured" if p["seed_ratio"] is None else p["verdict"],
                  _g(p.get("lookup_ns"), ",.0f"), _g(p.get("needed_lookup_ns"), ",.0f"))
    return t


def summary(rows: list[dict[str, Any]]) -> str:
    """One paragraph: the ratios that answer the kernel thread's questions,
    each beside what the kernel's thread measured, for the thread counts that ran."""
    from .. import anchors
    from ..usercopy import grid, ratio
    threads_list, modes, rate = grid(rows)
    seed_node = anchors.SEED_BY_KEY["6.9/node"]
    seed_global = anchors.SEED_BY_KEY["6.8"]

    def at(mode: str, base: str) -> list[tuple[int, float]]:
        found = [(n, ratio(rate, mode, base, n)) for n in threads_list]
        return [(n, r) for n, r in found if r is not None]

    parts = []
    ou = at("optimistic", "unlocked")
    if ou:
        lo = min(ou, key=lambda x: x[1])
        parts.append(f"optimistic keeps {lo[1]:.2f}x (lowest, at "
                     f"{common.plural(lo[0], 'thread')}) to {max(r for _, r in ou):.2f}x of "
                     "unlocked, the same lookup without any locking.")
    ng = dict(at("node", "global"))
    if ng:
        n = 2 if 2 in ng else max(ng)
        parts.append(f"At {common.plural(n, 'thread')} per-node locks give {ng[n]:.2f}x the "
                     f"global lock (the seed measured "
                     f"{seed_node.requests_per_s / seed_global.requests_per_s:.1f}x on 48 "
                     "CPUs).")
    top = max(threads_list, default=0)
    vs = [(m, ratio(rate, m, "nocheck", top)) for m in modes if m != "nocheck"]
    vs_text = [f"{m} keeps {r:.2f}x" for m, r in vs if r is not None]
    if vs_text:
        parts.append(f"At {common.plural(top, 'thread')}, against nocheck (no lookup), "
                     f"{', '.join(vs_text)} (the seed's per-node locks kept "
                     f"{seed_node.ratio:.3f}x).")
    scale = {m: rate[m, 2] / rate[m, 1] for m in modes if rate.get((m, 1)) and (m, 2) in rate}
    if len(scale) >= 2:
        parts.append("From 1 to 2 threads: " + ", ".join(
            f"{m} scales {s:.2f}x" for m, s in scale.items()) + ".")
    noisy = [r for r in rows if r.get("noisy")]
    if 0 < len(noisy) <= 4:
        parts.append("Noisy (~): " + "; ".join(
            f"{r.get('design', r['mode'])} at {r['threads']} ({r['noisy_reason']})"
            for r in noisy) + ".")
    elif noisy:
        widest = max((spread(r) or 0.0) for r in rows)
        floors = sum(1 for r in noisy if "faster" in (r["noisy_reason"] or ""))
        parts.append(f"Noisy (~): {len(noisy)} of {len(rows)} cells (rounds up to "
                     f"{widest:.0%} apart" + (f"; {floors} faster than their floor"
                                              if floors else "") + ").")
    if parts:
        return " ".join(parts)
    if len(modes) < 2:
        return f"Only {modes[0] if modes else 'no mode'} ran: give --modes two or more to compare."
    base = modes[0]
    return f"At {common.plural(top, 'thread')}, against {base}: " + ", ".join(
        f"{m} {ratio(rate, m, base, top):.2f}x" for m in modes[1:]
        if ratio(rate, m, base, top) is not None) + "."


def format_table(rows: list[dict[str, Any]], *, title: str | None = None) -> Any:
    """A rich Table: one row per thread count, one column per design; it fits
    80 columns.

    Each cell holds the best requests/s (~ noisy), the spread of its rounds
    below it, then the ratio to ``global`` and to ``nocheck`` at the same
    thread count (only for the baselines that ran).
    """
    from .. import measure
    from ..usercopy import grid, ratio
    threads_list, modes, rate = grid(rows)
    by_cell = {(r.get("design", r["mode"]), r["threads"]): r for r in rows}
    cpus = measure.available_cpus()
    t = common.table(title, min_width=min(79, max(60, len(title or ""))),
                     caption=f"requests/s, best round (~ noisy; ± spread of the rounds); "
                     f"ratios to global (g) and to nocheck (n) at the same thread count; "
                     f"{common.plural(cpus, 'CPU')} available, * = more threads than CPUs",
                     collapse_padding=True)
    t.add_column("threads", justify="right", no_wrap=True)
    for m in modes:
        # A long design name folds in its header; a cell's lines ("53.7M~",
        # "0.52x g") are never wider than 7 and never fold.
        t.add_column(m.replace("/", "\n"), justify="right", overflow="fold", min_width=7)
    for n in threads_list:
        cells = []
        for m in modes:
            rps = rate.get((m, n))
            if rps is None:
                cells.append("")
                continue
            row = by_cell[m, n]
            sp = measure.spread(row.get("rounds") or row.get("rounds_per_s") or [])
            lines = [measure.si(rps) + ("~" if row.get("noisy") else "")]
            if sp is not None:
                lines.append(f"[dim]±{sp:.0%}[/dim]")
            for base in ("global", "nocheck"):
                r = ratio(rate, m, base, n)
                if r is not None:
                    lines.append(f"[dim]{r:.2f}x {base[0]}[/dim]")
            cells.append("\n".join(lines))
        t.add_row(f"{n}*" if n > cpus else str(n), *cells)
    return t


def spread(row: dict[str, Any]) -> float | None:
    """(best - worst) / best over a cell's rounds, or None for one round."""
    from .. import measure
    return measure.spread(row.get("rounds") or row.get("rounds_per_s") or [])


def figure(rows: list[dict[str, Any]], *, title: str | None = None, log: bool = False,
           ratio: bool = False) -> Any:
    """A matplotlib Figure of requests/s (or, ``ratio``, the ratio to nocheck)
    against threads (log2 axis), one line per design; ``log``: log y axis."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    from matplotlib.ticker import FuncFormatter

    from .. import measure
    from ..usercopy import grid
    from ..usercopy import ratio as ratio_of
    threads_list, modes, rate = grid(rows)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for m in modes:
        ts = [t for t in threads_list if (m, t) in rate]
        ys = [ratio_of(rate, m, "nocheck", t) if ratio else rate[m, t] for t in ts]
        pts = [(t, y) for t, y in zip(ts, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads_list, [str(t) for t in threads_list])
    ax.minorticks_off()
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    if ratio:
        ax.set_ylabel("requests/s over nocheck's (best rounds)")
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: measure.si(y)))
        ax.set_ylabel("requests/s (best round)")
    cpus = measure.available_cpus()
    ax.axvline(cpus, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"threads ({cpus} CPUs available: dotted line)")
    common.fit_title(fig, ax, title or "usercopy: requests/s by lock design")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def figure_seed(cmp: list[dict[str, Any]], *, title: str, log: bool = False) -> Any:
    """Bars: the model's ratio to no lookup per design (hatched where noisy);
    the seed's ratios as reference marks (black ticks) on the designs it measured."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    blue = "#1f77b4"
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    xs = list(range(len(cmp)))
    bars = ax.bar(xs, [r["ratio_to_nocheck"] or 0 for r in cmp], color=blue)
    for bar, r in zip(bars, cmp):               # noise shown, not hidden
        if r["noisy"]:
            bar.set_hatch("//")
            bar.set_edgecolor("white")
    handles = [Patch(facecolor=blue, label="model")]
    if any(r["noisy"] for r in cmp):
        handles.append(Patch(facecolor=blue, hatch="//", edgecolor="white",
                             label="model, noisy (rounds >10% apart)"))
    for x, r in zip(xs, cmp):
        if r["seed_ratio"] is not None:
            ax.plot([x - 0.4, x + 0.4], [r["seed_ratio"]] * 2, color="black", linewidth=2.5)
    handles.append(Line2D([], [], color="black", linewidth=2.5, label="seed (48-vCPU guest)"))
    ax.set_xticks(xs, [r["design"] for r in cmp], rotation=20)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("requests/s over no lookup's")
    common.fit_title(fig, ax, title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(handles=handles)
    return fig

"""``python -m vmap_core usercopy``: lookup lock contention of hardened-usercopy
copies, per lock mode (the sweep is :mod:`vmap_core.usercopy`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import common

NAME = "usercopy"
PAGE_SIZE = 4096                 # usercopy_cell's buffers are whole pages
#: What the kernel measured (nginx + wrk on a 48-CPU guest), for the summary.
KERNEL_NODE_VS_GLOBAL = 5.1      # per-node locks / global lock
KERNEL_NODE_VS_NOCHECK = 0.72    # per-node locks / hardened usercopy off


def add_parser(sub: Any) -> None:
    from ..usercopy import MODES
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="lookup lock contention of hardened-usercopy copies, per lock mode",
        description="Model of the kernel series' workload: native threads (no GIL) copy "
        "through vmalloc'ed buffers, each copy checked by a lookup of its area, while a "
        "writer allocates and frees areas; requests/s per lock mode and thread count.")
    p.add_argument("--buffers", type=common.int_in(1, 1_000_000), default=1000,
                   help="areas allocated in the space (wrk's 1000 connections)")
    p.add_argument("--threads", type=common.int_list(4096), default=None, metavar="N,N,...",
                   help="thread counts to run (default: 1, 2, 4, ... up to 2x the CPU count)")
    p.add_argument("--copy-size", type=common.int_in(1, 1 << 30), default=1024,
                   help="bytes copied per request (nginx's default page plus headers)")
    p.add_argument("--buffer-size", type=common.int_in(PAGE_SIZE, 1 << 30), default=65536,
                   help="bytes of each buffer, a multiple of 4096")
    p.add_argument("--churn-us", type=common.int_in(1, 60_000_000), default=100,
                   help="the writer allocates and frees one area every this many microseconds")
    p.add_argument("--seconds", type=common.float_in(0, 3600), default=0.5,
                   help="run time of each cell in each round")
    p.add_argument("--rounds", type=common.int_in(1, 1000), default=3,
                   help="interleaved repetitions of the sweep; each cell keeps its best")
    p.add_argument("--modes", type=common.choice_list(MODES, "mode"),
                   default=",".join(MODES), metavar="MODE,...", help="lock modes to run")
    p.add_argument("--work-ns", type=common.int_in(0, 10_000_000), default=0,
                   help="extra CPU work per request besides the copy, in nanoseconds")
    p.add_argument("--nr-nodes", type=common.nr_nodes_arg, default=None,
                   help="busy-tree nodes (default: the kernel's rule, CPUs clamped to 1..128)")
    p.add_argument("--python-threads", action="store_true",
                   help="Python threads as the workers (check_copy() and a memoryview copy "
                   "per request) instead of native ones; they run in parallel only on a "
                   "free-threaded CPython with the GIL off, and cannot run 'unlocked'")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--plot", metavar="PATH",
                   help="write a picture of requests/s against threads, in the format its "
                   "extension names (PNG without one; needs matplotlib)")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from .. import usercopy as uc
    if args.buffer_size % PAGE_SIZE:
        args.parser.error(f"--buffer-size must be a multiple of the page size, {PAGE_SIZE}")
    if args.copy_size > args.buffer_size:
        args.parser.error(f"--copy-size {args.copy_size} exceeds --buffer-size {args.buffer_size}")
    common.check_out_dir(args.parser, "--json", args.json)
    common.check_image_path(args.parser, "--plot", args.plot, "--plot")
    threads = args.threads or uc.default_threads()
    cell = {k: getattr(args, k) for k in ("buffers", "buffer_size", "copy_size", "seconds",
                                          "churn_us", "work_ns", "nr_nodes", "rounds")}
    workers = "python" if args.python_threads else "native"
    if workers == "python":
        from ..usercopy_python import MODES as PY_MODES, gil_note
        if args.modes == list(uc.MODES):        # the default: every mode Python can run
            args.modes = [m for m in args.modes if m in PY_MODES]
        elif "unlocked" in args.modes:
            args.parser.error("--python-threads cannot run mode 'unlocked' (a lookup without "
                              "any lock has no Python-level call)")
        print(f"usercopy with Python threads: {gil_note()}")
    try:
        with common.progress_bar(NAME) as progress:
            rows = uc.run_sweep(args.modes, threads, progress=progress, workers=workers,
                                **cell)
    except (RuntimeError, ValueError, MemoryError, OverflowError) as e:
        print(f"vmap-core: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vmap-core: interrupted", file=sys.stderr)
        return 130
    work = f", work {args.work_ns} ns" if args.work_ns else ""
    kind = ", Python threads" if workers == "python" else ""
    title = (f"usercopy{kind}: {args.buffers} buffers of {args.buffer_size} B, copies of "
             f"{args.copy_size} B, churn {args.churn_us} us{work}, best of {args.rounds} x "
             f"{args.seconds:g} s/cell")
    out = common.console()
    out.print(format_table(rows, title=title))
    out.print()
    out.print(summary(rows), markup=False)
    if args.json:
        common.write_json(args.json, uc.to_json(
            rows, {**cell, "modes": args.modes, "threads": threads, "workers": workers}))
        print(f"wrote {args.json}")
    if args.plot:
        fmt = common.save_figure(figure(rows, title=title), args.plot)
        print(f"wrote {args.plot} ({fmt.upper()})")
    return 0


def spread(row: dict[str, Any]) -> float | None:
    """(best - worst) / best over a cell's rounds, or None for one round."""
    rounds = row.get("rounds_per_s") or []
    if len(rounds) < 2 or not max(rounds):
        return None
    return (max(rounds) - min(rounds)) / max(rounds)


def format_table(rows: list[dict[str, Any]], *, title: str | None = None) -> Any:
    """A rich Table: one row per thread count, one column per mode.

    Each cell holds the best requests/s, the spread of its rounds below it,
    then the ratio to ``global`` and to ``nocheck`` at the same thread count
    (only for the baselines that ran).
    """
    from ..usercopy import grid, ratio
    threads_list, modes, rate = grid(rows)
    by_cell = {(r["mode"], r["threads"]): r for r in rows}
    cpus = os.cpu_count() or 1
    t = common.table(title, min_width=min(79, max(60, len(title or ""))),
                     caption=f"requests/s, best round (± spread of the rounds); ratios to "
                     f"global (g) and to nocheck (n) at the same thread count; {cpus} CPUs, "
                     "* = more threads than CPUs")
    t.add_column("threads", justify="right", no_wrap=True)
    for m in modes:
        t.add_column(m, justify="right", no_wrap=True)
    for n in threads_list:
        cells = []
        for m in modes:
            rps = rate.get((m, n))
            if rps is None:
                cells.append("")
                continue
            sp = spread(by_cell[m, n])
            lines = [f"{rps:,.0f}"] + ([f"[dim]±{sp:.0%}[/dim]"] if sp is not None else [])
            for base in ("global", "nocheck"):
                r = ratio(rate, m, base, n)
                if r is not None:
                    lines.append(f"[dim]{r:.2f}x {base[0]}[/dim]")
            cells.append("\n".join(lines))
        t.add_row(f"{n}*" if n > cpus else str(n), *cells)
    return t


def summary(rows: list[dict[str, Any]]) -> str:
    """One paragraph: the ratios that answer the kernel thread's questions,
    each beside the kernel's own figure, for the thread counts that ran."""
    from ..usercopy import grid, ratio
    threads_list, modes, rate = grid(rows)

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
                     f"global lock (the kernel's series: {KERNEL_NODE_VS_GLOBAL}x on 48 CPUs).")
    top = max(threads_list, default=0)
    vs = [(m, ratio(rate, m, "nocheck", top)) for m in modes if m != "nocheck"]
    vs_text = [f"{m} keeps {r:.2f}x" for m, r in vs if r is not None]
    if vs_text:
        parts.append(f"At {common.plural(top, 'thread')}, against nocheck (no lookup), "
                     f"{', '.join(vs_text)} (the kernel's per-node locks kept "
                     f"{KERNEL_NODE_VS_NOCHECK}x).")
    scale = {m: rate[m, 2] / rate[m, 1] for m in modes if rate.get((m, 1)) and (m, 2) in rate}
    if len(scale) >= 2:
        parts.append("From 1 to 2 threads: " + ", ".join(
            f"{m} scales {s:.2f}x" for m, s in scale.items()) + ".")
    if parts:
        return " ".join(parts)
    if len(modes) < 2:
        return f"Only {modes[0] if modes else 'no mode'} ran: give --modes two or more to compare."
    base = modes[0]
    return f"At {common.plural(top, 'thread')}, against {base}: " + ", ".join(
        f"{m} {ratio(rate, m, base, top):.2f}x" for m in modes[1:]
        if ratio(rate, m, base, top) is not None) + "."


def figure(rows: list[dict[str, Any]], *, title: str | None = None) -> Any:
    """A matplotlib Figure of requests/s against threads (log2 axis), one line per mode."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    from matplotlib.ticker import FuncFormatter

    from ..usercopy import grid
    threads_list, modes, rate = grid(rows)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for m in modes:
        ts = [t for t in threads_list if (m, t) in rate]
        ax.plot(ts, [rate[m, t] for t in ts], marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads_list, [str(t) for t in threads_list])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
    cpus = os.cpu_count() or 1
    ax.axvline(cpus, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"threads ({cpus} CPUs: dotted line)")
    ax.set_ylabel("requests/s (best round)")
    ax.set_ylim(bottom=0)
    common.fit_title(fig, ax, title or "usercopy: requests/s by lock mode")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig

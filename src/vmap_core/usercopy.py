"""The usercopy experiment (issue 3's main job): sweep, table, JSON and plot.

A *cell* is one run of the native workload, ``vmap_core._space.usercopy_cell``:
``threads`` native threads (no GIL) each repeatedly pick one of ``buffers``
areas, check the copy against the space (except in ``nocheck``) and copy
``copy_size`` bytes, while a writer thread allocates and frees an area every
``churn_us`` microseconds.  This module runs a sweep of cells and reports it;
:mod:`vmap_core.cli` is its command line.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

MODES = ("nocheck", "unlocked", "global", "node", "rwlock", "optimistic")
PLOT_HINT = "--plot needs matplotlib: pip install vmap_core[plot]"


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says how to get it."""


def default_threads(cpus: int | None = None) -> list[int]:
    """Thread counts 1, 2, 4, ... below 2x the CPU count, then 2x the CPU count."""
    top = 2 * (cpus or os.cpu_count() or 1)
    out, t = [], 1
    while t < top:
        out.append(t)
        t *= 2
    return out + [top]


def _cell_function():
    """The native cell runner, looked up at call time (tests may replace it)."""
    from . import _space
    cell = getattr(_space, "usercopy_cell", None)
    if cell is None:
        raise RuntimeError("this build of vmap_core has no usercopy_cell; "
                           "rebuild the extension (python setup.py build_ext --inplace)")
    return cell


def run_sweep(modes, threads_list, *, buffers, buffer_size, copy_size, seconds,
              churn_us, work_ns, nr_nodes, rounds=1, progress=None) -> list[dict]:
    """Run every (mode, threads) cell ``rounds`` times; keep each cell's best.

    Each round runs all modes for each thread count in turn, and rounds
    follow one another, so slow drift of a shared machine (clock, other
    load) falls on all modes alike; the best round of a cell is the one the
    machine disturbed least.  ``progress(done, total, cell)`` is called before
    each run with ``cell = (mode, threads)`` and once at the end with
    ``cell = None``.  Returns one row per cell: ``mode``, ``threads``,
    ``requests_per_s`` (best round), ``requests``, ``elapsed`` (of that
    round) and ``rounds_per_s`` (every round).
    """
    modes, threads_list = list(modes), list(threads_list)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; known: {', '.join(MODES)}")
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    cell = _cell_function()
    total = len(modes) * len(threads_list) * rounds
    best: dict[tuple, dict] = {}
    done = 0
    for _ in range(rounds):
        for threads in threads_list:
            for mode in modes:
                if progress is not None:
                    progress(done, total, (mode, threads))
                r = cell(mode, threads, buffers=buffers, buffer_size=buffer_size,
                         copy_size=copy_size, seconds=seconds, churn_us=churn_us,
                         work_ns=work_ns, nr_nodes=nr_nodes)
                done += 1
                requests, elapsed = int(r["requests"]), float(r["elapsed"])
                rate = requests / elapsed if elapsed > 0 else 0.0
                row = best.setdefault((mode, threads), {
                    "mode": mode, "threads": threads, "requests_per_s": -1.0,
                    "requests": 0, "elapsed": 0.0, "rounds_per_s": []})
                row["rounds_per_s"].append(rate)
                if rate > row["requests_per_s"]:
                    row.update(requests_per_s=rate, requests=requests, elapsed=elapsed)
    if progress is not None:
        progress(total, total, None)
    return [best[(m, t)] for t in threads_list for m in modes]


def _grid(rows):
    """(threads ascending, modes in first-seen order, {(mode, threads): req/s})."""
    rate = {(r["mode"], r["threads"]): r["requests_per_s"] for r in rows}
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    return sorted({r["threads"] for r in rows}), modes, rate


def _ratio(rate, mode, base, threads):
    """rate(mode) / rate(base) at one thread count, or None where either is missing."""
    a, b = rate.get((mode, threads)), rate.get((base, threads))
    return a / b if a is not None and b else None


def format_table(rows, *, title: str | None = None):
    """A rich Table: one row per thread count, one column per mode.

    Each cell holds requests/s and, below it, the ratio to ``global`` and to
    ``nocheck`` at the same thread count (only for the baselines that ran).
    """
    from rich import box
    from rich.table import Table
    threads_list, modes, rate = _grid(rows)
    cpus = os.cpu_count() or 1
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  min_width=min(79, max(60, len(title or ""))),
                  caption=f"requests/s; ratios to global (g) and to nocheck (n) at the same "
                  f"thread count; {cpus} CPUs, * = more threads than CPUs")
    table.add_column("threads", justify="right", no_wrap=True)
    for m in modes:
        table.add_column(m, justify="right", no_wrap=True)
    for t in threads_list:
        cells = []
        for m in modes:
            rps = rate.get((m, t))
            if rps is None:
                cells.append("")
                continue
            lines = [f"{rps:,.0f}"]
            for base in ("global", "nocheck"):
                r = _ratio(rate, m, base, t)
                if r is not None:
                    lines.append(f"[dim]{r:.2f}x {base[0]}[/dim]")
            cells.append("\n".join(lines))
        table.add_row(f"{t}*" if t > cpus else str(t), *cells)
    return table


def format_text(rows) -> str:
    """The same figures as :func:`format_table`, as plain text (no rich)."""
    threads_list, modes, rate = _grid(rows)
    out = [f"{'threads':>7}  {'mode':<10} {'requests/s':>13} {'vs global':>10} {'vs nocheck':>10}"]
    for t in threads_list:
        for m in modes:
            if (m, t) not in rate:
                continue
            rg, rn = _ratio(rate, m, "global", t), _ratio(rate, m, "nocheck", t)
            out.append(f"{t:>7}  {m:<10} {rate[m, t]:>13,.0f} "
                       f"{'' if rg is None else f'{rg:.2f}x':>10} "
                       f"{'' if rn is None else f'{rn:.2f}x':>10}")
    return "\n".join(out)


def _n(threads: int) -> str:
    return f"{threads} thread{'s' if threads != 1 else ''}"


def summary(rows) -> str:
    """One paragraph on the key ratios, each with the issue's target."""
    threads_list, _, rate = _grid(rows)
    parts = []
    ou = [(t, _ratio(rate, "optimistic", "unlocked", t)) for t in threads_list]
    ou = [(t, r) for t, r in ou if r is not None]
    if ou:
        lo = min(ou, key=lambda x: x[1])
        parts.append(f"optimistic keeps {lo[1]:.2f}x (lowest, at {_n(lo[0])}) to "
                     f"{max(r for _, r in ou):.2f}x of unlocked, the lookup without any "
                     f"locking (target >= 0.95x at every thread count).")
    ng = _ratio(rate, "node", "global", 2)
    if ng is not None:
        parts.append(f"At 2 threads per-node locks give {ng:.2f}x the global lock "
                     f"(target >= 1.3x; the kernel's figure was 5.1x on 48 CPUs).")
    top = max(threads_list, default=0)
    vs = [(m, _ratio(rate, m, "nocheck", top)) for m in ("node", "optimistic")]
    vs = [f"{m} keeps {r:.2f}x" for m, r in vs if r is not None]
    if vs:
        parts.append(f"At {_n(top)}, against nocheck (no lookup), {' and '.join(vs)} "
                     f"(the kernel's per-node locks kept 0.72x).")
    scale = {m: rate[m, 2] / rate[m, 1] for m in ("optimistic", "nocheck")
             if rate.get((m, 1)) and (m, 2) in rate}
    if len(scale) == 2:
        parts.append(f"From 1 to 2 threads optimistic scales {scale['optimistic']:.2f}x, "
                     f"nocheck {scale['nocheck']:.2f}x.")
    return " ".join(parts) or "No mode pair to compare (run global, node, unlocked, optimistic)."


def to_json(rows, params) -> dict:
    """The run as a JSON-ready dict: cpus, params, results, python, timestamp."""
    from . import __version__
    return {
        "cpus": os.cpu_count(),
        "params": dict(params),
        "results": [{k: r[k] for k in ("mode", "threads", "requests_per_s", "requests",
                                       "elapsed", "rounds_per_s") if k in r} for r in rows],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "vmap_core": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def require_matplotlib() -> None:
    """Raise :class:`MissingExtra` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtra(PLOT_HINT) from None


def plot(rows, path, *, title: str | None = None) -> None:
    """Write a PNG of requests/s against threads (log2 axis), one line per mode."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    from matplotlib.ticker import FuncFormatter

    threads_list, modes, rate = _grid(rows)
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
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "usercopy: requests/s by lock mode")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)

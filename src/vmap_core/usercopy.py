"""The usercopy experiment: the sweep of native cells, and its JSON.

A *cell* is one run of the native workload, ``vmap_core._space.usercopy_cell``:
``threads`` native threads (no GIL) each repeatedly pick one of ``buffers``
areas, check the copy against the space (except in ``nocheck``) and copy
``copy_size`` bytes, while a writer thread allocates and frees an area every
``churn_us`` microseconds.  This module runs a sweep of cells and reports it;
its table, summary and plot are drawn by :mod:`vmap_core.cli.usercopy`.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

from ._version import __version__
from .types import UsercopyMode

MODES: tuple[UsercopyMode, ...] = ("nocheck", "unlocked", "global", "node", "rwlock",
                                   "optimistic")


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


WORKERS = ("native", "python")


def run_sweep(modes, threads_list, *, buffers, buffer_size, copy_size, seconds,
              churn_us, work_ns, nr_nodes, rounds=1, progress=None,
              workers="native") -> list[dict]:
    """Run every (mode, threads) cell ``rounds`` times; keep each cell's best.

    Each round runs all modes for each thread count in turn, and rounds
    follow one another, so slow drift of a shared machine (clock, other
    load) falls on all modes alike; the best round of a cell is the one the
    machine disturbed least.  ``progress(done, total, cell)`` is called before
    each run with ``cell = (mode, threads)`` and once at the end with
    ``cell = None``.  Returns one row per cell: ``mode``, ``threads``,
    ``requests_per_s`` (best round), ``requests``, ``elapsed`` (of that
    round) and ``rounds_per_s`` (every round).  ``workers``: "native" (the
    native cell's threads, no GIL) or "python" (Python threads,
    :mod:`vmap_core.usercopy_python`, which cannot run "unlocked").
    """
    modes, threads_list = list(modes), list(threads_list)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; known: {', '.join(MODES)}")
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if workers not in WORKERS:
        raise ValueError(f"unknown workers {workers!r}; known: {', '.join(WORKERS)}")
    if workers == "python":
        from .usercopy_python import MODES as PY_MODES, python_cell as cell
        bad = [m for m in modes if m not in PY_MODES]
        if bad:
            raise ValueError(f"mode(s) {bad} cannot run with Python workers; they run "
                             f"{', '.join(PY_MODES)}")
    else:
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


def grid(rows):
    """(threads ascending, modes in first-seen order, {(mode, threads): req/s})."""
    rate = {(r["mode"], r["threads"]): r["requests_per_s"] for r in rows}
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    return sorted({r["threads"] for r in rows}), modes, rate


def ratio(rate, mode, base, threads):
    """rate(mode) / rate(base) at one thread count, or None where either is missing."""
    a, b = rate.get((mode, threads)), rate.get((base, threads))
    return a / b if a is not None and b else None


def to_json(rows, params) -> dict:
    """The run as a JSON-ready dict: cpus, params, results, python, timestamp."""
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

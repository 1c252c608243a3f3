"""The usercopy experiment: the sweep of native cells, and its JSON.

A *cell* is one run of the native workload, ``vmap_core._space.usercopy_run``:
``threads`` native threads (no GIL) each repeatedly serve a request: pick one
of ``buffers`` areas, check the copy against the space (except in
``nocheck``) and copy ``copy_size`` bytes, ``lookups`` times, then
``work_ns`` of other CPU work; meanwhile a writer thread allocates and frees
an area every ``churn_us`` microseconds (lazily, as vfree() does, with
``lazy_writer``).  A cell's *design* is a mode of the newest kernel ("node",
"global", ...) or ``KERNEL/MODE`` ("6.8/split", "6.9/node", ...).  This module
runs a sweep of cells and reports it; its table, summary and plot are drawn by
:mod:`vmap_core.cli.usercopy`, the seed's comparison by :mod:`vmap_core.seed`.

Per cell, besides requests/s: how many node locks a lookup took, the share of
lookups that started in a node not holding their area (walk lengths, from a
counting pass over lookups drawn as the workers draw them, after the timed
run), contended lock acquisitions and optimistic retries per lookup and the
share of time spent waiting for locks (the lock statistics of the timed run).
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any

from . import measure, profiles
from ._version import __version__
from .types import UsercopyMode

MODES: tuple[UsercopyMode, ...] = ("nocheck", "unlocked", "global", "node", "rwlock",
                                   "optimistic")
CHECK_MODES = ("nocheck", "unlocked")


def default_threads(cpus: int | None = None) -> list[int]:
    """Thread counts 1, 2, 4, ... below 2x the CPU count, then 2x the CPU
    count (default: the CPUs this process may run on)."""
    top = 2 * (cpus or measure.available_cpus())
    out, t = [], 1
    while t < top:
        out.append(t)
        t *= 2
    return out + [top]


def parse_design(design: str) -> tuple[str, str]:
    """'node' -> (newest kernel, 'node'); '6.9/rwlock' -> ('6.9', 'rwlock');
    '6.8' -> ('6.8', 'split') (the kernel's own design).  ValueError for a
    mode that is not one or a lock that does not fit the kernel."""
    kernel, sep, mode = design.rpartition("/")
    if not sep:
        if design in MODES:
            return profiles.NEWEST, design
        kernel, mode = design, ""
    profile = profiles.resolve(kernel)          # ValueError for a bad version
    if not mode:
        mode = profile.default_lock
    if mode not in CHECK_MODES:
        profiles.resolve_lock(profile, mode)    # ValueError when it does not fit
    return profile.name, mode


def memory_available() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(buffers: int, buffer_size: int, available: int | None = None) -> None:
    """MemoryError, saying how much, when a cell's buffers (zeroed and touched,
    as vzalloc's are) would not fit in the memory available; checked before
    anything is allocated."""
    need = buffers * buffer_size
    avail = memory_available() if available is None else available
    if avail is not None and need > avail:
        raise MemoryError(
            f"{buffers:,} buffers x {buffer_size:,} B = {_size(need)}, more than the "
            f"{_size(avail)} of memory available (MemAvailable): give fewer --buffers or a "
            "smaller --buffer-size")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _cell_function():
    """The native cell runner, looked up at call time (tests may replace it)."""
    from . import _space
    cell = getattr(_space, "usercopy_run", None)
    if cell is None:
        raise RuntimeError("this build of vmap_core has no usercopy_run; "
                           "rebuild the extension (python setup.py build_ext --inplace)")
    return cell


def per_lookup(r: dict[str, Any], mode: str) -> dict[str, float | None]:
    """The per-lookup counts of one cell's result (usercopy_run's dict)."""
    lookups = r.get("lookups") or 0
    locks = r.get("locks") or {}
    walked = r.get("walk_lookups") or 0
    nodes = r["walk_nodes"] / walked if walked else None
    out: dict[str, float | None] = {
        "nodes_per_lookup": nodes,
        "off_first_node": r["walk_off_first"] / walked if walked else None,
        "node_locks_per_lookup": None, "contended_per_lookup": None,
        "retries_per_lookup": None,
    }
    if mode == "nocheck" or not lookups:
        return out
    opt = locks.get("optimistic", {"retries": 0, "fallbacks": 0})
    if mode == "unlocked":
        out["node_locks_per_lookup"] = 0.0
    elif mode == "global":
        out["node_locks_per_lookup"] = 1.0      # the one lock, around the whole walk
    elif mode == "optimistic":
        out["node_locks_per_lookup"] = opt["fallbacks"] / lookups
    else:                                       # node, split, rwlock: a lock per node visited
        out["node_locks_per_lookup"] = nodes
    if mode == "rwlock":
        contended = locks["rwlock"]["read_waits"]
    elif mode == "global":
        contended = locks["global"]["contended"]
    elif mode == "unlocked":
        contended = 0
    else:
        contended = locks["busy"]["contended"]
    out["contended_per_lookup"] = contended / lookups
    out["retries_per_lookup"] = opt["retries"] / lookups
    return out


def run_sweep(modes, threads_list, *, buffers, buffer_size, copy_size, seconds,
              churn_us, work_ns, nr_nodes, rounds=1, progress=None, lookups=1,
              lazy_writer=False, lazy_max_pages=None, runner=None) -> list[dict]:
    """Run every (design, threads) cell ``rounds`` times; keep each cell's best.

    ``modes`` are designs (:func:`parse_design`).  Each round runs all
    designs for each thread count in turn, and rounds follow one another, so
    slow drift of a shared machine (clock, other load) falls on all alike; the
    best round of a cell is the one the machine disturbed least.
    ``progress(done, total, cell)`` is called before each run with ``cell =
    (design, threads)`` and once at the end with ``cell = None``.  Returns one
    row per cell: ``mode``, ``kernel``, ``design``, ``threads``,
    ``requests_per_s`` (best round), ``requests``, ``elapsed`` (of that round),
    ``rounds`` (every round's requests/s; also as ``rounds_per_s``), the
    per-lookup counts of the best round (:func:`per_lookup`),
    ``lock_wait_share``, and ``noisy`` / ``noisy_reason`` (:func:`mark_noise`).

    ``runner`` runs one cell (default: the native ``usercopy_run``); another
    with the same arguments and result keys, such as Python threads on a
    free-threaded build, plugs in here.
    """
    modes, threads_list = list(modes), list(threads_list)
    parsed = {}
    bad = []
    for m in modes:
        try:
            parsed[m] = parse_design(m)
        except (TypeError, ValueError):
            bad.append(m)
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; known: {', '.join(MODES)}, or "
                         "KERNEL/MODE such as 6.9/node or 6.8/split")
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    check_memory(buffers, buffer_size)
    cell = runner or _cell_function()
    total = len(modes) * len(threads_list) * rounds
    best: dict[tuple, dict] = {}
    done = 0
    for _ in range(rounds):
        for threads in threads_list:
            for design in modes:
                kernel, mode = parsed[design]
                if progress is not None:
                    progress(done, total, (design, threads))
                r = cell(mode, threads, buffers=buffers, buffer_size=buffer_size,
                         copy_size=copy_size, seconds=seconds, churn_us=churn_us,
                         work_ns=work_ns, nr_nodes=nr_nodes, kernel=kernel, lookups=lookups,
                         lazy_writer=lazy_writer, lazy_max_pages=lazy_max_pages)
                done += 1
                requests, elapsed = int(r["requests"]), float(r["elapsed"])
                rate = requests / elapsed if elapsed > 0 else 0.0
                row = best.setdefault((design, threads), {
                    "mode": mode, "kernel": kernel, "design": design, "threads": threads,
                    "requests_per_s": -1.0, "requests": 0, "elapsed": 0.0, "rounds": []})
                row["rounds"].append(rate)
                if rate > row["requests_per_s"]:
                    wait = (r["locks"]["wait_ns"] / 1e9 / (threads * elapsed)
                            if elapsed > 0 else None)
                    row.update(requests_per_s=rate, requests=requests, elapsed=elapsed,
                               lookups=r.get("lookups"), lock_wait_share=wait,
                               nr_nodes=r.get("nr_nodes"), **per_lookup(r, mode))
    if progress is not None:
        progress(total, total, None)
    rows = [best[(m, t)] for t in threads_list for m in modes]
    for row in rows:
        row["rounds_per_s"] = row["rounds"]
    mark_noise(rows)
    return rows


def mark_noise(rows: list[dict]) -> None:
    """Set ``noisy`` and ``noisy_reason`` on every row: rounds more than
    measure.NOISY_SPREAD apart, or a result that contradicts its floor (a mode
    with lookups faster than nocheck, or a locked lookup faster than the
    unlocked one, at the same thread count)."""
    rate = {(r["mode"], r["threads"]): r["requests_per_s"] for r in rows
            if r["mode"] in CHECK_MODES}
    for r in rows:
        reasons = []
        sp = measure.spread(r.get("rounds") or [])
        if sp is not None and sp > measure.NOISY_SPREAD:
            reasons.append(f"rounds {sp:.0%} apart")
        nc = rate.get(("nocheck", r["threads"]))
        un = rate.get(("unlocked", r["threads"]))
        if r["mode"] != "nocheck" and nc and r["requests_per_s"] > nc:
            reasons.append("faster than nocheck")
        elif r["mode"] not in CHECK_MODES and un and r["requests_per_s"] > un:
            reasons.append("faster than unlocked")
        r["noisy"] = bool(reasons)
        r["noisy_reason"] = "; ".join(reasons) or None


def grid(rows):
    """(threads ascending, designs in first-seen order, {(design, threads): req/s})."""
    rate = {(r.get("design", r["mode"]), r["threads"]): r["requests_per_s"] for r in rows}
    modes = list(dict.fromkeys(r.get("design", r["mode"]) for r in rows))
    return sorted({r["threads"] for r in rows}), modes, rate


def ratio(rate, mode, base, threads):
    """rate(mode) / rate(base) at one thread count, or None where either is missing."""
    a, b = rate.get((mode, threads)), rate.get((base, threads))
    return a / b if a is not None and b else None


RESULT_KEYS = ("mode", "kernel", "design", "threads", "requests_per_s", "requests", "elapsed",
               "rounds", "rounds_per_s", "noisy", "noisy_reason", "lookups", "nr_nodes",
               "node_locks_per_lookup", "off_first_node", "contended_per_lookup",
               "retries_per_lookup", "nodes_per_lookup", "lock_wait_share")


def to_json(rows, params) -> dict:
    """The run as a JSON-ready dict: cpus (those this process may use),
    params, results, machine, python, timestamp."""
    return {
        "cpus": measure.available_cpus(),
        "cpus_online": os.cpu_count(),
        "machine": measure.machine_name(),
        "params": dict(params),
        "results": [{k: r[k] for k in RESULT_KEYS if k in r} for r in rows],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "vmap_core": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

"""The usercopy cell with Python threads as the workers.

The same experiment as the native cell (``vmap_core._space.usercopy_run``),
plugged into :func:`vmap_core.usercopy.run_sweep` as its ``runner``:
``threads`` copiers each serve requests of ``lookups`` checked copies (pick
one of ``buffers`` vmalloc'ed buffers, check the copy against the space with
``VmapSpace.check_copy``, check_heap_object(), except in ``nocheck``, copy
``copy_size`` bytes into it), while a writer thread allocates and frees (or
frees lazily, ``lazy_writer``) an area every ``churn_us`` microseconds.  Here every one
of them is a plain ``threading.Thread`` running Python: on a free-threaded
CPython with the GIL off they run in parallel and contend on the space's
locks as the native threads do; on a GIL build the GIL serialises them, so
requests/s cannot grow with threads (``gil_note()`` says which applies).

Each worker has its own bound method, its own buffer starts (its own int
objects) and its own memoryview of the buffers, so that on a free-threaded
build no reference count is shared between workers but the space's.
"""

from __future__ import annotations

import math
import random
import sys
import sysconfig
import threading
import time
from typing import Any

PAGE = 4096
BASE = 1 << 40
#: Modes a Python worker can run: "unlocked" (a lookup without any lock) has
#: no Python-level call, it exists only in the native cell.
MODES = ("nocheck", "global", "node", "split", "rwlock", "optimistic")
MAX_THREADS = 1024


def gil_note() -> str:
    """Whether Python workers can run in parallel on this interpreter."""
    enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    if not enabled:
        return "free-threaded CPython, GIL off: the Python workers run in parallel"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return ("free-threaded CPython with the GIL turned back on (PYTHON_GIL=1 or an "
                "extension that needs it): the GIL serialises the Python workers")
    return "GIL build: the GIL serialises the Python workers (requests/s cannot grow with threads)"


def _bounded(v: object, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an integer, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], not {v}")
    return v


def python_cell(mode: str, threads: int, *, buffers: int = 1000, buffer_size: int = 65536,
                copy_size: int = 1024, seconds: float = 1.0, churn_us: int = 100,
                work_ns: int = 0, nr_nodes: int | None = None, kernel: str | None = None,
                lookups: int = 1, lazy_writer: bool = False,
                lazy_max_pages: int | None = None) -> dict[str, Any]:
    """One cell with Python threads; returns the keys of usercopy_run()'s
    result that run_sweep() reads (requests, elapsed, per_thread, lookups,
    churn_ops, locks: lock_totals() of the run, nr_nodes; walk_* are 0: the
    counting pass is the native cell's) and ``workers``: "python".
    ValueError for a mode not in MODES or an argument out of the native
    cell's ranges."""
    from ._space import VmapSpace, lock_totals
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} cannot run with Python workers; they run "
                         f"{', '.join(MODES)}")
    nthreads = _bounded(threads, "threads", 1, MAX_THREADS)
    nbuf = _bounded(buffers, "buffers", 1, 1 << 20)
    bsize = _bounded(buffer_size, "buffer_size", PAGE, 1 << 30)
    csize = _bounded(copy_size, "copy_size", 1, bsize)
    churn_s = _bounded(churn_us, "churn_us", 0, 10 ** 9) / 1e6
    work = _bounded(work_ns, "work_ns", 0, 10 ** 9)
    nlookups = _bounded(lookups, "lookups", 1, 10 ** 6)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    if not (math.isfinite(seconds) and 0 < seconds <= 86400):
        raise ValueError(f"seconds must be in (0, 86400], not {seconds}")
    if bsize % PAGE:
        raise ValueError("buffer_size must be a multiple of 4096")
    area = bsize + PAGE                 # vmalloc adds a guard page
    lock = "node" if mode == "nocheck" else mode
    if kernel == "6.8" or mode == "split":
        nr_nodes = 1
    space = VmapSpace(BASE, BASE + 4 * nbuf * area + (1 << 30), nr_nodes=nr_nodes,
                      lock=None if lock == "split" else lock, kernel=kernel,
                      lazy_max_pages=lazy_max_pages)
    # Only the locked modes let the writer touch the tree the readers walk.
    churn_space = space if mode != "nocheck" else VmapSpace(
        BASE, BASE + (1 << 30), nr_nodes=nr_nodes, kernel=kernel)
    starts = [space.alloc(area) for _ in range(nbuf)]
    arena = bytearray(nbuf * bsize)     # vzalloc: zeroed
    span = bsize - csize + 1
    check = mode != "nocheck"
    requests = [0] * nthreads
    ready = threading.Barrier(nthreads + 2)
    stop = threading.Event()
    churn_ops = [0]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            rng = random.Random(0x9E3779B97F4A7C15 * (k + 1))
            mine = [int.from_bytes(s.to_bytes(8, "little"), "little") for s in starts]
            offsets = [i * bsize for i in range(nbuf)]
            check_copy = space.check_copy
            view = memoryview(arena)
            src = bytes([0x5A]) * csize
            n = 0
        except BaseException as e:
            errors.append(e)
            ready.wait()
            return
        ready.wait()
        try:
            while True:         # at least one batch, however late the thread got a CPU
                for _ in range(64):
                    for _ in range(nlookups):
                        r = rng.getrandbits(64)
                        i = r % nbuf
                        off = (r >> 24) % span
                        if check:
                            check_copy(mine[i] + off, csize)     # check_heap_object()
                        o = offsets[i] + off
                        view[o:o + csize] = src                  # copy_to_user()
                    if work:
                        t = time.perf_counter_ns() + work
                        while time.perf_counter_ns() < t:
                            pass
                n += 64
                if stop.is_set():
                    break
        except BaseException as e:
            errors.append(e)
            stop.set()
        requests[k] = n

    def churn() -> None:
        ready.wait()
        try:
            release = churn_space.free_lazy if lazy_writer else churn_space.free
            while True:         # at least one change, as the workers make one batch
                release(churn_space.alloc(PAGE))
                churn_ops[0] += 1
                if stop.is_set():
                    break
                if churn_s:
                    time.sleep(churn_s)
        except BaseException as e:
            errors.append(e)
            stop.set()

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(nthreads)]
    pool.append(threading.Thread(target=churn, daemon=True))
    for t in pool:
        t.start()
    try:
        ready.wait()
        t0 = time.perf_counter()
        stop.wait(seconds)
        stop.set()
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        for t in pool:
            t.join()
    if errors:
        raise RuntimeError(f"usercopy: a Python worker failed: {errors[0]!r}") from errors[0]
    total = sum(requests)
    return {"requests": total, "elapsed": elapsed, "per_thread": requests,
            "lookups": 0 if mode == "nocheck" else total * nlookups,
            "churn_ops": churn_ops[0], "locks": lock_totals(space),
            "walk_lookups": 0, "walk_nodes": 0, "walk_off_first": 0,
            "nr_nodes": space.nr_nodes, "workers": "python"}

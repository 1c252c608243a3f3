"""do_concurrent_test() of lib/test_vmalloc.c over a vmap space, and its reports.

Two drivers run the scenarios of :mod:`vmap_core.kernel.scenarios`:

* :func:`run_native`: ``nr_threads`` native threads without the GIL, each
  running the scenarios in C (``_tvmalloc.pxi``: every scenario but
  ``pcpu_alloc_test`` and ``vm_map_ram_test``, ``NATIVE_MASK``), so that the
  lock designs contend as kernel threads do;
* :func:`run`: Python threads calling the Python scenarios (the readable
  definition; any space, the reference included).

Both give worker ``i`` the get_random_*() stream ``KernelRandom.for_worker(seed,
i)`` (its shuffle first, then its scenarios) and run it on emulated CPU
``i % online_cpus``: its allocations try that CPU's node pool first.  With one
worker the two drivers make the same calls and get the same addresses (the
tests hold them to it).  ``cpus`` emulates a machine (:func:`make_space`):
nr_nodes, lazy_max_pages and num_online_cpus() follow it, whatever the number of
threads that really run.

A *design* is a kernel profile and a lock design, ``("6.8", "split")``,
``("6.9", "node")``...; :func:`run_designs` runs one fresh space per design.
:func:`kernel_lines` prints the module's own lines (``Summary: ... xfailed:
...``) and :func:`parse_kernel_log` reads them back, from vmap_core or from a
real kernel's log.  ``PRESETS`` are those of
tools/testing/selftests/mm/test_vmalloc.sh.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

from .. import profiles
from ..measure import available_cpus
from .._version import __version__
from .scenarios import (KERNEL_TEST_LOOP_COUNT, PAGE_SIZE, SCENARIOS, VMALLOC_END, VMALLOC_START,
                        KernelRandom, Params, fls, selected, shuffle_array)

#: run_test_mask bits the native workers run (all but pcpu_alloc_test, bit 7,
#: and vm_map_ram_test, bit 10, modelled in Python only); the core's
#: TEST_VMALLOC_NATIVE_MASK says the same.
NATIVE_MASK = 0x37F

#: tools/testing/selftests/mm/test_vmalloc.sh: PERF_PARAM, SMOKE_PARAM and
#: STRESS_PARAM ("NUM_CPUS": the machine's CPUs, here the emulated ones).
PRESETS: dict[str, dict[str, Any]] = {
    "performance": {"sequential_test_order": True, "test_repeat_count": 3},
    "smoke": {"test_loop_count": 10000, "test_repeat_count": 10},
    "stress": {"nr_threads": "NUM_CPUS", "test_repeat_count": 20},
}
PRESET_HELP = {
    "performance": "all test cases on one CPU in sequential order, each three times",
    "smoke": "basic coverage: 10,000 loops, each test ten times",
    "stress": "all test cases by NUM_CPUS workers at once, each twenty times",
}


def preset_params(name: str, cpus: int) -> dict[str, Any]:
    """The module parameters a preset of test_vmalloc.sh passes (NUM_CPUS = cpus)."""
    return {k: (cpus if v == "NUM_CPUS" else v) for k, v in PRESETS[name].items()}


# -- what a run records ----------------------------------------------------------

@dataclasses.dataclass
class TestData:
    """struct test_case_data: per worker and scenario, and what the tests compare."""
    passed: int = 0
    failed: int = 0
    xfailed: int = 0
    usec: float = 0.0           # (time of all repeats) / test_repeat_count
    allocs: int | None = None   # native driver: allocations that returned an area
    nulls: int | None = None    # ... that returned NULL
    hash: int | None = None     # ... FNV-1a of the addresses, in order


@dataclasses.dataclass
class Worker:
    index: int
    order: list[int]            # scenario indices in the order this worker ran them
    data: dict[int, TestData]
    cpu: int = 0                # the emulated CPU it ran on
    usec: float = 0.0           # "All test took workerN": start to stop


@dataclasses.dataclass
class LockRun:
    """One do_concurrent_test() on a fresh space with one design."""
    impl: str
    lock: str
    params: Params
    seed: int
    workers: list[Worker]
    wall_s: float
    check_ok: bool
    check_error: str | None
    empty: bool
    stats: dict
    kernel: str = profiles.NEWEST
    driver: str = "python"
    cpus: int | None = None     # the emulated machine (None: this one)
    locks: dict | None = None   # lock_totals() of the run (the core)

    @property
    def design(self) -> str:
        return f"{self.kernel}/{self.lock}"

    def summary(self) -> list[dict]:
        """Per selected scenario: passed, failed and xfailed summed over
        workers, avg usec the mean of the workers' averages, and whether that
        is what is expected (nothing failed: an xfail test that passes counts
        as failed, as the kernel counts it)."""
        rows = []
        for i in selected(self.params.run_test_mask):
            sc = SCENARIOS[i]
            data = [w.data[i] for w in self.workers]
            failed = sum(d.failed for d in data)
            rows.append({
                "id": 1 << i, "name": sc.name,
                "passed": sum(d.passed for d in data), "failed": failed,
                "xfailed": sum(d.xfailed for d in data),
                "avg_usec": sum(d.usec for d in data) / len(data),
                "supposed_to_fail": sc.supposed_to_fail,
                "as_expected": failed == 0,
            })
        return rows

    @property
    def ok(self) -> bool:
        return (self.check_ok and self.empty
                and all(r["as_expected"] for r in self.summary()))

    @property
    def lock_wait_share(self) -> float | None:
        """Time the workers spent waiting for locks (lock statistics: the
        contended paths) over the workers' time, nr_threads x wall time."""
        if not self.locks or self.wall_s <= 0:
            return None
        return self.locks["wait_ns"] / 1e9 / (self.params.nr_threads * self.wall_s)


# -- spaces and designs ----------------------------------------------------------

def space_class(reference: bool = False):
    """VmapSpace (the Cython core) or ReferenceSpace."""
    if reference:
        from ..reference import ReferenceSpace
        return ReferenceSpace
    from .._space import VmapSpace
    return VmapSpace


def lazy_max_pages(cpus: int, page_size: int = PAGE_SIZE) -> int:
    """lazy_max_pages() of a machine with ``cpus`` online CPUs."""
    return fls(max(cpus, 1)) * (32 << 20) // page_size


def machine(kernel: str | None, cpus: int | None) -> dict[str, Any]:
    """The constructor arguments of an emulated ``cpus``-CPU machine: nr_nodes
    (possible CPUs clamped to 1..128; one under 6.8) and lazy_max_pages."""
    if cpus is None:
        return {}
    profile = profiles.resolve(kernel)
    out: dict[str, Any] = {"lazy_max_pages": lazy_max_pages(cpus)}
    if profile.nodes:
        out["nr_nodes"] = max(1, min(cpus, 128))
    return out


def make_space(lock: str | None, reference: bool = False, *, kernel: str | None = None,
               cpus: int | None = None, **kwargs):
    """A fresh space over x86-64's vmalloc range [VMALLOC_START, VMALLOC_END),
    for ``kernel``'s profile and ``lock`` design, on an emulated ``cpus``-CPU
    machine (None: this one)."""
    return space_class(reference)(VMALLOC_START, VMALLOC_END, lock=lock, kernel=kernel,
                                  **machine(kernel, cpus), **kwargs)


Design = tuple[str, str]


def designs(kernels, locks) -> list[Design]:
    """Every (kernel, lock) pair that combines, in the order given.  ``locks``
    None: each kernel's own designs (vmap_core.profiles.lock_modes: split,
    global, rwlock, optimistic for 6.8; node, global, rwlock, optimistic
    after).  ValueError when a lock given fits none of the kernels."""
    out: list[Design] = []
    for k in kernels:
        profile = profiles.resolve(k)
        allowed = profiles.lock_modes(profile)
        for lock in (allowed if locks is None else locks):
            if lock in allowed:
                out.append((profile.name, lock))
    if not out:
        raise ValueError(f"no design combines kernel {', '.join(kernels)} with lock "
                         f"{', '.join(locks or [])} ('node' needs 6.9 or later, "
                         "'split' is 6.8's)")
    return out


#: The cover letter's comparison: before the series (v6.8's design), after it
#: (v6.9), the v6.16 walk, and the lock designs this package studies.
COVER_LETTER_DESIGNS: list[Design] = [("6.8", "split"), ("6.9", "node"), ("6.16", "node"),
                                      ("6.16", "global"), ("6.16", "rwlock"),
                                      ("6.16", "optimistic")]


# -- the drivers -----------------------------------------------------------------

def _finish(space) -> tuple[bool, str | None, bool]:
    """Purge what is lazy or pooled, then check(): (check ok, error, empty)."""
    purge = getattr(space, "purge", None)
    if purge is not None:
        purge(full=True)
    drain = getattr(space, "drain_pools", None)
    if drain is not None:
        drain()
    try:
        space.check()
    except (AssertionError, RuntimeError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}", False
    whole = [(a.start, a.end) for a in space.free_areas()]
    return True, None, len(space) == 0 and whole == [(space.start, space.end)]


class Serialized:
    """A space whose every call holds one lock: for ReferenceSpace, which has no
    locking of its own (lock modes change nothing there), under several threads."""

    def __init__(self, space):
        object.__setattr__(self, "_space", space)
        object.__setattr__(self, "_lock", threading.Lock())

    def __getattr__(self, name):
        value = getattr(self._space, name)
        if not callable(value):
            return value
        lock = self._lock

        def locked(*args, **kwargs):
            with lock:
                return value(*args, **kwargs)
        return locked

    def __len__(self):
        with self._lock:
            return len(self._space)


class OnCpu:
    """A worker's view of a space from one (emulated) CPU: alloc() passes that
    ``cpu``, so alloc_vmap_area() tries the pool of its node first; everything
    else is the space's."""

    def __init__(self, space, cpu: int):
        alloc = space.alloc
        object.__setattr__(self, "_space", space)
        object.__setattr__(self, "cpu", cpu)
        object.__setattr__(self, "alloc", lambda size, align=None, vstart=None, vend=None:
                           alloc(size, align, vstart, vend, cpu=cpu))

    def __getattr__(self, name):
        return getattr(self._space, name)

    def __len__(self):
        return len(self._space)


def _thread_safe(space) -> bool:
    """The Cython core locks itself; anything else is serialized."""
    try:
        from .._space import VmapSpace
    except ImportError:
        return False
    return isinstance(space, VmapSpace)


def plan(p: Params, seed: int) -> tuple[list[Worker], list[KernelRandom]]:
    """Each worker's order (test_func(): shuffle_array() of all eleven
    indices unless sequential_test_order, then the masked ones), its CPU and
    its random stream, positioned after the shuffle."""
    workers, rngs = [], []
    for n in range(p.nr_threads):
        rng = KernelRandom.for_worker(seed, n)
        order = list(range(len(SCENARIOS)))
        if not p.sequential_test_order:
            shuffle_array(order, rng)
        order = [i for i in order if (p.run_test_mask >> i) & 1]
        workers.append(Worker(n, order, {i: TestData() for i in order}, cpu=n % p.online_cpus))
        rngs.append(rng)
    return workers, rngs


def _seed(seed: int | None) -> int:
    return seed if seed is not None else int.from_bytes(os.urandom(4), "little")


def run(space, params: Params = Params(), *, seed: int | None = None,
        impl: str = "core", on_test_done=None) -> LockRun:
    """do_concurrent_test() on ``space`` with Python threads: nr_threads
    threads, each running the selected Python scenarios (shuffled unless
    sequential_test_order) test_repeat_count times, all released at once;
    then purge, check() and the empty test.

    ``on_test_done()`` is called from the worker threads after each scenario.
    A scenario that raises (a bug, not a failed allocation) is re-raised here
    after all workers stopped.  A space other than the core (the reference) is
    shared through :class:`Serialized` when there is more than one worker.
    """
    p = params.effective()
    shared = space if p.nr_threads == 1 or _thread_safe(space) else Serialized(space)
    seed = _seed(seed)
    go = threading.Event()                     # prepare_for_test_srcu
    errors: list[BaseException] = []
    workers, rngs = plan(p, seed)

    def test_func(w: Worker, rng: KernelRandom) -> None:
        view = OnCpu(shared, w.cpu)
        go.wait()
        start = time.perf_counter_ns()
        try:
            for i in w.order:
                t0 = time.perf_counter_ns()
                for _ in range(p.test_repeat_count):
                    ok = SCENARIOS[i](view, rng, p)
                    d = w.data[i]
                    if ok and not SCENARIOS[i].supposed_to_fail:
                        d.passed += 1
                    elif not ok and SCENARIOS[i].supposed_to_fail:
                        d.xfailed += 1
                    else:
                        d.failed += 1
                w.data[i].usec = (time.perf_counter_ns() - t0) / 1e3 / p.test_repeat_count
                if on_test_done is not None:
                    on_test_done()
        except BaseException as e:             # reported by run()
            errors.append(e)
        w.usec = (time.perf_counter_ns() - start) / 1e3

    threads = [threading.Thread(target=test_func, args=(w, r), name=f"vmalloc_test/{w.index}",
                                daemon=True) for w, r in zip(workers, rngs)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    locks = _lock_totals(space)
    check_ok, check_error, empty = _finish(space)
    return LockRun(impl=impl, lock=space.lock, params=p, seed=seed, workers=workers,
                   wall_s=wall, check_ok=check_ok, check_error=check_error, empty=empty,
                   stats=dict(space.stats()), kernel=space.kernel, driver="python",
                   locks=locks)


def _lock_totals(space) -> dict | None:
    if not _thread_safe(space):
        return None
    from .._space import lock_totals
    return lock_totals(space)


def not_native(run_test_mask: int) -> list[str]:
    """The selected scenarios the native driver does not run."""
    return [SCENARIOS[i].name for i in selected(run_test_mask) if not (NATIVE_MASK >> i) & 1]


def run_native(space, params: Params = Params(), *, seed: int | None = None,
               impl: str = "core") -> LockRun:
    """do_concurrent_test() on the core's ``space`` with native threads
    (no GIL): the same plan as :func:`run`, the scenarios in C.  ValueError
    for a mask with scenarios the native driver lacks (:func:`not_native`)."""
    from .._space import test_vmalloc_native
    p = params.effective()
    missing = not_native(p.run_test_mask)
    if missing:
        raise ValueError(f"the native driver does not run {', '.join(missing)} "
                         "(use the Python driver)")
    seed = _seed(seed)
    workers, rngs = plan(p, seed)
    res = test_vmalloc_native(space, [w.order for w in workers], [w.cpu for w in workers],
                              [r.state for r in rngs], test_loop_count=p.test_loop_count,
                              test_repeat_count=p.test_repeat_count, nr_pages=p.nr_pages,
                              use_huge=p.use_huge, online_cpus=p.online_cpus,
                              auto_purge=space.auto_purge)
    for w, nw in zip(workers, res["workers"]):
        w.usec = (nw["stop_ns"] - nw["start_ns"]) / 1e3
        for i, t in nw["tests"].items():
            w.data[i] = TestData(**t)
    locks = _lock_totals(space)
    check_ok, check_error, empty = _finish(space)
    if res["free_errors"]:
        check_ok, check_error = False, f"{res['free_errors']} frees refused by the space"
    return LockRun(impl=impl, lock=space.lock, params=p, seed=seed, workers=workers,
                   wall_s=res["wall_ns"] / 1e9, check_ok=check_ok, check_error=check_error,
                   empty=empty, stats=dict(space.stats()), kernel=space.kernel,
                   driver="native", locks=locks)


def run_designs(design_list, params: Params = Params(), *, seed: int | None = None,
                reference: bool = False, native: bool = True, cpus: int | None = None,
                progress=None) -> list[LockRun]:
    """One run per design, each on a fresh space of the emulated machine, with
    the same seed.  ``progress(done, total, cell)`` (as in
    :mod:`vmap_core.cli.common`) is called from this thread with ``cell =
    (design, nr_threads)``, and with ``cell = None`` at the end."""
    p = params.effective()
    if cpus is not None:
        p = dataclasses.replace(p, online_cpus=cpus)
    seed = _seed(seed)
    impl = "reference" if reference else "core"
    native = native and not reference
    per = p.nr_threads * len(selected(p.run_test_mask))
    total = per * len(design_list)
    out = []
    for k, (kernel, lock) in enumerate(design_list):
        space = make_space(lock, reference, kernel=kernel, cpus=cpus)
        label = f"{kernel}/{lock}"
        if progress is not None:
            progress(k * per, total, (label, p.nr_threads))
        if native:
            r = run_native(space, p, seed=seed, impl=impl)
        else:
            done = [0]
            lock_ = threading.Lock()

            def tick(k=k, label=label):
                with lock_:
                    done[0] += 1
                    d = done[0]
                if progress is not None:
                    progress(k * per + d, total, (label, p.nr_threads))
            r = run(space, p, seed=seed, impl=impl, on_test_done=tick)
        r.cpus = cpus
        out.append(r)
    if progress is not None:
        progress(total, total, None)
    return out


def run_locks(locks, params: Params = Params(), *, seed: int | None = None,
              reference: bool = False, progress=None) -> list[LockRun]:
    """:func:`run` (Python threads) once per lock mode of the newest kernel."""
    return run_designs([(profiles.NEWEST, lock) for lock in locks], params, seed=seed,
                       reference=reference, native=False, progress=progress)


# -- the kernel's lines, and reading them back ------------------------------------------

def kernel_lines(r: LockRun) -> list[str]:
    """The module's pr_info() lines, per worker (µs where it prints cycles)."""
    p = r.params
    out = []
    for w in r.workers:
        for i in selected(p.run_test_mask):
            d = w.data[i]
            out.append(f"Summary: {SCENARIOS[i].name} passed: {d.passed} failed: {d.failed} "
                       f"xfailed: {d.xfailed} repeat: {p.test_repeat_count} "
                       f"loops: {p.test_loop_count} avg: {int(d.usec)} usec")
        out.append(f"All test took worker{w.index}={int(w.usec)} usec")
    return out


#: pr_info("Summary: %s passed: %d failed: %d xfailed: %d repeat: %d loops: %d
#: avg: %llu usec\n"); before the xfail change (2025) there was no xfailed.
SUMMARY_RE = re.compile(
    r"Summary: (?P<name>\w+) passed: (?P<passed>-?\d+) failed: (?P<failed>-?\d+)"
    r"(?: xfailed: (?P<xfailed>-?\d+))? repeat: (?P<repeat>-?\d+) loops: (?P<loops>-?\d+)"
    r" avg: (?P<avg_usec>\d+) usec\s*$")
WORKER_RE = re.compile(r"All test took worker(?P<worker>\d+)=(?P<took>\d+) (?P<unit>cycles|usec)")


def parse_kernel_log(text: str) -> list[dict[str, Any]]:
    """The Summary lines of a kernel log (dmesg, with or without its
    timestamps and module prefix) or of :func:`kernel_lines`, in order:
    {worker, name, passed, failed, xfailed (None before the xfail change),
    repeat, loops, avg_usec}.  A worker's lines come before its "All test
    took" line, as the module prints them."""
    rows: list[dict[str, Any]] = []
    worker = 0
    for line in text.splitlines():
        m = SUMMARY_RE.search(line)
        if m:
            row: dict[str, Any] = {"worker": worker, "name": m["name"]}
            for k in ("passed", "failed", "xfailed", "repeat", "loops", "avg_usec"):
                row[k] = None if m[k] is None else int(m[k])
            rows.append(row)
            continue
        m = WORKER_RE.search(line)
        if m:
            worker = int(m["worker"]) + 1
    return rows


# -- reports ---------------------------------------------------------------------

def verdict(r: LockRun) -> str:
    if not r.check_ok:
        chk = f"check() FAILED: {r.check_error}"
    else:
        chk = "check() ok, space empty" if r.empty else "check() ok, space NOT empty"
    bad = [row["name"] for row in r.summary() if not row["as_expected"]]
    res = "all as expected" if not bad else "UNEXPECTED: " + ", ".join(bad)
    purges = r.stats.get("purges")
    lazy = f"; {purges:,} purges" if purges is not None else "; frees immediate (no free_lazy)"
    return f"{r.impl}/{r.design}: {res}; {chk}{lazy}; {r.wall_s:.2f} s"


def describe(p: Params, seed: int | None = None) -> str:
    p = p.effective()
    loops = f"{p.test_loop_count:,}"
    if p.test_loop_count != KERNEL_TEST_LOOP_COUNT:
        loops += f" (kernel default {KERNEL_TEST_LOOP_COUNT:,})"
    extra = (f", nr_pages {p.nr_pages}" if p.nr_pages else "") + (", use_huge" if p.use_huge else "")
    order = "sequential" if p.sequential_test_order else "shuffled"
    s = (f"nr_threads {p.nr_threads}, test_loop_count {loops}, test_repeat_count "
         f"{p.test_repeat_count}, run_test_mask {p.run_test_mask:#x}, {order} order{extra}")
    return s + (f", seed {seed}" if seed is not None else "")


def to_json(runs: list[LockRun], *, command: str | None = None) -> dict:
    p = runs[0].params if runs else Params().effective()
    return {
        "params": dataclasses.asdict(p),
        "kernel_test_loop_count": KERNEL_TEST_LOOP_COUNT,
        "seed": runs[0].seed if runs else None,
        "vmalloc_range": [VMALLOC_START, VMALLOC_END],
        "runs": [{
            "impl": r.impl, "kernel": r.kernel, "lock": r.lock, "driver": r.driver,
            "cpus": r.cpus, "wall_s": r.wall_s, "ok": r.ok,
            "check_ok": r.check_ok, "check_error": r.check_error, "empty": r.empty,
            "lock_wait_share": r.lock_wait_share, "locks": r.locks,
            "summary": r.summary(),
            "workers": [{"index": w.index, "cpu": w.cpu, "usec": w.usec,
                         "order": [SCENARIOS[i].name for i in w.order],
                         "tests": {SCENARIOS[i].name: dataclasses.asdict(d)
                                   for i, d in w.data.items()}} for w in r.workers],
            "stats": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in r.stats.items()},
        } for r in runs],
        "command": command,
        "cpus_available": available_cpus(),
        "python": platform.python_version(),
        "vmap_core": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = ["COVER_LETTER_DESIGNS", "LockRun", "NATIVE_MASK", "OnCpu", "PRESETS", "Serialized",
           "TestData", "Worker", "available_cpus", "describe", "designs", "kernel_lines",
           "lazy_max_pages", "machine", "make_space", "not_native", "parse_kernel_log", "plan",
           "preset_params", "run", "run_designs", "run_locks", "run_native", "space_class",
           "to_json", "verdict"]

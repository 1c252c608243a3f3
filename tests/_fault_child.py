"""Child process of test_fault_injection.py: fail the k-th allocation inside
each method of the core, for k = 0, 1, 2, ... until the call no longer meets
a failure, and check that every call either completes exactly as it would
have without the failure or raises MemoryError with the space exactly as it
was.  Two kinds of failure, one run each:

* ``python``: CPython's allocators (``_testcapi.set_nomemory(k, k + 1)``);
* ``c``: the core's own C allocations (slab growth, snapshot buffers, the
  space itself), through its test-only hook ``_space._fail_c_alloc(k)``.

Usage: python _fault_child.py python|c CONFIG_JSON; prints a JSON summary.
It runs in a child so that a crash fails one test, not the run.
"""

from __future__ import annotations

import array
import json
import sys

from _configs import make
from vmap_core import VmapSpace, _space

VOLATILE_STATS = ("lock_acquisitions", "lock_contended", "slab_bytes")


def state(s):
    """Everything observable about the structure."""
    st = s.stats()
    for key in VOLATILE_STATS:
        del st[key]
    return ([tuple(a) for a in s], [tuple(a) for a in s.free_areas()],
            [tuple(a) for a in s.lazy_areas()], s._debug_pool_order(), s.vmallocinfo(), st)


def build(kw):
    """A space with busy (some with a caller), lazy and pooled areas; returns
    it and the starts of the areas still busy."""
    s = make(VmapSpace, kw)
    ps = s.page_size
    live = [s.alloc(ps if i % 3 == 0 else 2 * ps, cpu=i, caller=f"c{i}" if i % 2 else None)
            for i in range(14)]
    for a in live[:4]:
        s.free_lazy(a)
    s.purge()                   # tagged areas go to their node's pool
    for a in live[4:6]:
        s.free_lazy(a)
    return s, live[6:]


def normal(x):
    """A result as plain data, made with no failure armed."""
    if isinstance(x, dict):
        return {k: normal(v) for k, v in x.items() if k not in VOLATILE_STATS}
    if isinstance(x, (list, tuple)):
        return [normal(v) for v in x]
    if isinstance(x, (array.array, memoryview)):
        return list(x)
    if x is None or isinstance(x, (int, str)):
        return x
    return tuple(x)             # VmapArea, generators of them


# (name, prepare(space, live) -> (callable, args)): only the call itself runs
# with the failure armed; arguments are made before and results read after.
SCENARIOS = [
    ("alloc", lambda s, L: (s.alloc, (2 * s.page_size,), {"caller": "new-caller"})),
    ("alloc_pool", lambda s, L: (s.alloc, (s.page_size,), {"cpu": 0, "caller": "pooled"})),
    ("alloc_pool_miss", lambda s, L: (s.alloc, (2 * s.page_size, 4 * s.page_size), {"cpu": 1})),
    ("alloc_range", lambda s, L: (s.alloc, (s.page_size, None, s.start, s.end - s.page_size), {})),
    ("alloc_aligned", lambda s, L: (s.alloc, (s.page_size, 8 * s.page_size), {"caller": "al"})),
    ("free", lambda s, L: (s.free, (L[0],), {})),
    ("free_lazy", lambda s, L: (s.free_lazy, (L[1],), {})),
    ("purge", lambda s, L: (s.purge, (), {})),
    ("purge_full", lambda s, L: (s.purge, (True,), {})),
    ("drain_pools", lambda s, L: (s.drain_pools, (), {})),
    ("find", lambda s, L: (s.find, (L[2] + 1,), {})),
    ("find_many", lambda s, L: (s.find_many, (array.array("Q", L + [0, 2**64 - 1]),), {})),
    ("check_copy", lambda s, L: (s.check_copy, (L[2], 1), {})),
    ("caller_of", lambda s, L: (s.caller_of, (L[1],), {})),
    ("areas", lambda s, L: (lambda: list(s.areas()), (), {})),
    ("iter", lambda s, L: (lambda: list(s), (), {})),
    ("free_areas", lambda s, L: (s.free_areas, (), {})),
    ("lazy_areas", lambda s, L: (s.lazy_areas, (), {})),
    ("pooled_areas", lambda s, L: (s.pooled_areas, (), {})),
    ("vmallocinfo", lambda s, L: (s.vmallocinfo, (), {})),
    ("stats", lambda s, L: (s.stats, (), {})),
    ("check", lambda s, L: (s.check, (), {})),
    ("len", lambda s, L: (len, (s,), {})),
]


class Python:
    """Fail the k-th allocation of CPython's allocators."""

    def __init__(self):
        import _testcapi
        self.t = _testcapi

    def arm(self, k):
        self.t.set_nomemory(k, k + 1)

    def disarm(self):
        self.t.remove_mem_hooks()
        return None         # whether k was reached is not known


class C:
    """Fail the k-th C allocation of the core."""

    def arm(self, k):
        self.k = k
        self.n0 = _space._fail_c_alloc(k)

    def disarm(self):
        n1 = _space._fail_c_alloc(-1)
        return n1 - self.n0 > self.k        # was the k-th allocation reached?


def call(failure, k, fn, args, kwargs):
    failure.arm(k)
    try:
        return fn(*args, **kwargs), None, failure.disarm()
    except MemoryError as e:
        reached = failure.disarm()
        return None, e, True if reached is None else reached
    except BaseException:
        failure.disarm()
        raise


def sweep(failure, kw, name, prepare, max_k=600):
    """Fail allocation k = 0, 1, ... of one call; returns (failed, completed)."""
    twin, live = build(kw)
    fn, args, kwargs = prepare(twin, live)
    want = normal(fn(*args, **kwargs))
    want_state = state(twin)
    s, live = build(kw)
    before = state(s)
    failed = completed = streak = 0
    for k in range(max_k):
        fn, args, kwargs = prepare(s, live)
        result, exc, reached = call(failure, k, fn, args, kwargs)
        if exc is not None:
            failed += 1
            streak = 0
            got = state(s)
            assert got == before, (name, k, "MemoryError left the space changed", got, before)
            s.check()
            continue
        completed += 1
        assert normal(result) == want, (name, k, normal(result), want)
        assert state(s) == want_state, (name, k, "completed differently")
        if reached is False:        # the call made fewer than k + 1 allocations
            break
        streak += 1
        if streak >= 8:             # (python) allocations past the call's own
            break
        s, live = build(kw)
    return failed, completed


def grow_slab(failure, kw):
    """Allocate page after page, each with its first or second C allocation
    failing (slab growth: the chunk table's realloc, a chunk's calloc)."""
    s = make(VmapSpace, kw)
    failed = 0
    for i in range(min(200, (s.end - s.start) // s.page_size // 2)):
        for k in (0, 1):
            before = state(s)
            _, exc, _ = call(failure, k, s.alloc, (s.page_size,), {"cpu": i})
            if exc is None:
                break
            failed += 1
            assert state(s) == before, ("grow_slab", i, k)
        else:
            s.alloc(s.page_size, cpu=i)
    s.check()
    return failed


def construct(failure, kw):
    """The constructor under each failure: MemoryError, or a usable space."""
    failed = 0
    for k in range(200):
        _, exc, reached = call(failure, k, make, (VmapSpace, kw), {})
        if exc is not None:
            failed += 1
            continue
        if reached is False or k > 60:
            break
    return failed


def main():
    kind, kw = sys.argv[1], json.loads(sys.argv[2])
    failure = Python() if kind == "python" else C()
    summary = {}
    for name, prepare in SCENARIOS:
        summary[name] = sweep(failure, kw, name, prepare)
    if kind == "c":
        summary["grow_slab"] = (grow_slab(failure, kw), 0)
    summary["construct"] = (construct(failure, kw), 0)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

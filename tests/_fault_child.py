"""Child process of test_fault_injection.py: fail the k-th allocation inside
each method of the core, for k = 0, 1, 2, ... until the call no longer meets
a failure, and check that every call either completes exactly as it would
have without the failure or raises MemoryError with the space exactly as it
was.  Two kinds of failure, one run each:

* ``python``: CPython's allocators (``_testcapi.set_nomemory(k, k + 1)``);
* ``c``: the core's own C allocations (slab growth, snapshot buffers, the
  space itself), through its test-only hook ``vmap_core._testhooks.fail_c_alloc(k)``.

Usage: python _fault_child.py python|c CONFIG_JSON; prints a JSON summary.
It runs in a child so that a crash fails one test, not the run.
"""

from __future__ import annotations

import array
import json
import sys

from _configs import make
from vmap_core import VmapSpace, _testhooks

VOLATILE_STATS = ("lock_acquisitions", "lock_contended", "slab_bytes")


def state(s, shape=True):
    """Everything observable about the structure; with shape, also the free
    tree's shape (which the kernel's aligned search depends on)."""
    st = s.stats()
    for key in VOLATILE_STATS:
        del st[key]
    return ([tuple(a) for a in s], [tuple(a) for a in s.free_areas()],
            [tuple(a) for a in s.lazy_areas()], _testhooks.debug_pool_order(s), s.vmallocinfo(), st,
            s._free_tree_shape() if shape else None)


# An alloc() that fails after its change is undone by freeing the new area:
# the same areas, blocks, pools and counts, but the rebalancing may leave the
# free tree shaped differently (docs/guarantees.md on memory failure says so).
UNDONE_BY_FREE = ("alloc", "alloc_pool_miss", "alloc_range", "alloc_aligned", "grow_slab")


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


def _first_pooled(s):
    """(start, size) of the pooled area that pooled_areas() lists first."""
    area, _ = s.pooled_areas()[0]
    return area.start, area.size


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


# (name, prepare(space, live) -> (callable, args, kwargs)): only the call
# itself runs with the failure armed; arguments are made before and results
# read after.  A false prepare() result: the scenario does not apply (no pools
# in kernel 6.8).
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
    ("alloc_at", lambda s, L: (s.alloc_at, (s.end - 4 * s.page_size, 2 * s.page_size),
                               {"cpu": 1, "caller": "at"})),
    ("alloc_at_pooled", lambda s, L: s.pooled_areas() and (s.alloc_at, _first_pooled(s),
                                                           {"caller": "at"})),
    ("alloc_at_refused", lambda s, L: (s.alloc_at, (L[2], s.page_size), {"caller": "at"})),
    ("predict", lambda s, L: (s.predict, (s.page_size,), {"cpu": 0})),
    ("predict_aligned", lambda s, L: (s.predict, (s.page_size, 8 * s.page_size), {})),
    ("locate_busy", lambda s, L: (s.locate, (L[2] + 1,), {})),
    ("locate_lazy", lambda s, L: (s.locate, (s.lazy_areas()[0].start,), {})),
    ("locate_pooled", lambda s, L: s.pooled_areas() and (s.locate, (_first_pooled(s)[0],), {})),
    ("locate_free", lambda s, L: (s.locate, (s.end - 1,), {})),
    ("free_tree_shape", lambda s, L: (s._free_tree_shape, (), {})),
    ("reduce", lambda s, L: (lambda: s.__reduce__()[2], (), {})),
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
        self.n0 = _testhooks.fail_c_alloc(k)

    def disarm(self):
        n1 = _testhooks.fail_c_alloc(-1)
        return n1 - self.n0 > self.k        # was the k-th allocation reached?


def call(failure, k, fn, args, kwargs):
    """(("ok", value) or ("raise", type name), MemoryError or None, reached)."""
    failure.arm(k)
    try:
        value = fn(*args, **kwargs)
    except MemoryError as e:
        reached = failure.disarm()
        return None, e, True if reached is None else reached
    except (ValueError, KeyError, TypeError) as e:     # a refusal the call documents
        reached = failure.disarm()                     # before anything is made here
        return ("raise", type(e).__name__), None, reached
    except BaseException:
        failure.disarm()
        raise
    reached = failure.disarm()
    return ("ok", value), None, reached


def outcome(fn, args, kwargs):
    """call() with no failure armed."""
    try:
        return ("ok", fn(*args, **kwargs))
    except (ValueError, KeyError, TypeError) as e:
        return ("raise", type(e).__name__)


def sweep(failure, kw, name, prepare, max_k=600):
    """Fail allocation k = 0, 1, ... of one call; returns (failed, completed)."""
    twin, live = build(kw)
    prepared = prepare(twin, live)
    if not prepared:
        return 0, 0
    fn, args, kwargs = prepared
    want = normal(outcome(fn, args, kwargs))
    shape = name not in UNDONE_BY_FREE
    want_state = state(twin)
    s, live = build(kw)
    before = state(s, shape)
    failed = completed = streak = 0
    for k in range(max_k):
        fn, args, kwargs = prepare(s, live)
        result, exc, reached = call(failure, k, fn, args, kwargs)
        if exc is not None:
            failed += 1
            streak = 0
            got = state(s, shape)
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
            before = state(s, shape=False)
            _, exc, _ = call(failure, k, s.alloc, (s.page_size,), {"cpu": i})
            if exc is None:
                break
            failed += 1
            assert state(s, shape=False) == before, ("grow_slab", i, k)
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

"""The reliability review's crash and hang repros (shared/reviews/reliability-5c5c659.md),
each run in a child process, so that a crash or a hang fails one test, not the run.

Before the fixes each child died (SIGSEGV, SIGFPE, SIGABRT) or never returned.
"""

from __future__ import annotations

import pytest

from _util import run_child

pytestmark = pytest.mark.usefixtures("core")


def test_c1_whole_space_of_one_byte_pages():
    """C1: an area of 2**64 one-byte pages in a space of several nodes: the
    pool class no longer wraps (alloc, lazy free, purge into a pool, drain)."""
    out = run_child("""
        from vmap_core import VmapSpace
        from vmap_core.reference import ReferenceSpace
        for cls in (VmapSpace, ReferenceSpace):
            s = cls(0, 2**64, page_size=1, nr_nodes=2, lazy_max_pages=2**63)
            a = s.alloc(2**64)
            assert a == 0 and [(x.start, x.end) for x in s] == [(0, 2**64)]
            s.free_lazy(a)
            st = s.stats()      # 2**64 lazy pages exceed any lazy_max_pages: purged at once
            assert (st["lazy_pages"], st["purges"], s.lazy_areas()) == (0, 1, []), st
            assert s.pooled_areas() == [] and s.free_areas()[0].size == 2**64
            s.check()
            for cpu in (0, 1):
                s.free_lazy(s.alloc(2**63, cpu=cpu))
                s.purge()           # a tagged area of 2**63 pages: no pool class
                assert s.pooled_areas() == [], s.pooled_areas()
                s.check()
            print(cls.__name__, "ok")
    """)
    assert out.stdout.count("ok") == 2


def test_c2_int_subclass_operators_never_reach_c():
    """C2: an int subclass with lying operators is converted to an exact int."""
    run_child("""
        from vmap_core import VmapSpace
        class Cpu(int):
            def __mod__(self, other):
                return Cpu(1 << 20)
        s = VmapSpace(1 << 40, 1 << 41, nr_nodes=2)
        a = s.alloc(4096, cpu=Cpu(1))
        assert s.pooled_areas() == [] and s.find(a).start == a
        s.free_lazy(a); s.purge()
        assert s.pooled_areas()[0][1] == 1      # cpu 1 % 2 nodes
        class Z(int):
            def __le__(self, o): return False
            def __ge__(self, o): return False
            def __lt__(self, o): return False
            def __gt__(self, o): return False
            def __mod__(self, o): return 0
        for kw in ({"zone_size": Z(0)}, {"page_size": Z(0)}, {"nr_nodes": Z(0)},
                   {"lazy_max_pages": Z(-1)}):
            try:
                VmapSpace(1 << 40, 1 << 41, **kw)
            except ValueError:
                pass
            else:
                raise AssertionError(f"{kw} accepted")
        try:
            s.alloc(4096, cpu=Z(-1))
        except ValueError:
            pass
        else:
            raise AssertionError("cpu=-1 accepted")
    """)


def _subinterpreters_module():
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            return __import__(name).__name__
        except ImportError:
            continue
    return None


@pytest.mark.skipif(_subinterpreters_module() is None,
                    reason="this Python has neither _interpreters nor _xxsubinterpreters")
@pytest.mark.parametrize("lock", ["node", "rwlock"])
def test_c3_contended_nogil_wait_after_a_subinterpreter_exists(lock):
    """C3: once a subinterpreter exists PyGILState_Check() answers 1 for
    every thread; nogil lookups that contend must still never touch the GIL,
    and GIL-holding writers beside them must still drop it while they wait."""
    mod = _subinterpreters_module()
    run_child(f"""
        import array, threading
        import {mod} as subinterpreters
        from vmap_core import VmapSpace
        subinterpreters.create()
        sp = VmapSpace(1 << 40, 1 << 41, nr_nodes=1, lock={lock!r})
        addrs = array.array("Q", [sp.alloc(4096) for _ in range(1000)] * 100)
        def reader():
            for _ in range(20):
                sp.find_many(addrs)
        def writer():           # holds the GIL between calls, contends on the node lock
            for _ in range(20000):
                sp.free(sp.alloc(4096))
        ts = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
        for t in ts: t.start()
        for _ in range(20000):  # the main thread runs Python code meanwhile
            sp.find(addrs[0])
        for t in ts: t.join()
        sp.check()
    """, timeout=120)


@pytest.mark.parametrize("call", [
    "_space.stress_native(VmapSpace(0, 2**64, page_size=1, nr_nodes=1), 1, 100)",
    "_space.stress_native(VmapSpace(0, 2**64, page_size=1, nr_nodes=3), 2, 2000)",
])
def test_c4_stress_native_whole_space(call):
    """C4: a range of 2**64 one-byte pages no longer divides by zero."""
    run_child(f"""
        from vmap_core import VmapSpace, _space
        res = {call}
        assert res["errors"] == 0, res
    """)


@pytest.mark.parametrize("args, kwargs, exc", [
    ("(VmapSpace(0, 1 << 30, nr_nodes=1), 1, 1000)", "{'max_owned': 2**60}", "ValueError"),
    ("(VmapSpace(0, 1 << 30, nr_nodes=1), 2**40, 1)", "{}", "ValueError"),
    ("(VmapSpace(0, 1 << 30, nr_nodes=1), 0, 1)", "{}", "ValueError"),
    ("(VmapSpace(0, 1 << 30, nr_nodes=1), 1, -1)", "{}", "ValueError"),
    ("(VmapSpace(0, 1 << 30, nr_nodes=1), 1, 1)", "{'max_owned': 0}", "ValueError"),
    ("(None, 1, 1)", "{}", "TypeError"),
    ("(VmapSpace.__new__(VmapSpace), 1, 1)", "{}", "RuntimeError"),
    ("(VmapSpace(0, 1 << 30, nr_nodes=1), 1.5, 1)", "{}", "TypeError"),
])
def test_c4_stress_native_rejects_bad_arguments(args, kwargs, exc):
    """C4: arguments that overflowed a size or a count are refused."""
    run_child(f"""
        from vmap_core import VmapSpace, _space
        try:
            _space.stress_native(*{args}, **{kwargs})
        except {exc}:
            pass
        else:
            raise AssertionError("accepted")
    """)


@pytest.mark.parametrize("call, exc", [
    ("_space.usercopy_run('node', 0)", "ValueError"),
    ("_space.usercopy_run('node', 2**62)", "ValueError"),
    ("_space.usercopy_run('node', 1, buffers=2**62)", "ValueError"),
    ("_space.usercopy_run('node', 1, buffer_size=2**64 - 4096)", "ValueError"),
    ("_space.usercopy_run('node', 1, buffer_size=4097)", "ValueError"),
    ("_space.usercopy_run('node', 1, copy_size=0)", "ValueError"),
    ("_space.usercopy_run('node', 1, churn_us=10**20)", "ValueError"),
    ("_space.usercopy_run('node', 1, churn_us=-1)", "ValueError"),
    ("_space.usercopy_run('node', 1, work_ns=10**20)", "ValueError"),
    ("_space.usercopy_run('node', 1, seconds=float('inf'))", "ValueError"),
    ("_space.usercopy_run('node', 1, seconds=float('nan'))", "ValueError"),
    ("_space.usercopy_run('node', 1, seconds='1')", "TypeError"),
    ("_space.usercopy_run(None, 1)", "ValueError"),
    ("_space._UsercopyRun().worker(0)", "ValueError"),
    ("_space._UsercopyRun().churn(0, False, 0)", "ValueError"),
    ("_space._UsercopyRun().count_walks(10, 1, 65536, 1024)", "ValueError"),
    ("_space._TestVmallocRun().worker(0)", "ValueError"),
    ("_space._StressRun().worker(3)", "ValueError"),
])
def test_c4_usercopy_run_and_workers_reject_bad_arguments(call, exc):
    """C4: the other native entry points check their arguments too."""
    run_child(f"""
        from vmap_core import _space
        try:
            {call}
        except {exc}:
            pass
        else:
            raise AssertionError("accepted")
    """)


def _has_set_nomemory():
    try:
        import _testcapi
    except ImportError:
        return False
    return hasattr(_testcapi, "set_nomemory")


needs_set_nomemory = pytest.mark.skipif(
    not _has_set_nomemory(),
    reason="this Python's _testcapi has no set_nomemory() (CPython's test module is not installed)")


@needs_set_nomemory
@pytest.mark.parametrize("lock", ["node", "global"])
def test_c5_every_allocation_failing_in_the_views(lock):
    """C5: fail each allocation in turn inside every view that builds a list
    (the comprehension double decref was a use-after-free there)."""
    run_child(f"""
        import _testcapi
        from vmap_core import VmapSpace
        s = VmapSpace(1 << 40, 1 << 41, nr_nodes=2, lock={lock!r})
        for i in range(40):
            a = s.alloc(4096, caller="c%d" % i)
            if i % 3 == 0:
                s.free_lazy(a)
        s.purge()
        for i in range(6):
            s.free_lazy(s.alloc(8192, cpu=i))
        def stats():        # less the lock counters, which every call moves
            st = s.stats()
            for key in ("lock_acquisitions", "lock_contended"):
                del st[key]
            return st
        views = [s.vmallocinfo, lambda: list(s), stats, s.free_areas, s.lazy_areas,
                 s.pooled_areas, lambda: list(s.areas())]
        for view in views:
            want = view()
            for k in range(400):
                _testcapi.set_nomemory(k, k + 1)
                try:
                    got = view()
                except MemoryError:
                    got = None
                finally:
                    _testcapi.remove_mem_hooks()
                assert got is None or got == want
                s.check()
    """, timeout=120)


_STATS_IN_GC = """
    import gc, weakref
    from vmap_core import VmapSpace
    space = VmapSpace(1 << 40, 1 << 41, nr_nodes=2, lock={lock!r})
    class Buffer:                         # owns an area, gives it back when collected
        def __init__(self):
            self.addr = space.alloc(4096)
            weakref.finalize(self, space.free, self.addr)
            self.me = self                # a cycle: only the cyclic GC collects it
    for k in range(1, 40):                # land a GC pass inside stats()
        gc.collect(); gc.disable()
        for _ in range(3): Buffer()
        gc.set_threshold(gc.get_count()[0] + k); gc.enable()
        space.{view}()
    gc.collect()
    assert len(space) == 0, len(space)
    space.check()
"""


@pytest.mark.parametrize("view", ["stats", "vmallocinfo", "free_areas", "lazy_areas",
                                  "pooled_areas", "__iter__", "check"])
@pytest.mark.parametrize("lock", ["node", "global", "rwlock", "optimistic"])
def test_h1_gc_finalizer_inside_a_view(lock, view):
    """H1: a GC pass inside a view, whose finalizer frees into the same space,
    no longer deadlocks (no Python object is made while a lock is held)."""
    run_child(_STATS_IN_GC.format(lock=lock, view=view), timeout=60)


@needs_set_nomemory
@pytest.mark.parametrize("lock", ["node", "global", "rwlock", "optimistic"])
def test_h2_memory_error_inside_stats_leaves_no_lock_held(lock):
    """H2: a MemoryError inside stats() used to leave every lock held."""
    run_child(f"""
        import _testcapi
        from vmap_core import VmapSpace
        space = VmapSpace(1 << 40, 1 << 41, nr_nodes=2, lock={lock!r})
        a = space.alloc(4096)
        failed = 0
        for k in range(40):
            _testcapi.set_nomemory(k, k + 1)          # one allocation inside stats() fails
            try:
                space.stats()
            except MemoryError:
                failed += 1
            finally:
                _testcapi.remove_mem_hooks()
            space.free(space.alloc(4096))             # hung here before the fix
        assert failed, "no allocation of stats() was failed"
        space.free(a)
        space.check()
    """, timeout=60)


def test_h3_interrupted_usercopy_run_stops_its_threads():
    """H3: a KeyboardInterrupt during the cell's wait stops and joins its
    native threads (they used to spin on, with the main thread asleep)."""
    out = run_child("""
        import os, signal, threading, time
        from vmap_core import _space
        def h(*a): raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, h); signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            _space.usercopy_run("node", 2, buffers=32, seconds=5.0, churn_us=10)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("not interrupted")
        t0 = os.times(); time.sleep(1.0); t1 = os.times()
        # (an interrupted Thread.join() may leave a finished thread listed a moment)
        assert threading.active_count() == 1, threading.enumerate()
        print("cpu", t1.user - t0.user)
    """, timeout=60)
    cpu = float(out.stdout.split()[-1])
    assert cpu < 0.3, f"{cpu:.2f} CPU seconds used while the main thread slept"


def test_h3_interrupted_stress_native_joins_its_threads():
    """The same for stress_native(): interrupted, its workers stop early."""
    run_child("""
        import signal, threading, time
        from vmap_core import VmapSpace, _space
        def h(*a): raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, h); signal.setitimer(signal.ITIMER_REAL, 0.3)
        space = VmapSpace(1 << 30, 1 << 34, nr_nodes=2)
        t0 = time.monotonic()
        try:
            _space.stress_native(space, 2, 10**12)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("not interrupted")
        assert time.monotonic() - t0 < 30
        t1 = time.monotonic()
        while threading.active_count() > 1 and time.monotonic() - t1 < 5:
            time.sleep(0.01)    # an interrupted join() may leave one listed a moment
        assert threading.active_count() == 1, threading.enumerate()
        space.check()
    """, timeout=60)

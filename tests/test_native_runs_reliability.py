"""Issue 8's guarantees for the anchors' native runs (issue 10):
test_vmalloc_native() (the test-vmalloc driver) and usercopy_run() (usercopy
and its seed comparison).  Bad arguments raise the documented type and leave
the space as it was; an interrupt, also one the kernel delivers to a worker
thread, stops the workers and returns; a failed C allocation inside a run is
a MemoryError with every area the run took given back.  Crashes and hangs
would fail in a child process (run_child)."""

from __future__ import annotations

import pytest

from _util import run_child

pytestmark = pytest.mark.usefixtures("core")


class Lying(int):
    """An int subclass whose operators lie: only its exact value may be used."""

    def __mod__(self, other):
        return 10**30

    def __lt__(self, other):
        return True

    def __gt__(self, other):
        return True


def _tv(space, **kw):
    from vmap_core import _space
    args = dict(orders=[[0]], cpus=[0], rng_states=[1], test_loop_count=10)
    args.update(kw)
    return _space.test_vmalloc_native(space, args.pop("orders"), args.pop("cpus"),
                                      args.pop("rng_states"), **args)


def _space_2cpus():
    from vmap_core.kernel import driver as drv
    return drv.make_space("node", cpus=2)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(test_loop_count=1.5), TypeError),
    (dict(test_loop_count="10"), TypeError),
    (dict(test_loop_count=2**31), ValueError),
    (dict(test_repeat_count=0), ValueError),
    (dict(test_repeat_count=None), TypeError),
    (dict(nr_pages=-1), ValueError),
    (dict(nr_pages=2**31), ValueError),
    (dict(online_cpus=0), ValueError),
    (dict(online_cpus=8193), ValueError),
    (dict(online_cpus=2**64 + 1), ValueError),
    (dict(cpus=[-1]), ValueError),
    (dict(cpus=[2**64]), ValueError),
    (dict(cpus=[0.0]), TypeError),
    (dict(rng_states=[2**64]), ValueError),
    (dict(rng_states=[None]), TypeError),
    (dict(orders=[[0.0]]), TypeError),
    (dict(orders=[[-1]]), ValueError),
    (dict(orders=[[0] * 12]), ValueError),
    (dict(orders=[[0]] * 1025, cpus=[0] * 1025, rng_states=[1] * 1025), ValueError),
    (dict(orders="0"), TypeError),
])
def test_vmalloc_native_rejects_bad_arguments(kwargs, exc):
    space = _space_2cpus()
    before = (list(space), space.free_areas(), space.lazy_areas(), space.vmallocinfo())
    with pytest.raises(exc):
        _tv(space, **kwargs)
    assert (list(space), space.free_areas(), space.lazy_areas(), space.vmallocinfo()) == before
    space.check()


def test_vmalloc_native_uses_the_exact_value_of_an_int_subclass():
    """Lying operators never reach the checks or the C: the run is the one
    the plain ints give."""
    a, b = _space_2cpus(), _space_2cpus()
    plain = _tv(a, orders=[[0, 3]], cpus=[1], rng_states=[7], test_loop_count=40,
                online_cpus=2)
    lying = _tv(b, orders=[[Lying(0), Lying(3)]], cpus=[Lying(1)], rng_states=[Lying(7)],
                test_loop_count=Lying(40), online_cpus=Lying(2))
    def untimed(res):
        return {k: dict(v, usec=0) for k, v in res["workers"][0]["tests"].items()}
    assert untimed(plain) == untimed(lying)
    assert untimed(plain)[0]["passed"] == 1 and untimed(plain)[0]["allocs"] == 40


@pytest.mark.parametrize("kwargs, exc", [
    (dict(threads=1.0), TypeError),
    (dict(threads=1025), ValueError),
    (dict(lookups=0), ValueError),
    (dict(lookups=10**6 + 1), ValueError),
    (dict(lookups="2"), TypeError),
    (dict(count_lookups=-1), ValueError),
    (dict(count_lookups=10**7 + 1), ValueError),
    (dict(count_lookups=None), TypeError),
    (dict(buffers=2**21), ValueError),
    (dict(buffer_size=4096.0), TypeError),
    (dict(churn_us=10**20), ValueError),
    (dict(seconds=True), TypeError),
    (dict(seconds=-1.0), ValueError),
    (dict(mode="split-ish"), ValueError),
    (dict(mode=b"node"), ValueError),
    (dict(kernel="5.0"), ValueError),
])
def test_usercopy_run_rejects_bad_arguments(kwargs, exc):
    from vmap_core import _space
    args = dict(mode="node", threads=1, buffers=4, seconds=0.01)
    args.update(kwargs)
    with pytest.raises(exc):
        _space.usercopy_run(args.pop("mode"), args.pop("threads"), **args)


def test_usercopy_run_takes_int_subclasses_at_their_value():
    from vmap_core import _space
    res = _space.usercopy_run("node", Lying(1), buffers=Lying(4), seconds=0.02,
                              lookups=Lying(2), count_lookups=Lying(100), churn_us=Lying(0))
    assert res["lookups"] == 2 * res["requests"] and res["walk_lookups"] == 100


# -- interrupts -----------------------------------------------------------------

# Each child interrupts a run that would take minutes: SIGALRM (to the
# process: any thread may take it) or SIGINT sent to one worker thread
# (pthread_kill), which wakes no wait of the main thread.
_INTERRUPT = """
    import os, signal, threading, time
    from vmap_core import _space
    from vmap_core.kernel import driver as drv
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    # A shell's background job starts with SIGINT ignored, which Python keeps.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    def to_a_worker():
        # Once a worker runs (a loaded machine may take a while to start one).
        time.sleep(0.3)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for t in threading.enumerate():
                if (t is not threading.main_thread() and t is not threading.current_thread()
                        and t.ident is not None):
                    signal.pthread_kill(t.ident, signal.SIGINT)
                    return
            time.sleep(0.01)
    if {to_worker}:
        threading.Thread(target=to_a_worker, daemon=True).start()
    else:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
    t0 = time.monotonic()
    try:
        {call}
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("not interrupted")
    took = time.monotonic() - t0
    assert took < 40, took
    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == 1, threading.enumerate()
    c0 = os.times(); time.sleep(0.5); c1 = os.times()
    assert c1.user - c0.user < 0.2, "native threads still spinning"
    {after}
"""


@pytest.mark.parametrize("to_worker", [False, True], ids=["alarm", "sigint-to-a-worker"])
def test_interrupt_stops_test_vmalloc_native(to_worker):
    run_child(_INTERRUPT.format(to_worker=to_worker, call="""
        space = drv.make_space("node", cpus=4)
        _space.test_vmalloc_native(space, [[0, 3, 5], [3, 0, 5]], [0, 1], [1, 2],
                                   test_loop_count=10**9, online_cpus=4)""".strip(),
        after="space.check(); assert len(space) == 0, list(space)"), timeout=60)


@pytest.mark.parametrize("to_worker", [False, True], ids=["alarm", "sigint-to-a-worker"])
def test_interrupt_stops_usercopy_run(to_worker):
    run_child(_INTERRUPT.format(to_worker=to_worker, call="""
        _space.usercopy_run("node", 2, buffers=32, seconds=60.0, churn_us=10,
                            kernel="6.9", lazy_writer=True, lookups=2)""".strip(),
        after="pass"), timeout=90)


# -- memory failure ---------------------------------------------------------------

def test_c_allocation_failures_in_test_vmalloc_native():
    """Fail the k-th C allocation (the core's records, the scenarios' scratch
    arrays) for every k the run makes: MemoryError or the run's result, and
    the space keeps no area the run took."""
    out = run_child("""
        from vmap_core import _space, _testhooks
        from vmap_core.kernel import driver as drv
        args = ([[0, 1, 2]], [1], [5])
        kw = dict(test_loop_count=3, online_cpus=1)
        n0 = _testhooks.fail_c_alloc(-1)
        _space.test_vmalloc_native(drv.make_space("node", cpus=2), *args, **kw)
        total = _testhooks.c_alloc_count() - n0
        failed = done = 0
        for k in range(0, total + 2, max(1, total // 60)):
            space = drv.make_space("node", cpus=2)
            _testhooks.fail_c_alloc(k)
            try:
                _space.test_vmalloc_native(space, *args, **kw)
                done += 1
            except MemoryError:
                failed += 1
            finally:
                _testhooks.fail_c_alloc(-1)
            space.check()
            assert len(space) == 0, (k, list(space))
            space.purge()
            space.free(space.alloc(4096))
        print(total, failed, done)
    """, timeout=240)
    total, failed, done = map(int, out.stdout.split()[-3:])
    assert total > 2 and failed > 0 and done > 0, (total, failed, done)


def test_c_allocation_failures_in_usercopy_run():
    """Every allocation usercopy_run() makes before its threads start (buffer
    table, buffers, area records, worker slots) may fail: MemoryError, no
    crash, and the next run is whole."""
    out = run_child("""
        from vmap_core import _space, _testhooks
        kw = dict(buffers=8, buffer_size=8192, seconds=0.01, churn_us=0, count_lookups=10)
        failed = 0
        for k in range(40):
            _testhooks.fail_c_alloc(k)
            try:
                _space.usercopy_run("node", 2, **kw)
            except MemoryError:
                failed += 1
            finally:
                _testhooks.fail_c_alloc(-1)
        res = _space.usercopy_run("node", 2, **kw)
        assert res["requests"] > 0
        print(failed)
    """, timeout=120)
    assert int(out.stdout.split()[-1]) > 0

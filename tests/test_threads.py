"""Concurrency: Python threads and native threads on one space, every lock mode."""

import array
import random
import threading
import time

import pytest

from vmap_core import VmapSpace, _space

LOCKS = ("node", "global", "rwlock", "optimistic")
P = 4096


@pytest.mark.parametrize("lock", LOCKS)
def test_python_threads_alloc_free_find(lock):
    """Threads alloc, free, find and find_many at once; afterwards every
    area a thread still owns is found with its bounds and no freed one is."""
    space = VmapSpace(1 << 32, (1 << 32) + (1 << 26), nr_nodes=4, zone_size=2 * P, lock=lock)
    errors, owned, freed = [], [], []
    deadline = time.monotonic() + 1.0

    def worker(seed):
        rng = random.Random(seed)
        mine, gone = [], []
        try:
            while time.monotonic() < deadline:
                op = rng.random()
                if (op < 0.4 and len(mine) < 300) or not mine:
                    start = space.alloc(P * rng.randint(1, 6), align=P << rng.randint(0, 2))
                    mine.append((start, space.find(start).end))
                elif op < 0.6:
                    start, end = mine.pop(rng.randrange(len(mine)))
                    area = space.free(start)
                    assert (area.start, area.end) == (start, end)
                    gone.append(start)
                elif op < 0.8:
                    start, end = rng.choice(mine)
                    area = space.find(rng.randrange(start, end))
                    assert area is not None and (area.start, area.end) == (start, end)
                else:
                    # Interior addresses too, over several chunks of the batched lookup.
                    picks = [rng.choice(mine) for _ in range(rng.randint(1, 150))]
                    addrs = array.array("Q", [rng.randrange(s, e) for s, e in picks])
                    assert list(space.find_many(addrs)) == [s for s, _ in picks]
        except BaseException as e:       # reported by the main thread
            errors.append(e)
        owned.extend(mine)
        freed.extend(gone)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors[0]
    space.check()
    assert sorted(owned) == [(a.start, a.end) for a in space]
    live = {s for s, _ in owned}
    for start in set(freed) - live:     # freed and not handed out again
        area = space.find(start)
        assert area is None or area.start != start
    for start, end in owned:
        assert (space.find(end - 1).start, space.find(start).end) == (start, end)


@pytest.mark.parametrize("lock", LOCKS)
def test_native_threads_stress(lock):
    space = VmapSpace(1 << 30, (1 << 30) + (1 << 26), nr_nodes=3, zone_size=2 * P, lock=lock)
    res = _space.stress_native(space, 4, 20000, seed=3)
    assert res["errors"] == 0
    assert res["allocs"] > 1000 and res["frees"] > 1000 and res["finds"] > 1000
    space.check()
    owned = sorted(a for per in res["owned"] for a in per)
    assert owned == [(a.start, a.end) for a in space]


def test_stress_native_rejects_bad_threads():
    with pytest.raises(ValueError):
        _space.stress_native(VmapSpace(0, 1 << 20, nr_nodes=1), 0, 10)


@pytest.mark.parametrize("mode", ["nocheck", "unlocked", *LOCKS])
def test_usercopy_run_runs_every_mode(mode):
    res = _space.usercopy_run(mode, 2, buffers=32, seconds=0.05, churn_us=10, count_lookups=0)
    assert res["requests"] > 0 and res["requests"] == sum(res["per_thread"])
    assert res["elapsed"] > 0


@pytest.mark.parametrize("kwargs", [dict(mode="bogus"), dict(threads=0), dict(buffers=0),
                                    dict(copy_size=0), dict(copy_size=1 << 20),
                                    dict(buffer_size=1000), dict(seconds=0)])
def test_usercopy_run_rejects_bad_arguments(kwargs):
    args = dict(mode="node", threads=1, buffers=4, seconds=0.01)
    args.update(kwargs)
    with pytest.raises(ValueError):
        _space.usercopy_run(args.pop("mode"), args.pop("threads"), **args)


def test_line_transfer_ns_measures_a_handoff():
    """Two threads pass a turn back and forth, each side waiting for the
    other: the mean is a plausible time for one handoff, more than a loop
    that does not wait would take (a store, about a nanosecond) and less than
    10 ms, which a machine with one CPU stays under by yielding."""
    ns = _space.line_transfer_ns(2000)
    assert isinstance(ns, float)
    assert 2 < ns < 1e7


@pytest.mark.parametrize("rounds, exc", [(0, ValueError), (10**9 + 1, ValueError), (-5, ValueError),
                                          (1.5, TypeError), ("10", TypeError)])
def test_line_transfer_ns_rejects_bad_rounds(rounds, exc):
    with pytest.raises(exc):
        _space.line_transfer_ns(rounds)

"""The record slab (_slab.pxi, _compact.pxi): memory given back when a space
shrinks a lot, reused when it grows again, nothing observable changed by
moving records, and lock-free readers correct while records move and pages
go back."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import event, given, settings, strategies as st

from _util import P, ReferenceSpace, busy, free

from vmap_core import _space
from vmap_core.measure import malloc_in_use
from vmap_core._testhooks import set_slab_tuning

RECORD = 64


def grow(space, n, rng):
    return [space.alloc(rng.randint(1, 16) * P) for _ in range(n)]


@pytest.mark.parametrize("shape", ["random", "top"])
def test_big_shrink_gives_memory_back_and_regrowth_reuses_it(core, shape):
    rng = random.Random(5)
    n, k = 60_000, 54_000
    s = core(1 << 40, 1 << 44, nr_nodes=2)
    starts = grow(s, n, rng)
    peak = s.stats()["slab_bytes"]
    assert peak < n * 1.05 * RECORD
    idx = rng.sample(range(n), k) if shape == "random" else range(n - 1, n - 1 - k, -1)
    for i in idx:
        s.free(starts[i])
    st = s.stats()
    s.check()
    # What is left costs about its records (busy areas + free blocks), not the peak.
    assert st["slab_bytes"] < 1.6 * st["slab_records"] * RECORD + 64 * 4096
    assert st["slab_bytes"] < 0.4 * peak
    if shape == "random":       # no chunk empties by itself: records were moved
        assert st["slab_compactions"] > 0
    for i in idx:
        starts[i] = s.alloc(rng.randint(1, 16) * P)
    s.check()
    assert s.stats()["slab_bytes"] <= peak * 1.02     # the same chunks again


@pytest.mark.skipif(malloc_in_use() is None, reason="needs glibc's mallinfo2()")
def test_dropped_space_gives_its_chunks_back(core):
    """Building and dropping big spaces over and over gives the C heap back
    every chunk: the bytes glibc has handed out do not grow by a space's worth
    per space (LSan checks the same in .ci/sanitize).  Not the process's RSS:
    glibc keeps freed memory for reuse, more of it on a free-threaded build
    (there about 11 MiB after ten such spaces, then no more)."""
    def build_and_drop():
        s = core(1 << 40, 1 << 44)
        for _ in range(50_000):
            s.alloc(P)
        assert s.stats()["slab_bytes"] > 50_000 * RECORD

    build_and_drop()
    before = malloc_in_use()
    for _ in range(5):
        build_and_drop()
    assert malloc_in_use() - before < 50_000 * RECORD      # one space's worth, not five


SIZES = st.lists(st.integers(1, 4), min_size=150, max_size=500)


@settings(max_examples=40, deadline=None)
@given(sizes=SIZES, data=st.data())
def test_moving_records_changes_nothing_observable(core, sizes, data):
    """With compaction and page release made eager, the core still matches the
    reference step by step: addresses, busy and free views, the free tree's
    shape (the aligned search depends on it), check()."""
    lock = data.draw(st.sampled_from(["node", "global", "rwlock", "optimistic"]), "lock")
    kernel = data.draw(st.sampled_from([None, "6.8", "6.9"]), "kernel")
    nodes = 1 if kernel == "6.8" else data.draw(st.integers(1, 4), "nr_nodes")
    kw = dict(nr_nodes=nodes, zone_size=4 * P, kernel=kernel, lazy_max_pages=1 << 20,
              auto_purge=False, lock="split" if kernel == "6.8" else lock)
    end = 4 * P * len(sizes) + 64 * P
    s, ref = core(0, end, **kw), ReferenceSpace(0, end, **kw)
    set_slab_tuning(s, 1, 0)

    def same():
        assert busy(s) == busy(ref)
        assert free(s) == free(ref)
        assert s._free_tree_shape() == ref._free_tree_shape()
        s.check()

    aligns = data.draw(st.lists(st.integers(0, 2), min_size=len(sizes), max_size=len(sizes)))
    live = []
    for z, al in zip(sizes, aligns):
        a = s.alloc(z * P, align=P << al)
        assert a == ref.alloc(z * P, align=P << al)
        live.append(a)
    same()
    order = data.draw(st.permutations(range(len(live))), "free order")
    keep = data.draw(st.integers(0, len(live) // 4), "kept")
    lazy = data.draw(st.sets(st.integers(0, len(live) - 1), max_size=20), "lazy")
    for j, i in enumerate(order[keep:]):
        if i in lazy:
            s.free_lazy(live[i])
            ref.free_lazy(live[i])
        else:
            s.free(live[i])
            ref.free(live[i])
        if j % 37 == 0:
            same()
    same()
    event(f"compacted: {s.stats()['slab_compactions'] > 0}")
    s.purge(full=True)
    ref.purge(full=True)
    for z, al in zip(sizes, aligns):
        a = s.alloc(z * P, align=P << al)
        assert a == ref.alloc(z * P, align=P << al)
    same()


def test_eager_tuning_compacts_and_releases(core):
    """The Hypothesis test above runs with compaction on: it does happen there."""
    rng = random.Random(7)
    s = core(0, 4096 * P, nr_nodes=2, zone_size=4 * P)
    set_slab_tuning(s, 1, 0)
    live = [s.alloc(rng.randint(1, 4) * P) for _ in range(400)]
    peak = s.stats()["slab_bytes"]
    rng.shuffle(live)
    for a in live[50:]:
        s.free(a)
    st = s.stats()
    assert st["slab_compactions"] > 0 and st["slab_bytes"] < peak
    s.check()


@pytest.mark.parametrize("lock", ["optimistic", "rwlock", "node", "global"])
def test_readers_stay_correct_while_records_move_and_pages_go(core, lock):
    """Native threads (no GIL) alloc, free and find their own areas, checking
    every bound they read, while the main thread grows the space by
    thousands of areas and shrinks it again, each shrink compacting the slab
    and giving pages back."""
    s = core(1 << 30, (1 << 30) + (1 << 34), nr_nodes=4, zone_size=1 << 16, lock=lock)
    set_slab_tuning(s, 1, 2)
    stop = threading.Event()
    results, errors = [], []

    def native():
        try:
            seed = 1
            while not stop.is_set():
                res = _space.stress_native(s, 2, 20_000, seed=seed)
                results.append(res)
                for owned in res["owned"]:
                    for start, _ in owned:
                        s.free(start)
                seed += 1
        except BaseException as e:      # reported below
            errors.append(e)

    t = threading.Thread(target=native)
    t.start()
    rng = random.Random(3)
    cycles = 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline or cycles < 2:
            starts = grow(s, 6000, rng)
            rng.shuffle(starts)
            for a in starts:
                s.free(a)
            cycles += 1
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert results and sum(r["errors"] for r in results) == 0
    assert sum(r["finds"] for r in results) > 0
    st = s.stats()
    assert st["slab_compactions"] > 0
    s.check()

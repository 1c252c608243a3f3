"""No Python objects leak from the core's methods (C memory: .ci/sanitize's LSan run).

Each round does the same work and drops every result, so after a warm-up
round the traced Python heap must stay flat; a reference leaked per call
(one VmapArea, one int) would grow it by ~2,000 objects a round.
"""

import array
import gc
import tracemalloc

import pytest

from vmap_core import VmapExhausted, VmapSpace

P = 4096


def one_round(space):
    starts = [space.alloc(P * (1 + i % 4), caller="leak_test" if i % 2 else None)
              for i in range(500)]
    for s in starts:
        space.find(s + 1)
        space.check_copy(s, 8)
    out = space.find_many(array.array("Q", starts))
    assert list(out) == starts
    list(space.areas(0))
    space.vmallocinfo()
    space.stats()
    for bad in (-1, 1.5, "x"):
        for method in (space.find, space.free):
            with pytest.raises((TypeError, ValueError, KeyError)):
                method(bad)
    with pytest.raises(VmapExhausted):
        space.alloc(1 << 40)
    for i, s in enumerate(starts):
        (space.free if i % 2 else space.free_lazy)(s)
    space.purge(full=True)
    space.drain_pools()


@pytest.mark.parametrize("lock", ["node", "optimistic"])
def test_methods_do_not_leak_python_objects(lock):
    space = VmapSpace(1 << 30, (1 << 30) + (1 << 28), nr_nodes=4, lock=lock)
    one_round(space)                       # warm up caches and free lists
    gc.collect()
    tracemalloc.start()
    try:
        one_round(space)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            one_round(space)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    space.check()
    assert len(space) == 0
    assert grown < 16 * 1024, f"traced Python heap grew by {grown} bytes over 5 rounds"


def test_spaces_are_freed():
    """Creating and dropping spaces leaves no Python objects behind either."""
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(3):
            VmapSpace(0, 1 << 30, nr_nodes=8).alloc(P)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            s = VmapSpace(0, 1 << 30, nr_nodes=8)
            s.alloc(P)
            del s
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, grown

"""A purge detaches the lazy areas of every node, and its one flush covers
the lowest and highest of them, whichever nodes hold them
(__purge_vmap_area_lazy(): purge_nodes, the union of their ranges)."""

from __future__ import annotations

import itertools

import pytest

from _util import P

NODES = 4


@pytest.mark.parametrize("node", range(NODES))
def test_purge_reaches_every_node(impl, lock, node):
    s = impl(0, 256 * P, nr_nodes=NODES, zone_size=16 * P, lock=lock,
             lazy_max_pages=1 << 20, auto_purge=False)
    a = s.alloc(2 * P, cpu=node)            # its lazy area goes to node's tree
    b = s.alloc(30 * P, cpu=node)
    s.free_lazy(a)
    s.free_lazy(b)
    assert s.stats()["lazy_areas"] == 2
    assert s.purge() == 2
    st = s.stats()
    assert st["lazy_areas"] == 0 and st["lazy_pages"] == 0
    assert sorted(x.start for x, k in s.pooled_areas() if k == node) == [a, b]
    s.check()


@pytest.mark.parametrize("low_node, high_node", [(3, 0), (0, 3), (1, 2), (2, 1)])
def test_flush_range_is_the_union_over_nodes(impl, low_node, high_node):
    flushes = []
    s = impl(0, 256 * P, nr_nodes=NODES, zone_size=16 * P, lazy_max_pages=1 << 20,
             auto_purge=False, on_purge=lambda start, end: flushes.append((start, end)))
    low = s.alloc(P, cpu=low_node)
    mid = s.alloc(64 * P)
    high = s.alloc(2 * P, cpu=high_node)
    s.free_lazy(high)
    s.free_lazy(low)
    assert s.purge() == 2
    assert flushes == [(low, high + 2 * P)]
    assert s.find(mid).start == mid
    s.check()


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_v6_8_lazy_neighbours_merge(impl, order):
    """v6.8's purge tree merges a lazily freed area with the lazy areas on
    both sides (merge_or_add_vmap_area()), in whatever order they come."""
    s = impl(0, 64 * P, kernel="6.8", lazy_max_pages=1 << 20, auto_purge=False)
    areas = [s.alloc(n * P) for n in (1, 2, 3)]
    s.alloc(P)
    for i in order:
        s.free_lazy(areas[i])
    assert [(a.start, a.end) for a in s.lazy_areas()] == [(0, 6 * P)]
    assert s.stats()["lazy_pages"] == 6
    s.check()
    assert s.purge() == 1
    s.check()

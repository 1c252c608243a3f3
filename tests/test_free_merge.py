"""free(): merge_or_add_vmap_area with each merge case, and what free returns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _util import P, VmapExhausted, busy, common_stats, free, snapshot

B = 0x200000
N = 16
E = B + N * P


def pg(i):
    return B + i * P


def full_of_pairs(impl, lock, nr_nodes=2):
    """A full space of eight 2-page busy areas A..H at pg(0), pg(2), ..., pg(14)."""
    s = impl(B, E, nr_nodes=nr_nodes, zone_size=P, lock=lock)
    for i in range(8):
        assert s.alloc(2 * P) == pg(2 * i)
    assert free(s) == []
    return s


def test_free_returns_the_area(impl, lock):
    s = full_of_pairs(impl, lock)
    a = s.free(pg(4))
    assert (a.start, a.end, a.size) == (pg(4), pg(6), 2 * P)
    assert len(s) == 7
    assert s.find(pg(4)) is None and s.find(pg(6) - 1) is None
    s.check()


def test_merge_none(impl, lock):
    """Both neighbours busy: the freed range becomes a free block of its own."""
    s = full_of_pairs(impl, lock)
    s.free(pg(4))
    assert free(s) == [(pg(4), pg(6))]
    s.free(pg(8))
    assert free(s) == [(pg(4), pg(6)), (pg(8), pg(10))]
    assert common_stats(s)["free_areas"] == 2
    s.check()


def test_merge_prev(impl, lock):
    """prev.va_end == va_start: merge into the previous free block."""
    s = full_of_pairs(impl, lock)
    s.free(pg(4))
    s.free(pg(6))           # next (pg(8)) still busy
    assert free(s) == [(pg(4), pg(8))]
    assert busy(s)[2] == (pg(8), pg(10))
    assert common_stats(s)["free_areas"] == 1
    assert common_stats(s)["largest_free"] == 4 * P
    s.check()


def test_merge_next(impl, lock):
    """next.va_start == va_end: merge into the next free block."""
    s = full_of_pairs(impl, lock)
    s.free(pg(6))
    s.free(pg(4))           # prev (pg(2)) still busy
    assert free(s) == [(pg(4), pg(8))]
    assert busy(s)[1] == (pg(2), pg(4))
    s.check()


def test_merge_both(impl, lock):
    s = full_of_pairs(impl, lock)
    s.free(pg(2))
    s.free(pg(6))
    assert free(s) == [(pg(2), pg(4)), (pg(6), pg(8))]
    s.free(pg(4))
    assert free(s) == [(pg(2), pg(8))]
    assert common_stats(s)["free_areas"] == 1
    s.check()


def test_merge_with_the_space_tail_and_head(impl, lock):
    s = impl(B, E, nr_nodes=2, lock=lock)
    s.alloc(P)
    s.alloc(P)
    s.alloc(P)
    assert free(s) == [(pg(3), E)]
    s.free(pg(2))                       # merges with the tail block
    assert free(s) == [(pg(2), E)]
    s.free(B)                           # first area: no prev, next busy
    assert free(s) == [(B, pg(1)), (pg(2), E)]
    s.free(pg(1))                       # both
    assert free(s) == [(B, E)] and len(s) == 0
    s.check()


def test_free_everything_restores_one_block(impl, lock):
    s = impl(B, E, nr_nodes=4, zone_size=P, lock=lock)
    addrs = [s.alloc(sz * P) for sz in (1, 3, 2, 1, 4, 1)]
    for a in (addrs[2], addrs[0], addrs[5], addrs[3], addrs[1], addrs[4]):
        s.free(a)
        s.check()
    assert free(s) == [(B, E)]
    st = common_stats(s)
    assert st["busy_areas"] == 0 and st["busy_bytes"] == 0
    assert st["free_bytes"] == N * P and st["node_areas"] == [0, 0, 0, 0]


def test_freed_range_is_reused_first(impl):
    s = impl(B, E, nr_nodes=1)
    for _ in range(4):
        s.alloc(2 * P)
    s.free(pg(2))
    assert s.alloc(P) == pg(2)
    assert s.alloc(P) == pg(3)
    assert s.alloc(P) == pg(8)


def test_double_free_and_non_start_are_key_errors(impl, lock):
    s = full_of_pairs(impl, lock)
    s.free(pg(4))
    before = snapshot(s)
    with pytest.raises(KeyError):
        s.free(pg(4))               # double free
    with pytest.raises(KeyError):
        s.free(pg(5))               # inside a free block
    with pytest.raises(KeyError):
        s.free(pg(7))               # inside a busy area, not its start
    with pytest.raises(KeyError):
        s.free(pg(6) + 1)           # unaligned, inside a busy area
    with pytest.raises(KeyError):
        s.free(B - P)               # below the space
    with pytest.raises(KeyError):
        s.free(E)                   # at the end of the space
    with pytest.raises(KeyError):
        s.free(0)
    with pytest.raises(KeyError):
        s.free((1 << 64) - 1)
    assert snapshot(s) == before
    s.check()


def test_free_area_spanning_zones_of_other_nodes(impl, lock):
    """free() walks the nodes like find_unlink_vmap_area."""
    s = impl(0, 64 * P, nr_nodes=4, zone_size=P, lock=lock)
    assert s.alloc(P) == 0
    a = s.alloc(9 * P)                  # spans zones 1..9: nodes 1,2,3,0,...
    assert a == P
    assert s.stats()["node_areas"] == [1, 1, 0, 0]
    with pytest.raises(KeyError):
        s.free(5 * P)                   # node 1's zone, inside the area
    f = s.free(P)
    assert (f.start, f.end) == (P, 10 * P)
    assert s.stats()["node_areas"] == [1, 0, 0, 0]
    assert free(s) == [(P, 64 * P)]
    s.check()


@given(order=st.permutations(range(8)), sizes=st.lists(st.integers(1, 3), min_size=8, max_size=8))
def test_any_free_order_coalesces(impl, order, sizes):
    s = impl(0, 32 * P, nr_nodes=3, zone_size=P)
    addrs = [s.alloc(sz * P) for sz in sizes]
    total = sum(sizes) * P
    for k, i in enumerate(order):
        f = s.free(addrs[i])
        assert (f.start, f.end) == (addrs[i], addrs[i] + sizes[i] * P)
        # free blocks are maximal: no two touch, and they cover exactly the freed set
        blocks = free(s)
        assert all(a[1] < b[0] for a, b in zip(blocks, blocks[1:]))
        assert sum(e - b for b, e in blocks) == 32 * P - total + sum(sizes[j] for j in order[:k + 1]) * P
        s.check()
    assert free(s) == [(0, 32 * P)]
    with pytest.raises(VmapExhausted):
        s.alloc(33 * P)

"""find(): find_vmap_area over per-node busy trees, spanning areas, edges, holes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _util import P, TOP, busy, span

B = 0x300000
N = 32
E = B + N * P


def pg(i):
    return B + i * P


def test_find_inside_on_edges_and_in_holes(impl, lock):
    s = impl(B, E, nr_nodes=4, zone_size=P, lock=lock)
    s.alloc(3 * P, vstart=pg(2))                # [2P, 5P)
    s.alloc(P, vstart=pg(5))                    # [5P, 6P), touches the first
    s.alloc(2 * P, vstart=pg(9))                # [9P, 11P)
    assert span(s.find(pg(2))) == (pg(2), pg(5))         # first byte
    assert span(s.find(pg(3) + 123)) == (pg(2), pg(5))   # middle
    assert span(s.find(pg(5) - 1)) == (pg(2), pg(5))     # last byte
    assert span(s.find(pg(5))) == (pg(5), pg(6))         # end is the next one's start
    assert span(s.find(pg(6) - 1)) == (pg(5), pg(6))
    assert s.find(pg(6)) is None                         # end, followed by a hole
    assert s.find(pg(2) - 1) is None                     # just before the start
    assert s.find(pg(7)) is None                         # hole
    assert s.find(pg(11)) is None
    assert span(s.find(pg(11) - 1)) == (pg(9), pg(11))
    assert s.find(B) is None                             # free head of the space
    assert s.find(E - 1) is None                         # free tail of the space


def test_find_out_of_range(impl, lock):
    s = impl(B, E, nr_nodes=3, lock=lock)
    s.alloc(N * P)                               # the whole space busy
    assert span(s.find(B)) == (B, E) and span(s.find(E - 1)) == (B, E)
    for addr in (0, 1, B - 1, B - P, E, E + 1, E + P, 1 << 40, TOP - 1):
        assert s.find(addr) is None, hex(addr)


def test_find_empty_space(impl):
    s = impl(B, E, nr_nodes=2)
    for addr in (0, B, B + 5, E - 1, E, TOP - 1):
        assert s.find(addr) is None


def test_find_at_the_top_of_the_address_space(impl, lock):
    s = impl(TOP - 8 * P, TOP, nr_nodes=3, zone_size=P, lock=lock)
    s.alloc(5 * P, vstart=TOP - 5 * P)
    for addr in range(TOP - 5 * P, TOP, P // 2):
        assert span(s.find(addr)) == (TOP - 5 * P, TOP)
    assert span(s.find(TOP - 1)) == (TOP - 5 * P, TOP)
    assert s.find(TOP - 5 * P - 1) is None
    assert s.find(0) is None


@pytest.mark.parametrize("nr_nodes,zone_pages,start_page,pages", [
    (4, 1, 3, 10),      # 10 zones over 4 nodes: every node's zone, wrapping round twice
    (3, 1, 1, 7),
    (2, 2, 5, 9),       # starts mid-zone
    (5, 3, 0, 30),
    (4, 4, 2, 3),       # spans two zones only
    (1, 1, 4, 6),       # one node: trivially found
    (7, 1, 6, 20),
])
def test_spanning_area_found_from_each_zone(impl, lock, nr_nodes, zone_pages, start_page, pages):
    """An area over several zones sits in its start's node and is found from any address."""
    zone = zone_pages * P
    s = impl(0, 64 * P, nr_nodes=nr_nodes, zone_size=zone, lock=lock)
    # neighbours on both sides, so a wrong walk could find the wrong area
    if start_page > 0:
        s.alloc(start_page * P, vstart=0)
    addr = s.alloc(pages * P, vstart=start_page * P)
    assert addr == start_page * P
    end = addr + pages * P
    s.alloc(P, vstart=end)
    home = (addr // zone) % nr_nodes
    assert s.node_of(addr) == home
    assert s.stats()["node_areas"][home] >= 1
    zones = range(addr // zone, (end - 1) // zone + 1)
    assert len(zones) >= min(2, pages // zone_pages)
    seen_nodes = set()
    for z in zones:
        lo, hi = max(z * zone, addr), min((z + 1) * zone, end)
        for probe in (lo, lo + 1, (lo + hi) // 2, hi - 1):
            assert span(s.find(probe)) == (addr, end), (z, hex(probe))
        seen_nodes.add(s.node_of(lo))
    if len(zones) >= nr_nodes:
        assert seen_nodes == set(range(nr_nodes))
    assert span(s.find(end)) == (end, end + P)
    assert s.find(end + P) is None
    s.check()


def test_spanning_areas_in_every_node(impl, lock):
    s = impl(0, 128 * P, nr_nodes=4, zone_size=P, lock=lock)
    areas = []
    for k, pages in enumerate((5, 1, 9, 2, 13, 4, 7, 3)):
        a = s.alloc(pages * P)
        areas.append((a, a + pages * P))
    assert busy(s) == areas
    for a, e in areas:
        for probe in range(a, e, P):
            assert span(s.find(probe)) == (a, e)
            assert span(s.find(probe + P - 1)) == (a, e)
    for a, e in areas[::2]:
        s.free(a)
    for a, e in areas[::2]:
        for probe in range(a, e, P):
            assert s.find(probe) is None
    for a, e in areas[1::2]:
        assert span(s.find(e - 1)) == (a, e)


def test_find_returns_equal_areas_each_time(impl):
    s = impl(B, E, nr_nodes=2)
    s.alloc(4 * P)
    a, b = s.find(B), s.find(B + 3 * P)
    assert a == b and span(a) == (B, B + 4 * P)
    assert list(s)[0] == a


@given(data=st.data())
def test_find_matches_brute_force(impl, data):
    nr_nodes = data.draw(st.sampled_from([1, 2, 3, 4, 8]))
    zone = data.draw(st.sampled_from([1, 2, 16])) * P
    s = impl(0, 64 * P, nr_nodes=nr_nodes, zone_size=zone)
    live = {}
    for _ in range(data.draw(st.integers(1, 20))):
        pages = data.draw(st.integers(1, 8))
        vstart = data.draw(st.integers(0, 63)) * P
        try:
            a = s.alloc(pages * P, vstart=vstart)
        except MemoryError:
            continue
        live[a] = a + pages * P
        if data.draw(st.booleans()) and live:
            victim = data.draw(st.sampled_from(sorted(live)))
            s.free(victim)
            del live[victim]
    assert busy(s) == sorted(live.items())
    probes = data.draw(st.lists(st.integers(0, 64 * P), min_size=1, max_size=30))
    for addr in probes:
        hit = [(a, e) for a, e in live.items() if a <= addr < e]
        got = s.find(addr)
        assert (span(got) if got is not None else None) == (hit[0] if hit else None), hex(addr)


@pytest.mark.parametrize("lock", ["node", "global", "rwlock", "optimistic"])
@pytest.mark.parametrize("nr_nodes,zone_pages", [(3, 1), (8, 2), (128, 16)])
def test_bounded_walk_finds_what_the_kernel_walk_finds(lock, nr_nodes, zone_pages):
    """The bounded walk (space_find_bounded(), switched on by a hook: it is
    not the kernel's cost model) visits only the nodes of the zones within the
    widest area ever inserted; kernel "node" keeps the full walk.
    Areas wider than several zones, frees, pooled reuse and misses (inside
    and outside the space): every answer equals the kernel walk's."""
    import array
    import random
    from vmap_core import MISS, VmapSpace
    P = 4096
    rng = random.Random(nr_nodes + zone_pages)
    kw = dict(nr_nodes=nr_nodes, zone_size=zone_pages * P)
    from vmap_core import _testhooks
    bounded = VmapSpace(1 << 32, (1 << 32) + (1 << 24), lock=lock, **kw)
    _testhooks.set_bounded_walk(bounded, True)
    kernel = VmapSpace(1 << 32, (1 << 32) + (1 << 24), lock="node", **kw)
    live = []
    for step in range(400):
        if live and rng.random() < 0.35:
            a = live.pop(rng.randrange(len(live)))
            lazy = rng.random() < 0.3
            for s in (bounded, kernel):
                s.free_lazy(a) if lazy else s.free(a)
        else:
            size = rng.choice([1, 2, 3, 40]) * P if step != 200 else 300 * P
            got = {s.alloc(size, cpu=step % nr_nodes) for s in (bounded, kernel)}
            assert len(got) == 1
            live.append(got.pop())
        if step % 100 == 99:
            qs = [rng.randrange((1 << 32) - P, (1 << 32) + (1 << 22)) for _ in range(500)]
            qs += [0, 2**64 - 1, (1 << 32) + (1 << 24)]
            want = [a.start if (a := kernel.find(q)) else MISS for q in qs]
            assert [a.start if (a := bounded.find(q)) else MISS for q in qs] == want
            assert list(bounded.find_many(array.array("Q", qs))) == want
    bounded.check()

"""alloc(): the lowest linear match, the four fit types, exhaustion, 2**64, alignment.

Each expectation is computed by hand from the contract (kernel names in the
docstrings); the suite runs against the core and the reference alike.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _util import (P, TOP, VmapExhausted, busy, carve, common_stats, free,
                   lowest_linear_match, snapshot)

B = 0x100000            # base of the small test spaces (page aligned)
N = 16                  # pages in them
E = B + N * P


def pg(i):
    return B + i * P


# -- basics -----------------------------------------------------------------

def test_first_allocs_pack_from_the_bottom(impl, lock):
    s = impl(B, E, nr_nodes=2, lock=lock)
    assert s.alloc(P) == B
    assert s.alloc(2 * P) == pg(1)
    assert s.alloc(P) == pg(3)
    assert busy(s) == [(B, pg(1)), (pg(1), pg(3)), (pg(3), pg(4))]
    assert free(s) == [(pg(4), E)]
    assert len(s) == 3
    s.check()


def test_alloc_returns_plain_int(impl):
    s = impl(B, E, nr_nodes=1)
    addr = s.alloc(P)
    assert type(addr) is int and addr == B


def test_align_defaults_to_page_size_and_small_aligns_behave_like_it(impl):
    for align in (None, 1, 2, 512, P):
        s = impl(B, E, nr_nodes=1, page_size=P)
        assert s.alloc(P, vstart=pg(1)) == pg(1)
        assert s.alloc(P, align) == B
        assert s.alloc(P, align) == pg(2)


def test_stats_common_keys(impl, lock):
    s = impl(B, E, nr_nodes=3, zone_size=4 * P, lock=lock)
    s.alloc(P)
    s.alloc(3 * P, vstart=pg(8))
    st = common_stats(s)
    assert st == {
        "busy_areas": 2,
        "busy_bytes": 4 * P,
        "free_areas": 2,
        "free_bytes": 12 * P,
        "largest_free": 7 * P,
        "nr_nodes": 3,
        # B = 256 pages = zone 64 -> node 1; pg(8) is zone 66 -> node 0
        "node_areas": [1, 1, 0],
        "lock": lock,
    }


def test_defaults_nr_nodes_and_zone_size(impl):
    import os
    s = impl(0, 64 * 16 * P)
    expect = max(1, min(os.cpu_count() or 1, 128))
    assert s.stats()["nr_nodes"] == expect
    assert len(s.stats()["node_areas"]) == expect
    # zone_size defaults to 16 pages: node_of(addr) = (addr // (16 P)) % nr_nodes
    for zone in range(8):
        assert s.node_of(zone * 16 * P) == zone % expect
        assert s.node_of(zone * 16 * P + 16 * P - 1) == zone % expect


@pytest.mark.parametrize("page_size", [1024, 4096, 1 << 16])
def test_other_page_sizes(impl, page_size):
    s = impl(0, 8 * page_size, page_size=page_size, nr_nodes=1)
    assert s.alloc(page_size) == 0
    assert s.alloc(3 * page_size) == page_size
    assert free(s) == [(4 * page_size, 8 * page_size)]
    with pytest.raises(ValueError):
        s.alloc(page_size // 2)
    s.check()


def test_kernel_search_does_not_adjust_an_exact_range(impl):
    """__alloc_vmap_area() searches for size + align - 1 when align >
    PAGE_SIZE, except when the range is exactly the request ("(vend - vstart)
    == size"): then a hole of exactly the size, aligned, is found even where
    the adjusted search would skip it (here the hole is the free tree's left
    child, whose subtree_max_size is only the size)."""
    s = impl(0, 64 * P, nr_nodes=1, search="kernel")
    s.alloc(8 * P)
    hole = s.alloc(4 * P)                 # [8P, 12P): 4-page aligned
    s.alloc(4 * P)
    s.free(hole)                          # the left child of [16P, 64P)
    assert s.alloc(4 * P, 4 * P, hole, hole + 4 * P) == hole
    s.free(hole)
    # Not exactly the request: the search is adjusted and skips the hole.
    with pytest.raises(VmapExhausted):
        s.alloc(4 * P, 4 * P, hole, hole + 5 * P)
    s.check()


# -- the four fit types (va_clip / classify_va_fit_type) ---------------------

def test_fit_full(impl, lock):
    """FL_FIT_TYPE: the request takes the whole block, which disappears."""
    s = impl(B, E, nr_nodes=2, lock=lock)
    carve(s, B, E, [(pg(2), pg(5)), (pg(9), pg(10))])
    assert s.alloc(3 * P) == pg(2)
    assert free(s) == [(pg(9), pg(10))]
    assert s.alloc(P) == pg(9)
    assert free(s) == []
    assert s.stats()["free_areas"] == 0 and s.stats()["largest_free"] == 0
    s.check()


def test_fit_full_whole_space(impl):
    s = impl(B, E, nr_nodes=1)
    assert s.alloc(N * P) == B
    assert free(s) == [] and busy(s) == [(B, E)]
    s.check()


def test_fit_left_edge(impl, lock):
    """LE_FIT_TYPE: the request starts at the block start; the block shrinks from the left."""
    s = impl(B, E, nr_nodes=2, lock=lock)
    carve(s, B, E, [(pg(2), pg(7))])
    assert s.alloc(2 * P) == pg(2)
    assert free(s) == [(pg(4), pg(7))]
    s.check()


def test_fit_right_edge_by_vstart(impl, lock):
    """RE_FIT_TYPE: the request ends at the block end; the block shrinks from the right."""
    s = impl(B, E, nr_nodes=2, lock=lock)
    assert s.alloc(2 * P, vstart=pg(14)) == pg(14)
    assert free(s) == [(B, pg(14))]
    s.check()


def test_fit_right_edge_by_alignment(impl):
    # block [1P, 4P), align 2P, size 2P: nva = 2P and nva + size == 4P == block end
    s = impl(0, 16 * P, nr_nodes=1)
    carve(s, 0, 16 * P, [(P, 4 * P)])
    assert s.alloc(2 * P, 2 * P) == 2 * P
    assert free(s) == [(P, 2 * P)]
    s.check()


def test_fit_no_edge_by_vstart(impl, lock):
    """NE_FIT_TYPE: the request sits strictly inside the block, which splits in two."""
    s = impl(B, E, nr_nodes=2, lock=lock)
    assert s.alloc(3 * P, vstart=pg(5)) == pg(5)
    assert free(s) == [(B, pg(5)), (pg(8), E)]
    assert s.stats()["free_areas"] == 2
    s.check()


def test_fit_no_edge_by_alignment(impl):
    s = impl(0, 32 * P, nr_nodes=1)
    carve(s, 0, 32 * P, [(P, 31 * P)])
    assert s.alloc(P, 8 * P) == 8 * P
    assert free(s) == [(P, 8 * P), (9 * P, 31 * P)]
    s.check()


# -- the lowest linear match --------------------------------------------------

def test_first_hole_that_fits_is_taken(impl, lock):
    s = impl(B, E, nr_nodes=2, lock=lock)
    holes = [(pg(1), pg(2)), (pg(4), pg(7)), (pg(9), pg(11)), (pg(13), E)]
    carve(s, B, E, holes)
    assert s.alloc(2 * P) == pg(4)          # skips the 1-page hole, not the best fit
    assert free(s) == [(pg(1), pg(2)), (pg(6), pg(7)), (pg(9), pg(11)), (pg(13), E)]
    assert s.alloc(P) == pg(1)
    assert s.alloc(3 * P) == pg(13)
    assert s.alloc(P) == pg(6)
    assert s.alloc(2 * P) == pg(9)
    assert free(s) == []
    s.check()


def test_vstart_in_the_middle_of_a_block(impl):
    s = impl(B, E, nr_nodes=1)
    carve(s, B, E, [(pg(2), pg(10))])
    assert s.alloc(P, vstart=pg(1)) == pg(2)     # vstart inside a busy area
    assert s.alloc(P, vstart=pg(6)) == pg(6)     # vstart inside the free block
    assert free(s) == [(pg(3), pg(6)), (pg(7), pg(10))]
    s.check()


def test_large_alignment_takes_lower_misaligned_block(impl):
    """With search="lowest" (unlike the kernel, which searches size + align -
    1), a lower block that is not aligned but still holds an aligned fit must
    win over a higher aligned one."""
    s = impl(0, 64 * P, nr_nodes=1, search="lowest")
    holes = [(P, 4 * P), (7 * P, 10 * P), (16 * P, 64 * P)]
    carve(s, 0, 64 * P, holes)
    # [1P,4P): ALIGN(1P, 8P) = 8P > 4P, no fit.  [7P,10P) is 3 pages, less than
    # 2P + 8P - 1, yet nva = 8P and 8P + 2P <= 10P: it fits.
    assert s.alloc(2 * P, 8 * P) == 8 * P
    assert free(s) == [(P, 4 * P), (7 * P, 8 * P), (16 * P, 64 * P)]
    # the next 8P-aligned 2-page request has to go to the high block
    assert s.alloc(2 * P, 8 * P) == 16 * P
    s.check()


@pytest.mark.parametrize("holes,size,align,expect", [
    # (the kernel searches size + align - 1 bytes, so it would pick the last block)
    # a one-page hole on an even page beats the 3-page block the kernel would pick
    ([(1, 2), (4, 5), (8, 11)], 1, 2, 4),
    # [5, 8): ALIGN(5, 4) = 8 and 8 + 1 > 8, no fit; the 2-page [12, 14) fits at 12
    ([(5, 8), (12, 14), (20, 40)], 1, 4, 12),
    # [6, 9): ALIGN(6, 8) = 8, 8 + 1 <= 9 fits although 3 < 1 + 8 - 1
    ([(1, 3), (6, 9), (16, 40)], 1, 8, 8),
    # [30, 34) holds [32, 34) for align 16, size 2: a 4-page hole, kernel wants 17 pages
    ([(3, 9), (30, 34), (40, 120)], 2, 16, 32),
    # [62, 66): ALIGN(62, 32) = 64 and 64 + 2 == 66, a right-edge fit
    ([(62, 66), (70, 200)], 2, 32, 64),
])
def test_lowest_aligned_fit_beats_kernel_choice(impl, holes, size, align, expect):
    holes = [(a * P, b * P) for a, b in holes]
    end = holes[-1][1] + P
    s = impl(0, end, nr_nodes=2, zone_size=P, search="lowest")
    carve(s, 0, end, holes)
    assert lowest_linear_match(holes, size * P, align * P, 0, end) == expect * P
    assert s.alloc(size * P, align * P) == expect * P
    s.check()


# -- the kernel's aligned search (search="kernel", the default) ------------------

def three_block_tree(impl, **kw):
    """Free blocks [62P, 66P) and [70P, 200P) carved from [0, 201P) low to high.
    The no-edge clip at 66P keeps the block as its right part ([70P, 201P), the
    root) and inserts the left part [62P, 66P) below it, as va_clip() does."""
    s = impl(0, 201 * P, nr_nodes=2, zone_size=P, **kw)
    assert s.alloc(62 * P) == 0
    assert s.alloc(4 * P, vstart=66 * P, vend=70 * P) == 66 * P
    assert s.alloc(P, vstart=200 * P) == 200 * P
    assert free(s) == [(62 * P, 66 * P), (70 * P, 200 * P)]
    return s


def test_kernel_search_follows_the_tree_shape(impl):
    """find_vmap_lowest_match() for 2 pages aligned to 32: the length is 33
    pages, so the root [70P, 200P) is reached without entering its left child,
    and 96P is the kernel's answer although [62P, 66P) holds 64P."""
    s = three_block_tree(impl)
    assert s._free_tree_shape() == [(70 * P, 200 * P, "b", 0), (62 * P, 66 * P, "r", 1)]
    assert s.predict(2 * P, 32 * P) == (96 * P, "free")
    assert s.alloc(2 * P, 32 * P) == 96 * P
    s.check()
    lowest = three_block_tree(impl, search="lowest")
    assert lowest.alloc(2 * P, 32 * P) == 64 * P


def test_kernel_search_skips_a_lower_block_smaller_than_the_length(impl):
    """A page aligned to 4 pages: the length is 4 pages; the root [12P, 64P)
    does not enter its left child [8P, 11P) (3 pages) although 8P would fit."""
    s = impl(0, 64 * P, nr_nodes=1)
    assert s.alloc(8 * P) == 0
    assert s.alloc(P, vstart=11 * P, vend=12 * P) == 11 * P     # [8P, 11P) splits off
    assert s._free_tree_shape() == [(12 * P, 64 * P, "b", 0), (8 * P, 11 * P, "r", 1)]
    assert s.alloc(P, 4 * P) == 12 * P
    assert s.alloc(P, P) == 8 * P                 # page alignment: no adjustment
    s.check()


def test_no_length_adjustment_for_an_exact_range(impl):
    """(vend - vstart) == size: the kernel does not add align - 1, else an
    exact window could never be found."""
    s = impl(0, 64 * P, nr_nodes=1)
    assert s.alloc(8 * P, 8 * P, vstart=16 * P, vend=24 * P) == 16 * P
    s.check()


@pytest.mark.parametrize("shift", [16, 20, 30, 40, 50, 63])
def test_huge_alignment(impl, shift):
    align = 1 << shift
    lo = align - 8 * P
    s = impl(lo, align + 8 * P, nr_nodes=4, zone_size=P)
    assert s.alloc(P, align) == align
    assert free(s) == [(lo, align), (align + P, align + 8 * P)]
    with pytest.raises(VmapExhausted):      # next multiple of align is out of range
        s.alloc(P, align)
    assert s.find(align + P - 1) is not None
    s.check()


def test_alignment_overflow_near_top(impl):
    """ALIGN(max(start, vstart), 2**63) in [2**64 - 16P, 2**64) wraps past 2**64."""
    s = impl(TOP - 16 * P, TOP, nr_nodes=2)
    before = snapshot(s)
    for shift in (20, 40, 62, 63):
        with pytest.raises(VmapExhausted):
            s.alloc(P, 1 << shift)
        assert snapshot(s) == before
    assert s.alloc(P, 16 * P) == TOP - 16 * P


# -- exhaustion (-ENOMEM and -ERANGE) ----------------------------------------

def test_exhausted_is_a_memory_error():
    assert issubclass(VmapExhausted, MemoryError)


def test_exhausted_when_full(impl, lock):
    s = impl(B, E, nr_nodes=2, lock=lock)
    for i in range(N):
        assert s.alloc(P) == pg(i)
    before = snapshot(s)
    with pytest.raises(VmapExhausted):
        s.alloc(P)
    with pytest.raises(MemoryError):
        s.alloc(P)
    assert snapshot(s) == before
    s.check()


def test_exhausted_bigger_than_space(impl):
    s = impl(B, E, nr_nodes=1)
    with pytest.raises(VmapExhausted):
        s.alloc((N + 1) * P)
    assert free(s) == [(B, E)] and len(s) == 0


def test_exhausted_fragmented(impl):
    """Enough free bytes in total, but no single block holds the request."""
    s = impl(B, E, nr_nodes=1)
    carve(s, B, E, [(pg(0), pg(3)), (pg(4), pg(7)), (pg(8), pg(11)), (pg(12), E)])
    before = snapshot(s)
    assert s.stats()["free_bytes"] == 13 * P
    with pytest.raises(VmapExhausted):
        s.alloc(5 * P)
    assert snapshot(s) == before
    assert s.alloc(4 * P) == pg(12)


def test_exhausted_erange_fit_ends_past_vend(impl):
    """A lowest fit exists but nva + size > vend: the kernel's -ERANGE."""
    s = impl(B, E, nr_nodes=1)
    carve(s, B, E, [(pg(0), pg(1)), (pg(6), E)])
    before = snapshot(s)
    with pytest.raises(VmapExhausted):
        s.alloc(2 * P, vend=pg(7))            # lowest fit is [6P, 8P), past vend = 7P
    with pytest.raises(VmapExhausted):
        s.alloc(4 * P, vstart=B, vend=pg(4))  # straddles vend inside a busy range
    assert snapshot(s) == before
    assert s.alloc(2 * P, vend=pg(8)) == pg(6)   # exactly at vend is fine
    assert s.alloc(P, vend=pg(1)) == B


def test_window_fits_only_inside_it(impl):
    s = impl(B, E, nr_nodes=1)
    assert s.alloc(2 * P, vstart=pg(4), vend=pg(6)) == pg(4)
    with pytest.raises(VmapExhausted):
        s.alloc(P, vstart=pg(4), vend=pg(6))
    assert s.alloc(P, vstart=pg(4), vend=pg(7)) == pg(6)
    assert s.alloc(P, vstart=B, vend=pg(7)) == B
    assert free(s) == [(pg(1), pg(4)), (pg(7), E)]


# -- a space that ends at 2**64 ------------------------------------------------

@pytest.mark.parametrize("nr_nodes", [1, 4])
def test_space_ending_at_2_pow_64(impl, lock, nr_nodes):
    lo = TOP - 16 * P
    s = impl(lo, TOP, nr_nodes=nr_nodes, zone_size=P, lock=lock)
    last = TOP - P
    assert s.alloc(P, vstart=last) == last
    assert s.alloc(P, vstart=last - P, vend=TOP) == last - P
    a = s.find(TOP - 1)
    assert (a.start, a.end, a.size) == (last, TOP, P)
    assert s.find(last) == a and s.find(last - 1).start == last - P
    assert busy(s) == [(last - P, last), (last, TOP)]
    assert free(s) == [(lo, last - P)]
    assert common_stats(s)["busy_bytes"] == 2 * P
    s.check()
    with pytest.raises(VmapExhausted):
        s.alloc(P, vstart=last)
    f = s.free(last)
    assert (f.start, f.end) == (last, TOP)
    assert s.find(TOP - 1) is None
    assert free(s) == [(lo, last - P), (last, TOP)]
    s.free(last - P)
    assert free(s) == [(lo, TOP)] and len(s) == 0
    assert s.alloc(16 * P) == lo
    s.check()


def test_size_overflow_near_2_pow_64(impl):
    """nva + size past 2**64 must be a miss, not a wrapped-around hit."""
    lo = TOP - 16 * P
    s = impl(lo, TOP, nr_nodes=2)
    before = snapshot(s)
    for size in (17 * P, 32 * P, (1 << 63), TOP - P, TOP - lo + P):
        with pytest.raises(VmapExhausted):
            s.alloc(size)
        with pytest.raises(VmapExhausted):
            s.alloc(size, vstart=TOP - P)
        assert snapshot(s) == before
    with pytest.raises(VmapExhausted):
        s.alloc(2 * P, vstart=TOP - P)
    assert snapshot(s) == before
    assert s.alloc(P, vstart=TOP - P) == TOP - P


def test_whole_64_bit_space(impl):
    s = impl(0, TOP, nr_nodes=4)
    half = 1 << 63
    assert s.alloc(half) == 0
    assert s.alloc(half) == half
    assert free(s) == [] and common_stats(s)["busy_bytes"] == TOP
    with pytest.raises(VmapExhausted):
        s.alloc(P)
    assert s.find(TOP - 1).start == half
    assert s.find(half - 1).start == 0
    s.check()
    assert (s.free(half).end) == TOP
    assert free(s) == [(half, TOP)]
    assert common_stats(s)["largest_free"] == half
    s.free(0)
    assert free(s) == [(0, TOP)]
    assert common_stats(s)["free_bytes"] == TOP
    s.check()


def test_size_2_pow_64_takes_the_whole_64_bit_space(impl):
    """size = 2**64 is a positive multiple of page_size and fits [0, 2**64) exactly."""
    s = impl(0, TOP, nr_nodes=2)
    assert s.alloc(TOP) == 0
    assert busy(s) == [(0, TOP)] and free(s) == []
    assert s.find(TOP - 1).end == TOP
    s.check()
    f = s.free(0)
    assert (f.start, f.end, f.size) == (0, TOP, TOP)
    assert free(s) == [(0, TOP)]


def test_size_2_pow_64_is_exhausted_in_a_smaller_space(impl):
    s = impl(TOP - 16 * P, TOP, nr_nodes=2)
    before = snapshot(s)
    with pytest.raises(VmapExhausted):
        s.alloc(TOP)
    assert snapshot(s) == before


# -- node placement -----------------------------------------------------------

@pytest.mark.parametrize("nr_nodes,zone_pages", [(1, 1), (2, 1), (4, 2), (3, 4), (7, 1)])
def test_node_placement(impl, lock, nr_nodes, zone_pages):
    zone = zone_pages * P
    s = impl(0, 64 * P, nr_nodes=nr_nodes, zone_size=zone, lock=lock)
    expect = [0] * nr_nodes
    for start in (0, 3 * P, 8 * P, 10 * P, 21 * P, 40 * P, 63 * P):
        size = P if start == 63 * P else 2 * P
        assert s.alloc(size, vstart=start) == start
        node = (start // zone) % nr_nodes
        assert s.node_of(start) == node
        expect[node] += 1
        assert s.stats()["node_areas"] == expect
    s.check()
    s.free(8 * P)
    expect[(8 * P // zone) % nr_nodes] -= 1
    assert s.stats()["node_areas"] == expect
    assert sum(expect) == len(s) == s.stats()["busy_areas"]


def test_node_of_is_addr_to_node_id(impl):
    s = impl(0, 1 << 40, nr_nodes=5, zone_size=3 * P)
    for addr in (0, 1, 3 * P - 1, 3 * P, 15 * P, 15 * P + 7, (1 << 40) - 1, TOP - 1):
        assert s.node_of(addr) == (addr // (3 * P)) % 5


def test_list_is_global_address_order_across_nodes(impl, lock):
    s = impl(0, 64 * P, nr_nodes=4, zone_size=P, lock=lock)
    starts = [37, 2, 60, 11, 5, 48, 0, 23]
    for i in starts:
        s.alloc(P, vstart=i * P)
    assert busy(s) == [(i * P, (i + 1) * P) for i in sorted(starts)]
    assert len(s) == len(starts)
    assert s.stats()["node_areas"] == [sum(1 for i in starts if i % 4 == n) for n in range(4)]


# -- property: results match the contract spelled out independently ----------

@st.composite
def carved_request(draw):
    """A space carved into small holes (often with a big free tail) and a request."""
    runs = draw(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 6)), min_size=1, max_size=10))
    holes, pos = [], 0
    for busy_pages, hole_pages in runs:
        if busy_pages == 0 and holes:
            busy_pages = 1                          # keep holes apart (coalesced)
        pos += busy_pages
        holes.append((pos * P, (pos + hole_pages) * P))
        pos += hole_pages
    if draw(st.booleans()):
        pos += 1
        holes.append((pos * P, (pos + 64) * P))     # a big block high up
        pos += 64
    n = pos + draw(st.integers(0, 2))
    size = draw(st.one_of(st.integers(1, 4), st.integers(1, n))) * P
    align = draw(st.sampled_from([2 * P, 4 * P, 8 * P, P, 16 * P, 64 * P, 1 << 30]))
    if draw(st.booleans()):
        vs = draw(st.integers(0, n - 1))
        ve = draw(st.integers(vs + 1, n))
    else:
        vs, ve = 0, n
    return n, holes, size, align, vs * P, ve * P


@given(req=carved_request())
def test_alloc_matches_lowest_linear_match(impl, req):
    n, holes, size, align, vstart, vend = req
    s = impl(0, n * P, nr_nodes=3, zone_size=2 * P, search="lowest")
    carve(s, 0, n * P, holes)
    expect = lowest_linear_match(holes, size, align, vstart, vend)
    before = snapshot(s)
    if expect is None:
        with pytest.raises(VmapExhausted):
            s.alloc(size, align, vstart, vend)
        assert snapshot(s) == before
    else:
        assert s.alloc(size, align, vstart, vend) == expect
        assert s.find(expect).start == expect
        assert s.find(expect + size - 1).end == expect + size
    s.check()

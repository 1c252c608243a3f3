"""The pools' size classes at every boundary (size_to_va_pool()).

Class c holds areas of c + 1 pages, for 1 to MAX_VA_SIZE_PAGES (256) pages;
a larger area has no class and a purge gives it back to the free tree.  The
lazy state machine draws small sizes only, so the boundaries are pinned here.
"""

from __future__ import annotations

import pytest

from _util import P

MAX_VA_SIZE_PAGES = 256


@pytest.mark.parametrize("pages", [1, 2, 3, 127, 128, 255, 256, 257, 258, 512])
def test_purge_pools_by_size_class(impl, lock, pages):
    s = impl(0, 2048 * P, nr_nodes=2, zone_size=1024 * P, lock=lock,
             lazy_max_pages=1 << 20, auto_purge=False)
    below = s.alloc(P)
    a = s.alloc(pages * P, cpu=1)                # tagged: node 1's pool missed
    above = s.alloc(P)
    s.free_lazy(a)
    s.purge()
    pooled = [(x.start, x.end, node) for x, node in s.pooled_areas()]
    classes = s.stats()["pool_areas"]
    if pages <= MAX_VA_SIZE_PAGES:
        assert pooled == [(a, a + pages * P, 1)]
        assert classes[1] == {pages - 1: 1} and classes[0] == {}
        assert s.alloc(pages * P, cpu=1) == a    # served from the pool
        assert s.pooled_areas() == []
    else:
        assert pooled == []
        assert classes == [{}, {}]
        assert any(f.start <= a and a + pages * P <= f.end for f in s.free_areas())
    assert s.find(below).start == below and s.find(above).start == above
    s.check()


@pytest.mark.parametrize("pages", [255, 256, 257])
def test_pool_miss_and_hit_near_the_top_class(impl, pages):
    """An area that has a class is kept for the next request of its size and
    no other: one page more or less goes to the free tree."""
    s = impl(0, 4096 * P, nr_nodes=2, zone_size=2048 * P, lazy_max_pages=1 << 20,
             auto_purge=False)
    a = s.alloc(pages * P, cpu=0)
    s.alloc(P)
    s.free_lazy(a)
    s.purge()
    hit = pages <= MAX_VA_SIZE_PAGES
    assert len(s.pooled_areas()) == (1 if hit else 0)
    b = s.alloc((pages + 1) * P, cpu=0)       # one page more: another class, or none
    assert b != a
    assert len(s.pooled_areas()) == (1 if hit else 0)
    if hit:
        assert s.alloc(pages * P, cpu=0) == a
        assert s.pooled_areas() == []
    else:
        assert any(f.start <= a and a + pages * P <= f.end for f in s.free_areas())
    s.check()

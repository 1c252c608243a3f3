"""on_purge(start, end): the TLB flush of __purge_vmap_area_lazy(), called
after the lazy areas are detached and before any of them can be handed out
again; a callback that raises; what may be called from inside it."""

from __future__ import annotations

import threading

import pytest

from _util import P
from vmap_core import OnPurgeError, VmapArea

B = 0x100000


def lazy_space(impl, on_purge, **kw):
    kw.setdefault("lazy_max_pages", 1 << 20)
    s = impl(B, B + 64 * P, nr_nodes=2, zone_size=P, on_purge=on_purge, **kw)
    areas = [s.alloc(2 * P, cpu=i % 2) for i in range(4)]
    for a in areas[1:]:
        s.free_lazy(a)
    return s, areas


def test_the_flush_comes_before_any_purged_area_is_handed_out(impl):
    seen = []

    def flush(start, end):
        # The three lazy areas are detached: neither lazy, nor pooled, nor
        # free, nor busy; still counted in the lazy pages; check() holds.
        seen.append((start, end, [s.locate(a)[0] for a in areas[1:]],
                     s.stats()["lazy_pages"], s.lazy_areas(), s.predict(2 * P, cpu=1)))
        s.check()

    s, areas = lazy_space(impl, flush)
    assert s.purge() == 3
    (start, end, states, pages, lazy, pred), = seen
    assert (start, end) == (areas[1], areas[3] + 2 * P)
    assert states == [None, None, None] and pages == 6 and lazy == []
    assert pred[0] not in areas[1:]                # nothing purged can be handed out yet
    assert {a.start for a, _ in s.pooled_areas()} == set(areas[1:])
    s.check()


def test_the_flush_holds_off_another_threads_allocation(core):
    """From another thread, during the flush, an allocation cannot get a
    purged area: they are in no free tree and no pool."""
    got = []

    def flush(start, end):
        t = threading.Thread(target=lambda: got.append(s.alloc(2 * P, cpu=1)))
        t.start()
        t.join()

    s, areas = lazy_space(core, flush)
    s.purge()
    assert got and got[0] not in areas[1:]
    s.check()


def test_a_raising_callback_in_purge(impl):
    def flush(start, end):
        raise ValueError("no flush today")

    s, areas = lazy_space(impl, flush)
    with pytest.raises(OnPurgeError) as info:
        s.purge()
    err = info.value
    assert isinstance(err.__cause__, ValueError) and err.result == 3 and err.purged == 3
    assert "the purge completed" in str(err) and "purge() took effect" in str(err)
    s.check()
    assert s.lazy_areas() == [] and len(s.pooled_areas()) == 3
    assert s.stats()["lazy_pages"] == 0


def test_a_raising_callback_in_free_lazy(impl):
    calls = []

    def flush(start, end):
        calls.append((start, end))
        raise RuntimeError("flush failed")

    s = impl(B, B + 64 * P, nr_nodes=2, zone_size=P, on_purge=flush, lazy_max_pages=3)
    a, b = s.alloc(2 * P, cpu=0), s.alloc(2 * P, cpu=0)
    s.free_lazy(a)
    with pytest.raises(OnPurgeError) as info:
        s.free_lazy(b)                             # 4 lazy pages > 3: it purges
    err = info.value
    assert err.result == VmapArea(b, b + 2 * P) and isinstance(err.__cause__, RuntimeError)
    assert f"free_lazy({b:#x}) took effect" in str(err)
    assert s.find(b) is None and len(calls) == 1
    s.check()


def test_a_raising_callback_in_the_overflow_path(impl):
    def flush(start, end):
        raise KeyError("x")

    s = impl(B, B + 8 * P, nr_nodes=2, zone_size=P, on_purge=flush, lazy_max_pages=1 << 20)
    a = s.alloc(6 * P, cpu=0)
    s.free_lazy(a)
    with pytest.raises(OnPurgeError) as info:
        s.alloc(8 * P, cpu=0)                      # fits only once the lazy area is purged
    err = info.value
    assert err.result == B and s.find(B + 7 * P).start == B
    assert "its retry returned" in str(err) and isinstance(err.__cause__, KeyError)
    s.check()


def test_purges_are_refused_from_inside_the_flush(impl):
    errors, box = [], []

    def flush(start, end):
        s = box[0]
        for call in (lambda: s.purge(), lambda: s.drain_pools()):
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))
        s.free_lazy(s.alloc(2 * P, cpu=0))        # no automatic purge from in here
        s.check()

    s = impl(B, B + 64 * P, nr_nodes=2, zone_size=P, on_purge=flush, lazy_max_pages=1)
    box.append(s)
    for _ in range(3):
        s.free_lazy(s.alloc(2 * P, cpu=1))        # each free is past the limit: a purge
    assert s.stats()["purges"] == 3
    assert len(errors) == 6 and "on_purge" in errors[0]
    assert len(s.lazy_areas()) == 1               # the last flush's free waits
    s.check()


def test_keyboard_interrupt_in_the_flush_still_finishes_the_purge(impl):
    def flush(start, end):
        raise KeyboardInterrupt

    s, areas = lazy_space(impl, flush)
    with pytest.raises(KeyboardInterrupt):
        s.purge()
    s.check()
    assert s.lazy_areas() == [] and len(s.pooled_areas()) == 3

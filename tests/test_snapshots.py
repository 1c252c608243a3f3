"""Snapshots taken while other threads change the space (review finding W1).

Native writers (stress_native: alloc, free, lazy free, purge without the GIL)
churn a space whose tiny zones spread areas over many nodes; meanwhile the
main thread takes every view and checks what docs/guarantees.md promises: one state
the space was really in, so no two areas overlap and no area is in two
states.  Before the fix the busy view was copied node by node and showed
areas freed from one node overlapping areas allocated in another.
"""

from __future__ import annotations

import threading
import time

import pytest

from vmap_core import VmapSpace, _space

P = 4096
# Every lock design; "split" is v6.8's (one busy tree, lazy areas merged).
DESIGNS = [dict(lock="node"), dict(lock="global"), dict(lock="rwlock"),
           dict(lock="optimistic"), dict(lock="node", kernel="6.9"),
           dict(lock="split", kernel="6.8", nr_nodes=1)]


def spans(areas):
    return [(a.start, a.end) for a in areas]


def assert_disjoint(*views):
    """No two areas of the given views (lists of (start, end)) overlap."""
    pieces = sorted(p for view in views for p in view)
    for (s1, e1), (s2, e2) in zip(pieces, pieces[1:]):
        assert e1 <= s2, f"[{s1:#x}, {e1:#x}) overlaps [{s2:#x}, {e2:#x})"


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: "-".join(map(str, d.values())))
def test_w1_concurrent_views_are_consistent(design):
    design = dict({"nr_nodes": 16}, **design)
    space = VmapSpace(1 << 30, (1 << 30) + (1 << 24), zone_size=P, lazy_max_pages=64, **design)
    stop = threading.Event()
    errors = []

    def churn():
        try:
            while not stop.is_set():
                res = _space.stress_native(space, 2, 20000, seed=int(time.monotonic_ns()) & 0xFFFF)
                for owned in res["owned"]:       # give back what the workers kept
                    for start, _ in owned:
                        space.free(start)
        except BaseException as e:      # reported by the main thread
            errors.append(e)

    writer = threading.Thread(target=churn)
    writer.start()
    counts = {"views": 0, "busy": 0}
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            busy = spans(space)
            assert busy == sorted(busy)
            assert_disjoint(busy)
            counts["busy"] += len(busy)
            assert_disjoint(spans(space.free_areas()))
            assert_disjoint(spans(space.lazy_areas()))
            assert_disjoint(spans(a for a, _ in space.pooled_areas()))
            # busy and lazy at one instant: no overlap, no area in both.
            lines = space.vmallocinfo().splitlines()
            info = []
            for line in lines:
                lo, hi = line.split()[0].split("-")
                info.append((int(lo, 16), int(hi, 16)))
            assert_disjoint(info)
            st = space.stats()
            assert st["busy_areas"] == sum(st["node_areas"])
            assert st["free_bytes"] + st["busy_bytes"] <= space.end - space.start
            counts["views"] += 1
    finally:
        stop.set()
        writer.join()
    assert not errors, errors[0]
    space.check()
    assert counts["views"] > 10 and counts["busy"] > 0, counts


def test_areas_skips_an_area_allocated_across_its_position(impl):
    """After areas() yielded [b, b + 2P), that area is freed and [b + P, b + 3P)
    allocated across the walk's position b + 2P.  The next step's
    find_vmap_area_exceed_addr() finds it (it ends above b + 2P); it was not
    busy when the walk passed b + P, so the walk goes on past it instead of
    yielding an area that overlaps the last one."""
    b = 1 << 30
    space = impl(b, b + 64 * P, nr_nodes=4, zone_size=P)
    space.alloc_at(b, 2 * P)
    space.alloc_at(b + 4 * P, P)
    walk = space.areas()
    assert spans([next(walk)]) == [(b, b + 2 * P)]
    space.free(b)
    space.alloc_at(b + P, 2 * P)
    assert spans(walk) == [(b + 4 * P, b + 5 * P)]
    # A new walk sees it, and one from inside it starts with it.
    assert spans(space.areas()) == [(b + P, b + 3 * P), (b + 4 * P, b + 5 * P)]
    assert spans(space.areas(b + 2 * P)) == [(b + P, b + 3 * P), (b + 4 * P, b + 5 * P)]


def test_areas_walks_in_address_order_while_others_change_the_space():
    """areas() is a walk, not a snapshot: each step is exact at its moment and
    skips an area allocated across the walk's position since the step before,
    so it yields areas in strictly increasing address order, none overlapping."""
    space = VmapSpace(1 << 30, (1 << 30) + (1 << 24), nr_nodes=8, zone_size=P)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            _space.stress_native(space, 2, 5000, seed=3)

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            walked = spans(space.areas())
            assert_disjoint(walked)
            assert walked == sorted(walked)
    finally:
        stop.set()
        writer.join()

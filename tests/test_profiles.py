"""Kernel profiles: what each version does differently, in the core and the
reference; and predict(), alloc_at(), locate()."""

from __future__ import annotations

import pytest

from _util import P, free
from vmap_core import profiles
from vmap_core.reference import KERNEL_MAX_NODES, MAX_NODES, default_nr_nodes, possible_cpus

B = 0x100000


def test_resolve_maps_versions_to_profiles():
    assert [profiles.resolve(v).name for v in ("6.8", "6.9", "6.10", "6.15", "6.16", "6.18.44",
                                                "7.0", None)] == \
        ["6.8", "6.9", "6.9", "6.9", "6.16", "6.16", "6.16", profiles.NEWEST]
    assert profiles.lock_modes(profiles.resolve("6.8")) == ("global", "rwlock", "optimistic",
                                                            "split")
    assert "split" not in profiles.lock_modes()


def test_nr_nodes_follows_possible_cpus_clamped(impl):
    assert default_nr_nodes() == max(1, min(possible_cpus(), KERNEL_MAX_NODES))
    assert impl(B, B + 64 * P).nr_nodes == default_nr_nodes()
    # more than the kernel's 128 nodes is a model extension, up to 1024
    assert impl(B, B + 64 * P, nr_nodes=MAX_NODES).nr_nodes == MAX_NODES
    with pytest.raises(ValueError):
        impl(B, B + 64 * P, nr_nodes=MAX_NODES + 1)


def test_walk_direction(core):
    """find() of an address in the third zone of an area that starts in node 0:
    v6.16 walks 2 -> 1 -> 0, v6.9 walks 2 -> 3 -> 0."""
    for kernel, visited, skipped in (("6.16", "node1", "node3"), ("6.9", "node3", "node1")):
        s = core(0, 64 * P, nr_nodes=4, zone_size=P, kernel=kernel)
        a = s.alloc(3 * P)                        # zones 0, 1, 2: node 0 holds it
        s0 = s.stats()["lock_acquisitions"]
        s1 = s.stats()["lock_acquisitions"]       # what stats() itself takes
        assert s.find(a + 2 * P).start == a
        s2 = s.stats()["lock_acquisitions"]
        took = {k for k in s2 if s2[k] - s1[k] > s1[k] - s0[k]}
        assert {"node2", "node0", visited} <= took and skipped not in took, (kernel, took)


@pytest.mark.parametrize("kernel,kept", [("6.9", 0), ("6.16", 3)])
def test_decay_of_small_pools(impl, kernel, kept):
    """A non-full purge decays len >> 2 areas of each pool: none of three,
    except that v6.9's unsigned counter wraps and empties the pool."""
    s = impl(B, B + 256 * P, nr_nodes=2, zone_size=P, kernel=kernel, lazy_max_pages=1 << 20)
    areas = [s.alloc(2 * P, cpu=0) for _ in range(3)]
    for a in areas:
        s.free_lazy(a)
    assert s.purge() == 3
    assert len(s.pooled_areas()) == 3
    s.purge()                                     # nothing lazy: only the decay
    assert len(s.pooled_areas()) == kept
    s.check()
    # four areas: one decays in both versions
    for _ in range(4):
        s.free_lazy(s.alloc(3 * P, cpu=1))
    s.purge()
    s.purge()
    assert sum(1 for a, n in s.pooled_areas() if a.size == 3 * P) == 3


def test_v6_8_merges_lazy_areas(impl):
    """v6.8 keeps lazily freed areas in one purge tree, merged with their
    neighbours (merge_or_add_vmap_area()), and has no pools."""
    s68 = impl(B, B + 64 * P, kernel="6.8", lazy_max_pages=1 << 20)
    s16 = impl(B, B + 64 * P, nr_nodes=2, kernel="6.16", lazy_max_pages=1 << 20)
    for s in (s68, s16):
        areas = [s.alloc(2 * P) for _ in range(3)]
        for a in (areas[0], areas[2], areas[1]):
            s.free_lazy(a)
        s.check()
    assert [(a.start, a.end) for a in s68.lazy_areas()] == [(B, B + 6 * P)]
    assert len(s16.lazy_areas()) == 3
    assert s68.stats()["lazy_pages"] == s16.stats()["lazy_pages"] == 6
    assert s68.vmallocinfo().count("unpurged vm_area") == 1
    assert s68.purge() == 1 and s68.stats()["pooled_areas"] == 0
    assert free(s68) == [(B, B + 64 * P)]
    assert (s68.nr_nodes, s68.lock) == (1, "split")


def test_predict_changes_nothing(impl):
    s = impl(B, B + 64 * P, nr_nodes=2, zone_size=P, lazy_max_pages=1 << 20)
    a = s.alloc(2 * P, cpu=0)
    s.free_lazy(a)
    s.purge()                                      # a sits in node 0's pool
    shape = s._free_tree_shape()
    assert s.predict(2 * P, cpu=0) == (a, "pool")
    assert s.predict(2 * P, cpu=1) == (B + 2 * P, "free")
    assert s.predict(2 * P, 4 * P, cpu=0) == (a, "pool") if a % (4 * P) == 0 else True
    assert s.predict(128 * P) == (None, "ENOENT")
    assert s.predict(2 * P, vstart=B + 60 * P, vend=B + 61 * P) == (None, "ERANGE")
    assert s._free_tree_shape() == shape and len(s.pooled_areas()) == 1
    assert s.alloc(2 * P, cpu=0) == a             # and alloc() does what it said


def test_alloc_at_takes_a_chosen_range(impl):
    s = impl(B, B + 64 * P, nr_nodes=2, zone_size=P, lazy_max_pages=1 << 20)
    assert s.alloc_at(B + 10 * P, 3 * P, cpu=1, caller="x") == B + 10 * P
    assert free(s) == [(B, B + 10 * P), (B + 13 * P, B + 64 * P)]
    assert s.caller_of(B + 10 * P) == "x"
    with pytest.raises(ValueError):
        s.alloc_at(B + 11 * P, P)                  # busy
    with pytest.raises(ValueError):
        s.alloc_at(B + 9 * P, 2 * P)               # runs into a busy area
    with pytest.raises(ValueError):
        s.alloc_at(B + 63 * P, 2 * P)              # past the end
    with pytest.raises(ValueError):
        s.alloc_at(B + P + 1, P)                   # not page aligned
    s.free_lazy(B + 10 * P)
    s.purge()                                      # tagged with node 1: into its pool
    assert s.pooled_areas()[0][1] == 1
    assert s.alloc_at(B + 10 * P, 3 * P) == B + 10 * P        # out of the pool
    assert s.pooled_areas() == []
    s.check()


def test_locate(impl):
    s = impl(B, B + 64 * P, nr_nodes=2, zone_size=P, lazy_max_pages=1 << 20)
    a, b, c = (s.alloc(2 * P, cpu=0) for _ in range(3))
    s.free_lazy(b)
    s.free_lazy(c)
    s.purge()
    s.free_lazy(s.alloc(P, vstart=B + 30 * P))      # lazy, not tagged
    kinds = {k: s.locate(addr)[0] for k, addr in
             (("busy", a + P), ("pooled", c), ("free", B + 20 * P), ("lazy", B + 30 * P))}
    assert kinds == {"busy": "busy", "pooled": "pooled", "free": "free", "lazy": "lazy"}
    state, area, node = s.locate(c + P)
    assert (area.start, area.end, node) == (c, c + 2 * P, 0)
    assert s.locate(B - P) == (None, None, None)


def test_auto_purge_off_leaves_purging_to_the_caller(impl):
    s = impl(B, B + 8 * P, nr_nodes=2, zone_size=P, lazy_max_pages=1, auto_purge=False)
    a = s.alloc(4 * P, cpu=0)
    b = s.alloc(4 * P, cpu=0)
    s.free_lazy(a)
    s.free_lazy(b)                                  # past lazy_max_pages: no purge
    assert s.stats()["purges"] == 0 and len(s.lazy_areas()) == 2
    with pytest.raises(MemoryError):                # nor on the overflow path
        s.alloc(8 * P, cpu=0)
    assert s.stats()["purges"] == 0
    assert s.purge(full=True) == 2 and s.alloc(8 * P, cpu=1) == B
    s.check()

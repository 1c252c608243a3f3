"""The order in which a lookup walks the nodes (find_vmap_area()).

Every node is visited in the end, so results alone cannot tell the direction;
the node locks can: in "node" mode a lookup takes the lock of each node it
visits, and stats() counts acquisitions per lock.  An area spanning zones
sits in the node of its start, below the zone of an address in its upper
part: v6.16 walks downwards (i - 1) and meets it at once, v6.9 walks upwards
(i + 1) through every other node first.
"""

from __future__ import annotations

from array import array

import pytest

from _util import P

ZONE = 4 * P
NODES = 4


def _visits(s, op):
    """Per node, how many times op took the node's lock (a snapshot takes
    each once; the difference of two empty snapshots is subtracted)."""
    def acq():
        d = s.stats()["lock_acquisitions"]
        return [d[f"node{k}"] for k in range(NODES)]
    a0 = acq()
    a1 = acq()
    op()
    a2 = acq()
    return [(a2[k] - a1[k]) - (a1[k] - a0[k]) for k in range(NODES)]


# kernel -> the nodes a lookup from zone 1 visits to reach an area of node 0
WALKS = {"6.16": [1, 1, 0, 0], "6.9": [1, 1, 1, 1]}


@pytest.mark.parametrize("kernel", sorted(WALKS))
def test_lookup_walk_direction(core, kernel):
    s = core(0, 64 * P, nr_nodes=NODES, zone_size=ZONE, lock="node", kernel=kernel)
    s.alloc_at(2 * P, 4 * P)                # zones 0 and 1, in node 0
    inner = ZONE + P                        # zone 1, node 1
    assert s.find(inner).start == 2 * P
    assert _visits(s, lambda: s.find(inner)) == WALKS[kernel]
    assert _visits(s, lambda: s.find_many(array("Q", [inner]))) == WALKS[kernel]
    with pytest.raises(KeyError):
        s.free(inner)                       # not a start: the writer's walk
    assert _visits(s, lambda: pytest.raises(KeyError, s.free, inner)) == WALKS[kernel]
    # A miss visits every node once, whichever way.
    assert _visits(s, lambda: s.find(40 * P)) == [1, 1, 1, 1]
    # An address in its own node's area: one node.
    assert _visits(s, lambda: s.find(2 * P)) == [1, 0, 0, 0]
    s.check()


@pytest.mark.parametrize("kernel", sorted(WALKS))
def test_walk_wraps_around(core, kernel):
    """From zone 0, the area of node 3 (spanning zones 3 and 4): downwards
    the walk wraps to node 3 at once; upwards it goes through 1 and 2."""
    s = core(0, 64 * P, nr_nodes=NODES, zone_size=ZONE, lock="node", kernel=kernel)
    s.alloc_at(3 * ZONE + 2 * P, 4 * P)      # zones 3 and 4: node 3
    inner = 4 * ZONE + P                     # zone 4: node 0
    assert s.find(inner).start == 3 * ZONE + 2 * P
    want = {"6.16": [1, 0, 0, 1], "6.9": [1, 1, 1, 1]}[kernel]
    assert _visits(s, lambda: s.find(inner)) == want


@pytest.mark.parametrize("lock, takes", [("global", {"global": 1}), ("node", {"node1": 1, "node0": 1}),
                                         ("rwlock", {}), ("optimistic", {})])
def test_lookup_takes_the_locks_of_its_mode(core, lock, takes):
    """A lookup takes the one lock in "global" mode, each visited node's lock
    in "node" mode, and no spinlock in "rwlock" and "optimistic" modes (no
    writer about)."""
    s = core(0, 64 * P, nr_nodes=NODES, zone_size=ZONE, lock=lock)
    s.alloc_at(2 * P, 4 * P)
    inner = ZONE + P

    def acq():
        return s.stats()["lock_acquisitions"]
    a0, a1 = acq(), acq()
    assert s.find(inner).start == 2 * P
    a2 = acq()
    delta = {k: (a2[k] - a1[k]) - (a1[k] - a0[k]) for k in a0}
    assert {k: v for k, v in delta.items() if v} == takes


@pytest.mark.parametrize("kernel", sorted(WALKS))
def test_find_many_takes_a_node_lock_once_per_group(core, kernel):
    """find_many() in "node" mode descends a group of addresses of one node
    under one acquisition of that node's lock (at most FM_WIDTH descents):
    ten addresses inside node 0's own area cost node 0 one acquisition and
    no other node any."""
    s = core(0, 64 * P, nr_nodes=NODES, zone_size=ZONE, lock="node", kernel=kernel)
    s.alloc_at(0, 4 * P)                    # zone 0: node 0
    addrs = array("Q", [k * 100 for k in range(10)])
    assert list(s.find_many(addrs)) == [0] * 10
    assert _visits(s, lambda: s.find_many(addrs)) == [1, 0, 0, 0]
    s.check()

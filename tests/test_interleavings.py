"""Writers and readers in one forced interleaving, the same every run.

A test-only pause point (``_testhooks.pause_writer``) stops a writer in the
middle of its change to a node's busy tree: alloc() after inserting its area
("publish"), free() after unlinking it ("unlink"), in both cases before the
change is ended and the node unlocked.  The test then looks at the node's
locks and runs a reader against the half-made change.  Whatever the lock mode,
the writer must hold the node's lock (the one lock in "global"), have shut the
lock-free readers out (the rwlock's writer bit, an odd seqcount), and a reader
must wait for it: an optimistic reader retries, then falls back to the lock.
A lock taken late or released early, a seqcount write side skipped, or a
reader that does not validate its read, fails here at once, not by luck.
"""

from __future__ import annotations

import threading
import time
from array import array

import pytest

from _util import P

from vmap_core._testhooks import lock_state, pause_writer, release_writer, wait_writer_paused

OPTIMISTIC_TRIES = 4        # node_find() in _nodes.pxi


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.mark.parametrize("site", ["publish", "unlink"])
def test_reader_waits_for_a_half_made_change(core, lock, site):
    s = core(0, 64 * P, nr_nodes=2, zone_size=16 * P, lock=lock)
    keep = s.alloc(P)                   # all three in node 0
    victim = s.alloc(P)
    assert s.find(keep).start == keep
    quiet = lock_state(s, 0)
    # A read with no writer about never retries, and nothing is held.
    assert quiet["read_retries"] == 0 and quiet["read_fallbacks"] == 0
    assert not quiet["node_locked"] and not quiet["global_locked"] and not quiet["rw_writer"]
    assert quiet["seq"] % 2 == 0

    out: list = []
    found: list = []
    if site == "publish":
        writer = threading.Thread(target=lambda: out.append(s.alloc(P)))
    else:
        writer = threading.Thread(target=lambda: out.append(s.free(victim)))
    reader = threading.Thread(target=lambda: found.append(s.find(keep)))
    pause_writer(site)
    writer.start()
    try:
        wait_writer_paused()
        st = lock_state(s, 0)
        if lock == "global":
            assert st["global_locked"], "the writer changes the tree without the one lock"
        else:
            assert st["node_locked"], "the writer changes a node's tree without its lock"
            assert not st["free_locked"], "the free lock is held across the node's change"
        assert st["rw_writer"] == (lock == "rwlock"), "rwlock readers are not shut out"
        if lock == "optimistic":
            assert st["seq"] % 2 == 1, "the seqcount is not odd during the change"
        else:
            assert st["seq"] == quiet["seq"]

        reader.start()
        if lock == "optimistic":
            assert _wait_for(lambda: lock_state(s, 0)["read_fallbacks"] or not reader.is_alive())
            st = lock_state(s, 0)
            assert st["read_retries"] == OPTIMISTIC_TRIES and st["read_fallbacks"] == 1, \
                "an optimistic reader took a result from a tree under change"
        elif lock == "rwlock":
            assert _wait_for(lambda: lock_state(s, 0)["read_waits"] or not reader.is_alive())
            assert lock_state(s, 0)["read_waits"] >= 1
        else:
            reader.join(0.05)
        assert reader.is_alive(), "a reader finished while the writer held the node"
    finally:
        release_writer()
        writer.join()
        if reader.is_alive() or reader.ident is not None:
            reader.join()
    assert found == [s.find(keep)] and found[0].start == keep
    after = lock_state(s, 0)
    assert not after["node_locked"] and not after["global_locked"] and not after["rw_writer"]
    assert after["seq"] % 2 == 0
    if site == "publish":
        assert s.find(out[0]).start == out[0]
    else:
        assert out[0].start == victim and s.find(victim) is None
    s.check()


def test_pause_point_times_out_when_no_writer_comes(core):
    s = core(0, 16 * P, nr_nodes=1)
    pause_writer("unlink")
    with pytest.raises(TimeoutError):
        wait_writer_paused(timeout=0.05)
    # Disarmed: the next free does not stop.
    a = s.alloc(P)
    s.free(a)
    assert s.find(a) is None


def test_find_many_looks_up_other_nodes_while_one_is_held(core):
    """find_many() leaves a group whose node another thread holds for a
    second pass: the other nodes' lookups are done while it waits, and the
    answers are still find()'s."""
    s = core(0, 64 * P, nr_nodes=2, zone_size=16 * P, lock="node")
    keep0, victim = s.alloc(P), s.alloc(P)          # node 0
    far = s.alloc(P, vstart=16 * P)                 # node 1
    assert (s.node_of(keep0), s.node_of(victim), s.node_of(far)) == (0, 0, 1)
    out: list = []
    writer = threading.Thread(target=lambda: s.free(victim))
    # node 0 first: without the second pass, the lookup of far waits behind it
    reader = threading.Thread(target=lambda: out.append(s.find_many(array("Q", [keep0 + 5, far + 7]))))
    pause_writer("unlink")
    writer.start()
    try:
        wait_writer_paused()
        before = lock_state(s, 1)["node_acquisitions"]
        reader.start()
        assert _wait_for(lambda: lock_state(s, 1)["node_acquisitions"] > before), \
            "find_many() waited for node 0 before looking up node 1"
        assert reader.is_alive() and lock_state(s, 0)["node_locked"]
    finally:
        release_writer()
        writer.join()
        if reader.ident is not None:
            reader.join()
    assert list(out[0]) == [keep0, far] == [s.find(keep0 + 5).start, s.find(far + 7).start]
    s.check()


@pytest.mark.parametrize("mode", ["node", "global"])
def test_wait_time_counts_the_time_a_reader_waited(core, mode):
    """The statistics' wait clock (the TSC where it is invariant, converted
    at read time) agrees with the wall clock: a find() held up for about
    0.3 s behind a paused writer counts about that much, and never more than
    it could have waited."""
    from vmap_core._space import lock_totals
    s = core(0, 64 * P, nr_nodes=2, zone_size=16 * P, lock=mode)
    keep, victim = s.alloc(P), s.alloc(P)           # node 0
    kind = "busy" if mode == "node" else "global"
    before = lock_totals(s)[kind]
    reader = threading.Thread(target=lambda: s.find(keep))
    writer = threading.Thread(target=lambda: s.free(victim))
    pause_writer("unlink")
    writer.start()
    try:
        wait_writer_paused()
        t_start = time.monotonic()
        reader.start()
        time.sleep(0.1)                 # the reader is at the lock by now
        t_held = time.monotonic()
        time.sleep(0.3)
        assert reader.is_alive(), "find() did not wait for the held lock"
        t_release = time.monotonic()
    finally:
        release_writer()
        writer.join()
        if reader.ident is not None:
            reader.join()
    t_end = time.monotonic()
    after = lock_totals(s)[kind]
    waited = (after["wait_ns"] - before["wait_ns"]) / 1e9
    assert after["contended"] - before["contended"] >= 1    # ("global": the writer may wait too)
    assert waited >= 0.9 * (t_release - t_held), waited
    assert waited <= (t_end - t_start) * 1.02 + 0.002, waited

"""check() verifies every invariant, and is shown able to fail.

The core's test-only hook ``_testhooks.debug_corrupt(space, kind)`` breaks one invariant; check()
must then raise AssertionError.  The reference's checker is shown to fail by
corrupting its plain-Python state directly.
"""

from __future__ import annotations

import pytest

from _util import P, TOP, busy, free, snapshot

from vmap_core._testhooks import debug_corrupt

# kind -> a word the AssertionError must contain ("naming the broken one")
NAMES = {
    "color": r"colou?r",
    "subtree_max": r"subtree",
    "order": r"order",
    "coalesce": r"coalesc",
    "node_placement": r"node",
    "tiling": r"til(ing|e)",
    "list": r"list",
}
CORRUPTIONS = list(NAMES)


def rich_space(cls, lock, start=0, pages=256):
    """Many busy areas over 4 nodes (some spanning zones) and many free blocks,
    so both the free tree and every busy tree have depth and rotations."""
    s = cls(start, start + pages * P, nr_nodes=4, zone_size=P, lock=lock)
    addrs = [s.alloc(((i * 7) % 5 + 1) * P) for i in range(60)]
    for a in addrs[3::4] + addrs[::7]:
        if s.find(a) is not None and s.find(a).start == a:
            s.free(a)
    assert len(s) > 30 and len(s.free_areas()) > 10
    s.check()
    return s


def test_check_passes_on_healthy_spaces(impl, lock):
    for start in (0, TOP - 256 * P):
        s = rich_space(impl, lock, start=start)
        assert s.check() is None
        before = snapshot(s)
        s.check()
        assert snapshot(s) == before          # check() changes nothing


def test_check_on_empty_and_full(impl, lock):
    s = impl(0, 8 * P, nr_nodes=3, zone_size=P, lock=lock)
    s.check()
    s.alloc(8 * P)
    s.check()
    s.free(0)
    s.check()


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_check_catches_core_corruption(core, lock, kind):
    s = rich_space(core, lock)
    debug_corrupt(s, kind)
    with pytest.raises(AssertionError, match=f"(?i){NAMES[kind]}"):
        s.check()


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_check_catches_core_corruption_at_the_top(core, kind):
    s = rich_space(core, "node", start=TOP - 256 * P)
    debug_corrupt(s, kind)
    with pytest.raises(AssertionError):
        s.check()


def test_debug_corrupt_rejects_unknown_kind(core):
    s = rich_space(core, "node")
    before = snapshot(s)
    with pytest.raises(ValueError):
        debug_corrupt(s, "no-such-invariant")
    assert snapshot(s) == before
    s.check()


def test_debug_corrupt_covers_every_kind(core):
    """The hook knows all the kinds this suite relies on (none is a no-op)."""
    for kind in CORRUPTIONS:
        s = rich_space(core, "node")
        s.check()
        debug_corrupt(s, kind)
        with pytest.raises(AssertionError):
            s.check()


# -- the reference's checker can fail too ---------------------------------------

def ref_space():
    from _util import ReferenceSpace
    s = ReferenceSpace(0, 32 * P, nr_nodes=2)
    for _ in range(6):
        s.alloc(2 * P)
    s.free(2 * P)
    s.free(6 * P)
    s.check()
    assert free(s) == [(2 * P, 4 * P), (6 * P, 8 * P), (12 * P, 32 * P)]
    assert len(busy(s)) == 4
    return s


def _blocks(s):
    return list(s._ft)                      # the free tree's nodes, in address order


def _overlap(s):
    _blocks(s)[0].va_end += P               # free block runs into a busy area


def _gap(s):
    _blocks(s)[0].va_start += P             # a page neither free nor busy


def _touching(s):
    from vmap_core.freetree import Node
    first = _blocks(s)[0]
    first.va_end -= P                       # two free blocks where there was one
    s._ft.insert(Node(first.va_end, first.va_end + P))


def _past_end(s):
    _blocks(s)[-1].va_end += P


def _busy_order(s):
    s._busy_starts.reverse()


def _empty_block(s):
    from vmap_core.freetree import Node
    s._ft.insert(Node(P // 2, P // 2))


def _red_root(s):
    s._ft.root.rb_node.color = 0


def _stale_subtree_max(s):
    s._ft.root.rb_node.subtree_max_size += P


def _list_order(s):
    b = _blocks(s)
    b[0].next, b[1].next = b[1].next, b[0].next


@pytest.mark.parametrize("corrupt", [_overlap, _gap, _touching, _past_end, _busy_order,
                                     _empty_block, _red_root, _stale_subtree_max, _list_order])
def test_reference_check_catches_corruption(corrupt):
    s = ref_space()
    corrupt(s)
    with pytest.raises(AssertionError):
        s.check()

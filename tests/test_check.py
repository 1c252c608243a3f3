"""check() verifies every invariant, and is shown able to fail.

The core's test-only hook ``_testhooks.debug_corrupt(space, kind)`` breaks one invariant; check()
must then raise AssertionError.  The reference's checker is shown to fail by
corrupting its plain-Python state directly.
"""

from __future__ import annotations

import re
from pathlib import Path

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

# Every kind of _testhooks.debug_corrupt -> the exact message check() must give
# (space_verify() in _check.pxi), on a space with free, busy, lazy and pooled
# areas; "lazy_coalesce" needs v6.8's merging purge tree.
MESSAGES = {
    "color": "rb colours: the free tree's root is red",
    "red_red": "rb colours: a red node has a red child",
    "black_height": "rb colours: black heights differ",
    "parent": "rb parent link: a child does not point back to its parent",
    "subtree_max": "subtree_max_size: a node's value is not the max of its subtree",
    "order": "ordering: a block is out of address order in its tree",
    "free_count": "counts: the free tree does not hold nr_free blocks",
    "list": "list: a next link is not the in-order successor",
    "list_prev": "list: a prev link is wrong",
    "coalesce": "coalescing: two free blocks touch",
    "busy_color": "rb colours: a node's busy-tree root is red",
    "busy_count": "counts: a node's busy tree does not hold nr_areas areas",
    "node_placement": "node placement: a busy area is not in the node of its start",
    "lazy_color": "rb colours: a node's lazy-tree root is red",
    "lazy_count": "counts: a node's lazy tree does not hold nr_lazy areas",
    "lazy_placement": "lazy placement: a lazy area is not in the node of its tag",
    "lazy_coalesce": "coalescing: two lazy areas touch in v6.8's merging purge tree",
    "purge_list": "purge list: longer than nr_purge",
    "purge_count": "purge list: nr_purge differs from its length",
    "lazy_pages": "lazy pages: vmap_lazy_nr differs from the pages in the lazy trees",
    "pool_prev": "pools: a prev link is wrong",
    "pool_class": "pools: an area is not in its size class",
    "pool_len_short": "pools: a list is longer than its len",
    "pool_len_long": "pools: tail or len is wrong",
    "pooled_count": "pools: nr_pooled differs from the pools' lengths",
    "slab": "slab: records in use differ from free blocks + busy areas",
    "slab_chunk": "slab: a chunk's free records disagree with its counts",
    "tiling_start": "tiling: free and busy blocks do not begin at start",
    "tiling": "tiling: a gap or an overlap between blocks",
    "tiling_end": "tiling: free and busy blocks do not reach end",
    "fit_holes": "fit cache: too many holes",
    "fit_hole_order": "fit cache: holes out of order, or not below the floor",
    "fit_floor": "fit cache: a block that fits lies below the floor, in no hole",
}
# Messages no corruption can reach, because an earlier check always fires
# first: list_verify() runs after rb_count() matched the count, and a list
# whose every next link is the in-order successor (checked per node) has
# exactly the tree's nodes and ends at its last.
UNREACHABLE = {
    "list: longer than the tree (a cycle or a stray record)",
    "list: does not end at the tree's last node",
    "list: does not hold every node of the tree",
}


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


def every_invariant_space(cls, lock, kernel=None):
    """Free blocks (at start and at the end too), busy areas in every node,
    lazy areas and, from v6.9, pooled ones: something under every check."""
    nodes = {"nr_nodes": 1} if kernel == "6.8" else {"nr_nodes": 4, "zone_size": 16 * P}
    s = cls(0, 1024 * P, lock=lock, kernel=kernel, lazy_max_pages=1 << 20,
            auto_purge=False, **nodes)
    first = s.alloc(2 * P)
    addrs = [s.alloc(((i * 7) % 5 + 1) * P, cpu=i % 4) for i in range(80)]
    for a in addrs[3::4]:
        s.free(a)
    for a in addrs[1::4][:10]:
        s.free_lazy(a)
    s.purge()                       # v6.9+: into the pools of their nodes
    for a in addrs[2::4][:10]:
        s.free_lazy(a)              # stay lazy
    s.free(first)
    s.check()
    return s


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_check_names_each_broken_invariant(core, lock, kind):
    kernel = "6.8" if kind == "lazy_coalesce" else None
    if kernel == "6.8" and lock == "node":
        lock = "split"
    if kernel is None and lock == "split":
        pytest.skip("'split' is v6.8's lock design")
    s = every_invariant_space(core, lock, kernel)
    debug_corrupt(s, kind)
    with pytest.raises(AssertionError) as e:
        s.check()
    assert str(e.value) == MESSAGES[kind]


def _verify_messages():
    """Every message check() can give: the string literals returned by the
    verifiers of _check.pxi (the part before the corruption hook)."""
    src = (Path(__file__).resolve().parents[1] / "src/vmap_core/_check.pxi").read_text()
    verifiers = src[:src.index("cdef va_t* node_with_areas")]
    return set(re.findall(r'return "([^"]+)"', verifiers))


def test_corruption_kinds_cover_every_invariant():
    messages = _verify_messages()
    assert len(messages) > 25
    assert set(MESSAGES.values()) <= messages, set(MESSAGES.values()) - messages
    assert UNREACHABLE <= messages
    assert messages - UNREACHABLE == set(MESSAGES.values()), \
        sorted(messages - UNREACHABLE - set(MESSAGES.values()))


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

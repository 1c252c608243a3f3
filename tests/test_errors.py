"""Bad input: the right exception for every method, and the structure untouched.

TypeError for non-integers (anything with __index__ is an integer: bool, numpy
integers), ValueError for bad values, KeyError for freeing what is not the
start of a busy area, VmapExhausted when nothing fits.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from _util import P, TOP, Index, VmapExhausted, busy, free, snapshot

B = 0x400000
N = 32
E = B + N * P


def pg(i):
    return B + i * P


def populated(impl, lock="node", start=B, end=E):
    """A space with busy areas in several nodes, some spanning zones, and holes."""
    s = impl(start, end, nr_nodes=3, zone_size=P, lock=lock)
    addrs = [s.alloc(sz * P) for sz in (1, 3, 2, 1, 4, 2, 1)]
    s.free(addrs[1])
    s.free(addrs[4])
    s.check()
    return s


# -- constructor ------------------------------------------------------------

CTOR_TYPE_ERRORS = [
    dict(start=float(B)), dict(start=str(B)), dict(start=None), dict(start=Decimal(B)),
    dict(end=float(E)), dict(end=None), dict(end=[E]),
    dict(page_size=4096.0), dict(page_size="4096"), dict(page_size=Fraction(4096)),
    dict(nr_nodes=2.0), dict(nr_nodes="2"),
    dict(zone_size=4096.0), dict(zone_size="4096"),
]

CTOR_VALUE_ERRORS = [
    dict(start=E, end=B),                 # reversed
    dict(start=B, end=B),                 # empty
    dict(start=B + 1),                    # unaligned start
    dict(end=E + 1),                      # unaligned end
    dict(start=B + P // 2, end=E + P // 2),
    dict(start=-P),                       # negative
    dict(start=-P, end=-P + 16 * P),
    dict(end=TOP + P),                    # past 2**64
    dict(start=TOP, end=TOP + P),
    dict(page_size=0), dict(page_size=-4096), dict(page_size=3), dict(page_size=6144),
    dict(page_size=4097),
    dict(nr_nodes=0), dict(nr_nodes=-1),
    dict(zone_size=0), dict(zone_size=-P), dict(zone_size=P // 2), dict(zone_size=P + 1),
    dict(lock="bogus"), dict(lock=""), dict(lock="NODE"),
]


def ctor_args(over):
    kw = dict(start=B, end=E, page_size=P, nr_nodes=2, zone_size=None, lock="node")
    kw.update(over)
    start, end = kw.pop("start"), kw.pop("end")
    return (start, end), kw


@pytest.mark.parametrize("over", CTOR_TYPE_ERRORS, ids=repr)
def test_constructor_type_errors(impl, over):
    args, kw = ctor_args(over)
    with pytest.raises(TypeError):
        impl(*args, **kw)


@pytest.mark.parametrize("over", CTOR_VALUE_ERRORS, ids=repr)
def test_constructor_value_errors(impl, over):
    args, kw = ctor_args(over)
    with pytest.raises(ValueError):
        impl(*args, **kw)


def test_constructor_lock_not_a_string(impl):
    with pytest.raises(TypeError):
        impl(B, E, lock=1)
    assert impl(B, E, lock=None).lock == "node"          # the newest profile's design


@pytest.mark.parametrize("kernel,lock,nr_nodes,error", [
    ("6.8", "node", None, ValueError),        # v6.8 has no per-node locks
    ("6.8", None, 4, ValueError),             # nor nodes
    ("6.9", "split", None, ValueError),       # "split" is v6.8's design
    ("5.15", None, None, ValueError),         # before the first profile
    ("six", None, None, ValueError),
    (6.9, None, None, TypeError),
    ("6.16", "mutex", None, ValueError),
])
def test_constructor_profile_combinations_refused(impl, kernel, lock, nr_nodes, error):
    with pytest.raises(error):
        impl(B, E, kernel=kernel, lock=lock, nr_nodes=nr_nodes)


@pytest.mark.parametrize("kernel,profile,lock,nodes", [
    (None, "6.16", "node", 2), ("6.8", "6.8", "split", 1), ("6.9", "6.9", "node", 2),
    ("6.12", "6.9", "node", 2), ("6.15.3", "6.9", "node", 2), ("6.18.44", "6.16", "node", 2),
    ("v7.0", "6.16", "node", 2),
])
def test_constructor_profiles(impl, kernel, profile, lock, nodes):
    s = impl(B, E, kernel=kernel, nr_nodes=None if profile == "6.8" else 2)
    assert (s.kernel, s.lock, s.nr_nodes, s.search) == (profile, lock, nodes, "kernel")
    for mode in ("global", "rwlock", "optimistic"):
        assert impl(B, E, kernel=kernel, lock=mode, nr_nodes=1).lock == mode
    with pytest.raises(ValueError):
        impl(B, E, search="fast")
    with pytest.raises(TypeError):
        impl(B, E, auto_purge=1)


def test_constructor_keyword_only(impl):
    with pytest.raises(TypeError):
        impl(B, E, P)                     # page_size is keyword-only


@pytest.mark.parametrize("lock_mode", ["node", "global", "rwlock", "optimistic"])
def test_constructor_accepts_index_types_and_edges(impl, lock_mode):
    s = impl(Index(0), TOP, page_size=Index(P), nr_nodes=Index(3), zone_size=Index(2 * P),
             lock=lock_mode)
    assert s.alloc(P) == 0 and s.stats()["nr_nodes"] == 3 and s.stats()["lock"] == lock_mode
    s = impl(False, P, nr_nodes=True)                     # bools are ints
    assert s.stats()["nr_nodes"] == 1 and s.alloc(P) == 0


def test_constructor_accepts_numpy_integers(impl):
    np = pytest.importorskip("numpy")
    s = impl(np.uint64(B), np.int64(E), page_size=np.int32(P), nr_nodes=np.int8(2),
             zone_size=np.uint16(P))
    assert s.alloc(P) == B and s.stats()["nr_nodes"] == 2


# -- alloc --------------------------------------------------------------------

ALLOC_TYPE_ERRORS = [
    dict(size=4096.0), dict(size="4096"), dict(size=None), dict(size=Fraction(4096)),
    dict(size=Decimal(4096)), dict(size=[4096]), dict(size=b"\x10"),
    dict(align=4096.0), dict(align="4096"), dict(align=Fraction(8192)),
    dict(vstart=float(B)), dict(vstart=str(B)), dict(vstart=Decimal(B)),
    dict(vend=float(E)), dict(vend=[E]),
]

ALLOC_VALUE_ERRORS = [
    # size: not a positive multiple of page_size
    dict(size=0), dict(size=-P), dict(size=-1), dict(size=1), dict(size=P // 2),
    dict(size=P - 1), dict(size=P + 1), dict(size=3 * P + 512), dict(size=True),
    dict(size=TOP + P), dict(size=1 << 65), dict(size=-TOP),
    # align: not a power of two (or not representable)
    dict(align=0), dict(align=-P), dict(align=-1), dict(align=3), dict(align=3 * P),
    dict(align=6 * P), dict(align=P + 1), dict(align=(1 << 63) + (1 << 62)),
    dict(align=TOP), dict(align=1 << 70),
    # vstart / vend outside [start, end], empty or unaligned
    dict(vstart=B - P), dict(vstart=0), dict(vstart=-P), dict(vstart=-1), dict(vstart=E),
    dict(vstart=E + P), dict(vstart=B + 1), dict(vstart=pg(3) + P // 2),
    dict(vstart=TOP), dict(vstart=TOP + P),
    dict(vend=B), dict(vend=B - P), dict(vend=E + P), dict(vend=E - 1), dict(vend=pg(5) + 8),
    dict(vend=-P), dict(vend=TOP), dict(vend=TOP + P),
    dict(vstart=pg(4), vend=pg(4)), dict(vstart=pg(6), vend=pg(4)),
    dict(vstart=E, vend=E),
]


def alloc_call(s, over):
    kw = dict(size=P, align=None, vstart=None, vend=None)
    kw.update(over)
    return s.alloc(kw["size"], align=kw["align"], vstart=kw["vstart"], vend=kw["vend"])


@pytest.mark.parametrize("over", ALLOC_TYPE_ERRORS, ids=repr)
def test_alloc_type_errors(impl, lock, over):
    s = populated(impl, lock)
    before = snapshot(s)
    with pytest.raises(TypeError):
        alloc_call(s, over)
    assert snapshot(s) == before
    s.check()


@pytest.mark.parametrize("over", ALLOC_VALUE_ERRORS, ids=repr)
def test_alloc_value_errors(impl, lock, over):
    s = populated(impl, lock)
    before = snapshot(s)
    with pytest.raises(ValueError):
        alloc_call(s, over)
    assert snapshot(s) == before
    s.check()


def test_alloc_value_errors_at_the_top(impl):
    s = populated(impl, start=TOP - N * P, end=TOP)
    before = snapshot(s)
    for over in (dict(vend=TOP + P), dict(vstart=TOP), dict(vstart=TOP - N * P - P),
                 dict(vend=TOP - 1), dict(size=TOP + P), dict(align=TOP)):
        with pytest.raises(ValueError):
            alloc_call(s, over)
        assert snapshot(s) == before, over
    # vend == end == 2**64 is a valid window end
    assert alloc_call(s, dict(vstart=TOP - P, vend=TOP)) == TOP - P


def test_alloc_not_a_value_error_when_just_too_big(impl, lock):
    s = populated(impl, lock)
    before = snapshot(s)
    for over in (dict(size=(N + 1) * P), dict(size=1 << 63), dict(size=TOP),
                 dict(size=2 * P, vstart=pg(30), vend=pg(31)),
                 dict(align=1 << 63)):
        with pytest.raises(VmapExhausted):
            alloc_call(s, over)
        assert snapshot(s) == before, over


def test_alloc_accepts_index_like(impl):
    s = populated(impl)
    holes = free(s)
    a = s.alloc(Index(P), align=Index(P), vstart=Index(B), vend=Index(E))
    assert a == holes[0][0]
    b = s.alloc(P, align=True)                      # align = 1, a power of two
    assert b == a + P


def test_alloc_accepts_numpy_integers(impl):
    np = pytest.importorskip("numpy")
    s = impl(B, E, nr_nodes=2)
    assert s.alloc(np.int64(P), align=np.uint64(2 * P), vstart=np.uint64(pg(1)),
                   vend=np.int64(E)) == pg(2)
    assert s.alloc(np.int32(P), np.int64(P)) == B
    addr = s.alloc(np.uint64(P))
    assert type(addr) is int and addr == pg(1)


# -- free ---------------------------------------------------------------------

FREE_TYPE_ERRORS = [float(B), str(B), None, Decimal(B), Fraction(B), [B], b"x"]
ADDR_VALUE_ERRORS = [-1, -P, -B, TOP, TOP + P, 1 << 100]


@pytest.mark.parametrize("bad", FREE_TYPE_ERRORS, ids=repr)
def test_free_type_errors(impl, lock, bad):
    s = populated(impl, lock)
    before = snapshot(s)
    with pytest.raises(TypeError):
        s.free(bad)
    assert snapshot(s) == before


@pytest.mark.parametrize("bad", ADDR_VALUE_ERRORS, ids=repr)
def test_free_value_errors(impl, lock, bad):
    s = populated(impl, lock)
    before = snapshot(s)
    with pytest.raises(ValueError):
        s.free(bad)
    assert snapshot(s) == before


def test_free_key_errors(impl, lock):
    s = populated(impl, lock)
    areas = busy(s)
    holes = free(s)
    before = snapshot(s)
    bad = [a + 1 for a, _ in areas] + [e - P for a, e in areas if e - a > P] + \
          [e - 1 for _, e in areas] + [h for h, _ in holes] + [0, 1, B - P, E, TOP - 1]
    for addr in bad:
        with pytest.raises(KeyError):
            s.free(addr)
        assert snapshot(s) == before, hex(addr)
    s.free(areas[0][0])
    after = snapshot(s)
    with pytest.raises(KeyError):
        s.free(areas[0][0])                         # double free
    assert snapshot(s) == after


def test_free_accepts_index_like_and_bool(impl):
    s = impl(0, 16 * P, nr_nodes=2)
    s.alloc(P)
    s.alloc(P)
    assert (s.free(Index(P)).start) == P
    assert s.find(True).start == 0                  # True is 1: inside [0, P)
    assert s.free(False).end == P                   # False is 0: the start of [0, P)
    assert len(s) == 0


def test_free_accepts_numpy_integers(impl):
    np = pytest.importorskip("numpy")
    s = impl(B, E, nr_nodes=2)
    s.alloc(P)
    assert s.find(np.uint64(B + 5)).start == B
    assert s.free(np.int64(B)).start == B


# -- find ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", FREE_TYPE_ERRORS, ids=repr)
def test_find_type_errors(impl, bad):
    s = populated(impl)
    before = snapshot(s)
    with pytest.raises(TypeError):
        s.find(bad)
    assert snapshot(s) == before


@pytest.mark.parametrize("bad", ADDR_VALUE_ERRORS, ids=repr)
def test_find_value_errors(impl, bad):
    s = populated(impl)
    before = snapshot(s)
    with pytest.raises(ValueError):
        s.find(bad)
    assert snapshot(s) == before


def test_errors_do_not_disturb_later_operations(impl, lock):
    """After a burst of every kind of error the space still behaves exactly as a fresh twin."""
    s = populated(impl, lock)
    twin = populated(impl, lock)
    for over in ALLOC_TYPE_ERRORS + ALLOC_VALUE_ERRORS:
        with pytest.raises((TypeError, ValueError)):
            alloc_call(s, over)
    for bad in FREE_TYPE_ERRORS + ADDR_VALUE_ERRORS + [B + 1]:
        with pytest.raises((TypeError, ValueError, KeyError)):
            s.free(bad)
    with pytest.raises(VmapExhausted):
        s.alloc(TOP)
    for space in (s, twin):
        space.alloc(2 * P)
        space.alloc(P, align=8 * P)
        space.free(B)
    assert snapshot(s) == snapshot(twin)
    s.check()

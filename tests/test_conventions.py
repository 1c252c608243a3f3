"""Python conventions, for both implementations: `in`, ordering, pickle and copy,
weak references, signatures; and what is not public."""

from __future__ import annotations

import copy
import gc
import inspect
import io
import pickle
import random
import re
import subprocess
import sys
import weakref

import pytest
from hypothesis import given, strategies as st

import _util
from _util import P, TOP, RefArea, ReferenceSpace, require_core
from vmap_core import OnPurgeError
from vmap_core.profiles import KERNELS

B = 1 << 32


def made(impl, **kw):
    """A space with busy (tagged, with callers), lazy and pooled areas."""
    kw.setdefault("nr_nodes", 4)
    s = impl(B, B + 512 * P, zone_size=4 * P, lazy_max_pages=1 << 20, **kw)
    starts = [s.alloc(((i * 5) % 7 + 1) * P, cpu=i, caller=f"f{i}" if i % 3 else None)
              for i in range(40)]
    s.alloc(2 * P, vstart=B + 400 * P)                   # an untagged area
    for a in starts[::4]:
        s.free_lazy(a)
    s.purge()                                            # to the pools of their nodes
    for a in starts[1::4]:
        s.free_lazy(a)                                   # lazy, not yet purged
    for a in starts[2::8]:
        s.free(a)
    return s


def state(space):
    return space.__reduce__()[2]


# -- VmapArea ---------------------------------------------------------------------

def test_addr_in_area(impl):
    s = impl(B, B + 16 * P, nr_nodes=1)
    a = s.find(s.alloc(3 * P))
    assert a.start in a and a.start + 1 in a and a.end - 1 in a
    assert a.end not in a and a.start - 1 not in a and -1 not in a and TOP not in a
    assert _util.Index(a.start + 5) in a
    for bad in ("x", 1.5, None):
        with pytest.raises(TypeError):
            bad in a


def test_area_order_is_start_then_end(impl):
    s = impl(0, 64 * P, nr_nodes=1)
    x, y = s.find(s.alloc(2 * P)), s.find(s.alloc(P))
    s.free(x.start)
    z = s.find(s.alloc(P))                              # same start as x, shorter
    assert z < x < y and x > z and z <= z and y >= x
    assert sorted([y, x, z]) == [z, x, y]
    assert max([x, y, z]) is y
    with pytest.raises(TypeError):
        x < 5


def test_core_and_reference_areas_order_together():
    core = require_core()
    c = core(0, 64 * P, nr_nodes=1)
    c.alloc(P)
    ca = c.find(0)
    r1, r2 = RefArea(0, 2 * P), RefArea(P, 2 * P)
    assert ca < r1 < r2 and r2 > ca and r1 >= ca and not (ca > r1)
    assert sorted([r2, ca, r1]) == [ca, r1, r2]


def test_area_has_no_len(impl):
    """Unpacked it is two values, and a size may exceed what len() returns: no len()."""
    a = impl(0, TOP, nr_nodes=1)
    area = a.find(a.alloc(TOP))
    with pytest.raises(TypeError):
        len(area)
    assert area.size == TOP and bool(area)


# -- addr in space ------------------------------------------------------------------

def test_addr_in_space(impl):
    s = made(impl)
    busy = list(s)
    assert busy
    for a in busy:
        assert a.start in s and a.end - 1 in s and a in s
    for a in s.free_areas() + s.lazy_areas() + [p for p, _ in s.pooled_areas()]:
        assert a.start not in s and a.end - 1 not in s and a not in s
    assert -1 not in s and TOP not in s and B - 1 not in s
    assert RefArea(busy[0].start, busy[0].end + P) not in s
    for bad in ("x", 2.0, None):
        with pytest.raises(TypeError):
            bad in s


def test_in_does_not_scan(impl):
    """`in` finds through the trees, never through iteration (which it used to)."""
    class NoScan(impl):
        def __iter__(self):
            raise AssertionError("`in` iterated over the space")
    s = NoScan(B, B + 64 * P, nr_nodes=2)
    a = s.alloc(4 * P)
    assert a + P in s and a + 4 * P not in s


# -- pickle, copy, deepcopy ------------------------------------------------------------

@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_copies_carry_every_state(impl, lock, how):
    s = made(impl, lock=lock)
    s.load_notes = ["from a test"]
    c = {"pickle": lambda x: pickle.loads(pickle.dumps(x)), "copy": copy.copy,
         "deepcopy": copy.deepcopy}[how](s)
    assert type(c) is type(s) and c is not s
    c.check()
    assert state(c) == state(s)
    assert list(c) == list(s) and c.free_areas() == s.free_areas()
    assert c.lazy_areas() == s.lazy_areas() and c.pooled_areas() == s.pooled_areas()
    assert [c.caller_of(a.start) for a in c] == [s.caller_of(a.start) for a in s]
    assert c.vmallocinfo() == s.vmallocinfo() and c.load_notes == ["from a test"]
    for name in ("start", "end", "page_size", "nr_nodes", "zone_size", "lock",
                 "lazy_max_pages"):
        assert getattr(c, name) == getattr(s, name)
    assert c.stats()["lazy_pages"] == s.stats()["lazy_pages"]


def test_copies_are_independent_and_behave_the_same(impl):
    s = made(impl)
    c = copy.copy(s)
    # the same calls give the same answers (pools are hit in the same order)
    for i in range(30):
        assert c.alloc(((i * 3) % 5 + 1) * P, cpu=i) == s.alloc(((i * 3) % 5 + 1) * P, cpu=i)
    assert state(c) == state(s)
    a = c.alloc(P)
    assert a in c and a not in s
    c.free(a)
    s.purge(full=True)
    assert s.lazy_areas() == [] and c.lazy_areas() != []


class Flushes(list):
    def flush(self, start, end):
        self.append((start, end))


def test_on_purge_travels_with_the_copy(impl):
    flushes = Flushes()
    s = impl(B, B + 64 * P, nr_nodes=1, lazy_max_pages=1 << 20, on_purge=flushes.flush)
    s.free_lazy(s.alloc(P))
    shallow, deep = copy.copy(s), copy.deepcopy(s)
    assert shallow.on_purge == flushes.flush
    shallow.purge()
    assert flushes == [(B, B + P)]
    deep.purge()                                 # a deep copy flushes into its own list
    assert flushes == [(B, B + P)] and deep.on_purge.__self__ == [(B, B + P)]


def fragmented(impl, kernel, seed=7, **kw):
    """A space whose free tree has many blocks (the shape matters)."""
    if kernel != "6.8":
        kw.setdefault("nr_nodes", 4)
    s = impl(B, B + (1 << 16) * P, kernel=kernel, lazy_max_pages=1 << 20, **kw)
    rng = random.Random(seed)
    live = []
    for i in range(400):
        if live and rng.random() < 0.4:
            a = live.pop(rng.randrange(len(live)))
            (s.free if rng.random() < 0.5 else s.free_lazy)(a)
        else:
            live.append(s.alloc(rng.choice((1, 2, 3, 5, 8)) * P,
                                rng.choice((P, P, 4 * P, 16 * P)), cpu=i))
        if i % 97 == 96:
            s.purge()
    return s, rng


@pytest.mark.parametrize("kernel", KERNELS)
def test_copies_place_aligned_allocations_as_the_original(impl, kernel):
    """The free tree's shape travels with a copy: allocations with align >
    page_size, which the kernel's search places by the shape, land where the
    original's land, under every profile."""
    s, rng = fragmented(impl, kernel)
    c = pickle.loads(pickle.dumps(s))
    c.check()
    for name in ("kernel", "search", "auto_purge", "lock", "nr_nodes"):
        assert getattr(c, name) == getattr(s, name)
    assert c._free_tree_shape() == s._free_tree_shape()
    assert c.lazy_areas() == s.lazy_areas()
    for i in range(200):
        size, align = rng.choice((1, 2, 3, 5, 8)) * P, rng.choice((4 * P, 16 * P, 64 * P))
        assert c.alloc(size, align, cpu=i) == s.alloc(size, align, cpu=i)
    assert state(c) == state(s)


def test_v6_8_lazy_areas_stay_merged_in_a_copy(impl):
    s = impl(B, B + 64 * P, kernel="6.8", lazy_max_pages=1 << 20)
    a, b, c_ = (s.alloc(2 * P) for _ in range(3))
    s.free_lazy(a)
    s.free_lazy(b)                              # merges with a in v6.8's purge tree
    assert s.lazy_areas() == [RefArea(a, a + 4 * P)]
    c = copy.deepcopy(s)
    c.check()
    assert c.lazy_areas() == s.lazy_areas() and c.stats()["lazy_pages"] == 4
    assert c.vmallocinfo() == s.vmallocinfo()
    assert c.purge() == s.purge() == 1
    assert c.free_areas() == s.free_areas() and state(c) == state(s)


def test_copies_record_no_trace(impl):
    """trace= is not carried: the copy writes nothing to the original's stream."""
    out = io.StringIO()
    s = impl(B, B + 64 * P, nr_nodes=1, trace=out)
    s.alloc(P)
    written = out.getvalue()
    assert "alloc_vmap_area" in written
    for c in (copy.copy(s), copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        c.free_lazy(c.alloc(P))
        c.purge()
    assert out.getvalue() == written
    s.alloc(P)
    assert out.getvalue().count("alloc_vmap_area") == 2


def test_no_copy_from_inside_on_purge(impl):
    """A purge that is flushing is half done: a copy from on_purge is refused,
    the purge still completes and check() passes."""
    spaces = []
    s = impl(B, B + 64 * P, nr_nodes=1, lazy_max_pages=1 << 20,
             on_purge=lambda start, end: copy.copy(spaces[0]))
    spaces.append(s)
    s.free_lazy(s.alloc(P))
    with pytest.raises(OnPurgeError) as e:
        s.purge()
    assert isinstance(e.value.__cause__, RuntimeError) and "on_purge" in str(e.value.__cause__)
    s.check()
    assert s.lazy_areas() == [] and copy.copy(s).free_areas() == s.free_areas()


def test_core_and_reference_states_agree():
    core = require_core()
    c, r = made(core), made(ReferenceSpace)
    assert state(c) == state(r)
    assert state(pickle.loads(pickle.dumps(c))) == state(r)


@given(st.lists(st.tuples(st.sampled_from(["alloc", "free", "lazy", "purge", "copy"]),
                          st.integers(1, 6), st.integers(0, 7)), max_size=40))
def test_pickle_at_any_point(ops):
    """After any sequence of calls, a pickled core space continues exactly as the original."""
    core = require_core()
    spaces = [core(B, B + 128 * P, nr_nodes=3, zone_size=2 * P, lazy_max_pages=24)]
    live = []
    for op, pages, cpu in ops:
        s = spaces[-1]
        if op == "alloc":
            try:
                live.append(s.alloc(pages * P, cpu=cpu))
            except MemoryError:
                pass
        elif op in ("free", "lazy") and live:
            (s.free if op == "free" else s.free_lazy)(live.pop(cpu % len(live)))
        elif op == "purge":
            s.purge()
        elif op == "copy":
            c = pickle.loads(pickle.dumps(s))
            c.check()
            assert state(c) == state(s)
            spaces.append(c)
    ref_like = spaces[-1]
    assert state(copy.copy(ref_like)) == state(ref_like)


def test_setstate_refuses_bad_states(impl):
    s = made(impl)
    good = state(s)
    fresh = impl(s.start, s.end, nr_nodes=4, zone_size=4 * P)
    tree = good["free_tree"]
    assert len(tree) >= 3
    (rs, re_, _, _), rest = tree[0], tree[1:]
    bad = [
        None, {}, {**good, "version": 1},                 # before the free tree's shape
        {k: v for k, v in good.items() if k != "free_tree"},
        {**good, "busy": good["busy"] + [good["busy"][0]]},                   # overlap
        {**good, "busy": [(B + 1, B + P, None, None)]},                       # unaligned
        {**good, "busy": [(B, B + P, 9, None)]},                              # no node 9
        {**good, "busy": [(B, B + P, None, 5)]},                              # caller not str
        {**good, "pooled": [(0, B, B + 300 * P)]},                            # no size class
        {**good, "lazy": [(B - P, B, None)]},                                 # outside
        {**good, "free_tree": [(rs, re_, "r", 0)] + rest},                    # red root
        {**good, "free_tree": tree[:-1]},                                     # a block lost
        {**good, "free_tree": [tree[0]] + [(s_, e_, c, d + 1) for s_, e_, c, d in rest]},
        {**good, "free_tree": [(s_, e_, c, 0) for s_, e_, c, _ in tree]},     # many roots
        {**good, "free_tree": tree[:1] + [(s_, e_, "x", d) for s_, e_, _, d in rest]},
    ]
    for st_ in bad:
        with pytest.raises(ValueError):
            fresh.__setstate__(st_)
        assert len(fresh) == 0 and fresh.free_areas() == [RefArea(s.start, s.end)]
    with pytest.raises(ValueError, match="empty"):
        s.__setstate__(good)                      # not a new space
    fresh.__setstate__(good)
    fresh.check()
    assert state(fresh) == good


def test_constructor_arguments_are_carried_by_name():
    """A new constructor argument is one more name in SPACE_INIT_ARGS: pickle
    passes every keyword of the constructor but trace= (NOT_COPIED_ARGS)."""
    from vmap_core.reference import NOT_COPIED_ARGS, SPACE_INIT_ARGS
    params = inspect.signature(ReferenceSpace).parameters
    assert set(SPACE_INIT_ARGS) | set(NOT_COPIED_ARGS) == \
        {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert not set(SPACE_INIT_ARGS) & set(NOT_COPIED_ARGS)


# -- weak references, signatures -----------------------------------------------------

def test_weak_references(impl):
    s = impl(B, B + 16 * P, nr_nodes=1)
    r = weakref.ref(s)
    assert r() is s
    cache = weakref.WeakValueDictionary(one=s)
    del s
    gc.collect()
    assert r() is None and "one" not in cache


def test_constructor_signature_matches_the_reference():
    core = require_core()
    sig = inspect.signature(core)
    assert list(sig.parameters) == ["start", "end", "page_size", "nr_nodes", "zone_size",
                                    "lock", "lazy_max_pages", "on_purge", "kernel", "search",
                                    "auto_purge", "walk", "trace"]
    ref = inspect.signature(ReferenceSpace)
    assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in ref.parameters.values()]
    from vmap_core import VmapArea
    assert str(inspect.signature(VmapArea)) == "(start, end)"
    # pydoc of 3.13 wraps a long signature over lines: compare without the layout
    assert "VmapSpace(start,end,*,page_size=4096,nr_nodes=None" in re.sub(
        r"[\s|]", "", _help_text(core))
    assert "auto_purge=True,walk=None,trace=None)" in re.sub(r"[\s|]", "", _help_text(core))


def _help_text(obj):
    import pydoc
    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


# -- what is not public -------------------------------------------------------------

def test_test_hooks_are_not_public():
    core = require_core()
    import vmap_core
    from vmap_core import _space, _testhooks
    names = dir(core) + dir(_space) + dir(vmap_core) + dir(core(0, P))
    hooks = {"debug_corrupt", "debug_pool_order", "race_selftest", "leak_selftest",
             "ubsan_selftest", "fail_c_alloc", "c_alloc_count"}
    assert not [n for n in names
                if any(w in n for w in ("selftest", "corrupt", "pool_order", "c_alloc"))]
    assert hooks <= set(_testhooks._HOOKS)


def test_reference_check_fails_under_python_O():
    """check() raises AssertionError naming the invariant even with asserts off."""
    code = ("from vmap_core.reference import ReferenceSpace as R\n"
            "from vmap_core.freetree import Node\n"
            "s = R(0, 16 * 4096, nr_nodes=1)\n"
            "s.alloc(4096)\n"
            "s._ft.insert(Node(0, 4096))\n"                  # free and busy overlap
            "try:\n    s.check()\nexcept AssertionError as e:\n    print('caught', e)\n")
    r = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                       env=_util.subprocess_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("caught tiling")

"""search="lowest" with alignment above the page: the core's fit cache
(_freetree.pxi) must give exactly the linear lowest match, whatever churn did.

The core runs side by side with the reference (the oracle, a plain scan);
check() verifies the cache's invariant (every fitting free block below a
class's floor lies in one of its holes) after every step.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmap_core import VmapExhausted, VmapSpace, _testhooks
from vmap_core.reference import ReferenceSpace

P = 4096
BASE = 1 << 30
STACK = (5 * P, 4 * P)               # a thread stack: 20 KiB aligned to 16 KiB


def pair(pages=1 << 12, **kw):
    kw.setdefault("search", "lowest")
    kw.setdefault("nr_nodes", 2)
    return VmapSpace(BASE, BASE + pages * P, **kw), ReferenceSpace(BASE, BASE + pages * P, **kw)


def both(spaces, method, *args, **kw):
    out = []
    for s in spaces:
        try:
            out.append(getattr(s, method)(*args, **kw))
        except (VmapExhausted, ValueError) as exc:
            out.append(type(exc))
    assert out[0] == out[1], (method, args, kw, out)
    return out[0]


requests = st.one_of(
    st.just(STACK),
    st.tuples(st.integers(1, 12).map(lambda k: k * P),
              st.sampled_from([2, 4, 8, 16, 64]).map(lambda k: k * P)),
    st.tuples(st.integers(1, 8).map(lambda k: k * P), st.none()),
)
steps = st.lists(st.one_of(
    st.tuples(st.just("alloc"), requests, st.one_of(st.none(), st.integers(0, 255))),
    st.tuples(st.just("free"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("lazy"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("purge"), st.none(), st.none()),
), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(steps=steps, kernel=st.sampled_from(["6.8", "6.9", "6.16"]),
       prefill=st.integers(0, 150))
def test_aligned_churn_matches_the_linear_lowest_match(steps, kernel, prefill):
    spaces = pair(kernel=kernel, nr_nodes=None if kernel == "6.8" else 2)
    live = []
    for i in range(prefill):             # a packed bottom, then holes in it
        live.append(both(spaces, "alloc", *(STACK if i % 3 else (P, None))))
    for addr in live[1::4]:
        both(spaces, "free", addr)
    live = [a for a in live if a not in live[1::4]]
    for op, arg, vstart_page in steps:
        if op == "alloc":
            vstart = None if vstart_page is None else BASE + vstart_page * 16 * P
            got = both(spaces, "alloc", arg[0], arg[1], vstart=vstart)
            if isinstance(got, int):
                live.append(got)
        elif op == "purge":
            both(spaces, "purge")
        elif live:
            addr = live.pop(arg % len(live))
            both(spaces, "free" if op == "free" else "free_lazy", addr)
        spaces[0].check()
    assert list(spaces[0]) == list(spaces[1])


def test_more_fits_below_the_floor_than_holes():
    """Hundreds of stack-sized holes below the floor: the holes overflow and
    are joined; answers stay the lowest match, in address order."""
    spaces = pair(pages=1 << 14)
    live = [both(spaces, "alloc", *STACK) for _ in range(1500)]
    both(spaces, "alloc", *STACK)         # the floor goes to the top
    freed = live[::3]
    for addr in reversed(freed):          # highest first: every free is a new hole
        both(spaces, "free", addr)
    holes = _testhooks.fit_cache(spaces[0])[0][3]
    assert 0 < len(holes) < len(freed)    # joined, not one per freed block
    spaces[0].check()
    got = [both(spaces, "alloc", *STACK) for _ in range(len(freed))]
    assert got == sorted(freed)
    spaces[0].check()


def test_cache_learns_and_forgets():
    spaces = pair()
    core = spaces[0]
    a = [both(spaces, "alloc", *STACK) for _ in range(8)]
    ((size, align, floor, holes),) = _testhooks.fit_cache(core)
    assert (size, align, holes) == (5 * P, 4 * P, [])
    assert floor == a[-2] + 5 * P         # the last answer's block: nothing fits below
    both(spaces, "free", a[2])
    ((hs, he),) = _testhooks.fit_cache(core)[0][3]      # the merged block it made
    assert hs < a[2] and a[2] + 5 * P < he and hs < floor
    assert both(spaces, "alloc", *STACK) == a[2]
    # A larger size at the same alignment starts from what the smaller one knew.
    both(spaces, "alloc", 6 * P, 4 * P)
    assert len(_testhooks.fit_cache(core)) == 2
    # Restoring a snapshot rebuilds the free tree: every fact goes.
    copy = pickle.loads(pickle.dumps(core))
    assert _testhooks.fit_cache(copy) == []
    copy.check()


@pytest.mark.parametrize("kernel", ["6.9", "6.16"])
def test_kernel_search_keeps_its_own_answer(kernel):
    """search="kernel" never consults the cache: the kernel's size + align - 1
    search may skip a lower block that fits (the kernel's answer, not ours)."""
    spaces = pair(search="kernel", kernel=kernel)
    live = [both(spaces, "alloc", *STACK) for _ in range(20)]
    for addr in live[::2]:
        both(spaces, "free", addr)
    for _ in range(10):
        both(spaces, "alloc", *STACK)
    assert _testhooks.fit_cache(spaces[0]) == []

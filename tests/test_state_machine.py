"""Differential state machine: the Cython core and the reference side by side.

Every step sends the same call to both (alloc with random sizes, alignments and
vstart/vend windows, free of live areas / non-starts / double frees, find
inside areas, on edges, in holes and out of range, node_of, and bad inputs of
every kind) and compares the result or the exception type.  After a raised
exception the core must be exactly as before.  After every step both check()
and their list(), free_areas(), len() and common stats() keys must agree.  Now
and then both are replaced by copies of themselves, which must carry the same
state and go on as the originals would.

The machine runs over several configurations (one and several nodes, tiny
zones so that areas span zones, both lock modes, a space ending at 2**64, the
whole 64-bit space, big pages) and every kernel profile (6.8, 6.9, 6.16) and
search ("kernel", "lowest").  Since the kernel's aligned search depends on the
shape of the free tree, the two free trees (the core's red-black code and the
reference's transcription of lib/rbtree.c) must also have the same shape and
colours after every step.
"""

from __future__ import annotations

import copy
import os
from fractions import Fraction

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import _util
from _util import TOP, Index, ReferenceSpace, snapshot, span

try:
    import numpy as np
except ImportError:  # numpy is optional: its integer types are one more bad/odd input
    np = None

P4K = 4096


def _core_missing_reason():
    core, err = _util.load_core()
    if core is None and os.environ.get("VMAP_CORE_REQUIRE") != "1":
        return err
    return None


from vmap_core import OnPurgeError  # noqa: E402

# the only exceptions the API may raise (VmapExhausted is a MemoryError;
# OnPurgeError reports an on_purge callback that raised)
EXPECTED_ERRORS = (TypeError, ValueError, KeyError, MemoryError, OnPurgeError)


def call(space, name, args, kwargs):
    try:
        return getattr(space, name)(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - every exception is compared
        return None, exc


def normalise(name, value):
    if value is None and name in ("alloc",):
        return value
    if name in ("alloc", "node_of", "purge", "drain_pools"):
        assert type(value) is int, f"{name} returned {type(value).__name__}, not int"
        return value
    if value is None or name == "caller_of":
        return value
    return span(value)


class Differential(RuleBasedStateMachine):
    """Subclassed once per configuration (see CONFIGS at the bottom)."""

    config: dict = {}

    def __init__(self):
        super().__init__()
        cfg = self.config
        core_cls = _util.require_core()
        self.start, self.end = cfg["start"], cfg["end"]
        self.P = cfg.get("page_size", P4K)
        kw = dict(page_size=self.P, nr_nodes=cfg["nr_nodes"], zone_size=cfg.get("zone_size"),
                  lock=cfg["lock"], kernel=cfg.get("kernel"), search=cfg.get("search"))
        self.core = core_cls(self.start, self.end, **kw)
        self.ref = ReferenceSpace(self.start, self.end, **kw)
        self.pages = (self.end - self.start) // self.P
        self.zone = cfg.get("zone_size") or 16 * self.P
        self.log2p = self.P.bit_length() - 1
        self.freed: list[int] = []
        self.bad = self._bad_values()

    # -- the differential call ----------------------------------------------
    def both(self, name, *args, **kwargs):
        label = f"{name}(*{args!r}, **{kwargs!r})"
        before = snapshot(self.core)
        ref_stats = self.ref.stats()
        deferred = ref_stats.get("lazy_areas") or ref_stats.get("pooled_areas")
        r, rexc = call(self.ref, name, args, kwargs)
        c, cexc = call(self.core, name, args, kwargs)
        event(f"{name}: {type(rexc).__name__ if rexc is not None else 'ok'}")
        if rexc is not None:
            assert isinstance(rexc, EXPECTED_ERRORS), f"{label}: the reference itself broke: {rexc!r}"
            assert cexc is not None, \
                f"{label}: reference raised {rexc!r}, core returned {c!r}"
            assert isinstance(cexc, type(rexc)), \
                f"{label}: reference raised {type(rexc).__name__}, core raised {cexc!r}"
            after = snapshot(self.core)
            # Bad input leaves the space as it was.  Exhaustion may not where
            # areas are lazy or pooled: the kernel purges them before it gives
            # up, so there the invariant's core == reference comparison checks;
            # nor may a purge whose on_purge raised (it completes, as does the
            # call that started it, and both report the same result).
            if isinstance(rexc, OnPurgeError):
                assert normalise(name, cexc.result) == normalise(name, rexc.result), \
                    f"{label}: OnPurgeError.result core {cexc.result!r} != reference {rexc.result!r}"
                assert type(cexc.__cause__) is type(rexc.__cause__)
            elif not (isinstance(rexc, MemoryError) and deferred):
                assert after == before, f"{label}: core changed after raising {cexc!r}"
            return None
        if cexc is not None:
            raise AssertionError(f"{label}: reference returned {r!r}, core raised {cexc!r}") \
                from cexc
        assert normalise(name, c) == normalise(name, r), \
            f"{label}: core returned {c!r}, reference {r!r}"
        return r

    # -- strategies that depend on the space ----------------------------------
    def page_addr(self, lo_page, hi_page):
        return st.integers(lo_page, hi_page).map(lambda i: self.start + i * self.P)

    def any_addr(self):
        """Any address in [0, 2**64), biased to the space and its surroundings."""
        lo = max(0, self.start - 2 * self.P)
        hi = min(TOP - 1, self.end + 2 * self.P)
        edges = sorted({0, TOP - 1, self.start, self.end - 1, min(self.end, TOP - 1),
                        max(0, self.start - 1)})
        return st.one_of(st.integers(lo, hi), st.sampled_from(edges),
                         st.integers(0, TOP - 1))

    def _bad_values(self):
        P, start, end = self.P, self.start, self.end
        below = start - P if start >= P else -P
        size = [4096.0, "4096", None, Fraction(P), [P], 0, -P, -1, 1, P // 2, P + 1,
                True, TOP + P, 1 << 65, -TOP, Index(P), Index(2 * P)]
        align = [0, 3, -P, 3 * P, float(P), "x", TOP, 1 << 70, -1, True, Index(2 * P),
                 1 << 63, 1]
        vstart = [below, -1, end, end + P, start + 1, start + P // 2, float(start), "0",
                  TOP, TOP + P, Index(start + P)]
        vend = [start, below, end + P, end - 1, -P, float(end), TOP + P, Index(end),
                start + P]
        addr = [-1, -P, TOP, TOP + P, 1 << 100, float(start), str(start), None,
                Index(start), True, False, TOP - 1]
        if np is not None:
            size += [np.int64(P), np.uint64(2 * P), np.float64(P)]
            align += [np.uint64(4 * P), np.int32(3)]
            vstart += [np.uint64(start)]
            vend += [np.uint64(end - P)]
            addr += [np.uint64(start), np.uint64(end - 1), np.int8(-1), np.float32(1.0)]
        return dict(size=size, align=align, vstart=vstart, vend=vend, addr=addr)

    def draw_size(self, data):
        pages = data.draw(st.one_of(
            st.integers(1, 4),
            st.integers(1, max(1, self.pages // 8)),
            st.integers(1, self.pages + 2),
            st.sampled_from([self.pages, self.pages + 1, max(1, self.pages // 2)]),
            # a few zones long, so that the area spans zones of several nodes
            st.integers(1, 6).map(lambda k: min(self.pages + 1, k * self.zone // self.P + 1)),
        ), label="pages")
        return pages * self.P

    def draw_align(self, data):
        kind = data.draw(st.integers(0, 3), label="align kind")
        if kind == 0:
            return None
        if kind == 1:
            return self.P << data.draw(st.integers(0, 5), label="align shift")
        if kind == 2:
            return 1 << data.draw(st.integers(self.log2p, 63), label="align log2")
        return data.draw(st.sampled_from([1, 2, 512, self.P // 2 or 1]), label="small align")

    def draw_window(self, data):
        kind = data.draw(st.integers(0, 4), label="window kind")
        n = self.pages
        if kind == 0:
            return None, None
        if kind == 1:
            return data.draw(self.page_addr(0, n - 1), label="vstart"), None
        if kind == 2:
            return None, data.draw(self.page_addr(1, n), label="vend")
        if kind == 3:
            vs = data.draw(st.integers(0, n - 1), label="vstart page")
            ve = data.draw(st.integers(vs + 1, n), label="vend page")
            return self.start + vs * self.P, self.start + ve * self.P
        # an invalid window: outside [start, end], empty, reversed or unaligned
        P, s, e = self.P, self.start, self.end
        mid = s + (n // 2) * P
        return data.draw(st.sampled_from([
            (s - P if s >= P else -P, None), (None, e + P), (mid, mid), (mid + P, mid),
            (s + 1, None), (None, e - 1), (-1, None), (s, s), (e, e), (e, None),
            (None, s), (TOP, None), (None, TOP + P),
        ]), label="bad window")

    # -- rules -----------------------------------------------------------------
    @rule(data=st.data())
    def alloc(self, data):
        size = self.draw_size(data)
        align = self.draw_align(data)
        vstart, vend = self.draw_window(data)
        kwargs = {k: v for k, v in (("align", align), ("vstart", vstart), ("vend", vend))
                  if v is not None or data.draw(st.booleans(), label=f"pass {k}=None")}
        blocks = [span(a) for a in self.ref.free_areas()]
        nva = self.both("alloc", size, **kwargs)
        block = next((b for b in blocks if b[0] <= nva < b[1]), None) if nva is not None else None
        if nva is not None and block is None:
            event("alloc: served by a pool or after the overflow purge")
        elif nva is not None:
            bs, be = block
            fit = {(True, True): "full", (True, False): "left edge",
                   (False, True): "right edge", (False, False): "no edge"}[
                (nva == bs, nva + size == be)]
            event(f"alloc fit: {fit}")
            if align is not None and align > self.P:
                event("alloc ok with align > page_size")
            if self.ref.node_of(nva) != self.ref.node_of(nva + size - 1):
                event("alloc ok spanning nodes")

    @rule(data=st.data())
    def alloc_small(self, data):
        """Small default allocations: keep the space populated."""
        self.both("alloc", data.draw(st.integers(1, 3), label="pages") * self.P)

    @rule(data=st.data())
    def free(self, data):
        areas = [span(a) for a in self.ref]
        kind = data.draw(st.integers(0, 4), label="free kind")
        if kind <= 1 and areas:
            addr = data.draw(st.sampled_from(areas), label="area")[0]
        elif kind == 2 and areas:
            s, e = data.draw(st.sampled_from(areas), label="area")
            addr = data.draw(st.sampled_from([s + 1, e - 1, s + self.P, s + self.P // 2])
                             | st.integers(s + 1, e - 1), label="non-start")
            addr = min(addr, e - 1)
        elif kind == 3 and self.freed:
            addr = data.draw(st.sampled_from(self.freed), label="freed before")
        else:
            addr = data.draw(self.any_addr(), label="addr")
        if self.free_and_classify(addr):
            self.freed = (self.freed + [addr])[-16:]

    def free_and_classify(self, addr):
        area = self.both("free", addr)
        if area is None:
            return False
        s, e = span(area)
        bs, be = next(b for b in map(span, self.ref.free_areas()) if b[0] <= s < b[1])
        event(f"free merge: {'prev' if bs < s else 'no prev'}, {'next' if be > e else 'no next'}")
        return True

    @rule(data=st.data())
    def find(self, data):
        areas = [span(a) for a in self.ref]
        holes = [span(a) for a in self.ref.free_areas()]
        kind = data.draw(st.integers(0, 3), label="find kind")
        if kind == 0 and areas:
            s, e = data.draw(st.sampled_from(areas), label="area")
            # anywhere inside, including proportionally far in (other zones / nodes)
            addr = data.draw(st.integers(s, e - 1) | st.integers(0, 1023).map(
                lambda k: s + (e - s) * k // 1024), label="inside")
        elif kind == 1 and areas:
            s, e = data.draw(st.sampled_from(areas), label="area")
            z = self.zone
            first_zone_end = (s // z + 1) * z
            addr = data.draw(st.sampled_from([
                s, e - 1, e, s - 1, s + self.P - 1, (s + e) // 2,
                first_zone_end - 1, first_zone_end, (e - 1) // z * z,
            ]), label="edge")
            addr = min(max(addr, 0), TOP - 1)
        elif kind == 2 and holes:
            s, e = data.draw(st.sampled_from(holes), label="hole")
            addr = data.draw(st.sampled_from([s, e - 1]) | st.integers(s, e - 1), label="in hole")
        else:
            addr = data.draw(self.any_addr(), label="addr")
        self.both("find", addr)
        self.both("node_of", addr)

    @rule(data=st.data())
    def bad_input(self, data):
        method = data.draw(st.sampled_from(["alloc", "free", "find"]), label="method")
        if method == "alloc":
            which = data.draw(st.sampled_from(["size", "align", "vstart", "vend"]), label="arg")
            bad = data.draw(st.sampled_from(self.bad[which]), label="value")
            args = {"size": self.P, which: bad}
            size = args.pop("size")
            self.both("alloc", size, **args)
        else:
            bad = data.draw(st.sampled_from(self.bad["addr"]), label="value")
            self.both(method, bad)

    @rule(data=st.data())
    def free_many(self, data):
        """Free a run of neighbouring areas (exercises merging both ways)."""
        areas = [span(a) for a in self.ref]
        if not areas:
            return
        i = data.draw(st.integers(0, len(areas) - 1), label="first")
        k = data.draw(st.integers(1, 6), label="count")
        order = data.draw(st.permutations(areas[i:i + k]), label="order")
        for s, _ in order:
            self.free_and_classify(s)

    @rule(deep=st.booleans())
    def copy_both(self, deep):
        """Both go on as copies of themselves (copy.copy / copy.deepcopy): the
        states (areas, tags, callers, the free tree's shape) agree before, the
        copies carry them, and every later step compares the copies."""
        cs, rs = self.core.__reduce__()[2], self.ref.__reduce__()[2]
        assert cs == rs, "pickled state: core != reference"
        how = copy.deepcopy if deep else copy.copy
        self.core, self.ref = how(self.core), how(self.ref)
        assert self.core.__reduce__()[2] == cs and self.ref.__reduce__()[2] == rs

    # -- after every step ------------------------------------------------------
    @invariant()
    def same_structure(self):
        self.core.check()
        self.ref.check()
        c, r = snapshot(self.core), snapshot(self.ref)
        names = ("len", "list", "free_areas", "stats")
        for name, cv, rv in zip(names, c, r):
            assert cv == rv, f"{name}: core {cv!r} != reference {rv!r}"
        assert self.core._free_tree_shape() == self.ref._free_tree_shape(), \
            "free-tree shape: the core's rb-tree differs from the kernel's (reference)"


P = P4K
CONFIGS = {
    "one_node": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=1, lock="node"),
    "one_node_global": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=1, lock="global"),
    "four_nodes_tiny_zones": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=4,
                                  zone_size=P, lock="node"),
    "four_nodes_global": dict(start=0, end=96 * P, nr_nodes=4, zone_size=2 * P, lock="global"),
    "three_nodes_odd_zones": dict(start=0x40000, end=0x40000 + 80 * P, nr_nodes=3,
                                  zone_size=3 * P, lock="node"),
    "top_of_space": dict(start=TOP - 64 * P, end=TOP, nr_nodes=4, zone_size=P, lock="node"),
    "top_of_space_global": dict(start=TOP - 48 * P, end=TOP, nr_nodes=2, zone_size=2 * P,
                                lock="global"),
    "wide": dict(start=1 << 32, end=1 << 48, nr_nodes=4, zone_size=None, lock="node"),
    "whole_64_bit": dict(start=0, end=TOP, nr_nodes=4, zone_size=1 << 58, lock="node"),
    "big_pages": dict(start=0, end=1 << 30, page_size=1 << 21, nr_nodes=2,
                      zone_size=1 << 21, lock="global"),
    # the other kernel profiles and the exact lowest match
    "v6_8": dict(start=0x100000, end=0x100000 + 96 * P, nr_nodes=1, lock=None, kernel="6.8"),
    "v6_9_tiny_zones": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=4,
                            zone_size=P, lock="node", kernel="6.9"),
    "lowest_search": dict(start=0, end=128 * P, nr_nodes=2, zone_size=2 * P, lock="node",
                          search="lowest"),
}

def register(machine, configs, namespace):
    """One pytest TestCase per configuration of a machine class, put into
    namespace (a test module's globals()) as Test<Machine>_<config>."""
    reason = _core_missing_reason()
    for name, cfg in configs.items():
        case = type(f"{machine.__name__}_{name}", (machine,), {"config": cfg}).TestCase
        case.__name__ = case.__qualname__ = f"Test{machine.__name__}_{name}"
        if reason is not None:
            case = pytest.mark.skip(reason=f"Cython core not built ({reason})")(case)
        namespace[case.__name__] = case


register(Differential, CONFIGS, globals())

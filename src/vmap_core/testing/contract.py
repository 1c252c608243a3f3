"""VmapContract: the differential state machine that a user's space must pass.

Subclass it in a test file, name your class, and pytest or unittest runs it:

    import vmap_core.testing

    class TestMine(vmap_core.testing.VmapContract):
        space_class = MySpace

Every step makes one call on your space and on a
:class:`~vmap_core.reference.ReferenceSpace` configured the same way, and
compares the results, or the exceptions (after an exception your space must
be exactly as before); after every step it compares everything observable
(len(), the busy areas, the free blocks, the stats both report, and what the
lazy-free features show) and runs ``check()`` where there is one.  A failure
prints the shortest sequence of calls that Hypothesis found, as code.
"""

from __future__ import annotations

import copy
import inspect
import operator
import unittest
from fractions import Fraction
from typing import Any, Callable, ClassVar

from hypothesis import event
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from .._errors import OnPurgeError
from ..reference import ReferenceSpace
from . import strategies as vst
from ._compare import (
    COMMON_STATS,
    EXPECTED_ERRORS,
    LAZY_STATS,
    call,
    error_kind,
    normalise,
    snapshot,
    span,
)

__all__ = ["VmapContract", "FEATURES", "LAZY_FEATURES", "detect_features"]

#: Everything the contract can exercise beyond alloc/free/find, by name.
FEATURES = frozenset({
    "free_areas",     # free_areas(): the free blocks, compared after every step
    "stats",          # stats(): the keys both report of COMMON_STATS and LAZY_STATS compared
    "check",          # check(): called after every step (AssertionError fails)
    "node_of",        # node_of(addr): compared with every find
    "copy",           # copy.copy / copy.deepcopy: the copy goes on in the original's place
    "state",          # __reduce__()'s state is the reference's (vmap_core's own classes)
    "tree_shape",     # _free_tree_shape(): the kernel's rb-tree shape, compared
    "alloc_cpu",      # alloc(..., cpu=)
    "alloc_caller",   # alloc(..., caller=)
    "free_lazy",      # free_lazy(addr): vfree()'s deferred free
    "purge",          # purge(full=False)
    "drain_pools",    # drain_pools()
    "lazy_areas",     # lazy_areas(), compared after every step
    "pooled_areas",   # pooled_areas(), compared after every step
    "vmallocinfo",    # vmallocinfo() text, compared after every step
    "areas",          # areas(from_addr): walks compared
    "caller_of",      # caller_of(addr)
    "on_purge",       # the constructor takes on_purge=: the flushed ranges compared
})
#: The kernel-parity features: lazy free, purges, pools and what shows them.
LAZY_FEATURES = frozenset({"free_lazy", "purge", "drain_pools", "lazy_areas", "pooled_areas",
                           "vmallocinfo", "on_purge", "alloc_cpu", "alloc_caller",
                           "caller_of", "areas"})
_METHODS = ("free_areas", "stats", "check", "node_of", "free_lazy", "purge", "drain_pools",
            "lazy_areas", "pooled_areas", "vmallocinfo", "areas", "caller_of")
_KNOBS = ("nr_nodes", "zone_size", "lock", "kernel", "search", "lazy_max_pages")
_CALLERS = [None, "irq_init_percpu_irqstack+0x114/0x150", "bpf_prog_alloc", "x"]


def _accepted(fn: Callable[..., Any], names: list[str]) -> set[str]:
    """The keyword names fn accepts among names (all when it takes
    **kwargs or its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set(names)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return set(names)
    return {n for n in names if n in params}


def detect_features(space: Any, constructor_kwargs: dict[str, Any] | None = None
                    ) -> frozenset[str]:
    """The features of :data:`FEATURES` that a space instance has: its
    methods, alloc()'s cpu=/caller= keywords, whether copies work, and
    "on_purge" when constructor_kwargs (what it was built with) hold it."""
    found = {m for m in _METHODS if callable(getattr(space, m, None))}
    found |= {f"alloc_{k}" for k in _accepted(space.alloc, ["cpu", "caller"])}
    if callable(getattr(space, "_free_tree_shape", None)):
        found.add("tree_shape")
    try:
        copy.copy(space)
        copy.deepcopy(space)
        found.add("copy")
    except Exception:  # noqa: BLE001 - not copyable: no copy rule
        pass
    if isinstance(space, ReferenceSpace) or type(space).__module__ == "vmap_core._space":
        found.add("state")
    if constructor_kwargs and "on_purge" in constructor_kwargs:
        found.add("on_purge")
    return frozenset(found)


class VmapContract(unittest.TestCase):
    """Subclass to test a space of yours against the reference.

    Set ``space_class``; every other knob has a default.  The test method,
    ``test_conformance``, runs a Hypothesis state machine (see the module's
    docstring), with the settings of the Hypothesis profile in force unless
    ``settings`` is given.

    **The space.**  ``space_class(start, end, **kw)`` builds it (override
    :meth:`make_space` for anything else), where kw holds ``page_size``, each
    of ``nr_nodes``, ``zone_size``, ``lock``, ``kernel``, ``search`` and
    ``lazy_max_pages`` that is not None, and ``on_purge`` (a callback that
    records the flushed ranges), each only if your constructor's signature
    takes it (all if it takes ``**kwargs``), then ``space_kwargs`` on top.
    The reference, :class:`vmap_core.reference.ReferenceSpace`, gets all of
    them (not ``space_kwargs``).

    **What it needs.**  ``alloc(size, align=None, vstart=None, vend=None)``
    returning the start as an int, ``free(addr)`` returning the freed area
    (an object with ``start`` and ``end``), ``find(addr)`` returning the area
    holding addr or None, ``len()`` and iteration over the busy areas in
    address order.  Bad input raises what the *Bad input* table of the API reference (docs/api.md)
    says (checked by kind: TypeError, ValueError, KeyError, MemoryError for
    exhaustion; the exact class with ``exact_exceptions``) and leaves the
    space as it was.

    **What it uses when present** (detected; see :data:`FEATURES`):
    ``free_areas()``, ``stats()``, ``check()``, ``node_of()``, copies, and
    the kernel-parity API (``free_lazy``, ``purge``, ``drain_pools``,
    ``lazy_areas``, ``pooled_areas``, ``vmallocinfo``, ``areas``,
    ``caller_of``, ``alloc(cpu=, caller=)``, ``on_purge=``).  A space
    without lazy free is compared with a reference that never defers
    anything: one node by default (``nr_nodes = 1``), so its per-CPU pools
    never apply, and no rule frees lazily or purges.

    Knobs (class attributes):

    ``space_class``
        The class (or any callable) that builds your space.  Required.
    ``start``, ``end``, ``page_size``
        The range and the page size (default 64 pages of 4096 bytes at
        0x100000).  Small ranges fill up, so that exhaustion, merging and
        lazy-free purges are exercised.
    ``nr_nodes``, ``zone_size``
        The reference's nodes (default 1: no sharding, no pools) and zone
        size (default: the reference's); None leaves the default of each side.
    ``lock``, ``kernel``, ``search``, ``lazy_max_pages``
        Passed as is (None: not passed).  ``search`` defaults to
        ``"lowest"`` (the exact lowest fit, what an address allocator does);
        set it to None for the kernel's aligned search of the profile.
    ``on_purge``
        "record" (default): pass an on_purge callback that records each flush
        range, compared between both sides; "raise": also raise from every
        third flush (an OnPurgeError must be reported the same way); "check":
        call ``check()`` from inside the flush and compare the lazy pages and
        free blocks seen there; None: pass no callback.  Only where your
        constructor takes ``on_purge`` (else neither side gets one).
    ``space_kwargs``
        Extra keyword arguments for your constructor only.
    ``features``
        The features to exercise (a set of :data:`FEATURES` names); None
        (default) detects them.  ``exclude_features`` removes some from
        either.
    ``exact_exceptions``
        Require the reference's exact exception class (default False: the
        same documented kind).
    ``settings``
        A :class:`hypothesis.settings` for this contract; None (default) uses
        the Hypothesis profile loaded (settings.load_profile), so that CI can
        bound and derandomize it.
    ``max_examples`` / ``step_count``
        Shortcuts that override the loaded profile's ``max_examples`` and
        ``stateful_step_count`` (when ``settings`` is None).
    """

    __test__ = False                 # the base itself is not a test
    space_class: ClassVar[Callable[..., Any] | None] = None
    start: ClassVar[int] = 0x100000
    end: ClassVar[int] = 0x100000 + 64 * 4096
    page_size: ClassVar[int] = 4096
    nr_nodes: ClassVar[int | None] = 1
    zone_size: ClassVar[int | None] = None
    lock: ClassVar[str | None] = None
    kernel: ClassVar[str | None] = None
    search: ClassVar[str | None] = "lowest"
    lazy_max_pages: ClassVar[int | None] = None
    on_purge: ClassVar[str | None] = "record"
    space_kwargs: ClassVar[dict[str, Any]] = {}
    features: ClassVar[frozenset[str] | None] = None
    exclude_features: ClassVar[frozenset[str]] = frozenset()
    exact_exceptions: ClassVar[bool] = False
    settings: ClassVar[Settings | None] = None
    max_examples: ClassVar[int | None] = None
    step_count: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = cls.space_class is not None
        cls._machine = None

    _machine: ClassVar[type[RuleBasedStateMachine] | None] = None

    # -- construction ---------------------------------------------------------
    @classmethod
    def geometry(cls) -> vst.Geometry:
        """The space's shape, for the strategies."""
        return vst.Geometry(cls.start, cls.end, cls.page_size, cls.zone_size)

    @classmethod
    def configuration(cls, on_purge: Callable[[int, int], None] | None = None
                      ) -> dict[str, Any]:
        """The keyword arguments of the reference: page_size, the knobs that
        are set, and on_purge when given and the on_purge knob is set."""
        kw: dict[str, Any] = {"page_size": cls.page_size}
        kw.update({k: getattr(cls, k) for k in _KNOBS if getattr(cls, k) is not None})
        if on_purge is not None and cls.on_purge is not None:
            kw["on_purge"] = on_purge
        return kw

    @classmethod
    def space_configuration(cls, on_purge: Callable[[int, int], None] | None = None
                            ) -> dict[str, Any]:
        """The keyword arguments of your space: the reference's that your
        constructor accepts, then space_kwargs."""
        assert cls.space_class is not None, "set space_class"
        kw = cls.configuration(on_purge)
        ok = _accepted(cls.space_class, list(kw))
        out = {k: v for k, v in kw.items() if k in ok}
        out.update(cls.space_kwargs)
        return out

    @classmethod
    def make_space(cls, **kwargs: Any) -> Any:
        """Build the space under test from space_configuration()'s kwargs."""
        assert cls.space_class is not None, "set space_class"
        return cls.space_class(cls.start, cls.end, **kwargs)

    @classmethod
    def make_reference(cls, **kwargs: Any) -> ReferenceSpace:
        """Build the reference from configuration()'s kwargs."""
        return ReferenceSpace(cls.start, cls.end, **kwargs)

    @classmethod
    def active_features(cls) -> frozenset[str]:
        """The features this contract exercises (declared or detected)."""
        kw = cls.space_configuration(lambda s, e: None)
        if cls.features is not None:
            unknown = set(cls.features) - FEATURES
            if unknown:
                raise ValueError(f"unknown features {sorted(unknown)}; see FEATURES")
            found = frozenset(cls.features)
        else:
            found = detect_features(cls.make_space(**kw), kw)
        return found - cls.exclude_features

    @classmethod
    def state_machine(cls) -> type[RuleBasedStateMachine]:
        """The RuleBasedStateMachine class for this contract (built once)."""
        if cls._machine is None:
            cls._machine = _machine_class(cls, cls.active_features())
        return cls._machine

    def hypothesis_settings(self) -> Settings | None:
        """The settings the run uses (None: the loaded profile's)."""
        if self.settings is not None:
            return self.settings
        changes: dict[str, Any] = {}
        if self.max_examples is not None:
            changes["max_examples"] = self.max_examples
        if self.step_count is not None:
            changes["stateful_step_count"] = self.step_count
        return Settings(**changes) if changes else None

    def test_conformance(self) -> None:
        """The state machine, run to the settings' bounds; a failure raises
        with the shortest failing sequence of calls printed."""
        if type(self).space_class is None:
            self.skipTest("VmapContract itself: subclass it and set space_class")
        run_state_machine_as_test(self.state_machine(), settings=self.hypothesis_settings())


def _show(value: Any) -> str:
    """A result as the message shows it: addresses in hex."""
    return hex(value) if type(value) is int else repr(value)


def _inside_at(start: int, end: int, where: Fraction | int) -> int:
    if isinstance(where, Fraction):
        return start + int((end - start) * where)
    return start + where % (end - start)


def _machine_class(contract: type[VmapContract], features: frozenset[str]
                   ) -> type[RuleBasedStateMachine]:
    """A RuleBasedStateMachine with the rules and invariants that features
    allow, for contract's configuration."""
    g = contract.geometry()
    P = g.page_size
    has = features.__contains__
    lazy = has("free_lazy") or has("purge")
    stats_keys = COMMON_STATS + LAZY_STATS if has("stats") else ()
    areas = Bundle("areas")
    ns: dict[str, Any] = {"areas": areas, "features": features, "contract": contract}

    def __init__(self: Any) -> None:
        RuleBasedStateMachine.__init__(self)
        self.flushes = ([], [])
        self.spans = {}
        kw = contract.space_configuration(self._flush_callback(0))
        self.space = contract.make_space(**kw)
        # no flush callback for the reference where yours takes none
        ref_flush = self._flush_callback(1) if "on_purge" in kw else None
        self.ref = contract.make_reference(**contract.configuration(ref_flush))
        if has("stats"):
            mine = set(self.space.stats())
            self.stats_keys = tuple(k for k in stats_keys if k in mine)
        else:
            self.stats_keys = ()
        # what must not change when a call raises, or in a copy: the
        # structure, without the purge counters
        self.common_keys = tuple(k for k in self.stats_keys if k in COMMON_STATS)
    ns["__init__"] = __init__

    def _flush_callback(self: Any, side: int) -> Callable[[int, int], None]:
        mode = contract.on_purge

        def flush(start: int, end: int) -> None:
            space = self.space if side == 0 else self.ref
            seen = self.flushes[side]
            if mode == "check":
                # From inside the flush: the detached areas are neither lazy
                # nor free yet, still counted in the lazy pages; check() holds.
                space.check()
                seen.append((start, end, space.stats()["lazy_pages"],
                             [span(a) for a in space.free_areas()]))
            else:
                seen.append((start, end))
            if mode == "raise" and len(seen) % 3 == 0:
                raise ValueError(f"flush {len(seen)} failed")
        return flush
    ns["_flush_callback"] = _flush_callback

    def _snap(self: Any, space: Any, keys: tuple[str, ...] | None = None) -> tuple[Any, ...]:
        return snapshot(space, self.stats_keys if keys is None else keys,
                        has("free_areas") or space is self.ref)
    ns["_snap"] = _snap

    def both(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """The same call on both; results or exceptions compared."""
        label = repr(vst.Call(name, args, kwargs))
        before = snapshot(self.space, self.common_keys, has("free_areas"))
        ref_stats = self.ref.stats()
        deferred = ref_stats.get("lazy_areas") or ref_stats.get("pooled_areas")
        r, rexc = call(self.ref, name, args, kwargs)
        c, cexc = call(self.space, name, args, kwargs)
        event(f"{name}: {type(rexc).__name__ if rexc is not None else 'ok'}")
        if rexc is not None:
            assert isinstance(rexc, EXPECTED_ERRORS), \
                f"{label}: the reference itself broke: {rexc!r}"
            assert cexc is not None, f"{label}: reference raised {rexc!r}, yours returned {c!r}"
            want = type(rexc) if contract.exact_exceptions else error_kind(rexc)
            assert want is not None and isinstance(cexc, want), \
                f"{label}: reference raised {type(rexc).__name__}, yours raised {cexc!r}"
            # Bad input leaves the space as it was.  Exhaustion may not where
            # areas are lazy or pooled: the kernel purges them before it gives
            # up (the invariants compare then); nor may a purge whose on_purge
            # raised (it completes, as does the call that started it).
            if isinstance(rexc, OnPurgeError):
                assert isinstance(cexc, OnPurgeError)
                assert normalise(name, cexc.result) == normalise(name, rexc.result), \
                    f"{label}: OnPurgeError.result {cexc.result!r} != reference {rexc.result!r}"
                assert type(cexc.__cause__) is type(rexc.__cause__)
            elif not (isinstance(rexc, MemoryError) and deferred):
                after = snapshot(self.space, self.common_keys, has("free_areas"))
                assert after == before, f"{label}: your space changed after raising {cexc!r}"
            return None
        if cexc is not None:
            raise AssertionError(f"{label}: reference returned {r!r}, yours raised {cexc!r}") \
                from cexc
        assert normalise(name, c) == normalise(name, r), \
            f"{label}: yours returned {_show(c)}, reference {_show(r)}"
        return r
    ns["both"] = both

    def _alloc(self: Any, size: int, **kwargs: Any) -> Any:
        blocks = [span(a) for a in self.ref.free_areas()]
        nva = self.both("alloc", size, **kwargs)
        if nva is None:
            return multiple()
        end = self.spans[nva] = nva + operator.index(size)
        block = next((b for b in blocks if b[0] <= nva < b[1]), None)
        if block is None:
            event("alloc: served by a pool or after the overflow purge")
        else:
            fit = {(True, True): "full", (True, False): "left edge",
                   (False, True): "right edge", (False, False): "no edge"}[
                (nva == block[0], end == block[1])]
            event(f"alloc fit: {fit}")
        if self.ref.node_of(nva) != self.ref.node_of(end - 1):
            event("alloc spanning nodes")
        return nva
    ns["_alloc"] = _alloc

    @rule(target=areas, size=vst.sizes(g), align=vst.alignments(g), window=vst.windows(g),
          explicit_none=st.booleans())
    def alloc(self: Any, size: int, align: int | None,
              window: tuple[int | None, int | None], explicit_none: bool) -> Any:
        """alloc() with any size, alignment and window (valid or not)."""
        kw = {k: v for k, v in (("align", align), ("vstart", window[0]), ("vend", window[1]))
              if v is not None or explicit_none}
        return self._alloc(size, **kw)
    ns["alloc"] = alloc

    @rule(target=areas, pages=st.integers(1, 3))
    def alloc_small(self: Any, pages: int) -> Any:
        """Small default allocations: keep the space populated."""
        return self._alloc(pages * P)
    ns["alloc_small"] = alloc_small

    def _free(self: Any, name: str, addr: Any) -> None:
        area = self.both(name, addr)
        if area is None or name != "free":
            return
        s, e = span(area)
        bs, be = next(b for b in map(span, self.ref.free_areas()) if b[0] <= s < b[1])
        event(f"free merge: {'prev' if bs < s else 'no prev'}, {'next' if be > e else 'no next'}")
    ns["_free"] = _free

    @rule(addr=areas)
    def free(self: Any, addr: int) -> None:
        """free() of an area's start (a double free once it is freed)."""
        self._free("free", addr)
    ns["free"] = free

    @rule(addr=areas, offset=st.sampled_from([1, P // 2 or 1, P, -1]) | st.integers(1, 1 << 40))
    def free_inside(self: Any, addr: int, offset: int) -> None:
        """free() of an address inside an area but not its start (KeyError)."""
        end = self.spans[addr]
        self._free("free", end - 1 if offset < 0 else min(addr + offset, end - 1))
    ns["free_inside"] = free_inside

    @rule(first=areas, count=st.integers(1, 6), order=st.permutations(range(6)))
    def free_many(self: Any, first: int, count: int, order: list[int]) -> None:
        """Free a run of neighbouring busy areas in some order (merges both ways)."""
        live = [span(a)[0] for a in self.ref]
        i = next((j for j, s in enumerate(live) if s >= first), len(live))
        run = live[i:i + count]
        for k in order:
            if k < len(run):
                self._free("free", run[k])
    ns["free_many"] = free_many

    def _find(self: Any, addr: int) -> None:
        self.both("find", addr)
        if has("node_of"):
            self.both("node_of", addr)
    ns["_find"] = _find

    @rule(addr=areas, where=st.sampled_from(vst.EDGES)
          | st.integers(0, 1023).map(lambda k: Fraction(k, 1024)) | st.integers(0, vst.TOP - 1))
    def find_in(self: Any, addr: int, where: str | Fraction | int) -> None:
        """find() at an edge of an area or of the zones it spans (an EDGES
        name), k/1024 of the way in, or at any offset inside."""
        end = self.spans[addr]
        if isinstance(where, str):
            self._find(vst.edge_address(g, addr, end, where))
        else:
            self._find(_inside_at(addr, end, where))
    ns["find_in"] = find_in

    @rule(hole=st.integers(0, 255), where=st.integers(0, vst.TOP - 1))
    def find_hole(self: Any, hole: int, where: int) -> None:
        """find() in a free block (the hole-th, modulo their number)."""
        holes = [span(a) for a in self.ref.free_areas()]
        if holes:
            s, e = holes[hole % len(holes)]
            self._find(s + where % (e - s))
    ns["find_hole"] = find_hole

    anywhere = ["free", "find"] + [m for m in ("free_lazy", "caller_of") if has(m)]

    @rule(method=st.sampled_from(anywhere), addr=vst.addresses(g))
    def at_any_address(self: Any, method: str, addr: int) -> None:
        """free(), find() (with node_of()), free_lazy() or caller_of() of any
        address, in the space or not."""
        if method == "find":
            self._find(addr)
        elif method == "free_lazy":
            self._free_lazy(addr)
        elif method == "free":
            self._free("free", addr)
        else:
            self.both(method, addr)
    ns["at_any_address"] = at_any_address

    methods = ("alloc", "free", "find") + (("node_of",) if has("node_of") else ())

    @rule(target=areas, bad=vst.bad_calls(g, methods))
    def bad_input(self: Any, bad: vst.Call) -> Any:
        """A call with one bad (or oddly typed) argument, of every documented kind."""
        event(f"bad input: {bad.kind}")
        if bad.name == "alloc":
            return self._alloc(*bad.args, **bad.kwargs)
        self.both(bad.name, *bad.args, **bad.kwargs)
        return multiple()
    ns["bad_input"] = bad_input

    if has("copy"):
        @rule(deep=st.booleans())
        def copy_both(self: Any, deep: bool) -> None:
            """Both go on as copies of themselves (copy.copy / copy.deepcopy):
            the copies carry the same state and every later step compares them."""
            if has("state"):
                cs, rs = self.space.__reduce__()[2], self.ref.__reduce__()[2]
                assert cs == rs, "pickled state: yours != reference"
            before = self._snap(self.space, self.common_keys)
            how = copy.deepcopy if deep else copy.copy
            self.space, self.ref = how(self.space), how(self.ref)
            assert self._snap(self.space, self.common_keys) == before, "the copy differs from the original"
            if has("state"):
                assert self.space.__reduce__()[2] == cs and self.ref.__reduce__()[2] == rs
        ns["copy_both"] = copy_both

    if has("alloc_cpu") or has("alloc_caller"):
        cpus = st.one_of(st.integers(0, 9), st.sampled_from([-1, 1 << 70, 1.0, "0"]))
        callers = st.sampled_from(_CALLERS + [3, b"x"])

        @rule(target=areas, pages=st.integers(1, 6),
              cpu=st.none() | cpus if has("alloc_cpu") else st.none(),
              caller=st.none() | callers if has("alloc_caller") else st.none(),
              align=st.none() | st.integers(0, 3).map(lambda s: P << s))
        def alloc_tagged(self: Any, pages: int, cpu: Any, caller: Any, align: Any) -> Any:
            """alloc() over the whole range with a CPU (its node's pool first)
            and a caller."""
            kw = {k: v for k, v in (("cpu", cpu), ("caller", caller), ("align", align))
                  if v is not None}
            pooled = len(self.ref.pooled_areas())
            out = self._alloc(pages * P, **kw)
            if len(self.ref.pooled_areas()) < pooled:
                event("alloc served from a pool")
            return out
        ns["alloc_tagged"] = alloc_tagged

    if has("free_lazy"):
        def _free_lazy(self: Any, addr: Any) -> None:
            before = self.ref.stats()["purges"]
            self.both("free_lazy", addr)
            if self.ref.stats()["purges"] > before:
                event("free_lazy: automatic purge")
        ns["_free_lazy"] = _free_lazy

        @rule(addr=areas)
        def free_lazy(self: Any, addr: int) -> None:
            """free_lazy() (vfree) of an area's start."""
            self._free_lazy(addr)
        ns["free_lazy"] = free_lazy

    if has("purge"):
        @rule(full=st.sampled_from([False, True, 0, None]))
        def purge(self: Any, full: Any) -> None:
            """purge() (and bad values of full)."""
            n = self.both("purge", full)
            event(f"purge(full={full!r}): {'some' if n else 'none'}")
        ns["purge"] = purge

    if has("drain_pools"):
        @rule()
        def drain_pools(self: Any) -> None:
            """drain_pools() (the shrinker)."""
            self.both("drain_pools")
        ns["drain_pools"] = drain_pools

    if has("areas"):
        @rule(from_addr=st.one_of(vst.addresses(g), st.sampled_from([-1, vst.TOP, 1.5])))
        def walk_areas(self: Any, from_addr: Any) -> None:
            """list(areas(from_addr)) on both, compared."""
            def walk(space: Any) -> tuple[Any, BaseException | None]:
                try:
                    return [span(a) for a in space.areas(from_addr)], None
                except Exception as exc:  # noqa: BLE001 - compared by kind
                    return None, exc
            r, rexc = walk(self.ref)
            c, cexc = walk(self.space)
            same = type(rexc) is type(cexc) or (
                not contract.exact_exceptions and rexc is not None and cexc is not None
                and isinstance(cexc, error_kind(rexc) or ()))
            assert same, f"areas({from_addr!r}): reference {rexc!r}, yours {cexc!r}"
            assert c == r, f"areas({from_addr!r}): yours {c} != reference {r}"
        ns["walk_areas"] = walk_areas

    if has("caller_of"):
        @rule(addr=areas)
        def caller_of(self: Any, addr: int) -> None:
            """caller_of() an area's start."""
            self.both("caller_of", addr)
        ns["caller_of"] = caller_of

    @invariant()
    def same_structure(self: Any) -> None:
        """check() passes on both; len(), the busy areas, the free blocks, the
        shared stats and (where both expose it) the free tree's shape agree."""
        if has("check"):
            self.space.check()
        self.ref.check()
        c, r = self._snap(self.space), self._snap(self.ref)
        for name, cv, rv in zip(("len", "busy areas", "free areas", "stats"), c, r):
            if cv is not None:
                assert cv == rv, f"{name}: yours {cv!r} != reference {rv!r}"
        if has("tree_shape"):
            assert self.space._free_tree_shape() == self.ref._free_tree_shape(), \
                "free-tree shape: yours differs from the kernel's (reference)"
    ns["same_structure"] = same_structure

    if lazy or has("lazy_areas") or has("pooled_areas") or has("vmallocinfo"):
        @invariant()
        def same_lazy_state(self: Any) -> None:
            """Lazy areas, pooled areas, vmallocinfo() and the flushed ranges agree."""
            if has("lazy_areas"):
                assert [span(a) for a in self.space.lazy_areas()] == \
                    [span(a) for a in self.ref.lazy_areas()], "lazy areas differ"
            if has("pooled_areas"):
                assert [(span(a), n) for a, n in self.space.pooled_areas()] == \
                    [(span(a), n) for a, n in self.ref.pooled_areas()], "pooled areas differ"
            if has("vmallocinfo"):
                assert self.space.vmallocinfo() == self.ref.vmallocinfo(), "vmallocinfo differs"
            if has("on_purge"):
                assert self.flushes[0] == self.flushes[1], \
                    f"flushes: yours {self.flushes[0]} != reference {self.flushes[1]}"
        ns["same_lazy_state"] = same_lazy_state

    name = f"{contract.__name__}Machine"
    machine = type(name, (RuleBasedStateMachine,), ns)
    machine.__qualname__ = name
    machine.__module__ = contract.__module__
    return machine

"""Hypothesis strategies for the inputs of the VmapSpace API.

Every strategy is parametrised by a :class:`Geometry` (the space's range,
page size and zone size), so that what it draws is meaningful for that
space: sizes from one page to more than the whole range, alignments from 1
to 2**63, vstart/vend windows (valid and every invalid kind), addresses
inside, at the edges of and outside areas, bad arguments of every kind that
the *Bad input* table of the API reference (docs/api.md) documents, and whole sequences of calls.

    >>> from vmap_core.testing import strategies as vst
    >>> g = vst.Geometry(0x100000, 0x100000 + 64 * 4096)
    >>> calls = vst.operations(g)          # lists of Call, for @given
    >>> size = vst.sizes(g)                # bytes, a multiple of the page size

Strategies shrink towards small, simple values: one page, no alignment, no
window, the first area.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from hypothesis import strategies as st

__all__ = ["TOP", "Geometry", "Index", "Call", "sizes", "alignments", "windows",
           "addresses", "inside", "edges", "EDGES", "bad_values", "bad_calls",
           "operations", "BAD_KINDS"]

TOP = 1 << 64
"""One past the highest address (addresses are 64-bit)."""


@dataclass(frozen=True)
class Geometry:
    """The shape of a space: [start, end), its page size, its zone size.

    ``zone_size`` is the span of addresses per node (the kernel's
    ``vmap_zone_size``); None means 16 pages, which is only used to aim
    addresses at zone edges.
    """

    start: int
    end: int
    page_size: int = 4096
    zone_size: int | None = None

    def __post_init__(self) -> None:
        p = self.page_size
        if p <= 0 or p & (p - 1):
            raise ValueError("page_size must be a power of two")
        if not 0 <= self.start < self.end <= TOP or self.start % p or self.end % p:
            raise ValueError("need 0 <= start < end <= 2**64, both multiples of page_size")

    @property
    def pages(self) -> int:
        """Pages in [start, end)."""
        return (self.end - self.start) // self.page_size

    @property
    def zone(self) -> int:
        """The zone size used to aim at zone edges."""
        return self.zone_size or 16 * self.page_size


class Index:
    """A non-int object that is an integer through ``__index__`` (valid input)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value})"


def _hexrepr(v: object) -> str:
    if type(v) is int and abs(v) >= 4096:
        return hex(v)
    return repr(v)


class Call:
    """One API call: ``name(*args, **kwargs)``, printed as it would be written.

    ``kind`` says, for a bad call, which documented kind of bad input it is
    (a key of :data:`BAD_KINDS`); empty for a valid call.
    """

    __slots__ = ("name", "args", "kwargs", "kind")

    def __init__(self, name: str, args: tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, kind: str = "") -> None:
        self.name, self.args, self.kwargs, self.kind = name, args, dict(kwargs or {}), kind

    def __call__(self, space: Any) -> Any:
        """Make the call on space and return what it returns."""
        return getattr(space, self.name)(*self.args, **self.kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and (self.name, self.args, self.kwargs, self.kind) == (
            other.name, other.args, other.kwargs, other.kind)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [_hexrepr(a) for a in self.args]
        parts += [f"{k}={_hexrepr(v)}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


# -- valid inputs ------------------------------------------------------------

def sizes(g: Geometry) -> st.SearchStrategy[int]:
    """Sizes in bytes, multiples of the page size: a few pages, up to an
    eighth of the range, up to two pages past the range (which cannot fit),
    the whole range, and a few zones long (areas that span nodes)."""
    n, p = g.pages, g.page_size
    pages = st.one_of(
        st.integers(1, 4),
        st.integers(1, max(1, n // 8)),
        st.integers(1, n + 2),
        st.sampled_from([n, n + 1, max(1, n // 2)]),
        st.integers(1, 6).map(lambda k: min(n + 1, k * g.zone // p + 1)),
    )
    return pages.map(lambda k: k * p)


def alignments(g: Geometry) -> st.SearchStrategy[int | None]:
    """None (the page size), page size << 0..5, any power of two up to
    2**63, and alignments below the page size (which act as the page size)."""
    log2p = g.page_size.bit_length() - 1
    return st.one_of(
        st.none(),
        st.integers(0, 5).map(lambda s: g.page_size << s),
        st.integers(log2p, 63).map(lambda s: 1 << s),
        st.sampled_from([1, 2, 512, g.page_size // 2 or 1]),
    )


def _page(g: Geometry, lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi).map(lambda i: g.start + i * g.page_size)


def windows(g: Geometry, valid: bool | None = None
            ) -> st.SearchStrategy[tuple[int | None, int | None]]:
    """(vstart, vend) pairs; None is "not given".  valid=True: only windows
    inside [start, end], page-aligned and non-empty; False: only invalid
    ones (outside, empty, reversed, unaligned, negative, >= 2**64); None: both."""
    n, p, s, e = g.pages, g.page_size, g.start, g.end

    def both_ends(vs: int) -> st.SearchStrategy[tuple[int | None, int | None]]:
        return st.integers(vs + 1, n).map(lambda ve: (s + vs * p, s + ve * p))

    good = st.one_of(
        st.just((None, None)),
        _page(g, 0, n - 1).map(lambda vs: (vs, None)),
        _page(g, 1, n).map(lambda ve: (None, ve)),
        st.integers(0, n - 1).flatmap(both_ends),
    )
    mid = s + (n // 2) * p
    bad = st.sampled_from([
        (s - p if s >= p else -p, None), (None, e + p), (mid, mid), (mid + p, mid),
        (s + 1, None), (None, e - 1), (-1, None), (s, s), (e, e), (e, None),
        (None, s), (TOP, None), (None, TOP + p),
    ])
    if valid is True:
        return good
    if valid is False:
        return bad
    return st.one_of(good, bad)


def addresses(g: Geometry) -> st.SearchStrategy[int]:
    """Any address in [0, 2**64), biased to the space and two pages around
    it, and to the edges: 0, 2**64 - 1, start, end - 1, end, start - 1."""
    lo = max(0, g.start - 2 * g.page_size)
    hi = min(TOP - 1, g.end + 2 * g.page_size)
    marks = sorted({0, TOP - 1, g.start, g.end - 1, min(g.end, TOP - 1), max(0, g.start - 1)})
    return st.one_of(st.integers(lo, hi), st.sampled_from(marks), st.integers(0, TOP - 1))


def inside(start: int, end: int) -> st.SearchStrategy[int]:
    """An address in [start, end): anywhere, or k/1024 of the way in (far
    into a long area, in other zones and nodes)."""
    return st.integers(start, end - 1) | st.integers(0, 1023).map(
        lambda k: start + (end - start) * k // 1024)


EDGES = ("start", "end - 1", "end", "start - 1", "start + page - 1", "middle",
         "first zone end - 1", "first zone end", "last zone start")
"""The names of the edges of an area that :func:`edges` aims at."""


def edge_address(g: Geometry, start: int, end: int, edge: str) -> int:
    """The address that an edge name of :data:`EDGES` means for [start, end),
    clamped to [0, 2**64)."""
    z = g.zone
    zone_end = (start // z + 1) * z
    addr = {"start": start, "end - 1": end - 1, "end": end, "start - 1": start - 1,
            "start + page - 1": start + g.page_size - 1, "middle": (start + end) // 2,
            "first zone end - 1": zone_end - 1, "first zone end": zone_end,
            "last zone start": (end - 1) // z * z}[edge]
    return min(max(addr, 0), TOP - 1)


def edges(g: Geometry, start: int, end: int) -> st.SearchStrategy[int]:
    """Addresses at the edges of the area [start, end) and of the zones it
    spans (see :data:`EDGES`)."""
    return st.sampled_from(EDGES).map(lambda e: edge_address(g, start, end, e))


# -- bad inputs --------------------------------------------------------------

BAD_KINDS = {
    "not an integer": "TypeError: a float, str, None, list or Fraction where an int goes",
    "size not a positive multiple": "ValueError: size <= 0, not a multiple of page_size, "
                                    "or >= 2**64",
    "align not a power of two": "ValueError: 0, 3, negative, 3 pages, or >= 2**64",
    "window outside": "ValueError: vstart/vend outside [start, end], negative or >= 2**64",
    "window empty": "ValueError: vstart >= vend",
    "window unaligned": "ValueError: vstart or vend not a multiple of page_size",
    "address out of range": "ValueError: a negative address or one >= 2**64",
    "integer-like": "valid: a bool or an __index__ object counts as its integer value",
}
"""The documented kinds of bad input (docs/api.md, *Bad input*), each with the
exception it must raise.  ``free`` of an address that starts no busy area
(KeyError) needs the space's state: the contract's rules make those."""


def _numpy_values(g: Geometry) -> dict[str, list[tuple[str, object]]]:
    try:  # numpy is optional: its scalars are one more input kind
        np: Any = importlib.import_module("numpy")
    except ImportError:
        return {}
    p, s, e = g.page_size, g.start, g.end
    return {
        "size": [("integer-like", np.int64(p)), ("integer-like", np.uint64(2 * p)),
                 ("not an integer", np.float64(p))],
        "align": [("integer-like", np.uint64(4 * p)), ("align not a power of two", np.int32(3))],
        "vstart": [("integer-like", np.uint64(s))],
        "vend": [("integer-like", np.uint64(e - p))],
        "addr": [("integer-like", np.uint64(s)), ("integer-like", np.uint64(e - 1)),
                 ("address out of range", np.int8(-1)), ("not an integer", np.float32(1.0))],
    }


def bad_values(g: Geometry) -> dict[str, list[tuple[str, object]]]:
    """For each argument (size, align, vstart, vend, addr), the values to try
    in it, each with its kind (a key of :data:`BAD_KINDS`).  Includes values
    that are valid in odd forms (bool, __index__ objects, numpy integers when
    numpy is installed), which must be accepted as their integer value."""
    p, s, e = g.page_size, g.start, g.end
    below = s - p if s >= p else -p
    t, szm, al = "not an integer", "size not a positive multiple", "align not a power of two"
    out, emp, una = "window outside", "window empty", "window unaligned"
    ok, addr = "integer-like", "address out of range"
    values: dict[str, list[tuple[str, object]]] = {
        "size": [(t, float(p)), (t, str(p)), (t, None), (t, Fraction(p)), (t, [p]),
                 (szm, 0), (szm, -p), (szm, -1), (szm, 1), (szm, p // 2 or -1), (szm, p + 1),
                 (szm, True), (szm, TOP + p), (szm, 1 << 65), (szm, -TOP), (ok, Index(p)),
                 (ok, Index(2 * p))],
        "align": [(al, 0), (al, 3), (al, -p), (al, 3 * p), (t, float(p)), (t, "x"), (al, TOP),
                  (al, 1 << 70), (al, -1), (ok, True), (ok, Index(2 * p)), (ok, 1 << 63),
                  (ok, 1)],
        "vstart": [(out, below), (out, -1), (emp, e), (out, e + p), (una, s + 1),
                   (una, s + p // 2 if p > 1 else s - 1), (t, float(s)), (t, "0"), (out, TOP),
                   (out, TOP + p), (ok, Index(s + p))],
        "vend": [(emp, s), (out, below), (out, e + p), (una, e - 1), (out, -p), (t, float(e)),
                 (out, TOP + p), (ok, Index(e)), (ok, s + p)],
        "addr": [(addr, -1), (addr, -p), (addr, TOP), (addr, TOP + p), (addr, 1 << 100),
                 (t, float(s)), (t, str(s)), (t, None), (ok, Index(s)), (ok, True),
                 (ok, False), (ok, TOP - 1)],
    }
    for k, extra in _numpy_values(g).items():
        values[k] += extra
    return values


def bad_calls(g: Geometry, methods: tuple[str, ...] = ("alloc", "free", "find")
              ) -> st.SearchStrategy[Call]:
    """Calls with one bad (or oddly typed) argument: ``alloc(page, **{arg: v})``
    for ``arg`` in size/align/vstart/vend, and ``free(v)`` / ``find(v)`` / any
    other one-address method in ``methods``."""
    values = bad_values(g)
    per_method: list[st.SearchStrategy[Call]] = []
    if "alloc" in methods:
        # each argument as likely as the others, as each method
        per_method.append(st.one_of(
            st.sampled_from([Call("alloc", (v,), {}, kind) for kind, v in values["size"]]),
            *[st.sampled_from([Call("alloc", (g.page_size,), {which: v}, kind)
                               for kind, v in values[which]])
              for which in ("align", "vstart", "vend")]))
    per_method += [st.sampled_from([Call(m, (v,), {}, kind) for kind, v in values["addr"]])
                   for m in methods if m != "alloc"]
    return st.one_of(per_method)


# -- whole sequences ---------------------------------------------------------

def operations(g: Geometry, *, max_calls: int = 30, lazy: bool = False
               ) -> st.SearchStrategy[list[Call]]:
    """Sequences of calls on a fresh space of geometry g: alloc (sizes,
    alignments, windows), free and find at page-aligned addresses of the
    range (so that they hit the starts of earlier areas, their insides and
    double frees), find anywhere, and bad calls; with lazy=True also
    free_lazy, purge and drain_pools.  For stateless tests; the state
    machine of :class:`vmap_core.testing.VmapContract` aims at live areas."""
    def alloc(size: int, align: int | None, window: tuple[int | None, int | None]) -> Call:
        kw = {k: v for k, v in (("align", align), ("vstart", window[0]), ("vend", window[1]))
              if v is not None}
        return Call("alloc", (size,), kw)

    small = st.integers(0, min(g.pages, 64) - 1).map(lambda i: g.start + i * g.page_size)
    one = [
        st.builds(alloc, sizes(g), alignments(g), windows(g)),
        st.integers(1, 3).map(lambda k: Call("alloc", (k * g.page_size,))),
        small.map(lambda a: Call("free", (a,))),
        st.one_of(small, addresses(g)).map(lambda a: Call("find", (a,))),
        bad_calls(g),
    ]
    if lazy:
        one += [small.map(lambda a: Call("free_lazy", (a,))),
                st.booleans().map(lambda f: Call("purge", (f,))),
                st.just(Call("drain_pools"))]
    return st.lists(st.one_of(one), max_size=max_calls)


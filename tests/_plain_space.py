"""A plain-Python range allocator written from scratch, as a user would
write one (alloc/free/find only), and three deliberately wrong variants
for the conformance kit's tests (tests/test_contract.py).

PlainSpace keeps busy areas in a dict and free blocks in a sorted list;
alloc is the exact lowest fit within [vstart, vend) with alignment, free
coalesces with both neighbours, find bisects.  Bad input raises what the
README's *Bad input* table says, before anything changes.
"""

from __future__ import annotations

import bisect
import operator

TOP = 1 << 64


class Area:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end, self.size = start, end, end - start

    def __repr__(self) -> str:
        return f"Area({self.start:#x}, {self.end:#x})"


def _int(value: object, name: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer") from None


class PlainSpace:
    """alloc/free/find over [start, end) in units of page_size."""

    def __init__(self, start: int, end: int, page_size: int = 4096) -> None:
        self.start, self.end, self.page_size = start, end, page_size
        self.busy: dict[int, int] = {}
        self.starts: list[int] = []
        self.holes: list[tuple[int, int]] = [(start, end)]

    # -- checks --------------------------------------------------------------
    def _addr(self, value: object) -> int:
        a = _int(value, "addr")
        if not 0 <= a < TOP:
            raise ValueError("addr must be in [0, 2**64)")
        return a

    def _request(self, size: object, align: object, vstart: object, vend: object
                 ) -> tuple[int, int, int, int]:
        p = self.page_size
        sz = _int(size, "size")
        al = p if align is None else _int(align, "align")
        vs = self.start if vstart is None else _int(vstart, "vstart")
        ve = self.end if vend is None else _int(vend, "vend")
        if sz <= 0 or sz % p or sz > TOP:
            raise ValueError("size must be a positive multiple of page_size")
        if al <= 0 or al & (al - 1) or al >= TOP:
            raise ValueError("align must be a power of two below 2**64")
        if not self.start <= vs < ve <= self.end or vs % p or ve % p:
            raise ValueError("bad vstart/vend")
        return sz, max(al, p), vs, ve

    # -- the API -------------------------------------------------------------
    def candidates(self) -> list[tuple[int, int]]:
        """The free blocks in the order alloc tries them: lowest first."""
        return self.holes

    def alloc(self, size: object, align: object = None, vstart: object = None,
              vend: object = None) -> int:
        sz, al, vs, ve = self._request(size, align, vstart, vend)
        for s, e in self.candidates():
            nva = -(-max(s, vs) // al) * al
            if nva + sz <= e:
                if nva + sz > ve:
                    break                       # the first fit lies past vend
                self._carve(s, e, nva, nva + sz)
                return nva
        raise MemoryError(f"no room for {sz:#x} bytes")

    def _carve(self, s: int, e: int, a: int, b: int) -> None:
        i = self.holes.index((s, e))
        self.holes[i:i + 1] = [h for h in ((s, a), (b, e)) if h[0] < h[1]]
        self.busy[a] = b
        bisect.insort(self.starts, a)

    def free(self, addr: object) -> Area:
        a = self._addr(addr)
        if a not in self.busy:
            raise KeyError(addr)
        b = self.busy.pop(a)
        self.starts.remove(a)
        self.give_back(a, b)
        return Area(a, b)

    def give_back(self, a: int, b: int) -> None:
        """Put [a, b) back among the free blocks, merged with its neighbours."""
        i = bisect.bisect(self.holes, (a, b))
        if i < len(self.holes) and self.holes[i][0] == b:
            b = self.holes.pop(i)[1]
        if i and self.holes[i - 1][1] == a:
            i -= 1
            a = self.holes.pop(i)[0]
        self.holes.insert(i, (a, b))

    def find(self, addr: object) -> Area | None:
        a = self._addr(addr)
        i = bisect.bisect_right(self.starts, a) - 1
        if i >= 0 and a < self.busy[self.starts[i]]:
            return Area(self.starts[i], self.busy[self.starts[i]])
        return None

    def __len__(self) -> int:
        return len(self.busy)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter([Area(s, self.busy[s]) for s in self.starts])

    def free_areas(self) -> list[Area]:
        return [Area(s, e) for s, e in self.holes]


class HighestFit(PlainSpace):
    """Wrong: tries the free blocks from the highest down."""

    def candidates(self) -> list[tuple[int, int]]:
        return self.holes[::-1]


class NoMerge(PlainSpace):
    """Wrong: a freed area goes back as a block of its own, never merged."""

    def give_back(self, a: int, b: int) -> None:
        bisect.insort(self.holes, (a, b))


class ZoneBlindFind(PlainSpace):
    """Wrong: find looks only at the areas that start in the address's own
    zone (zone_size bytes), so it misses an area that spans two zones when
    asked about an address in the second."""

    zone_size = 2 * 4096

    def find(self, addr: object) -> Area | None:
        area = super().find(addr)
        a = self._addr(addr)
        if area is not None and area.start // self.zone_size != a // self.zone_size:
            return None
        return area

"""ReferenceSpace: the allocator written for clarity, the oracle of the tests.

Same API and same results as :class:`vmap_core.VmapSpace`, with the standard
library only: busy areas in a dict plus a sorted list of starts, free blocks in
a sorted list scanned linearly.  It is deliberately slow and obvious; never
optimise it, its job is to be trusted.  Lock modes are accepted and checked but
change nothing here (there is no concurrency to model).
"""

from __future__ import annotations

import array
import bisect
import operator
import os

from ._errors import VmapExhausted

ADDR_LIMIT = 1 << 64          # addresses are unsigned 64-bit: [0, 2**64)
MISS = ADDR_LIMIT - 1         # find_many()'s answer for an address no area holds
MAX_PAGE_SIZE = 1 << 40
MAX_NODES = 1024
LOCK_MODES = ("node", "global", "rwlock", "optimistic")


class VmapArea:
    """An immutable ``[start, end)`` range; equal by ``(start, end)``."""

    __slots__ = ("_start", "_end")

    def __init__(self, start: int, end: int) -> None:
        start = operator.index(start)
        end = operator.index(end)
        if not 0 <= start < end <= ADDR_LIMIT:
            raise ValueError("VmapArea needs 0 <= start < end <= 2**64")
        object.__setattr__(self, "_start", start)
        object.__setattr__(self, "_end", end)

    def __setattr__(self, name, value):
        raise AttributeError("VmapArea is immutable")

    start = property(lambda self: self._start, doc="first address")
    end = property(lambda self: self._end, doc="one past the last address")
    size = property(lambda self: self._end - self._start, doc="end - start")

    def __iter__(self):
        return iter((self._start, self._end))

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return (self._start, self._end) == (other._start, other._end)

    def __hash__(self):
        return hash((self._start, self._end))

    def __repr__(self):
        return f"VmapArea(start={self._start:#x}, end={self._end:#x})"


def _index(value, name):
    """Integers only (anything with __index__), else TypeError."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def _align_up(x: int, align: int) -> int:
    return (x + align - 1) & -align


def _u64_view(buf, name, writable):
    """A flat memoryview of uint64 items, else TypeError."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"{name} must be a buffer of unsigned 64-bit integers") from None
    if view.format not in ("Q", "L", "<Q", "=Q", "<L", "=L") or view.itemsize != 8 or view.ndim != 1:
        raise TypeError(f"{name} must be a buffer of unsigned 64-bit integers, not {view.format!r}")
    if writable and view.readonly:
        raise TypeError(f"{name} must be writable")
    return view


def default_nr_nodes() -> int:
    """The kernel's nr_vmap_nodes: number of CPUs, clamped to 1..128."""
    return max(1, min(os.cpu_count() or 1, 128))


class ReferenceSpace:
    """Pure-Python twin of :class:`vmap_core.VmapSpace` (see its docs)."""

    def __init__(self, start, end, *, page_size=4096, nr_nodes=None,
                 zone_size=None, lock="node"):
        start = _index(start, "start")
        end = _index(end, "end")
        page_size = _index(page_size, "page_size")
        if nr_nodes is not None:
            nr_nodes = _index(nr_nodes, "nr_nodes")
        if zone_size is not None:
            zone_size = _index(zone_size, "zone_size")
        if not isinstance(lock, str):
            raise TypeError(f"lock must be a str, not {type(lock).__name__}")

        if not _is_pow2(page_size) or page_size > MAX_PAGE_SIZE:
            raise ValueError("page_size must be a power of two <= 2**40")
        if not 0 <= start < end <= ADDR_LIMIT:
            raise ValueError("need 0 <= start < end <= 2**64")
        if start % page_size or end % page_size:
            raise ValueError("start and end must be multiples of page_size")
        if nr_nodes is None:
            nr_nodes = default_nr_nodes()
        elif not 1 <= nr_nodes <= MAX_NODES:
            raise ValueError(f"nr_nodes must be in 1..{MAX_NODES}")
        if zone_size is None:
            zone_size = 16 * page_size
        elif zone_size <= 0 or zone_size % page_size or zone_size >= ADDR_LIMIT:
            raise ValueError("zone_size must be a positive multiple of page_size below 2**64")
        if lock not in LOCK_MODES:
            raise ValueError(f"lock must be one of {LOCK_MODES}, not {lock!r}")

        self.start, self.end = start, end
        self.page_size, self.nr_nodes = page_size, nr_nodes
        self.zone_size, self.lock = zone_size, lock
        self._busy: dict[int, int] = {}        # start -> end
        self._busy_starts: list[int] = []      # sorted
        self._free: list[list[int]] = [[start, end]]   # sorted, coalesced [start, end)

    # -- helpers -------------------------------------------------------------
    def node_of(self, addr: int) -> int:
        """addr_to_node_id(): the node that holds an area starting at addr."""
        return (addr // self.zone_size) % self.nr_nodes

    def _addr(self, value, name):
        value = _index(value, name)
        if not 0 <= value < ADDR_LIMIT:
            raise ValueError(f"{name} must be in [0, 2**64)")
        return value

    # -- allocation ----------------------------------------------------------
    def alloc(self, size, align=None, vstart=None, vend=None):
        size = _index(size, "size")
        align = self.page_size if align is None else _index(align, "align")
        vstart = self.start if vstart is None else _index(vstart, "vstart")
        vend = self.end if vend is None else _index(vend, "vend")

        if size <= 0 or size % self.page_size or size > ADDR_LIMIT:
            raise ValueError("size must be a positive multiple of page_size")
        if not _is_pow2(align) or align >= ADDR_LIMIT:
            raise ValueError("align must be a power of two below 2**64")
        if not self.start <= vstart < vend <= self.end:
            raise ValueError("need start <= vstart < vend <= end")
        if vstart % self.page_size or vend % self.page_size:
            raise ValueError("vstart and vend must be multiples of page_size")

        # The kernel's find_vmap_lowest_linear_match(), for every alignment.
        for block in self._free:
            bstart, bend = block
            if bend <= vstart:
                continue
            nva = _align_up(max(bstart, vstart), align)
            if nva + size <= bend:
                break
        else:
            raise VmapExhausted(f"no free block fits size={size:#x} align={align:#x}")
        if nva + size > vend:
            raise VmapExhausted(f"lowest fit {nva:#x} ends past vend={vend:#x}")

        # va_clip(): full fit, left edge, right edge or no edge.
        i = self._free.index(block)
        pieces = [p for p in ([bstart, nva], [nva + size, bend]) if p[0] < p[1]]
        self._free[i:i + 1] = pieces
        self._busy[nva] = nva + size
        bisect.insort(self._busy_starts, nva)
        return nva

    def free(self, addr):
        addr = self._addr(addr, "addr")
        end = self._busy.get(addr)
        if end is None:
            raise KeyError(addr)
        del self._busy[addr]
        self._busy_starts.pop(bisect.bisect_left(self._busy_starts, addr))
        # merge_or_add_vmap_area(): insert, then merge with both neighbours.
        i = bisect.bisect_left(self._free, [addr, end])
        self._free.insert(i, [addr, end])
        if i + 1 < len(self._free) and self._free[i + 1][0] == end:
            self._free[i][1] = self._free.pop(i + 1)[1]
        if i > 0 and self._free[i - 1][1] == addr:
            self._free[i - 1][1] = self._free.pop(i)[1]
        return VmapArea(addr, end)

    # -- lookup --------------------------------------------------------------
    def find(self, addr):
        addr = self._addr(addr, "addr")
        i = bisect.bisect_right(self._busy_starts, addr) - 1
        if i >= 0:
            start = self._busy_starts[i]
            if addr < self._busy[start]:
                return VmapArea(start, self._busy[start])
        return None

    def find_many(self, addrs, out=None):
        """find() for each address of a buffer of unsigned 64-bit integers."""
        addrs = _u64_view(addrs, "addrs", writable=False)
        if out is None:
            out = array.array("Q", bytes(8 * len(addrs)))
        view = _u64_view(out, "out", writable=True)
        if len(view) != len(addrs):
            raise ValueError(f"out has {len(view)} items, addrs {len(addrs)}")
        for i, addr in enumerate(addrs):
            area = self.find(addr)
            view[i] = MISS if area is None else area.start
        return out

    def check_copy(self, addr, n):
        """check_heap_object(): ValueError unless one area holds [addr, addr + n)."""
        addr = self._addr(addr, "addr")
        n = self._addr(n, "n")
        area = self.find(addr)
        if area is None:
            raise ValueError(f"usercopy: {addr:#x} is not in a vmap area")
        if addr + n > area.end:
            raise ValueError(f"usercopy: [{addr:#x}, +{n:#x}) runs past the end of its area")

    def __len__(self):
        return len(self._busy)

    def __iter__(self):
        return iter([VmapArea(s, self._busy[s]) for s in self._busy_starts])

    def free_areas(self):
        return [VmapArea(s, e) for s, e in self._free]

    # -- introspection -------------------------------------------------------
    def stats(self):
        node_areas = [0] * self.nr_nodes
        for s in self._busy_starts:
            node_areas[self.node_of(s)] += 1
        return {
            "busy_areas": len(self._busy),
            "busy_bytes": sum(e - s for s, e in self._busy.items()),
            "free_areas": len(self._free),
            "free_bytes": sum(e - s for s, e in self._free),
            "largest_free": max((e - s for s, e in self._free), default=0),
            "nr_nodes": self.nr_nodes,
            "node_areas": node_areas,
            "lock": self.lock,
        }

    def check(self):
        """Free and busy blocks tile [start, end) exactly; free ones coalesced."""
        assert self._busy_starts == sorted(self._busy), "busy order"
        pieces = sorted([(s, e, "busy") for s, e in self._busy.items()]
                        + [(s, e, "free") for s, e in self._free])
        pos, prev_kind = self.start, None
        for s, e, kind in pieces:
            assert s == pos, f"tiling: gap or overlap at {pos:#x}"
            assert s < e, "empty block"
            assert not (kind == prev_kind == "free"), f"coalescing: free blocks touch at {s:#x}"
            pos, prev_kind = e, kind
        assert pos == self.end, "tiling: blocks do not reach end"

    def __repr__(self):
        return (f"ReferenceSpace({self.start:#x}, {self.end:#x}, busy={len(self)}, "
                f"free={len(self._free)}, nr_nodes={self.nr_nodes}, lock={self.lock!r})")


__all__ = ["MISS", "ReferenceSpace", "VmapArea", "VmapExhausted", "default_nr_nodes"]

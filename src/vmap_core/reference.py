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
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, TypeVar, overload

from ._errors import VmapExhausted
from .types import LockMode, SpaceState, SpaceStats, UsercopyMode

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

ADDR_LIMIT = 1 << 64          # addresses are unsigned 64-bit: [0, 2**64)
MISS = ADDR_LIMIT - 1         # find_many()'s answer for an address no area holds
MAX_PAGE_SIZE = 1 << 40
MAX_NODES = 1024
LOCK_MODES: tuple[LockMode, ...] = ("node", "global", "rwlock", "optimistic")
#: The constructor's keyword arguments, as attributes of a space: what pickle
#: and copy pass to the new space (a new argument is one more name here).
SPACE_INIT_ARGS = ("page_size", "nr_nodes", "zone_size", "lock", "lazy_max_pages", "on_purge")
STATE_VERSION = 1

OnPurge = Callable[[int, int], object]
_B = TypeVar("_B", bound="Buffer")
_W = TypeVar("_W", bound="Buffer")


class VmapArea:
    """An immutable ``[start, end)`` range: equal, hashed and ordered by
    ``(start, end)``; ``addr in area`` means ``start <= addr < end``; unpacks
    as ``start, end = area`` (so no len(): see the core's VmapArea)."""

    __slots__ = ("_start", "_end")
    _start: int
    _end: int

    def __init__(self, start: SupportsIndex, end: SupportsIndex) -> None:
        s = operator.index(start)
        e = operator.index(end)
        if not 0 <= s < e <= ADDR_LIMIT:
            raise ValueError("VmapArea needs 0 <= start < end <= 2**64")
        object.__setattr__(self, "_start", s)
        object.__setattr__(self, "_end", e)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("VmapArea is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("VmapArea is immutable")

    @property
    def start(self) -> int:
        """First address."""
        return self._start

    @property
    def end(self) -> int:
        """One past the last address."""
        return self._end

    @property
    def size(self) -> int:
        """end - start."""
        return self._end - self._start

    def __iter__(self) -> Iterator[int]:
        return iter((self._start, self._end))

    def __contains__(self, addr: object) -> bool:
        a = _index(addr, "addr")
        return self._start <= a < self._end

    def _key(self) -> tuple[int, int]:
        return (self._start, self._end)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented       # the core's VmapArea compares with this one
        return self._key() == other._key()

    def __lt__(self, other: object) -> bool:
        return self._key() < other._key() if isinstance(other, VmapArea) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self._key() <= other._key() if isinstance(other, VmapArea) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self._key() > other._key() if isinstance(other, VmapArea) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self._key() >= other._key() if isinstance(other, VmapArea) else NotImplemented

    def __hash__(self) -> int:
        return hash((self._start, self._end))

    def __reduce__(self) -> tuple[type[VmapArea], tuple[int, int]]:
        return (VmapArea, (self._start, self._end))

    def __repr__(self) -> str:
        return f"VmapArea(start={self._start:#x}, end={self._end:#x})"


def _index(value: object, name: str) -> int:
    """Integers only (anything with __index__), else TypeError."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


def _fail(what: str) -> NoReturn:
    """check()'s failure: AssertionError naming the broken invariant (a raise,
    not an assert statement, so that it holds under python -O)."""
    raise AssertionError(what)


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def _align_up(x: int, align: int) -> int:
    return (x + align - 1) & -align


def _u64_view(buf: Any, name: str, writable: bool) -> memoryview:
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


MAX_VA_SIZE_PAGES = 256       # size classes of a node's pool


def default_lazy_max_pages(page_size: int) -> int:
    """lazy_max_pages(): fls(CPUs) * 32 MiB worth of pages."""
    return (os.cpu_count() or 1).bit_length() * (32 << 20) // page_size


def current_cpu() -> int:
    """The default ``cpu`` of alloc(): the calling thread's native id, stable
    for the thread's life (the core computes the same)."""
    return threading.get_native_id()


class ReferenceSpace:
    """Pure-Python twin of :class:`vmap_core.VmapSpace` (see its docs)."""

    def __init__(self, start: SupportsIndex, end: SupportsIndex, *,
                 page_size: SupportsIndex = 4096, nr_nodes: SupportsIndex | None = None,
                 zone_size: SupportsIndex | None = None, lock: LockMode = "node",
                 lazy_max_pages: SupportsIndex | None = None,
                 on_purge: OnPurge | None = None) -> None:
        self._init(_index(start, "start"), _index(end, "end"), _index(page_size, "page_size"),
                   None if nr_nodes is None else _index(nr_nodes, "nr_nodes"),
                   None if zone_size is None else _index(zone_size, "zone_size"), lock,
                   None if lazy_max_pages is None else _index(lazy_max_pages, "lazy_max_pages"),
                   on_purge)

    def _init(self, start: int, end: int, page_size: int, nr_nodes: int | None,
              zone_size: int | None, lock: object, lazy_max_pages: int | None,
              on_purge: object) -> None:
        if not isinstance(lock, str):
            raise TypeError(f"lock must be a str, not {type(lock).__name__}")
        if on_purge is not None and not callable(on_purge):
            raise TypeError("on_purge must be callable or None")

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
        if lazy_max_pages is None:
            lazy_max_pages = default_lazy_max_pages(page_size)
        elif not 0 <= lazy_max_pages < ADDR_LIMIT:
            raise ValueError("lazy_max_pages must be in [0, 2**64)")

        self.start: int = start
        self.end: int = end
        self.page_size: int = page_size
        self.nr_nodes: int = nr_nodes
        self.zone_size: int = zone_size
        self.lock: LockMode = lock  # checked above
        self.lazy_max_pages: int = lazy_max_pages
        self.on_purge: OnPurge | None = on_purge
        self._busy: dict[int, int] = {}        # start -> end
        self._busy_starts: list[int] = []      # sorted
        self._tag: dict[int, int | None] = {}  # start -> node id the area was tagged with
        self._caller: dict[int, str] = {}      # start -> caller, where given
        self._free: list[list[int]] = [[start, end]]   # sorted, coalesced [start, end)
        # Per node: lazily freed areas (start, end, tag), sorted; pools of
        # free areas by size class, each a list whose index 0 is the head.
        self._lazy: list[list[tuple[int, int, int | None]]] = [[] for _ in range(nr_nodes)]
        self._lazy_pages = 0
        self._pools: list[list[list[tuple[int, int]]]] = [
            [[] for _ in range(MAX_VA_SIZE_PAGES)] for _ in range(nr_nodes)]
        self._purges = self._tlb_flushes = self._purged_areas = 0
        self.load_notes: list[str] = []     # from_vmallocinfo(): what was done

    @classmethod
    def from_vmallocinfo(cls, text_or_path: str | bytes | os.PathLike[str],
                         **space_kwargs: Any) -> Self:
        """A space holding exactly the busy areas of a /proc/vmallocinfo dump;
        what was done to build it is in ``load_notes``."""
        from .kernel import vmallocinfo
        space, notes = vmallocinfo.load(text_or_path, cls=cls, **space_kwargs)
        space.load_notes = list(notes)
        return space  # type: ignore[no-any-return]

    # -- helpers -------------------------------------------------------------
    def node_of(self, addr: SupportsIndex) -> int:
        """addr_to_node_id(): the node that holds an area starting at addr."""
        a = self._addr(addr, "addr")
        return (a // self.zone_size) % self.nr_nodes

    def _addr(self, value: object, name: str) -> int:
        v = _index(value, name)
        if not 0 <= v < ADDR_LIMIT:
            raise ValueError(f"{name} must be in [0, 2**64)")
        return v

    def _size_class(self, size: int) -> int | None:
        """size_to_va_pool(): the pool class of an area of size bytes, or None."""
        pages = size // self.page_size
        return pages - 1 if pages <= MAX_VA_SIZE_PAGES else None

    # -- allocation ----------------------------------------------------------
    def alloc(self, size: SupportsIndex, align: SupportsIndex | None = None,
              vstart: SupportsIndex | None = None, vend: SupportsIndex | None = None, *,
              cpu: SupportsIndex | None = None, caller: str | None = None) -> int:
        """alloc_vmap_area(): the lowest fit (see VmapSpace.alloc)."""
        return self._alloc(_index(size, "size"),
                           self.page_size if align is None else _index(align, "align"),
                           self.start if vstart is None else _index(vstart, "vstart"),
                           self.end if vend is None else _index(vend, "vend"),
                           None if cpu is None else _index(cpu, "cpu"), caller)

    def _alloc(self, size: int, align: int, vstart: int, vend: int, cpu: int | None,
               caller: object) -> int:
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, not {type(caller).__name__}")

        if size <= 0 or size % self.page_size or size > ADDR_LIMIT:
            raise ValueError("size must be a positive multiple of page_size")
        if not _is_pow2(align) or align >= ADDR_LIMIT:
            raise ValueError("align must be a power of two below 2**64")
        if not self.start <= vstart < vend <= self.end:
            raise ValueError("need start <= vstart < vend <= end")
        if vstart % self.page_size or vend % self.page_size:
            raise ValueError("vstart and vend must be multiples of page_size")
        if cpu is not None and cpu < 0:
            raise ValueError("cpu must be >= 0")

        # node_alloc(): the whole range and several nodes: try the CPU's pool.
        tag = None
        if vstart == self.start and vend == self.end and self.nr_nodes > 1:
            tag = (current_cpu() if cpu is None else cpu) % self.nr_nodes
            nva = self._pool_take(tag, size, align)
            if nva is not None:
                self._add_busy(nva, nva + size, tag, caller)
                return nva
        try:
            nva = self._carve(size, align, vstart, vend)
        except VmapExhausted:
            self.purge(full=True)       # the overflow path: purge everything, retry once
            nva = self._carve(size, align, vstart, vend)
        self._add_busy(nva, nva + size, tag, caller)
        return nva

    def _pool_take(self, node: int, size: int, align: int) -> int | None:
        """node_pool_del_va(): the head of the class's pool if aligned; else it
        moves to the tail and the pool misses."""
        cls = self._size_class(size)
        if cls is None or not self._pools[node][cls]:
            return None
        pool = self._pools[node][cls]
        start, end = pool[0]
        if start % align:
            pool.append(pool.pop(0))
            return None
        pool.pop(0)
        return start

    def _carve(self, size: int, align: int, vstart: int, vend: int) -> int:
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
        return nva

    def _add_busy(self, start: int, end: int, tag: int | None, caller: str | None) -> None:
        self._busy[start] = end
        bisect.insort(self._busy_starts, start)
        self._tag[start] = tag
        if caller is not None:
            self._caller[start] = caller

    def _unlink_busy(self, addr: SupportsIndex) -> tuple[int, int, int | None]:
        a = self._addr(addr, "addr")
        end = self._busy.get(a)
        if end is None:
            raise KeyError(addr)
        del self._busy[a]
        self._busy_starts.pop(bisect.bisect_left(self._busy_starts, a))
        self._caller.pop(a, None)
        return a, end, self._tag.pop(a)

    def _merge_free(self, addr: int, end: int) -> None:
        # merge_or_add_vmap_area(): insert, then merge with both neighbours.
        i = bisect.bisect_left(self._free, [addr, end])
        self._free.insert(i, [addr, end])
        if i + 1 < len(self._free) and self._free[i + 1][0] == end:
            self._free[i][1] = self._free.pop(i + 1)[1]
        if i > 0 and self._free[i - 1][1] == addr:
            self._free[i - 1][1] = self._free.pop(i)[1]

    def free(self, addr: SupportsIndex) -> VmapArea:
        """free_vmap_area(): free the busy area that starts at addr; KeyError if none."""
        a, end, _ = self._unlink_busy(addr)
        self._merge_free(a, end)
        return VmapArea(a, end)

    # -- lazy free, purge, pools ---------------------------------------------
    def free_lazy(self, addr: SupportsIndex) -> VmapArea:
        """free_vmap_area_noflush(): park the area, unmerged, in a node's lazy tree."""
        a, end, tag = self._unlink_busy(addr)
        self._park_lazy(a, end, tag)
        if self._lazy_pages > self.lazy_max_pages:
            self.purge()
        return VmapArea(a, end)

    def _park_lazy(self, start: int, end: int, tag: int | None) -> None:
        node = self.node_of(start) if tag is None else tag
        bisect.insort(self._lazy[node], (start, end, tag), key=lambda va: va[:2])
        self._lazy_pages += (end - start) // self.page_size

    def purge(self, full: bool = False) -> int:
        """__purge_vmap_area_lazy(): decay every pool, then move every lazy
        area to its node's pool (tagged, fitting a class, not a full purge)
        or back to the free tree.  Returns the number of lazy areas purged."""
        if not isinstance(full, bool):
            raise TypeError("full must be a bool")
        self._purges += 1
        detached: list[list[tuple[int, int, int | None]]] = []
        for node in range(self.nr_nodes):
            self._decay_pool(node, full)
            detached.append(self._lazy[node])
            self._lazy[node] = []
        lazy = [va for per_node in detached for va in per_node]
        if not lazy:
            return 0
        self._tlb_flushes += 1
        flush = (min(va[0] for va in lazy), max(va[1] for va in lazy))
        for node, per_node in enumerate(detached):
            for start, end, tag in per_node:
                self._lazy_pages -= (end - start) // self.page_size
                cls = self._size_class(end - start)
                if not full and tag is not None and cls is not None:
                    self._pools[node][cls].insert(0, (start, end))   # node_pool_add_va()
                else:
                    self._merge_free(start, end)
        self._purged_areas += len(lazy)
        if self.on_purge is not None:
            self.on_purge(*flush)       # flush_tlb_kernel_range() of the union
        return len(lazy)

    def _decay_pool(self, node: int, full: bool) -> int:
        """decay_va_pool_node(): ~25% of each class (all when full) from the head."""
        released = 0
        for pool in self._pools[node]:
            n = len(pool) if full else len(pool) >> 2
            for start, end in pool[:n]:
                self._merge_free(start, end)
            del pool[:n]
            released += n
        return released

    def drain_pools(self) -> int:
        """The shrinker's scan: fully decay every node's pools; returns the
        number of areas given back."""
        return sum(self._decay_pool(node, True) for node in range(self.nr_nodes))

    # -- lookup --------------------------------------------------------------
    def find(self, addr: SupportsIndex) -> VmapArea | None:
        """find_vmap_area(): the busy area with start <= addr < end, or None."""
        a = self._addr(addr, "addr")
        i = bisect.bisect_right(self._busy_starts, a) - 1
        if i >= 0:
            start = self._busy_starts[i]
            if a < self._busy[start]:
                return VmapArea(start, self._busy[start])
        return None

    def __contains__(self, addr: object) -> bool:
        """``addr in space``: some busy area holds addr (a bisection, as find());
        for a VmapArea, it is one of the busy areas.  False for an int outside
        [0, 2**64); TypeError for anything else."""
        if isinstance(addr, VmapArea) or type(addr).__name__ == "VmapArea":
            start, end = addr.start, addr.end  # type: ignore[attr-defined]
            return bool(0 <= start < ADDR_LIMIT and self._busy.get(start) == end)
        a = _index(addr, "addr")
        return 0 <= a < ADDR_LIMIT and self.find(a) is not None

    def areas(self, from_addr: SupportsIndex = 0) -> Iterator[VmapArea]:
        """Busy areas in address order from the first that ends above from_addr
        (find_vmap_area_exceed_addr()); each step finds its place anew."""
        addr = self._addr(from_addr, "from_addr")
        return self._areas_from(addr)

    def _areas_from(self, addr: int) -> Iterator[VmapArea]:
        while True:
            i = bisect.bisect_right(self._busy_starts, addr)
            if i > 0 and self._busy[self._busy_starts[i - 1]] > addr:
                i -= 1
            if i == len(self._busy_starts):
                return
            start = self._busy_starts[i]
            end = self._busy[start]
            yield VmapArea(start, end)
            if end >= ADDR_LIMIT:
                return
            addr = end

    def caller_of(self, addr: SupportsIndex) -> str | None:
        """The caller tag of the busy area that starts at addr (None if untagged)."""
        a = self._addr(addr, "addr")
        if a not in self._busy:
            raise KeyError(addr)
        return self._caller.get(a)

    @overload
    def find_many(self, addrs: _B, out: None = None) -> _B: ...
    @overload
    def find_many(self, addrs: Buffer, out: _W) -> _W: ...

    def find_many(self, addrs: Any, out: Any = None) -> Any:
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

    def check_copy(self, addr: SupportsIndex, n: SupportsIndex) -> None:
        """check_heap_object(): ValueError unless one area holds [addr, addr + n)."""
        a = self._addr(addr, "addr")
        nb = self._addr(n, "n")
        area = self.find(a)
        if area is None:
            raise ValueError(f"usercopy: {a:#x} is not in a vmap area")
        if a + nb > area.end:
            raise ValueError(f"usercopy: [{a:#x}, +{nb:#x}) runs past the end of its area")

    def __len__(self) -> int:
        return len(self._busy)

    def __iter__(self) -> Iterator[VmapArea]:
        return iter([VmapArea(s, self._busy[s]) for s in self._busy_starts])

    def free_areas(self) -> list[VmapArea]:
        """The free blocks, coalesced, in address order."""
        return [VmapArea(s, e) for s, e in self._free]

    def lazy_areas(self) -> list[VmapArea]:
        """Lazily freed areas not yet purged, in address order."""
        return [VmapArea(s, e) for s, e, _ in sorted(va for per_node in self._lazy for va in per_node)]

    def pooled_areas(self) -> list[tuple[VmapArea, int]]:
        """(area, node) for every area in a node's pool, in address order."""
        return sorted(((VmapArea(s, e), node) for node, pools in enumerate(self._pools)
                       for pool in pools for s, e in pool), key=lambda p: p[0].start)

    def vmallocinfo(self) -> str:
        """/proc/vmallocinfo: busy areas node by node (sorted within a node),
        then the lazily freed ones."""
        lines = []
        by_node: list[list[int]] = [[] for _ in range(self.nr_nodes)]
        for s in self._busy_starts:
            by_node[self.node_of(s)].append(s)
        for starts in by_node:
            for s in starts:
                lines.append(_info_line(s, self._busy[s], self._caller.get(s), self.page_size))
        for per_node in self._lazy:
            for s, e, _ in per_node:
                lines.append(f"0x{s:016x}-0x{e:016x} {e - s:7d} unpurged vm_area")
        return "".join(line + "\n" for line in lines)

    # -- introspection -------------------------------------------------------
    def stats(self) -> SpaceStats:
        """Counts and sizes (the core's stats() also has its memory and locks)."""
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
            "lazy_areas": sum(len(per_node) for per_node in self._lazy),
            "lazy_pages": self._lazy_pages,
            "lazy_max_pages": self.lazy_max_pages,
            "pooled_areas": sum(len(p) for pools in self._pools for p in pools),
            "pool_areas": [{c: len(p) for c, p in enumerate(pools) if p} for pools in self._pools],
            "purges": self._purges,
            "tlb_flushes": self._tlb_flushes,
            "purged_areas": self._purged_areas,
        }

    def check(self) -> None:
        """Free, busy, lazy and pooled blocks tile [start, end) exactly; free
        ones are coalesced; lazy and pooled ones sit where they belong.
        AssertionError names the first broken invariant (also under python -O)."""
        if self._busy_starts != sorted(self._busy):
            _fail("busy order")
        if set(self._tag) != set(self._busy):
            _fail("busy tags")
        pieces = [(s, e, "busy") for s, e in self._busy.items()]
        pieces += [(s, e, "free") for s, e in self._free]
        lazy_pages = 0
        for node, per_node in enumerate(self._lazy):
            if per_node != sorted(per_node, key=lambda va: va[:2]):
                _fail("lazy order")
            for s, e, tag in per_node:
                if node != (self.node_of(s) if tag is None else tag):
                    _fail("lazy node")
                pieces.append((s, e, "lazy"))
                lazy_pages += (e - s) // self.page_size
        if lazy_pages != self._lazy_pages:
            _fail("lazy page count")
        for pools in self._pools:
            for cls, pool in enumerate(pools):
                for s, e in pool:
                    if self._size_class(e - s) != cls:
                        _fail("pool size class")
                    pieces.append((s, e, "pooled"))
        pieces.sort()
        pos, prev_kind = self.start, ""
        for s, e, kind in pieces:
            if s != pos:
                _fail(f"tiling: gap or overlap at {pos:#x}")
            if s >= e:
                _fail("empty block")
            if kind == prev_kind == "free":
                _fail(f"coalescing: free blocks touch at {s:#x}")
            pos, prev_kind = e, kind
        if pos != self.end:
            _fail("tiling: blocks do not reach end")

    # -- copies: pickle, copy, deepcopy ----------------------------------------
    def __reduce__(self) -> tuple[Callable[..., ReferenceSpace], tuple[Any, ...], SpaceState]:
        """As VmapSpace.__reduce__: constructor arguments, then the areas."""
        kwargs = {name: getattr(self, name) for name in SPACE_INIT_ARGS}
        return (rebuild_space, (type(self), self.start, self.end, kwargs), self._get_state())

    def _get_state(self) -> SpaceState:
        return {
            "version": STATE_VERSION,
            "busy": [(s, self._busy[s], self._tag[s], self._caller.get(s))
                     for s in self._busy_starts],
            "lazy": sorted(va for per_node in self._lazy for va in per_node),
            "pooled": [(node, s, e) for node, pools in enumerate(self._pools)
                       for pool in pools for s, e in pool],
            "load_notes": list(self.load_notes),
        }

    def __setstate__(self, state: object) -> None:
        """Give a new, empty space the areas of a state from __reduce__()."""
        busy, lazy, pooled, notes = check_space_state(self, state)
        if self._busy or self._lazy_pages or any(p for pools in self._pools for p in pools) \
                or self._free != [[self.start, self.end]]:
            raise ValueError("__setstate__ needs a new, empty space")
        for start, end, tag, caller in busy:
            self._carve(end - start, self.page_size, start, end)
            self._add_busy(start, end, tag, caller)
        for start, end, tag in lazy:
            self._carve(end - start, self.page_size, start, end)
            self._park_lazy(start, end, tag)
        for node, start, end in pooled:
            self._carve(end - start, self.page_size, start, end)
            cls = self._size_class(end - start)
            if cls is None:             # check_space_state() refused these already
                raise ValueError("state: a pooled area too large for a size class")
            self._pools[node][cls].append((start, end))
        self.load_notes = notes

    def __repr__(self) -> str:
        return (f"ReferenceSpace({self.start:#x}, {self.end:#x}, busy={len(self)}, "
                f"free={len(self._free)}, nr_nodes={self.nr_nodes}, lock={self.lock!r})")


def rebuild_space(cls: Callable[..., Any], start: int, end: int,
                  kwargs: dict[str, Any]) -> Any:
    """Pickle's and copy's constructor of a space (either implementation)."""
    return cls(start, end, **kwargs)


def check_space_state(space: Any, state: object) -> tuple[
        list[tuple[int, int, int | None, str | None]], list[tuple[int, int, int | None]],
        list[tuple[int, int, int]], list[str]]:
    """The areas of a pickled state (a :class:`vmap_core.types.SpaceState`),
    checked against the space that is to hold them: (busy, lazy, pooled,
    load_notes).  ValueError for anything the two implementations could not
    have produced; nothing is changed."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"not a vmap_core space state of version {STATE_VERSION}")
    page, nodes = space.page_size, space.nr_nodes

    def rng(start: object, end: object) -> tuple[int, int]:
        if type(start) is not int or type(end) is not int:
            raise ValueError("state: area bounds must be ints")
        if not (space.start <= start < end <= space.end) or start % page or end % page:
            raise ValueError(f"state: [{start:#x}, {end:#x}) is not a page-aligned "
                             "range of the space")
        return start, end

    def node(tag: object, none_ok: bool = True) -> int | None:
        if tag is None and none_ok:
            return None
        if type(tag) is not int or not 0 <= tag < nodes:
            raise ValueError(f"state: {tag!r} is not a node of this space")
        return tag

    try:
        busy = [(*rng(s, e), node(t), c) for s, e, t, c in state["busy"]]
        lazy = [(*rng(s, e), node(t)) for s, e, t in state["lazy"]]
        pooled = [(node(n, False), *rng(s, e)) for n, s, e in state["pooled"]]
        notes = list(state.get("load_notes", []))
    except (KeyError, TypeError) as e:
        raise ValueError(f"state: malformed ({e})") from None
    if any(c is not None and not isinstance(c, str) for *_, c in busy):
        raise ValueError("state: a caller must be a str or None")
    if any((e - s) // page > MAX_VA_SIZE_PAGES for _, s, e in pooled):
        raise ValueError(f"state: a pooled area larger than {MAX_VA_SIZE_PAGES} pages")
    spans = sorted([(s, e) for s, e, *_ in busy + lazy] + [(s, e) for _, s, e in pooled])
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
        raise ValueError("state: areas overlap")
    if not all(isinstance(n, str) for n in notes):
        raise ValueError("state: load_notes must be strings")
    return busy, lazy, [(n, s, e) for n, s, e in pooled if n is not None], notes


def _info_line(start: int, end: int, caller: str | None, page_size: int) -> str:
    """One /proc/vmallocinfo line of a busy area (s_show())."""
    if caller is None:
        return f"0x{start:016x}-0x{end:016x} {end - start:7d} vm_map_ram"
    return f"0x{start:016x}-0x{end:016x} {end - start:7d} {caller} pages={(end - start) // page_size} vmalloc"


__all__ = ["LOCK_MODES", "MISS", "SPACE_INIT_ARGS", "LockMode", "ReferenceSpace",
           "SpaceState", "SpaceStats", "UsercopyMode", "VmapArea", "VmapExhausted",
           "check_space_state", "current_cpu", "default_lazy_max_pages", "default_nr_nodes",
           "rebuild_space"]

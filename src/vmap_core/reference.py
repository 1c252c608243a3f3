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
import sys
import threading

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


_U64_FORMATS = ("Q", "L", "<Q", "=Q", "@Q", "<L", "=L", "@L")   # native uint64 on 64-bit Linux


def _u64_view(buf, name, writable):
    """A flat memoryview of native uint64 items (format "Q"), else TypeError."""
    if buf is None:
        raise TypeError(f"{name} must be a buffer of unsigned 64-bit integers, not None")
    try:
        view = memoryview(buf)
        if view.format not in _U64_FORMATS or view.itemsize != 8 or view.ndim != 1:
            raise TypeError(f"{name} must be a buffer of unsigned 64-bit integers, "
                            f"not format {view.format!r} with {view.ndim} dimensions")
        if writable and view.readonly:
            raise TypeError(f"{name} must be writable")
        # memoryview indexes only native formats: view memory exported as
        # "<Q" (ctypes, an unaligned numpy view ...) as "Q", through a copy
        # for a read-only strided one.
        if view.format in ("Q", "L", "@Q", "@L"):
            return view
        if view.c_contiguous:
            return view.cast("B").cast("Q")
        if not writable:
            return memoryview(view.tobytes()).cast("Q")
        raise TypeError(f"{name}: a strided buffer in format {view.format!r} cannot be written "
                        "by the reference (the core can)")
    except (ValueError, BufferError) as e:      # released, closed, not castable
        raise TypeError(f"{name} must be a usable buffer of unsigned 64-bit integers: {e}") from None


def _new_u64_like(addrs, n):
    """find_many()'s default out: numpy in, numpy out; else array.array('Q')."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(addrs, np.ndarray):
        return np.zeros(n, dtype=np.uint64)
    return array.array("Q", bytes(8 * n))


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

    def __init__(self, start, end, *, page_size=4096, nr_nodes=None,
                 zone_size=None, lock="node", lazy_max_pages=None, on_purge=None):
        start = _index(start, "start")
        end = _index(end, "end")
        page_size = _index(page_size, "page_size")
        if nr_nodes is not None:
            nr_nodes = _index(nr_nodes, "nr_nodes")
        if zone_size is not None:
            zone_size = _index(zone_size, "zone_size")
        if lazy_max_pages is not None:
            lazy_max_pages = _index(lazy_max_pages, "lazy_max_pages")
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

        self.start, self.end = start, end
        self.page_size, self.nr_nodes = page_size, nr_nodes
        self.zone_size, self.lock = zone_size, lock
        self.lazy_max_pages, self.on_purge = lazy_max_pages, on_purge
        self._busy: dict[int, int] = {}        # start -> end
        self._busy_starts: list[int] = []      # sorted
        self._tag: dict[int, int | None] = {}  # start -> node id the area was tagged with
        self._caller: dict[int, str] = {}      # start -> caller, where given
        self._free: list[list[int]] = [[start, end]]   # sorted, coalesced [start, end)
        # Per node: lazily freed areas [start, end, tag], sorted; pools of
        # free areas by size class, each a list whose index 0 is the head.
        self._lazy: list[list[list]] = [[] for _ in range(nr_nodes)]
        self._lazy_pages = 0
        self._pools = [[[] for _ in range(MAX_VA_SIZE_PAGES)] for _ in range(nr_nodes)]
        self._purges = self._tlb_flushes = self._purged_areas = 0
        self.load_notes: list[str] = []     # from_vmallocinfo(): what was done

    @classmethod
    def from_vmallocinfo(cls, text_or_path, **space_kwargs):
        """A space holding exactly the busy areas of a /proc/vmallocinfo dump;
        what was done to build it is in ``load_notes``."""
        from . import vmallocinfo
        space, notes = vmallocinfo.load(text_or_path, cls=cls, **space_kwargs)
        space.load_notes = list(notes)
        return space

    # -- helpers -------------------------------------------------------------
    def node_of(self, addr: int) -> int:
        """addr_to_node_id(): the node that holds an area starting at addr."""
        addr = self._addr(addr, "addr")
        return (addr // self.zone_size) % self.nr_nodes

    def _addr(self, value, name):
        value = _index(value, name)
        if not 0 <= value < ADDR_LIMIT:
            raise ValueError(f"{name} must be in [0, 2**64)")
        return value

    def _size_class(self, size: int):
        """size_to_va_pool(): the pool class of an area of size bytes, or None."""
        pages = size // self.page_size
        return pages - 1 if pages <= MAX_VA_SIZE_PAGES else None

    # -- allocation ----------------------------------------------------------
    def alloc(self, size, align=None, vstart=None, vend=None, *, cpu=None, caller=None):
        size = _index(size, "size")
        align = self.page_size if align is None else _index(align, "align")
        vstart = self.start if vstart is None else _index(vstart, "vstart")
        vend = self.end if vend is None else _index(vend, "vend")
        if cpu is not None:
            cpu = _index(cpu, "cpu")
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

    def _pool_take(self, node, size, align):
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

    def _carve(self, size, align, vstart, vend):
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

    def _add_busy(self, start, end, tag, caller):
        self._busy[start] = end
        bisect.insort(self._busy_starts, start)
        self._tag[start] = tag
        if caller is not None:
            self._caller[start] = caller

    def _unlink_busy(self, addr):
        addr = self._addr(addr, "addr")
        end = self._busy.get(addr)
        if end is None:
            raise KeyError(addr)
        del self._busy[addr]
        self._busy_starts.pop(bisect.bisect_left(self._busy_starts, addr))
        self._caller.pop(addr, None)
        return addr, end, self._tag.pop(addr)

    def _merge_free(self, addr, end):
        # merge_or_add_vmap_area(): insert, then merge with both neighbours.
        i = bisect.bisect_left(self._free, [addr, end])
        self._free.insert(i, [addr, end])
        if i + 1 < len(self._free) and self._free[i + 1][0] == end:
            self._free[i][1] = self._free.pop(i + 1)[1]
        if i > 0 and self._free[i - 1][1] == addr:
            self._free[i - 1][1] = self._free.pop(i)[1]

    def free(self, addr):
        addr, end, _ = self._unlink_busy(addr)
        self._merge_free(addr, end)
        return VmapArea(addr, end)

    # -- lazy free, purge, pools ---------------------------------------------
    def free_lazy(self, addr):
        """free_vmap_area_noflush(): park the area, unmerged, in a node's lazy tree."""
        addr, end, tag = self._unlink_busy(addr)
        node = self.node_of(addr) if tag is None else tag
        bisect.insort(self._lazy[node], [addr, end, tag])
        self._lazy_pages += (end - addr) // self.page_size
        if self._lazy_pages > self.lazy_max_pages:
            self.purge()
        return VmapArea(addr, end)

    def purge(self, full=False):
        """__purge_vmap_area_lazy(): decay every pool, then move every lazy
        area to its node's pool (tagged, fitting a class, not a full purge)
        or back to the free tree.  Returns the number of lazy areas purged."""
        if not isinstance(full, bool):
            raise TypeError("full must be a bool")
        self._purges += 1
        detached = []
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

    def _decay_pool(self, node, full):
        """decay_va_pool_node(): ~25% of each class (all when full) from the head."""
        released = 0
        for pool in self._pools[node]:
            n = len(pool) if full else len(pool) >> 2
            for start, end in pool[:n]:
                self._merge_free(start, end)
            del pool[:n]
            released += n
        return released

    def drain_pools(self):
        """The shrinker's scan: fully decay every node's pools; returns the
        number of areas given back."""
        return sum(self._decay_pool(node, True) for node in range(self.nr_nodes))

    # -- lookup --------------------------------------------------------------
    def find(self, addr):
        addr = self._addr(addr, "addr")
        i = bisect.bisect_right(self._busy_starts, addr) - 1
        if i >= 0:
            start = self._busy_starts[i]
            if addr < self._busy[start]:
                return VmapArea(start, self._busy[start])
        return None

    def areas(self, from_addr=0):
        """Busy areas in address order from the first that ends above from_addr
        (find_vmap_area_exceed_addr()); each step finds its place anew.  The
        argument is checked at the call, not when iteration starts."""
        return self._areas_from(self._addr(from_addr, "from_addr"))

    def _areas_from(self, addr):
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

    def caller_of(self, addr):
        """The caller tag of the busy area that starts at addr (None if untagged)."""
        addr = self._addr(addr, "addr")
        if addr not in self._busy:
            raise KeyError(addr)
        return self._caller.get(addr)

    def find_many(self, addrs, out=None):
        """find() for each address of a buffer of unsigned 64-bit integers."""
        addrs_view = _u64_view(addrs, "addrs", writable=False)
        if out is None:
            out = _new_u64_like(addrs, len(addrs_view))
        view = _u64_view(out, "out", writable=True)
        addrs = addrs_view
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

    def lazy_areas(self):
        """Lazily freed areas not yet purged, in address order."""
        return [VmapArea(s, e) for s, e, _ in sorted(va for per_node in self._lazy for va in per_node)]

    def pooled_areas(self):
        """(area, node) for every area in a node's pool, in address order."""
        return sorted(((VmapArea(s, e), node) for node, pools in enumerate(self._pools)
                       for pool in pools for s, e in pool), key=lambda p: p[0].start)

    def vmallocinfo(self):
        """/proc/vmallocinfo: busy areas node by node (sorted within a node),
        then the lazily freed ones."""
        lines = []
        by_node = [[] for _ in range(self.nr_nodes)]
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
            "lazy_areas": sum(len(per_node) for per_node in self._lazy),
            "lazy_pages": self._lazy_pages,
            "lazy_max_pages": self.lazy_max_pages,
            "pooled_areas": sum(len(p) for pools in self._pools for p in pools),
            "pool_areas": [{c: len(p) for c, p in enumerate(pools) if p} for pools in self._pools],
            "purges": self._purges,
            "tlb_flushes": self._tlb_flushes,
            "purged_areas": self._purged_areas,
        }

    def check(self):
        """Free, busy, lazy and pooled blocks tile [start, end) exactly; free
        ones are coalesced; lazy and pooled ones sit where they belong."""
        assert self._busy_starts == sorted(self._busy), "busy order"
        assert set(self._tag) == set(self._busy), "busy tags"
        pieces = [(s, e, "busy") for s, e in self._busy.items()]
        pieces += [(s, e, "free") for s, e in self._free]
        lazy_pages = 0
        for node, per_node in enumerate(self._lazy):
            assert per_node == sorted(per_node), "lazy order"
            for s, e, tag in per_node:
                assert node == (self.node_of(s) if tag is None else tag), "lazy node"
                pieces.append((s, e, "lazy"))
                lazy_pages += (e - s) // self.page_size
        assert lazy_pages == self._lazy_pages, "lazy page count"
        for pools in self._pools:
            for cls, pool in enumerate(pools):
                for s, e in pool:
                    assert self._size_class(e - s) == cls, "pool size class"
                    pieces.append((s, e, "pooled"))
        pieces.sort()
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


def _info_line(start, end, caller, page_size):
    """One /proc/vmallocinfo line of a busy area (s_show())."""
    if caller is None:
        return f"0x{start:016x}-0x{end:016x} {end - start:7d} vm_map_ram"
    return f"0x{start:016x}-0x{end:016x} {end - start:7d} {caller} pages={(end - start) // page_size} vmalloc"


__all__ = ["MISS", "ReferenceSpace", "VmapArea", "VmapExhausted", "current_cpu",
           "default_lazy_max_pages", "default_nr_nodes"]

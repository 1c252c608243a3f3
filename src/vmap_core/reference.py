"""ReferenceSpace: the allocator written for clarity, the oracle of the tests.

Same API and same results as :class:`vmap_core.VmapSpace`, with the standard
library only: busy areas in a dict plus a sorted list of starts, lazily freed
areas in sorted lists, pools as plain lists (index 0 is the head).  Free space
is the one structure that is not "obviously right" by construction: the
kernel's aligned search (``find_vmap_lowest_match()``) answers according to the
*shape* of its red-black tree, so the reference keeps its free blocks in
:mod:`vmap_core.freetree`, a line-by-line transcription of lib/rbtree.c and of
mm/vmalloc.c's free-tree functions (see that module for why a transcription
and not a re-derivation).  With ``search="lowest"`` it answers the linear
lowest match over the same blocks.  It is deliberately slow; never optimise
it, its job is to be trusted.  Lock modes are accepted and checked but change
nothing here (there is no concurrency to model).
"""

from __future__ import annotations

import array
import bisect
import operator
import os
import threading

from . import profiles
from ._errors import VmapExhausted, on_purge_error
from .freetree import Node, VaTree, is_within_this_va, nva_start

ADDR_LIMIT = 1 << 64          # addresses are unsigned 64-bit: [0, 2**64)
MISS = ADDR_LIMIT - 1         # find_many()'s answer for an address no area holds
MAX_PAGE_SIZE = 1 << 40
MAX_NODES = 1024              # the kernel clamps nr_vmap_nodes to 128; more is a model extension
KERNEL_MAX_NODES = 128
LOCK_MODES = profiles.lock_modes()     # the newest profile's; profiles.LOCK_MODES adds "split"


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


def possible_cpus() -> int:
    """num_possible_cpus(): /sys/devices/system/cpu/possible where readable
    (e.g. "0-15"), else the CPU count."""
    try:
        with open("/sys/devices/system/cpu/possible", encoding="ascii") as f:
            text = f.read().strip()
        n = 0
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        if n > 0:
            return n
    except (OSError, ValueError):
        pass
    return os.cpu_count() or 1


def default_nr_nodes() -> int:
    """The kernel's nr_vmap_nodes (vmap_init_nodes()): possible CPUs,
    clamped to 1..128."""
    return max(1, min(possible_cpus(), KERNEL_MAX_NODES))


MAX_VA_SIZE_PAGES = 256       # size classes of a node's pool


def default_lazy_max_pages(page_size: int) -> int:
    """lazy_max_pages(): fls(online CPUs) * 32 MiB worth of pages."""
    return (os.cpu_count() or 1).bit_length() * (32 << 20) // page_size


def current_cpu() -> int:
    """The default ``cpu`` of alloc(): the calling thread's native id, stable
    for the thread's life (the core computes the same)."""
    return threading.get_native_id()


def check_config(start, end, page_size, nr_nodes, zone_size, lazy_max_pages, lock, kernel,
                 search):
    """The constructor's checks, shared by the core and the reference.
    Returns (profile, lock, search, nr_nodes, zone_size, lazy_max_pages)."""
    profile = profiles.resolve(kernel)
    lock = profiles.resolve_lock(profile, lock)
    search = profiles.resolve_search(search)
    if not _is_pow2(page_size) or page_size > MAX_PAGE_SIZE:
        raise ValueError("page_size must be a power of two <= 2**40")
    if not 0 <= start < end <= ADDR_LIMIT:
        raise ValueError("need 0 <= start < end <= 2**64")
    if start % page_size or end % page_size:
        raise ValueError("start and end must be multiples of page_size")
    if not profile.nodes:
        if nr_nodes not in (None, 1):
            raise ValueError(f"kernel {profile.name} has no nodes: nr_nodes must be 1 or None")
        nr_nodes = 1
    elif nr_nodes is None:
        nr_nodes = default_nr_nodes()
    elif not 1 <= nr_nodes <= MAX_NODES:
        raise ValueError(f"nr_nodes must be in 1..{MAX_NODES}")
    if zone_size is None:
        zone_size = 16 * page_size
    elif zone_size <= 0 or zone_size % page_size or zone_size >= ADDR_LIMIT:
        raise ValueError("zone_size must be a positive multiple of page_size below 2**64")
    if lazy_max_pages is None:
        lazy_max_pages = default_lazy_max_pages(page_size)
    elif not 0 <= lazy_max_pages < ADDR_LIMIT:
        raise ValueError("lazy_max_pages must be in [0, 2**64)")
    return profile, lock, search, nr_nodes, zone_size, lazy_max_pages


def make_recorder(trace, space):
    """A vmap_core.trace.Recorder for the trace= argument (a writable text
    stream, or a Recorder), or None."""
    if trace is None:
        return None
    from .trace import Recorder
    if isinstance(trace, Recorder):
        trace.start(space)
        return trace
    if not callable(getattr(trace, "write", None)):
        raise TypeError("trace must be a writable text stream (with .write) or a "
                        "vmap_core.trace.Recorder")
    rec = Recorder(trace)
    rec.start(space)
    return rec


class ReferenceSpace:
    """Pure-Python twin of :class:`vmap_core.VmapSpace` (see its docs)."""

    def __init__(self, start, end, *, page_size=4096, nr_nodes=None,
                 zone_size=None, lock=None, lazy_max_pages=None, on_purge=None,
                 kernel=None, search=None, auto_purge=True, trace=None):
        start = _index(start, "start")
        end = _index(end, "end")
        page_size = _index(page_size, "page_size")
        if nr_nodes is not None:
            nr_nodes = _index(nr_nodes, "nr_nodes")
        if zone_size is not None:
            zone_size = _index(zone_size, "zone_size")
        if lazy_max_pages is not None:
            lazy_max_pages = _index(lazy_max_pages, "lazy_max_pages")
        if on_purge is not None and not callable(on_purge):
            raise TypeError("on_purge must be callable or None")
        if not isinstance(auto_purge, bool):
            raise TypeError("auto_purge must be a bool")
        (profile, lock, search, nr_nodes, zone_size,
         lazy_max_pages) = check_config(start, end, page_size, nr_nodes, zone_size,
                                        lazy_max_pages, lock, kernel, search)

        self.start, self.end = start, end
        self.page_size, self.nr_nodes = page_size, nr_nodes
        self.zone_size, self.lock = zone_size, lock
        self.lazy_max_pages, self.on_purge = lazy_max_pages, on_purge
        self.kernel, self.search, self.auto_purge = profile.name, search, auto_purge
        self._profile = profile
        self._busy: dict[int, int] = {}        # start -> end
        self._busy_starts: list[int] = []      # sorted
        self._tag: dict[int, int | None] = {}  # start -> node id the area was tagged with
        self._caller: dict[int, str] = {}      # start -> caller, where given
        self._ft = VaTree(augment=True)        # free_vmap_area_root / _list
        self._ft.insert(Node(start, end))
        # Per node: lazily freed areas [start, end, tag], sorted (v6.8: one
        # merging purge tree); pools of free areas by size class, each a list
        # whose index 0 is the head; the purge list while a purge flushes.
        self._lazy: list = ([VaTree(augment=False)] if profile.lazy_merge
                            else [[] for _ in range(nr_nodes)])
        self._purging: list[list] = [[] for _ in range(nr_nodes)]
        self._lazy_pages = 0
        self._pools = [[[] for _ in range(MAX_VA_SIZE_PAGES)] for _ in range(nr_nodes)]
        self._purges = self._tlb_flushes = self._purged_areas = 0
        self._flushing = None                  # the thread inside on_purge
        self.load_notes: list[str] = []        # from_vmallocinfo(): what was done
        self._rec = make_recorder(trace, self)

    @classmethod
    def from_vmallocinfo(cls, text_or_path, **space_kwargs):
        """A space holding exactly the areas of a /proc/vmallocinfo dump (busy,
        and lazy for ``unpurged vm_area`` lines); what was done to build it is
        in ``load_notes``."""
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

    def _in_flush(self):
        return self._flushing is not None and self._flushing == threading.get_ident()

    def _check_request(self, size, align, vstart, vend, cpu, caller):
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
        return size, align, vstart, vend, cpu

    def _pool_node(self, vstart, vend, cpu):
        """node_alloc(): the node whose pool a request tries first, or None
        (not the whole range, or one node)."""
        if vstart == self.start and vend == self.end and self.nr_nodes > 1:
            return (current_cpu() if cpu is None else cpu) % self.nr_nodes
        return None

    # -- allocation ----------------------------------------------------------
    def alloc(self, size, align=None, vstart=None, vend=None, *, cpu=None, caller=None):
        size, align, vstart, vend, cpu = self._check_request(size, align, vstart, vend, cpu,
                                                             caller)
        tag = self._pool_node(vstart, vend, cpu)
        if tag is not None:
            nva = self._pool_take(tag, size, align)
            if nva is not None:
                self._trace_alloc(nva, size, align, vstart, vend, None, cpu)
                self._add_busy(nva, nva + size, tag, caller)
                return nva
        nva, err = self._carve(size, align, vstart, vend)
        self._trace_alloc(nva, size, align, vstart, vend, err, cpu)
        if err is not None and self.auto_purge and not self._in_flush():
            # The overflow path: purge everything (full decay), retry once.
            failure = None
            try:
                self._purge(True, "alloc")
            except _CallbackFailed as exc:      # retry first, then report
                failure = exc
            nva, err = self._carve(size, align, vstart, vend)
            self._trace_alloc(nva, size, align, vstart, vend, err, cpu)
            if err is None:
                self._add_busy(nva, nva + size, tag, caller)
            if failure is not None:
                raise failure.report(f"alloc({size:#x}, align={align:#x})", nva) \
                    from failure.__cause__
            if err is None:
                return nva
        if err is not None:
            raise self._exhausted(err, size, align, vend)
        self._add_busy(nva, nva + size, tag, caller)
        return nva

    def _exhausted(self, err, size, align, vend):
        if err == "ERANGE":
            return VmapExhausted(f"the lowest fit for size={size:#x} align={align:#x} ends "
                                 f"past vend={vend:#x}")
        return VmapExhausted(f"no free block fits size={size:#x} align={align:#x}")

    def predict(self, size, align=None, vstart=None, vend=None, *, cpu=None):
        """What alloc() with these arguments would do now, changing nothing:
        ``(addr, "pool")`` or ``(addr, "free")``, or ``(None, "ENOENT")`` /
        ``(None, "ERANGE")`` when the first attempt fails (before any purge)."""
        size, align, vstart, vend, cpu = self._check_request(size, align, vstart, vend, cpu,
                                                             None)
        tag = self._pool_node(vstart, vend, cpu)
        if tag is not None:
            cls = self._size_class(size)
            if cls is not None and self._pools[tag][cls]:
                head = self._pools[tag][cls][0][0]
                if head % align == 0:
                    return head, "pool"
        va, nva, err = self._search(size, align, vstart, vend)
        return (nva, "free") if err is None else (None, err)

    def alloc_at(self, addr, size, *, cpu=None, caller=None):
        """Take exactly [addr, addr + size): cut out of the free block that
        holds it (va_clip() of a chosen range, as pcpu_get_vm_areas() does),
        or an area of exactly that range taken out of a pool.  ``cpu`` tags the
        area with node ``cpu % nr_nodes`` (where there are nodes), as a
        whole-range alloc() would.  ValueError when the range is not wholly
        free; returns addr."""
        addr = self._addr(addr, "addr")
        size = _index(size, "size")
        if cpu is not None:
            cpu = _index(cpu, "cpu")
            if cpu < 0:
                raise ValueError("cpu must be >= 0")
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, not {type(caller).__name__}")
        if size <= 0 or size % self.page_size:
            raise ValueError("size must be a positive multiple of page_size")
        if addr % self.page_size or not self.start <= addr or addr + size > self.end:
            raise ValueError("need a page-aligned [addr, addr + size) inside [start, end)")
        tag = cpu % self.nr_nodes if cpu is not None and self.nr_nodes > 1 else None
        va = self._ft.enclosing(addr)
        if va is not None and addr + size <= va.va_end:
            self._ft.clip(va, addr, size)
        elif not self._pool_remove(addr, addr + size):
            raise ValueError(f"[{addr:#x}, {addr + size:#x}) is not free")
        self._add_busy(addr, addr + size, tag, caller)
        return addr

    def _pool_remove(self, start, end):
        for pools in self._pools:
            for pool in pools:
                if (start, end) in pool:
                    pool.remove((start, end))
                    return True
        return False

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

    def _search(self, size, align, vstart, vend):
        """__alloc_vmap_area() without the clip: (block, nva, error)."""
        if self.search == "kernel":
            # No length adjustment for align <= PAGE_SIZE, nor for a range
            # that is exactly the request ("(vend - vstart) == size").
            adjust = not (align <= self.page_size or vend - vstart == size)
            va = self._ft.lowest_match(size, align, vstart, adjust)
        else:
            va = self._ft.lowest_linear_match(size, align, vstart)
        if va is None:
            return None, None, "ENOENT"
        nva = nva_start(va, align, vstart)
        if nva + size > vend:
            return va, None, "ERANGE"       # va_alloc()'s "vend" restriction
        return va, nva, None

    def _carve(self, size, align, vstart, vend):
        va, nva, err = self._search(size, align, vstart, vend)
        if err is None:
            self._ft.clip(va, nva, size)
        return nva, err

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
        """merge_or_add_vmap_area_augment() into the free tree."""
        merged = self._ft.merge_or_add(Node(addr, end))
        assert merged is not None, f"[{addr:#x}, {end:#x}) overlaps free space"

    def free(self, addr):
        addr, end, _ = self._unlink_busy(addr)
        self._merge_free(addr, end)
        return VmapArea(addr, end)

    # -- lazy free, purge, pools ---------------------------------------------
    def free_lazy(self, addr):
        """free_vmap_area_noflush(): park the area, unmerged (v6.8: merged),
        in a node's lazy tree; purge when the lazy pages exceed the limit."""
        addr, end, tag = self._unlink_busy(addr)
        if self._profile.lazy_merge:
            self._lazy[0].merge_or_add(Node(addr, end))
        else:
            node = self.node_of(addr) if tag is None else tag
            bisect.insort(self._lazy[node], [addr, end, tag])
        self._lazy_pages += (end - addr) // self.page_size
        if self._rec is not None:
            self._rec.free(self, addr, self._lazy_pages)
        area = VmapArea(addr, end)
        if self._lazy_pages > self.lazy_max_pages and self.auto_purge and not self._in_flush():
            try:
                self._purge(False, "free_lazy")
            except _CallbackFailed as exc:
                raise exc.report(f"free_lazy({addr:#x})", area) from exc.__cause__
        return area

    def purge(self, full=False):
        """__purge_vmap_area_lazy(): decay every pool, detach every lazy tree,
        call on_purge with the union range (the TLB flush), then send each
        lazy area to its node's pool (tagged, fitting a class, not a full
        purge) or back to the free tree.  Returns the number of lazy areas
        purged."""
        if not isinstance(full, bool):
            raise TypeError("full must be a bool")
        try:
            return self._purge(full, "purge")
        except _CallbackFailed as exc:
            raise exc.report("purge()", exc.args[3]) from exc.__cause__

    def _purge(self, full, trigger):
        if self._in_flush():
            raise RuntimeError(f"{trigger}() called from on_purge: a purge cannot start "
                               "while one is flushing")
        self._purges += 1
        detached = 0
        for node in range(self.nr_nodes):
            if self._profile.nodes:
                self._decay_pool(node, full)
            if self._profile.lazy_merge:
                self._purging[node] = [[va.va_start, va.va_end, None] for va in self._lazy[0]]
                self._lazy[0] = VaTree(augment=False)
            else:
                self._purging[node], self._lazy[node] = self._lazy[node], []
            detached += len(self._purging[node])
        lazy = [va for per_node in self._purging for va in per_node]
        start = min((va[0] for va in lazy), default=ADDR_LIMIT - 1)
        end = max((va[1] for va in lazy), default=0)
        failure = None
        try:
            if detached:
                self._tlb_flushes += 1
                if self.on_purge is not None:
                    self._flushing = threading.get_ident()
                    try:
                        self.on_purge(start, end)     # flush_tlb_kernel_range()
                    except Exception as exc:          # noqa: BLE001 - finish, then report
                        failure = exc
                    finally:
                        self._flushing = None
        finally:                                      # even on KeyboardInterrupt
            for node in range(self.nr_nodes):
                self._purge_node(node, full)
            self._purged_areas += detached
            if self._rec is not None:
                self._rec.purge(self, start, end, detached)
        if failure is not None:
            raise _CallbackFailed(failure, start, end, detached) from failure
        return detached

    def _purge_node(self, node, full):
        """purge_vmap_node() (v6.9+): in address order, each area to its
        node's pool (list_add: the head) or onto a local list (also list_add,
        so the list ends up in reverse), which then goes back to the free tree;
        v6.8's __purge_vmap_area_lazy() merges in address order."""
        local = []
        for start, end, tag in self._purging[node]:
            self._lazy_pages -= (end - start) // self.page_size
            cls = self._size_class(end - start)
            if self._profile.nodes and not full and tag is not None and cls is not None:
                self._pools[node][cls].insert(0, (start, end))   # node_pool_add_va()
            else:
                local.insert(0, (start, end))
        if not self._profile.nodes:
            local.reverse()
        for start, end in local:                                    # reclaim_list_global()
            self._merge_free(start, end)
        self._purging[node] = []

    def _decay_pool(self, node, full):
        """decay_va_pool_node(): from the head of each class, ~25% of its
        areas (v6.9: a pool of 1-3 areas entirely, its unsigned counter
        wraps; all with full) are merged among themselves in a local tree,
        which then goes back to the free tree in address order."""
        decay = VaTree(augment=False)
        released = 0
        for pool in self._pools[node]:
            if not pool:
                continue
            n = len(pool) if full else len(pool) >> 2
            if n == 0 and not full and not self._profile.decay_keeps_small:
                n = len(pool)
            for start, end in pool[:n]:
                decay.merge_or_add(Node(start, end))
            del pool[:n]
            released += n
        for va in list(decay):                                      # reclaim_list_global()
            self._merge_free(va.va_start, va.va_end)
        return released

    def drain_pools(self):
        """The shrinker's scan: fully decay every node's pools; returns the
        number of areas given back."""
        if self._in_flush():
            raise RuntimeError("drain_pools() called from on_purge: the shrinker takes the "
                               "purge lock that the flush holds")
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
        (find_vmap_area_exceed_addr()); each step finds its place anew."""
        addr = self._addr(from_addr, "from_addr")
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

    def locate(self, addr):
        """What holds addr: ("busy", area, node), ("free", block, None),
        ("lazy", area, node), ("pooled", area, node), or (None, None, None)."""
        addr = self._addr(addr, "addr")
        area = self.find(addr)
        if area is not None:
            return "busy", area, self.node_of(area.start)
        va = self._ft.enclosing(addr)
        if va is not None:
            return "free", VmapArea(va.va_start, va.va_end), None
        if self._profile.lazy_merge:
            for va in self._lazy[0]:
                if va.va_start <= addr < va.va_end:
                    return "lazy", VmapArea(va.va_start, va.va_end), 0
        else:
            for node, per_node in enumerate(self._lazy):
                for s, e, _ in per_node:
                    if s <= addr < e:
                        return "lazy", VmapArea(s, e), node
        for node, pools in enumerate(self._pools):
            for pool in pools:
                for s, e in pool:
                    if s <= addr < e:
                        return "pooled", VmapArea(s, e), node
        return None, None, None

    def caller_of(self, addr):
        """The caller tag of the busy area that starts at addr (None if untagged)."""
        addr = self._addr(addr, "addr")
        if addr not in self._busy:
            raise KeyError(addr)
        return self._caller.get(addr)

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
        return [VmapArea(va.va_start, va.va_end) for va in self._ft]

    def _lazy_entries(self):
        """(node, start, end) of every lazy area, node by node in list order."""
        if self._profile.lazy_merge:
            return [(0, va.va_start, va.va_end) for va in self._lazy[0]]
        return [(node, s, e) for node, per_node in enumerate(self._lazy) for s, e, _ in per_node]

    def lazy_areas(self):
        """Lazily freed areas not yet purged, in address order."""
        return [VmapArea(s, e) for _, s, e in sorted(self._lazy_entries(), key=lambda t: t[1])]

    def pooled_areas(self):
        """(area, node) for every area in a node's pool, in address order."""
        return sorted(((VmapArea(s, e), node) for node, pools in enumerate(self._pools)
                       for pool in pools for s, e in pool), key=lambda p: p[0].start)

    def vmallocinfo(self):
        """/proc/vmallocinfo (vmalloc_info_show()): busy areas node by node
        (sorted within a node), then the lazily freed ones (show_purge_info())."""
        lines = []
        by_node = [[] for _ in range(self.nr_nodes)]
        for s in self._busy_starts:
            by_node[self.node_of(s)].append(s)
        for starts in by_node:
            for s in starts:
                lines.append(info_line(s, self._busy[s], self._caller.get(s), self.page_size))
        for _, s, e in self._lazy_entries():
            lines.append(f"0x{s:016x}-0x{e:016x} {e - s:7d} unpurged vm_area")
        return "".join(line + "\n" for line in lines)

    def _free_tree_shape(self):
        """Test-only: the free tree in preorder, (start, end, 'r'|'b', depth)."""
        return self._ft.shape()

    # -- the recorder ---------------------------------------------------------
    def _trace_alloc(self, nva, size, align, vstart, vend, err, cpu):
        if self._rec is not None:
            self._rec.alloc(self, nva, size, align, vstart, vend, err, cpu)

    # -- introspection -------------------------------------------------------
    def stats(self):
        node_areas = [0] * self.nr_nodes
        for s in self._busy_starts:
            node_areas[self.node_of(s)] += 1
        free = self.free_areas()
        return {
            "busy_areas": len(self._busy),
            "busy_bytes": sum(e - s for s, e in self._busy.items()),
            "free_areas": len(free),
            "free_bytes": sum(a.size for a in free),
            "largest_free": max((a.size for a in free), default=0),
            "nr_nodes": self.nr_nodes,
            "node_areas": node_areas,
            "lock": self.lock,
            "lazy_areas": len(self._lazy_entries()),
            "lazy_pages": self._lazy_pages,
            "lazy_max_pages": self.lazy_max_pages,
            "pooled_areas": sum(len(p) for pools in self._pools for p in pools),
            "pool_areas": [{c: len(p) for c, p in enumerate(pools) if p} for pools in self._pools],
            "purges": self._purges,
            "tlb_flushes": self._tlb_flushes,
            "purged_areas": self._purged_areas,
        }

    def check(self):
        """Free, busy, lazy, pooled (and, during on_purge, purging) blocks tile
        [start, end) exactly; free ones are coalesced; the free tree is a sound
        augmented rb-tree; lazy and pooled ones sit where they belong."""
        assert self._busy_starts == sorted(self._busy), "busy order"
        assert set(self._tag) == set(self._busy), "busy tags"
        self._ft.verify()
        pieces = [(s, e, "busy") for s, e in self._busy.items()]
        pieces += [(a.start, a.end, "free") for a in self.free_areas()]
        lazy_pages = 0
        if self._profile.lazy_merge:
            self._lazy[0].verify()
        else:
            for node, per_node in enumerate(self._lazy):
                assert per_node == sorted(per_node), "lazy order"
                for s, e, tag in per_node:
                    assert node == (self.node_of(s) if tag is None else tag), "lazy node"
        for _, s, e in self._lazy_entries():
            pieces.append((s, e, "lazy"))
            lazy_pages += (e - s) // self.page_size
        for per_node in self._purging:
            for s, e, _ in per_node:
                pieces.append((s, e, "purging"))
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
                f"free={self._ft.count}, nr_nodes={self.nr_nodes}, lock={self.lock!r}, "
                f"kernel={self.kernel!r})")


class _CallbackFailed(Exception):
    """Internal: on_purge raised during _purge(); args are (exc, start, end,
    purged).  report() makes the OnPurgeError the caller raises."""

    def report(self, call, result):
        exc, start, end, purged = self.args
        return on_purge_error(call, start, end, purged, exc, result)


def info_line(start, end, caller, page_size):
    """One /proc/vmallocinfo line of a busy area (vmalloc_info_show()): the
    size includes the guard page, ``pages=`` does not (it counts the pages
    mapped, printed only when there are any); an area without a caller is a
    vmalloc area whose caller is unknown (the kernel prints ``vm_map_ram`` only
    for areas of vm_map_ram(), which this model does not make)."""
    size = end - start
    pages = size // page_size - 1
    text = f"0x{start:016x}-0x{end:016x} {size:7d}"
    if caller is not None:
        text += f" {caller}"
    if pages > 0:
        text += f" pages={pages}"
    return text + " vmalloc"


_info_line = info_line      # the name the core used before


__all__ = ["MISS", "ReferenceSpace", "VmapArea", "VmapExhausted", "current_cpu",
           "default_lazy_max_pages", "default_nr_nodes", "info_line", "possible_cpus"]

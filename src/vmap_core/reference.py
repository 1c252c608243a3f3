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
import functools
import operator
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import (TYPE_CHECKING, Any, Literal, NoReturn, ParamSpec, SupportsIndex, TypeVar,
                    cast, overload)

from . import profiles
from ._errors import OnPurgeError, VmapExhausted, on_purge_error
from .freetree import Node, VaTree, nva_start
from .types import LockMode, SearchMode, SpaceState, SpaceStats, UsercopyMode, WalkMode

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from typing_extensions import Buffer, Self

    from .trace import Recorder

ADDR_LIMIT = 1 << 64          # addresses are unsigned 64-bit: [0, 2**64)
MISS = ADDR_LIMIT - 1         # find_many()'s answer for an address no area holds
MAX_PAGE_SIZE = 1 << 40
MAX_NODES = 1024              # the kernel clamps nr_vmap_nodes to 128; more is a model extension
KERNEL_MAX_NODES = 128
#: The newest profile's lock designs; profiles.LOCK_MODES adds v6.8's "split".
LOCK_MODES: tuple[LockMode, ...] = profiles.lock_modes()
#: The constructor's keyword arguments, as attributes of a space: what pickle
#: and copy pass to the new space (a new argument is one more name here).
#: ``trace`` is the one keyword not carried: a copy records nothing (a stream
#: does not pickle, and two spaces writing one trace could not be replayed).
SPACE_INIT_ARGS = ("page_size", "nr_nodes", "zone_size", "lock", "lazy_max_pages", "on_purge",
                   "kernel", "search", "auto_purge", "walk")
NOT_COPIED_ARGS = ("trace",)
STATE_VERSION = 2             # 2: the free tree's shape is part of the state

OnPurge = Callable[[int, int], object]
Prediction = tuple[int, Literal["pool", "free"]] | tuple[None, Literal["ENOENT", "ERANGE"]]
_B = TypeVar("_B", bound="Buffer")
_W = TypeVar("_W", bound="Buffer")
_Lazy = tuple[int, int, "int | None"]       # start, end, node tag


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


_U64_FORMATS = ("Q", "L", "<Q", "=Q", "@Q", "<L", "=L", "@L")   # native uint64 on 64-bit Linux


def _u64_view(buf: Any, name: str, writable: bool) -> memoryview:
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


def _new_u64_like(addrs: object, n: int) -> Any:
    """find_many()'s default out: numpy in, numpy out; else array.array('Q')."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(addrs, np.ndarray):
        return np.zeros(n, dtype=np.uint64)
    return array.array("Q", bytes(8 * n))


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


def check_config(start: int, end: int, page_size: int, nr_nodes: int | None,
                 zone_size: int | None, lazy_max_pages: int | None, lock: object,
                 kernel: object, search: object
                 ) -> tuple[profiles.Profile, LockMode, SearchMode, int, int, int]:
    """The constructor's checks, shared by the core and the reference.
    Returns (profile, lock, search, nr_nodes, zone_size, lazy_max_pages)."""
    profile = profiles.resolve(kernel)
    lock_mode = profiles.resolve_lock(profile, lock)
    search_mode = profiles.resolve_search(search)
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
    return profile, lock_mode, search_mode, nr_nodes, zone_size, lazy_max_pages


# The lock designs no kernel shipped: the ones that may leave find_vmap_area()'s walk.
BOUNDED_WALK_LOCKS = ("global", "rwlock", "optimistic")


def check_walk(walk: object, lock: LockMode) -> WalkMode:
    """The constructor's ``walk``: None or "kernel" is find_vmap_area()'s walk
    (every node on a miss: its cost is what the kernel profiles model);
    "bounded" visits only the nodes whose zones an area holding the address
    can start in (the widest area ever inserted bounds it), with the same
    answers: for the designs no kernel shipped only."""
    if walk is None:
        return "kernel"
    if not isinstance(walk, str):
        raise TypeError(f"walk must be a str or None, not {type(walk).__name__}")
    if walk == "kernel":
        return "kernel"
    if walk != "bounded":
        raise ValueError(f"walk must be 'kernel', 'bounded' or None, not {walk!r}")
    if lock not in BOUNDED_WALK_LOCKS:
        raise ValueError(f"walk='bounded' is for the designs no kernel shipped "
                         f"{BOUNDED_WALK_LOCKS}; lock={lock!r} keeps find_vmap_area()'s "
                         f"walk, whose cost it models")
    return "bounded"


def make_recorder(trace: object, space: Any) -> Recorder | None:
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
    rec = Recorder(cast("SupportsWrite[str]", trace))     # has .write, checked above
    rec.start(space)
    return rec


class ReferenceSpace:
    """Pure-Python twin of :class:`vmap_core.VmapSpace` (see its docs).

    The same constructor, methods, results and exceptions (the differential
    tests hold the two to each other), written to be obviously right, not
    fast: busy areas in sorted lists, free space in the transcribed kernel
    tree of :mod:`vmap_core.freetree`.  Its costs are those of the lists:
    O(n) to insert or remove a busy area, O(log m) to search the free tree
    (about 4x slower lookups and 50x slower allocation than the core at
    10**5 areas).  Lock modes are accepted and change nothing.  It is the
    oracle of the tests and of :mod:`vmap_core.testing`, not a fallback.

    Safe to share between threads, also on a free-threaded CPython: every
    public method holds the space's one reentrant lock (it models results,
    not concurrency), on_purge included, so an on_purge that waits for
    another thread using the same space deadlocks here (not in the core).
    """

    def __init__(self, start: SupportsIndex, end: SupportsIndex, *,
                 page_size: SupportsIndex = 4096, nr_nodes: SupportsIndex | None = None,
                 zone_size: SupportsIndex | None = None, lock: LockMode | None = None,
                 lazy_max_pages: SupportsIndex | None = None,
                 on_purge: OnPurge | None = None, kernel: str | None = None,
                 search: SearchMode | None = None, auto_purge: bool = True,
                 walk: WalkMode | None = None,
                 trace: SupportsWrite[str] | Recorder | None = None) -> None:
        self._mutex = threading.RLock()     # see the class docstring
        self._init(_index(start, "start"), _index(end, "end"), _index(page_size, "page_size"),
                   None if nr_nodes is None else _index(nr_nodes, "nr_nodes"),
                   None if zone_size is None else _index(zone_size, "zone_size"), lock,
                   None if lazy_max_pages is None else _index(lazy_max_pages, "lazy_max_pages"),
                   on_purge, kernel, search, auto_purge, trace, walk)

    def _init(self, start: int, end: int, page_size: int, nr_nodes: int | None,
              zone_size: int | None, lock: object, lazy_max_pages: int | None,
              on_purge: object, kernel: object, search: object, auto_purge: object,
              trace: object, walk: object = None) -> None:
        if on_purge is not None and not callable(on_purge):
            raise TypeError("on_purge must be callable or None")
        if not isinstance(auto_purge, bool):
            raise TypeError("auto_purge must be a bool")
        (profile, lock_mode, search_mode, nodes, zone,
         max_pages) = check_config(start, end, page_size, nr_nodes, zone_size,
                                   lazy_max_pages, lock, kernel, search)
        walk_mode = check_walk(walk, lock_mode)

        self.start: int = start
        self.end: int = end
        self.page_size: int = page_size
        self.nr_nodes: int = nodes
        self.zone_size: int = zone
        self.lock: LockMode = lock_mode
        self.lazy_max_pages: int = max_pages
        self.on_purge: OnPurge | None = on_purge  # checked above
        self.kernel: str = profile.name
        self.search: SearchMode = search_mode
        self.auto_purge: bool = auto_purge
        self.walk: WalkMode = walk_mode    # the same answers either way: no other effect here
        self._profile = profile
        self._busy: dict[int, int] = {}        # start -> end
        self._busy_starts: list[int] = []      # sorted
        self._tag: dict[int, int | None] = {}  # start -> node id the area was tagged with
        self._caller: dict[int, str] = {}      # start -> caller, where given
        self._ft = VaTree(augment=True)        # free_vmap_area_root / _list
        self._ft.insert(Node(start, end))
        # Per node: lazily freed areas (start, end, tag), sorted; v6.8 instead
        # merges them in one purge tree.  Pools of free areas by size class,
        # each a list whose index 0 is the head; the purge list while a purge
        # flushes.
        self._lazy: list[list[_Lazy]] = [[] for _ in range(nodes)]
        self._lazy_tree: VaTree | None = VaTree(augment=False) if profile.lazy_merge else None
        self._purging: list[list[_Lazy]] = [[] for _ in range(nodes)]
        self._lazy_pages = 0
        self._pools: list[list[list[tuple[int, int]]]] = [
            [[] for _ in range(MAX_VA_SIZE_PAGES)] for _ in range(nodes)]
        self._purges = self._tlb_flushes = self._purged_areas = 0
        self._flushing: int | None = None      # the thread inside on_purge
        self.load_notes: list[str] = []        # from_vmallocinfo(): what was done
        self._rec = make_recorder(trace, self)

    @classmethod
    def from_vmallocinfo(cls, text_or_path: str | bytes | os.PathLike[str],
                         **space_kwargs: Any) -> Self:
        """A space holding exactly the areas of a /proc/vmallocinfo dump (busy,
        and lazy for ``unpurged vm_area`` lines); what was done to build it is
        in ``load_notes``."""
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

    def _in_flush(self) -> bool:
        return self._flushing is not None and self._flushing == threading.get_ident()

    def _check_request(self, size: object, align: object, vstart: object, vend: object,
                       cpu: object, caller: object) -> tuple[int, int, int, int, int | None]:
        """alloc()'s checks: (size, align, vstart, vend, cpu) as ints."""
        sz = _index(size, "size")
        al = self.page_size if align is None else _index(align, "align")
        vs = self.start if vstart is None else _index(vstart, "vstart")
        ve = self.end if vend is None else _index(vend, "vend")
        c = None if cpu is None else _index(cpu, "cpu")
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, not {type(caller).__name__}")
        if sz <= 0 or sz % self.page_size or sz > ADDR_LIMIT:
            raise ValueError("size must be a positive multiple of page_size")
        if not _is_pow2(al) or al >= ADDR_LIMIT:
            raise ValueError("align must be a power of two below 2**64")
        if not self.start <= vs < ve <= self.end:
            raise ValueError("need start <= vstart < vend <= end")
        if vs % self.page_size or ve % self.page_size:
            raise ValueError("vstart and vend must be multiples of page_size")
        if c is not None and c < 0:
            raise ValueError("cpu must be >= 0")
        return sz, al, vs, ve, c

    def _pool_node(self, vstart: int, vend: int, cpu: int | None) -> int | None:
        """node_alloc(): the node whose pool a request tries first, or None
        (not the whole range, or one node)."""
        if vstart == self.start and vend == self.end and self.nr_nodes > 1:
            return (current_cpu() if cpu is None else cpu) % self.nr_nodes
        return None

    # -- allocation ----------------------------------------------------------
    def alloc(self, size: SupportsIndex, align: SupportsIndex | None = None,
              vstart: SupportsIndex | None = None, vend: SupportsIndex | None = None, *,
              cpu: SupportsIndex | None = None, caller: str | None = None) -> int:
        """alloc_vmap_area(): the CPU's pool, else the free tree's answer (see
        VmapSpace.alloc)."""
        sz, al, vs, ve, c = self._check_request(size, align, vstart, vend, cpu, caller)
        return self._alloc(sz, al, vs, ve, c, caller)

    def _alloc(self, size: int, align: int, vstart: int, vend: int, cpu: int | None,
               caller: str | None) -> int:
        tag = self._pool_node(vstart, vend, cpu)
        if tag is not None:
            pooled = self._pool_take(tag, size, align)
            if pooled is not None:
                self._trace_alloc(pooled, size, align, vstart, vend, None, cpu)
                self._add_busy(pooled, pooled + size, tag, caller)
                return pooled
        nva, err = self._carve(size, align, vstart, vend)
        self._trace_alloc(nva, size, align, vstart, vend, err, cpu)
        if nva is None and self.auto_purge and not self._in_flush():
            # The overflow path: purge everything (full decay), retry once.
            failure = None
            try:
                self._purge(True, "alloc")
            except _CallbackFailed as exc:      # retry first, then report
                failure = exc
            nva, err = self._carve(size, align, vstart, vend)
            self._trace_alloc(nva, size, align, vstart, vend, err, cpu)
            if nva is not None:
                self._add_busy(nva, nva + size, tag, caller)
            if failure is not None:
                raise failure.report(f"alloc({size:#x}, align={align:#x})", nva) \
                    from failure.__cause__
            if nva is not None:
                return nva
        if nva is None:
            raise self._exhausted(err, size, align, vend)
        self._add_busy(nva, nva + size, tag, caller)
        return nva

    def _exhausted(self, err: str | None, size: int, align: int, vend: int) -> VmapExhausted:
        if err == "ERANGE":
            return VmapExhausted(f"the lowest fit for size={size:#x} align={align:#x} ends "
                                 f"past vend={vend:#x}")
        return VmapExhausted(f"no free block fits size={size:#x} align={align:#x}")

    def predict(self, size: SupportsIndex, align: SupportsIndex | None = None,
                vstart: SupportsIndex | None = None, vend: SupportsIndex | None = None, *,
                cpu: SupportsIndex | None = None) -> Prediction:
        """What alloc() with these arguments would do now, changing nothing:
        ``(addr, "pool")`` or ``(addr, "free")``, or ``(None, "ENOENT")`` /
        ``(None, "ERANGE")`` when the first attempt fails (before any purge)."""
        sz, al, vs, ve, c = self._check_request(size, align, vstart, vend, cpu, None)
        tag = self._pool_node(vs, ve, c)
        if tag is not None:
            cls = self._size_class(sz)
            if cls is not None and self._pools[tag][cls]:
                head = self._pools[tag][cls][0][0]
                if head % al == 0:
                    return head, "pool"
        _, nva, err = self._search(sz, al, vs, ve)
        if nva is not None:
            return nva, "free"
        return None, "ERANGE" if err == "ERANGE" else "ENOENT"

    def alloc_at(self, addr: SupportsIndex, size: SupportsIndex, *,
                 cpu: SupportsIndex | None = None, caller: str | None = None) -> int:
        """Take exactly [addr, addr + size): cut out of the free block that
        holds it (va_clip() of a chosen range, as pcpu_get_vm_areas() does),
        or an area of exactly that range taken out of a pool.  ``cpu`` tags the
        area with node ``cpu % nr_nodes`` (where there are nodes), as a
        whole-range alloc() would.  ValueError when the range is not wholly
        free; returns addr."""
        a = self._addr(addr, "addr")
        sz = _index(size, "size")
        c = None if cpu is None else _index(cpu, "cpu")
        if c is not None and c < 0:
            raise ValueError("cpu must be >= 0")
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, not {type(caller).__name__}")
        if sz <= 0 or sz % self.page_size:
            raise ValueError("size must be a positive multiple of page_size")
        if a % self.page_size or not self.start <= a or a + sz > self.end:
            raise ValueError("need a page-aligned [addr, addr + size) inside [start, end)")
        tag = c % self.nr_nodes if c is not None and self.nr_nodes > 1 else None
        va = self._ft.enclosing(a)
        if va is not None and a + sz <= va.va_end:
            self._ft.clip(va, a, sz)
        elif not self._pool_remove(a, a + sz):
            raise ValueError(f"[{a:#x}, {a + sz:#x}) is not free")
        self._add_busy(a, a + sz, tag, caller)
        return a

    def _pool_remove(self, start: int, end: int) -> bool:
        for pools in self._pools:
            for pool in pools:
                if (start, end) in pool:
                    pool.remove((start, end))
                    return True
        return False

    def _pool_take(self, node: int, size: int, align: int) -> int | None:
        """node_pool_del_va(): the head of the class's pool if aligned; else it
        moves to the tail and the pool misses."""
        cls = self._size_class(size)
        if cls is None or not self._pools[node][cls]:
            return None
        pool = self._pools[node][cls]
        start, _ = pool[0]
        if start % align:
            pool.append(pool.pop(0))
            return None
        pool.pop(0)
        return start

    def _search(self, size: int, align: int, vstart: int,
                vend: int) -> tuple[Node | None, int | None, str | None]:
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

    def _carve(self, size: int, align: int, vstart: int,
               vend: int) -> tuple[int | None, str | None]:
        va, nva, err = self._search(size, align, vstart, vend)
        if va is not None and nva is not None:
            self._ft.clip(va, nva, size)
        return nva, err

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
        """merge_or_add_vmap_area_augment() into the free tree."""
        if self._ft.merge_or_add(Node(addr, end)) is None:
            _fail(f"[{addr:#x}, {end:#x}) overlaps free space")

    def free(self, addr: SupportsIndex) -> VmapArea:
        """free_vmap_area(): free the busy area that starts at addr; KeyError if none."""
        a, end, _ = self._unlink_busy(addr)
        self._merge_free(a, end)
        return VmapArea(a, end)

    # -- lazy free, purge, pools ---------------------------------------------
    def free_lazy(self, addr: SupportsIndex) -> VmapArea:
        """free_vmap_area_noflush(): park the area, unmerged (v6.8: merged),
        in a node's lazy tree; purge when the lazy pages exceed the limit."""
        a, end, tag = self._unlink_busy(addr)
        self._park_lazy(a, end, tag)
        if self._rec is not None:
            self._rec.free(self, a, self._lazy_pages)
        area = VmapArea(a, end)
        if self._lazy_pages > self.lazy_max_pages and self.auto_purge and not self._in_flush():
            try:
                self._purge(False, "free_lazy")
            except _CallbackFailed as exc:
                raise exc.report(f"free_lazy({a:#x})", area) from exc.__cause__
        return area

    def _park_lazy(self, start: int, end: int, tag: int | None) -> None:
        if self._lazy_tree is not None:
            self._lazy_tree.merge_or_add(Node(start, end))
        else:
            node = self.node_of(start) if tag is None else tag
            bisect.insort(self._lazy[node], (start, end, tag), key=lambda va: va[:2])
        self._lazy_pages += (end - start) // self.page_size

    def purge(self, full: bool = False) -> int:
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

    def _purge(self, full: bool, trigger: str) -> int:
        if self._in_flush():
            raise RuntimeError(f"{trigger}() called from on_purge: a purge cannot start "
                               "while one is flushing")
        self._purges += 1
        detached = 0
        for node in range(self.nr_nodes):
            if self._profile.nodes:
                self._decay_pool(node, full)
            if self._lazy_tree is not None:
                self._purging[node] = [(va.va_start, va.va_end, None) for va in self._lazy_tree]
                self._lazy_tree = VaTree(augment=False)
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

    def _purge_node(self, node: int, full: bool) -> None:
        """purge_vmap_node() (v6.9+): in address order, each area to its
        node's pool (list_add: the head) or onto a local list (also list_add,
        so the list ends up in reverse), which then goes back to the free tree;
        v6.8's __purge_vmap_area_lazy() merges in address order."""
        local: list[tuple[int, int]] = []
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

    def _decay_pool(self, node: int, full: bool) -> int:
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

    def drain_pools(self) -> int:
        """The shrinker's scan: fully decay every node's pools; returns the
        number of areas given back."""
        if self._in_flush():
            raise RuntimeError("drain_pools() called from on_purge: the shrinker takes the "
                               "purge lock that the flush holds")
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
        (find_vmap_area_exceed_addr()); each step finds its place anew.  The
        argument is checked at the call, not when iteration starts."""
        return self._areas_from(self._addr(from_addr, "from_addr"))

    def _areas_from(self, addr: int) -> Iterator[VmapArea]:
        cursor = 0                  # the end of the area yielded last
        while True:
            with self._mutex:       # each step under the lock, none across a yield
                i = bisect.bisect_right(self._busy_starts, addr)
                if i > 0 and self._busy[self._busy_starts[i - 1]] > addr:
                    i -= 1
                if i == len(self._busy_starts):
                    return
                start = self._busy_starts[i]
                end = self._busy[start]
            if start >= cursor:     # else allocated across the cursor since: behind the walk
                yield VmapArea(start, end)
                cursor = end
            if end >= ADDR_LIMIT:
                return
            addr = end

    def locate(self, addr: SupportsIndex) -> tuple[
            Literal["busy", "free", "lazy", "pooled"], VmapArea, int | None] | tuple[
            None, None, None]:
        """What holds addr: ("busy", area, node), ("free", block, None),
        ("lazy", area, node), ("pooled", area, node), or (None, None, None)."""
        a = self._addr(addr, "addr")
        area = self.find(a)
        if area is not None:
            return "busy", area, self.node_of(area.start)
        va = self._ft.enclosing(a)
        if va is not None:
            return "free", VmapArea(va.va_start, va.va_end), None
        for node, s, e in self._lazy_entries():
            if s <= a < e:
                return "lazy", VmapArea(s, e), node
        for node, pools in enumerate(self._pools):
            for pool in pools:
                for s, e in pool:
                    if s <= a < e:
                        return "pooled", VmapArea(s, e), node
        return None, None, None

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
        return [VmapArea(va.va_start, va.va_end) for va in self._ft]

    def _lazy_records(self) -> list[_Lazy]:
        """(start, end, tag) of every lazy area, node by node in list order."""
        if self._lazy_tree is not None:
            return [(va.va_start, va.va_end, None) for va in self._lazy_tree]
        return [va for per_node in self._lazy for va in per_node]

    def _lazy_entries(self) -> list[tuple[int, int, int]]:
        """(node, start, end) of every lazy area, node by node in list order."""
        if self._lazy_tree is not None:
            return [(0, va.va_start, va.va_end) for va in self._lazy_tree]
        return [(node, s, e) for node, per_node in enumerate(self._lazy) for s, e, _ in per_node]

    def lazy_areas(self) -> list[VmapArea]:
        """Lazily freed areas not yet purged, in address order."""
        return [VmapArea(s, e) for _, s, e in sorted(self._lazy_entries(), key=lambda t: t[1])]

    def pooled_areas(self) -> list[tuple[VmapArea, int]]:
        """(area, node) for every area in a node's pool, in address order."""
        return sorted(((VmapArea(s, e), node) for node, pools in enumerate(self._pools)
                       for pool in pools for s, e in pool), key=lambda p: p[0].start)

    def vmallocinfo(self) -> str:
        """/proc/vmallocinfo (vmalloc_info_show()): busy areas node by node
        (sorted within a node), then the lazily freed ones (show_purge_info())."""
        lines = []
        by_node: list[list[int]] = [[] for _ in range(self.nr_nodes)]
        for s in self._busy_starts:
            by_node[self.node_of(s)].append(s)
        for starts in by_node:
            for s in starts:
                lines.append(info_line(s, self._busy[s], self._caller.get(s), self.page_size))
        for _, s, e in self._lazy_entries():
            lines.append(f"0x{s:016x}-0x{e:016x} {e - s:7d} unpurged vm_area")
        return "".join(line + "\n" for line in lines)

    def _free_tree_shape(self) -> list[tuple[int, int, str, int]]:
        """The free tree in preorder, (start, end, 'r'|'b', depth): what the
        kernel's aligned search depends on; pickled with the space, and
        compared with the core's by the tests."""
        return self._ft.shape()

    # -- the recorder ---------------------------------------------------------
    def _trace_alloc(self, nva: int | None, size: int, align: int, vstart: int, vend: int,
                     err: str | None, cpu: int | None) -> None:
        if self._rec is not None:
            self._rec.alloc(self, nva, size, align, vstart, vend, err, cpu)

    # -- introspection -------------------------------------------------------
    def stats(self) -> SpaceStats:
        """Counts and sizes (the core's stats() also has its memory and locks)."""
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

    def check(self) -> None:
        """Free, busy, lazy, pooled (and, during on_purge, purging) blocks tile
        [start, end) exactly; free ones are coalesced; the free tree is a sound
        augmented rb-tree; lazy and pooled ones sit where they belong.
        AssertionError names the first broken invariant (also under python -O)."""
        if self._busy_starts != sorted(self._busy):
            _fail("busy order")
        if set(self._tag) != set(self._busy):
            _fail("busy tags")
        self._ft.verify()
        pieces = [(s, e, "busy") for s, e in self._busy.items()]
        pieces += [(a.start, a.end, "free") for a in self.free_areas()]
        lazy_pages = 0
        if self._lazy_tree is not None:
            self._lazy_tree.verify()
        for node, per_node in enumerate(self._lazy):
            if per_node != sorted(per_node, key=lambda va: va[:2]):
                _fail("lazy order")
            for s, _, tag in per_node:
                if node != (self.node_of(s) if tag is None else tag):
                    _fail("lazy node")
        for _, s, e in self._lazy_entries():
            pieces.append((s, e, "lazy"))
            lazy_pages += (e - s) // self.page_size
        for per_node in self._purging:
            for s, e, _ in per_node:
                pieces.append((s, e, "purging"))
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
        """As VmapSpace.__reduce__: constructor arguments, then the areas and
        the free tree's shape (a copy records no trace)."""
        kwargs = {name: getattr(self, name) for name in SPACE_INIT_ARGS}
        return (rebuild_space, (type(self), self.start, self.end, kwargs), self._get_state())

    def _get_state(self) -> SpaceState:
        if self._in_flush():
            raise RuntimeError("a space cannot be copied from inside on_purge: its purge is "
                               "half done")
        return {
            "version": STATE_VERSION,
            "busy": [(s, self._busy[s], self._tag[s], self._caller.get(s))
                     for s in self._busy_starts],
            "lazy": sorted(self._lazy_records()),
            "pooled": [(node, s, e) for node, pools in enumerate(self._pools)
                       for pool in pools for s, e in pool],
            "free_tree": self._free_tree_shape(),
            "load_notes": list(self.load_notes),
        }

    def __setstate__(self, state: object) -> None:
        """Give a new, empty space the areas and the free tree of a state from
        __reduce__()."""
        busy, lazy, pooled, shape, notes = check_space_state(self, state)
        if self._busy or self._lazy_pages or any(p for pools in self._pools for p in pools) \
                or self.free_areas() != [VmapArea(self.start, self.end)]:
            raise ValueError("__setstate__ needs a new, empty space")
        for start, end, tag, caller in busy:
            self._place(start, end)
            self._add_busy(start, end, tag, caller)
        for start, end, tag in lazy:
            self._place(start, end)
            self._park_lazy(start, end, tag)
        for node, start, end in pooled:
            self._place(start, end)
            cls = self._size_class(end - start)
            if cls is None:             # check_space_state() refused these already
                raise ValueError("state: a pooled area too large for a size class")
            self._pools[node][cls].append((start, end))
        self._ft = VaTree.from_shape(shape)     # the same blocks, in the original's shape
        self.load_notes = notes

    def _place(self, start: int, end: int) -> None:
        """Cut exactly [start, end) out of the free block holding it."""
        va = self._ft.enclosing(start)
        if va is None or end > va.va_end:
            raise ValueError(f"state: [{start:#x}, {end:#x}) is not free")
        self._ft.clip(va, start, end - start)

    def __repr__(self) -> str:
        return (f"ReferenceSpace({self.start:#x}, {self.end:#x}, busy={len(self)}, "
                f"free={self._ft.count}, nr_nodes={self.nr_nodes}, lock={self.lock!r}, "
                f"kernel={self.kernel!r})")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialised(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """method, run holding its space's lock (ReferenceSpace._mutex)."""
    @functools.wraps(method)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with cast(ReferenceSpace, args[0])._mutex:
            return method(*args, **kwargs)
    return locked


# Every public method that reads or changes the space's state (areas() takes
# the lock per step, in _areas_from).
for _name in ("alloc", "predict", "alloc_at", "free", "free_lazy", "purge", "drain_pools",
              "find", "__contains__", "locate", "caller_of", "find_many", "check_copy",
              "__len__", "__iter__", "free_areas", "lazy_areas", "pooled_areas",
              "vmallocinfo", "_free_tree_shape", "stats", "check", "__reduce__",
              "__setstate__", "__repr__"):
    setattr(ReferenceSpace, _name, _serialised(getattr(ReferenceSpace, _name)))
del _name


class _CallbackFailed(Exception):
    """Internal: on_purge raised during _purge(); args are (exc, start, end,
    purged).  report() makes the OnPurgeError the caller raises."""

    def report(self, call: str, result: object) -> OnPurgeError:
        exc, start, end, purged = self.args
        return on_purge_error(call, start, end, purged, exc, result)


def rebuild_space(cls: Callable[..., Any], start: int, end: int,
                  kwargs: dict[str, Any]) -> Any:
    """Pickle's and copy's constructor of a space (either implementation)."""
    return cls(start, end, **kwargs)


def check_space_state(space: Any, state: object) -> tuple[
        list[tuple[int, int, int | None, str | None]], list[_Lazy],
        list[tuple[int, int, int]], list[tuple[int, int, str, int]], list[str]]:
    """The contents of a pickled state (a :class:`vmap_core.types.SpaceState`),
    checked against the space that is to hold them: (busy, lazy, pooled,
    free-tree shape, load_notes).  ValueError for anything the two
    implementations could not have produced; nothing is changed."""
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
        shape = [(*rng(s, e), c, d) for s, e, c, d in state["free_tree"]]
        notes = list(state.get("load_notes", []))
    except (KeyError, TypeError) as e:
        raise ValueError(f"state: malformed ({e})") from None
    if any(c is not None and not isinstance(c, str) for *_, c in busy):
        raise ValueError("state: a caller must be a str or None")
    if any((e - s) // page > MAX_VA_SIZE_PAGES for _, s, e in pooled):
        raise ValueError(f"state: a pooled area larger than {MAX_VA_SIZE_PAGES} pages")
    if pooled and not profiles.resolve(space.kernel).nodes:
        raise ValueError(f"state: kernel {space.kernel} has no pools")
    spans = sorted([(s, e) for s, e, *_ in busy + lazy] + [(s, e) for _, s, e in pooled])
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
        raise ValueError("state: areas overlap")
    if not all(isinstance(n, str) for n in notes):
        raise ValueError("state: load_notes must be strings")
    # The free tree: a sound red-black tree of exactly the space left free.
    if any(c not in ("r", "b") or type(d) is not int for _, _, c, d in shape):
        raise ValueError("state: free tree nodes are (start, end, 'r'|'b', depth)")
    try:
        tree = VaTree.from_shape(shape)
    except (ValueError, AssertionError) as e:
        raise ValueError(f"state: free tree: {e}") from None
    holes, pos = [], space.start
    for lo, hi in spans + [(space.end, space.end)]:
        if pos < lo:
            holes.append((pos, lo))
        pos = hi
    if [(va.va_start, va.va_end) for va in tree] != holes:
        raise ValueError("state: the free tree's blocks are not the space the areas leave free")
    return busy, lazy, [(n, s, e) for n, s, e in pooled if n is not None], shape, notes


def info_line(start: int, end: int, caller: str | None, page_size: int) -> str:
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


__all__ = ["LOCK_MODES", "MISS", "NOT_COPIED_ARGS", "SPACE_INIT_ARGS", "LockMode",
           "ReferenceSpace", "SearchMode", "SpaceState", "SpaceStats", "UsercopyMode",
           "VmapArea", "VmapExhausted", "check_space_state", "current_cpu",
           "default_lazy_max_pages", "default_nr_nodes", "info_line", "possible_cpus",
           "rebuild_space"]

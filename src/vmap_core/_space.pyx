# cython: freethreading_compatible = False
"""The Cython core: VmapSpace and VmapArea.

Layers, each in its own include file, data flowing one way:
    VmapSpace (this file: argument checks, Python objects at the edge)
    -> _alloc.pxi (alloc_vmap_area / free_vmap_area across the two layers),
       _lazy.pxi (lazy free, purge, per-node pools)
    -> _freetree.pxi (free space) and _nodes.pxi (busy areas per node)
    -> _rbtree.pxi (rb-tree mechanics, augmentation as callbacks)
    -> _slab.pxi (area records) and _locks.h (spinlocks, atomics).
Everything below this file is nogil C; Python objects are made only here,
after the locks are dropped.  _check.pxi holds the invariant checker and
_native.pxi the multi-threaded native loops (usercopy cells, stress).
"""

cimport cython
from cpython.long cimport PyLong_Check
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport strcmp

import array
import operator
import os
import threading
import time

from ._errors import VmapExhausted, on_purge_error
from . import reference as _reference
from . import profiles as _profiles

include "_rbtree.pxi"
include "_slab.pxi"
include "_types.pxi"
include "_freetree.pxi"
include "_nodes.pxi"
include "_alloc.pxi"
include "_lazy.pxi"
include "_check.pxi"
include "_native.pxi"

cdef extern from "Python.h":
    ctypedef struct PyObject
    unsigned long long PyLong_AsUnsignedLongLong(object v)
    PyObject* PyErr_Occurred()      # a borrowed reference: not an object here
    void PyErr_Clear()

ADDR_LIMIT = 1 << 64
MISS = (1 << 64) - 1
"""find_many()'s answer where no area holds the address (never a page-aligned start)."""
cdef object _ADDR_LIMIT = ADDR_LIMIT
cdef object _MAX_PAGE_SIZE = _reference.MAX_PAGE_SIZE
cdef unsigned _MAX_NODES = _reference.MAX_NODES
LOCK_MODES = _profiles.lock_modes()    # the newest profile's; profiles.LOCK_MODES adds "split"
# "split" (v6.8's three locks) is the per-node design with its one node.
cdef dict _LOCK_MODE_IDS = {"node": LOCK_NODE, "global": LOCK_GLOBAL, "split": LOCK_NODE,
                         "rwlock": LOCK_RWLOCK, "optimistic": LOCK_OPTIMISTIC}
cdef object _CallbackFailed = _reference._CallbackFailed
cdef object _RefArea = _reference.VmapArea
cdef uint64_t MISS_U64 = 0xFFFFFFFFFFFFFFFFULL


# -- argument conversion --------------------------------------------------

cdef object _index(object v, str name):
    """An integer (anything with __index__), else TypeError."""
    if PyLong_Check(v):
        return v
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(v).__name__}") from None


cdef inline object _index_opt(object v, str name):
    """None, or an integer as for _index()."""
    return None if v is None else _index(v, name)


cdef inline uint64_t _u64(object v, str name) except? 0xFFFFFFFFFFFFFFFF:
    """An already-indexed int in [0, 2**64), else ValueError."""
    cdef unsigned long long x = PyLong_AsUnsignedLongLong(v)
    if x == 0xFFFFFFFFFFFFFFFFULL and PyErr_Occurred() != NULL:
        PyErr_Clear()
        raise ValueError(f"{name} must be in [0, 2**64), not {v}")
    return x


cdef inline uint64_t _last_of(object v, str name) except? 0xFFFFFFFFFFFFFFFF:
    """An exclusive bound in [1, 2**64] as its last address (v - 1)."""
    cdef unsigned long long x = PyLong_AsUnsignedLongLong(v)
    if x == 0xFFFFFFFFFFFFFFFFULL and PyErr_Occurred() != NULL:
        PyErr_Clear()
        if v == _ADDR_LIMIT:
            return 0xFFFFFFFFFFFFFFFFULL
        raise ValueError(f"{name} must be in [1, 2**64], not {v}")
    if x == 0:
        raise ValueError(f"{name} must be in [1, 2**64], not 0")
    return x - 1


cdef inline bint _is_pow2(uint64_t x) noexcept nogil:
    return x != 0 and (x & (x - 1)) == 0


# -- VmapArea ---------------------------------------------------------------

@cython.final
@cython.freelist(32)
cdef class VmapArea:
    """VmapArea(start, end)
--

An immutable address range ``[start, end)``.

    Equal (and hashed alike) by ``(start, end)``, also to the reference's
    VmapArea, and ordered by ``(start, end)``; unpacks as
    ``start, end = area``; ``addr in area`` means ``start <= addr < end``.
    No len(): an area unpacks as two values, and a size may exceed what
    len() can return (2**64); use ``size``.
    """
    cdef uint64_t _start
    cdef uint64_t _last      # end - 1, so that end may be 2**64

    def __init__(self, start, end):
        start = _index(start, "start")
        end = _index(end, "end")
        if not 0 <= start < end <= _ADDR_LIMIT:
            raise ValueError("VmapArea needs 0 <= start < end <= 2**64")
        self._start = start
        self._last = end - 1

    @property
    def start(self):
        """First address."""
        return self._start

    @property
    def end(self):
        """One past the last address."""
        return <object>self._last + 1

    @property
    def size(self):
        """end - start."""
        return <object>(self._last - self._start) + 1

    def __iter__(self):
        return iter((self._start, <object>self._last + 1))

    def __eq__(self, other):
        if isinstance(other, VmapArea):
            return self._start == (<VmapArea>other)._start and self._last == (<VmapArea>other)._last
        if isinstance(other, _RefArea):
            return (self.start, self.end) == (other.start, other.end)
        return NotImplemented

    def __hash__(self):
        return hash((self._start, <object>self._last + 1))

    def __reduce__(self):
        return (VmapArea, (self._start, <object>self._last + 1))

    def __repr__(self):
        return f"VmapArea(start={self._start:#x}, end={<object>self._last + 1:#x})"

    # -- container and ordering conventions (intervaltree, sortedcontainers) --

    def __contains__(self, addr):
        """``start <= addr < end``; TypeError for a non-integer."""
        a = _index(addr, "addr")
        return self._start <= a <= <object>self._last

    def __lt__(self, other):
        k = _area_key(other)
        return NotImplemented if k is None else (self._start, <object>self._last + 1) < k

    def __le__(self, other):
        k = _area_key(other)
        return NotImplemented if k is None else (self._start, <object>self._last + 1) <= k

    def __gt__(self, other):
        k = _area_key(other)
        return NotImplemented if k is None else (self._start, <object>self._last + 1) > k

    def __ge__(self, other):
        k = _area_key(other)
        return NotImplemented if k is None else (self._start, <object>self._last + 1) >= k


cdef object _area_key(object other):
    """(start, end) of a core or reference VmapArea, else None."""
    if isinstance(other, VmapArea):
        return ((<VmapArea>other)._start, <object>(<VmapArea>other)._last + 1)
    if isinstance(other, _RefArea):
        return (other.start, other.end)
    return None


cdef inline VmapArea _area(uint64_t start, uint64_t last):
    cdef VmapArea a = VmapArea.__new__(VmapArea)
    a._start = start
    a._last = last
    return a


cdef size_t _copy_chain(va_t* va, block_t* blocks, size_t n, size_t cap) noexcept nogil:
    """Append the bounds of a chain of records (linked through next) to
    blocks[n:cap]; returns the new count.  The caller holds the chain's lock."""
    while va != NULL and n < cap:
        blocks[n].start = va.start
        blocks[n].last = va.last
        n += 1
        va = va.next
    return n


cdef list _areas_of(block_t* blocks, size_t n):
    cdef size_t i
    return [_area(blocks[i].start, blocks[i].last) for i in range(n)]


ctypedef struct rec_t:          # one record of a space's state (pickle, copy)
    uint64_t start
    uint64_t last
    uint64_t aux                # the node tag: node id + 1, or 0
    uint64_t node               # the node whose tree or pool holds it


cdef size_t _copy_recs(va_t* va, rec_t* recs, size_t n, size_t cap, unsigned node) noexcept nogil:
    """_copy_chain() keeping each record's tag and node."""
    while va != NULL and n < cap:
        recs[n].start = va.start
        recs[n].last = va.last
        recs[n].aux = va.aux
        recs[n].node = node
        n += 1
        va = va.next
    return n


# -- VmapSpace --------------------------------------------------------------

cdef void space_destroy(space_t* s, unsigned nr_nodes) noexcept nogil:
    """Free everything a space_t holds (its slab gives back every record)."""
    cdef unsigned k
    if s.nodes != NULL:
        for k in range(nr_nodes):
            free(s.nodes[k].pools)
    slab_destroy(&s.slab)
    free(s.locks)
    free(s.nodes)
    free(s)


default_nr_nodes = _reference.default_nr_nodes


cdef class VmapSpace:
    """VmapSpace(start, end, *, page_size=4096, nr_nodes=None, zone_size=None, lock=None, lazy_max_pages=None, on_purge=None, kernel=None, search=None, auto_purge=True, trace=None)
--

The vmalloc address space ``[start, end)`` (mm/vmalloc.c).

    ``kernel`` picks the version it behaves like (vmap_core.profiles; default
    the newest, "6.16"): from v6.9 free space is one augmented rb-tree and
    busy areas are sharded over ``nr_nodes`` nodes by
    ``(start // zone_size) % nr_nodes``, each node with its own tree, list and
    spinlock; "6.8" has one busy tree and three locks.  ``lock`` picks the
    lock design (None: the profile's own), ``search`` the kernel's aligned
    search ("kernel") or the exact lowest match ("lowest"), ``auto_purge``
    whether free_lazy() and a failing alloc() purge by themselves, ``trace`` a
    stream to write the kernel's tracepoints to (vmap_core.trace.Recorder).

    Costs, n busy areas, m free blocks: alloc O(log m + log n) for
    align <= page_size; free O(log m + log n) plus the node walk; find
    O(log n) in the first node tried, O(nr_nodes log n) for a miss.
    """
    cdef space_t* sp
    cdef readonly object start, end, page_size, nr_nodes, zone_size, lock
    cdef readonly object lazy_max_pages, on_purge, kernel, search, auto_purge
    cdef dict _callers          # start -> caller tag, for the areas given one
    cdef object _rec            # vmap_core.trace.Recorder, or None
    cdef object _flushing       # the thread running on_purge, or None
    cdef public list load_notes  # from_vmallocinfo(): what was done to build it
    cdef object __weakref__

    def __cinit__(self):
        self.sp = NULL

    def __init__(self, start, end, *, page_size=4096, nr_nodes=None, zone_size=None,
                 lock=None, lazy_max_pages=None, on_purge=None, kernel=None, search=None,
                 auto_purge=True, trace=None):
        cdef space_t* s
        cdef va_t* va
        cdef unsigned k
        if self.sp != NULL:
            raise RuntimeError("VmapSpace is already initialised")
        start = _index(start, "start")
        end = _index(end, "end")
        page_size = _index(page_size, "page_size")
        nr_nodes = _index_opt(nr_nodes, "nr_nodes")
        zone_size = _index_opt(zone_size, "zone_size")
        lazy_max_pages = _index_opt(lazy_max_pages, "lazy_max_pages")
        if on_purge is not None and not callable(on_purge):
            raise TypeError("on_purge must be callable or None")
        if not isinstance(auto_purge, bool):
            raise TypeError("auto_purge must be a bool")
        (profile, lock, search, nr_nodes, zone_size,
         lazy_max_pages) = _reference.check_config(start, end, page_size, nr_nodes, zone_size,
                                                   lazy_max_pages, lock, kernel, search)

        s = <space_t*>calloc(1, sizeof(space_t))
        if s == NULL:
            raise MemoryError()
        s.locks = <vm_lock_t*>vm_aligned_calloc(3, sizeof(vm_lock_t))
        s.nodes = <vnode_t*>vm_aligned_calloc(nr_nodes, sizeof(vnode_t))
        slab_init(&s.slab)
        va = slab_alloc(&s.slab) if s.locks != NULL and s.nodes != NULL else NULL
        if va != NULL:
            for k in range(<unsigned>nr_nodes):
                s.nodes[k].pools = <va_pool_t*>calloc(MAX_VA_SIZE_PAGES, sizeof(va_pool_t))
                if s.nodes[k].pools == NULL:
                    va = NULL
        if va == NULL:
            space_destroy(s, nr_nodes)
            raise MemoryError()
        s.start = start
        s.last = end - 1
        s.page_size = page_size
        s.zone_size = zone_size
        s.zone_shift = (<uint64_t>zone_size).bit_length() - 1 if _is_pow2(zone_size) else -1
        s.nr_nodes = nr_nodes
        s.mode = _LOCK_MODE_IDS[lock]
        vm_lock_init(&s.locks[0])
        vm_lock_init(&s.locks[1])
        vm_lock_init(&s.locks[2])
        s.purge_lock = &s.locks[2]
        s.lazy_max_pages = lazy_max_pages
        s.search_lowest = search == "lowest"
        s.walk_down = profile.walk_down
        s.decay_keeps_small = profile.decay_keeps_small
        s.lazy_merge = profile.lazy_merge
        s.global_lock = &s.locks[1] if s.mode == LOCK_GLOBAL else NULL
        s.free_lock = s.global_lock if s.global_lock != NULL else &s.locks[0]
        for k in range(s.nr_nodes):       # calloc'ed: zero counters, empty trees
            vm_lock_init(&s.nodes[k].lock)
            vm_rwlock_init(&s.nodes[k].rw)
            vm_lock_init(&s.nodes[k].lazy_lock)
            vm_lock_init(&s.nodes[k].pool_lock)
        s.free_root.node = NULL
        s.nr_free = 0
        va.start = s.start
        va.last = s.last
        ft_insert(s, va)
        self.sp = s
        self.start, self.end, self.page_size = start, end, page_size
        self.nr_nodes, self.zone_size, self.lock = nr_nodes, zone_size, lock
        self.lazy_max_pages, self.on_purge = lazy_max_pages, on_purge
        self.kernel, self.search, self.auto_purge = profile.name, search, auto_purge
        self._callers = {}
        self.load_notes = []
        self._flushing = None
        self._rec = _reference.make_recorder(trace, self)

    def __dealloc__(self):
        if self.sp != NULL:
            space_destroy(self.sp, self.sp.nr_nodes)
            self.sp = NULL

    cdef inline space_t* _s(self) except NULL:
        if self.sp == NULL:
            raise RuntimeError("VmapSpace.__init__ was not called")
        return self.sp

    # -- the hot methods ----------------------------------------------------

    def alloc(self, size, align=None, vstart=None, vend=None, *, cpu=None, caller=None):
        """alloc_vmap_area(): the lowest ``[a, a + size)`` in ``[vstart, vend)``
        with ``a`` a multiple of ``align``; returns ``a``.

        Takes the first free block, in address order, where
        ``ALIGN(max(block.start, vstart), align) + size <= block.end``.
        With the whole range and more than one node, the pool of node
        ``cpu % nr_nodes`` is tried first (node_alloc(); ``cpu`` defaults to
        the calling thread's native id, threading.get_native_id()) and the
        area is tagged with that node.  When nothing fits, everything lazy is purged with full pool
        decay and the search retried once; then VmapExhausted.  ``caller``
        is an optional tag shown by vmallocinfo().
        """
        cdef space_t* s = self._s()
        cdef uint64_t szm1, al, vs, vl, addr
        cdef uint64_t tag = 0
        cdef alloc_status_t rc
        size = _index(size, "size")
        align = _index_opt(align, "align")
        vstart = _index_opt(vstart, "vstart")
        vend = _index_opt(vend, "vend")
        cpu = _index_opt(cpu, "cpu")
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, not {type(caller).__name__}")
        szm1 = _last_of(size, "size")
        if (szm1 + 1) & (s.page_size - 1):
            raise ValueError(f"size must be a positive multiple of page_size, not {size}")
        if align is None:
            al = s.page_size
        else:
            al = _u64(align, "align")
            if not _is_pow2(al):
                raise ValueError(f"align must be a power of two, not {align}")
        vs = s.start if vstart is None else _u64(vstart, "vstart")
        vl = s.last if vend is None else _last_of(vend, "vend")
        if vs < s.start or vl > s.last or vs > vl:
            raise ValueError("need start <= vstart < vend <= end")
        if (vs | (vl + 1)) & (s.page_size - 1):
            raise ValueError("vstart and vend must be multiples of page_size")
        if cpu is not None and cpu < 0:
            raise ValueError("cpu must be >= 0")
        if vs == s.start and vl == s.last and s.nr_nodes > 1:
            tag = (vm_current_cpu() if cpu is None else cpu % s.nr_nodes) % s.nr_nodes
            if space_alloc_pooled(s, <unsigned>tag, szm1, al, &addr) == ALLOC_OK:
                if self._rec is not None:
                    self._trace_alloc(ALLOC_OK, addr, size, al, vs, vl, cpu)
                return self._tagged(addr, caller)
            tag += 1
        rc = space_alloc(s, szm1, al, vs, vl, tag, &addr)
        if self._rec is not None:
            self._trace_alloc(rc, addr, size, al, vs, vl, cpu)
        if (rc == ALLOC_NOSPACE or rc == ALLOC_RANGE) and self.auto_purge and not self._in_flush():
            # The overflow path: purge everything (full decay), retry once.
            failure = None
            try:
                self._purge(True)
            except _CallbackFailed as exc:  # retry first, then report
                failure = exc
            rc = space_alloc(s, szm1, al, vs, vl, tag, &addr)
            if self._rec is not None:
                self._trace_alloc(rc, addr, size, al, vs, vl, cpu)
            if failure is not None:
                result = self._tagged(addr, caller) if rc == ALLOC_OK else None
                raise failure.report(f"alloc({size:#x}, align={al:#x})", result) \
                    from failure.__cause__
        if rc == ALLOC_OK:
            return self._tagged(addr, caller)
        if rc == ALLOC_NOMEM:
            raise MemoryError("vmap_core: out of memory for area records")
        if rc == ALLOC_RANGE:
            raise VmapExhausted(f"the lowest fit for size={size:#x} align={al:#x} ends past vend")
        raise VmapExhausted(f"no free block fits size={size:#x} align={al:#x}")

    cdef void _trace_alloc(self, alloc_status_t rc, uint64_t addr, object size, uint64_t align,
                           uint64_t vs, uint64_t vl, object cpu):
        err = None if rc == ALLOC_OK else "ERANGE" if rc == ALLOC_RANGE else "ENOENT"
        self._rec.alloc(self, addr if rc == ALLOC_OK else None, size, align, vs,
                        <object>vl + 1, err, cpu)

    cdef bint _in_flush(self):
        return self._flushing is not None and self._flushing == threading.get_ident()

    def predict(self, size, align=None, vstart=None, vend=None, *, cpu=None):
        """What alloc() with these arguments would do now, changing nothing:
        ``(addr, "pool")`` when node_alloc() would hand out the aligned head of
        the CPU's pool, ``(addr, "free")`` for the free tree's answer, or
        ``(None, "ENOENT")`` / ``(None, "ERANGE")`` when the first attempt
        fails (before any purge).  The replay compares this with the kernel."""
        cdef space_t* s = self._s()
        cdef uint64_t szm1, al, vs, vl, addr = 0
        cdef alloc_status_t rc
        szm1, al, vs, vl = self._request(size, align, vstart, vend)
        cpu = _index_opt(cpu, "cpu")
        if cpu is not None and cpu < 0:
            raise ValueError("cpu must be >= 0")
        if vs == s.start and vl == s.last and s.nr_nodes > 1:
            node = (vm_current_cpu() if cpu is None else cpu % s.nr_nodes) % s.nr_nodes
            if space_pool_peek(s, <unsigned>node, szm1, al, &addr):
                return addr, "pool"
        rc = space_probe(s, szm1, al, vs, vl, &addr)
        if rc == ALLOC_OK:
            return addr, "free"
        return None, "ERANGE" if rc == ALLOC_RANGE else "ENOENT"

    def alloc_at(self, addr, size, *, cpu=None, caller=None):
        """Take exactly ``[addr, addr + size)``: cut out of the free block that
        holds it (the va_clip() of a chosen range, as pcpu_get_vm_areas() does),
        or an area of exactly that range taken out of a pool.  ``cpu`` tags it
        with node ``cpu % nr_nodes`` (where there are nodes), as a whole-range
        alloc() would.  ValueError when the range is not wholly free; returns
        addr.  The replay uses it to follow the kernel where the model differs."""
        cdef space_t* s = self._s()
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t szm1, tag = 0
        cdef alloc_status_t rc
        size = _index(size, "size")
        cpu = _index_opt(cpu, "cpu")
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, not {type(caller).__name__}")
        szm1 = _last_of(size, "size")
        if (szm1 + 1) & (s.page_size - 1):
            raise ValueError(f"size must be a positive multiple of page_size, not {size}")
        if cpu is not None and cpu < 0:
            raise ValueError("cpu must be >= 0")
        if a & (s.page_size - 1) or a < s.start or a > s.last or s.last - a < szm1:
            raise ValueError("need a page-aligned [addr, addr + size) inside [start, end)")
        if cpu is not None and s.nr_nodes > 1:
            tag = cpu % s.nr_nodes + 1
        rc = space_alloc_at(s, a, szm1, tag)
        if rc == ALLOC_NOMEM:
            raise MemoryError("vmap_core: out of memory for area records")
        if rc != ALLOC_OK:
            raise ValueError(f"[{a:#x}, {<object>a + size:#x}) is not free")
        return self._tagged(a, caller)

    cdef tuple _request(self, size, align, vstart, vend):
        """alloc()'s checks: (size - 1, align, vstart, vend - 1)."""
        cdef space_t* s = self.sp
        cdef uint64_t szm1, al, vs, vl
        size = _index(size, "size")
        align = _index_opt(align, "align")
        vstart = _index_opt(vstart, "vstart")
        vend = _index_opt(vend, "vend")
        szm1 = _last_of(size, "size")
        if (szm1 + 1) & (s.page_size - 1):
            raise ValueError(f"size must be a positive multiple of page_size, not {size}")
        if align is None:
            al = s.page_size
        else:
            al = _u64(align, "align")
            if not _is_pow2(al):
                raise ValueError(f"align must be a power of two, not {align}")
        vs = s.start if vstart is None else _u64(vstart, "vstart")
        vl = s.last if vend is None else _last_of(vend, "vend")
        if vs < s.start or vl > s.last or vs > vl:
            raise ValueError("need start <= vstart < vend <= end")
        if (vs | (vl + 1)) & (s.page_size - 1):
            raise ValueError("vstart and vend must be multiples of page_size")
        return szm1, al, vs, vl

    cdef inline object _tagged(self, uint64_t addr, object caller):
        if caller is not None:
            self._callers[addr] = caller
        elif self._callers:
            self._callers.pop(addr, None)
        return addr

    def find(self, addr):
        """find_vmap_area(): the busy area with ``start <= addr < end``, or None."""
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t start, last
        if space_find(self._s(), a, &start, &last):
            return _area(start, last)
        return None

    def _find_released(self, addr):
        """find() that drops the GIL around the lookup: kept only so that
        benchmarks/bench_threads.py can measure what that costs."""
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t start, last
        cdef space_t* s = self._s()
        cdef bint found
        with nogil:
            found = space_find(s, a, &start, &last)
        if found:
            return _area(start, last)
        return None

    def free(self, addr):
        """free_vmap_area(): free the busy area that starts at addr; returns it.

        KeyError if no busy area starts at addr (a double free included).
        """
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t start, last
        cdef int rc = space_free(self._s(), a, &start, &last)
        if rc == UNLINK_OK:
            if self._callers:
                self._callers.pop(start, None)
            return _area(start, last)
        if rc < 0:
            raise SystemError("vmap_core: freed area overlapped free space (corrupted space)")
        raise KeyError(addr)

    # -- lazy free, purge, pools ------------------------------------------------

    def free_lazy(self, addr):
        """vfree() / free_vmap_area_noflush(): unlink the busy area that starts
        at addr and park it in the lazy tree of its tagged node (else the node
        of its start), unmerged (v6.8: merged with lazy neighbours).  Its range
        is not reusable until a purge, which runs here (with auto_purge) when
        the lazy pages exceed lazy_max_pages.  KeyError as for free(); returns
        the area."""
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t start, last, nr_lazy = 0
        cdef bint over = False
        cdef int rc = space_free_lazy(self._s(), a, &start, &last, &over, &nr_lazy)
        if rc != UNLINK_OK:
            raise KeyError(addr)
        if self._callers:
            self._callers.pop(start, None)
        area = _area(start, last)
        if self._rec is not None:
            self._rec.free(self, start, nr_lazy)
        if over and self.auto_purge and not self._in_flush():
            try:
                self._purge(False)
            except _CallbackFailed as exc:
                raise exc.report(f"free_lazy({a:#x})", area) from exc.__cause__
        return area

    def purge(self, full=False):
        """__purge_vmap_area_lazy(): decay every node's pools (~25% of each
        class, all with full=True), detach every lazy tree, call
        on_purge(start, end) with the union of the detached ranges (the one TLB
        flush) before any of them can be handed out again, then send every
        lazy area to its node's pool (when it carries a node tag, fits one of
        the 256 size classes and the purge is not full) or back to the free
        tree, merging.  Returns the number of lazy areas purged.  If on_purge
        raises, the purge still completes and OnPurgeError (chained to the
        callback's exception) reports it."""
        if not isinstance(full, bool):
            raise TypeError("full must be a bool")
        try:
            return self._purge(full)
        except _CallbackFailed as exc:
            raise exc.report("purge()", exc.args[3]) from exc.__cause__

    cdef object _purge(self, bint full):
        """One purge; raises _CallbackFailed (then finished) if on_purge raised."""
        cdef uint64_t fs, fl
        cdef size_t n
        cdef space_t* s = self._s()
        if self._in_flush():
            raise RuntimeError("purge called from on_purge: a purge cannot start while one "
                               "is flushing (the kernel holds vmap_purge_lock)")
        with nogil:
            lock_acquire(s.purge_lock)
            n = space_purge_detach(s, full, &fs, &fl)
        failure = None
        try:
            if n and self.on_purge is not None:
                self._flushing = threading.get_ident()
                try:
                    self.on_purge(fs, <object>fl + 1)     # flush_tlb_kernel_range()
                except Exception as exc:                  # finish the purge, then report
                    failure = exc
                finally:
                    self._flushing = None
        finally:                                          # even on KeyboardInterrupt
            with nogil:
                space_purge_reclaim(s, full)
                vm_unlock(s.purge_lock)
            if self._rec is not None:
                self._rec.purge(self, fs, <object>fl + 1, n)
        if failure is not None:
            raise _CallbackFailed(failure, fs, <object>fl + 1, n) from failure
        return n

    def drain_pools(self):
        """The shrinker's scan: fully decay every node's pools back to the
        free tree; returns the number of areas given back."""
        cdef space_t* s = self._s()
        cdef size_t n
        if self._in_flush():
            raise RuntimeError("drain_pools() called from on_purge: the shrinker takes the "
                               "purge lock that the flush holds")
        with nogil:
            n = space_drain_pools(s)
        return n

    def areas(self, from_addr=0):
        """Busy areas in global address order, from the first that ends above
        from_addr (find_vmap_area_exceed_addr(), as vread_iter() walks).  Each
        step finds its place anew, so other threads may alloc and free meanwhile."""
        cdef uint64_t addr = _u64(_index(from_addr, "from_addr"), "from_addr")
        return self._areas_from(addr)

    def _areas_from(self, uint64_t addr):
        cdef uint64_t start, last
        cdef space_t* s = self._s()
        while space_find_exceed(s, addr, &start, &last):
            yield _area(start, last)
            if last == UINT64_MAX:
                return
            addr = last + 1

    def caller_of(self, addr):
        """The caller tag of the busy area that starts at addr (None if it has
        none); KeyError if no busy area starts there."""
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t start, last
        if not space_find(self._s(), a, &start, &last) or start != a:
            raise KeyError(addr)
        return self._callers.get(a)

    def lazy_areas(self):
        """Lazily freed areas not yet purged, in address order."""
        return [a for a, _ in self._lazy_pool_snapshot(True)]

    def pooled_areas(self):
        """(area, node) for every area in a node's pool, in address order."""
        return self._lazy_pool_snapshot(False)

    cdef list _lazy_pool_snapshot(self, bint lazy):
        cdef space_t* s = self._s()
        cdef list out = []
        cdef unsigned k
        cdef size_t cls
        cdef vnode_t* vn
        cdef vm_lock_t* l
        cdef block_t* blocks
        cdef size_t n, cap
        for k in range(s.nr_nodes):
            vn = &s.nodes[k]
            l = lazy_lock(s, vn) if lazy else pool_lock(s, vn)
            lock_acquire(l)
            cap = vn.nr_lazy if lazy else vn.nr_pooled
            blocks = <block_t*>malloc((cap + 1) * sizeof(block_t))
            if blocks == NULL:
                vm_unlock(l)
                raise MemoryError()
            n = 0
            if lazy:
                n = _copy_chain(rb_first(vn.lazy_root.node), blocks, n, cap)
            else:
                for cls in range(<size_t>MAX_VA_SIZE_PAGES):
                    n = _copy_chain(vn.pools[cls].head, blocks, n, cap)
            vm_unlock(l)
            try:
                out.extend((a, k) for a in _areas_of(blocks, n))
            finally:
                free(blocks)
        out.sort(key=lambda p: p[0].start)
        return out

    def vmallocinfo(self):
        """/proc/vmallocinfo (vmalloc_info_show(), show_purge_info()): busy
        areas node by node, sorted within a node, as ``0x<start>-0x<end>
        <size> <caller> pages=<n> vmalloc`` (the size with the guard page,
        pages= without it, no caller where none was given), then the lazily
        freed ones as ``unpurged vm_area``."""
        cdef list lines = []
        cdef dict callers = self._callers
        by_node = [[] for _ in range(self.nr_nodes)]
        for a in self._busy_snapshot():
            by_node[self.node_of(a.start)].append(a)
        for areas in by_node:
            for a in areas:
                lines.append(_reference.info_line(a.start, a.end, callers.get(a.start),
                                                  self.page_size))
        lazy_by_node = [[] for _ in range(self.nr_nodes)]
        for a in self.lazy_areas():
            lazy_by_node[self._lazy_node(a.start)].append(a)
        for areas in lazy_by_node:
            for a in areas:
                lines.append(f"0x{a.start:016x}-0x{a.end:016x} {a.size:7d} unpurged vm_area")
        return "".join(line + "\n" for line in lines)

    cdef unsigned _lazy_node(self, uint64_t start):
        cdef space_t* s = self.sp
        cdef unsigned k
        cdef va_t* n
        for k in range(s.nr_nodes):
            lock_acquire(lazy_lock(s, &s.nodes[k]))
            n = bt_lookup_root(&s.nodes[k].lazy_root, start)
            vm_unlock(lazy_lock(s, &s.nodes[k]))
            if n != NULL:
                return k
        return 0

    @classmethod
    def from_vmallocinfo(cls, text_or_path, **space_kwargs):
        """A space holding exactly the busy areas of a /proc/vmallocinfo dump
        (its text, or a path to one); see vmap_core.kernel.vmallocinfo.load.  What
        was done to build it (hidden or hashed addresses laid out anew, lines
        skipped) is in the space's ``load_notes``."""
        from .kernel import vmallocinfo
        space, notes = vmallocinfo.load(text_or_path, cls=cls, **space_kwargs)
        space.load_notes = list(notes)
        return space

    def _free_tree_shape(self):
        """Test-only: the free tree in preorder, (start, end, 'r'|'b', depth)
        per node, to compare with the reference's transcription of the kernel."""
        cdef space_t* s = self._s()
        cdef list out = []
        cdef list stack = []
        cdef va_t* n
        cdef int depth
        lock_acquire(s.free_lock)
        try:
            stack.append((<uintptr_t>s.free_root.node, 0))
            while stack:
                ptr, depth = stack.pop()
                n = <va_t*><uintptr_t>ptr
                if n == NULL:
                    continue
                out.append((n.start, <object>n.last + 1, "b" if rb_is_black(n) else "r", depth))
                stack.append((<uintptr_t>n.right, depth + 1))
                stack.append((<uintptr_t>n.left, depth + 1))
        finally:
            vm_unlock(s.free_lock)
        return out

    def locate(self, addr):
        """What holds addr: ``("busy", area, node)``, ``("free", block,
        None)``, ``("lazy", area, node)`` or ``("pooled", area, node)``; or
        ``(None, None, None)`` outside the space (or, from inside on_purge, in
        an area the purge is flushing).  A pooled area costs a scan of the pools."""
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef space_t* s = self._s()
        cdef uint64_t st, la
        cdef va_t* n
        cdef unsigned k
        cdef size_t cls
        cdef vnode_t* vn
        cdef vm_lock_t* l
        cdef bint found = False
        if space_find(s, a, &st, &la):
            return "busy", _area(st, la), addr_to_node_id(s, st)
        lock_acquire(s.free_lock)
        n = ft_enclosing(s, a)
        if n != NULL:
            st, la = n.start, n.last
            found = True
        vm_unlock(s.free_lock)
        if found:
            return "free", _area(st, la), None
        for k in range(s.nr_nodes):
            vn = &s.nodes[k]
            l = lazy_lock(s, vn)
            lock_acquire(l)
            n = bt_lookup_root(&vn.lazy_root, a)
            if n != NULL:
                st, la = n.start, n.last
                found = True
            vm_unlock(l)
            if found:
                return "lazy", _area(st, la), k
        for k in range(s.nr_nodes):
            vn = &s.nodes[k]
            if cnt_peek(&vn.nr_pooled) == 0:
                continue
            l = pool_lock(s, vn)
            lock_acquire(l)
            for cls in range(<size_t>MAX_VA_SIZE_PAGES):
                n = vn.pools[cls].head
                while n != NULL and not (n.start <= a <= n.last):
                    n = n.next
                if n != NULL:
                    st, la = n.start, n.last
                    found = True
                    break
            vm_unlock(l)
            if found:
                return "pooled", _area(st, la), k
        return None, None, None

    def node_of(self, addr):
        """addr_to_node_id(): the node whose busy tree holds an area starting at addr."""
        return addr_to_node_id(self._s(), _u64(_index(addr, "addr"), "addr"))

    def find_many(self, addrs, out=None):
        """find_vmap_area() for each address of a buffer of unsigned 64-bit
        integers (array.array('Q'), numpy uint64, ...), without the GIL.

        Writes the start of the area holding each address, or MISS, into out
        (a writable buffer of the same length and type; a new array.array('Q')
        when None) and returns out.  TypeError for a buffer of another type,
        ValueError when the lengths differ.
        """
        cdef space_t* s = self._s()
        cdef const uint64_t[:] a
        cdef uint64_t[:] o
        cdef Py_ssize_t i, n
        cdef uint64_t st, la
        try:
            a = addrs
        except (TypeError, ValueError, BufferError) as e:
            raise TypeError(f"addrs must be a buffer of unsigned 64-bit integers: {e}") from None
        n = a.shape[0]
        if out is None:
            out = array.array("Q", bytes(8 * n))
        try:
            o = out
        except (TypeError, ValueError, BufferError) as e:
            raise TypeError(f"out must be a writable buffer of unsigned 64-bit integers: {e}") from None
        if o.shape[0] != n:
            raise ValueError(f"out has {o.shape[0]} items, addrs {n}")
        with nogil:
            for i in range(n):
                if space_find(s, a[i], &st, &la):
                    o[i] = st
                else:
                    o[i] = MISS_U64
        return out

    def check_copy(self, addr, n):
        """check_heap_object() for a vmalloc address (hardened usercopy):
        ValueError unless one busy area holds all of ``[addr, addr + n)``."""
        cdef uint64_t a = _u64(_index(addr, "addr"), "addr")
        cdef uint64_t nb = _u64(_index(n, "n"), "n")
        cdef uint64_t st, la
        if not space_find(self._s(), a, &st, &la):
            raise ValueError(f"usercopy: {a:#x} is not in a vmap area")
        if nb and nb - 1 > la - a:
            raise ValueError(f"usercopy: [{a:#x}, +{nb:#x}) runs past the end of its area "
                             f"[{st:#x}, {<object>la + 1:#x})")

    # -- whole-space views --------------------------------------------------

    def __len__(self):
        cdef space_t* s = self._s()
        cdef size_t n = 0
        cdef unsigned k
        for k in range(s.nr_nodes):
            n += cnt_peek(&s.nodes[k].nr_areas)
        return n

    def __iter__(self):
        """Busy areas in address order (a snapshot, node by node)."""
        return iter(self._busy_snapshot())

    cdef list _busy_snapshot(self):
        cdef space_t* s = self._s()
        cdef block_t* blocks = NULL
        cdef size_t n = 0
        cdef size_t cap = 0
        cdef unsigned k
        cdef vnode_t* vn
        cdef vm_lock_t* l
        cdef list out
        # Size the buffer under no lock, then fill it node by node; retry if
        # another thread added areas in between.
        while True:
            cap = len(self) + 16
            blocks = <block_t*>malloc(cap * sizeof(block_t))
            if blocks == NULL:
                raise MemoryError()
            n = 0
            for k in range(s.nr_nodes):
                vn = &s.nodes[k]
                l = node_lock(s, vn)
                lock_acquire(l)
                if n + vn.nr_areas > cap:
                    vm_unlock(l)
                    n = cap + 1
                    break
                n = _copy_chain(rb_first(vn.root.node), blocks, n, cap)
                vm_unlock(l)
            if n <= cap:
                break
            free(blocks)
        try:
            qsort(blocks, n, sizeof(block_t), block_cmp)
            out = _areas_of(blocks, n)
        finally:
            free(blocks)
        return out

    def free_areas(self):
        """The free blocks as VmapArea, coalesced, in address order."""
        cdef space_t* s = self._s()
        cdef block_t* blocks
        cdef size_t n = 0
        cdef size_t cap
        lock_acquire(s.free_lock)
        cap = s.nr_free
        blocks = <block_t*>malloc((cap + 1) * sizeof(block_t))
        if blocks == NULL:
            vm_unlock(s.free_lock)
            raise MemoryError()
        n = _copy_chain(rb_first(s.free_root.node), blocks, 0, cap)
        vm_unlock(s.free_lock)
        try:
            return _areas_of(blocks, n)
        finally:
            free(blocks)

    # -- introspection ------------------------------------------------------

    cdef void _lock_all(self) noexcept:
        """Every lock, in one fixed order (purge lock first, as a purge would).
        From inside on_purge the purge lock is the flushing purge's, held by
        this very thread: it is neither taken again nor released."""
        cdef space_t* s = self.sp
        cdef unsigned k
        if not self._in_flush():
            lock_acquire(s.purge_lock)
        if s.global_lock != NULL:
            lock_acquire(s.global_lock)
            return
        for k in range(s.nr_nodes):
            lock_acquire(&s.nodes[k].lock)
            lock_acquire(&s.nodes[k].lazy_lock)
            lock_acquire(&s.nodes[k].pool_lock)
        lock_acquire(s.free_lock)

    cdef void _unlock_all(self) noexcept:
        cdef space_t* s = self.sp
        cdef unsigned k
        if s.global_lock == NULL:
            vm_unlock(s.free_lock)
            for k in range(s.nr_nodes):
                vm_unlock(&s.nodes[k].pool_lock)
                vm_unlock(&s.nodes[k].lazy_lock)
                vm_unlock(&s.nodes[k].lock)
        else:
            vm_unlock(s.global_lock)
        if not self._in_flush():
            vm_unlock(s.purge_lock)

    def check(self):
        """Verify every invariant; AssertionError names the first broken one.

        rb colours and black heights, parent links, address order and
        subtree_max_size in every tree; each list is its tree in order; busy
        areas sit in the node of their start, lazy ones in the node of their
        tag; pooled areas sit in their size class; free blocks are coalesced;
        free, busy, lazy and pooled areas tile [start, end) exactly; the lazy
        page count and the slab agree with them.  Takes every lock: call it while no other thread is
        inside a method of this space.
        """
        cdef space_t* s = self._s()
        cdef block_t* blocks
        cdef const char* err
        cdef size_t cap
        cdef unsigned k
        self._lock_all()
        cap = s.nr_free
        for k in range(s.nr_nodes):
            cap += (s.nodes[k].nr_areas + s.nodes[k].nr_lazy + s.nodes[k].nr_pooled
                    + s.nodes[k].nr_purge)
        blocks = <block_t*>malloc((cap + 1) * sizeof(block_t))
        if blocks == NULL:
            self._unlock_all()
            raise MemoryError()
        err = space_verify(s, blocks)
        self._unlock_all()
        free(blocks)
        if err != NULL:
            raise AssertionError((<bytes>err).decode())

    cdef _debug_corrupt(self, str kind):
        """Test-only (vmap_core._testhooks.debug_corrupt): break the invariant named by kind ("color", "subtree_max",
        "order", "coalesce", "node_placement", "tiling", "list") so that
        check() can be shown to catch it.  The space is unusable afterwards."""
        cdef space_t* s = self._s()
        cdef bytes k = kind.encode()
        cdef const char* err
        self._lock_all()
        err = space_corrupt(s, k)
        self._unlock_all()
        if err != NULL:
            raise ValueError(f"cannot corrupt {kind!r}: {(<bytes>err).decode()}")

    def stats(self):
        """Counts and sizes, and per-lock acquisition counters.

        Keys: busy_areas, busy_bytes, free_areas, free_bytes, largest_free,
        nr_nodes, node_areas (busy areas per node), lock, lazy_areas,
        lazy_pages, lazy_max_pages, pooled_areas, pool_areas (per node,
        {size class: areas}), purges (runs), tlb_flushes (runs that purged
        something), purged_areas, slab_bytes (memory
        held for area records), slab_records (records in use: busy + free),
        record_bytes (bytes per record), lock_acquisitions / lock_contended
        (per lock: "free" and one per node, or "global"; a lookup in "node"
        mode takes its node's lock, in "rwlock" and "optimistic" mode it does
        not), rwlock_read_waits (per node, "rwlock" readers that had to wait),
        optimistic_retries / optimistic_fallbacks (per node, lock-free reads
        that saw a change and retried, and that then took the lock).
        """
        cdef space_t* s = self._s()
        cdef unsigned k
        cdef va_t* va
        cdef uint64_t busy_spans = 0
        cdef uint64_t free_spans = 0
        cdef size_t nbusy = 0
        cdef size_t nfree
        cdef list node_areas = []
        cdef uint64_t largest = 0
        cdef bint any_free
        self._lock_all()
        for k in range(s.nr_nodes):
            node_areas.append(s.nodes[k].nr_areas)
            nbusy += s.nodes[k].nr_areas
            va = rb_first(s.nodes[k].root.node)
            while va != NULL:
                busy_spans += va.last - va.start
                va = va.next
        nfree = s.nr_free
        va = rb_first(s.free_root.node)
        while va != NULL:
            free_spans += va.last - va.start
            va = va.next
        any_free = s.free_root.node != NULL
        if any_free:
            largest = s.free_root.node.aux
        slab_b = slab_bytes(&s.slab)
        records = s.slab.in_use
        if s.global_lock != NULL:
            acq = {"global": s.global_lock.acquisitions}
            cont = {"global": s.global_lock.contended}
        else:
            acq = {"free": s.locks[0].acquisitions}
            cont = {"free": s.locks[0].contended}
            for k in range(s.nr_nodes):
                acq[f"node{k}"] = s.nodes[k].lock.acquisitions
                cont[f"node{k}"] = s.nodes[k].lock.contended
        lazy_areas = sum(s.nodes[k].nr_lazy for k in range(s.nr_nodes))
        pooled = sum(s.nodes[k].nr_pooled for k in range(s.nr_nodes))
        pool_areas = [{c: s.nodes[k].pools[c].len for c in range(MAX_VA_SIZE_PAGES)
                       if s.nodes[k].pools[c].len} for k in range(s.nr_nodes)]
        lazy_pages = s.lazy_nr
        purges, flushes, purged = s.purges, s.tlb_flushes, s.purged_areas
        read_waits = [s.nodes[k].rw.read_waits for k in range(s.nr_nodes)]
        retries = [s.nodes[k].read_retries for k in range(s.nr_nodes)]
        fallbacks = [s.nodes[k].read_fallbacks for k in range(s.nr_nodes)]
        self._unlock_all()
        # A span sum cannot overflow: disjoint blocks fit in 2**64 bytes.
        return {
            "busy_areas": nbusy,
            "busy_bytes": <object>busy_spans + nbusy,
            "free_areas": nfree,
            "free_bytes": <object>free_spans + nfree,
            "largest_free": <object>largest + 1 if any_free else 0,
            "nr_nodes": s.nr_nodes,
            "node_areas": node_areas,
            "lock": self.lock,
            "lazy_areas": lazy_areas,
            "lazy_pages": lazy_pages,
            "lazy_max_pages": self.lazy_max_pages,
            "pooled_areas": pooled,
            "pool_areas": pool_areas,
            "purges": purges,
            "tlb_flushes": flushes,
            "purged_areas": purged,
            "slab_bytes": slab_b,
            "slab_records": records,
            "record_bytes": sizeof(va_t),
            "lock_acquisitions": acq,
            "lock_contended": cont,
            "rwlock_read_waits": read_waits,
            "optimistic_retries": retries,
            "optimistic_fallbacks": fallbacks,
        }

    def __repr__(self):
        return (f"VmapSpace({self.start:#x}, {self.end:#x}, busy={len(self)}, "
                f"nr_nodes={self.nr_nodes}, lock={self.lock!r})")

    # -- container conventions, copies ---------------------------------------

    def __contains__(self, addr):
        """``addr in space``: some busy area holds addr, found as find() finds
        it (O(log n) in the node tried first).  For a VmapArea: it is one of
        the busy areas.  False for an int outside [0, 2**64); TypeError for
        anything else."""
        cdef uint64_t st, la
        cdef space_t* s = self._s()
        k = _area_key(addr)
        if k is not None:
            if not 0 <= k[0] < _ADDR_LIMIT:
                return False
            return space_find(s, <uint64_t>k[0], &st, &la) and st == k[0] and <object>la + 1 == k[1]
        a = _index(addr, "addr")
        if not 0 <= a < _ADDR_LIMIT:
            return False
        return space_find(s, <uint64_t>a, &st, &la)

    def __reduce__(self):
        """Pickle, copy.copy and copy.deepcopy: a new space built with the same
        constructor arguments (reference.SPACE_INIT_ARGS: all but ``trace``, a
        copy records nothing), then given the same busy, lazy and pooled areas
        with their node tags and callers, the free tree in the same shape (the
        kernel's aligned search depends on it) and the same load_notes
        (reference.check_space_state() has the format).  The counters of
        stats() start again from zero.  RuntimeError from inside on_purge."""
        kwargs = {name: getattr(self, name) for name in _reference.SPACE_INIT_ARGS}
        return (_reference.rebuild_space, (type(self), self.start, self.end, kwargs),
                self._get_state())

    cdef dict _get_state(self):
        cdef space_t* s = self._s()
        cdef rec_t* recs
        cdef size_t cap = 0
        cdef size_t nb = 0
        cdef size_t nl, np_, i
        cdef unsigned k
        cdef size_t cls
        if self._in_flush():
            raise RuntimeError("a space cannot be copied from inside on_purge: its purge is "
                               "half done")
        shape = self._free_tree_shape()
        self._lock_all()
        for k in range(s.nr_nodes):
            cap += s.nodes[k].nr_areas + s.nodes[k].nr_lazy + s.nodes[k].nr_pooled
        recs = <rec_t*>malloc((cap + 1) * sizeof(rec_t))
        if recs == NULL:
            self._unlock_all()
            raise MemoryError()
        for k in range(s.nr_nodes):
            nb = _copy_recs(rb_first(s.nodes[k].root.node), recs, nb, cap, k)
        nl = nb
        for k in range(s.nr_nodes):
            nl = _copy_recs(rb_first(s.nodes[k].lazy_root.node), recs, nl, cap, k)
        np_ = nl
        for k in range(s.nr_nodes):
            for cls in range(<size_t>MAX_VA_SIZE_PAGES):
                np_ = _copy_recs(s.nodes[k].pools[cls].head, recs, np_, cap, k)
        self._unlock_all()
        try:
            callers = self._callers
            tag = lambda aux: aux - 1 if aux else None
            busy = sorted((recs[i].start, <object>recs[i].last + 1, tag(recs[i].aux),
                           callers.get(recs[i].start)) for i in range(nb))
            lazy = sorted((recs[i].start, <object>recs[i].last + 1, tag(recs[i].aux))
                          for i in range(nb, nl))
            pooled = [(recs[i].node, recs[i].start, <object>recs[i].last + 1)
                      for i in range(nl, np_)]
        finally:
            free(recs)
        return {"version": _reference.STATE_VERSION, "busy": busy, "lazy": lazy,
                "pooled": pooled, "free_tree": shape, "load_notes": list(self.load_notes)}

    def __setstate__(self, state):
        """Give a new, empty space the areas and the free tree of a state from
        __reduce__()."""
        cdef space_t* s = self._s()
        cdef uint64_t addr, nr_lazy
        cdef va_t* va
        cdef vnode_t* vn
        cdef unsigned k
        cdef bint ok, over
        busy, lazy, pooled, shape, notes = _reference.check_space_state(self, state)
        empty = s.nr_free == 1
        for k in range(s.nr_nodes):
            empty = empty and not (s.nodes[k].nr_areas or s.nodes[k].nr_lazy or s.nodes[k].nr_pooled)
        if not empty:
            raise ValueError("__setstate__ needs a new, empty space")
        for start, end, tag, caller in busy:
            self._place(start, end, tag)
            if caller is not None:
                self._callers[start] = caller
        for start, end, tag in lazy:
            self._place(start, end, tag)
            space_free_lazy(s, start, &addr, &addr, &over, &nr_lazy)   # no purge: the state had none
        for node, start, end in pooled:
            self._place(start, end, node)
            va = NULL
            space_find_unlink(s, start, &va)
            vn = &s.nodes[<unsigned>node]
            lock_acquire(pool_lock(s, vn))
            pool_push_tail(&vn.pools[size_to_va_pool(s, va.last - va.start, &ok)], va)
            cnt_add(&vn.nr_pooled, 1)
            vm_unlock(pool_lock(s, vn))
        self._shape_free_tree(shape)
        self.load_notes = notes

    cdef _shape_free_tree(self, list shape):
        """Relink the free tree's records as ``shape`` (preorder (start, end,
        'r'|'b', depth), checked by check_space_state() against the blocks the
        placed areas leave free) and recompute subtree_max_span bottom-up."""
        cdef space_t* s = self._s()
        cdef size_t n = len(shape)
        cdef size_t i
        cdef va_t* va
        cdef va_t* parent
        cdef va_t** order = <va_t**>malloc((n + 1) * sizeof(va_t*))
        cdef va_t** path = <va_t**>malloc((n + 1) * sizeof(va_t*))
        cdef int depth
        if order == NULL or path == NULL:
            free(order)
            free(path)
            raise MemoryError()
        lock_acquire(s.free_lock)
        try:
            by_start = {}
            va = rb_first(s.free_root.node)
            while va != NULL:
                by_start[va.start] = <uintptr_t>va
                va = va.next
            if <size_t>len(by_start) != n or s.nr_free != n:
                raise SystemError("vmap_core: the free blocks do not match the state's tree")
            for i in range(n):
                start, end, colour, depth = shape[i]
                ptr = by_start.get(start)
                if ptr is None or <object>(<va_t*><uintptr_t>ptr).last + 1 != end:
                    raise SystemError(f"vmap_core: no free block [{start:#x}, {end:#x})")
                va = <va_t*><uintptr_t>ptr
                parent = NULL if depth == 0 else path[depth - 1]
                va.parent_color = <uintptr_t>parent | <uintptr_t>(RB_BLACK if colour == "b"
                                                                   else RB_RED)
                rb_set_left(va, NULL)
                rb_set_right(va, NULL)
                if parent == NULL:
                    rb_set_root(&s.free_root, va)
                elif va.start < parent.start:
                    rb_set_left(parent, va)
                else:
                    rb_set_right(parent, va)
                path[depth] = va
                order[i] = va
            for i in range(n, 0, -1):                  # children before their parents
                order[i - 1].aux = ft_subtree_max(order[i - 1])
        finally:
            vm_unlock(s.free_lock)
            free(order)
            free(path)

    cdef _place(self, uint64_t start, object end, object tag):
        """Make [start, end) busy, tagged with node tag (None: untagged)."""
        cdef uint64_t addr = 0
        cdef uint64_t last = <uint64_t>(end - 1)
        cdef alloc_status_t rc = space_alloc(self.sp, last - start, self.sp.page_size, start,
                                             last, 0 if tag is None else <uint64_t>tag + 1, &addr)
        if rc == ALLOC_NOMEM:
            raise MemoryError("vmap_core: out of memory for area records")
        if rc != ALLOC_OK or addr != start:
            raise SystemError(f"vmap_core: cannot restore the area at {start:#x}")


# -- native multi-threaded runs ---------------------------------------------

cdef class _Workers:
    """Slots for native workers, one 64-byte aligned record each."""
    cdef void* slots
    cdef size_t n

    def __cinit__(self, size_t n, size_t size):
        self.slots = vm_aligned_calloc(n if n else 1, size)
        if self.slots == NULL:
            raise MemoryError()
        self.n = n

    def __dealloc__(self):
        free(self.slots)


cdef class _UsercopyCell:
    cdef _Workers workers
    cdef uc_shared_t* shared
    cdef VmapSpace space, churn_space
    cdef uint64_t* starts
    cdef char** mem
    cdef size_t nbuf
    cdef uint64_t churn_ops

    def __cinit__(self):
        self.shared = <uc_shared_t*>vm_aligned_calloc(1, sizeof(uc_shared_t))
        if self.shared == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef size_t i
        if self.mem != NULL:
            for i in range(self.nbuf):
                free(self.mem[i])
        free(self.mem)
        free(self.starts)
        free(self.shared)

    def worker(self, size_t i):
        with nogil:
            uc_worker_loop(&(<uc_worker_t*>self.workers.slots)[i])

    def churn(self, uint64_t period_ns):
        cdef space_t* s = self.churn_space.sp
        with nogil:
            uc_churn_loop(s, self.shared, period_ns, &self.churn_ops)


_CHECK_MODES = {"nocheck": UC_NOCHECK, "unlocked": UC_UNLOCKED}


cdef uint64_t _work_sink = 0


def _calibrate_work(uint64_t work_ns):
    """Iterations of spin_work() that take about work_ns on this CPU (the
    fastest of three timings; the result is kept, or the compiler drops the
    loop and the count comes out thousands of times too high)."""
    global _work_sink
    cdef uint64_t iters = 1 << 20
    cdef uint64_t t0, t1, best = UINT64_MAX
    cdef int k
    if work_ns == 0:
        return 0
    with nogil:
        for k in range(3):
            t0 = now_ns()
            _work_sink += spin_work(iters, t0)
            t1 = now_ns()
            if t1 - t0 < best:
                best = t1 - t0
    return max(1, <object>work_ns * iters // max(<uint64_t>1, best))


def usercopy_cell(str mode, Py_ssize_t threads, *, Py_ssize_t buffers=1000, uint64_t buffer_size=65536,
                  uint64_t copy_size=1024, double seconds=1.0, uint64_t churn_us=100,
                  uint64_t work_ns=0, nr_nodes=None):
    """One cell of the usercopy experiment: ``threads`` native copiers for
    ``seconds``, each request a check_heap_object() lookup (except in mode
    "nocheck") and a copy of copy_size bytes into one of ``buffers`` vzalloc'ed
    buffers; a writer allocates and frees an area every churn_us meanwhile.

    mode: "nocheck", "unlocked", or a lock mode of VmapSpace.  Returns a dict:
    requests, elapsed, per_thread, churn_ops, lock_stats.
    """
    cdef _UsercopyCell cell = _UsercopyCell()
    cdef uc_worker_t* w
    cdef Py_ssize_t i
    cdef uint64_t page = 4096
    cdef uint64_t area = buffer_size + page        # vmalloc adds a guard page
    if mode not in _CHECK_MODES and mode not in _LOCK_MODE_IDS:
        raise ValueError(f"unknown mode {mode!r}")
    if threads < 1 or buffers < 1 or not seconds > 0:
        raise ValueError("threads, buffers and seconds must be positive")
    if buffer_size == 0 or buffer_size % page or copy_size == 0 or copy_size > buffer_size:
        raise ValueError("need buffer_size a positive multiple of 4096 and 0 < copy_size <= buffer_size")
    lock = mode if mode in _LOCK_MODE_IDS else "node"
    base = 1 << 40
    cell.space = VmapSpace(base, base + 4 * buffers * area + (1 << 30), nr_nodes=nr_nodes, lock=lock)
    # Only the locked modes let the writer touch the tree the readers walk.
    cell.churn_space = cell.space if mode in _LOCK_MODE_IDS else VmapSpace(
        base, base + (1 << 30), nr_nodes=nr_nodes, lock="node")
    cell.nbuf = buffers
    cell.starts = <uint64_t*>malloc(buffers * sizeof(uint64_t))
    cell.mem = <char**>calloc(buffers, sizeof(char*))
    if cell.starts == NULL or cell.mem == NULL:
        raise MemoryError()
    for i in range(buffers):
        cell.starts[i] = cell.space.alloc(area)
        cell.mem[i] = <char*>calloc(1, buffer_size)     # vzalloc: zeroed, touched below
        if cell.mem[i] == NULL:
            raise MemoryError()
        memset(cell.mem[i], 0, buffer_size)
    cell.workers = _Workers(threads, sizeof(uc_worker_t))
    iters = _calibrate_work(work_ns)
    for i in range(threads):
        w = &(<uc_worker_t*>cell.workers.slots)[i]
        w.space = cell.space.sp
        w.check = _CHECK_MODES.get(mode, UC_LOCKED)
        w.starts = cell.starts
        w.mem = cell.mem
        w.nbuf = buffers
        w.buffer_size = buffer_size
        w.copy_size = copy_size
        w.work_iters = iters
        w.shared = cell.shared
        w.rng = 0x9E3779B97F4A7C15ULL * (i + 1)
    pool = [threading.Thread(target=cell.worker, args=(i,), daemon=True) for i in range(threads)]
    pool.append(threading.Thread(target=cell.churn, args=(churn_us * 1000,), daemon=True))
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    vm_store_int(&cell.shared.go, 1)
    time.sleep(seconds)
    vm_store_int(&cell.shared.stop, 1)
    elapsed = time.perf_counter() - t0
    for t in pool:
        t.join()
    per_thread = [(<uc_worker_t*>cell.workers.slots)[i].requests for i in range(threads)]
    failures = sum((<uc_worker_t*>cell.workers.slots)[i].failures for i in range(threads))
    if failures:
        raise RuntimeError(f"usercopy: {failures} checks failed (a lookup bug)")
    st = cell.space.stats()
    return {
        "requests": sum(per_thread),
        "elapsed": elapsed,
        "per_thread": per_thread,
        "churn_ops": cell.churn_ops,
        "lock_stats": {k: st[k] for k in ("lock_acquisitions", "lock_contended",
                                          "rwlock_read_waits", "optimistic_retries",
                                          "optimistic_fallbacks")},
    }


cdef class _StressRun:
    cdef _Workers workers
    cdef uint64_t* owned

    def __dealloc__(self):
        free(self.owned)

    def worker(self, size_t i):
        with nogil:
            stress_loop(&(<stress_worker_t*>self.workers.slots)[i])


def stress_native(VmapSpace space, Py_ssize_t threads, uint64_t ops, uint64_t seed=1,
                  size_t max_owned=256):
    """Native threads doing random alloc / free / lazy free and purge / find
    on one space at once.

    Each of ``threads`` workers runs ``ops`` operations without the GIL and
    checks that every area it owns stays findable with its bounds.  Returns
    {"allocs", "frees", "finds", "errors", "owned": [[(start, end), ...] per
    worker]} (the areas each still holds).
    """
    cdef _StressRun run = _StressRun()
    if threads < 1:
        raise ValueError("threads must be positive")
    cdef stress_worker_t* w
    cdef Py_ssize_t i
    cdef size_t j
    space._s()
    run.workers = _Workers(threads, sizeof(stress_worker_t))
    run.owned = <uint64_t*>malloc(2 * threads * max_owned * sizeof(uint64_t) + 8)
    if run.owned == NULL:
        raise MemoryError()
    for i in range(threads):
        w = &(<stress_worker_t*>run.workers.slots)[i]
        w.space = space.sp
        w.rng = (seed + i + 1) * 0x9E3779B97F4A7C15ULL
        w.ops = ops
        w.owned = run.owned + 2 * i * max_owned
        w.owned_last = w.owned + max_owned
        w.cap_owned = max_owned
    pool = [threading.Thread(target=run.worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out = {"allocs": 0, "frees": 0, "finds": 0, "errors": 0, "owned": []}
    for i in range(threads):
        w = &(<stress_worker_t*>run.workers.slots)[i]
        out["allocs"] += w.allocs
        out["frees"] += w.frees
        out["finds"] += w.finds
        out["errors"] += w.errors
        out["owned"].append([(w.owned[j], <object>w.owned_last[j] + 1) for j in range(w.nr_owned)])
    return out


# -- test-only hooks ------------------------------------------------------------
# Not attributes of VmapSpace nor names of this module: the test suite and
# .ci/sanitize reach them through vmap_core._testhooks, which this fills in.

cdef void _install_test_hooks() except *:
    def debug_corrupt(VmapSpace space, str kind):
        space._debug_corrupt(kind)

    def race_selftest(n=100000):
        return _race_selftest(n)

    def leak_selftest(nbytes=4096):
        return _leak_selftest(nbytes)

    from . import _testhooks
    _testhooks._install(debug_corrupt=debug_corrupt, race_selftest=race_selftest,
                        leak_selftest=leak_selftest)


_install_test_hooks()


# -- the anchors' experiments: native test_vmalloc workers, usercopy with the seed's options
include "_tvmalloc.pxi"
include "_runs.pxi"

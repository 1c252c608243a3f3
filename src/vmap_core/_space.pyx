# cython: freethreading_compatible = True
"""The Cython core: VmapSpace and VmapArea.

Layers, each in its own include file, data flowing one way:
    VmapSpace (this file: argument checks, Python objects at the edge)
    -> _alloc.pxi (alloc_vmap_area / free_vmap_area across the two layers),
       _lazy.pxi (lazy free, purge, per-node pools)
    -> _freetree.pxi (free space) and _nodes.pxi (busy areas per node)
    -> _rbtree.pxi (rb-tree mechanics, augmentation as callbacks)
    -> _slab.pxi (area records) and _locks.h (spinlocks, atomics).
Everything below this file is nogil C; Python objects are made only here,
after the locks are dropped (on_purge alone runs with the purge lock held, as
the kernel's flush holds vmap_purge_lock).  _snapshot.pxi takes consistent
views (every lock in one order), _check.pxi holds the invariant checker and
_native.pxi the multi-threaded native loops (usercopy cells, stress).
"""

cimport cython
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_FORMAT,
                             PyBUF_STRIDES, PyBUF_WRITABLE)
from cpython.exc cimport PyErr_CheckSignals
from cpython.long cimport PyLong_CheckExact
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport free
from libc.string cimport strcmp, memcpy, memset

import array
import math
import operator
import os
import sys
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
include "_snapshot.pxi"
include "_compact.pxi"
include "_native.pxi"

vm_wait_clock_init()        # before any lock can be contended: the wait statistics' clock

cdef extern from "_locks.h" nogil:
    void vm_word_lock(int* w)
    void vm_word_unlock(int* w)
    void vm_fail_alloc_at(long k)
    uint64_t vm_alloc_count()
    int vm_cpu_atfork_init()

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
cdef object _NO_CALLER = object()    # alloc_at(): no caller tag was recorded
cdef uint64_t MISS_U64 = 0xFFFFFFFFFFFFFFFFULL


# -- argument conversion --------------------------------------------------

cdef object _index(object v, str name):
    """An exact int from anything with __index__, else TypeError.  An int
    subclass is converted too (operator.index() returns an exact int since
    Python 3.10), so no operator it overrides ever reaches the checks."""
    if PyLong_CheckExact(v):
        return v
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(v).__name__}") from None


cdef inline object _index_opt(object v, str name):
    """None, or an integer as for _index()."""
    return None if v is None else _index(v, name)


cdef uint64_t _long_u64(object v) except? 0xFFFFFFFFFFFFFFFF:
    """Cython's conversion of an int: it reads the digits directly, where
    PyLong_AsUnsignedLongLong() goes through a general byte conversion for
    every int of two digits or more.  OverflowError out of range."""
    return v


# _long_u64() called without Cython's error check, so that the caller tests
# for the error itself: a try block would save and restore the thread's
# exception state on every call (a few ns of find()'s ~25 ns of overhead).
ctypedef uint64_t (*_long_u64_unchecked_f)(object) noexcept
cdef _long_u64_unchecked_f _long_u64_unchecked = <_long_u64_unchecked_f>_long_u64


cdef inline uint64_t _u64(object v, str name) except? 0xFFFFFFFFFFFFFFFF:
    """An already-indexed int (exact, as _index() returns) in [0, 2**64),
    else ValueError."""
    cdef uint64_t x = _long_u64_unchecked(v)
    if x == 0xFFFFFFFFFFFFFFFFULL and PyErr_Occurred() != NULL:
        PyErr_Clear()                   # OverflowError: negative or >= 2**64
        raise ValueError(f"{name} must be in [0, 2**64), not {v}")
    return x


cdef inline uint64_t _addr_u64(object v, str name) except? 0xFFFFFFFFFFFFFFFF:
    """_u64(_index(v)): an integer in [0, 2**64) as a C word; TypeError,
    ValueError as they say."""
    if PyLong_CheckExact(v):
        return _u64(v, name)
    return _u64(_index(v, name), name)


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


# find_many()'s buffers: one dimension of native unsigned 64-bit integers, as
# the struct module spells them on a 64-bit Linux ('L' is 64 bits there).
cdef tuple _U64_FORMATS = (b"Q", b"L", b"<Q", b"=Q", b"@Q", b"<L", b"=L", b"@L")


cdef int _get_u64_buffer(object obj, Py_buffer* view, bint writable, str name) except -1:
    """Fill view with obj's buffer (release it with PyBuffer_Release), else TypeError."""
    cdef int flags = PyBUF_FORMAT | PyBUF_STRIDES | (PyBUF_WRITABLE if writable else 0)
    cdef bytes fmt
    what = "a writable buffer" if writable else "a buffer"
    if obj is None:
        raise TypeError(f"{name} must be {what} of unsigned 64-bit integers, not None")
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (TypeError, ValueError, BufferError) as e:
        raise TypeError(f"{name} must be {what} of unsigned 64-bit integers: {e}") from None
    fmt = view.format if view.format != NULL else b"B"
    if view.ndim != 1 or view.itemsize != 8 or fmt not in _U64_FORMATS:
        PyBuffer_Release(view)
        raise TypeError(f"{name} must be {what} of unsigned 64-bit integers, not format "
                        f"{fmt.decode('ascii', 'replace')!r} with {view.ndim} dimensions")
    return 0


# Some exporters (ctypes) leave shape or strides NULL for a contiguous buffer.
cdef inline Py_ssize_t _buffer_len(const Py_buffer* v) noexcept:
    return v.shape[0] if v.shape != NULL else v.len // 8


cdef inline Py_ssize_t _buffer_stride(const Py_buffer* v) noexcept:
    return v.strides[0] if v.strides != NULL else 8


cdef object _new_u64_like(object addrs, Py_ssize_t n):
    """find_many()'s default out: numpy in, numpy out; else array.array('Q')."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(addrs, np.ndarray):
        return np.zeros(n, dtype=np.uint64)
    return array.array("Q", bytes(8 * n))


# dict.get through the dict's own method: Cython compiles d.get(k) to
# PyDict_GetItemWithError, whose borrowed value another thread's pop() can
# free before it is increfed (free-threaded builds); dict.get returns a new
# reference.  For the caller tags, read outside _callers_mu.
cdef object _DICT_GET = dict.get


cdef inline object _dict_get(dict d, object key, object default=None):
    return _DICT_GET(d, key, default)


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


# Lists are built with explicit loops, never comprehensions: Cython 3.3.x
# compiles a list comprehension of temporaries so that the item is decref'd
# twice when the list cannot grow (MemoryError), a use-after-free
# (tests/test_generated_code.py keeps it out).

cdef list _snap_areas(const snap_area_t* areas, size_t n):
    cdef size_t i
    cdef list out = []
    for i in range(n):
        out.append(_area(areas[i].start, areas[i].last))
    return out


cdef class _Snapshot:
    """Owns the C buffers of one space_snapshot(): freed however the caller
    leaves (a MemoryError while building the Python objects included)."""
    cdef snap_t sn

    def __dealloc__(self):
        snap_free(&self.sn)


cdef _Snapshot _take_snapshot(space_t* s, unsigned what):
    """space_snapshot() with the GIL released (every lock is taken without it)."""
    cdef _Snapshot snap = _Snapshot.__new__(_Snapshot)
    cdef int rc
    with nogil:
        vm_nogil_enter()
        rc = space_snapshot(s, what, &snap.sn)
        vm_nogil_exit()
    if rc != 0:
        raise MemoryError("vmap_core: out of memory for a snapshot")
    return snap


ctypedef struct rec_t:          # one record of a space's state (pickle, copy)
    uint64_t start
    uint64_t last
    uint64_t aux                # the node tag: node id + 1, or 0
    uint64_t node               # the node whose tree or pool holds it


cdef size_t _copy_recs(va_t* va, rec_t* recs, size_t n, size_t cap, unsigned node) noexcept nogil:
    """Append the bounds, tag and node of a chain of records (linked through
    next) to recs[n:cap]; returns the new count.  The caller holds its lock."""
    while va != NULL and n < cap:
        recs[n].start = va.start
        recs[n].last = va.last
        recs[n].aux = va.aux
        recs[n].node = node
        n += 1
        va = va.next
    return n


cdef uint64_t _covered(const rec_t* recs, size_t n, const shape_t* sh, size_t nsh) noexcept nogil:
    """Bytes held by the copied records and free blocks (modulo 2**64)."""
    cdef uint64_t total = 0
    cdef size_t i
    for i in range(n):
        total += recs[i].last - recs[i].start + 1
    for i in range(nsh):
        total += sh[i].last - sh[i].start + 1
    return total


cdef inline object _tag_node(uint64_t aux):
    """A record's node tag as the state carries it: the node, or None."""
    return None if aux == 0 else <object>(aux - 1)


cdef list _shape_list(const shape_t* sh, size_t n):
    """(start, end, 'r'|'b', depth) per node of a copied free-tree shape."""
    cdef size_t i
    cdef list out = []
    for i in range(n):
        out.append((sh[i].start, <object>sh[i].last + 1, "b" if sh[i].black else "r",
                    sh[i].depth))
    return out


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


# Methods as builtin methods, not Cython function objects: a bound builtin
# method calls its C function with self as it is, while the interpreter
# unpacks a bound Python-level method and increfs the space and the function
# on every call.  On a free-threaded build those two shared reference counts
# are atomics that every thread's find() hit (find() from 2 threads: 0.95x of
# one thread; 1.94x without them, benchmarks/bench_threads.py).  The
# signatures stay visible to inspect through the clinic-format docstrings.
@cython.binding(False)
@cython.embedsignature(True)
@cython.embedsignature.format("clinic")
cdef class VmapSpace:
    """VmapSpace(start, end, *, page_size=4096, nr_nodes=None, zone_size=None, lock=None, lazy_max_pages=None, on_purge=None, kernel=None, search=None, auto_purge=True, walk=None, trace=None)
--

The vmalloc address space ``[start, end)`` (mm/vmalloc.c).

    ``kernel`` picks the version it behaves like (vmap_core.profiles; default
    the newest, "6.16"): from v6.9 free space is one augmented rb-tree and
    busy areas are sharded over ``nr_nodes`` nodes by
    ``(start // zone_size) % nr_nodes``, each node with its own tree, list and
    spinlock; "6.8" has one busy tree and three locks.  ``lock`` picks the
    lock design (None: the profile's own), ``search`` the kernel's aligned
    search ("kernel") or the exact lowest match ("lowest"), ``auto_purge``
    whether free_lazy() and a failing alloc() purge by themselves, ``walk``
    find()'s node walk ("kernel", the default: find_vmap_area()'s, every node
    on a miss; "bounded", for the global/rwlock/optimistic designs only: the
    nodes whose zones an area holding the address can start in, bounded by
    the widest area ever inserted, with the same answers), ``trace`` a
    stream to write the kernel's tracepoints to (vmap_core.trace.Recorder).

    Costs, n busy areas, m free blocks: alloc O(log m + log n) for
    align <= page_size; free O(log m + log n) plus the node walk; find
    O(log n) in the first node tried, O(nr_nodes log n) for a miss
    (walk="bounded": O(min(nr_nodes, widest / zone_size + 2) log n)).
    """
    cdef space_t* sp
    cdef readonly object start, end, page_size, nr_nodes, zone_size, lock
    cdef readonly object lazy_max_pages, on_purge, kernel, search, auto_purge, walk
    cdef dict _callers          # start -> caller tag, for the areas given one
    # Free-threaded safety (README, "Threads"): a busy-set change and its
    # _callers entry are made under _callers_mu once any caller tag was given
    # (_callers_used, sticky), so no thread sees another's tag on its area.
    cdef cython.pymutex _callers_mu
    cdef int _callers_used
    cdef object _rec            # vmap_core.trace.Recorder, or None
    # The thread running on_purge (its ident), 0 when none: a C word, not an
    # object, so that other threads may read it while it changes.
    cdef uint64_t _flush_tid
    cdef list _load_notes       # from_vmallocinfo(): what was done to build it
    cdef int _notes_lock        # vm_word_lock() around _load_notes
    cdef object __weakref__

    def __cinit__(self):
        self.sp = NULL

    def __init__(self, start, end, *, page_size=4096, nr_nodes=None, zone_size=None,
                 lock=None, lazy_max_pages=None, on_purge=None, kernel=None, search=None,
                 auto_purge=True, walk=None, trace=None):
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
        walk = _reference.check_walk(walk, lock)

        s = <space_t*>vm_calloc(1, sizeof(space_t))
        if s == NULL:
            raise MemoryError()
        s.locks = <vm_lock_t*>vm_aligned_calloc(3, sizeof(vm_lock_t))
        s.nodes = <vnode_t*>vm_aligned_calloc(nr_nodes, sizeof(vnode_t))
        slab_init(&s.slab)
        va = slab_alloc(&s.slab) if s.locks != NULL and s.nodes != NULL else NULL
        if va != NULL:
            for k in range(<unsigned>nr_nodes):
                s.nodes[k].pools = <va_pool_t*>vm_calloc(MAX_VA_SIZE_PAGES, sizeof(va_pool_t))
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
        s.nodes_pow2 = _is_pow2(nr_nodes)
        s.mode = _LOCK_MODE_IDS[lock]
        vm_lock_init(&s.locks[0])
        vm_lock_init(&s.locks[1])
        vm_lock_init(&s.locks[2])
        s.purge_lock = &s.locks[2]
        s.lazy_max_pages = lazy_max_pages
        s.search_lowest = search == "lowest"
        # find()'s walk: the kernel's, or (walk="bounded") space_find_bounded().
        s.walk_bounded = walk == "bounded"
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
        self.walk = walk
        self._callers = {}
        self._load_notes = []
        self._flush_tid = 0
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

        Cost: O(log m + log n) (m free blocks, n busy areas); with
        ``search="lowest"`` an alignment above page_size adds O(log m) per
        large-enough but misaligned block below the answer.

        Raises:
            TypeError: a non-integer argument.
            ValueError: size not a positive multiple of page_size, align not
                a power of two, vstart/vend outside [start, end], empty or
                unaligned.
            VmapExhausted: nothing fits, even after the purge and the retry.
            OnPurgeError: on_purge raised during the overflow path's purge
                (the allocation completed: its address is in ``result``).
        """
        cdef space_t* s = self._s()
        cdef uint64_t szm1, al, vs, vl, addr
        cdef uint64_t tag = 0
        cdef alloc_status_t rc = ALLOC_NOSPACE
        cdef bint rotated = False
        cdef bint pooled_first, locked
        cdef uint64_t w[4]
        size, cpu = self._request(size, align, vstart, vend, cpu, caller, w)
        szm1, al, vs, vl = w[0], w[1], w[2], w[3]
        pooled_first = vs == s.start and vl == s.last and s.nr_nodes > 1
        if pooled_first:
            tag = (vm_current_cpu() if cpu is None else cpu % s.nr_nodes) % s.nr_nodes
        locked = caller is not None or vm_load_int(&self._callers_used)
        if locked:
            self._callers_mu.acquire()
        try:
            if caller is not None:
                vm_store_int(&self._callers_used, 1)
            if pooled_first:
                if space_alloc_pooled(s, <unsigned>tag, szm1, al, &addr, &rotated) == ALLOC_OK:
                    result = self._commit_alloc(addr, caller, True, <unsigned>tag, szm1, False)
                    if self._rec is not None:
                        self._trace_alloc(ALLOC_OK, addr, size, al, vs, vl, cpu)
                    return result
                tag += 1
            rc = space_alloc(s, szm1, al, vs, vl, tag, &addr)
            if rc == ALLOC_NOMEM and rotated:
                pool_unrotate(s, <unsigned>(tag - 1), szm1)     # leave the pool as it was
            if rc == ALLOC_OK:
                result = self._commit_alloc(addr, caller, False, <unsigned>(tag - 1), szm1,
                                            rotated)
                if self._rec is not None:
                    self._trace_alloc(rc, addr, size, al, vs, vl, cpu)
                return result
        finally:
            if locked:
                self._callers_mu.release()
        if (rc == ALLOC_NOSPACE or rc == ALLOC_RANGE) and self.auto_purge and not self._in_flush():
            if self._rec is not None:
                self._trace_alloc(rc, addr, size, al, vs, vl, cpu)
            # The overflow path: purge everything (full decay), retry once.
            # The purge runs outside _callers_mu: on_purge may alloc or free.
            failure = None
            try:
                self._purge(True)
            except _CallbackFailed as exc:  # retry first, then report
                failure = exc
            result = None
            if locked:
                self._callers_mu.acquire()
            try:
                rc = space_alloc(s, szm1, al, vs, vl, tag, &addr)
                if rc == ALLOC_OK:
                    result = self._commit_alloc(addr, caller, False, <unsigned>(tag - 1), szm1,
                                                rotated)
            finally:
                if locked:
                    self._callers_mu.release()
            if self._rec is not None:
                self._trace_alloc(rc, addr, size, al, vs, vl, cpu)
            if failure is not None:
                raise failure.report(f"alloc({size:#x}, align={al:#x})", result) \
                    from failure.__cause__
            if rc == ALLOC_OK:
                return result
        elif self._rec is not None:
            self._trace_alloc(rc, addr, size, al, vs, vl, cpu)
        if rc == ALLOC_NOMEM:
            raise MemoryError("vmap_core: out of memory for area records")
        if rc == ALLOC_RANGE:
            raise VmapExhausted(f"the lowest fit for size={size:#x} align={al:#x} ends past vend")
        raise VmapExhausted(f"no free block fits size={size:#x} align={al:#x}")

    cdef object _commit_alloc(self, uint64_t addr, object caller, bint pooled, unsigned node,
                              uint64_t szm1, bint rotated):
        """The allocated address as an int, with its caller tag recorded.  If
        either cannot be made (MemoryError), the allocation is undone (and
        the pool of node put back in order if its miss rotated it), so that
        alloc() raises with the space's areas, pools and counts as they were
        (the free tree holds the same blocks; its shape may differ, see
        docs/guarantees.md on memory failure)."""
        cdef uint64_t st, la
        try:
            result = <object>addr
            if caller is not None:
                self._callers[result] = caller
            elif self._callers:
                self._callers.pop(result, None)
        except BaseException:
            if pooled:
                space_unalloc_pooled(self.sp, node, addr)
            else:
                space_free(self.sp, addr, &st, &la)
                if rotated:
                    pool_unrotate(self.sp, node, szm1)
            raise
        return result

    cdef void _trace_alloc(self, alloc_status_t rc, uint64_t addr, object size, uint64_t align,
                           uint64_t vs, uint64_t vl, object cpu):
        err = None if rc == ALLOC_OK else "ERANGE" if rc == ALLOC_RANGE else "ENOENT"
        self._rec.alloc(self, addr if rc == ALLOC_OK else None, size, align, vs,
                        <object>vl + 1, err, cpu)

    cdef inline bint _in_flush(self):
        return vm_load_u64(&self._flush_tid) == PyThread_get_thread_ident()

    def predict(self, size, align=None, vstart=None, vend=None, *, cpu=None):
        """What alloc() with these arguments would do now, changing nothing:
        ``(addr, "pool")`` when node_alloc() would hand out the aligned head of
        the CPU's pool, ``(addr, "free")`` for the free tree's answer, or
        ``(None, "ENOENT")`` / ``(None, "ERANGE")`` when the first attempt
        fails (before any purge).  The replay compares this with the kernel.

        Cost: as alloc() (no purge, no retry).

        Raises:
            TypeError, ValueError: as alloc().
        """
        cdef space_t* s = self._s()
        cdef uint64_t szm1, al, vs, vl, addr = 0
        cdef alloc_status_t rc
        cdef uint64_t w[4]
        size, cpu = self._request(size, align, vstart, vend, cpu, None, w)
        szm1, al, vs, vl = w[0], w[1], w[2], w[3]
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
        addr.  The replay uses it to follow the kernel where the model differs.

        Cost: O(log m + log n); an area taken from a pool adds a scan of the
        pools.

        Raises:
            TypeError: a non-integer argument, a caller that is not a str.
            ValueError: a bad size or cpu (as alloc()), or a range that is
                unaligned, outside the space or not wholly free.
        """
        cdef space_t* s = self._s()
        addr = _index(addr, "addr")
        cdef uint64_t a = _u64(addr, "addr")
        cdef uint64_t szm1, tag = 0
        cdef alloc_status_t rc
        cdef bint locked
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
        # The caller tag is recorded before the change and taken back if the
        # range is refused, so that nothing after the change can fail (the
        # result is addr itself; replacing a value or deleting a key never
        # allocates).
        locked = caller is not None or vm_load_int(&self._callers_used)
        if locked:
            self._callers_mu.acquire()
        try:
            old = _NO_CALLER
            if caller is not None:
                vm_store_int(&self._callers_used, 1)
                old = _dict_get(self._callers, addr, _NO_CALLER)
                self._callers[addr] = caller
            rc = space_alloc_at(s, a, szm1, tag)
            if rc != ALLOC_OK:
                if old is not _NO_CALLER:
                    self._callers[addr] = old
                elif caller is not None:
                    del self._callers[addr]
            elif caller is None and self._callers:
                self._callers.pop(addr, None)
        finally:
            if locked:
                self._callers_mu.release()
        if rc == ALLOC_NOMEM:
            raise MemoryError("vmap_core: out of memory for area records")
        if rc != ALLOC_OK:
            raise ValueError(f"[{a:#x}, {<object>a + size:#x}) is not free")
        return addr

    cdef tuple _request(self, size, align, vstart, vend, cpu, caller, uint64_t* w):
        """alloc()'s conversions and checks, every TypeError before any
        ValueError (as the reference's _check_request()): fills w with
        (size - 1, align, vstart, vend - 1), returns (size, cpu) as ints (cpu
        may be None)."""
        cdef space_t* s = self.sp
        cdef uint64_t szm1, al, vs, vl
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
        w[0] = szm1
        w[1] = al
        w[2] = vs
        w[3] = vl
        return size, cpu

    def find(self, addr):
        """find_vmap_area(): the busy area with ``start <= addr < end``, or None.

        Cost: O(log n) in the node the address maps to; an area held by
        another node, or a miss, walks the other nodes (up to all of them,
        each O(log n)).

        Raises:
            TypeError: addr is not an integer.
            ValueError: addr is negative or >= 2**64.
        """
        cdef uint64_t a = _addr_u64(addr, "addr")
        cdef uint64_t start, last
        if space_find(self._s(), a, &start, &last):
            return _area(start, last)
        return None

    def _find_released(self, addr):
        """find() that drops the GIL around the lookup: kept only so that
        benchmarks/bench_threads.py can measure what that costs."""
        cdef uint64_t a = _addr_u64(addr, "addr")
        cdef uint64_t start, last
        cdef space_t* s = self._s()
        cdef bint found
        with nogil:
            vm_nogil_enter()
            found = space_find(s, a, &start, &last)
            vm_nogil_exit()
        if found:
            return _area(start, last)
        return None

    def free(self, addr):
        """free_vmap_area(): free the busy area that starts at addr; returns it.

        KeyError if no busy area starts at addr (a double free included).

        Cost: O(log m + log n) plus the node walk of find().

        Raises:
            TypeError, ValueError: addr as for find().
        """
        addr = _index(addr, "addr")
        cdef uint64_t a = _u64(addr, "addr")
        cdef uint64_t start, last
        cdef space_t* s = self._s()
        # Made before the change, so that nothing after it can fail.
        cdef VmapArea result = VmapArea.__new__(VmapArea)
        cdef int rc
        if vm_load_int(&self._callers_used):
            with self._callers_mu:
                rc = space_free(s, a, &start, &last)
                if rc == UNLINK_OK:
                    self._callers.pop(addr, None)
        else:
            rc = space_free(s, a, &start, &last)
        if rc == UNLINK_OK:
            result._start = start
            result._last = last
            return result
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
        the area.

        Cost: O(log n) plus the node walk of find(); a purge it triggers
        costs what purge() costs.

        Raises:
            TypeError, ValueError: addr as for find().
            KeyError: no busy area starts at addr.
            OnPurgeError: the purge it triggered called an on_purge that
                raised (the free and the purge completed).
        """
        addr = _index(addr, "addr")
        cdef uint64_t a = _u64(addr, "addr")
        cdef uint64_t start, last, nr_lazy = 0
        cdef bint over = False
        cdef space_t* s = self._s()
        cdef VmapArea result = VmapArea.__new__(VmapArea)   # before the change
        cdef int rc
        if vm_load_int(&self._callers_used):
            with self._callers_mu:
                rc = space_free_lazy(s, a, &start, &last, &over, &nr_lazy)
                if rc == UNLINK_OK:
                    self._callers.pop(addr, None)
        else:
            rc = space_free_lazy(s, a, &start, &last, &over, &nr_lazy)
        if rc != UNLINK_OK:
            raise KeyError(addr)
        result._start = start
        result._last = last
        if self._rec is not None:
            # The count is kept modulo 2**64: 0 right after a lazy free is 2**64.
            self._rec.free(self, start, nr_lazy if nr_lazy else _ADDR_LIMIT)
        if over and self.auto_purge and not self._in_flush():
            try:
                self._purge(False)
            except _CallbackFailed as exc:
                raise exc.report(f"free_lazy({a:#x})", result) from exc.__cause__
        return result

    def purge(self, full=False):
        """__purge_vmap_area_lazy(): decay every node's pools (~25% of each
        class, all with full=True), detach every lazy tree, call
        on_purge(start, end) with the union of the detached ranges (the one TLB
        flush) before any of them can be handed out again, then send every
        lazy area to its node's pool (when it carries a node tag, fits one of
        the 256 size classes and the purge is not full) or back to the free
        tree, merging.  Returns the number of lazy areas purged.  If on_purge
        raises, the purge still completes and OnPurgeError (chained to the
        callback's exception) reports it.

        Cost: O(k log m) for k lazy areas, plus the pools' decay.

        Raises:
            OnPurgeError: on_purge raised (the purge completed; ``result``
                holds the count).
            RuntimeError: called from inside on_purge.
        """
        cdef size_t n, expected = 0
        cdef space_t* s = self._s()
        cdef unsigned k
        if not isinstance(full, bool):
            raise TypeError("full must be a bool")
        # The result is made first, for the count expected, so that a purge
        # by this thread alone cannot be followed by a MemoryError.
        for k in range(s.nr_nodes):
            expected += cnt_peek(&s.nodes[k].nr_lazy)
        result = <object>expected
        try:
            n = self._purge(full)
        except _CallbackFailed as exc:
            raise exc.report("purge()", exc.args[3]) from exc.__cause__
        return result if n == expected else <object>n

    cdef size_t _purge(self, bint full) except? <size_t>-1:
        """One purge, for purge() and the purges that free_lazy() and
        alloc()'s overflow path run: detach the lazy areas under the purge
        lock, call on_purge with it held (as the kernel holds vmap_purge_lock
        across the flush), then give them back.  No Python object is made
        unless on_purge or a trace is set.  If on_purge raises, the purge
        finishes and _CallbackFailed reports it; a MemoryError making its
        arguments, or a BaseException from it, propagates after the purge."""
        cdef uint64_t fs, fl
        cdef size_t n
        cdef space_t* s = self.sp
        if self._in_flush():
            raise RuntimeError("purge called from on_purge: a purge cannot start while one "
                               "is flushing (the kernel holds vmap_purge_lock)")
        with nogil:
            vm_nogil_enter()
            lock_acquire(s.purge_lock)
            n = space_purge_detach(s, full, &fs, &fl)
            vm_nogil_exit()
        failure = None
        try:
            if n and self.on_purge is not None:
                start, end = <object>fs, <object>fl + 1
                vm_store_u64(&self._flush_tid, PyThread_get_thread_ident())
                try:
                    self.on_purge(start, end)             # flush_tlb_kernel_range()
                except Exception as exc:                  # finish the purge, then report
                    failure = exc
                finally:
                    vm_store_u64(&self._flush_tid, 0)
        finally:                                          # even on KeyboardInterrupt
            with nogil:
                vm_nogil_enter()
                space_purge_reclaim(s, full)
                vm_unlock(s.purge_lock)
                vm_nogil_exit()
            if self._rec is not None:
                self._rec.purge(self, fs, <object>fl + 1, n)
        if failure is not None:
            raise _CallbackFailed(failure, fs, <object>fl + 1, n) from failure
        return n

    def drain_pools(self):
        """The shrinker's scan: fully decay every node's pools back to the
        free tree; returns the number of areas given back.

        Cost: O(k log m) for k pooled areas.

        Raises:
            RuntimeError: called from inside on_purge.
        """
        cdef space_t* s = self._s()
        cdef size_t n, expected = 0
        cdef unsigned k
        if self._in_flush():
            raise RuntimeError("drain_pools() called from on_purge: the shrinker takes the "
                               "purge lock that the flush holds")
        for k in range(s.nr_nodes):
            expected += cnt_peek(&s.nodes[k].nr_pooled)
        result = <object>expected        # made before the change, as in purge()
        with nogil:
            vm_nogil_enter()
            n = space_drain_pools(s)
            vm_nogil_exit()
        return result if n == expected else <object>n

    def areas(self, from_addr=0):
        """Busy areas in global address order, from the first that ends above
        from_addr (find_vmap_area_exceed_addr(), as vread_iter() walks).  Each
        step finds its place anew, so other threads may alloc and free meanwhile;
        an area allocated across the walk's position since the previous step is
        behind it and not yielded, so no two areas yielded overlap.

        Cost: O(nr_nodes log n) per step.

        Raises:
            TypeError, ValueError: from_addr as an address for find().
        """
        cdef uint64_t addr = _u64(_index(from_addr, "from_addr"), "from_addr")
        return self._areas_from(addr)

    def _areas_from(self, uint64_t addr):
        cdef uint64_t start, last
        cdef uint64_t cursor = 0        # the end of the area yielded last
        cdef space_t* s = self._s()
        while space_find_exceed(s, addr, &start, &last):
            # One that starts below the cursor was allocated across it after
            # the last step (the area yielded then held up to the cursor):
            # behind the walk, not yielded.  vread_iter() reads only its part
            # above the cursor; areas() yields whole areas, never overlapping.
            if start >= cursor:
                yield _area(start, last)
                cursor = last + 1
            if last == UINT64_MAX:
                return
            addr = last + 1

    def caller_of(self, addr):
        """The caller tag of the busy area that starts at addr (None if it has
        none); KeyError if no busy area starts there.

        Cost: O(log n) plus the node walk of find().
        """
        cdef uint64_t a = _addr_u64(addr, "addr")
        cdef uint64_t start, last
        if not space_find(self._s(), a, &start, &last) or start != a:
            raise KeyError(addr)
        return _dict_get(self._callers, a)

    def lazy_areas(self):
        """Lazily freed areas not yet purged, in address order.

        Cost: O(k) for k lazy areas, one consistent snapshot.
        """
        cdef _Snapshot snap = _take_snapshot(self._s(), SNAP_LAZY)
        qsort(snap.sn.areas[1], snap.sn.n[1], sizeof(snap_area_t), snap_area_cmp)
        return _snap_areas(snap.sn.areas[1], snap.sn.n[1])

    cdef list _debug_pool_order(self):
        """Test-only (vmap_core._testhooks.debug_pool_order): (node, start, end) of every pooled area, node by node,
        size class by size class, head first: the order pooled_areas() sorts
        away, which decides what the next pooled alloc() gets."""
        cdef _Snapshot snap = _take_snapshot(self._s(), SNAP_POOLED)
        cdef snap_area_t* a = snap.sn.areas[2]
        cdef size_t i
        cdef list out = []
        for i in range(snap.sn.n[2]):
            out.append((a[i].node, a[i].start, <object>a[i].last + 1))
        return out

    cdef list _debug_fit_cache(self):
        """Test-only (vmap_core._testhooks.fit_cache): the fit cache's facts,
        one (size, align, floor, [(hole_start, hole_end), ...]) per class."""
        cdef space_t* s = self._s()
        cdef fit_cache_t ways[FC_WAYS]
        cdef fit_cache_t* e
        cdef unsigned i
        cdef int w
        cdef list out = []
        cdef list holes
        lock_acquire(s.free_lock)
        memcpy(ways, s.fcache, sizeof(ways))     # no Python object under the lock
        vm_unlock(s.free_lock)
        for w in range(FC_WAYS):
            e = &ways[w]
            if e.align == 0:
                continue
            holes = []
            for i in range(e.nholes):
                holes.append((e.holes[i].start, <object>e.holes[i].last + 1))
            out.append((<object>e.szm1 + 1, e.align, e.floor, holes))
        return out

    def pooled_areas(self):
        """(area, node) for every area in a node's pool, in address order.

        Cost: O(k) for k pooled areas, one consistent snapshot.
        """
        cdef _Snapshot snap = _take_snapshot(self._s(), SNAP_POOLED)
        cdef snap_area_t* a = snap.sn.areas[2]
        cdef size_t i
        cdef list out = []
        qsort(a, snap.sn.n[2], sizeof(snap_area_t), snap_area_cmp)
        for i in range(snap.sn.n[2]):
            out.append((_area(a[i].start, a[i].last), a[i].node))
        return out

    def vmallocinfo(self):
        """/proc/vmallocinfo (vmalloc_info_show(), show_purge_info()): busy
        areas node by node, sorted within a node, as ``0x<start>-0x<end>
        <size> <caller> pages=<n> vmalloc`` (the size with the guard page,
        pages= without it, no caller where none was given), then the lazily
        freed ones as ``unpurged vm_area``.  One consistent snapshot of both
        (see docs/guarantees.md on snapshots).

        Cost: O(n log n) (each node's areas sorted).
        """
        cdef _Snapshot snap = _take_snapshot(self._s(), SNAP_BUSY | SNAP_LAZY)
        cdef snap_area_t* a = snap.sn.areas[0]
        cdef dict callers = self._callers
        cdef list lines = []
        cdef size_t i
        page_size = self.page_size
        info_line = _reference.info_line
        for i in range(snap.sn.n[0]):
            start = a[i].start
            lines.append(info_line(start, <object>a[i].last + 1, _dict_get(callers, start),
                                   page_size))
        a = snap.sn.areas[1]
        for i in range(snap.sn.n[1]):
            lines.append(f"0x{a[i].start:016x}-0x{<object>a[i].last + 1:016x} "
                         f"{<object>(a[i].last - a[i].start) + 1:7d} unpurged vm_area")
        if not lines:
            return ""
        lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_vmallocinfo(cls, text_or_path, **space_kwargs):
        """A space holding exactly the busy areas of a /proc/vmallocinfo dump
        (its text, or a path to one); see vmap_core.kernel.vmallocinfo.load.  What
        was done to build it (hidden or hashed addresses laid out anew, lines
        skipped) is in the space's ``load_notes``.

        Cost: O(k log k) for a dump of k areas.

        Raises:
            ValueError: the dump holds no area, an area cannot be placed, or
                the path is not a regular file or is over MAX_DUMP_BYTES.
            TypeError: the argument is neither text nor a path.
            OSError: the path cannot be read.
        """
        from .kernel import vmallocinfo
        space, notes = vmallocinfo.load(text_or_path, cls=cls, **space_kwargs)
        space.load_notes = list(notes)
        return space

    # A reader takes its reference to the list while a writer cannot drop the
    # field's; the old list is released after the lock (its items' finalizers
    # may run Python code).
    @property
    def load_notes(self):
        """from_vmallocinfo(): what was done to build this space (a list of
        str; empty for a space built otherwise)."""
        cdef object notes
        vm_word_lock(&self._notes_lock)
        notes = self._load_notes
        vm_word_unlock(&self._notes_lock)
        return notes

    @load_notes.setter
    def load_notes(self, notes):
        cdef object old
        if notes is not None and type(notes) is not list:
            raise TypeError(f"load_notes must be a list, not {type(notes).__name__}")
        vm_word_lock(&self._notes_lock)
        old = self._load_notes
        self._load_notes = notes
        vm_word_unlock(&self._notes_lock)

    def _free_tree_shape(self):
        """Test-only: the free tree in preorder, (start, end, 'r'|'b', depth)
        per node, to compare with the reference's transcription of the kernel."""
        cdef space_t* s = self._s()
        cdef shape_t* sh = NULL
        cdef size_t n = 0
        cdef int rc
        with nogil:
            vm_nogil_enter()
            rc = space_free_shape(s, &sh, &n)
            vm_nogil_exit()
        if rc != 0:
            raise MemoryError("vmap_core: out of memory for a snapshot")
        try:
            return _shape_list(sh, n)
        finally:
            free(sh)

    def locate(self, addr):
        """What holds addr: ``("busy", area, node)``, ``("free", block,
        None)``, ``("lazy", area, node)`` or ``("pooled", area, node)``; or
        ``(None, None, None)`` outside the space (or, from inside on_purge, in
        an area the purge is flushing).  A pooled area costs a scan of the pools.

        Cost: O(log) per tree tried; a pooled area costs a scan of the pools.

        Raises:
            TypeError, ValueError: addr as for find().
        """
        cdef uint64_t a = _addr_u64(addr, "addr")
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
        """addr_to_node_id(): the node whose busy tree holds an area starting at addr.

        Cost: O(1).

        Raises:
            TypeError, ValueError: addr as for find().
        """
        return addr_to_node_id(self._s(), _addr_u64(addr, "addr"))

    def find_many(self, addrs, out=None):
        """find_vmap_area() for each address of a buffer of unsigned 64-bit
        integers (array.array('Q'), numpy uint64, ...), without the GIL.

        Writes the start of the area holding each address, or MISS, into out
        (a writable buffer of the same length and type) and returns out.  When
        out is None, a new one of the input's kind: a numpy.ndarray of uint64
        for a numpy array, else an array.array('Q').  TypeError for anything
        but a one-dimensional buffer of native unsigned 64-bit integers (None,
        a structured dtype, a released buffer included), ValueError when the
        lengths differ.

        Cost: as find(), per address; the GIL is released for the whole batch.
        """
        return self._find_many(addrs, out, False)

    def _find_many_serial(self, addrs, out=None):
        """find_many() one descent at a time (space_find() per address): kept
        only so that benchmarks can measure what the interleaving gains."""
        return self._find_many(addrs, out, True)

    cdef object _find_many(self, addrs, out, bint serial):
        cdef space_t* s = self._s()
        cdef Py_buffer a
        cdef Py_buffer o
        cdef Py_ssize_t i, n, j, k
        cdef uint64_t x
        cdef uint64_t xs[FM_CHUNK]
        cdef uint64_t sts[FM_CHUNK]
        cdef uint64_t las[FM_CHUNK]
        cdef signed char found[FM_CHUNK]
        cdef const char* ap
        cdef char* op
        cdef Py_ssize_t astride, ostride
        _get_u64_buffer(addrs, &a, False, "addrs")
        try:
            n = _buffer_len(&a)
            astride = _buffer_stride(&a)
            if out is None:
                out = _new_u64_like(addrs, n)
            _get_u64_buffer(out, &o, True, "out")
            try:
                if _buffer_len(&o) != n:
                    raise ValueError(f"out has {_buffer_len(&o)} items, addrs {n}")
                ostride = _buffer_stride(&o)
                ap = <const char*>a.buf
                op = <char*>o.buf
                with nogil:
                    vm_nogil_enter()
                    i = 0
                    while i < n:            # chunks of several descents in flight
                        k = n - i if n - i < FM_CHUNK else FM_CHUNK
                        for j in range(k):
                            # memcpy: a view may be unaligned (numpy); a plain mov on x86-64.
                            memcpy(&xs[j], ap + (i + j) * astride, 8)
                        if serial:
                            for j in range(k):
                                found[j] = space_find(s, xs[j], &sts[j], &las[j])
                        else:
                            space_find_chunk(s, xs, <int>k, sts, las, found)
                        for j in range(k):
                            x = sts[j] if found[j] else MISS_U64
                            memcpy(op + (i + j) * ostride, &x, 8)
                        i += k
                    vm_nogil_exit()
            finally:
                PyBuffer_Release(&o)
        finally:
            PyBuffer_Release(&a)
        return out

    def check_copy(self, addr, n):
        """check_heap_object() for a vmalloc address (hardened usercopy):
        ValueError unless one busy area holds all of ``[addr, addr + n)``.

        Cost: as find().

        Raises:
            TypeError: a non-integer argument.
            ValueError: no single busy area holds the range; addr or n
                negative or >= 2**64.
        """
        cdef uint64_t a = _addr_u64(addr, "addr")
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
        """Busy areas in address order: one consistent snapshot (see
        docs/guarantees.md on snapshots)."""
        return iter(self._busy_snapshot())

    cdef list _busy_snapshot(self):
        cdef _Snapshot snap = _take_snapshot(self._s(), SNAP_BUSY)
        qsort(snap.sn.areas[0], snap.sn.n[0], sizeof(snap_area_t), snap_area_cmp)
        return _snap_areas(snap.sn.areas[0], snap.sn.n[0])

    def free_areas(self):
        """The free blocks as VmapArea, coalesced, in address order (one
        consistent snapshot).

        Cost: O(m).
        """
        cdef _Snapshot snap = _take_snapshot(self._s(), SNAP_FREE)
        return _snap_areas(snap.sn.areas[3], snap.sn.n[3])

    # -- introspection ------------------------------------------------------

    cdef unsigned _snap_flags(self, unsigned what) except? 0xFFFFFFFF:
        """what, plus SNAP_PURGE_HELD from inside on_purge: there the purge
        lock is the flushing purge's, held by this very thread, and a view
        that needs it neither takes it again nor releases it."""
        return what | SNAP_PURGE_HELD if self._in_flush() else what

    cdef int _lock_all(self, unsigned* held) except -1:
        """Every lock, in the one fixed order (_snapshot.pxi), the GIL
        released for any wait; *held says how to release them (_unlock_all)."""
        held[0] = self._snap_flags(SNAP_COUNTS)
        snap_lock(self.sp, held[0])
        return 0

    cdef void _unlock_all(self, unsigned held) noexcept:
        snap_unlock(self.sp, held)

    def check(self):
        """Verify every invariant; AssertionError names the first broken one.

        rb colours and black heights, parent links, address order and
        subtree_max_size in every tree; each list is its tree in order; busy
        areas sit in the node of their start, lazy ones in the node of their
        tag (v6.8: no two touch); pooled areas sit in their size class; free
        blocks are coalesced; free, busy, lazy, pooled (and, from inside
        on_purge, detached) areas tile [start, end) exactly; the lazy page
        count and the slab agree with them.  Takes every lock: call it while
        no other thread is inside a method of this space.

        Cost: O((n + m) log(n + m)).

        Raises:
            AssertionError: an invariant is broken (the message names it).
        """
        cdef space_t* s = self._s()
        cdef block_t* blocks
        cdef const char* err
        cdef size_t cap
        cdef unsigned k, held
        self._lock_all(&held)
        cap = s.nr_free
        for k in range(s.nr_nodes):
            cap += (s.nodes[k].nr_areas + s.nodes[k].nr_lazy + s.nodes[k].nr_pooled
                    + s.nodes[k].nr_purge)
        blocks = <block_t*>vm_malloc((cap + 1) * sizeof(block_t))
        if blocks == NULL:
            self._unlock_all(held)
            raise MemoryError()
        err = space_verify(s, blocks)
        self._unlock_all(held)
        free(blocks)
        if err != NULL:
            raise AssertionError((<bytes>err).decode())

    cdef _debug_corrupt(self, str kind):
        """Test-only (vmap_core._testhooks.debug_corrupt): break the invariant
        named by kind (one per message of check(): space_corrupt() in
        _check.pxi) so that check() can be shown to catch it.  The space is
        unusable afterwards."""
        cdef space_t* s = self._s()
        cdef bytes k = kind.encode()
        cdef const char* err
        cdef unsigned held
        self._lock_all(&held)
        err = space_corrupt(s, k)
        self._unlock_all(held)
        if err != NULL:
            raise ValueError(f"cannot corrupt {kind!r}: {(<bytes>err).decode()}")

    cdef dict _lock_state(self, unsigned node):
        """Test-only (vmap_core._testhooks.lock_state): node's locks and
        counters read atomically, taking no lock (a writer may be paused)."""
        cdef space_t* s = self._s()
        cdef vnode_t* vn
        if node >= s.nr_nodes:
            raise ValueError(f"node {node} of {s.nr_nodes}")
        vn = &s.nodes[node]
        return {
            "global_locked": s.global_lock != NULL and vm_lock_held(s.global_lock),
            "free_locked": bool(vm_lock_held(s.free_lock)),
            "node_locked": bool(vm_lock_held(&vn.lock)),
            "node_acquisitions": vm_load_u64(&vn.lock.acquisitions),
            "rw_writer": bool(vm_load_unsigned(&vn.rw.state) & 0x80000000u),
            "seq": vm_load_unsigned(&vn.seq),
            "read_retries": vm_load_u64(&vn.read_retries),
            "read_fallbacks": vm_load_u64(&vn.read_fallbacks),
            "read_waits": vm_load_u64(&vn.rw.read_waits),
        }

    def stats(self):
        """Counts and sizes, and per-lock acquisition counters.

        Keys: busy_areas, busy_bytes, free_areas, free_bytes, largest_free,
        nr_nodes, node_areas (busy areas per node), lock, lazy_areas,
        lazy_pages, lazy_max_pages, pooled_areas, pool_areas (per node,
        {size class: areas}), purges (runs), tlb_flushes (runs that purged
        something), purged_areas, slab_bytes (memory
        held for area records: the chunks holding a page, and the slab's
        tables), slab_records (records in use: busy + free),
        slab_compactions (times the records were moved together after the
        space shrank a lot, so that emptied chunks gave their pages back),
        record_bytes (bytes per record), lock_acquisitions / lock_contended
        (per lock: "free" and one per node, or "global"; a lookup in "node"
        mode takes its node's lock, in "rwlock" and "optimistic" mode it does
        not), rwlock_read_waits (per node, "rwlock" readers that had to wait),
        optimistic_retries / optimistic_fallbacks (per node, lock-free reads
        that saw a change and retried, and that then took the lock).  Every
        count is from one instant, taken under every lock (see
        docs/guarantees.md on snapshots).
        """
        cdef space_t* s = self._s()
        cdef _Snapshot snap = _take_snapshot(s, self._snap_flags(SNAP_COUNTS))   # every lock, then none
        cdef snap_t* sn = &snap.sn
        cdef node_counts_t* nc
        cdef unsigned k
        cdef size_t c, n
        cdef size_t nbusy = 0
        cdef size_t nlazy = 0
        cdef size_t npooled = 0
        cdef object busy_bytes = 0
        cdef list node_areas = []
        cdef list pool_areas = []
        cdef list read_waits = []
        cdef list retries = []
        cdef list fallbacks = []
        cdef dict per_class
        cdef dict acq, cont
        if s.global_lock != NULL:
            acq = {"global": sn.free_acquisitions}
            cont = {"global": sn.free_contended}
        else:
            acq = {"free": sn.free_acquisitions}
            cont = {"free": sn.free_contended}
        for k in range(s.nr_nodes):
            nc = &sn.nodes[k]
            nbusy += nc.nr_areas
            nlazy += nc.nr_lazy
            npooled += nc.nr_pooled
            # A span sum cannot overflow: disjoint blocks fit in 2**64 bytes.
            busy_bytes += <object>nc.busy_spans + nc.nr_areas
            node_areas.append(nc.nr_areas)
            per_class = {}
            for c in range(<size_t>MAX_VA_SIZE_PAGES):
                n = sn.pool_len[k * MAX_VA_SIZE_PAGES + c]
                if n:
                    per_class[c] = n
            pool_areas.append(per_class)
            read_waits.append(nc.read_waits)
            retries.append(nc.read_retries)
            fallbacks.append(nc.read_fallbacks)
            if s.global_lock == NULL:
                acq[f"node{k}"] = nc.acquisitions
                cont[f"node{k}"] = nc.contended
        return {
            "busy_areas": nbusy,
            "busy_bytes": busy_bytes,
            "free_areas": sn.nr_free,
            "free_bytes": <object>sn.free_spans + sn.nr_free,
            "largest_free": <object>sn.largest_span + 1 if sn.any_free else 0,
            "nr_nodes": s.nr_nodes,
            "node_areas": node_areas,
            "lock": self.lock,
            "lazy_areas": nlazy,
            # The count is kept modulo 2**64: 0 with lazy areas is every page
            # of a 2**64-page space.
            "lazy_pages": sn.lazy_nr if sn.lazy_nr or not nlazy else _ADDR_LIMIT,
            "lazy_max_pages": self.lazy_max_pages,
            "pooled_areas": npooled,
            "pool_areas": pool_areas,
            "purges": sn.purges,
            "tlb_flushes": sn.tlb_flushes,
            "purged_areas": sn.purged_areas,
            "slab_bytes": sn.slab_bytes,
            "slab_records": sn.slab_records,
            "slab_compactions": sn.slab_compactions,
            "record_bytes": sizeof(va_t),
            "lock_acquisitions": acq,
            "lock_contended": cont,
            "rwlock_read_waits": read_waits,
            "optimistic_retries": retries,
            "optimistic_fallbacks": fallbacks,
        }

    def __repr__(self):
        self._s()
        return (f"VmapSpace({self.start:#x}, {self.end:#x}, busy={len(self)}, "
                f"nr_nodes={self.nr_nodes}, lock={self.lock!r})")

    # -- container conventions, copies ---------------------------------------

    def __contains__(self, addr):
        """``addr in space``: some busy area holds addr, found as find() finds
        it (O(log n) in the node tried first).  For a VmapArea: it is one of
        the busy areas.  False for an int outside [0, 2**64); TypeError for
        anything else."""
        cdef uint64_t st, la, a64
        cdef space_t* s = self._s()
        if PyLong_CheckExact(addr):
            try:
                a64 = addr
            except OverflowError:
                return False
            return space_find(s, a64, &st, &la)
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
        (reference.check_space_state() has the format), all from one instant.
        The counters of stats() start again from zero.  RuntimeError from
        inside on_purge."""
        state = self._get_state()
        kwargs = {}
        for name in _reference.SPACE_INIT_ARGS:
            kwargs[name] = getattr(self, name)
        return (_reference.rebuild_space, (type(self), self.start, self.end, kwargs), state)

    cdef dict _get_state(self):
        cdef space_t* s = self._s()
        cdef rec_t* recs
        cdef shape_t* sh
        cdef size_t cap = 0
        cdef size_t nb = 0
        cdef size_t nl, np_, nsh, i
        cdef unsigned k, held
        cdef size_t cls
        if self._in_flush():
            raise RuntimeError("a space cannot be copied from inside on_purge: its purge is "
                               "half done")
        # Every lock; the records and the free tree's shape copied in C; no lock.
        # An area that another thread is moving between two structures is in
        # none of them (see _snapshot.pxi), and a state must tile the space:
        # until the copy covers [start, end), drop the locks and copy again.
        while True:
            self._lock_all(&held)
            cap = 0
            for k in range(s.nr_nodes):
                cap += s.nodes[k].nr_areas + s.nodes[k].nr_lazy + s.nodes[k].nr_pooled
            recs = <rec_t*>vm_malloc((cap + 1) * sizeof(rec_t))
            sh = <shape_t*>vm_malloc((s.nr_free + 1) * sizeof(shape_t)) if recs != NULL else NULL
            if sh == NULL:
                self._unlock_all(held)
                free(recs)
                raise MemoryError()
            nb = 0
            for k in range(s.nr_nodes):
                nb = _copy_recs(rb_first(s.nodes[k].root.node), recs, nb, cap, k)
            nl = nb
            for k in range(s.nr_nodes):
                nl = _copy_recs(rb_first(s.nodes[k].lazy_root.node), recs, nl, cap, k)
            np_ = nl
            for k in range(s.nr_nodes):
                for cls in range(<size_t>MAX_VA_SIZE_PAGES):
                    np_ = _copy_recs(s.nodes[k].pools[cls].head, recs, np_, cap, k)
            nsh = ft_copy_shape(s, sh, s.nr_free)
            self._unlock_all(held)
            if _covered(recs, np_, sh, nsh) == s.last - s.start + 1:    # modulo 2**64
                break
            free(recs)
            free(sh)
            with nogil:
                sched_yield()       # let the moving area land
        try:
            callers = self._callers
            busy = []
            for i in range(nb):
                busy.append((recs[i].start, <object>recs[i].last + 1, _tag_node(recs[i].aux),
                             _dict_get(callers, recs[i].start)))
            busy.sort()
            lazy = []
            for i in range(nb, nl):
                lazy.append((recs[i].start, <object>recs[i].last + 1, _tag_node(recs[i].aux)))
            lazy.sort()
            pooled = []
            for i in range(nl, np_):
                pooled.append((recs[i].node, recs[i].start, <object>recs[i].last + 1))
            shape = _shape_list(sh, nsh)
        finally:
            free(recs)
            free(sh)
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
                vm_store_int(&self._callers_used, 1)
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
        cdef int rc
        cdef shape_t* sh = <shape_t*>vm_malloc((n + 1) * sizeof(shape_t))
        if sh == NULL:
            raise MemoryError()
        try:
            for i in range(n):       # into C first: no Python object under the lock
                start, end, colour, depth = shape[i]
                sh[i].start = start
                sh[i].last = <uint64_t>(end - 1)
                sh[i].black = colour == "b"
                sh[i].depth = depth
            with nogil:
                vm_nogil_enter()
                rc = space_shape_free_tree(s, sh, n)
                vm_nogil_exit()
        finally:
            free(sh)
        if rc == -2:
            raise MemoryError()
        if rc != 0:
            raise SystemError("vmap_core: the free blocks do not match the state's tree")

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


cdef void* _worker_slot(_Workers workers, size_t i, size_t size) except NULL:
    """Worker i's slot; the worker methods below are reachable from Python."""
    if workers is None or i >= workers.n:
        raise ValueError("no such worker")
    return <char*>workers.slots + i * size


cdef int _join_all(list pool, int* stop, uint64_t* finished) except -1:
    """Join native worker threads.  If the wait is interrupted (a signal
    handler raising KeyboardInterrupt), tell them to stop and wait until each
    has left the core (its finished count), then let the exception go on:
    none may outlive the memory it uses.  The count, not Thread.join(), says
    when: an interrupted join() may mark a running thread as stopped
    (CPython's bpo-45274 workaround)."""
    try:
        # Timed waits, not a plain join(), and the signal handlers run here:
        # a SIGINT the kernel delivered to a worker thread wakes no wait of
        # the main thread, and this compiled loop runs no bytecode, so no
        # eval loop would run the handler (KeyboardInterrupt) for it.
        while vm_load_u64(finished) < <uint64_t>len(pool):
            PyErr_CheckSignals()
            time.sleep(0.002)
    finally:
        vm_store_int(stop, 1)
        while vm_load_u64(finished) < <uint64_t>len(pool):
            try:
                time.sleep(0.001)       # they stop within a few ms
            except BaseException:
                pass
        for t in pool:
            try:
                t.join()
            except BaseException:
                pass
    return 0


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


cdef object _bounded(object v, str name, object lo, object hi):
    """An exact int in [lo, hi], else TypeError / ValueError."""
    v = _index(v, name)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], not {v}")
    return v


MAX_NATIVE_THREADS = 1024
"""The most native worker threads one run starts (stress_native(), usercopy_run(),
test_vmalloc_native())."""


cdef class _StressRun:
    cdef _Workers workers
    cdef VmapSpace space        # kept alive while the workers use it
    cdef uint64_t* owned
    cdef int stop
    cdef uint64_t finished      # threads that have left worker()

    def __dealloc__(self):
        free(self.owned)

    def worker(self, size_t i):
        cdef stress_worker_t* w
        try:
            w = <stress_worker_t*>_worker_slot(self.workers, i, sizeof(stress_worker_t))
            with nogil:
                vm_nogil_enter()
                stress_loop(w)
                vm_nogil_exit()
        finally:
            vm_atomic_inc(&self.finished)


MAX_STRESS_OWNED = 1 << 20
"""The most areas one stress_native() worker may hold at once."""


def stress_native(VmapSpace space not None, threads, ops, seed=1, max_owned=256):
    """Native threads doing random alloc / free / lazy free and purge / find
    on one space at once.

    Each of ``threads`` workers (1..MAX_NATIVE_THREADS) runs ``ops``
    operations (0..2**64-1) without the GIL and checks that every area it
    owns (at most ``max_owned``, 1..MAX_STRESS_OWNED) stays findable with its
    bounds.  Returns {"allocs", "frees", "finds", "errors", "owned": [[(start,
    end), ...] per worker]} (the areas each still holds).  ValueError for an
    argument out of range; interrupted, the workers stop and are joined first.
    """
    cdef _StressRun run = _StressRun()
    cdef stress_worker_t* w
    cdef Py_ssize_t i, nthreads
    cdef size_t j, owned_max
    cdef int overflow = 0
    cdef size_t nwords
    space._s()
    nthreads = _bounded(threads, "threads", 1, MAX_NATIVE_THREADS)
    cdef uint64_t nops = _bounded(ops, "ops", 0, (1 << 64) - 1)
    cdef uint64_t rng_seed = _bounded(seed, "seed", 0, (1 << 64) - 1)
    owned_max = _bounded(max_owned, "max_owned", 1, MAX_STRESS_OWNED)
    run.space = space
    run.workers = _Workers(nthreads, sizeof(stress_worker_t))
    nwords = vm_mul_size(2 * <size_t>nthreads, owned_max, &overflow)
    run.owned = <uint64_t*>vm_malloc(vm_mul_size(nwords, sizeof(uint64_t), &overflow))
    if run.owned == NULL or overflow:
        raise MemoryError()
    for i in range(nthreads):
        w = &(<stress_worker_t*>run.workers.slots)[i]
        w.space = space.sp
        w.rng = (rng_seed + i + 1) * 0x9E3779B97F4A7C15ULL
        w.ops = nops
        w.owned = run.owned + 2 * i * owned_max
        w.owned_last = w.owned + owned_max
        w.cap_owned = owned_max
        w.stop = &run.stop
    pool = []
    for i in range(nthreads):
        pool.append(threading.Thread(target=run.worker, args=(i,)))
    started = []
    try:
        for t in pool:
            t.start()
            started.append(t)
    finally:
        _join_all(started, &run.stop, &run.finished)
    out = {"allocs": 0, "frees": 0, "finds": 0, "errors": 0, "owned": []}
    for i in range(nthreads):
        w = &(<stress_worker_t*>run.workers.slots)[i]
        out["allocs"] += w.allocs
        out["frees"] += w.frees
        out["finds"] += w.finds
        out["errors"] += w.errors
        owned = []
        for j in range(w.nr_owned):
            owned.append((w.owned[j], <object>w.owned_last[j] + 1))
        out["owned"].append(owned)
    return out


# -- test-only hooks ------------------------------------------------------------
# Not attributes of VmapSpace nor names of this module: the test suite and
# .ci/sanitize reach them through vmap_core._testhooks, which this fills in.

cdef void _install_test_hooks() except *:
    def debug_corrupt(VmapSpace space, str kind):
        space._debug_corrupt(kind)

    def debug_pool_order(VmapSpace space):
        return space._debug_pool_order()

    def fit_cache(VmapSpace space):
        return space._debug_fit_cache()

    def search_tests(VmapSpace space):
        return space._s().fc_steps

    def set_bounded_walk(VmapSpace space, bint on):
        space._s().walk_bounded = on

    def set_slab_tuning(VmapSpace space, size_t compact_min, size_t keep_empty):
        cdef space_t* s = space._s()
        lock_acquire(s.free_lock)
        s.slab.compact_min = compact_min
        s.slab.keep_empty = keep_empty
        vm_unlock(s.free_lock)

    def race_selftest(n=100000):
        return _race_selftest(n)

    def leak_selftest(nbytes=4096):
        return _leak_selftest(nbytes)

    def ubsan_selftest(shift=64):
        return _ubsan_selftest(shift)

    def fail_c_alloc(k=-1):
        vm_fail_alloc_at(k)
        return vm_alloc_count()

    def c_alloc_count():
        return vm_alloc_count()

    def pause_arm(site):
        vm_pause_arm(_PAUSE_SITES[site])

    def pause_state():
        return vm_pause_paused()

    def pause_release():
        vm_pause_release()

    def lock_state(VmapSpace space, unsigned node):
        return space._lock_state(node)

    from . import _testhooks
    _testhooks._install(debug_corrupt=debug_corrupt, debug_pool_order=debug_pool_order,
                        fit_cache=fit_cache, search_tests=search_tests,
                        set_bounded_walk=set_bounded_walk, set_slab_tuning=set_slab_tuning,
                        race_selftest=race_selftest, leak_selftest=leak_selftest,
                        ubsan_selftest=ubsan_selftest, fail_c_alloc=fail_c_alloc,
                        c_alloc_count=c_alloc_count, pause_arm=pause_arm,
                        pause_state=pause_state, pause_release=pause_release,
                        lock_state=lock_state)


cdef dict _PAUSE_SITES = {"off": 0, "publish": PAUSE_PUBLISH, "unlink": PAUSE_UNLINK}


_install_test_hooks()

if vm_cpu_atfork_init() != 0:
    raise ImportError("vmap_core: pthread_atfork() failed")


# -- the anchors' experiments: native test_vmalloc workers, usercopy with the seed's options
include "_tvmalloc.pxi"
include "_runs.pxi"

# The space's C state, shared by every layer below the Python class.  One
# space_t per VmapSpace; nodes and locks live in 64-byte aligned arrays so
# that no two locks share a cache line.

cdef extern from "_locks.h" nogil:
    ctypedef struct vm_lock_t:
        uint64_t acquisitions
        uint64_t contended
        uint64_t wait_ticks
    void vm_lock_init(vm_lock_t* l)
    bint vm_lock_try(vm_lock_t* l)
    void vm_lock_wait(vm_lock_t* l)
    void vm_lock_wait_since(vm_lock_t* l, uint64_t t0)
    int vm_lock_spin(vm_lock_t* l, uint64_t* t0)
    void vm_unlock(vm_lock_t* l)
    ctypedef struct vm_rwlock_t:
        unsigned state
        uint64_t read_waits
        uint64_t wait_ticks
    void vm_rwlock_init(vm_rwlock_t* l)
    bint vm_read_trylock(vm_rwlock_t* l)
    void vm_read_lock(vm_rwlock_t* l)
    void vm_read_unlock(vm_rwlock_t* l)
    bint vm_write_lock_rw_begin(vm_rwlock_t* l)
    void vm_write_lock_rw_wait(vm_rwlock_t* l)
    void vm_write_unlock_rw(vm_rwlock_t* l)
    unsigned vm_read_seqbegin(const unsigned* seq)
    bint vm_read_seqretry(const unsigned* seq, unsigned start)
    void vm_write_seqbegin(unsigned* seq)
    void vm_write_seqend(unsigned* seq)
    void vm_atomic_inc(uint64_t* p)
    void vm_wait_clock_init()
    uint64_t vm_wait_ns(uint64_t ticks)

cdef extern from "_locks.h" nogil:
    bint vm_pause_armed(int site)
    bint vm_pause_claim(int site)
    void vm_pause_wait()
    void vm_pause_arm(int site)
    bint vm_pause_paused()
    void vm_pause_release()
    bint vm_lock_held(const vm_lock_t* l)
    unsigned vm_load_unsigned(const unsigned* p)

cdef extern from "_locks.h" nogil:
    bint vm_in_nogil()
    void vm_nogil_enter()
    void vm_nogil_exit()

cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState* PyEval_SaveThread() nogil
    void PyEval_RestoreThread(PyThreadState* ts) nogil

cdef enum lock_mode_t:
    LOCK_NODE = 0       # a spinlock per node, one for the free tree (the 2024 series)
    LOCK_GLOBAL = 1     # one lock for everything (before the series)
    LOCK_RWLOCK = 2     # per node: writers take the spinlock and the rwlock, lookups read-lock
    LOCK_OPTIMISTIC = 3 # per node: writers take the spinlock and bump seq, lookups take nothing

cdef enum:
    MAX_VA_SIZE_PAGES = 256         # size classes of a node's pool

ctypedef struct va_pool_t:          # struct vmap_pool: one size class, a list through prev/next
    va_t* head
    va_t* tail
    size_t len

ctypedef struct vnode_t:            # struct vmap_node: its busy tree and locks
    vm_lock_t lock                  # busy.lock: serialises writers (and readers in "node")
    vm_rwlock_t rw                  # readers' lock in "rwlock" mode, own cache line
    unsigned seq                    # bumped around every change in "optimistic" mode
    rb_root_t root
    size_t nr_areas
    uint64_t read_retries           # optimistic reads that saw a change and retried
    uint64_t read_fallbacks         # ... and that gave up and took the lock
    vm_lock_t lazy_lock             # lazy.lock: the lazily freed areas
    rb_root_t lazy_root
    size_t nr_lazy
    vm_lock_t pool_lock             # pool_lock: the pools
    va_pool_t* pools                # MAX_VA_SIZE_PAGES classes
    size_t nr_pooled
    va_t* purge_list                # purge_list: detached lazy areas while a purge flushes
    size_t nr_purge

cdef enum:
    FC_WAYS = 4                     # (size, align) classes remembered by the fit cache
    FC_HOLES = 256                  # places below a class's floor where a fit may be

ctypedef struct fc_hole_t:
    uint64_t start
    uint64_t last

ctypedef struct fit_cache_t:        # what aligned searches learned (see _freetree.pxi)
    uint64_t szm1
    uint64_t align                  # 0: the way is unused
    uint64_t floor                  # no free block starting below floor fits ...
    uint64_t used                   # (LRU stamp)
    unsigned nholes                 # ... unless it starts inside one of the holes
    fc_hole_t holes[FC_HOLES]       # sorted, disjoint

ctypedef struct space_t:
    uint64_t start
    uint64_t last              # last address of the range (end - 1)
    uint64_t page_size
    uint64_t zone_size         # vmap_zone_size
    int zone_shift             # log2(zone_size), or -1 when not a power of two
    unsigned nr_nodes
    bint nodes_pow2            # nr_nodes is a power of two
    lock_mode_t mode
    vm_lock_t* locks           # [0] free tree, [1] global, [2] purge
    vm_lock_t* free_lock       # free_vmap_area_lock (== global lock in global mode)
    vm_lock_t* global_lock     # NULL unless mode == LOCK_GLOBAL
    vnode_t* nodes
    rb_root_t free_root        # free_vmap_area_root
    size_t nr_free             # free blocks in the tree
    slab_t slab                # serialised by free_lock
    vm_lock_t* purge_lock      # vmap_purge_lock: one purge at a time
    uint64_t lazy_nr           # vmap_lazy_nr: pages lazily freed, not yet purged
    uint64_t lazy_max_pages
    uint64_t purges            # purge runs; those that flushed; areas purged
    uint64_t tlb_flushes
    uint64_t purged_areas
    # The kernel profile (vmap_core.profiles): what differs between versions.
    bint search_lowest         # search="lowest": the exact linear lowest match
    bint walk_down             # find walks i - 1 (v6.16+), else i + 1 (v6.9)
    bint decay_keeps_small     # a non-full decay keeps pools of 1-3 areas (v6.16+)
    bint lazy_merge            # v6.8: lazy areas merge in one purge tree, no pools
    # search="lowest", align > page_size: the fit cache (free lock)
    fit_cache_t fcache[FC_WAYS]
    # Bounded walk (off by default; not the kernel's): find's walk visits only the
    # nodes whose zones an area holding the address can start in (space_find()).
    bint walk_bounded
    uint64_t widest            # the largest span (size - 1) ever put in a busy tree
    uint64_t fc_clock
    uint64_t fc_steps          # blocks tested by cached aligned searches (stats)


cdef extern from *:
    """
    static inline void vm_atomic_max_u64(uint64_t *p, uint64_t v) {
        uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, 1, __ATOMIC_SEQ_CST,
                                                       __ATOMIC_RELAXED)) {
        }
    }
    """
    void vm_atomic_max_u64(uint64_t* p, uint64_t v) nogil


cdef inline void cnt_add(size_t* count, int64_t delta) noexcept nogil:
    """Change a count that its lock guards but that lock-free peeks may read
    (READ_ONCE/WRITE_ONCE in the kernel: list_empty(), a pool's len)."""
    vm_store_u64(<uint64_t*>count, <uint64_t>count[0] + <uint64_t>delta)


cdef inline size_t cnt_peek(const size_t* count) noexcept nogil:
    return vm_load_u64(<const uint64_t*>count)


cdef inline unsigned addr_to_node_id(const space_t* s, uint64_t addr) noexcept nogil:
    """addr_to_node_id(): the node whose busy tree holds an area starting at addr."""
    cdef uint64_t zone
    if s.zone_shift >= 0:
        zone = addr >> s.zone_shift
    else:
        zone = addr // s.zone_size
    if s.nodes_pow2:
        return <unsigned>zone & (s.nr_nodes - 1)    # no division on find()'s path
    return <unsigned>(zone % s.nr_nodes)


# A contended wait never spins while holding the GIL: the thread holding it
# drops it for the wait (the GIL-holding callers are VmapSpace's methods), and
# a thread inside a nogil section (vm_nogil_enter() at its call site) waits
# plainly.  The call site declares its state; the interpreter is not asked.

cdef void lock_wait_gil(vm_lock_t* l, uint64_t t0) noexcept nogil:
    cdef PyThreadState* ts = PyEval_SaveThread()
    vm_lock_wait_since(l, t0)
    PyEval_RestoreThread(ts)


cdef inline void lock_acquire(vm_lock_t* l) noexcept nogil:
    """Take l; a contended wait drops the GIL if the calling thread holds it."""
    cdef uint64_t t0
    if vm_lock_try(l):
        return
    if vm_in_nogil():
        vm_lock_wait(l)
    elif not vm_lock_spin(l, &t0):
        lock_wait_gil(l, t0)        # the spin's time counts in wait_ticks


cdef inline vm_lock_t* node_lock(space_t* s, vnode_t* vn) noexcept nogil:
    return s.global_lock if s.global_lock != NULL else &vn.lock

cdef inline vm_lock_t* lazy_lock(space_t* s, vnode_t* vn) noexcept nogil:
    return s.global_lock if s.global_lock != NULL else &vn.lazy_lock

cdef inline vm_lock_t* pool_lock(space_t* s, vnode_t* vn) noexcept nogil:
    return s.global_lock if s.global_lock != NULL else &vn.pool_lock


cdef void read_lock_wait_gil(vm_rwlock_t* l) noexcept nogil:
    cdef PyThreadState* ts = PyEval_SaveThread()
    vm_read_lock(l)
    PyEval_RestoreThread(ts)


cdef inline void read_lock_acquire(vm_rwlock_t* l) noexcept nogil:
    if vm_read_trylock(l):
        return
    if vm_in_nogil():
        vm_read_lock(l)
    else:
        read_lock_wait_gil(l)


cdef inline void busy_lock(space_t* s, vnode_t* vn) noexcept nogil:
    """Serialise with the other writers of vn (busy.lock); in global mode the
    caller holds the one lock already."""
    if s.mode != LOCK_GLOBAL:
        lock_acquire(&vn.lock)


cdef inline void busy_unlock(space_t* s, vnode_t* vn) noexcept nogil:
    if s.mode != LOCK_GLOBAL:
        vm_unlock(&vn.lock)


cdef inline void busy_change_begin(space_t* s, vnode_t* vn) noexcept nogil:
    """Holding busy_lock, about to change vn's tree: shut out the readers that
    do not take busy.lock ("rwlock": write-lock; "optimistic": make seq odd)."""
    cdef PyThreadState* ts
    if s.mode == LOCK_RWLOCK:
        if not vm_write_lock_rw_begin(&vn.rw):
            if vm_in_nogil():
                vm_write_lock_rw_wait(&vn.rw)
            else:
                ts = PyEval_SaveThread()
                vm_write_lock_rw_wait(&vn.rw)
                PyEval_RestoreThread(ts)
    elif s.mode == LOCK_OPTIMISTIC:
        vm_write_seqbegin(&vn.seq)


cdef inline void busy_change_end(space_t* s, vnode_t* vn) noexcept nogil:
    if s.mode == LOCK_RWLOCK:
        vm_write_unlock_rw(&vn.rw)
    elif s.mode == LOCK_OPTIMISTIC:
        vm_write_seqend(&vn.seq)


cdef enum pause_site_t:
    # Test-only pause points of the writers (vmap_core._testhooks.pause_writer).
    PAUSE_PUBLISH = 1       # alloc: the new area is in its node's tree, the change not yet ended
    PAUSE_UNLINK = 2        # free: the area is out of its node's tree, the change not yet ended


cdef void test_pause_slow(int site) noexcept nogil:
    cdef PyThreadState* ts
    if not vm_pause_claim(site):
        return
    if vm_in_nogil():
        vm_pause_wait()
    else:
        ts = PyEval_SaveThread()
        vm_pause_wait()
        PyEval_RestoreThread(ts)


cdef inline void test_pause(int site) noexcept nogil:
    """Wait here if a test armed this site (see _locks.h, vm_pause_site)."""
    if vm_pause_armed(site):
        test_pause_slow(site)

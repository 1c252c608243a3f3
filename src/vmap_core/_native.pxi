# Native loops that run on several threads at once with the GIL released:
# the usercopy experiment's workers and churn writer, and the concurrency
# stress used by the thread tests and the ThreadSanitizer run.  Each runs on
# a Python thread that dropped the GIL, so its thread is as native as a
# pthread's; its state sits in its own 64-byte aligned slot.

from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, nanosleep

cdef extern from "_locks.h" nogil:
    int vm_load_int(const int* p)
    void vm_store_int(int* p, int v)

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "_locks.h" nogil:
    void vm_cpu_relax()


cdef inline uint64_t xorshift64(uint64_t* state) noexcept nogil:
    cdef uint64_t x = state[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    state[0] = x
    return x


cdef inline uint64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef enum uc_check_t:
    UC_NOCHECK = 0      # hardened usercopy off: no lookup
    UC_UNLOCKED = 1     # the lookup with no lock (the floor of its own work)
    UC_LOCKED = 2       # check_heap_object() through the space's lock mode


ctypedef struct uc_shared_t:
    int go              # set once every worker is running
    int stop            # set when the cell's time is up
    int _pad[14]

ctypedef struct uc_worker_t:
    space_t* space
    uc_check_t check
    const uint64_t* starts      # buffer areas
    char** mem                  # the memory behind each buffer
    size_t nbuf
    uint64_t buffer_size
    size_t copy_size
    uint64_t work_iters
    uc_shared_t* shared
    uint64_t rng
    uint64_t requests
    uint64_t failures           # checks that failed: a bug, must stay 0
    unsigned lookups            # checked copies per request (0 counts as 1)
    char _pad[28]


cdef uint64_t spin_work(uint64_t iters, uint64_t seed) noexcept nogil:
    """CPU work that the compiler cannot drop: a dependent LCG chain."""
    cdef uint64_t i
    for i in range(iters):
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL
    return seed


cdef void uc_worker_loop(uc_worker_t* w) noexcept nogil:
    """One copier: a request is `lookups` times (pick a buffer, check the copy
    (check_heap_object), copy), then the request's other CPU work."""
    cdef char src[4096]
    cdef uint64_t r = 0, off, addr, st, la, sink = 0
    cdef size_t i, j
    cdef size_t chunk
    cdef unsigned k, lookups = w.lookups if w.lookups else 1
    cdef bint ok
    cdef uint64_t span = w.buffer_size - w.copy_size + 1
    memset(src, 0x5a, sizeof(src))
    while not vm_load_int(&w.shared.go):
        sched_yield()
    while not vm_load_int(&w.shared.stop):
        for j in range(64):
            for k in range(lookups):
                r = xorshift64(&w.rng)
                i = r % w.nbuf
                off = (r >> 24) % span
                addr = w.starts[i] + off
                if w.check == UC_LOCKED:
                    ok = space_find(w.space, addr, &st, &la) and w.copy_size - 1 <= la - addr
                    if not ok:
                        w.failures += 1
                elif w.check == UC_UNLOCKED:
                    ok = (space_find_unlocked(w.space, addr, &st, &la)
                          and w.copy_size - 1 <= la - addr)
                    if not ok:
                        w.failures += 1
                # copy_from_user into the buffer, in page-sized pieces of src
                chunk = 0
                while chunk < w.copy_size:
                    memcpy(w.mem[i] + off + chunk, src,
                           min(<size_t>sizeof(src), w.copy_size - chunk))
                    chunk += sizeof(src)
            if w.work_iters:
                sink += spin_work(w.work_iters, r)
            w.requests += 1
    w.rng ^= sink & 1     # keep the work observable


cdef void uc_churn_loop(space_t* s, uc_shared_t* shared, uint64_t period_ns,
                        uint64_t* ops) noexcept nogil:
    """The background writer: vmalloc/vfree a short-lived area every period."""
    cdef timespec ts
    cdef uint64_t addr, st, la
    ts.tv_sec = period_ns // 1000000000ULL
    ts.tv_nsec = period_ns % 1000000000ULL
    while not vm_load_int(&shared.stop):
        if space_alloc(s, 2 * s.page_size - 1, s.page_size, s.start, s.last, 0, &addr) == ALLOC_OK:
            space_free(s, addr, &st, &la)
            ops[0] += 1
        if period_ns:
            nanosleep(&ts, NULL)


ctypedef struct stress_worker_t:
    space_t* space
    uint64_t rng
    uint64_t ops
    uint64_t* owned             # areas this worker allocated and still holds
    uint64_t* owned_last
    size_t nr_owned
    size_t cap_owned
    uint64_t allocs
    uint64_t frees
    uint64_t finds
    uint64_t errors             # an owned area not found, or a free refused
    const int* stop             # set when the run is interrupted
    char _pad[32]


cdef void stress_loop(stress_worker_t* w) noexcept nogil:
    """Random alloc / free / lazy free and purge / find on a shared space;
    every area a worker owns must stay findable with its own bounds until the
    worker frees it."""
    cdef uint64_t k, k2, r, addr, st, la, szm1, align, nr_lazy
    cdef size_t i
    cdef int rc
    cdef bint over = False
    cdef space_t* s = w.space
    # Pages in the range, less one: a range of 2**64 one-byte pages has 2**64.
    cdef uint64_t range_pm1 = (s.last - s.start) // s.page_size
    for k in range(w.ops):
        if vm_load_int(w.stop):
            return
        r = xorshift64(&w.rng)
        if r % 8 < 3 and w.nr_owned < w.cap_owned:
            szm1 = (1 + (r >> 8) % 8) * s.page_size - 1
            align = s.page_size << ((r >> 16) % 3)
            if space_alloc(s, szm1, align, s.start, s.last, (r >> 20) % (s.nr_nodes + 1), &addr) == ALLOC_OK:
                w.owned[w.nr_owned] = addr
                w.owned_last[w.nr_owned] = addr + szm1
                w.nr_owned += 1
                w.allocs += 1
        elif r % 8 < 5 and w.nr_owned:
            i = (r >> 8) % w.nr_owned
            if (r >> 4) & 1:
                rc = space_free_lazy(s, w.owned[i], &st, &la, &over, &nr_lazy)
                if over or (r >> 5) % 64 == 0:
                    space_purge(s, (r >> 11) & 1, &st, &la)
                    la = w.owned_last[i]
            else:
                rc = space_free(s, w.owned[i], &st, &la)
            if rc != UNLINK_OK or la != w.owned_last[i]:
                w.errors += 1
            w.nr_owned -= 1
            w.owned[i] = w.owned[w.nr_owned]
            w.owned_last[i] = w.owned_last[w.nr_owned]
            w.frees += 1
        elif r % 8 < 7 and w.nr_owned:
            i = (r >> 8) % w.nr_owned
            addr = w.owned[i] + (r >> 40) % (w.owned_last[i] - w.owned[i] + 1)
            if not space_find(s, addr, &st, &la) or st != w.owned[i] or la != w.owned_last[i]:
                w.errors += 1
            w.finds += 1
        else:
            k2 = r >> 8 if range_pm1 == UINT64_MAX else (r >> 8) % (range_pm1 + 1)
            addr = s.start + k2 * s.page_size
            space_find(s, addr, &st, &la)
            w.finds += 1


cdef uint64_t _race_counter = 0
cdef uint64_t _race_arrived = 0

cdef void race_loop(uint64_t n) noexcept nogil:
    global _race_counter
    cdef uint64_t i
    # Meet with relaxed atomics only, which order nothing, then race.
    vm_atomic_inc(&_race_arrived)
    while vm_load_u64(&_race_arrived) % 2:
        vm_cpu_relax()
    for i in range(n):
        _race_counter += 1          # deliberately unsynchronised


cdef object _race_selftest(uint64_t n):
    """Test-only (vmap_core._testhooks): two native threads race on one plain word, so a
    ThreadSanitizer build can be shown to report a data race."""
    def run():
        with nogil:
            vm_nogil_enter()
            race_loop(n)
            vm_nogil_exit()
    pool = []
    for _ in range(2):
        pool.append(threading.Thread(target=run))
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return _race_counter


cdef object _leak_selftest(size_t nbytes):
    """Test-only (vmap_core._testhooks): lose one malloc'ed block, so a LeakSanitizer build can be
    shown to report a leak."""
    cdef void* p = malloc(nbytes)
    if p == NULL:
        raise MemoryError()
    memset(p, 1, nbytes)
    return <uintptr_t>p != 0


# -- additions for the anchors' experiments (usercopy --compare seed) ----------

cdef void uc_churn_lazy_loop(space_t* s, uc_shared_t* shared, uint64_t period_ns,
                             uint64_t cpu, uint64_t* ops, uint64_t* purges) noexcept nogil:
    """The background writer as vmalloc()/vfree() do it: alloc_vmap_area()
    tries the pool of its CPU's node first, vfree() frees lazily
    (free_vmap_area_noflush()), and past lazy_max_pages a drain runs unless
    one is already running (schedule_work() of drain_vmap_work: a pending
    work is not queued twice)."""
    cdef timespec ts
    cdef uint64_t addr = 0, st, la, nr_lazy, fs, fl
    cdef uint64_t szm1 = 2 * s.page_size - 1        # one page and its guard page
    cdef uint64_t tag
    cdef bint over = False
    cdef bint rotated = False       # a miss that rotated the pool: nothing to undo here
    cdef alloc_status_t rc
    ts.tv_sec = period_ns // 1000000000ULL
    ts.tv_nsec = period_ns % 1000000000ULL
    while not vm_load_int(&shared.stop):
        rc = ALLOC_NOSPACE
        tag = 0
        if s.nr_nodes > 1:
            tag = cpu % s.nr_nodes
            rc = space_alloc_pooled(s, <unsigned>tag, szm1, s.page_size, &addr, &rotated)
            tag += 1
        if rc != ALLOC_OK:
            rc = space_alloc(s, szm1, s.page_size, s.start, s.last, tag, &addr)
        if rc != ALLOC_OK:
            space_purge(s, True, &fs, &fl)          # the overflow path, then one retry
            purges[0] += 1
            rc = space_alloc(s, szm1, s.page_size, s.start, s.last, tag, &addr)
        if rc == ALLOC_OK:
            space_free_lazy(s, addr, &st, &la, &over, &nr_lazy)
            ops[0] += 1
            if over and vm_lock_try(s.purge_lock):
                space_purge_detach(s, False, &fs, &fl)
                space_purge_reclaim(s, False)
                vm_unlock(s.purge_lock)
                purges[0] += 1
        if period_ns:
            nanosleep(&ts, NULL)


cdef bint uc_count_walk(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last,
                        unsigned* nodes) noexcept nogil:
    """space_find()'s walk (find_vmap_area()), node by node through
    node_find(), counting the nodes it visits: the walk lengths of the
    usercopy cells, measured apart from the timed loop."""
    cdef unsigned i = addr_to_node_id(s, addr)
    cdef unsigned first = i
    cdef bint found = False
    nodes[0] = 0
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    while True:
        nodes[0] += 1
        found = node_find(s, &s.nodes[i], addr, start, last)
        if found:
            break
        i = node_walk_next(s, i)
        if i == first:
            break
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    return found

cdef object _ubsan_selftest(int shift):
    """Test-only (vmap_core._testhooks): shift a 64-bit word by shift bits (64: undefined behaviour),
    so an UndefinedBehaviorSanitizer build can be shown to report it."""
    cdef uint64_t one = 1
    return one << shift

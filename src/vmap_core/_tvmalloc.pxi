# lib/test_vmalloc.c's scenarios in native code: the workers of
# `test-vmalloc` (vmap_core.kernel.scenarios.run_native) run these on native
# threads without the GIL, with no Python object per operation.  Each mirrors
# the Python scenario of the same name (kernel/scenarios.py, the readable
# definition) call for call and draw for draw: the tests run both on the same
# seed and compare what they return and every address they were given.

from libc.stdint cimport uint32_t

cdef enum:
    TV_NR_TESTS = 11                # test_case_array[]
    TV_ALIGN_SHIFT = 6              # align_shift_alloc_test: the one xfail test
    TV_LONG_BUSY_AREAS = 15000      # long_busy_list_alloc_test
    TV_KVFREE_BULK = 507            # kvfree_rcu's bulk page: (PAGE_SIZE - 40) / 8
    TV_THREAD_SIZE_PAGES = 4        # x86-64 THREAD_SIZE (THREAD_SIZE_ORDER 2)
    TV_BITS_PER_LONG = 64

#: run_test_mask bits the native workers run: all but pcpu_alloc_test (bit 7)
#: and vm_map_ram_test (bit 10), whose percpu chunks and vmap blocks are only
#: modelled in Python.
TV_NATIVE_MASK = 0x37f
cdef uint64_t TV_PMD_SIZE = 2 << 20
cdef uint64_t TV_FNV_OFFSET = 0xcbf29ce484222325ULL
cdef uint64_t TV_FNV_PRIME = 0x100000001b3ULL


# -- the kernel's get_random_*() over one splitmix64 stream -------------------
# KernelRandom in kernel/scenarios.py is the same generator in Python.

cdef inline uint64_t kr_next(uint64_t* st) noexcept nogil:
    cdef uint64_t z
    st[0] += 0x9E3779B97F4A7C15ULL
    z = st[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint32_t kr_u32(uint64_t* st) noexcept nogil:
    """get_random_u32()"""
    return <uint32_t>(kr_next(st) >> 32)


cdef inline uint32_t kr_u8(uint64_t* st) noexcept nogil:
    """get_random_u8()"""
    return <uint32_t>(kr_next(st) >> 56)


cdef uint32_t kr_u32_below(uint64_t* st, uint32_t ceil) noexcept nogil:
    """__get_random_u32_below(): multiply and shift, rejecting the biased few."""
    cdef uint64_t mult = <uint64_t>ceil * kr_u32(st)
    cdef uint32_t bound
    if <uint32_t>mult < ceil:
        bound = (<uint32_t>(0 - ceil)) % ceil
        while <uint32_t>mult < bound:
            mult = <uint64_t>ceil * kr_u32(st)
    return <uint32_t>(mult >> 32)


cdef inline uint32_t kr_u32_inclusive(uint64_t* st, uint32_t lo, uint32_t hi) noexcept nogil:
    """get_random_u32_inclusive()"""
    return lo + kr_u32_below(st, hi - lo + 1)


# -- one worker ------------------------------------------------------------------

ctypedef struct tv_test_t:          # struct test_case_data, and what the tests compare
    int passed
    int failed
    int xfailed
    uint64_t usec                   # time of all repeats / test_repeat_count
    uint64_t allocs                 # allocations that returned an area
    uint64_t nulls                  # allocations that returned NULL
    uint64_t hash                   # FNV-1a over the addresses handed out, in order

ctypedef struct tv_worker_t:        # struct test_driver
    space_t* space
    uint64_t rng                    # the worker's get_random_*() stream
    uint64_t cpu                    # the emulated CPU it runs on: pool of node cpu % nr_nodes
    int order[TV_NR_TESTS]          # scenario indices, in the order this worker runs them
    int n_order
    int loop_count                  # test_loop_count
    int repeat_count                # test_repeat_count
    int nr_pages
    bint use_huge
    uint64_t online_cpus            # num_online_cpus() of full_fit_alloc_test
    bint auto_purge
    const int* go                   # prepare_for_test_srcu: released all at once
    const int* stop                 # set on an interrupt: leave at the next loop
    tv_test_t data[TV_NR_TESTS]
    int cur                         # the scenario running (whose data an alloc counts in)
    int nomem                       # a record or a scratch array could not be had
    uint64_t free_errors            # a vfree() the space refused: a bug
    uint64_t start_ns
    uint64_t stop_ns
    char _pad[64]                   # no two workers' hot words share a cache line


cdef inline bint tv_stopped(tv_worker_t* w) noexcept nogil:
    return vm_load_int(w.stop) != 0


cdef uint64_t tv_alloc(tv_worker_t* w, uint64_t size, uint64_t align) noexcept nogil:
    """alloc_vmap_area() over the whole range as VmapSpace.alloc() does it:
    the pool of the worker's CPU's node first (more than one node), then the
    free tree, and when nothing fits a full purge and one retry.  0 is NULL."""
    cdef space_t* s = w.space
    cdef uint64_t szm1 = size - 1
    cdef uint64_t addr = 0, tag = 0, fs, fl
    cdef alloc_status_t rc
    cdef bint rotated = False       # a miss that rotated the pool: nothing to undo here
    cdef tv_test_t* d = &w.data[w.cur]
    if s.nr_nodes > 1:
        tag = w.cpu % s.nr_nodes
        rc = space_alloc_pooled(s, <unsigned>tag, szm1, align, &addr, &rotated)
        if rc == ALLOC_OK:
            d.allocs += 1
            d.hash = (d.hash ^ addr) * TV_FNV_PRIME
            return addr
        tag += 1
    rc = space_alloc(s, szm1, align, s.start, s.last, tag, &addr)
    if (rc == ALLOC_NOSPACE or rc == ALLOC_RANGE) and w.auto_purge:
        space_purge(s, True, &fs, &fl)
        rc = space_alloc(s, szm1, align, s.start, s.last, tag, &addr)
    if rc == ALLOC_OK:
        d.allocs += 1
        d.hash = (d.hash ^ addr) * TV_FNV_PRIME
        return addr
    if rc == ALLOC_NOMEM:
        w.nomem = 1
    d.nulls += 1
    return 0


cdef uint64_t tv_vmalloc_node(tv_worker_t* w, uint64_t size, uint64_t align,
                              bint huge) noexcept nogil:
    """__vmalloc_node_range(): the size in pages (PMD_SIZE units for a huge
    vmalloc of 2 MiB or more, aligned on PMD_SIZE) plus one guard page."""
    cdef uint64_t page = w.space.page_size
    cdef uint64_t shift_size = page
    if huge and size >= TV_PMD_SIZE:
        shift_size = TV_PMD_SIZE
        if align < TV_PMD_SIZE:
            align = TV_PMD_SIZE
    size = (size + page - 1) // page * page
    size = (size + shift_size - 1) // shift_size * shift_size + page
    return tv_alloc(w, size, align)


cdef inline uint64_t tv_vmalloc(tv_worker_t* w, uint64_t size) noexcept nogil:
    return tv_vmalloc_node(w, size, 1, False)


cdef void tv_vfree(tv_worker_t* w, uint64_t addr) noexcept nogil:
    """vfree(): a lazy free; past lazy_max_pages a purge, unless one is
    running (the kernel queues drain_vmap_work, which is not queued twice)."""
    cdef space_t* s = w.space
    cdef uint64_t st, la, nr_lazy = 0, fs, fl
    cdef bint over = False
    if addr == 0:
        return
    if space_free_lazy(s, addr, &st, &la, &over, &nr_lazy) != UNLINK_OK:
        w.free_errors += 1
        return
    if over and w.auto_purge and vm_lock_try(s.purge_lock):
        space_purge_detach(s, False, &fs, &fl)
        space_purge_reclaim(s, False)
        vm_unlock(s.purge_lock)


cdef inline uint64_t tv_fls(uint64_t x) noexcept nogil:
    cdef uint64_t n = 0
    while x:
        n += 1
        x >>= 1
    return n


# -- the scenarios (0: passed, -1: failed, as the kernel's return) --------------

cdef int tv_fix_size(tv_worker_t* w) noexcept nogil:
    cdef uint64_t size = <uint64_t>(w.nr_pages if w.nr_pages > 0 else 1) * w.space.page_size
    cdef uint64_t ptr
    cdef int i
    for i in range(w.loop_count):
        if tv_stopped(w):
            return -1
        ptr = tv_vmalloc_node(w, size, 1, w.use_huge)
        if ptr == 0:
            return -1
        tv_vfree(w, ptr)
    return 0


cdef int tv_full_fit(tv_worker_t* w) noexcept nogil:
    cdef uint64_t page = w.space.page_size
    cdef uint64_t junk_length = tv_fls(w.online_cpus) * ((32 << 20) // page)
    cdef uint64_t ptr, junk, tmp
    cdef uint64_t* ptrs
    cdef uint64_t* junk_ptrs
    cdef uint64_t i
    cdef int rv = 0, k
    ptr = tv_vmalloc(w, 8 * junk_length)
    if ptr == 0:
        return -1
    junk = tv_vmalloc(w, 8 * junk_length)
    if junk == 0:
        tv_vfree(w, ptr)
        return -1
    # Zeroed: an interrupt may leave entries unfilled, and vfree(NULL) does nothing.
    ptrs = <uint64_t*>vm_calloc(2 * junk_length, sizeof(uint64_t))
    if ptrs == NULL:
        w.nomem = 1
        tv_vfree(w, ptr)
        tv_vfree(w, junk)
        return -1
    junk_ptrs = ptrs + junk_length
    for i in range(junk_length):
        if tv_stopped(w):
            break
        ptrs[i] = tv_vmalloc(w, page)
        junk_ptrs[i] = tv_vmalloc(w, page)
    for i in range(junk_length):
        tv_vfree(w, junk_ptrs[i])
    for k in range(w.loop_count):
        if tv_stopped(w):
            rv = -1
            break
        tmp = tv_vmalloc(w, page)
        if tmp == 0:
            rv = -1
            break
        tv_vfree(w, tmp)
    for i in range(junk_length):
        tv_vfree(w, ptrs[i])
    tv_vfree(w, ptr)
    tv_vfree(w, junk)
    free(ptrs)
    return rv


cdef int tv_long_busy_list(tv_worker_t* w) noexcept nogil:
    cdef uint64_t page = w.space.page_size
    cdef uint64_t ptr, ptr_1, ptr_2
    cdef uint64_t* busy
    cdef int rv = 0, i
    ptr = tv_vmalloc(w, 8 * TV_LONG_BUSY_AREAS)
    if ptr == 0:
        return -1
    busy = <uint64_t*>vm_malloc(TV_LONG_BUSY_AREAS * sizeof(uint64_t))
    if busy == NULL:
        w.nomem = 1
        tv_vfree(w, ptr)
        return -1
    for i in range(TV_LONG_BUSY_AREAS):
        busy[i] = tv_vmalloc(w, page)
    for i in range(w.loop_count):
        if tv_stopped(w):
            rv = -1
            break
        ptr_1 = tv_vmalloc(w, 100 * page)
        if ptr_1 == 0:
            rv = -1
            break
        ptr_2 = tv_vmalloc(w, page)
        if ptr_2 == 0:
            tv_vfree(w, ptr_1)
            rv = -1
            break
        tv_vfree(w, ptr_1)
        tv_vfree(w, ptr_2)
    for i in range(TV_LONG_BUSY_AREAS):
        tv_vfree(w, busy[i])
    tv_vfree(w, ptr)
    free(busy)
    return rv


cdef int tv_random_size(tv_worker_t* w) noexcept nogil:
    cdef uint64_t p
    cdef int i
    for i in range(w.loop_count):
        if tv_stopped(w):
            return -1
        p = tv_vmalloc(w, kr_u32_inclusive(&w.rng, 1, 100) * w.space.page_size)
        if p == 0:
            return -1
        tv_vfree(w, p)
    return 0


cdef int tv_fix_align(tv_worker_t* w) noexcept nogil:
    cdef uint64_t page = w.space.page_size
    cdef uint64_t align = (TV_THREAD_SIZE_PAGES * page) << 1      # THREAD_ALIGN << 1
    cdef uint64_t ptr
    cdef int i
    for i in range(w.loop_count):
        if tv_stopped(w):
            return -1
        ptr = tv_vmalloc_node(w, 5 * page, align, False)
        if ptr == 0:
            return -1
        tv_vfree(w, ptr)
    return 0


cdef int tv_random_size_align(tv_worker_t* w) noexcept nogil:
    cdef uint32_t rnd
    cdef uint64_t ptr
    cdef int i
    for i in range(w.loop_count):
        if tv_stopped(w):
            return -1
        rnd = kr_u8(&w.rng)
        ptr = tv_vmalloc_node(w, (rnd % 10 + 1) * w.space.page_size, (<uint64_t>1) << (rnd % 23),
                              False)
        if ptr == 0:
            return -1
        tv_vfree(w, ptr)
    return 0


cdef int tv_align_shift(tv_worker_t* w) noexcept nogil:
    cdef uint64_t ptr
    cdef int i
    for i in range(TV_BITS_PER_LONG):
        ptr = tv_vmalloc_node(w, w.space.page_size, (<uint64_t>1) << i, False)
        if ptr == 0:
            return -1
        tv_vfree(w, ptr)
    return 0


cdef int tv_kvfree_rcu(tv_worker_t* w) noexcept nogil:
    """kvfree_rcu_{1,2}_arg_vmalloc_test as the Python model has them: the
    pointers gather in a bulk page, freed in one go when it is full (a grace
    period later) and at the end (rcu_barrier())."""
    cdef uint64_t pending[TV_KVFREE_BULK]
    cdef int n = 0, rv = 0, i, j
    cdef uint64_t p
    for i in range(w.loop_count):
        if tv_stopped(w):
            rv = -1
            break
        p = tv_vmalloc(w, w.space.page_size)
        if p == 0:
            rv = -1
            break
        pending[n] = p
        n += 1
        if n == TV_KVFREE_BULK:
            for j in range(n):
                tv_vfree(w, pending[j])
            n = 0
    for j in range(n):
        tv_vfree(w, pending[j])
    return rv


cdef int tv_run_test(tv_worker_t* w, int index) noexcept nogil:
    if index == 0:
        return tv_fix_size(w)
    if index == 1:
        return tv_full_fit(w)
    if index == 2:
        return tv_long_busy_list(w)
    if index == 3:
        return tv_random_size(w)
    if index == 4:
        return tv_fix_align(w)
    if index == 5:
        return tv_random_size_align(w)
    if index == 6:
        return tv_align_shift(w)
    if index == 8 or index == 9:
        return tv_kvfree_rcu(w)
    return -1                       # not native: the driver never asks


cdef void tv_worker_loop(tv_worker_t* w) noexcept nogil:
    """test_func(): wait for the others, then each selected scenario
    test_repeat_count times, timed, counted as the kernel counts (an xfail
    test that fails is xfailed, one that passes failed)."""
    cdef int k, j, index, ret
    cdef uint64_t t0
    cdef tv_test_t* d
    for k in range(TV_NR_TESTS):
        w.data[k].hash = TV_FNV_OFFSET
    while not vm_load_int(w.go):
        sched_yield()
    w.start_ns = now_ns()
    for k in range(w.n_order):
        index = w.order[k]
        w.cur = index
        d = &w.data[index]
        t0 = now_ns()
        for j in range(w.repeat_count):
            if tv_stopped(w):
                break
            ret = tv_run_test(w, index)
            if ret == 0 and index != TV_ALIGN_SHIFT:
                d.passed += 1
            elif ret != 0 and index == TV_ALIGN_SHIFT:
                d.xfailed += 1
            else:
                d.failed += 1
        d.usec = (now_ns() - t0) // 1000 // <uint64_t>w.repeat_count
    w.stop_ns = now_ns()

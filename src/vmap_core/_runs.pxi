# The Python side of the anchors' native experiments: test_vmalloc's native
# workers (test_vmalloc_native) and the usercopy cell with the seed's options
# and per-lookup counts (usercopy_run), and the lock statistics both report
# (lock_totals).  Every worker runs on a Python thread that dropped the GIL;
# an interrupt stops the workers and joins them before it goes on.


cdef dict _lock_sum(vm_lock_t* l):
    return {"acquisitions": l.acquisitions, "contended": l.contended, "wait_ns": l.wait_ns}


def lock_totals(VmapSpace space not None):
    """The space's lock statistics, summed by kind: ``busy`` (the per-node
    busy locks; v6.8's vmap_area_lock), ``lazy``, ``pool``, ``free``
    (free_vmap_area_lock), ``purge`` (vmap_purge_lock), ``global`` (lock mode
    "global": the one lock), each {acquisitions, contended, wait_ns}; ``rwlock``
    {read_waits, wait_ns}; ``optimistic`` {retries, fallbacks}; and the totals
    ``contended`` and ``wait_ns`` over every lock.  Wait times are counted on
    the contended paths only.  Read it while no thread uses the space."""
    cdef space_t* s = space._s()
    cdef unsigned k
    cdef vnode_t* vn
    kinds = {"busy": [0, 0, 0], "lazy": [0, 0, 0], "pool": [0, 0, 0]}
    rw_waits = rw_ns = retries = fallbacks = 0
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        kinds["busy"][0] += vn.lock.acquisitions
        kinds["busy"][1] += vn.lock.contended
        kinds["busy"][2] += vn.lock.wait_ns
        kinds["lazy"][0] += vn.lazy_lock.acquisitions
        kinds["lazy"][1] += vn.lazy_lock.contended
        kinds["lazy"][2] += vn.lazy_lock.wait_ns
        kinds["pool"][0] += vn.pool_lock.acquisitions
        kinds["pool"][1] += vn.pool_lock.contended
        kinds["pool"][2] += vn.pool_lock.wait_ns
        rw_waits += vn.rw.read_waits
        rw_ns += vn.rw.wait_ns
        retries += vn.read_retries
        fallbacks += vn.read_fallbacks
    out = {name: {"acquisitions": v[0], "contended": v[1], "wait_ns": v[2]}
           for name, v in kinds.items()}
    out["free"] = _lock_sum(&s.locks[0])
    out["global"] = _lock_sum(&s.locks[1])
    out["purge"] = _lock_sum(&s.locks[2])
    out["rwlock"] = {"read_waits": rw_waits, "wait_ns": rw_ns}
    out["optimistic"] = {"retries": retries, "fallbacks": fallbacks}
    out["contended"] = sum(out[n]["contended"] for n in
                           ("busy", "lazy", "pool", "free", "global", "purge")) + rw_waits
    out["wait_ns"] = sum(out[n]["wait_ns"] for n in
                         ("busy", "lazy", "pool", "free", "global", "purge", "rwlock"))
    return out


cdef object _join_polling(list threads):
    """Join with a timeout, again and again: a signal the kernel delivered to a
    worker thread leaves a plain join() blocked, while the main thread checks
    for it (KeyboardInterrupt) each time a timed join returns."""
    for t in threads:
        while t.is_alive():
            t.join(0.05)


cdef object _start_and_join(list pool, int* go, int* stop, double seconds):
    """Start the threads, release them at once (go), then either let them run
    to the end (seconds <= 0) or set stop after ``seconds``; join them all,
    also when interrupted (stop is set first).  Returns the wall time from go."""
    started = []
    try:
        for t in pool:
            t.start()
            started.append(t)
        t0 = time.perf_counter()
        vm_store_int(go, 1)
        if seconds > 0:
            time.sleep(seconds)
            vm_store_int(stop, 1)
        _join_polling(started)
        return time.perf_counter() - t0
    finally:
        vm_store_int(stop, 1)
        vm_store_int(go, 1)
        for t in started:
            t.join()


# -- test_vmalloc --------------------------------------------------------------

cdef class _TestVmallocRun:
    cdef _Workers workers
    cdef uc_shared_t* shared

    def __cinit__(self):
        self.shared = <uc_shared_t*>vm_aligned_calloc(1, sizeof(uc_shared_t))
        if self.shared == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.shared)

    def worker(self, size_t i):
        with nogil:
            tv_worker_loop(&(<tv_worker_t*>self.workers.slots)[i])


TEST_VMALLOC_NATIVE_MASK = TV_NATIVE_MASK


def test_vmalloc_native(VmapSpace space not None, orders, cpus, rng_states, *,
                        int test_loop_count, int test_repeat_count=1, int nr_pages=0,
                        bint use_huge=False, uint64_t online_cpus=1, bint auto_purge=True):
    """do_concurrent_test() of lib/test_vmalloc.c on native threads: worker i
    runs the scenario indices ``orders[i]`` (bits of TEST_VMALLOC_NATIVE_MASK)
    with its get_random_*() stream at ``rng_states[i]`` (KernelRandom.state)
    on emulated CPU ``cpus[i]``; all are released at once.

    Returns {"wall_ns", "workers": [{"start_ns", "stop_ns", "tests": {index:
    {passed, failed, xfailed, usec, allocs, nulls, hash}}}], "free_errors"}.
    MemoryError if a worker ran out of memory, KeyboardInterrupt after the
    workers stopped if interrupted."""
    cdef _TestVmallocRun run = _TestVmallocRun()
    cdef tv_worker_t* w
    cdef Py_ssize_t n = len(orders), i
    cdef int k
    space._s()
    if n < 1 or len(cpus) != n or len(rng_states) != n:
        raise ValueError("orders, cpus and rng_states need one entry per worker (at least one)")
    if test_loop_count < 1 or test_repeat_count < 1:
        raise ValueError("test_loop_count and test_repeat_count must be positive")
    for order in orders:
        if len(order) > TV_NR_TESTS or any(
                not 0 <= x < TV_NR_TESTS or not (TV_NATIVE_MASK >> x) & 1 for x in order):
            raise ValueError(f"scenario indices must be bits of {TV_NATIVE_MASK:#x}: {order!r}")
    run.workers = _Workers(n, sizeof(tv_worker_t))
    for i in range(n):
        w = &(<tv_worker_t*>run.workers.slots)[i]
        w.space = space.sp
        w.rng = <uint64_t>rng_states[i]
        w.cpu = <uint64_t>cpus[i]
        w.n_order = len(orders[i])
        for k in range(w.n_order):
            w.order[k] = orders[i][k]
        w.loop_count = test_loop_count
        w.repeat_count = test_repeat_count
        w.nr_pages = nr_pages
        w.use_huge = use_huge
        w.online_cpus = online_cpus
        w.auto_purge = auto_purge
        w.go = &run.shared.go
        w.stop = &run.shared.stop
    pool = [threading.Thread(target=run.worker, args=(i,), name=f"vmalloc_test/{i}", daemon=True)
            for i in range(n)]
    wall = _start_and_join(pool, &run.shared.go, &run.shared.stop, 0)
    out = {"wall_ns": int(wall * 1e9), "workers": [], "free_errors": 0}
    nomem = False
    for i in range(n):
        w = &(<tv_worker_t*>run.workers.slots)[i]
        nomem = nomem or w.nomem
        out["free_errors"] += w.free_errors
        out["workers"].append({
            "start_ns": w.start_ns, "stop_ns": w.stop_ns,
            "tests": {w.order[k]: {"passed": w.data[w.order[k]].passed,
                                   "failed": w.data[w.order[k]].failed,
                                   "xfailed": w.data[w.order[k]].xfailed,
                                   "usec": w.data[w.order[k]].usec,
                                   "allocs": w.data[w.order[k]].allocs,
                                   "nulls": w.data[w.order[k]].nulls,
                                   "hash": w.data[w.order[k]].hash}
                      for k in range(w.n_order)}})
    if nomem:
        raise MemoryError("test_vmalloc: out of memory for area records or scratch arrays")
    return out


# -- usercopy ------------------------------------------------------------------

cdef class _UsercopyRun:
    cdef _Workers workers
    cdef uc_shared_t* shared
    cdef VmapSpace space, churn_space
    cdef uint64_t* starts
    cdef char** mem
    cdef size_t nbuf
    cdef uint64_t churn_ops, churn_purges

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

    def churn(self, uint64_t period_ns, bint lazy, uint64_t cpu):
        cdef space_t* s = self.churn_space.sp
        with nogil:
            if lazy:
                uc_churn_lazy_loop(s, self.shared, period_ns, cpu, &self.churn_ops,
                                   &self.churn_purges)
            else:
                uc_churn_loop(s, self.shared, period_ns, &self.churn_ops)

    def count_walks(self, uint64_t n, uint64_t seed, uint64_t buffer_size, uint64_t copy_size):
        """Walk lengths over n lookups drawn as the workers draw them:
        (nodes visited, lookups whose area is not in the first node)."""
        cdef space_t* s = self.space.sp
        cdef uint64_t rng = seed, r, addr, st, la, span = buffer_size - copy_size + 1
        cdef uint64_t total = 0, off_first = 0, j
        cdef unsigned nodes
        with nogil:
            for j in range(n):
                r = xorshift64(&rng)
                addr = self.starts[r % self.nbuf] + (r >> 24) % span
                uc_count_walk(s, addr, &st, &la, &nodes)
                total += nodes
                off_first += nodes > 1
        return total, off_first


USERCOPY_CHECK_MODES = ("nocheck", "unlocked")


def usercopy_run(str mode, Py_ssize_t threads, *, Py_ssize_t buffers=1000,
                 uint64_t buffer_size=65536, uint64_t copy_size=1024, double seconds=1.0,
                 uint64_t churn_us=100, uint64_t work_ns=0, nr_nodes=None, kernel=None,
                 unsigned lookups=1, bint lazy_writer=False, lazy_max_pages=None,
                 uint64_t count_lookups=20000):
    """One cell of the usercopy experiment with the seed's options: ``threads``
    native copiers for ``seconds``; each request is ``lookups`` times a
    check_heap_object() lookup (none in "nocheck", an unlocked one in
    "unlocked") and a copy of copy_size bytes into one of ``buffers``
    vzalloc'ed buffers, then ``work_ns`` of other CPU work.  A writer
    allocates and frees an area every churn_us, lazily as vfree() does with
    ``lazy_writer``.  ``kernel`` picks the profile ("6.8": one busy tree, lock
    mode "split"), ``nr_nodes`` and ``lazy_max_pages`` the emulated machine.

    Returns requests, elapsed, per_thread, lookups (checks made), churn_ops,
    churn_purges, locks (lock_totals() of the timed run), and, from a counting
    pass over ``count_lookups`` lookups drawn as the workers draw them after
    the timed run, walk_nodes and walk_off_first (totals) and walk_lookups.
    """
    cdef _UsercopyRun cell
    cdef uc_worker_t* w
    cdef Py_ssize_t i
    cdef uint64_t page = 4096
    cdef uint64_t area = buffer_size + page        # vmalloc adds a guard page
    cdef uint64_t seed0 = 0x9E3779B97F4A7C15ULL
    if mode not in USERCOPY_CHECK_MODES and mode not in _LOCK_MODE_IDS:
        raise ValueError(f"unknown mode {mode!r}")
    if threads < 1 or buffers < 1 or not seconds > 0 or lookups < 1:
        raise ValueError("threads, buffers, seconds and lookups must be positive")
    if buffer_size == 0 or buffer_size % page or copy_size == 0 or copy_size > buffer_size:
        raise ValueError("need buffer_size a positive multiple of 4096 and "
                         "0 < copy_size <= buffer_size")
    profile = _profiles.resolve(kernel)
    lock = mode if mode in _LOCK_MODE_IDS else profile.default_lock
    if not profile.nodes:
        nr_nodes = None
    cell = _UsercopyRun()
    base = 1 << 40
    cell.space = VmapSpace(base, base + 4 * buffers * area + (1 << 30), nr_nodes=nr_nodes,
                           lock=lock, kernel=profile.name, lazy_max_pages=lazy_max_pages)
    # Only the locked modes let the writer touch the tree the readers walk.
    cell.churn_space = cell.space if mode in _LOCK_MODE_IDS else VmapSpace(
        base, base + (1 << 30), nr_nodes=nr_nodes, lock=profile.default_lock,
        kernel=profile.name, lazy_max_pages=lazy_max_pages)
    cell.nbuf = buffers
    cell.starts = <uint64_t*>malloc(buffers * sizeof(uint64_t))
    cell.mem = <char**>calloc(buffers, sizeof(char*))
    if cell.starts == NULL or cell.mem == NULL:
        raise MemoryError()
    for i in range(buffers):
        cell.starts[i] = cell.space.alloc(area)
        cell.mem[i] = <char*>calloc(1, buffer_size)     # vzalloc: zeroed, touched below
        if cell.mem[i] == NULL:
            raise MemoryError(f"usercopy: cannot allocate buffer {i} of {buffer_size} bytes")
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
        w.lookups = lookups
        w.shared = cell.shared
        w.rng = seed0 * (i + 1)
    before = lock_totals(cell.space)
    pool = [threading.Thread(target=cell.worker, args=(i,), daemon=True) for i in range(threads)]
    pool.append(threading.Thread(target=cell.churn, args=(churn_us * 1000, lazy_writer, threads),
                                 daemon=True))
    elapsed = _start_and_join(pool, &cell.shared.go, &cell.shared.stop, seconds)
    locks = _lock_delta(lock_totals(cell.space), before)
    per_thread = [(<uc_worker_t*>cell.workers.slots)[i].requests for i in range(threads)]
    failures = sum((<uc_worker_t*>cell.workers.slots)[i].failures for i in range(threads))
    if failures:
        raise RuntimeError(f"usercopy: {failures} checks failed (a lookup bug)")
    requests = sum(per_thread)
    walk_nodes = walk_off = walked = 0
    if mode != "nocheck" and count_lookups:
        walked = count_lookups
        walk_nodes, walk_off = cell.count_walks(count_lookups, seed0 * (threads + 1),
                                                buffer_size, copy_size)
    return {
        "requests": requests,
        "elapsed": elapsed,
        "per_thread": per_thread,
        "lookups": 0 if mode == "nocheck" else requests * lookups,
        "churn_ops": cell.churn_ops,
        "churn_purges": cell.churn_purges,
        "locks": locks,
        "walk_lookups": walked,
        "walk_nodes": walk_nodes,
        "walk_off_first": walk_off,
        "kernel": profile.name,
        "lock": lock,
        "nr_nodes": cell.space.nr_nodes,
    }


def _lock_delta(after, before):
    """after - before, key by key, through the nested dicts of lock_totals()."""
    if isinstance(after, dict):
        return {k: _lock_delta(v, before[k]) for k, v in after.items()}
    return after - before

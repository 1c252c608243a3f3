# The Python side of the anchors' native experiments: test_vmalloc's native
# workers (test_vmalloc_native) and the usercopy cell with the seed's options
# and per-lookup counts (usercopy_run), and the lock statistics both report
# (lock_totals).  Every worker runs on a Python thread that dropped the GIL
# (vm_nogil_enter/exit around its calls into the core); an interrupt stops
# the workers and waits for each to leave the core (_join_all) before it goes
# on.  Arguments are exact ints in stated ranges (_bounded), C memory comes
# from vm_malloc & co (fault injection reaches it), and no Python object is
# built while a space lock is held.


cdef dict _lock_sum(vm_lock_t* l):
    return {"acquisitions": l.acquisitions, "contended": l.contended, "wait_ns": vm_wait_ns(l.wait_ticks)}


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
    rw_waits = rw_ticks = retries = fallbacks = 0
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        kinds["busy"][0] += vn.lock.acquisitions
        kinds["busy"][1] += vn.lock.contended
        kinds["busy"][2] += vn.lock.wait_ticks
        kinds["lazy"][0] += vn.lazy_lock.acquisitions
        kinds["lazy"][1] += vn.lazy_lock.contended
        kinds["lazy"][2] += vn.lazy_lock.wait_ticks
        kinds["pool"][0] += vn.pool_lock.acquisitions
        kinds["pool"][1] += vn.pool_lock.contended
        kinds["pool"][2] += vn.pool_lock.wait_ticks
        rw_waits += vn.rw.read_waits
        rw_ticks += vn.rw.wait_ticks
        retries += vn.read_retries
        fallbacks += vn.read_fallbacks
    out = {}
    for name, v in kinds.items():
        out[name] = {"acquisitions": v[0], "contended": v[1], "wait_ns": vm_wait_ns(v[2])}
    out["free"] = _lock_sum(&s.locks[0])
    out["global"] = _lock_sum(&s.locks[1])
    out["purge"] = _lock_sum(&s.locks[2])
    out["rwlock"] = {"read_waits": rw_waits, "wait_ns": vm_wait_ns(rw_ticks)}
    out["optimistic"] = {"retries": retries, "fallbacks": fallbacks}
    contended = rw_waits
    wait_ns = out["rwlock"]["wait_ns"]
    for name in ("busy", "lazy", "pool", "free", "global", "purge"):
        contended += out[name]["contended"]
        wait_ns += out[name]["wait_ns"]
    out["contended"] = contended
    out["wait_ns"] = wait_ns
    return out


cdef object _start_and_join(list pool, int* go, int* stop, uint64_t* finished,
                            double seconds):
    """Start the threads, release them at once (go), then either let them run
    to the end (seconds <= 0) or set stop after ``seconds``; wait until each
    has left the core (_join_all: also when interrupted, stop set first).
    Returns the wall time from go."""
    started = []
    try:
        for t in pool:
            t.start()
            started.append(t)
        t0 = time.perf_counter()
        vm_store_int(go, 1)
        if seconds > 0:
            # In slices, checking for signals: one delivered to a worker
            # thread interrupts no sleep here (see _join_all).
            end = t0 + seconds
            left = seconds
            while left > 0:
                PyErr_CheckSignals()
                time.sleep(min(left, 0.02))
                left = end - time.perf_counter()
            vm_store_int(stop, 1)
    except BaseException:
        vm_store_int(stop, 1)
        raise
    finally:
        vm_store_int(go, 1)         # a worker still waiting for go sees stop next
        _join_all(started, stop, finished)
    return time.perf_counter() - t0


# -- test_vmalloc --------------------------------------------------------------

cdef class _TestVmallocRun:
    cdef _Workers workers
    cdef VmapSpace space        # kept alive while the workers use it
    cdef uc_shared_t* shared
    cdef uint64_t finished      # threads that have left worker()

    def __cinit__(self):
        self.shared = <uc_shared_t*>vm_aligned_calloc(1, sizeof(uc_shared_t))
        if self.shared == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.shared)

    def worker(self, size_t i):
        cdef tv_worker_t* w
        try:
            w = <tv_worker_t*>_worker_slot(self.workers, i, sizeof(tv_worker_t))
            with nogil:
                vm_nogil_enter()
                tv_worker_loop(w)
                vm_nogil_exit()
        finally:
            vm_atomic_inc(&self.finished)


TEST_VMALLOC_NATIVE_MASK = TV_NATIVE_MASK
TEST_VMALLOC_MAX_CPUS = 8192
"""The most online CPUs test_vmalloc_native() emulates (the kernel's largest NR_CPUS)."""
_INT_MAX = (1 << 31) - 1


def test_vmalloc_native(VmapSpace space not None, orders, cpus, rng_states, *,
                        test_loop_count, test_repeat_count=1, nr_pages=0,
                        use_huge=False, online_cpus=1, auto_purge=True):
    """do_concurrent_test() of lib/test_vmalloc.c on native threads: worker i
    runs the scenario indices ``orders[i]`` (bits of TEST_VMALLOC_NATIVE_MASK)
    with its get_random_*() stream at ``rng_states[i]`` (KernelRandom.state)
    on emulated CPU ``cpus[i]``; all are released at once.

    Returns {"wall_ns", "workers": [{"start_ns", "stop_ns", "tests": {index:
    {passed, failed, xfailed, usec, allocs, nulls, hash}}}], "free_errors"}.
    Arguments are integers (TypeError otherwise) in range, else ValueError:
    1..MAX_NATIVE_THREADS workers, cpus and rng_states in [0, 2**64),
    test_loop_count and test_repeat_count in [1, 2**31), nr_pages in
    [0, 2**31) (and at most 2**63 bytes), online_cpus in
    [1, TEST_VMALLOC_MAX_CPUS].  MemoryError if a worker ran out of memory
    (every area a scenario got is freed again, lazily, as the scenario
    does); interrupted, the workers stop and are joined before
    KeyboardInterrupt goes on."""
    cdef _TestVmallocRun run = _TestVmallocRun()
    cdef tv_worker_t* w
    cdef tv_test_t* d
    cdef Py_ssize_t n, i, k
    cdef space_t* s = space._s()
    if isinstance(orders, (str, bytes)) or isinstance(cpus, (str, bytes)):
        raise TypeError("orders and cpus must be sequences")
    orders = list(orders)
    cpus = list(cpus)
    rng_states = list(rng_states)
    n = len(orders)
    if n < 1 or len(cpus) != n or len(rng_states) != n:
        raise ValueError("orders, cpus and rng_states need one entry per worker (at least one)")
    _bounded(n, "the number of workers", 1, MAX_NATIVE_THREADS)
    loops = _bounded(test_loop_count, "test_loop_count", 1, _INT_MAX)
    repeats = _bounded(test_repeat_count, "test_repeat_count", 1, _INT_MAX)
    pages = _bounded(nr_pages, "nr_pages", 0, _INT_MAX)
    if (pages if pages else 1) * s.page_size > (1 << 63):     # no wrap in the size arithmetic
        raise ValueError(f"nr_pages={pages} pages of {s.page_size} bytes exceed 2**63 bytes")
    online = _bounded(online_cpus, "online_cpus", 1, TEST_VMALLOC_MAX_CPUS)
    checked = []
    for i in range(n):
        order = list(orders[i])
        if len(order) > TV_NR_TESTS:
            raise ValueError(f"scenario indices must be bits of {TV_NATIVE_MASK:#x}: {order!r}")
        for k in range(len(order)):
            order[k] = _bounded(order[k], "a scenario index", 0, TV_NR_TESTS - 1)
            if not (TV_NATIVE_MASK >> <int>order[k]) & 1:
                raise ValueError(f"scenario indices must be bits of {TV_NATIVE_MASK:#x}: {order!r}")
        checked.append((order, _bounded(cpus[i], "cpu", 0, (1 << 64) - 1),
                        _bounded(rng_states[i], "rng_state", 0, (1 << 64) - 1)))
    run.space = space
    run.workers = _Workers(n, sizeof(tv_worker_t))
    for i in range(n):
        order, cpu, rng = checked[i]
        w = &(<tv_worker_t*>run.workers.slots)[i]
        w.space = s
        w.rng = <uint64_t>rng
        w.cpu = <uint64_t>cpu
        w.n_order = len(order)
        for k in range(w.n_order):
            w.order[k] = <int>order[k]
        w.loop_count = <int>loops
        w.repeat_count = <int>repeats
        w.nr_pages = <int>pages
        w.use_huge = bool(use_huge)
        w.online_cpus = <uint64_t>online
        w.auto_purge = bool(auto_purge)
        w.go = &run.shared.go
        w.stop = &run.shared.stop
    pool = []
    for i in range(n):
        pool.append(threading.Thread(target=run.worker, args=(i,), name=f"vmalloc_test/{i}",
                                     daemon=True))
    wall = _start_and_join(pool, &run.shared.go, &run.shared.stop, &run.finished, 0)
    out = {"wall_ns": int(wall * 1e9), "workers": [], "free_errors": 0}
    nomem = False
    for i in range(n):
        w = &(<tv_worker_t*>run.workers.slots)[i]
        nomem = nomem or w.nomem
        out["free_errors"] += w.free_errors
        tests = {}
        for k in range(w.n_order):
            d = &w.data[w.order[k]]
            tests[w.order[k]] = {"passed": d.passed, "failed": d.failed, "xfailed": d.xfailed,
                                 "usec": d.usec, "allocs": d.allocs, "nulls": d.nulls,
                                 "hash": d.hash}
        out["workers"].append({"start_ns": w.start_ns, "stop_ns": w.stop_ns, "tests": tests})
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
    cdef uint64_t finished      # threads that have left worker() / churn()

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
        cdef uc_worker_t* w
        try:
            w = <uc_worker_t*>_worker_slot(self.workers, i, sizeof(uc_worker_t))
            with nogil:
                vm_nogil_enter()
                uc_worker_loop(w)
                vm_nogil_exit()
        finally:
            vm_atomic_inc(&self.finished)

    def churn(self, uint64_t period_ns, bint lazy, uint64_t cpu):
        cdef space_t* s
        try:
            if self.churn_space is None:
                raise ValueError("no space to churn")
            s = self.churn_space._s()
            with nogil:
                vm_nogil_enter()
                if lazy:
                    uc_churn_lazy_loop(s, self.shared, period_ns, cpu, &self.churn_ops,
                                       &self.churn_purges)
                else:
                    uc_churn_loop(s, self.shared, period_ns, &self.churn_ops)
                vm_nogil_exit()
        finally:
            vm_atomic_inc(&self.finished)

    def count_walks(self, uint64_t n, uint64_t seed, uint64_t buffer_size, uint64_t copy_size):
        """Walk lengths over n lookups drawn as the workers draw them:
        (nodes visited, lookups whose area is not in the first node)."""
        cdef space_t* s
        cdef uint64_t rng = seed, r, addr, st, la, span = buffer_size - copy_size + 1
        cdef uint64_t total = 0, off_first = 0, j
        cdef unsigned nodes
        if self.space is None or self.nbuf == 0 or copy_size == 0 or copy_size > buffer_size:
            raise ValueError("no buffers to walk to")
        s = self.space._s()
        with nogil:
            vm_nogil_enter()
            for j in range(n):
                r = xorshift64(&rng)
                addr = self.starts[r % self.nbuf] + (r >> 24) % span
                uc_count_walk(s, addr, &st, &la, &nodes)
                total += nodes
                off_first += nodes > 1
            vm_nogil_exit()
        return total, off_first


USERCOPY_CHECK_MODES = ("nocheck", "unlocked")
MAX_COUNT_LOOKUPS = 10 ** 7
"""The most lookups usercopy_run()'s counting pass makes (on the calling thread, about
a second at most, uninterruptible)."""


def usercopy_run(mode, threads, *, buffers=1000, buffer_size=65536, copy_size=1024,
                 seconds=1.0, churn_us=100, work_ns=0, nr_nodes=None, kernel=None,
                 lookups=1, lazy_writer=False, lazy_max_pages=None, count_lookups=20000):
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

    mode: "nocheck", "unlocked", or a lock mode of VmapSpace, else
    ValueError.  The numbers are integers (TypeError otherwise; ``seconds``
    any real number) in range, else ValueError: threads
    1..MAX_NATIVE_THREADS, buffers 1..2**20, buffer_size a multiple of 4096
    up to 2**30, copy_size 1..buffer_size, seconds finite in (0, 86400],
    churn_us and work_ns up to 10**9, lookups 1..10**6, count_lookups up to
    MAX_COUNT_LOOKUPS.  Interrupted (KeyboardInterrupt), it stops its
    threads and waits for each to leave the core before the exception goes
    on.
    """
    cdef _UsercopyRun cell
    cdef uc_worker_t* w
    cdef Py_ssize_t i, nthreads, nbuffers
    cdef uint64_t page = 4096
    cdef uint64_t area, bsize, csize, churn_ns, nwork, ncount
    cdef unsigned nlookups
    cdef uint64_t seed0 = 0x9E3779B97F4A7C15ULL
    if not isinstance(mode, str) or (mode not in USERCOPY_CHECK_MODES
                                     and mode not in _LOCK_MODE_IDS):
        raise ValueError(f"unknown mode {mode!r}")
    nthreads = _bounded(threads, "threads", 1, MAX_NATIVE_THREADS)
    nbuffers = _bounded(buffers, "buffers", 1, 1 << 20)
    bsize = _bounded(buffer_size, "buffer_size", page, 1 << 30)
    csize = _bounded(copy_size, "copy_size", 1, bsize)
    churn_ns = _bounded(churn_us, "churn_us", 0, 10 ** 9) * 1000
    nwork = _bounded(work_ns, "work_ns", 0, 10 ** 9)
    nlookups = _bounded(lookups, "lookups", 1, 10 ** 6)
    ncount = _bounded(count_lookups, "count_lookups", 0, MAX_COUNT_LOOKUPS)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    if not (math.isfinite(seconds) and 0 < seconds <= 86400):
        raise ValueError(f"seconds must be in (0, 86400], not {seconds}")
    if bsize % page:
        raise ValueError("buffer_size must be a multiple of 4096")
    area = bsize + page        # vmalloc adds a guard page
    profile = _profiles.resolve(kernel)
    lock = mode if mode in _LOCK_MODE_IDS else profile.default_lock
    if not profile.nodes:
        nr_nodes = None
    cell = _UsercopyRun()
    base = 1 << 40
    cell.space = VmapSpace(base, base + 4 * nbuffers * area + (1 << 30), nr_nodes=nr_nodes,
                           lock=lock, kernel=profile.name, lazy_max_pages=lazy_max_pages)
    # Only the locked modes let the writer touch the tree the readers walk.
    cell.churn_space = cell.space if mode in _LOCK_MODE_IDS else VmapSpace(
        base, base + (1 << 30), nr_nodes=nr_nodes, lock=profile.default_lock,
        kernel=profile.name, lazy_max_pages=lazy_max_pages)
    cell.starts = <uint64_t*>vm_malloc(nbuffers * sizeof(uint64_t))
    cell.mem = <char**>vm_calloc(nbuffers, sizeof(char*))
    if cell.starts == NULL or cell.mem == NULL:
        raise MemoryError()
    cell.nbuf = nbuffers
    for i in range(nbuffers):
        cell.starts[i] = cell.space.alloc(area)
        cell.mem[i] = <char*>vm_calloc(1, bsize)     # vzalloc: zeroed, touched below
        if cell.mem[i] == NULL:
            raise MemoryError(f"usercopy: cannot allocate buffer {i} of {bsize} bytes")
        memset(cell.mem[i], 0, bsize)
    cell.workers = _Workers(nthreads, sizeof(uc_worker_t))
    iters = _calibrate_work(nwork)
    for i in range(nthreads):
        w = &(<uc_worker_t*>cell.workers.slots)[i]
        w.space = cell.space.sp
        w.check = _CHECK_MODES.get(mode, UC_LOCKED)
        w.starts = cell.starts
        w.mem = cell.mem
        w.nbuf = nbuffers
        w.buffer_size = bsize
        w.copy_size = csize
        w.work_iters = iters
        w.lookups = nlookups
        w.shared = cell.shared
        w.rng = seed0 * (i + 1)
    before = lock_totals(cell.space)
    pool = []
    for i in range(nthreads):
        pool.append(threading.Thread(target=cell.worker, args=(i,), daemon=True))
    pool.append(threading.Thread(target=cell.churn, args=(churn_ns, bool(lazy_writer), nthreads),
                                 daemon=True))
    elapsed = _start_and_join(pool, &cell.shared.go, &cell.shared.stop, &cell.finished,
                              seconds)
    locks = _lock_delta(lock_totals(cell.space), before)
    per_thread = []
    failures = 0
    for i in range(nthreads):
        per_thread.append((<uc_worker_t*>cell.workers.slots)[i].requests)
        failures += (<uc_worker_t*>cell.workers.slots)[i].failures
    if failures:
        raise RuntimeError(f"usercopy: {failures} checks failed (a lookup bug)")
    requests = sum(per_thread)
    walk_nodes = walk_off = walked = 0
    if mode != "nocheck" and ncount:
        walked = ncount
        walk_nodes, walk_off = cell.count_walks(ncount, seed0 * (nthreads + 1), bsize, csize)
    return {
        "requests": requests,
        "elapsed": elapsed,
        "per_thread": per_thread,
        "lookups": 0 if mode == "nocheck" else requests * nlookups,
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
        out = {}
        for k, v in after.items():
            out[k] = _lock_delta(v, before[k])
        return out
    return after - before


# -- the machine: how long a cache line takes to move between two CPUs ----------

ctypedef struct handoff_t:
    int turn            # the thread whose turn it is: 0 or 1
    int _pad[15]


cdef void handoff_loop(handoff_t* h, int me, uint64_t rounds) noexcept nogil:
    """One side of line_transfer_ns(): wait for my turn (a plain load spin,
    no pause, so that the measure is the line's trip), then pass it on.  A
    yield after a long spin keeps a machine with one CPU moving."""
    cdef uint64_t i
    cdef unsigned spins
    for i in range(rounds):
        spins = 0
        while vm_load_int(&h.turn) != me:
            spins += 1
            if spins >= 1 << 16:
                spins = 0
                sched_yield()
        vm_store_int(&h.turn, 1 - me)


cdef class _Handoff:
    cdef handoff_t* h

    def __cinit__(self):
        self.h = <handoff_t*>vm_aligned_calloc(1, sizeof(handoff_t))
        if self.h == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.h)

    def side(self, int me, uint64_t rounds):
        with nogil:
            handoff_loop(self.h, me, rounds)


def line_transfer_ns(rounds=100_000):
    """The mean time, in ns, for one 64-byte cache line to go from one thread's
    CPU to another's and be read there: two threads without the GIL pass a
    turn back and forth through one word, ``rounds`` times each way (half a
    round trip, as a ping-pong measures it).  This is what a spinlock taken
    last by another CPU costs before its holder can even start, so it sets
    how much a per-node lock loses when two CPUs share a node.  It varies
    with where the two threads run: on one core's two hyperthreads, two
    cores of one cache, or two sockets (or, in a VM, wherever the host puts
    the virtual CPUs at that moment).  Needs two CPUs to mean anything; on a
    GIL build it still runs without the GIL.

    Raises:
        TypeError: rounds is not an integer.
        ValueError: rounds is not in [1, 10**9].
    """
    cdef uint64_t n = _bounded(rounds, "rounds", 1, 10**9)
    cdef _Handoff ho = _Handoff()
    t = threading.Thread(target=ho.side, args=(1, n), daemon=True)
    t.start()
    t0 = time.perf_counter()
    ho.side(0, n)
    elapsed = time.perf_counter() - t0
    t.join()
    return elapsed * 1e9 / (2 * n)

/*
 * The only C in vmap_core: atomics and locks that Cython cannot spell.
 *
 * vm_lock_t is a spinlock (the kernel's spinlock_t in spirit, without the
 * queueing): one exchange to take it, then test-and-test-and-set while it
 * is held, with a CPU pause, and after a bounded spin a yield of the CPU so
 * that an oversubscribed machine cannot livelock.  Each lock
 * fills its own 64-byte cache line; the statistics beside the lock word are
 * written only by the holder.
 *
 * vm_load_* / vm_store_* are relaxed atomic accesses (READ_ONCE/WRITE_ONCE):
 * plain moves on x86-64 and arm64, but they tell the compiler and
 * ThreadSanitizer that lock-free readers may look at these words.
 */
#ifndef VMAP_CORE_LOCKS_H
#define VMAP_CORE_LOCKS_H

#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define vm_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define vm_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define vm_cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define VM_SPIN_BEFORE_YIELD 256

static inline uint64_t vm_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The wait-time clock of the lock statistics, read only on contended slow
 * paths, twice per contended acquisition.  clock_gettime() costs about 25 ns
 * in a VM, half of a short spin's whole wait between two threads, so where
 * the CPU has an invariant TSC (x86-64: CPUID 0x80000007 EDX bit 8) the
 * statistics count TSC ticks (rdtsc, about 10 ns) instead, converted to ns
 * when read (vm_wait_ns(): the TSC's rate measured once against
 * CLOCK_MONOTONIC).  Elsewhere a tick is a nanosecond of clock_gettime().
 */
#if defined(__x86_64__)
static int vm_tsc_usable;              /* fixed by vm_wait_clock_init(), before any lock is used */
static uint64_t vm_tsc0, vm_ns0;       /* a (TSC, CLOCK_MONOTONIC) pair read at init */
static uint64_t vm_tsc_scale_bits;     /* ns per tick, a double's bits; 0 until measured */

/* A (TSC, ns) pair read close together: retried if something (an interrupt,
 * a preemption) came between the two clock reads around the rdtsc. */
static void vm_tsc_pair(uint64_t *tsc, uint64_t *ns)
{
    for (int i = 0; i < 100; i++) {
        uint64_t a = vm_clock_ns();
        *tsc = __rdtsc();
        uint64_t b = vm_clock_ns();
        *ns = a + (b - a) / 2;
        if (b - a < 2000)
            return;
    }
}
#endif

static void vm_wait_clock_init(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(0x80000007, &a, &b, &c, &d) && (d & (1u << 8))) {
        vm_tsc_pair(&vm_tsc0, &vm_ns0);
        vm_tsc_usable = 1;
    }
#endif
}

static inline uint64_t vm_wait_clock(void)
{
#if defined(__x86_64__)
    if (vm_tsc_usable)
        return __rdtsc();
#endif
    return vm_clock_ns();
}

/* Ticks since t0; 0 if the TSCs of two CPUs disagree the other way. */
static inline uint64_t vm_wait_since(uint64_t t0)
{
    uint64_t t = vm_wait_clock();
    return t > t0 ? t - t0 : 0;
}

/* Wait-clock ticks as ns.  The first call measures the TSC's rate over at
 * least 20 ms since init (it sleeps out the rest, once, if it comes sooner). */
static uint64_t vm_wait_ns(uint64_t ticks)
{
#if defined(__x86_64__)
    if (vm_tsc_usable) {
        uint64_t bits = __atomic_load_n(&vm_tsc_scale_bits, __ATOMIC_ACQUIRE);
        double scale;
        if (!bits) {
            uint64_t tsc, ns;
            vm_tsc_pair(&tsc, &ns);
            if (ns - vm_ns0 < 20000000) {
                struct timespec rest = {0, (long)(20000000 - (ns - vm_ns0))};
                nanosleep(&rest, NULL);
                vm_tsc_pair(&tsc, &ns);
            }
            scale = (double)(ns - vm_ns0) / (double)(tsc - vm_tsc0);
            memcpy(&bits, &scale, sizeof bits);
            uint64_t none = 0;
            if (!__atomic_compare_exchange_n(&vm_tsc_scale_bits, &none, bits, 0,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                bits = none;            /* another thread measured it first */
        }
        memcpy(&scale, &bits, sizeof scale);
        return (uint64_t)((double)ticks * scale + 0.5);
    }
#endif
    return ticks;
}

/* One step of every wait loop here: pause, and after a bounded spin yield
 * the CPU so that an oversubscribed machine cannot livelock. */
static inline void vm_spin_step(unsigned *spins)
{
    if (++*spins < VM_SPIN_BEFORE_YIELD) {
        vm_cpu_relax();
    } else {
        *spins = 0;
        sched_yield();
    }
}

typedef struct vm_lock {
    int state;                 /* 0 free, 1 held */
    int _pad;
    uint64_t acquisitions;     /* written by the holder only (relaxed: read racily by tests) */
    uint64_t contended;        /* acquisitions that had to wait */
    uint64_t wait_ticks;       /* time those waited (slow path only; vm_wait_ns()) */
} __attribute__((aligned(64))) vm_lock_t;

/* The holder's ++ of a counter that others may read without the lock
 * (WRITE_ONCE(c, c + 1)): a plain increment on x86-64 and arm64. */
static inline void vm_lock_count(uint64_t *c)
{
    __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

static inline void vm_lock_init(vm_lock_t *l)
{
    l->state = 0;
    l->acquisitions = 0;
    l->contended = 0;
    l->wait_ticks = 0;
}

/* One attempt: one atomic exchange and no load before it, as the kernel's
 * queued_spin_lock() fast path (one cmpxchg).  A load first fetches the
 * line shared and the exchange then fetches it again to own it, when another
 * CPU took the lock last.  The waits below load until the lock looks free,
 * so that a waiter does not steal the line from the holder on every pause. */
static inline int vm_lock_try(vm_lock_t *l)
{
    if (__atomic_exchange_n(&l->state, 1, __ATOMIC_ACQUIRE))
        return 0;
    vm_lock_count(&l->acquisitions);
    return 1;
}

/* The waiting path: never call it while holding the GIL.  t0: when the wait
 * began (vm_wait_clock()), so that a spin before it counts in wait_ticks too. */
static inline void vm_lock_wait_since(vm_lock_t *l, uint64_t t0)
{
    unsigned spins = 0;
    for (;;) {
        while (__atomic_load_n(&l->state, __ATOMIC_RELAXED)) {
            vm_spin_step(&spins);
        }
        if (!__atomic_exchange_n(&l->state, 1, __ATOMIC_ACQUIRE))
            break;
    }
    vm_lock_count(&l->acquisitions);
    l->contended++;
    l->wait_ticks += vm_wait_since(t0);
}

static inline void vm_lock_wait(vm_lock_t *l)
{
    vm_lock_wait_since(l, vm_wait_clock());
}

/* A short wait for a lock whose holder is running: up to VM_SPIN_ATTACHED
 * pauses (a critical section here is a tree descent or a relink, well under a
 * microsecond).  1 and the lock taken, counted as contended; 0 and nothing
 * taken, *t0 when the wait began (for vm_lock_wait_since()).  A thread attached to the interpreter tries this before it detaches
 * (PyEval_SaveThread): detaching and reattaching costs more than most waits,
 * and on a free-threaded build it turned every collision of two find() calls
 * into two thread-state transitions. */
#define VM_SPIN_ATTACHED 128

static inline int vm_lock_spin(vm_lock_t *l, uint64_t *t0)
{
    *t0 = vm_wait_clock();
    for (unsigned i = 0; i < VM_SPIN_ATTACHED; i++) {
        vm_cpu_relax();
        if (!__atomic_load_n(&l->state, __ATOMIC_RELAXED)
                && !__atomic_exchange_n(&l->state, 1, __ATOMIC_ACQUIRE)) {
            vm_lock_count(&l->acquisitions);
            l->contended++;
            l->wait_ticks += vm_wait_since(*t0);
            return 1;
        }
    }
    return 0;
}

static inline void vm_lock(vm_lock_t *l)
{
    if (!vm_lock_try(l))
        vm_lock_wait(l);
}

static inline void vm_unlock(vm_lock_t *l)
{
    __atomic_store_n(&l->state, 0, __ATOMIC_RELEASE);
}

/* A bare word lock for a few instructions on a Python object's fields (a
 * pointer swap and a reference count): no statistics, a yield after a bounded
 * spin.  Its holders never block, so waiting on it while attached to the
 * interpreter cannot hold up a stop-the-world pause for long; and unlike a
 * Python critical section (a PyMutex inside CPython) ThreadSanitizer sees it. */
static inline void vm_word_lock(int *w)
{
    unsigned spins = 0;
    while (__atomic_exchange_n(w, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(w, __ATOMIC_RELAXED))
            vm_spin_step(&spins);
    }
}

static inline void vm_word_unlock(int *w)
{
    __atomic_store_n(w, 0, __ATOMIC_RELEASE);
}

/*
 * vm_rwlock_t: a writer-preferring reader-writer spinlock (the rwlock_t of
 * the thread's test patch).  Every reader does an atomic add on the shared
 * word, so readers still bounce its cache line between CPUs: the reason the
 * thread found it slower than the spinlock.
 */
#define VM_RW_WRITER 0x80000000u

typedef struct vm_rwlock {
    unsigned state;            /* VM_RW_WRITER | number of readers */
    unsigned _pad;
    uint64_t read_waits;       /* reader slow paths (atomic add, slow path only) */
    uint64_t wait_ticks;       /* time readers and writers waited (slow paths only; vm_wait_ns()) */
} __attribute__((aligned(64))) vm_rwlock_t;

static inline void vm_rwlock_init(vm_rwlock_t *l)
{
    l->state = 0;
    l->read_waits = 0;
    l->wait_ticks = 0;
}

/* The reader's slow path (after vm_read_trylock() failed). */
static inline void vm_read_lock(vm_rwlock_t *l)
{
    unsigned spins = 0;
    uint64_t t0 = vm_wait_clock();
    for (;;) {
        unsigned v = __atomic_add_fetch(&l->state, 1, __ATOMIC_ACQUIRE);
        if (!(v & VM_RW_WRITER)) {
            __atomic_add_fetch(&l->wait_ticks, vm_wait_since(t0), __ATOMIC_RELAXED);
            return;
        }
        __atomic_sub_fetch(&l->state, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&l->read_waits, 1, __ATOMIC_RELAXED);
        while (__atomic_load_n(&l->state, __ATOMIC_RELAXED) & VM_RW_WRITER) {
            vm_spin_step(&spins);
        }
    }
}

static inline void vm_read_unlock(vm_rwlock_t *l)
{
    __atomic_sub_fetch(&l->state, 1, __ATOMIC_RELEASE);
}

static inline int vm_read_trylock(vm_rwlock_t *l)
{
    if (__atomic_load_n(&l->state, __ATOMIC_RELAXED) & VM_RW_WRITER)
        return 0;
    if (!(__atomic_add_fetch(&l->state, 1, __ATOMIC_ACQUIRE) & VM_RW_WRITER))
        return 1;
    __atomic_sub_fetch(&l->state, 1, __ATOMIC_RELAXED);
    return 0;
}

/* Writers are serialised by the node's spinlock first, so one writer at a
 * time sets the bit (which stops new readers), then waits for the readers
 * inside to leave.  begin() says whether none was inside. */
static inline int vm_write_lock_rw_begin(vm_rwlock_t *l)
{
    return __atomic_fetch_or(&l->state, VM_RW_WRITER, __ATOMIC_ACQUIRE) == 0;
}

static inline void vm_write_lock_rw_wait(vm_rwlock_t *l)
{
    unsigned spins = 0;
    uint64_t t0 = vm_wait_clock();
    while (__atomic_load_n(&l->state, __ATOMIC_ACQUIRE) != VM_RW_WRITER) {
        vm_spin_step(&spins);
    }
    __atomic_add_fetch(&l->wait_ticks, vm_wait_since(t0), __ATOMIC_RELAXED);
}

/* Clear only the writer bit: a reader may be between its add and its undo. */
static inline void vm_write_unlock_rw(vm_rwlock_t *l)
{
    __atomic_fetch_and(&l->state, ~VM_RW_WRITER, __ATOMIC_RELEASE);
}

/*
 * Sequence counter (seqcount_t) for lock-free readers: writers, already
 * holding the node's spinlock, make it odd while they change the tree and
 * even again after; a reader that saw the same even value before and after
 * its reads saw no change.  Data words are relaxed atomics, ordered by the
 * fences (the C11 seqlock of Boehm, "Can seqlocks get along with
 * programming language memory models?", 2012).
 */
static inline unsigned vm_read_seqbegin(const unsigned *seq)
{
    return __atomic_load_n(seq, __ATOMIC_ACQUIRE);
}

static inline int vm_read_seqretry(const unsigned *seq, unsigned start)
{
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return (start & 1) || __atomic_load_n(seq, __ATOMIC_RELAXED) != start;
}

static inline void vm_write_seqbegin(unsigned *seq)
{
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void vm_write_seqend(unsigned *seq)
{
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);
}

static inline void vm_atomic_inc(uint64_t *p)
{
    __atomic_add_fetch(p, 1, __ATOMIC_RELAXED);
}

static inline uint64_t vm_atomic_add(uint64_t *p, uint64_t v)
{
    return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

/* The "CPU" whose node pool an allocation tries first, by default: the
 * calling thread's native id (gettid(), what Python's
 * threading.get_native_id() returns), stable for the thread's life and the
 * same for the reference implementation.  Cached per thread; a forked child
 * (whose one thread has a new id but inherits the parent's cache) resets the
 * cache in a pthread_atfork() handler, registered once at import. */
static __thread long vm_cpu_of_thread = -1;

static inline unsigned long vm_current_cpu(void)
{
    if (vm_cpu_of_thread < 0)
        vm_cpu_of_thread = syscall(SYS_gettid);
    return (unsigned long)vm_cpu_of_thread;
}

static void vm_cpu_forget(void) { vm_cpu_of_thread = -1; }

static inline int vm_cpu_atfork_init(void)
{
    return pthread_atfork(NULL, NULL, vm_cpu_forget);
}

/* Whether the calling thread is inside one of vmap_core's nogil sections.
 * The call site knows whether it holds the GIL, so the nogil sections say so
 * (vm_nogil_enter/exit around their calls into the core) and a contended lock
 * wait drops the GIL only for a thread outside them.  PyGILState_Check() can
 * not be asked: once any subinterpreter exists it answers 1 for every thread. */
static __thread int vm_thread_nogil = 0;

static inline void vm_nogil_enter(void) { vm_thread_nogil++; }
static inline void vm_nogil_exit(void) { vm_thread_nogil--; }
static inline int vm_in_nogil(void) { return vm_thread_nogil != 0; }

/*
 * Every C allocation of the core goes through these, so a test can make the
 * k-th one fail (vm_fail_alloc_at(k); -1 turns it off) and show that each
 * method then raises MemoryError with the space as it was.  The countdown is
 * test-only; atomics keep it quiet under ThreadSanitizer.
 */
static long vm_alloc_countdown = -1;
static uint64_t vm_alloc_calls = 0;

static inline int vm_alloc_fails(void)
{
    __atomic_add_fetch(&vm_alloc_calls, 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&vm_alloc_countdown, __ATOMIC_RELAXED) < 0)
        return 0;
    return __atomic_sub_fetch(&vm_alloc_countdown, 1, __ATOMIC_RELAXED) == -1;
}

static inline void vm_fail_alloc_at(long k) { __atomic_store_n(&vm_alloc_countdown, k, __ATOMIC_RELAXED); }
static inline uint64_t vm_alloc_count(void) { return __atomic_load_n(&vm_alloc_calls, __ATOMIC_RELAXED); }

static inline void *vm_malloc(size_t n) { return vm_alloc_fails() ? NULL : malloc(n); }
static inline void *vm_calloc(size_t n, size_t size) { return vm_alloc_fails() ? NULL : calloc(n, size); }
static inline void *vm_realloc(void *p, size_t n) { return vm_alloc_fails() ? NULL : realloc(p, n); }

/* n * size, or 0 with *overflow set when it does not fit in a size_t. */
static inline size_t vm_mul_size(size_t n, size_t size, int *overflow)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
        *overflow = 1;
        return 0;
    }
    return bytes;
}

/*
 * Test-only: a writer pauses at a named step (vm_pause_site, armed by a
 * test) until the test releases it, so that a test can look at the locks and
 * run a reader while a change is half made, the same interleaving every
 * time.  Disarmed (the default), a write pays one relaxed load.  State: 0
 * none paused, 1 a writer waits at the site, 2 released.
 */
static int vm_pause_site = 0;
static int vm_pause_state = 0;

static inline int vm_pause_armed(int site)
{
    return __atomic_load_n(&vm_pause_site, __ATOMIC_RELAXED) == site;
}

/* The first writer to reach the armed site claims it (the site disarms). */
static inline int vm_pause_claim(int site)
{
    int expected = site;
    return __atomic_compare_exchange_n(&vm_pause_site, &expected, 0, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

static inline void vm_pause_wait(void)
{
    unsigned spins = 0;
    __atomic_store_n(&vm_pause_state, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&vm_pause_state, __ATOMIC_ACQUIRE) != 2) {
        vm_spin_step(&spins);
    }
    __atomic_store_n(&vm_pause_state, 0, __ATOMIC_RELEASE);
}

static inline void vm_pause_arm(int site) { __atomic_store_n(&vm_pause_site, site, __ATOMIC_RELEASE); }
static inline int vm_pause_paused(void) { return __atomic_load_n(&vm_pause_state, __ATOMIC_ACQUIRE) == 1; }
static inline void vm_pause_release(void) { __atomic_store_n(&vm_pause_state, 2, __ATOMIC_RELEASE); }
static inline int vm_lock_held(const vm_lock_t *l) { return __atomic_load_n(&l->state, __ATOMIC_ACQUIRE); }
static inline unsigned vm_load_unsigned(const unsigned *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* Atomic accessors for words that lock-free readers may load (bounds: relaxed). */
/* Tree links are published with release and followed with acquire (free on
 * x86): a lock-free reader that reaches a record through a link also sees how
 * the record was made, fresh slab memory included (ThreadSanitizer showed a
 * reader meet a new chunk's allocation through a relaxed link). */
static inline void *vm_load_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void vm_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t vm_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void vm_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static inline int vm_load_int(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void vm_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* 64-byte aligned, zeroed memory for arrays of cache-line sized records. */
static inline void *vm_aligned_calloc(size_t n, size_t size)
{
    void *p = NULL;
    size_t bytes = n * size;
    if (size && bytes / size != n)
        return NULL;
    if (vm_alloc_fails())
        return NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64))
        return NULL;
    __builtin_memset(p, 0, bytes);
    return p;
}

#endif /* VMAP_CORE_LOCKS_H */

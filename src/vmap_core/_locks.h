/*
 * The only C in vmap_core: atomics and locks that Cython cannot spell.
 *
 * vm_lock_t is a test-and-test-and-set spinlock (the kernel's spinlock_t in
 * spirit, without the queueing): spin with a CPU pause, and after a bounded
 * spin yield the CPU so an oversubscribed machine cannot livelock.  Each lock
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
#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#define vm_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define vm_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define vm_cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define VM_SPIN_BEFORE_YIELD 256

typedef struct vm_lock {
    int state;                 /* 0 free, 1 held */
    int _pad;
    uint64_t acquisitions;     /* written by the holder only */
    uint64_t contended;        /* acquisitions that had to wait */
} __attribute__((aligned(64))) vm_lock_t;

static inline void vm_lock_init(vm_lock_t *l)
{
    l->state = 0;
    l->acquisitions = 0;
    l->contended = 0;
}

/* One attempt; the cheap load first keeps a busy line shared while it is held. */
static inline int vm_lock_try(vm_lock_t *l)
{
    if (__atomic_load_n(&l->state, __ATOMIC_RELAXED))
        return 0;
    if (__atomic_exchange_n(&l->state, 1, __ATOMIC_ACQUIRE))
        return 0;
    l->acquisitions++;
    return 1;
}

/* The waiting path: never call it while holding the GIL. */
static inline void vm_lock_wait(vm_lock_t *l)
{
    unsigned spins = 0;
    for (;;) {
        while (__atomic_load_n(&l->state, __ATOMIC_RELAXED)) {
            if (++spins < VM_SPIN_BEFORE_YIELD) {
                vm_cpu_relax();
            } else {
                spins = 0;
                sched_yield();
            }
        }
        if (!__atomic_exchange_n(&l->state, 1, __ATOMIC_ACQUIRE))
            break;
    }
    l->acquisitions++;
    l->contended++;
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

/* Relaxed atomic accessors for words that lock-free readers may load. */
static inline void *vm_load_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void vm_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t vm_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void vm_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* 64-byte aligned, zeroed memory for arrays of cache-line sized records. */
static inline void *vm_aligned_calloc(size_t n, size_t size)
{
    void *p = NULL;
    size_t bytes = n * size;
    if (size && bytes / size != n)
        return NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64))
        return NULL;
    __builtin_memset(p, 0, bytes);
    return p;
}

#endif /* VMAP_CORE_LOCKS_H */

# Fixed-size area records reused through a free list, like the kernel's
# vmap_area_cachep.  Chunks are never handed back while the space lives, so a
# record stays readable (type-stable) for a lock-free reader that still holds
# it after it was freed.  Callers serialise slab use with the free-tree lock.

from libc.stdlib cimport malloc, free, realloc

cdef extern from "_locks.h" nogil:
    void* vm_aligned_calloc(size_t n, size_t size)
    void* vm_malloc(size_t n)
    void* vm_calloc(size_t n, size_t size)
    void* vm_realloc(void* p, size_t n)
    size_t vm_mul_size(size_t n, size_t size, int* overflow)

cdef enum:
    # 4 KiB chunks (one page of 64-byte records, like a kernel slab page):
    # small enough that a small space wastes little, and the chunk table costs
    # 1/512 of a byte per record.
    SLAB_CHUNK_RECORDS = 64

ctypedef struct slab_t:
    va_t** chunks
    size_t nr_chunks
    size_t cap_chunks
    size_t next_unused      # index of the next never-used record in the last chunk
    va_t* free_list         # freed records, linked through .next
    size_t in_use


cdef void slab_init(slab_t* s) noexcept nogil:
    s.chunks = NULL
    s.nr_chunks = 0
    s.cap_chunks = 0
    s.next_unused = SLAB_CHUNK_RECORDS
    s.free_list = NULL
    s.in_use = 0


cdef va_t* slab_alloc(slab_t* s) noexcept nogil:
    """A record, or NULL when memory is exhausted."""
    cdef va_t* va = s.free_list
    cdef va_t** grown
    if va != NULL:
        s.free_list = va.next
    else:
        if s.next_unused == SLAB_CHUNK_RECORDS:
            if s.nr_chunks == s.cap_chunks:
                grown = <va_t**>vm_realloc(s.chunks, (s.cap_chunks * 2 + 8) * sizeof(va_t*))
                if grown == NULL:
                    return NULL
                s.chunks = grown
                s.cap_chunks = s.cap_chunks * 2 + 8
            va = <va_t*>vm_aligned_calloc(SLAB_CHUNK_RECORDS, sizeof(va_t))
            if va == NULL:
                return NULL
            s.chunks[s.nr_chunks] = va
            s.nr_chunks += 1
            s.next_unused = 0
        va = s.chunks[s.nr_chunks - 1] + s.next_unused
        s.next_unused += 1
    s.in_use += 1
    return va


cdef inline void slab_free(slab_t* s, va_t* va) noexcept nogil:
    va.next = s.free_list
    s.free_list = va
    s.in_use -= 1


cdef void slab_destroy(slab_t* s) noexcept nogil:
    cdef size_t i
    for i in range(s.nr_chunks):
        free(s.chunks[i])
    free(s.chunks)
    slab_init(s)


cdef inline size_t slab_bytes(slab_t* s) noexcept nogil:
    """Memory the slab holds: its chunks and its chunk table."""
    return s.nr_chunks * SLAB_CHUNK_RECORDS * sizeof(va_t) + s.cap_chunks * sizeof(va_t*)

# Fixed-size area records, like the kernel's vmap_area_cachep: 64-byte va_t
# records in 4 KiB chunks (one page, like a kernel slab page), the chunks in
# segments that double from one chunk up to 2 MiB (small spaces stay small).
# Callers serialise slab use with the free-tree lock.
#
# Allocation takes the lowest chunk that has a free record, so that a space
# which shrinks leaves whole chunks free at the top, and a chunk whose every
# record is free gives its page back (beyond a few kept for reuse).
#
# Why giving a page back is safe for "optimistic" readers, which walk busy
# trees holding no lock and may still load a record after it was freed
# (mm/vmalloc.c's lockless readers rely on SLAB_TYPESAFE_BY_RCU likewise):
# the page goes back with madvise(MADV_DONTNEED), not munmap, so its address
# stays mapped and readable; a later load yields zeros (a record with NULL
# children: the descent ends) or, once the chunk is reused, another record
# (as for any reused record).  Either way the reader's seq check fails: the
# record was unlinked inside a seq write section that began after the
# reader's seq read, since a record only becomes free after its unlink.  No
# tree links into a given-back chunk (every record of it is free), and the
# slab keeps no pointer into it (its free list is dropped).  Segments are
# freed only by slab_destroy(), when no reader can be left.

from libc.stdlib cimport malloc, free, realloc
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "_locks.h" nogil:
    void* vm_aligned_calloc(size_t n, size_t size)
    void* vm_malloc(size_t n)
    void* vm_calloc(size_t n, size_t size)
    void* vm_realloc(void* p, size_t n)
    size_t vm_mul_size(size_t n, size_t size, int* overflow)

cdef extern from *:
    """
    #include <sys/mman.h>
    /* Page-aligned, not zeroed memory for slab segments (fault injection as
     * vm_malloc's); not zeroed, so that an untouched chunk costs no page. */
    static inline void *vm_pages_alloc(size_t bytes)
    {
        void *p = NULL;
        if (vm_alloc_fails())
            return NULL;
        if (posix_memalign(&p, 4096, bytes))
            return NULL;
        return p;
    }
    /* Give back the pages of [p, p + bytes) (page-aligned, wholly ours):
     * the range stays mapped and reads as zeros.  0 on success. */
    static inline int vm_pages_release(void *p, size_t bytes)
    {
        return madvise(p, bytes, MADV_DONTNEED);
    }
    static inline long vm_sys_page_size(void) { return sysconf(_SC_PAGESIZE); }
    """
    void* vm_pages_alloc(size_t bytes) nogil
    int vm_pages_release(void* p, size_t bytes) nogil
    long vm_sys_page_size() nogil

cdef enum:
    SLAB_CHUNK_BYTES = 4096
    # Record 0 of a chunk is its header (its index, in .start): records are
    # 1..63, and a record finds its chunk by masking its address.
    SLAB_CHUNK_RECORDS = 63
    SLAB_SEG_MAX_CHUNKS = 512       # 2 MiB segments once a space is big
    # Empty chunks kept resident (not given back): this many, plus one per
    # SLAB_KEEP_PER live records, so that churn at the top does not give back
    # and fault in a page on every few operations.
    SLAB_KEEP_EMPTY = 16
    SLAB_KEEP_PER = 32 * SLAB_CHUNK_RECORDS
    COMPACT_MIN_CHUNKS = 64         # a slab under 256 KiB is never compacted (_compact.pxi)

cdef uint32_t SLAB_NOT_EMPTY = 0xFFFFFFFF
# Pages can be given back one chunk at a time only where a page is 4 KiB.
cdef bint slab_can_release = vm_sys_page_size() == SLAB_CHUNK_BYTES

ctypedef struct slab_chunk_t:
    va_t* base              # the header slot (4 KiB aligned)
    va_t* free              # freed records of this chunk, linked through .next
    uint32_t epos           # index in the slab's empty list, or SLAB_NOT_EMPTY
    uint16_t nfree          # free records: on the free list + untouched
    uint16_t untouched      # records never handed out since the page was touched
                            # (63: the chunk holds no page of ours: fresh or given back)

ctypedef struct slab_t:
    slab_chunk_t* chunks
    uint64_t* avail         # bitmap: chunk has a free record
    uint32_t* empties       # resident chunks whose every record is free
    size_t nr_chunks
    size_t cap_chunks
    size_t nr_empty
    size_t cur              # the lowest chunk with a free record (nr_chunks: none)
    void** segs
    size_t nr_segs
    size_t cap_segs
    size_t in_use
    size_t nr_resident      # chunks holding a page (touched, not given back)
    uint64_t released       # chunks given back over the slab's life
    size_t frees            # records freed since the last compaction (_compact.pxi)
    uint64_t compactions
    size_t keep_empty       # SLAB_KEEP_EMPTY (tests lower it: _testhooks.set_slab_tuning)
    size_t compact_min      # COMPACT_MIN_CHUNKS, likewise


cdef void slab_init(slab_t* s) noexcept nogil:
    s.chunks = NULL
    s.avail = NULL
    s.empties = NULL
    s.nr_chunks = 0
    s.cap_chunks = 0
    s.nr_empty = 0
    s.cur = 0
    s.segs = NULL
    s.nr_segs = 0
    s.cap_segs = 0
    s.in_use = 0
    s.nr_resident = 0
    s.released = 0
    s.frees = 0
    s.compactions = 0
    s.keep_empty = SLAB_KEEP_EMPTY
    s.compact_min = COMPACT_MIN_CHUNKS


cdef inline size_t slab_chunk_of(va_t* va) noexcept nogil:
    return <size_t>(<va_t*>(<uintptr_t>va & ~(<uintptr_t>(SLAB_CHUNK_BYTES - 1)))).start


cdef size_t slab_next_avail(slab_t* s, size_t c) noexcept nogil:
    """The lowest chunk >= c with a free record, or nr_chunks."""
    cdef size_t w = c >> 6
    cdef size_t nw = (s.nr_chunks + 63) >> 6
    cdef uint64_t bits
    if c >= s.nr_chunks:
        return s.nr_chunks
    bits = s.avail[w] & (~(<uint64_t>0) << (c & 63))
    while bits == 0:
        w += 1
        if w >= nw:
            return s.nr_chunks
        bits = s.avail[w]
    c = (w << 6) + <size_t>__builtin_ctzll(bits)
    return c if c < s.nr_chunks else s.nr_chunks


cdef extern from *:
    int __builtin_ctzll(unsigned long long x) nogil


cdef bint slab_grow(slab_t* s) noexcept nogil:
    """Add a segment of chunks (all free, none touched).  False, with nothing
    changed that a caller can see, when memory is exhausted."""
    cdef size_t n = s.nr_segs
    cdef size_t add = (<size_t>1 << n) if n < 9 else SLAB_SEG_MAX_CHUNKS
    cdef size_t need = s.nr_chunks + add
    cdef size_t cap, i, c
    cdef void* p
    cdef char* seg
    cdef slab_chunk_t* m
    if s.nr_chunks + add >= SLAB_NOT_EMPTY:
        return False
    if need > s.cap_chunks:
        cap = s.cap_chunks * 2
        if cap < need:
            cap = need
        cap = (cap + 63) & ~(<size_t>63)
        p = vm_realloc(s.chunks, cap * sizeof(slab_chunk_t))
        if p == NULL:
            return False
        s.chunks = <slab_chunk_t*>p
        p = vm_realloc(s.empties, cap * sizeof(uint32_t))
        if p == NULL:
            return False
        s.empties = <uint32_t*>p
        p = vm_realloc(s.avail, (cap >> 6) * sizeof(uint64_t))
        if p == NULL:
            return False
        s.avail = <uint64_t*>p
        for i in range(s.cap_chunks >> 6, cap >> 6):
            s.avail[i] = 0
        s.cap_chunks = cap
    if s.nr_segs == s.cap_segs:
        p = vm_realloc(s.segs, (s.cap_segs * 2 + 8) * sizeof(void*))
        if p == NULL:
            return False
        s.segs = <void**>p
        s.cap_segs = s.cap_segs * 2 + 8
    seg = <char*>vm_pages_alloc(add * SLAB_CHUNK_BYTES)
    if seg == NULL:
        return False
    s.segs[s.nr_segs] = seg
    s.nr_segs += 1
    for i in range(add):
        c = s.nr_chunks + i
        m = &s.chunks[c]
        m.base = <va_t*>(seg + i * SLAB_CHUNK_BYTES)
        m.free = NULL
        m.epos = SLAB_NOT_EMPTY
        m.nfree = SLAB_CHUNK_RECORDS
        m.untouched = SLAB_CHUNK_RECORDS
        s.avail[c >> 6] |= <uint64_t>1 << (c & 63)
    s.nr_chunks += add                  # cur was the old nr_chunks: now the first new chunk
    return True


cdef inline void slab_empty_remove(slab_t* s, slab_chunk_t* m) noexcept nogil:
    cdef uint32_t last = s.empties[s.nr_empty - 1]
    s.empties[m.epos] = last
    s.chunks[last].epos = m.epos
    s.nr_empty -= 1
    m.epos = SLAB_NOT_EMPTY


cdef va_t* slab_alloc(slab_t* s) noexcept nogil:
    """A record, or NULL (nothing changed) when memory is exhausted.  From
    the lowest chunk that has one."""
    cdef size_t c = s.cur
    cdef slab_chunk_t* m
    cdef va_t* va
    if c >= s.nr_chunks:
        if not slab_grow(s):
            return NULL
        c = s.cur
    m = &s.chunks[c]
    if m.free != NULL:
        va = m.free
        m.free = va.next
    else:
        if m.untouched == SLAB_CHUNK_RECORDS:
            m.base.start = c            # touches the page: the chunk is resident
            s.nr_resident += 1
        va = m.base + (SLAB_CHUNK_RECORDS + 1 - m.untouched)
        m.untouched -= 1
    if m.epos != SLAB_NOT_EMPTY:
        slab_empty_remove(s, m)
    m.nfree -= 1
    if m.nfree == 0:
        s.avail[c >> 6] &= ~(<uint64_t>1 << (c & 63))
        s.cur = slab_next_avail(s, c + 1)
    s.in_use += 1
    return va


cdef void slab_trim(slab_t* s) noexcept nogil:
    """Give back the pages of the empty chunks beyond those kept (see the
    top of this file for why a lock-free reader stays safe)."""
    cdef size_t keep = s.keep_empty + s.in_use // SLAB_KEEP_PER
    cdef slab_chunk_t* m
    while s.nr_empty > keep:
        m = &s.chunks[s.empties[s.nr_empty - 1]]
        s.nr_empty -= 1
        m.epos = SLAB_NOT_EMPTY
        if not slab_can_release or vm_pages_release(m.base, SLAB_CHUNK_BYTES) != 0:
            continue                    # stays resident (empty, off the list)
        m.free = NULL
        m.untouched = SLAB_CHUNK_RECORDS
        s.nr_resident -= 1
        s.released += 1


cdef inline void slab_free(slab_t* s, va_t* va) noexcept nogil:
    cdef size_t c = slab_chunk_of(va)
    cdef slab_chunk_t* m = &s.chunks[c]
    va.next = m.free
    m.free = va
    m.nfree += 1
    s.in_use -= 1
    s.frees += 1
    if m.nfree == 1:
        s.avail[c >> 6] |= <uint64_t>1 << (c & 63)
        if c < s.cur:
            s.cur = c
    elif m.nfree == SLAB_CHUNK_RECORDS:
        m.epos = <uint32_t>s.nr_empty
        s.empties[s.nr_empty] = <uint32_t>c
        s.nr_empty += 1
        if s.nr_empty > s.keep_empty:
            slab_trim(s)


cdef void slab_destroy(slab_t* s) noexcept nogil:
    """Free every segment and table: called when no reader can be left."""
    cdef size_t i
    cdef size_t keep = s.keep_empty, cmin = s.compact_min
    for i in range(s.nr_segs):
        free(s.segs[i])
    free(s.segs)
    free(s.chunks)
    free(s.avail)
    free(s.empties)
    slab_init(s)
    s.keep_empty = keep
    s.compact_min = cmin


cdef inline size_t slab_bytes(slab_t* s) noexcept nogil:
    """Memory the slab holds: its resident chunks (touched, not given back)
    and its tables."""
    return (s.nr_resident * SLAB_CHUNK_BYTES
            + s.cap_chunks * (sizeof(slab_chunk_t) + sizeof(uint32_t))
            + (s.cap_chunks >> 6) * sizeof(uint64_t) + s.cap_segs * sizeof(void*))


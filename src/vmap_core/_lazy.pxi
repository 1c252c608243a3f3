# Lazy free and purge (patch 06), per-node pools with decay (patch 07) and the
# shrinker's scan (patch 11).  A busy record's aux holds its node tag: the
# node id + 1 of the pool that served it or missed, 0 for none.

cdef extern from "_locks.h" nogil:
    uint64_t vm_atomic_add(uint64_t* p, uint64_t v)
    unsigned long vm_current_cpu()


cdef inline size_t size_to_va_pool(const space_t* s, uint64_t szm1, bint* ok) noexcept nogil:
    """size_to_va_pool(): the pool class of an area of szm1 + 1 bytes.
    Counts pages - 1, which cannot wrap (an area of 2**64 one-byte pages)."""
    cdef uint64_t pm1 = szm1 // s.page_size
    ok[0] = pm1 < MAX_VA_SIZE_PAGES
    return <size_t>pm1 if ok[0] else 0


cdef inline uint64_t area_pages(const space_t* s, const va_t* va) noexcept nogil:
    """The pages of an area, modulo 2**64: an area of 2**64 one-byte pages
    counts 0, and the lazy page count keeps its sum modulo 2**64 (the true sum
    is 2**64 only when every page of the space is lazy; stats() says so)."""
    return (va.last - va.start) // s.page_size + 1


cdef inline void pool_unlink(va_pool_t* vp, va_t* va) noexcept nogil:
    if va.prev != NULL:
        va.prev.next = va.next
    else:
        vp.head = va.next
    if va.next != NULL:
        va.next.prev = va.prev
    else:
        vp.tail = va.prev
    cnt_add(&vp.len, -1)


cdef inline void pool_push_head(va_pool_t* vp, va_t* va) noexcept nogil:
    va.prev = NULL
    va.next = vp.head
    if vp.head != NULL:
        vp.head.prev = va
    else:
        vp.tail = va
    vp.head = va
    cnt_add(&vp.len, 1)


cdef inline void pool_push_tail(va_pool_t* vp, va_t* va) noexcept nogil:
    va.next = NULL
    va.prev = vp.tail
    if vp.tail != NULL:
        vp.tail.next = va
    else:
        vp.head = va
    vp.tail = va
    cnt_add(&vp.len, 1)


cdef va_t* node_pool_del_va(space_t* s, vnode_t* vn, uint64_t szm1, uint64_t align,
                            bint* rotated) noexcept nogil:
    """node_pool_del_va(): the head of the class's pool if it is aligned;
    otherwise the head moves to the tail (rotated) and the pool misses."""
    cdef bint ok
    cdef size_t cls = size_to_va_pool(s, szm1, &ok)
    cdef va_pool_t* vp
    cdef va_t* va = NULL
    cdef vm_lock_t* l
    if not ok or cnt_peek(&vn.pools[cls].len) == 0:     # the kernel's unlocked list_empty() peek
        return NULL
    vp = &vn.pools[cls]
    l = pool_lock(s, vn)
    lock_acquire(l)
    if vp.head != NULL:
        va = vp.head
        pool_unlink(vp, va)
        if va.start & (align - 1):
            pool_push_tail(vp, va)
            rotated[0] = True
            va = NULL
        else:
            cnt_add(&vn.nr_pooled, -1)
    vm_unlock(l)
    return va


cdef void pool_unrotate(space_t* s, unsigned node, uint64_t szm1) noexcept nogil:
    """Undo node_pool_del_va()'s move of a head to the tail, for an
    allocation that then failed for want of memory (nothing else changed)."""
    cdef vnode_t* vn = &s.nodes[node]
    cdef bint ok
    cdef va_pool_t* vp = &vn.pools[size_to_va_pool(s, szm1, &ok)]
    cdef vm_lock_t* l = pool_lock(s, vn)
    cdef va_t* va
    lock_acquire(l)
    if vp.tail != NULL and vp.tail != vp.head:
        va = vp.tail
        pool_unlink(vp, va)
        pool_push_head(vp, va)
    vm_unlock(l)


cdef alloc_status_t space_alloc_pooled(space_t* s, unsigned node, uint64_t szm1, uint64_t align,
                                       uint64_t* out, bint* rotated) noexcept nogil:
    """node_alloc(): serve the request from the pool of one node."""
    cdef vnode_t* vn = &s.nodes[node]
    cdef va_t* va = node_pool_del_va(s, vn, szm1, align, rotated)
    cdef vnode_t* bn
    if va == NULL:
        return ALLOC_NOSPACE
    va.aux = node + 1
    bn = &s.nodes[addr_to_node_id(s, va.start)]
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    busy_lock(s, bn)
    busy_change_begin(s, bn)
    bt_insert(bn, va)
    busy_change_end(s, bn)
    busy_unlock(s, bn)
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    out[0] = va.start
    return ALLOC_OK


cdef void space_unalloc_pooled(space_t* s, unsigned node, uint64_t addr) noexcept nogil:
    """Undo space_alloc_pooled() (its caller could not finish the call): the
    area goes back to the head of the pool it came from."""
    cdef va_t* va = NULL
    cdef vnode_t* vn = &s.nodes[node]
    cdef bint ok
    cdef size_t cls
    cdef vm_lock_t* l
    if space_find_unlink(s, addr, &va) != UNLINK_OK:
        return
    cls = size_to_va_pool(s, va.last - va.start, &ok)
    l = pool_lock(s, vn)
    lock_acquire(l)
    pool_push_head(&vn.pools[cls], va)
    cnt_add(&vn.nr_pooled, 1)
    vm_unlock(l)


cdef int space_free_lazy(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last,
                         bint* over) noexcept nogil:
    """free_vmap_area_noflush(): unlink the busy area and park it, unmerged,
    in the lazy tree of its tagged node (or the node of its start)."""
    cdef va_t* va = NULL
    cdef int rc = space_find_unlink(s, addr, &va)
    cdef vnode_t* vn
    cdef vm_lock_t* l
    cdef uint64_t pages, total
    if rc != UNLINK_OK:
        return rc
    start[0] = va.start
    last[0] = va.last
    pages = area_pages(s, va)
    vn = &s.nodes[va.aux - 1 if va.aux else addr_to_node_id(s, va.start)]
    l = lazy_lock(s, vn)
    lock_acquire(l)
    tree_insert(&vn.lazy_root, &vn.nr_lazy, va)
    # Counted under the lazy lock, so that a snapshot holding every lock sees
    # the count agree with the lazy trees.
    total = vm_atomic_add(&s.lazy_nr, pages)
    vm_unlock(l)
    # The sum wrapped (or this area alone is 2**64 pages): over any maximum.
    over[0] = total <= pages - 1 or total > s.lazy_max_pages
    return UNLINK_OK


cdef void reclaim_chain(space_t* s, va_t* chain) noexcept nogil:
    """reclaim_list_global(): merge a chain (linked through next) back into the free tree."""
    cdef va_t* next
    if chain == NULL:
        return
    lock_acquire(s.free_lock)
    while chain != NULL:
        next = chain.next
        ft_merge(s, chain)
        chain = next
    vm_unlock(s.free_lock)


cdef size_t decay_va_pool_node(space_t* s, vnode_t* vn, bint full) noexcept nogil:
    """decay_va_pool_node(): ~25% of each class from its head (all when full)
    back to the free tree; returns how many."""
    cdef size_t cls, n, released = 0
    cdef va_t* chain = NULL
    cdef va_t* va
    cdef vm_lock_t* l = pool_lock(s, vn)
    if cnt_peek(&vn.nr_pooled) == 0:
        return 0
    lock_acquire(l)
    for cls in range(<size_t>MAX_VA_SIZE_PAGES):
        n = vn.pools[cls].len if full else vn.pools[cls].len >> 2
        while n:
            va = vn.pools[cls].head
            pool_unlink(&vn.pools[cls], va)
            va.next = chain
            chain = va
            n -= 1
            released += 1
    cnt_add(&vn.nr_pooled, -<int64_t>released)
    vm_unlock(l)
    reclaim_chain(s, chain)
    return released


cdef size_t space_purge(space_t* s, bint full, uint64_t* flush_start, uint64_t* flush_last) noexcept nogil:
    """__purge_vmap_area_lazy(): per node, decay the pools, detach the lazy
    tree, then send each area to the node's pool (tagged, fitting a class,
    not a full purge) or back to the free tree.  Returns the areas purged and
    the union of their ranges (the one TLB flush)."""
    cdef unsigned k
    cdef vnode_t* vn
    cdef va_t* va
    cdef va_t* next
    cdef va_t* chain
    cdef va_t* to_free
    cdef vm_lock_t* l
    cdef size_t cls, purged = 0
    cdef uint64_t pages = 0
    cdef bint ok
    flush_start[0] = UINT64_MAX
    flush_last[0] = 0
    lock_acquire(s.purge_lock)
    s.purges += 1
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        decay_va_pool_node(s, vn, full)
        if cnt_peek(&vn.nr_lazy) == 0:
            continue
        l = lazy_lock(s, vn)
        lock_acquire(l)
        chain = rb_first(vn.lazy_root.node)     # the list runs on through next
        vn.lazy_root.node = NULL
        vm_store_u64(<uint64_t*>&vn.nr_lazy, 0)
        vm_unlock(l)
        if chain.start < flush_start[0]:
            flush_start[0] = chain.start
        to_free = NULL
        l = pool_lock(s, vn)
        lock_acquire(l)
        while chain != NULL:
            next = chain.next
            va = chain
            if va.last > flush_last[0]:
                flush_last[0] = va.last
            pages += area_pages(s, va)
            purged += 1
            cls = size_to_va_pool(s, va.last - va.start, &ok)
            if not full and va.aux and ok:
                pool_push_head(&vn.pools[cls], va)      # node_pool_add_va()
                cnt_add(&vn.nr_pooled, 1)
            else:
                va.next = to_free
                to_free = va
            chain = next
        vm_unlock(l)
        reclaim_chain(s, to_free)
    if purged:
        vm_atomic_add(&s.lazy_nr, (<uint64_t>0) - pages)   # subtract
        s.tlb_flushes += 1
        s.purged_areas += purged
    vm_unlock(s.purge_lock)
    return purged


cdef size_t space_drain_pools(space_t* s) noexcept nogil:
    """The shrinker's scan (vmap_node_shrink_scan): fully decay every pool."""
    cdef unsigned k
    cdef size_t released = 0
    lock_acquire(s.purge_lock)
    for k in range(s.nr_nodes):
        released += decay_va_pool_node(s, &s.nodes[k], True)
    vm_unlock(s.purge_lock)
    return released


cdef bint space_find_exceed(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last) noexcept nogil:
    """find_vmap_area_exceed_addr(): over all nodes, the area with the lowest
    start among those ending above addr."""
    cdef unsigned k
    cdef vnode_t* vn
    cdef va_t* n
    cdef va_t* best
    cdef vm_lock_t* l
    cdef bint found = False
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        l = node_lock(s, vn)
        lock_acquire(l)
        n = vn.root.node
        best = NULL
        while n != NULL:
            if n.last >= addr:
                best = n
                if n.start <= addr:
                    break
                n = n.left
            else:
                n = n.right
        if best != NULL and (not found or best.start < start[0]):
            start[0] = best.start
            last[0] = best.last
            found = True
        vm_unlock(l)
    return found

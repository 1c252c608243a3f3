# Allocation and release across the two layers: carve from the free tree
# under its lock, then publish in the node of the new start under the node's
# lock (alloc_vmap_area); unlink from the node, then merge back (free_vmap_area).

cdef enum alloc_status_t:
    ALLOC_OK = 0
    ALLOC_NOSPACE = 1      # no free block fits (-ENOENT; vend before v6.16)
    ALLOC_RANGE = 2        # the lowest fit ends past vend (-ERANGE; vend before v6.16)
    ALLOC_NOMEM = 3        # the slab could not grow
    ALLOC_NOTFREE = 4      # alloc_at(): the range is not wholly free


cdef alloc_status_t carve_and_publish(space_t* s, va_t* va, uint64_t nva, uint64_t szm1,
                                      uint64_t tag, uint64_t* out) noexcept nogil:
    """va_clip() [nva, nva + szm1] out of free block va, then insert the new
    area in the busy tree of its node.  Called with the free lock held; drops
    it (in global mode the one lock, after publishing)."""
    cdef va_t* busy
    cdef va_t* spare = NULL
    cdef fit_type_t fit = classify_va_fit_type(va, nva, szm1)
    cdef vnode_t* vn
    # Take every record before changing anything, so a failure leaves no trace
    # (the kernel preloads its spare object before taking the lock, likewise).
    if fit == FL_FIT_TYPE:
        busy = va              # the whole block becomes the busy area
    else:
        busy = slab_alloc(&s.slab)
        if busy == NULL:
            vm_unlock(s.free_lock)
            return ALLOC_NOMEM
        if fit == NE_FIT_TYPE:
            spare = slab_alloc(&s.slab)
            if spare == NULL:
                slab_free(&s.slab, busy)
                vm_unlock(s.free_lock)
                return ALLOC_NOMEM
    va_clip(s, va, fit, nva, szm1, spare)
    vm_store_u64(&busy.start, nva)
    vm_store_u64(&busy.last, nva + szm1)
    busy.aux = tag
    vm_atomic_max_u64(&s.widest, szm1)      # before the area can be seen (bounded walk)
    vn = &s.nodes[addr_to_node_id(s, nva)]
    if s.global_lock != NULL:
        bt_insert(vn, busy)             # the one lock is already held
        test_pause(PAUSE_PUBLISH)
        vm_unlock(s.global_lock)
    else:
        vm_unlock(s.free_lock)
        busy_lock(s, vn)
        busy_change_begin(s, vn)
        bt_insert(vn, busy)
        test_pause(PAUSE_PUBLISH)
        busy_change_end(s, vn)
        busy_unlock(s, vn)
    out[0] = nva
    return ALLOC_OK


cdef alloc_status_t space_alloc(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                                uint64_t vlast, uint64_t tag, uint64_t* out) noexcept nogil:
    """alloc_vmap_area() / __alloc_vmap_area(): the search of the space's
    profile in [vstart, vlast]; the new area carries tag (its node id + 1, or 0)."""
    cdef va_t* va
    cdef uint64_t nva = 0
    lock_acquire(s.free_lock)
    va = ft_search(s, szm1, align, vstart, vlast, &nva)
    if va == NULL:
        vm_unlock(s.free_lock)
        return ALLOC_NOSPACE
    if nva > vlast or vlast - nva < szm1:
        vm_unlock(s.free_lock)
        return ALLOC_RANGE
    return carve_and_publish(s, va, nva, szm1, tag, out)


cdef alloc_status_t space_probe(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                                uint64_t vlast, uint64_t* out) noexcept nogil:
    """space_alloc() without the clip: where it would allocate now."""
    cdef va_t* va
    cdef uint64_t nva = 0
    cdef alloc_status_t rc = ALLOC_OK
    lock_acquire(s.free_lock)
    va = ft_search(s, szm1, align, vstart, vlast, &nva)
    if va == NULL:
        rc = ALLOC_NOSPACE
    elif nva > vlast or vlast - nva < szm1:
        rc = ALLOC_RANGE
    else:
        out[0] = nva
    vm_unlock(s.free_lock)
    return rc


cdef alloc_status_t space_alloc_at(space_t* s, uint64_t addr, uint64_t szm1,
                                   uint64_t tag) noexcept nogil:
    """Take exactly [addr, addr + szm1]: out of the free block that holds it
    (the va_clip() of a chosen range, as pcpu_get_vm_areas() does), or an
    area of exactly that range out of a node's pool."""
    cdef va_t* va
    cdef uint64_t out
    cdef unsigned k
    lock_acquire(s.free_lock)
    va = ft_enclosing(s, addr)
    if va != NULL and va.last - addr >= szm1:
        return carve_and_publish(s, va, addr, szm1, tag, &out)
    vm_unlock(s.free_lock)
    for k in range(s.nr_nodes):
        if pool_take_exact(s, k, addr, szm1, tag):
            return ALLOC_OK
    return ALLOC_NOTFREE


cdef int space_free(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last) noexcept nogil:
    """free_vmap_area(): unlink the busy area starting at addr, merge it back.

    Returns UNLINK_OK, UNLINK_MISSING or UNLINK_NOT_START (nothing changed),
    or -1 if the freed range overlapped free space (a corrupted space).
    """
    cdef va_t* va = NULL
    cdef int rc = space_find_unlink(s, addr, &va)
    cdef int merged
    cdef bint sparse
    if rc != UNLINK_OK:
        return rc
    start[0] = va.start
    last[0] = va.last
    lock_acquire(s.free_lock)
    merged = ft_merge(s, va)
    if merged != 0:
        slab_free(&s.slab, va)          # refused, as the kernel WARNs and refuses
    sparse = slab_sparse(&s.slab)
    vm_unlock(s.free_lock)
    if sparse:
        space_compact(s)                # the space shrank a lot: give memory back
    return -1 if merged != 0 else UNLINK_OK

# Allocation and release across the two layers: carve from the free tree
# under its lock, then publish in the node of the new start under the node's
# lock (alloc_vmap_area); unlink from the node, then merge back (free_vmap_area).

cdef enum alloc_status_t:
    ALLOC_OK = 0
    ALLOC_NOSPACE = 1      # no free block fits (-ENOMEM)
    ALLOC_RANGE = 2        # the lowest fit ends past vend (-ERANGE)
    ALLOC_NOMEM = 3        # the slab could not grow


cdef alloc_status_t space_alloc(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                                uint64_t vlast, uint64_t tag, uint64_t* out) noexcept nogil:
    """alloc_vmap_area() / __alloc_vmap_area(): lowest fit in [vstart, vlast];
    the new area carries tag (its node id + 1, or 0)."""
    cdef va_t* va
    cdef va_t* busy
    cdef va_t* spare = NULL
    cdef uint64_t nva = 0
    cdef fit_type_t fit
    cdef vnode_t* vn
    lock_acquire(s.free_lock)
    va = ft_lowest_match(s, szm1, align, vstart, &nva)
    if va == NULL:
        vm_unlock(s.free_lock)
        return ALLOC_NOSPACE
    if nva > vlast or vlast - nva < szm1:
        vm_unlock(s.free_lock)
        return ALLOC_RANGE
    fit = classify_va_fit_type(va, nva, szm1)
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
    vn = &s.nodes[addr_to_node_id(s, nva)]
    if s.global_lock != NULL:
        bt_insert(vn, busy)             # the one lock is already held
        vm_unlock(s.global_lock)
    else:
        vm_unlock(s.free_lock)
        busy_lock(s, vn)
        busy_change_begin(s, vn)
        bt_insert(vn, busy)
        busy_change_end(s, vn)
        busy_unlock(s, vn)
    out[0] = nva
    return ALLOC_OK


cdef int space_free(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last) noexcept nogil:
    """free_vmap_area(): unlink the busy area starting at addr, merge it back.

    Returns UNLINK_OK, UNLINK_MISSING or UNLINK_NOT_START (nothing changed),
    or -1 if the freed range overlapped free space (a corrupted space).
    """
    cdef va_t* va = NULL
    cdef int rc = space_find_unlink(s, addr, &va)
    cdef int merged
    if rc != UNLINK_OK:
        return rc
    start[0] = va.start
    last[0] = va.last
    lock_acquire(s.free_lock)
    merged = ft_merge(s, va)
    if merged != 0:
        slab_free(&s.slab, va)          # refused, as the kernel WARNs and refuses
    vm_unlock(s.free_lock)
    return -1 if merged != 0 else UNLINK_OK

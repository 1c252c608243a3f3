# Busy areas: one plain rb-tree (keyed by start) and address-ordered list per
# node, each under the node's own lock (mm/vmalloc.c, struct vmap_node).  The
# list links reuse prev/next, which a busy record does not need for the free tree.

cdef void bt_insert(vnode_t* vn, va_t* va) noexcept nogil:
    """insert_vmap_area() into one node's busy tree."""
    cdef va_t* n = vn.root.node
    cdef va_t* parent = NULL
    cdef bint left = False
    while n != NULL:
        parent = n
        left = va.start < n.start
        n = n.left if left else n.right
    rb_link(&vn.root, va, parent, left)
    if parent == NULL:
        va.prev = NULL
        va.next = NULL
    elif left:
        va.next = parent
        va.prev = parent.prev
        if parent.prev != NULL:
            parent.prev.next = va
        parent.prev = va
    else:
        va.prev = parent
        va.next = parent.next
        if parent.next != NULL:
            parent.next.prev = va
        parent.next = va
    rb_insert_color(&vn.root, va, &RB_PLAIN)
    vn.nr_areas += 1


cdef void bt_unlink(vnode_t* vn, va_t* va) noexcept nogil:
    """unlink_va() from one node's busy tree."""
    rb_erase(&vn.root, va, &RB_PLAIN)
    if va.prev != NULL:
        va.prev.next = va.next
    if va.next != NULL:
        va.next.prev = va.prev
    vn.nr_areas -= 1


cdef inline va_t* bt_lookup(vnode_t* vn, uint64_t addr) noexcept nogil:
    """__find_vmap_area(): the area of this node with start <= addr <= last."""
    cdef va_t* n = <va_t*>vm_load_ptr(<void**>&vn.root.node)
    while n != NULL:
        if addr < vm_load_u64(&n.start):
            n = <va_t*>vm_load_ptr(<void**>&n.left)
        elif addr > vm_load_u64(&n.last):
            n = <va_t*>vm_load_ptr(<void**>&n.right)
        else:
            return n
    return NULL


cdef inline unsigned node_walk_next(const space_t* s, unsigned i) noexcept nogil:
    # Walk downwards: an area spanning zones sits in the node of its (lower)
    # start, so it is met sooner (the 2025 fix of find_vmap_area()'s walk).
    return i - 1 if i else s.nr_nodes - 1


cdef bint space_find(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last) noexcept nogil:
    """find_vmap_area(): start at addr's node, then the others, wrapping
    around, each under its own lock.  Copies the bounds out under the lock."""
    cdef unsigned i = addr_to_node_id(s, addr)
    cdef unsigned first = i
    cdef vnode_t* vn
    cdef va_t* va
    cdef vm_lock_t* l = NULL
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    while True:
        vn = &s.nodes[i]
        if s.global_lock == NULL:
            l = &vn.lock
            lock_acquire(l)
        va = bt_lookup(vn, addr)
        if va != NULL:
            start[0] = va.start
            last[0] = va.last
        if s.global_lock == NULL:
            vm_unlock(l)
        if va != NULL:
            break
        i = node_walk_next(s, i)
        if i == first:
            break
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    return va != NULL


cdef enum:
    UNLINK_OK = 0
    UNLINK_MISSING = 1      # no busy area holds addr
    UNLINK_NOT_START = 2    # one does, but addr is not its start


cdef int space_find_unlink(space_t* s, uint64_t addr, va_t** out) noexcept nogil:
    """find_unlink_vmap_area(): the same walk, unlinking the area that starts at addr."""
    cdef unsigned i = addr_to_node_id(s, addr)
    cdef unsigned first = i
    cdef vnode_t* vn
    cdef va_t* va
    cdef vm_lock_t* l = NULL
    cdef int rc = UNLINK_MISSING
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    while True:
        vn = &s.nodes[i]
        if s.global_lock == NULL:
            l = &vn.lock
            lock_acquire(l)
        va = bt_lookup(vn, addr)
        if va != NULL:
            if va.start == addr:
                bt_unlink(vn, va)
                out[0] = va
                rc = UNLINK_OK
            else:
                rc = UNLINK_NOT_START
        if s.global_lock == NULL:
            vm_unlock(l)
        if va != NULL:
            break
        i = node_walk_next(s, i)
        if i == first:
            break
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    return rc

# Busy areas: one plain rb-tree (keyed by start) and address-ordered list per
# node, each under the node's own lock (mm/vmalloc.c, struct vmap_node).  The
# list links reuse prev/next, which a busy record does not need for the free tree.

cdef void tree_insert(rb_root_t* root, size_t* count, va_t* va) noexcept nogil:
    """insert_vmap_area(): into a tree (and list) of areas keyed by start."""
    cdef va_t* n = root.node
    cdef va_t* parent = NULL
    cdef bint left = False
    while n != NULL:
        parent = n
        left = va.start < n.start
        n = n.left if left else n.right
    rb_link(root, va, parent, left)
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
    rb_insert_color(root, va, &RB_PLAIN)
    cnt_add(count, 1)


cdef void tree_unlink(rb_root_t* root, size_t* count, va_t* va) noexcept nogil:
    """unlink_va(): from a tree (and list) of areas keyed by start."""
    rb_erase(root, va, &RB_PLAIN)
    if va.prev != NULL:
        va.prev.next = va.next
    if va.next != NULL:
        va.next.prev = va.prev
    cnt_add(count, -1)


cdef inline void bt_insert(vnode_t* vn, va_t* va) noexcept nogil:
    """Into one node's busy tree."""
    tree_insert(&vn.root, &vn.nr_areas, va)


cdef inline void bt_unlink(vnode_t* vn, va_t* va) noexcept nogil:
    tree_unlink(&vn.root, &vn.nr_areas, va)


cdef inline va_t* bt_lookup(vnode_t* vn, uint64_t addr) noexcept nogil:
    """__find_vmap_area(): the area of this node with start <= addr <= last.
    Only for a caller that keeps writers out."""
    return bt_lookup_root(&vn.root, addr)


cdef inline va_t* bt_lookup_root(rb_root_t* root, uint64_t addr) noexcept nogil:
    cdef va_t* n = root.node
    while n != NULL:
        if addr < n.start:
            n = n.left
        elif addr > n.last:
            n = n.right
        else:
            return n
    return NULL


cdef enum:
    # No rb-tree of 2**64 records is deeper than this: a longer descent can
    # only be a reader racing with rotations, and it gives up (then retries).
    RB_MAX_DEPTH = 128
    OPTIMISTIC_TRIES = 4

cdef inline int bt_lookup_racy(vnode_t* vn, uint64_t addr, uint64_t* start,
                               uint64_t* last) noexcept nogil:
    """The same descent for a reader that holds no lock: every word is read
    once, atomically, and the walk is bounded.  1 found (bounds copied out),
    0 not found, -1 gave up.  The result means something only if the node's
    seq did not move meanwhile; the records it may touch are type-stable."""
    cdef va_t* n = <va_t*>vm_load_ptr(<void**>&vn.root.node)
    cdef uint64_t st, la
    cdef int depth = 0
    while n != NULL:
        depth += 1
        if depth > RB_MAX_DEPTH:
            return -1
        st = vm_load_u64(&n.start)
        if addr < st:
            n = <va_t*>vm_load_ptr(<void**>&n.left)
            continue
        la = vm_load_u64(&n.last)
        if addr > la:
            n = <va_t*>vm_load_ptr(<void**>&n.right)
        else:
            start[0] = st
            last[0] = la
            return 1
    return 0


cdef inline bint node_find(space_t* s, vnode_t* vn, uint64_t addr, uint64_t* start,
                           uint64_t* last) noexcept nogil:
    """Look addr up in one node, with the reader side of the space's lock mode
    (global mode: the caller holds the lock)."""
    cdef va_t* va
    cdef unsigned seq
    cdef int tries, found
    if s.mode == LOCK_OPTIMISTIC:
        for tries in range(OPTIMISTIC_TRIES):
            seq = vm_read_seqbegin(&vn.seq)
            found = bt_lookup_racy(vn, addr, start, last)
            if not vm_read_seqretry(&vn.seq, seq) and found >= 0:
                return found
            vm_atomic_inc(&vn.read_retries)
        vm_atomic_inc(&vn.read_fallbacks)
        # fall back to the lock, as a writer would
    if s.mode == LOCK_RWLOCK:
        read_lock_acquire(&vn.rw)
    elif s.mode != LOCK_GLOBAL:
        lock_acquire(&vn.lock)
    va = bt_lookup(vn, addr)
    if va != NULL:
        start[0] = va.start
        last[0] = va.last
    if s.mode == LOCK_RWLOCK:
        vm_read_unlock(&vn.rw)
    elif s.mode != LOCK_GLOBAL:
        vm_unlock(&vn.lock)
    return va != NULL


cdef inline unsigned node_walk_next(const space_t* s, unsigned i) noexcept nogil:
    # v6.16+ walks downwards: an area spanning zones sits in the node of its
    # (lower) start, so it is met sooner ("find the vmap of vmap_nodes in
    # reverse order"); v6.9-v6.15 walked upwards, i + 1.
    if s.walk_down:
        return i - 1 if i else s.nr_nodes - 1
    return i + 1 if i + 1 < s.nr_nodes else 0


cdef bint space_find(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last) noexcept nogil:
    """find_vmap_area(): start at addr's node, then the others, wrapping
    around; the bounds are copied out while the node cannot change."""
    cdef unsigned i = addr_to_node_id(s, addr)
    cdef unsigned first = i
    cdef bint found = False
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    while True:
        found = node_find(s, &s.nodes[i], addr, start, last)
        if found:
            break
        i = node_walk_next(s, i)
        if i == first:
            break
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    return found


cdef bint space_find_unlocked(space_t* s, uint64_t addr, uint64_t* start,
                              uint64_t* last) noexcept nogil:
    """The same walk with no lock at all: only for a space no thread changes
    (the usercopy experiment's "unlocked" floor)."""
    cdef unsigned i = addr_to_node_id(s, addr)
    cdef unsigned first = i
    cdef va_t* va
    while True:
        va = bt_lookup(&s.nodes[i], addr)
        if va != NULL:
            start[0] = va.start
            last[0] = va.last
            return True
        i = node_walk_next(s, i)
        if i == first:
            return False


cdef enum:
    UNLINK_OK = 0
    UNLINK_MISSING = 1      # no busy area holds addr
    UNLINK_NOT_START = 2    # one does, but addr is not its start


cdef int space_find_unlink(space_t* s, uint64_t addr, va_t** out) noexcept nogil:
    """find_unlink_vmap_area(): the same walk as a writer, unlinking the area
    that starts at addr."""
    cdef unsigned i = addr_to_node_id(s, addr)
    cdef unsigned first = i
    cdef vnode_t* vn
    cdef va_t* va
    cdef int rc = UNLINK_MISSING
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    while True:
        vn = &s.nodes[i]
        busy_lock(s, vn)
        va = bt_lookup(vn, addr)
        if va != NULL:
            if va.start == addr:
                busy_change_begin(s, vn)
                bt_unlink(vn, va)
                test_pause(PAUSE_UNLINK)
                busy_change_end(s, vn)
                out[0] = va
                rc = UNLINK_OK
            else:
                rc = UNLINK_NOT_START
        busy_unlock(s, vn)
        if va != NULL:
            break
        i = node_walk_next(s, i)
        if i == first:
            break
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    return rc

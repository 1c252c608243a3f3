# Consistent snapshots of a space: take every lock a view needs, in the one
# fixed order (purge lock; per node its busy, lazy and pool locks; the free
# lock), copy raw bounds and counters into C buffers, drop the locks.  The
# Python objects are built afterwards, by the caller, with no lock held.
#
# While every lock of a view is held no area can move into or out of it, so
# the copy is one state the space really was in: no two areas overlap and no
# area is in two states.  An area that another thread is moving between two
# structures (carved from the free tree but not yet in its node, unlinked
# from its node but not yet merged back or parked as lazy) is in none of them
# at that instant, so it is absent from the copy; so are the areas a purge
# has detached while its on_purge runs (vn.purge_list).
#
# The order holds for every design: "global" is its one lock, v6.8's "split"
# the per-node order with its one node (busy tree, lazy tree, free tree).
# Other paths that nest locks follow it too (a lazy lock, then the free lock
# for the records v6.8's merging lazy tree gives back).  The purge lock is
# held across on_purge: a view taken from inside it passes SNAP_PURGE_HELD.

cdef enum:
    SNAP_BUSY = 1       # busy areas, node by node, in address order within a node
    SNAP_LAZY = 2       # lazily freed areas, likewise
    SNAP_POOLED = 4     # pooled areas, node by node, class by class, head first
    SNAP_FREE = 8       # free blocks in address order
    SNAP_COUNTS = 16    # every counter stats() reports (takes every lock)
    # The caller already holds the purge lock: it runs on_purge, which the
    # kernel calls with vmap_purge_lock held.  Not taken again, not released.
    SNAP_PURGE_HELD = 32

ctypedef struct snap_area_t:
    uint64_t start
    uint64_t last
    unsigned node

ctypedef struct node_counts_t:
    size_t nr_areas
    size_t nr_lazy
    size_t nr_pooled
    uint64_t busy_spans         # sum of (last - start) over the node's busy areas
    uint64_t acquisitions       # of the node's busy lock
    uint64_t contended
    uint64_t read_waits
    uint64_t read_retries
    uint64_t read_fallbacks

ctypedef struct snap_t:
    snap_area_t* areas[4]       # indexed by snap_kind(): busy, lazy, pooled, free
    size_t n[4]
    size_t cap[4]
    node_counts_t* nodes        # SNAP_COUNTS: one per node
    size_t* pool_len            # SNAP_COUNTS: nr_nodes * MAX_VA_SIZE_PAGES
    size_t nr_free
    uint64_t free_spans
    uint64_t largest_span
    bint any_free
    size_t slab_bytes
    size_t slab_records
    uint64_t slab_compactions
    uint64_t lazy_nr
    uint64_t purges
    uint64_t tlb_flushes
    uint64_t purged_areas
    uint64_t free_acquisitions  # the free lock, or the global lock
    uint64_t free_contended


cdef void snap_lock(space_t* s, unsigned what) noexcept nogil:
    """Every lock the view needs, in the fixed order (see the top of this file)."""
    cdef unsigned k
    cdef bint counts = (what & SNAP_COUNTS) != 0
    if counts and not what & SNAP_PURGE_HELD:
        lock_acquire(s.purge_lock)
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
        return
    for k in range(s.nr_nodes):
        if counts or what & SNAP_BUSY:
            lock_acquire(&s.nodes[k].lock)
        if counts or what & SNAP_LAZY:
            lock_acquire(&s.nodes[k].lazy_lock)
        if counts or what & SNAP_POOLED:
            lock_acquire(&s.nodes[k].pool_lock)
    if counts or what & SNAP_FREE:
        lock_acquire(s.free_lock)


cdef void snap_unlock(space_t* s, unsigned what) noexcept nogil:
    cdef unsigned k
    cdef bint counts = (what & SNAP_COUNTS) != 0
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    else:
        if counts or what & SNAP_FREE:
            vm_unlock(s.free_lock)
        for k in range(s.nr_nodes):
            if counts or what & SNAP_POOLED:
                vm_unlock(&s.nodes[k].pool_lock)
            if counts or what & SNAP_LAZY:
                vm_unlock(&s.nodes[k].lazy_lock)
            if counts or what & SNAP_BUSY:
                vm_unlock(&s.nodes[k].lock)
    if counts and not what & SNAP_PURGE_HELD:
        vm_unlock(s.purge_lock)


cdef void snap_free(snap_t* sn) noexcept nogil:
    cdef int i
    for i in range(4):
        free(sn.areas[i])
        sn.areas[i] = NULL
    free(sn.nodes)
    free(sn.pool_len)
    sn.nodes = NULL
    sn.pool_len = NULL


cdef void snap_counts_now(space_t* s, size_t* counts) noexcept nogil:
    """How many areas each view holds (exact under its locks, a hint without)."""
    cdef unsigned k
    counts[0] = counts[1] = counts[2] = 0
    for k in range(s.nr_nodes):
        counts[0] += cnt_peek(&s.nodes[k].nr_areas)
        counts[1] += cnt_peek(&s.nodes[k].nr_lazy)
        counts[2] += cnt_peek(&s.nodes[k].nr_pooled)
    counts[3] = 0      # nr_free is not read without its lock: the first try sizes it


cdef size_t snap_copy_node(space_t* s, unsigned k, int kind, snap_area_t* out, size_t n) noexcept nogil:
    """Append node k's areas of one kind (busy, lazy or pooled) to out[n:]."""
    cdef vnode_t* vn = &s.nodes[k]
    cdef va_t* va
    cdef size_t cls
    if kind == 2:
        for cls in range(<size_t>MAX_VA_SIZE_PAGES):
            va = vn.pools[cls].head
            while va != NULL:
                out[n].start = va.start
                out[n].last = va.last
                out[n].node = k
                n += 1
                va = va.next
        return n
    va = rb_first(vn.root.node if kind == 0 else vn.lazy_root.node)
    while va != NULL:
        out[n].start = va.start
        out[n].last = va.last
        out[n].node = k
        n += 1
        va = va.next
    return n


cdef bint snap_fits(space_t* s, unsigned what, snap_t* sn) noexcept nogil:
    """Under the locks: do the buffers hold every area?  If not, cap[] is set
    to what is needed now (plus room for growth) for the next try."""
    cdef size_t need[4]
    cdef unsigned k
    cdef int i
    cdef bint fits = True
    need[0] = need[1] = need[2] = need[3] = 0
    # Only the counts the held locks guard (the others may be changing).
    for k in range(s.nr_nodes):
        if what & SNAP_BUSY:
            need[0] += s.nodes[k].nr_areas
        if what & SNAP_LAZY:
            need[1] += s.nodes[k].nr_lazy
        if what & SNAP_POOLED:
            need[2] += s.nodes[k].nr_pooled
    if what & SNAP_FREE:
        need[3] = s.nr_free
    for i in range(4):
        if what & (1 << i) and need[i] > sn.cap[i]:
            sn.cap[i] = need[i] + need[i] // 8 + 16
            fits = False
    return fits


cdef void snap_take_counts(space_t* s, snap_t* sn) noexcept nogil:
    """Every counter stats() reports; the caller holds every lock."""
    cdef unsigned k
    cdef size_t cls
    cdef vnode_t* vn
    cdef node_counts_t* nc
    cdef va_t* va
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        nc = &sn.nodes[k]
        nc.nr_areas = vn.nr_areas
        nc.nr_lazy = vn.nr_lazy
        nc.nr_pooled = vn.nr_pooled
        nc.busy_spans = 0
        va = rb_first(vn.root.node)
        while va != NULL:
            nc.busy_spans += va.last - va.start
            va = va.next
        nc.acquisitions = vn.lock.acquisitions
        nc.contended = vn.lock.contended
        # Lock-free readers bump these with atomic adds: load them atomically.
        nc.read_waits = vm_load_u64(&vn.rw.read_waits)
        nc.read_retries = vm_load_u64(&vn.read_retries)
        nc.read_fallbacks = vm_load_u64(&vn.read_fallbacks)
        for cls in range(<size_t>MAX_VA_SIZE_PAGES):
            sn.pool_len[k * MAX_VA_SIZE_PAGES + cls] = vn.pools[cls].len
    sn.nr_free = s.nr_free
    sn.free_spans = 0
    va = rb_first(s.free_root.node)
    while va != NULL:
        sn.free_spans += va.last - va.start
        va = va.next
    sn.any_free = s.free_root.node != NULL
    sn.largest_span = s.free_root.node.aux if sn.any_free else 0
    sn.slab_bytes = slab_bytes(&s.slab)
    sn.slab_records = s.slab.in_use
    sn.slab_compactions = s.slab.compactions
    sn.lazy_nr = vm_load_u64(&s.lazy_nr)
    sn.purges = s.purges
    sn.tlb_flushes = s.tlb_flushes
    sn.purged_areas = s.purged_areas
    if s.global_lock != NULL:
        sn.free_acquisitions = s.global_lock.acquisitions
        sn.free_contended = s.global_lock.contended
    else:
        sn.free_acquisitions = s.locks[0].acquisitions
        sn.free_contended = s.locks[0].contended


cdef int space_snapshot(space_t* s, unsigned what, snap_t* sn) noexcept nogil:
    """Copy the views in `what` at one instant; 0, or -1 when a buffer could
    not be allocated (then nothing is held and sn holds nothing)."""
    cdef size_t hint[4]
    cdef unsigned k
    cdef int i
    cdef int overflow = 0
    cdef va_t* va
    memset(sn, 0, sizeof(snap_t))
    snap_counts_now(s, hint)
    for i in range(4):
        sn.cap[i] = hint[i] + hint[i] // 8 + 16
    if what & SNAP_COUNTS:
        sn.nodes = <node_counts_t*>vm_malloc(vm_mul_size(s.nr_nodes, sizeof(node_counts_t), &overflow))
        sn.pool_len = <size_t*>vm_malloc(vm_mul_size(s.nr_nodes, MAX_VA_SIZE_PAGES * sizeof(size_t),
                                                     &overflow))
        if sn.nodes == NULL or sn.pool_len == NULL or overflow:
            snap_free(sn)
            return -1
    while True:
        for i in range(4):
            if what & (1 << i):
                free(sn.areas[i])
                sn.areas[i] = <snap_area_t*>vm_malloc(vm_mul_size(sn.cap[i], sizeof(snap_area_t),
                                                                  &overflow))
                if sn.areas[i] == NULL or overflow:
                    snap_free(sn)
                    return -1
        snap_lock(s, what)
        if snap_fits(s, what, sn):
            break
        snap_unlock(s, what)
    for k in range(s.nr_nodes):
        for i in range(3):
            if what & (1 << i):
                sn.n[i] = snap_copy_node(s, k, i, sn.areas[i], sn.n[i])
    if what & SNAP_FREE:
        va = rb_first(s.free_root.node)
        while va != NULL:
            sn.areas[3][sn.n[3]].start = va.start
            sn.areas[3][sn.n[3]].last = va.last
            sn.areas[3][sn.n[3]].node = 0
            sn.n[3] += 1
            va = va.next
    if what & SNAP_COUNTS:
        snap_take_counts(s, sn)
    snap_unlock(s, what)
    return 0


cdef int snap_area_cmp(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<snap_area_t*>a).start
    cdef uint64_t y = (<snap_area_t*>b).start
    return (x > y) - (x < y)


# -- the free tree's shape (pickling; the kernel's aligned search depends on it)

ctypedef struct shape_t:
    uint64_t start
    uint64_t last
    int black
    int depth


cdef size_t ft_copy_shape(space_t* s, shape_t* out, size_t cap) noexcept nogil:
    """The free tree in preorder, bounds, colour and depth per node, into
    out[:cap]; returns how many.  The caller holds the free lock."""
    cdef va_t* n = s.free_root.node
    cdef va_t* p
    cdef size_t k = 0
    cdef int depth = 0
    while n != NULL and k < cap:
        out[k].start = n.start
        out[k].last = n.last
        out[k].black = rb_is_black(n)
        out[k].depth = depth
        k += 1
        if n.left != NULL:
            n = n.left
            depth += 1
        elif n.right != NULL:
            n = n.right
            depth += 1
        else:               # climb to the first ancestor entered from its left with a right child
            while True:
                p = rb_parent(n)
                depth -= 1
                if p == NULL:
                    n = NULL
                    break
                if n == p.left and p.right != NULL:
                    n = p.right
                    depth += 1
                    break
                n = p
    return k


cdef int space_free_shape(space_t* s, shape_t** out, size_t* n) noexcept nogil:
    """A copy of the free tree's shape (ft_copy_shape()) at one instant, in a
    new buffer (*out, freed by the caller); 0, or -1 when it could not be
    allocated (then *out is NULL)."""
    cdef size_t cap
    lock_acquire(s.free_lock)
    cap = s.nr_free
    vm_unlock(s.free_lock)
    while True:
        cap += cap // 8 + 16
        out[0] = <shape_t*>vm_malloc(cap * sizeof(shape_t))
        if out[0] == NULL:
            return -1
        lock_acquire(s.free_lock)
        if s.nr_free <= cap:
            break
        cap = s.nr_free
        vm_unlock(s.free_lock)
        free(out[0])
    n[0] = ft_copy_shape(s, out[0], cap)
    vm_unlock(s.free_lock)
    return 0


cdef int space_shape_free_tree(space_t* s, const shape_t* shape, size_t n) noexcept nogil:
    """Relink the free tree's records as shape (preorder, as ft_copy_shape()
    makes it) and recompute subtree_max_span bottom-up: __setstate__() on a
    new space.  -1 (nothing changed) when the blocks are not shape's, -2 when
    the work buffers cannot be allocated."""
    cdef va_t** inorder = <va_t**>vm_malloc((n + 1) * sizeof(va_t*))
    cdef va_t** order = <va_t**>vm_malloc((n + 1) * sizeof(va_t*))
    cdef va_t** path = <va_t**>vm_malloc((n + 1) * sizeof(va_t*))
    cdef va_t* va
    cdef va_t* parent
    cdef size_t i, lo, hi, mid
    cdef int rc = 0
    if inorder == NULL or order == NULL or path == NULL:
        free(inorder)
        free(order)
        free(path)
        return -2
    lock_acquire(s.free_lock)
    if s.nr_free != n:
        rc = -1
    else:
        i = 0
        va = rb_first(s.free_root.node)
        while va != NULL and i < n:
            inorder[i] = va
            i += 1
            va = va.next
        # Every entry names a block (by bisection on its start) at a depth
        # its parent's path reaches, before anything is relinked.
        for i in range(n):
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if inorder[mid].start < shape[i].start:
                    lo = mid + 1
                else:
                    hi = mid
            if (lo == n or inorder[lo].start != shape[i].start
                    or inorder[lo].last != shape[i].last or shape[i].depth < 0
                    or <size_t>shape[i].depth > i or (i == 0) != (shape[i].depth == 0)
                    or (i > 0 and shape[i].depth > shape[i - 1].depth + 1)):
                rc = -1
                break
            order[i] = inorder[lo]
    if rc == 0:
        for i in range(n):
            va = order[i]
            parent = NULL if shape[i].depth == 0 else path[shape[i].depth - 1]
            va.parent_color = <uintptr_t>parent | <uintptr_t>(RB_BLACK if shape[i].black else RB_RED)
            rb_set_left(va, NULL)
            rb_set_right(va, NULL)
            if parent == NULL:
                rb_set_root(&s.free_root, va)
            elif va.start < parent.start:
                rb_set_left(parent, va)
            else:
                rb_set_right(parent, va)
            path[shape[i].depth] = va
        for i in range(n, 0, -1):                  # children before their parents
            order[i - 1].aux = ft_subtree_max(order[i - 1])
        fc_reset(s)                                # a new tree: the fit cache's facts go
    vm_unlock(s.free_lock)
    free(inorder)
    free(order)
    free(path)
    return rc

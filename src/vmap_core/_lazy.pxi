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
    if va == NULL:
        return ALLOC_NOSPACE
    va.aux = node + 1
    publish_busy(s, va)
    out[0] = va.start
    return ALLOC_OK


cdef void publish_busy(space_t* s, va_t* va) noexcept nogil:
    """Insert a record that left a pool into the busy tree of its node."""
    cdef vnode_t* bn = &s.nodes[addr_to_node_id(s, va.start)]
    vm_atomic_max_u64(&s.widest, va.last - va.start)
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    busy_lock(s, bn)
    busy_change_begin(s, bn)
    bt_insert(bn, va)
    busy_change_end(s, bn)
    busy_unlock(s, bn)
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)


cdef bint space_pool_peek(space_t* s, unsigned node, uint64_t szm1, uint64_t align,
                          uint64_t* out) noexcept nogil:
    """What node_pool_del_va() would hand out now (an aligned head), changing nothing."""
    cdef bint ok
    cdef size_t cls = size_to_va_pool(s, szm1, &ok)
    cdef vnode_t* vn = &s.nodes[node]
    cdef vm_lock_t* l
    cdef bint hit = False
    if not ok or cnt_peek(&vn.pools[cls].len) == 0:
        return False
    l = pool_lock(s, vn)
    lock_acquire(l)
    if vn.pools[cls].head != NULL and not (vn.pools[cls].head.start & (align - 1)):
        out[0] = vn.pools[cls].head.start
        hit = True
    vm_unlock(l)
    return hit


cdef bint pool_take_exact(space_t* s, unsigned node, uint64_t addr, uint64_t szm1,
                          uint64_t tag) noexcept nogil:
    """alloc_at() of a pooled area: take [addr, addr + szm1] out of node's
    pool (wherever it sits in its class) and publish it as busy."""
    cdef bint ok
    cdef size_t cls = size_to_va_pool(s, szm1, &ok)
    cdef vnode_t* vn = &s.nodes[node]
    cdef vm_lock_t* l
    cdef va_t* va
    if not ok or cnt_peek(&vn.pools[cls].len) == 0:
        return False
    l = pool_lock(s, vn)
    lock_acquire(l)
    va = vn.pools[cls].head
    while va != NULL and not (va.start == addr and va.last - va.start == szm1):
        va = va.next
    if va != NULL:
        pool_unlink(&vn.pools[cls], va)
        cnt_add(&vn.nr_pooled, -1)
    vm_unlock(l)
    if va == NULL:
        return False
    va.aux = tag
    publish_busy(s, va)
    return True


cdef void lazy_link(vnode_t* vn, va_t* va, va_t* parent, bint left) noexcept nogil:
    """Hang va in a lazy tree at a place found by descending (insert_vmap_area())."""
    rb_link(&vn.lazy_root, va, parent, left)
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
    rb_insert_color(&vn.lazy_root, va, &RB_PLAIN)
    cnt_add(&vn.nr_lazy, 1)


cdef int lazy_merge_or_add(vnode_t* vn, va_t* va, va_t** spent) noexcept nogil:
    """v6.8's free_vmap_area_noflush(): merge_or_add_vmap_area() into the one
    purge tree, so lazily freed neighbours become one area.  Records it frees
    go to spent[0..1] for the caller to give back under the free lock; returns
    how many."""
    cdef va_t* n = vn.lazy_root.node
    cdef va_t* parent = NULL
    cdef va_t* prev
    cdef va_t* next
    cdef bint left = False
    cdef bint join_next, join_prev
    while n != NULL:
        parent = n
        left = va.last < n.start
        n = n.left if left else n.right
    if parent == NULL:
        prev = next = NULL
    elif left:
        next = parent
        prev = parent.prev
    else:
        prev = parent
        next = parent.next
    join_next = next != NULL and va.last != UINT64_MAX and next.start == va.last + 1
    join_prev = prev != NULL and va.start != 0 and prev.last == va.start - 1
    # (Stores through vm_store_u64: a lock-free reader may still hold these records.)
    if join_next and join_prev:
        tree_unlink(&vn.lazy_root, &vn.nr_lazy, next)
        vm_store_u64(&prev.last, next.last)
        spent[0] = next
        spent[1] = va
        return 2
    if join_next:
        vm_store_u64(&next.start, va.start)
        spent[0] = va
        return 1
    if join_prev:
        vm_store_u64(&prev.last, va.last)
        spent[0] = va
        return 1
    lazy_link(vn, va, parent, left)
    return 0


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
                         bint* over, uint64_t* nr_lazy) noexcept nogil:
    """free_vmap_area_noflush(): unlink the busy area and park it in the lazy
    tree of its tagged node (or the node of its start), unmerged (v6.8: merged
    in the one purge tree).  nr_lazy: vmap_lazy_nr after this free."""
    cdef va_t* va = NULL
    cdef int rc = space_find_unlink(s, addr, &va)
    cdef vnode_t* vn
    cdef vm_lock_t* l
    cdef uint64_t pages
    cdef va_t* spent[2]
    cdef int nspent = 0
    cdef int i
    if rc != UNLINK_OK:
        return rc
    start[0] = va.start
    last[0] = va.last
    pages = area_pages(s, va)
    vn = &s.nodes[va.aux - 1 if va.aux else addr_to_node_id(s, va.start)]
    l = lazy_lock(s, vn)
    lock_acquire(l)
    if s.lazy_merge:
        nspent = lazy_merge_or_add(vn, va, spent)
    else:
        tree_insert(&vn.lazy_root, &vn.nr_lazy, va)
    # Counted, and merged records given back, under the lazy lock, so that a
    # snapshot holding every lock sees the count and the slab agree with the
    # lazy trees.  The slab is serialised by the free lock, which comes after
    # the lazy locks in the one lock order (in "global" mode it is this lock).
    nr_lazy[0] = vm_atomic_add(&s.lazy_nr, pages)
    if nspent:
        if s.global_lock == NULL:
            lock_acquire(s.free_lock)
        for i in range(nspent):
            slab_free(&s.slab, spent[i])
        if s.global_lock == NULL:
            vm_unlock(s.free_lock)
    vm_unlock(l)
    # The sum wrapped (or this area alone is 2**64 pages): over any maximum.
    over[0] = nr_lazy[0] <= pages - 1 or nr_lazy[0] > s.lazy_max_pages
    return UNLINK_OK


cdef void reclaim_chain(space_t* s, va_t* chain) noexcept nogil:
    """reclaim_list_global(): merge a chain (linked through next) back into
    the free tree, in chain order."""
    cdef va_t* next
    if chain == NULL:
        return
    lock_acquire(s.free_lock)
    while chain != NULL:
        next = chain.next
        ft_merge(s, chain)
        chain = next
    vm_unlock(s.free_lock)


cdef va_t* chain_sort(va_t* head) noexcept nogil:
    """Sort a chain (linked through next) by start: a merge sort."""
    cdef va_t* slow
    cdef va_t* fast
    cdef va_t* b
    cdef va_t* out = NULL
    cdef va_t** tail = &out
    if head == NULL or head.next == NULL:
        return head
    slow = head
    fast = head.next
    while fast != NULL and fast.next != NULL:
        slow = slow.next
        fast = fast.next.next
    b = slow.next
    slow.next = NULL
    head = chain_sort(head)
    b = chain_sort(b)
    while head != NULL and b != NULL:
        if head.start < b.start:
            tail[0] = head
            head = head.next
        else:
            tail[0] = b
            b = b.next
        tail = &tail[0].next
    tail[0] = head if head != NULL else b
    return out


cdef size_t decay_va_pool_node(space_t* s, vnode_t* vn, bint full) noexcept nogil:
    """decay_va_pool_node(): from the head of each class, len >> 2 areas (all
    with full; v6.9: all of a pool of 1-3, as its unsigned n_decay wraps) are
    taken, merged among themselves (the kernel's local decay_root) and given
    back to the free tree in address order; returns how many."""
    cdef size_t cls, n, released = 0
    cdef va_t* chain = NULL
    cdef va_t* va
    cdef va_t* nxt
    cdef vm_lock_t* l = pool_lock(s, vn)
    if cnt_peek(&vn.nr_pooled) == 0:
        return 0
    lock_acquire(l)
    for cls in range(<size_t>MAX_VA_SIZE_PAGES):
        n = vn.pools[cls].len
        if not full:
            n >>= 2
            if n == 0 and not s.decay_keeps_small:
                n = vn.pools[cls].len
        while n:
            va = vn.pools[cls].head
            pool_unlink(&vn.pools[cls], va)
            va.next = chain
            chain = va
            n -= 1
            released += 1
    cnt_add(&vn.nr_pooled, -<int64_t>released)
    vm_unlock(l)
    if chain == NULL:
        return 0
    chain = chain_sort(chain)
    lock_acquire(s.free_lock)
    va = chain
    while va != NULL:                       # merge_or_add_vmap_area() into decay_root
        nxt = va.next
        while nxt != NULL and va.last != UINT64_MAX and nxt.start == va.last + 1:
            vm_store_u64(&va.last, nxt.last)   # records are type-stable: racy readers load it
            va.next = nxt.next
            slab_free(&s.slab, nxt)
            nxt = va.next
        va = nxt
    while chain != NULL:                    # reclaim_list_global(&decay_list)
        nxt = chain.next
        ft_merge(s, chain)
        chain = nxt
    vm_unlock(s.free_lock)
    return released


cdef size_t space_purge_detach(space_t* s, bint full, uint64_t* flush_start,
                               uint64_t* flush_last) noexcept nogil:
    """The first half of __purge_vmap_area_lazy(), under the purge lock: per
    node, decay the pools (v6.9+) and move the lazy tree to the node's purge
    list.  Returns the areas detached and the union of their ranges (the TLB
    flush); space_purge_reclaim() then finishes."""
    cdef unsigned k
    cdef vnode_t* vn
    cdef vm_lock_t* l
    cdef size_t total = 0
    flush_start[0] = UINT64_MAX
    flush_last[0] = 0
    s.purges += 1
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        if not s.lazy_merge:
            decay_va_pool_node(s, vn, full)
        if cnt_peek(&vn.nr_lazy) == 0:
            continue
        l = lazy_lock(s, vn)
        lock_acquire(l)
        vn.purge_list = rb_first(vn.lazy_root.node)     # the list runs on through next
        if vn.purge_list.start < flush_start[0]:
            flush_start[0] = vn.purge_list.start
        if rb_last(vn.lazy_root.node).last > flush_last[0]:
            flush_last[0] = rb_last(vn.lazy_root.node).last
        vm_store_ptr(<void**>&vn.lazy_root.node, NULL)
        vn.nr_purge = vn.nr_lazy
        vm_store_u64(<uint64_t*>&vn.nr_lazy, 0)
        vm_unlock(l)
        total += vn.nr_purge
    if total:
        s.tlb_flushes += 1
        s.purged_areas += total
    return total


cdef void space_purge_reclaim(space_t* s, bint full) noexcept nogil:
    """The second half, after the flush: purge_vmap_node() for each node in
    order.  In address order each area goes to its node's pool (tagged,
    fitting a class, not a full purge: node_pool_add_va() puts it at the head)
    or onto a local list, built by list_add() and so in reverse, which then
    goes back to the free tree (reclaim_list_global()).  v6.8 gives its merged
    lazy areas back in address order."""
    cdef unsigned k
    cdef vnode_t* vn
    cdef va_t* va
    cdef va_t* next
    cdef va_t* to_free
    cdef vm_lock_t* l
    cdef size_t cls
    cdef uint64_t pages = 0
    cdef bint ok
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        va = vn.purge_list
        if va == NULL:
            continue
        vn.purge_list = NULL
        vn.nr_purge = 0
        if s.lazy_merge:
            next = va
            while next != NULL:
                pages += area_pages(s, next)
                next = next.next
            reclaim_chain(s, va)
            continue
        to_free = NULL
        l = pool_lock(s, vn)
        lock_acquire(l)
        while va != NULL:
            next = va.next
            pages += area_pages(s, va)
            cls = size_to_va_pool(s, va.last - va.start, &ok)
            if not full and va.aux and ok:
                pool_push_head(&vn.pools[cls], va)      # node_pool_add_va()
                cnt_add(&vn.nr_pooled, 1)
            else:
                va.next = to_free
                to_free = va
            va = next
        vm_unlock(l)
        reclaim_chain(s, to_free)
    if pages:
        vm_atomic_add(&s.lazy_nr, (<uint64_t>0) - pages)   # subtract


cdef size_t space_purge(space_t* s, bint full, uint64_t* flush_start, uint64_t* flush_last) noexcept nogil:
    """__purge_vmap_area_lazy() in one go, with no flush callback (the native
    stress loop): both halves under the purge lock."""
    cdef size_t n
    lock_acquire(s.purge_lock)
    n = space_purge_detach(s, full, flush_start, flush_last)
    space_purge_reclaim(s, full)
    vm_unlock(s.purge_lock)
    return n


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

# Compaction of the record slab (_slab.pxi) after a space shrank a lot: the
# records of the busy trees and the free tree that sit in the highest chunks
# move to free slots of lower chunks, so that those chunks empty and give
# their pages back.  Nothing the user sees changes: a moved record keeps its
# bounds, colour, augmentation and place in its tree and list; only its
# address in memory differs.  Not in the kernel (its slab pages empty by
# themselves, or stay: slabs do not move objects).
#
# Lazy and pooled areas and the records a thread holds between two locks
# (carved but not yet published, unlinked but not yet merged) stay where
# they are: they are in use, so the bound below leaves room for them.
#
# Readers: the move is done holding every busy lock and the free lock (the
# one lock order, snap_lock()), inside each node's change section, so a
# "node"/"global" reader waits, an "rwlock" reader is shut out, and an
# "optimistic" reader that read the old record retries, its seq having
# moved; the old record stays readable memory (_slab.pxi's argument).

cdef inline bint slab_sparse(slab_t* sl) noexcept nogil:
    """Worth compacting (a slab under compact_min chunks never is): over half
    the resident records are free, and there were half as many frees since
    the last compaction as records are in use now (so its O(records) cost is
    O(1) per free, amortised).  Free lock held."""
    return (sl.nr_resident >= sl.compact_min
            and sl.in_use * 2 < sl.nr_resident * SLAB_CHUNK_RECORDS
            and sl.frees * 2 >= sl.in_use)


cdef size_t slab_compact_bound(slab_t* sl) noexcept nogil:
    """The lowest chunk b such that the records in chunks >= b fit in the
    free slots of the chunks below b."""
    cdef size_t c, free_below = 0, used_below = 0
    cdef slab_chunk_t* m
    for c in range(sl.nr_chunks):
        if free_below >= sl.in_use - used_below:
            return c
        m = &sl.chunks[c]
        free_below += m.nfree
        used_below += SLAB_CHUNK_RECORDS - m.nfree
    return sl.nr_chunks


cdef void va_move(rb_root_t* root, va_t* x, va_t* y) noexcept nogil:
    """y takes x's place in its tree and address-ordered list (x's copy)."""
    vm_store_u64(&y.start, x.start)
    vm_store_u64(&y.last, x.last)
    y.parent_color = x.parent_color
    rb_set_left(y, x.left)
    rb_set_right(y, x.right)
    y.prev = x.prev
    y.next = x.next
    y.aux = x.aux
    if y.left != NULL:
        rb_set_parent(y.left, y)
    if y.right != NULL:
        rb_set_parent(y.right, y)
    if y.prev != NULL:
        y.prev.next = y
    if y.next != NULL:
        y.next.prev = y
    rb_replace_child(root, rb_parent(x), x, y)


cdef size_t tree_compact(slab_t* sl, rb_root_t* root, size_t bound) noexcept nogil:
    """Move every record of a tree that lies in a chunk >= bound; the number moved."""
    cdef va_t* x = rb_first(root.node) if root.node != NULL else NULL
    cdef va_t* nxt
    cdef va_t* y
    cdef size_t moved = 0
    while x != NULL:
        nxt = x.next
        if slab_chunk_of(x) >= bound:
            y = slab_alloc(sl)          # the lowest free slot: below bound, never a new chunk
            if y == NULL or slab_chunk_of(y) >= bound:
                if y != NULL:
                    slab_free(sl, y)
                break
            va_move(root, x, y)
            slab_free(sl, x)
            moved += 1
        x = nxt
    return moved


cdef size_t space_compact(space_t* s) noexcept nogil:
    """Compact the slab if it is still sparse once every lock is held; the
    records moved.  Called holding no lock of the space."""
    cdef size_t bound, moved = 0
    cdef unsigned k
    cdef vnode_t* vn
    snap_lock(s, SNAP_BUSY | SNAP_FREE)
    if slab_sparse(&s.slab):
        bound = slab_compact_bound(&s.slab)
        for k in range(s.nr_nodes):
            vn = &s.nodes[k]
            busy_change_begin(s, vn)
            moved += tree_compact(&s.slab, &vn.root, bound)
            busy_change_end(s, vn)
        moved += tree_compact(&s.slab, &s.free_root, bound)
        s.slab.frees = 0
        s.slab.compactions += 1
    snap_unlock(s, SNAP_BUSY | SNAP_FREE)
    return moved

# Free space: one augmented rb-tree of free blocks, ordered by address, plus
# the address-ordered list through prev/next (mm/vmalloc.c, free_vmap_area_root).
#
# A block is [start, last]; its "span" is last - start (size - 1, so that a
# block of 2**64 bytes still fits in a uint64).  aux holds subtree_max_span,
# the largest span in the node's subtree (subtree_max_size - 1).  Every
# function here runs under the free-tree lock.

cdef extern from "stdint.h":
    uint64_t UINT64_MAX


cdef inline uint64_t ft_subtree_max(va_t* n) noexcept nogil:
    """compute_subtree_max_size()"""
    cdef uint64_t m = n.last - n.start
    if n.left != NULL and n.left.aux > m:
        m = n.left.aux
    if n.right != NULL and n.right.aux > m:
        m = n.right.aux
    return m


# The augmentation callbacks (RB_DECLARE_CALLBACKS_MAX).
cdef void ft_aug_propagate(va_t* n, va_t* stop) noexcept nogil:
    """Recompute upward; stop at the first node whose value did not change."""
    cdef uint64_t m
    while n != stop:
        m = ft_subtree_max(n)
        if n.aux == m:
            break
        n.aux = m
        n = rb_parent(n)

cdef void ft_aug_copy(va_t* old, va_t* new) noexcept nogil:
    new.aux = old.aux

cdef void ft_aug_rotate(va_t* old, va_t* new) noexcept nogil:
    new.aux = old.aux
    old.aux = ft_subtree_max(old)

cdef rb_augment_t FREE_AUG
FREE_AUG.propagate = ft_aug_propagate
FREE_AUG.copy = ft_aug_copy
FREE_AUG.rotate = ft_aug_rotate


cdef inline bint va_fits(va_t* va, uint64_t szm1, uint64_t align, uint64_t vstart,
                         uint64_t* nva_out) noexcept nogil:
    """is_within_this_va(): nva = ALIGN(max(start, vstart), align); nva + size <= end.

    szm1 is size - 1; every step is checked for overflow past 2**64.
    """
    cdef uint64_t base = va.start if va.start > vstart else vstart
    cdef uint64_t rem = base & (align - 1)
    cdef uint64_t nva = base
    if rem:
        nva = base - rem
        if nva > UINT64_MAX - align:
            return False
        nva += align
    if nva > va.last or va.last - nva < szm1:
        return False
    nva_out[0] = nva
    return True


cdef va_t* ft_lowest_match(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                           uint64_t limit, uint64_t* nva_out) noexcept nogil:
    """search="lowest": find_vmap_lowest_match(), but exact for every alignment
    (the answer of the kernel's find_vmap_lowest_linear_match() debug check),
    among the blocks that start at or below limit.

    An in-order walk that skips every subtree whose subtree_max_span is below
    szm1 (no block there can hold the request) and every left subtree lying
    wholly below vstart.  For align <= page_size the first block reached that
    is large enough fits, so this is O(log n), as in the kernel.  For larger
    alignments a large-enough block may still fail on alignment alone; each
    such block costs O(log n) here, and ft_aligned_match() (the fit cache)
    sees to it that a block is passed that way once, not on every search.
    """
    cdef va_t* n = s.free_root.node
    cdef va_t* p
    cdef uint64_t tested = 0
    if n == NULL or n.aux < szm1:
        return NULL
    while True:
        # Descend: leftmost candidate first.
        while True:
            if n.left != NULL and n.left.aux >= szm1 and vstart < n.start:
                n = n.left
                continue
            if n.start > limit:
                s.fc_steps += tested
                return NULL
            tested += 1
            if va_fits(n, szm1, align, vstart, nva_out):
                s.fc_steps += tested
                return n
            if n.right != NULL and n.right.aux >= szm1:
                n = n.right
                continue
            break
        # Climb to the next unvisited ancestor: one we left through its left link.
        while True:
            p = rb_parent(n)
            if p == NULL:
                s.fc_steps += tested
                return NULL
            if p.left == n:
                if p.start > limit:
                    s.fc_steps += tested
                    return NULL
                tested += 1
                if va_fits(p, szm1, align, vstart, nva_out):
                    s.fc_steps += tested
                    return p
                if p.right != NULL and p.right.aux >= szm1:
                    n = p.right
                    break
            n = p


# The fit cache: exact aligned lowest-fit in amortised O(log n).
#
# For align > page_size a block of span >= szm1 may fail on alignment alone
# ("marginal" blocks), and the plain walk tests every one of them below the
# answer on every search: after churn with thread stacks (20 KiB aligned to
# 16 KiB) thousands of them pile up low in the space.  The cache remembers,
# per (szm1, align) class, facts that only ever become false through a free:
#
#   invariant: every free block that fits the class (from its own start,
#   vstart = 0) and starts below `floor` starts inside one of the `holes`.
#
# - A search skips what the facts exclude: it walks each hole (in address
#   order, limited to the hole), then from floor up.  Blocks starting below
#   vstart only matter through the block holding vstart, tested first.  The
#   answer is therefore exactly the linear lowest match.
# - A search from at or below the first fact learns that nothing starting in
#   [vstart, answer) fits: the holes below the answer go and floor (or the
#   answer's hole) moves up to the answer's block.  A failed search sets floor
#   to the top.  Nothing else moves the facts up.
# - Clipping a block (any allocation) only shrinks free blocks: a part of a
#   block that did not fit does not fit either, so the invariant holds.  A free
#   (ft_merge) makes one block, the merged one; if it fits a class and starts
#   below its floor it becomes a hole (absorbing the holes it overlaps; holes
#   lie wholly below the floor, so a block across it lowers the floor).  With
#   FC_HOLES holes in use the two closest are joined into one (a superset:
#   still true, only weaker).  Anything else that rebuilds the tree (restore)
#   forgets every fact.
#
# Bound: a search costs O((1 + h + m) log n), h the holes it walks (each then
# removed unless it holds the answer) and m the marginal blocks it passes
# (each then below floor, or below its hole's start).  A block passed once is
# passed again only after a free merges it into a fitting block (a new hole)
# or after two holes are joined across it, so with at most FC_HOLES fitting
# blocks freed below floor between two searches of a class, an allocation is
# O(log n) amortised (plus O(FC_WAYS * FC_HOLES) per free to keep the facts).
# Searches starting above the first fact (vstart > floor, a custom range) use
# the facts but learn nothing: they cost what the plain walk costs.

cdef inline bint fc_fits(uint64_t start, uint64_t last, uint64_t szm1, uint64_t align) noexcept nogil:
    """is_within_this_va() with vstart = 0: [start, last] holds szm1 + 1 bytes at an aligned address."""
    cdef uint64_t rem = start & (align - 1)
    cdef uint64_t nva = start
    if rem:
        if start - rem > UINT64_MAX - align:
            return False
        nva = start - rem + align
    return nva <= last and last - nva >= szm1


cdef void fc_reset(space_t* s) noexcept nogil:
    """Forget every fact (the free tree was rebuilt)."""
    cdef int w
    for w in range(FC_WAYS):
        s.fcache[w].align = 0
        s.fcache[w].nholes = 0


cdef fit_cache_t* fc_get(space_t* s, uint64_t szm1, uint64_t align) noexcept nogil:
    """The class's way; a new one replaces the least recently used, starting
    from the facts of a class they imply (a smaller size, a smaller alignment
    dividing align: what fits this class fits that one)."""
    cdef int w
    cdef fit_cache_t* e
    cdef fit_cache_t* victim = &s.fcache[0]
    cdef fit_cache_t* donor = NULL
    s.fc_clock += 1
    for w in range(FC_WAYS):
        e = &s.fcache[w]
        if e.align == align and e.szm1 == szm1:
            e.used = s.fc_clock
            return e
    for w in range(FC_WAYS):
        e = &s.fcache[w]
        if e.align == 0:
            victim = e
            break
        if e.used < victim.used:
            victim = e
    for w in range(FC_WAYS):
        e = &s.fcache[w]
        if e != victim and e.align != 0 and e.align <= align and e.szm1 <= szm1:
            if donor == NULL or e.floor > donor.floor:
                donor = e
    if donor != NULL:
        victim[0] = donor[0]
    else:
        victim.floor = 0
        victim.nholes = 0
    victim.szm1 = szm1
    victim.align = align
    victim.used = s.fc_clock
    return victim


cdef void fc_hole_drop(fit_cache_t* e, unsigned i, unsigned k) noexcept nogil:
    """Remove holes [i, i + k)."""
    cdef unsigned j
    for j in range(i, e.nholes - k):
        e.holes[j] = e.holes[j + k]
    e.nholes -= k


cdef void fc_note_free(space_t* s, va_t* va) noexcept nogil:
    """va is the free block a merge just made: keep every class's invariant."""
    cdef int w
    cdef unsigned i, j, best
    cdef fit_cache_t* e
    cdef uint64_t lo, hi, gap, bestgap
    for w in range(FC_WAYS):
        e = &s.fcache[w]
        if e.align == 0 or va.start >= e.floor or not fc_fits(va.start, va.last, e.szm1, e.align):
            continue
        lo = va.start
        hi = va.last
        # Absorb the holes [lo, hi] overlaps (a merge may have swallowed their blocks).
        i = 0
        while i < e.nholes and e.holes[i].last < lo:
            i += 1
        j = i
        while j < e.nholes and e.holes[j].start <= hi:
            if e.holes[j].start < lo:
                lo = e.holes[j].start
            if e.holes[j].last > hi:
                hi = e.holes[j].last
            j += 1
        if j > i:
            fc_hole_drop(e, i, j - i)
        if hi >= e.floor:
            # The block spans the floor (holes lie wholly below it): the floor
            # comes down to the block, exposing only the block itself.
            e.nholes = i
            e.floor = lo
            continue
        if e.nholes == FC_HOLES:
            # Join the two closest holes (the new one counts too): still a superset.
            best = 0
            bestgap = UINT64_MAX
            for j in range(e.nholes - 1):
                gap = e.holes[j + 1].start - e.holes[j].last
                if gap < bestgap:
                    bestgap = gap
                    best = j
            if i > 0 and lo - e.holes[i - 1].last < bestgap:
                lo = e.holes[i - 1].start
                fc_hole_drop(e, i - 1, 1)
                i -= 1
            elif i < e.nholes and e.holes[i].start - hi < bestgap:
                hi = e.holes[i].last
                fc_hole_drop(e, i, 1)
            else:
                e.holes[best].last = e.holes[best + 1].last
                fc_hole_drop(e, best + 1, 1)
                if best < i:
                    i -= 1
        j = e.nholes
        while j > i:
            e.holes[j] = e.holes[j - 1]
            j -= 1
        e.holes[i].start = lo
        e.holes[i].last = hi
        e.nholes += 1


cdef va_t* ft_aligned_match(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                            uint64_t* nva_out) noexcept nogil:
    """ft_lowest_match() for align > page_size, through the fit cache (above):
    the same block, exactly."""
    cdef fit_cache_t* e = fc_get(s, szm1, align)
    cdef va_t* va = NULL
    cdef unsigned i = 0
    cdef uint64_t first = e.holes[0].start if e.nholes else e.floor
    # What it learns joins the facts if nothing lies between them ([0, first)
    # and [vstart, answer); the space has no block below s.start).
    cdef bint learn = vstart <= (first if first > s.start else s.start)
    # The block holding vstart may start below every fact: it goes first.
    if vstart > s.start:
        va = ft_enclosing(s, vstart)
        if va != NULL and va.start < vstart:
            if va_fits(va, szm1, align, vstart, nva_out):
                return va               # learns nothing: a clamped fit
        va = NULL
    if va == NULL:
        while i < e.nholes:
            if e.holes[i].last >= vstart:
                va = ft_lowest_match(s, szm1, align,
                                     vstart if vstart > e.holes[i].start else e.holes[i].start,
                                     e.holes[i].last, nva_out)
                if va != NULL:
                    break
            i += 1
    if va == NULL and e.floor != UINT64_MAX:
        va = ft_lowest_match(s, szm1, align, vstart if vstart > e.floor else e.floor,
                             UINT64_MAX, nva_out)
    if learn:
        if va == NULL:
            e.floor = UINT64_MAX
            e.nholes = 0
        elif i < e.nholes:              # in hole i: the holes below it are empty
            fc_hole_drop(e, 0, i)
            e.holes[0].start = va.start
        else:
            e.nholes = 0
            e.floor = va.start
    return va


cdef va_t* ft_kernel_match(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                           bint adjust) noexcept nogil:
    """find_vmap_lowest_match(), as the kernel walks it.

    With adjust, a subtree qualifies when it holds a block of size + align - 1
    bytes (span >= szm1 + align - 1): any such block fits whatever its
    alignment.  Descend left while the left subtree qualifies and vstart lies
    below the node; test the node; go right when the right subtree qualifies;
    otherwise climb, testing every ancestor, and enter the first right subtree
    that qualifies and starts at or above vstart, moving vstart past that
    ancestor so that the subtree is not entered twice.  Every node tested on
    the way can be the answer, so the result depends on the tree's shape.
    """
    cdef va_t* node = s.free_root.node
    cdef uint64_t need = szm1
    cdef uint64_t nva
    if adjust:
        need = szm1 + (align - 1) if szm1 <= UINT64_MAX - (align - 1) else UINT64_MAX
    while node != NULL:
        if node.left != NULL and node.left.aux >= need and vstart < node.start:
            node = node.left
            continue
        if va_fits(node, szm1, align, vstart, &nva):
            return node
        if node.right != NULL and node.right.aux >= need:
            node = node.right
            continue
        while True:
            node = rb_parent(node)
            if node == NULL:
                break
            if va_fits(node, szm1, align, vstart, &nva):
                return node
            if node.right != NULL and node.right.aux >= need and vstart <= node.start:
                vstart = node.start + 1
                node = node.right
                break
    return NULL


cdef inline uint64_t nva_of(va_t* va, uint64_t align, uint64_t vstart) noexcept nogil:
    """va_alloc()'s start: ALIGN(max(va_start, vstart), align); UINT64_MAX if it
    wraps (never a fit)."""
    cdef uint64_t base = va.start if va.start > vstart else vstart
    cdef uint64_t rem = base & (align - 1)
    if rem == 0:
        return base
    if base - rem > UINT64_MAX - align:
        return UINT64_MAX
    return base - rem + align


cdef va_t* ft_search(space_t* s, uint64_t szm1, uint64_t align, uint64_t vstart,
                     uint64_t vlast, uint64_t* nva_out) noexcept nogil:
    """__alloc_vmap_area()'s search: the block to allocate from, or NULL.
    The kernel profiles do not adjust the length for align <= PAGE_SIZE nor
    for a range that is exactly the request ("(vend - vstart) == size")."""
    cdef va_t* va
    cdef bint adjust
    if s.search_lowest:
        if align > s.page_size and szm1 != UINT64_MAX:
            return ft_aligned_match(s, szm1, align, vstart, nva_out)
        return ft_lowest_match(s, szm1, align, vstart, UINT64_MAX, nva_out)
    adjust = not (align <= s.page_size or vlast - vstart == szm1)
    va = ft_kernel_match(s, szm1, align, vstart, adjust)
    if va != NULL:
        nva_out[0] = nva_of(va, align, vstart)
    return va


cdef va_t* ft_enclosing(space_t* s, uint64_t addr) noexcept nogil:
    """The free block holding addr, or NULL (pvm_find_va_enclose_addr())."""
    cdef va_t* n = s.free_root.node
    while n != NULL:
        if addr < n.start:
            n = n.left
        elif addr > n.last:
            n = n.right
        else:
            return n
    return NULL


cdef inline void ft_list_unlink(va_t* va) noexcept nogil:
    if va.prev != NULL:
        va.prev.next = va.next
    if va.next != NULL:
        va.next.prev = va.prev


cdef void ft_erase(space_t* s, va_t* va) noexcept nogil:
    """unlink_va_augment()"""
    rb_erase(&s.free_root, va, &FREE_AUG)
    ft_list_unlink(va)
    s.nr_free -= 1


cdef extern from *:
    void ft_prefetch "__builtin_prefetch"(const void* p) nogil


cdef int ft_find_place(space_t* s, uint64_t start, uint64_t last,
                       va_t** parent_out, bint* left_out) noexcept nogil:
    """find_va_links(): where [start, last] hangs; -1 if it overlaps a free block."""
    cdef va_t* n = s.free_root.node
    cdef va_t* parent = NULL
    cdef va_t* l
    cdef va_t* r
    cdef bint left = False
    while n != NULL:
        # Branch-free, both children prefetched while this node is compared
        # (as bt_lookup_root()): the side taken is random on a big tree.
        l = n.left
        r = n.right
        ft_prefetch(l)
        ft_prefetch(r)
        parent = n
        if last >= n.start and start <= n.last:
            return -1
        left = last < n.start
        n = l if left else r
    parent_out[0] = parent
    left_out[0] = left
    return 0


cdef void ft_link(space_t* s, va_t* va, va_t* parent, bint left) noexcept nogil:
    """link_va_augment(): hang va at a place found by ft_find_place()."""
    va.aux = va.last - va.start
    rb_link(&s.free_root, va, parent, left)
    # A new left leaf comes just before its parent in address order, a right one just after.
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
    ft_aug_propagate(parent, NULL)
    rb_insert_color(&s.free_root, va, &FREE_AUG)
    s.nr_free += 1


cdef int ft_insert(space_t* s, va_t* va) noexcept nogil:
    """insert_vmap_area_augment(); -1 (nothing changed) on overlap.  A block
    that appears from nowhere (not a merge) makes the fit cache forget."""
    cdef va_t* parent
    cdef bint left
    if ft_find_place(s, va.start, va.last, &parent, &left):
        return -1
    ft_link(s, va, parent, left)
    fc_reset(s)
    return 0


cdef int ft_merge(space_t* s, va_t* va) noexcept nogil:
    """merge_or_add_vmap_area(): give [va.start, va.last] back, merging with
    the neighbours it touches.  va is consumed (linked, or returned to the
    slab).  -1, with nothing changed, if the range overlaps a free block."""
    cdef va_t* parent
    cdef va_t* prev
    cdef va_t* next
    cdef bint left
    cdef bint join_next, join_prev
    if ft_find_place(s, va.start, va.last, &parent, &left):
        return -1
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
    if join_next and join_prev:          # fills a hole: prev absorbs va and next
        ft_erase(s, next)
        vm_store_u64(&prev.last, next.last)
        ft_aug_propagate(prev, NULL)
        slab_free(&s.slab, next)
        slab_free(&s.slab, va)
    elif join_next:
        vm_store_u64(&next.start, va.start)
        ft_aug_propagate(next, NULL)
        slab_free(&s.slab, va)
    elif join_prev:
        vm_store_u64(&prev.last, va.last)
        ft_aug_propagate(prev, NULL)
        slab_free(&s.slab, va)
    else:
        ft_link(s, va, parent, left)
        prev = va
    if join_next and not join_prev:
        prev = next
    fc_note_free(s, prev)
    return 0


cdef enum fit_type_t:
    FL_FIT_TYPE = 1     # the request fills the block
    LE_FIT_TYPE = 2     # at its left edge
    RE_FIT_TYPE = 3     # at its right edge
    NE_FIT_TYPE = 4     # in its middle: the block splits in two


cdef inline fit_type_t classify_va_fit_type(va_t* va, uint64_t nva, uint64_t szm1) noexcept nogil:
    """classify_va_fit_type()"""
    cdef uint64_t nlast = nva + szm1
    if va.start == nva:
        return FL_FIT_TYPE if va.last == nlast else LE_FIT_TYPE
    return RE_FIT_TYPE if va.last == nlast else NE_FIT_TYPE


cdef void va_clip(space_t* s, va_t* va, fit_type_t fit, uint64_t nva, uint64_t szm1,
                  va_t* spare) noexcept nogil:
    """va_clip(): carve [nva, nva + szm1] out of free block va.  FL leaves va
    out of the tree for the caller; NE keeps va as the right-hand part and
    inserts spare for the left-hand one (insert_vmap_area_augment() from va's
    node: the same slot as from the root), which shapes the tree as the
    kernel's does."""
    cdef uint64_t nlast = nva + szm1
    cdef va_t* parent = NULL
    cdef bint left = False
    if fit == FL_FIT_TYPE:
        ft_erase(s, va)
    elif fit == LE_FIT_TYPE:
        vm_store_u64(&va.start, nlast + 1)
        ft_aug_propagate(va, NULL)
    elif fit == RE_FIT_TYPE:
        vm_store_u64(&va.last, nva - 1)
        ft_aug_propagate(va, NULL)
    else:
        vm_store_u64(&spare.start, va.start)
        vm_store_u64(&spare.last, nva - 1)
        vm_store_u64(&va.start, nlast + 1)
        ft_aug_propagate(va, NULL)
        # Cannot overlap: it is the head va just gave up (and, a part of a block,
        # it fits no class that the block did not fit: the fit cache stays true).
        ft_find_place(s, spare.start, spare.last, &parent, &left)
        ft_link(s, spare, parent, left)

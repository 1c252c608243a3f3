# The invariant checker behind VmapSpace.check(), and the test-only hook that
# breaks one invariant on purpose so the tests can show the checker fails.
# Every function here runs with every lock of the space held and returns NULL
# when all is well, else a message naming the broken invariant.

from libc.stdlib cimport qsort


cdef const char* rb_verify(va_t* n, va_t* parent, bint augmented, uint64_t lo, uint64_t hi,
                           int* black_height) noexcept nogil:
    """Colours, black heights, parent links, subtree_max_span, and address
    order: every block of the subtree lies within [lo, hi]."""
    cdef int lh = 0
    cdef int rh = 0
    cdef const char* err
    if n == NULL:
        black_height[0] = 1
        return NULL
    if rb_parent(n) != parent:
        return "rb parent link: a child does not point back to its parent"
    if n.last < n.start or n.start < lo or n.last > hi:
        return "ordering: a block is out of address order in its tree"
    if rb_is_red(n) and (rb_is_red(n.left) or rb_is_red(n.right)):
        return "rb colours: a red node has a red child"
    if n.left != NULL:
        if n.start == 0:
            return "ordering: a block is out of address order in its tree"
        err = rb_verify(n.left, n, augmented, lo, n.start - 1, &lh)
    else:
        err = rb_verify(NULL, n, augmented, lo, hi, &lh)
    if err != NULL:
        return err
    if n.right != NULL:
        if n.last == UINT64_MAX:
            return "ordering: a block is out of address order in its tree"
        err = rb_verify(n.right, n, augmented, n.last + 1, hi, &rh)
    else:
        err = rb_verify(NULL, n, augmented, lo, hi, &rh)
    if err != NULL:
        return err
    if lh != rh:
        return "rb colours: black heights differ"
    if augmented and n.aux != ft_subtree_max(n):
        return "subtree_max_size: a node's value is not the max of its subtree"
    black_height[0] = lh + (1 if rb_is_black(n) else 0)
    return NULL


cdef va_t* rb_next(va_t* n) noexcept nogil:
    """In-order successor through parent links (rb_next())."""
    cdef va_t* p
    if n.right != NULL:
        return rb_first(n.right)
    p = rb_parent(n)
    while p != NULL and n == p.right:
        n = p
        p = rb_parent(n)
    return p


cdef const char* list_verify(va_t* root, size_t expected) noexcept nogil:
    """The prev/next list is the tree's in-order sequence, both ways."""
    cdef va_t* n = rb_first(root)
    cdef va_t* prev = NULL
    cdef size_t count = 0
    while n != NULL:
        if n.prev != prev:
            return "list: a prev link is wrong"
        if n.next != rb_next(n):
            return "list: a next link is not the in-order successor"
        count += 1
        if count > expected:
            return "list: longer than the tree (a cycle or a stray record)"
        prev = n
        n = n.next
    if prev != rb_last(root):
        return "list: does not end at the tree's last node"
    if count != expected:
        return "list: does not hold every node of the tree"
    return NULL


cdef size_t rb_count(va_t* n) noexcept nogil:
    if n == NULL:
        return 0
    return 1 + rb_count(n.left) + rb_count(n.right)


cdef enum block_kind_t:
    BLOCK_FREE = 0
    BLOCK_BUSY = 1
    BLOCK_LAZY = 2
    BLOCK_POOLED = 3

ctypedef struct block_t:
    uint64_t start
    uint64_t last
    int busy            # a block_kind_t


cdef int block_cmp(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<block_t*>a).start
    cdef uint64_t y = (<block_t*>b).start
    return (x > y) - (x < y)


cdef const char* fc_verify(space_t* s) noexcept nogil:
    """The fit cache's invariant (_freetree.pxi): a free block that fits a
    class and starts below its floor starts inside one of its holes; holes
    sorted and disjoint."""
    cdef int w
    cdef unsigned i
    cdef fit_cache_t* e
    cdef va_t* n
    for w in range(FC_WAYS):
        e = &s.fcache[w]
        if e.align == 0:
            continue
        if e.nholes > FC_HOLES:
            return "fit cache: too many holes"
        for i in range(e.nholes):
            if e.holes[i].start > e.holes[i].last or (
                    i > 0 and e.holes[i - 1].last >= e.holes[i].start) or e.holes[i].last >= e.floor:
                return "fit cache: holes out of order, or not below the floor"
        n = rb_first(s.free_root.node)
        i = 0
        while n != NULL and n.start < e.floor:
            if fc_fits(n.start, n.last, e.szm1, e.align):
                while i < e.nholes and e.holes[i].last < n.start:
                    i += 1
                if i == e.nholes or e.holes[i].start > n.start:
                    return "fit cache: a block that fits lies below the floor, in no hole"
            n = n.next
    return NULL


cdef const char* slab_verify(slab_t* s) noexcept nogil:
    """The slab's free accounting (_slab.pxi): each chunk's counts against its
    free list, the bitmap, the lowest-chunk cursor, the empty list, in_use."""
    cdef size_t c, n, used = 0, resident = 0, empties = 0
    cdef slab_chunk_t* m
    cdef va_t* va
    cdef bint bad = False
    for c in range(s.nr_chunks):
        m = &s.chunks[c]
        if m.untouched > SLAB_CHUNK_RECORDS or m.nfree > SLAB_CHUNK_RECORDS:
            bad = True
            break
        if m.untouched < SLAB_CHUNK_RECORDS:
            resident += 1
            bad = bad or <size_t>m.base.start != c
        n = m.untouched
        va = m.free
        while va != NULL and n <= SLAB_CHUNK_RECORDS:
            bad = bad or slab_chunk_of(va) != c
            n += 1
            va = va.next
        bad = bad or n != m.nfree
        bad = bad or ((s.avail[c >> 6] >> (c & 63)) & 1) != (m.nfree > 0)
        bad = bad or (m.nfree > 0 and c < s.cur)
        if m.epos != SLAB_NOT_EMPTY:
            empties += 1
            bad = bad or (m.epos >= s.nr_empty or s.empties[m.epos] != c
                          or m.nfree != SLAB_CHUNK_RECORDS or m.untouched == SLAB_CHUNK_RECORDS)
        if bad:
            break
        used += SLAB_CHUNK_RECORDS - m.nfree
    if (bad or used != s.in_use or resident != s.nr_resident or empties != s.nr_empty
            or slab_next_avail(s, s.cur) != s.cur):
        return "slab: a chunk's free records disagree with its counts"
    return NULL


cdef const char* space_verify(space_t* s, block_t* blocks) noexcept nogil:
    """Everything check() promises; blocks has room for every record in use."""
    cdef int bh = 0
    cdef const char* err
    cdef size_t nblocks = 0
    cdef size_t nbusy, i
    cdef unsigned k
    cdef vnode_t* vn
    cdef va_t* n
    cdef uint64_t lazy_pages = 0
    if s.free_root.node != NULL and rb_is_red(s.free_root.node):
        return "rb colours: the free tree's root is red"
    err = rb_verify(s.free_root.node, NULL, True, s.start, s.last, &bh)
    if err != NULL:
        return err
    if rb_count(s.free_root.node) != s.nr_free:
        return "counts: the free tree does not hold nr_free blocks"
    err = list_verify(s.free_root.node, s.nr_free)
    if err != NULL:
        return err
    err = fc_verify(s)
    if err != NULL:
        return err
    n = rb_first(s.free_root.node)
    while n != NULL:
        if n.next != NULL and n.last + 1 == n.next.start:
            return "coalescing: two free blocks touch"
        blocks[nblocks].start = n.start
        blocks[nblocks].last = n.last
        blocks[nblocks].busy = BLOCK_FREE
        nblocks += 1
        n = n.next
    nbusy = 0
    for k in range(s.nr_nodes):
        vn = &s.nodes[k]
        if vn.root.node != NULL and rb_is_red(vn.root.node):
            return "rb colours: a node's busy-tree root is red"
        err = rb_verify(vn.root.node, NULL, False, s.start, s.last, &bh)
        if err != NULL:
            return err
        if rb_count(vn.root.node) != vn.nr_areas:
            return "counts: a node's busy tree does not hold nr_areas areas"
        err = list_verify(vn.root.node, vn.nr_areas)
        if err != NULL:
            return err
        n = rb_first(vn.root.node)
        while n != NULL:
            if addr_to_node_id(s, n.start) != k:
                return "node placement: a busy area is not in the node of its start"
            blocks[nblocks].start = n.start
            blocks[nblocks].last = n.last
            blocks[nblocks].busy = BLOCK_BUSY
            nblocks += 1
            n = n.next
        nbusy += vn.nr_areas
        err = lazy_pool_verify(s, k, blocks, &nblocks, &lazy_pages)
        if err != NULL:
            return err
    if lazy_pages != s.lazy_nr:
        return "lazy pages: vmap_lazy_nr differs from the pages in the lazy trees"
    if s.slab.in_use != nblocks:
        return "slab: records in use differ from free blocks + busy areas"
    err = slab_verify(&s.slab)
    if err != NULL:
        return err
    qsort(blocks, nblocks, sizeof(block_t), block_cmp)
    if nblocks == 0 or blocks[0].start != s.start:
        return "tiling: free and busy blocks do not begin at start"
    for i in range(1, nblocks):
        if blocks[i - 1].last == UINT64_MAX or blocks[i - 1].last + 1 != blocks[i].start:
            return "tiling: a gap or an overlap between blocks"
        if blocks[i - 1].busy == BLOCK_FREE and blocks[i].busy == BLOCK_FREE:
            return "coalescing: two free blocks touch"
    if blocks[nblocks - 1].last != s.last:
        return "tiling: free and busy blocks do not reach end"
    return NULL


cdef const char* lazy_pool_verify(space_t* s, unsigned k, block_t* blocks, size_t* nblocks,
                                  uint64_t* lazy_pages) noexcept nogil:
    """A node's lazy tree (in the node of its tag, or of its start) and its
    pools (each area in its size class, lists sound, counts right)."""
    cdef vnode_t* vn = &s.nodes[k]
    cdef int bh = 0
    cdef const char* err
    cdef va_t* n
    cdef va_t* prev
    cdef size_t cls, count, pooled = 0
    cdef bint ok
    if vn.lazy_root.node != NULL and rb_is_red(vn.lazy_root.node):
        return "rb colours: a node's lazy-tree root is red"
    err = rb_verify(vn.lazy_root.node, NULL, False, s.start, s.last, &bh)
    if err != NULL:
        return err
    if rb_count(vn.lazy_root.node) != vn.nr_lazy:
        return "counts: a node's lazy tree does not hold nr_lazy areas"
    err = list_verify(vn.lazy_root.node, vn.nr_lazy)
    if err != NULL:
        return err
    n = rb_first(vn.lazy_root.node)
    while n != NULL:
        if (n.aux - 1 if n.aux else addr_to_node_id(s, n.start)) != k:
            return "lazy placement: a lazy area is not in the node of its tag"
        if s.lazy_merge and n.next != NULL and n.last + 1 == n.next.start:
            return "coalescing: two lazy areas touch in v6.8's merging purge tree"
        lazy_pages[0] += (n.last - n.start) // s.page_size + 1
        blocks[nblocks[0]].start = n.start
        blocks[nblocks[0]].last = n.last
        blocks[nblocks[0]].busy = BLOCK_LAZY
        nblocks[0] += 1
        n = n.next
    # Areas a purge has detached and not yet given back (only seen from on_purge).
    n = vn.purge_list
    count = 0
    while n != NULL:
        count += 1
        if count > vn.nr_purge:
            return "purge list: longer than nr_purge"
        lazy_pages[0] += (n.last - n.start) // s.page_size + 1
        blocks[nblocks[0]].start = n.start
        blocks[nblocks[0]].last = n.last
        blocks[nblocks[0]].busy = BLOCK_LAZY
        nblocks[0] += 1
        n = n.next
    if count != vn.nr_purge:
        return "purge list: nr_purge differs from its length"
    for cls in range(<size_t>MAX_VA_SIZE_PAGES):
        n = vn.pools[cls].head
        prev = NULL
        count = 0
        while n != NULL:
            if n.prev != prev:
                return "pools: a prev link is wrong"
            if size_to_va_pool(s, n.last - n.start, &ok) != cls or not ok:
                return "pools: an area is not in its size class"
            count += 1
            if count > vn.pools[cls].len or pooled + count > vn.nr_pooled:
                return "pools: a list is longer than its len"
            blocks[nblocks[0]].start = n.start
            blocks[nblocks[0]].last = n.last
            blocks[nblocks[0]].busy = BLOCK_POOLED
            nblocks[0] += 1
            prev = n
            n = n.next
        if prev != vn.pools[cls].tail or count != vn.pools[cls].len:
            return "pools: tail or len is wrong"
        pooled += count
    if pooled != vn.nr_pooled:
        return "pools: nr_pooled differs from the pools' lengths"
    return NULL


cdef va_t* node_with_areas(space_t* s, size_t min_areas) noexcept nogil:
    cdef unsigned k
    for k in range(s.nr_nodes):
        if s.nodes[k].nr_areas >= min_areas:
            return s.nodes[k].root.node
    return NULL


cdef va_t* first_red(va_t* root) noexcept nogil:
    """The lowest red node of a tree (never its root), or NULL."""
    cdef va_t* n = rb_first(root) if root != NULL else NULL
    while n != NULL and not rb_is_red(n):
        n = rb_next(n)
    return n


cdef int node_with_lazy(space_t* s) noexcept nogil:
    cdef unsigned k
    for k in range(s.nr_nodes):
        if s.nodes[k].lazy_root.node != NULL:
            return <int>k
    return -1


cdef int pool_class_with_areas(space_t* s, unsigned* node) noexcept nogil:
    """The first (node, size class) whose pool holds an area; -1 if none."""
    cdef unsigned k
    cdef size_t c
    for k in range(s.nr_nodes):
        for c in range(<size_t>MAX_VA_SIZE_PAGES):
            if s.nodes[k].pools[c].head != NULL:
                node[0] = k
                return <int>c
    return -1


cdef const char* space_corrupt(space_t* s, const char* kind) noexcept nogil:
    """Break the one invariant named by kind; NULL on success, else why not.
    Each kind makes check() fail with one message of space_verify() (the map
    is CORRUPTIONS in tests/test_check.py)."""
    cdef va_t* root = s.free_root.node
    cdef va_t* a
    cdef va_t* b
    cdef uint64_t t
    cdef unsigned k
    cdef int c
    cdef vnode_t* vn
    if strcmp(kind, "color") == 0:
        if root == NULL:
            return "needs a free block"
        rb_set_color(root, RB_RED)
    elif strcmp(kind, "red_red") == 0:
        # A red node's black parent turns red (the root's colour is its own check).
        a = first_red(root)
        if a == NULL or rb_parent(a) == root:
            return "needs a red free block below the root's children"
        rb_set_color(rb_parent(a), RB_RED)
    elif strcmp(kind, "black_height") == 0:
        a = first_red(root)
        if a == NULL:
            return "needs a red free block"
        rb_set_color(a, RB_BLACK)
    elif strcmp(kind, "parent") == 0:
        if root == NULL or (root.left == NULL and root.right == NULL):
            return "needs a free block with a child"
        a = root.left if root.left != NULL else root.right
        rb_set_parent(a, a)
    elif strcmp(kind, "subtree_max") == 0:
        if root == NULL:
            return "needs a free block"
        root.aux += 1
    elif strcmp(kind, "order") == 0:
        # Swap the ranges of the first and last area of one node's busy tree.
        root = node_with_areas(s, 2)
        if root == NULL:
            return "needs a node with two busy areas"
        a = rb_first(root)
        b = rb_last(root)
        t = a.start; a.start = b.start; b.start = t
        t = a.last; a.last = b.last; b.last = t
    elif strcmp(kind, "coalesce") == 0:
        # Split a free block in two records that touch.
        a = rb_first(root)
        while a != NULL and a.last - a.start < s.page_size:
            a = a.next
        if a == NULL:
            return "needs a free block of two pages"
        b = slab_alloc(&s.slab)
        if b == NULL:
            return "out of memory"
        b.start = a.start + s.page_size
        b.last = a.last
        a.last = a.start + s.page_size - 1
        ft_aug_propagate(a, NULL)
        ft_insert(s, b)
    elif strcmp(kind, "free_count") == 0:
        s.nr_free += 1
    elif strcmp(kind, "node_placement") == 0:
        if s.nr_nodes < 2:
            return "needs nr_nodes >= 2"
        for k in range(s.nr_nodes):
            a = s.nodes[k].root.node
            if a != NULL:
                bt_unlink(&s.nodes[k], a)
                bt_insert(&s.nodes[(k + 1) % s.nr_nodes], a)
                return NULL
        return "needs a busy area"
    elif strcmp(kind, "busy_color") == 0:
        root = node_with_areas(s, 1)
        if root == NULL:
            return "needs a busy area"
        rb_set_color(root, RB_RED)
    elif strcmp(kind, "busy_count") == 0:
        s.nodes[0].nr_areas += 1
    elif strcmp(kind, "tiling") == 0:
        # Drop a free block: a gap.
        if root == NULL:
            return "needs a free block"
        ft_erase(s, root)
        slab_free(&s.slab, root)
    elif strcmp(kind, "tiling_start") == 0:
        # The lowest free block starts a page late (its subtree max kept right).
        a = rb_first(root) if root != NULL else NULL
        if a == NULL or a.start != s.start or a.last - a.start < s.page_size:
            return "needs a free block of two pages at start"
        a.start += s.page_size
        ft_aug_propagate(a, NULL)
    elif strcmp(kind, "tiling_end") == 0:
        a = rb_last(root) if root != NULL else NULL
        if a == NULL or a.last != s.last or a.last - a.start < s.page_size:
            return "needs a free block of two pages at the end"
        a.last -= s.page_size
        ft_aug_propagate(a, NULL)
    elif strcmp(kind, "list") == 0:
        a = rb_first(root)
        if a == NULL or a.next == NULL:
            return "needs two free blocks"
        a.next = a.next.next
    elif strcmp(kind, "list_prev") == 0:
        a = rb_first(root)
        if a == NULL or a.next == NULL:
            return "needs two free blocks"
        a.next.prev = a.next
    elif strcmp(kind, "lazy_pages") == 0:
        s.lazy_nr += 1
    elif strcmp(kind, "slab") == 0:
        s.slab.in_use += 1
    elif strcmp(kind, "slab_chunk") == 0:
        s.slab.chunks[0].nfree ^= 1     # one free record more or less than its list holds
    elif strcmp(kind, "fit_holes") == 0:
        # The fit cache (_freetree.pxi): one class claiming more holes than it has room for.
        fc_reset(s)
        s.fcache[0].szm1, s.fcache[0].align = s.page_size - 1, s.page_size
        s.fcache[0].floor, s.fcache[0].nholes = s.start, FC_HOLES + 1
    elif strcmp(kind, "fit_hole_order") == 0:
        fc_reset(s)
        s.fcache[0].szm1, s.fcache[0].align = s.page_size - 1, s.page_size
        s.fcache[0].floor, s.fcache[0].nholes = s.start, 1
        s.fcache[0].holes[0].start = s.start        # a hole that is not below the floor
        s.fcache[0].holes[0].last = s.start
    elif strcmp(kind, "fit_floor") == 0:
        # A floor above a fitting free block, with no hole for it.
        if root == NULL:
            return "needs a free block"
        fc_reset(s)
        s.fcache[0].szm1, s.fcache[0].align = s.page_size - 1, s.page_size
        s.fcache[0].floor, s.fcache[0].nholes = s.last, 0
    elif strcmp(kind, "lazy_color") == 0:
        c = node_with_lazy(s)
        if c < 0:
            return "needs a lazy area"
        rb_set_color(s.nodes[c].lazy_root.node, RB_RED)
    elif strcmp(kind, "lazy_count") == 0:
        c = node_with_lazy(s)
        if c < 0:
            return "needs a lazy area"
        s.nodes[c].nr_lazy += 1
    elif strcmp(kind, "lazy_placement") == 0:
        c = node_with_lazy(s)
        if c < 0 or s.nr_nodes < 2:
            return "needs a lazy area and nr_nodes >= 2"
        a = rb_first(s.nodes[c].lazy_root.node)
        a.aux = (<unsigned>c + 1) % s.nr_nodes + 1      # the tag of the next node
    elif strcmp(kind, "lazy_coalesce") == 0:
        # Split a lazy area of v6.8's merging purge tree in two that touch.
        c = node_with_lazy(s)
        if not s.lazy_merge or c < 0:
            return "needs a lazy area in v6.8's merging purge tree"
        vn = &s.nodes[c]
        a = rb_first(vn.lazy_root.node)
        while a != NULL and a.last - a.start < s.page_size:
            a = a.next
        if a == NULL:
            return "needs a lazy area of two pages"
        b = slab_alloc(&s.slab)
        if b == NULL:
            return "out of memory"
        b.start = a.start + s.page_size
        b.last = a.last
        b.aux = a.aux
        a.last = a.start + s.page_size - 1
        tree_insert(&vn.lazy_root, &vn.nr_lazy, b)
    elif strcmp(kind, "purge_count") == 0:
        s.nodes[0].nr_purge += 1
    elif strcmp(kind, "purge_list") == 0:
        # A lazy area moves to the purge list without being counted there.
        c = node_with_lazy(s)
        if c < 0:
            return "needs a lazy area"
        vn = &s.nodes[c]
        a = rb_first(vn.lazy_root.node)
        tree_unlink(&vn.lazy_root, &vn.nr_lazy, a)
        a.next = vn.purge_list
        vn.purge_list = a
    elif strcmp(kind, "pool_prev") == 0:
        c = pool_class_with_areas(s, &k)
        if c < 0:
            return "needs a pooled area"
        a = s.nodes[k].pools[c].head
        a.prev = a
    elif strcmp(kind, "pool_class") == 0:
        # The head of one class moves to the next class's list (lens kept right).
        c = pool_class_with_areas(s, &k)
        if c < 0:
            return "needs a pooled area"
        vn = &s.nodes[k]
        a = vn.pools[c].head
        pool_unlink(&vn.pools[c], a)
        pool_push_head(&vn.pools[(c + 1) % MAX_VA_SIZE_PAGES], a)
    elif strcmp(kind, "pool_len_short") == 0:
        c = pool_class_with_areas(s, &k)
        if c < 0:
            return "needs a pooled area"
        s.nodes[k].pools[c].len -= 1
    elif strcmp(kind, "pool_len_long") == 0:
        c = pool_class_with_areas(s, &k)
        if c < 0:
            return "needs a pooled area"
        s.nodes[k].pools[c].len += 1
    elif strcmp(kind, "pooled_count") == 0:
        c = pool_class_with_areas(s, &k)
        if c < 0:
            return "needs a pooled area"
        s.nodes[k].nr_pooled += 1
    else:
        return "unknown kind"
    return NULL

# Red-black tree mechanics, kept apart from what the tree is augmented with
# (as include/linux/rbtree_augmented.h keeps them): the augmentation plugs in
# as three callbacks, and a plain tree passes callbacks that do nothing.
#
# Nodes are the area records themselves (va_t, 64 bytes, like struct
# vmap_area): the colour lives in bit 0 of the parent pointer.  Every store to
# a field that a lock-free reader may load (start, last, left, right) goes
# through the relaxed-atomic helpers of _locks.h.

from libc.stdint cimport int64_t, uint64_t, uintptr_t

cdef extern from "_locks.h" nogil:
    void* vm_load_ptr(void* const* p)
    void vm_store_ptr(void** p, void* v)
    uint64_t vm_load_u64(const uint64_t* p)
    void vm_store_u64(uint64_t* p, uint64_t v)

ctypedef struct va_t:
    uint64_t start          # first address
    uint64_t last           # last address (inclusive: end may be 2**64)
    uintptr_t parent_color  # parent pointer | colour bit
    va_t* left
    va_t* right
    va_t* prev              # address-ordered list (free tree: merge neighbours)
    va_t* next
    uint64_t aux            # free: subtree_max_span; busy: flags

ctypedef struct rb_root_t:
    va_t* node

ctypedef void (*rb_propagate_f)(va_t* node, va_t* stop) noexcept nogil
ctypedef void (*rb_copy_f)(va_t* old, va_t* new) noexcept nogil
ctypedef void (*rb_rotate_f)(va_t* old, va_t* new) noexcept nogil

ctypedef struct rb_augment_t:
    rb_propagate_f propagate   # recompute from node up to (not incl.) stop
    rb_copy_f copy             # new takes old's place: copy old's value
    rb_rotate_f rotate         # new rotated above old: fix both

cdef enum:
    RB_RED = 0
    RB_BLACK = 1


cdef inline va_t* rb_parent(va_t* n) noexcept nogil:
    return <va_t*>(n.parent_color & ~(<uintptr_t>3))

cdef inline bint rb_is_black(va_t* n) noexcept nogil:
    # NULL leaves are black
    return n == NULL or (n.parent_color & 1)

cdef inline bint rb_is_red(va_t* n) noexcept nogil:
    return n != NULL and not (n.parent_color & 1)

cdef inline void rb_set_parent(va_t* n, va_t* p) noexcept nogil:
    n.parent_color = <uintptr_t>p | (n.parent_color & 1)

cdef inline void rb_set_color(va_t* n, int color) noexcept nogil:
    n.parent_color = (n.parent_color & ~(<uintptr_t>1)) | <uintptr_t>color

cdef inline void rb_set_left(va_t* n, va_t* c) noexcept nogil:
    vm_store_ptr(<void**>&n.left, c)

cdef inline void rb_set_right(va_t* n, va_t* c) noexcept nogil:
    vm_store_ptr(<void**>&n.right, c)

cdef inline void rb_set_root(rb_root_t* root, va_t* n) noexcept nogil:
    vm_store_ptr(<void**>&root.node, n)


cdef void rb_noop_propagate(va_t* node, va_t* stop) noexcept nogil:
    pass

cdef void rb_noop_copy(va_t* old, va_t* new) noexcept nogil:
    pass

cdef void rb_noop_rotate(va_t* old, va_t* new) noexcept nogil:
    pass

cdef rb_augment_t RB_PLAIN
RB_PLAIN.propagate = rb_noop_propagate
RB_PLAIN.copy = rb_noop_copy
RB_PLAIN.rotate = rb_noop_rotate


cdef inline void rb_replace_child(rb_root_t* root, va_t* parent, va_t* old,
                                  va_t* new) noexcept nogil:
    if parent == NULL:
        rb_set_root(root, new)
    elif parent.left == old:
        rb_set_left(parent, new)
    else:
        rb_set_right(parent, new)


cdef void rb_rotate_left(rb_root_t* root, va_t* x, const rb_augment_t* aug) noexcept nogil:
    cdef va_t* y = x.right
    cdef va_t* p = rb_parent(x)
    rb_set_right(x, y.left)
    if y.left != NULL:
        rb_set_parent(y.left, x)
    rb_set_parent(y, p)
    rb_replace_child(root, p, x, y)
    rb_set_left(y, x)
    rb_set_parent(x, y)
    aug.rotate(x, y)


cdef void rb_rotate_right(rb_root_t* root, va_t* x, const rb_augment_t* aug) noexcept nogil:
    cdef va_t* y = x.left
    cdef va_t* p = rb_parent(x)
    rb_set_left(x, y.right)
    if y.right != NULL:
        rb_set_parent(y.right, x)
    rb_set_parent(y, p)
    rb_replace_child(root, p, x, y)
    rb_set_right(y, x)
    rb_set_parent(x, y)
    aug.rotate(x, y)


cdef void rb_link(rb_root_t* root, va_t* node, va_t* parent, bint as_left) noexcept nogil:
    """Hang a new red leaf under parent (rb_link_node)."""
    node.parent_color = <uintptr_t>parent       # red
    rb_set_left(node, NULL)
    rb_set_right(node, NULL)
    if parent == NULL:
        rb_set_root(root, node)
    elif as_left:
        rb_set_left(parent, node)
    else:
        rb_set_right(parent, node)


cdef void rb_insert_color(rb_root_t* root, va_t* z, const rb_augment_t* aug) noexcept nogil:
    """Rebalance after rb_link (rb_insert_color / __rb_insert_augmented)."""
    cdef va_t* p
    cdef va_t* g
    cdef va_t* u
    while True:
        p = rb_parent(z)
        if p == NULL:
            rb_set_color(z, RB_BLACK)
            return
        if rb_is_black(p):
            return
        g = rb_parent(p)          # p is red, so it is not the root
        if p == g.left:
            u = g.right
            if rb_is_red(u):      # recolour and go up two levels
                rb_set_color(p, RB_BLACK)
                rb_set_color(u, RB_BLACK)
                rb_set_color(g, RB_RED)
                z = g
                continue
            if z == p.right:
                rb_rotate_left(root, p, aug)
                p = z
            rb_set_color(p, RB_BLACK)
            rb_set_color(g, RB_RED)
            rb_rotate_right(root, g, aug)
            return
        else:
            u = g.left
            if rb_is_red(u):
                rb_set_color(p, RB_BLACK)
                rb_set_color(u, RB_BLACK)
                rb_set_color(g, RB_RED)
                z = g
                continue
            if z == p.left:
                rb_rotate_right(root, p, aug)
                p = z
            rb_set_color(p, RB_BLACK)
            rb_set_color(g, RB_RED)
            rb_rotate_left(root, g, aug)
            return


cdef void rb_erase_color(rb_root_t* root, va_t* x, va_t* xp, const rb_augment_t* aug) noexcept nogil:
    """Restore the black height after a black node left the path to x."""
    cdef va_t* w
    while x != root.node and rb_is_black(x):
        if x == xp.left:
            w = xp.right
            if rb_is_red(w):
                rb_set_color(w, RB_BLACK)
                rb_set_color(xp, RB_RED)
                rb_rotate_left(root, xp, aug)
                w = xp.right
            if rb_is_black(w.left) and rb_is_black(w.right):
                rb_set_color(w, RB_RED)
                x = xp
                xp = rb_parent(x)
            else:
                if rb_is_black(w.right):
                    rb_set_color(w.left, RB_BLACK)
                    rb_set_color(w, RB_RED)
                    rb_rotate_right(root, w, aug)
                    w = xp.right
                rb_set_color(w, xp.parent_color & 1)
                rb_set_color(xp, RB_BLACK)
                rb_set_color(w.right, RB_BLACK)
                rb_rotate_left(root, xp, aug)
                x = root.node
                break
        else:
            w = xp.left
            if rb_is_red(w):
                rb_set_color(w, RB_BLACK)
                rb_set_color(xp, RB_RED)
                rb_rotate_right(root, xp, aug)
                w = xp.left
            if rb_is_black(w.left) and rb_is_black(w.right):
                rb_set_color(w, RB_RED)
                x = xp
                xp = rb_parent(x)
            else:
                if rb_is_black(w.left):
                    rb_set_color(w.right, RB_BLACK)
                    rb_set_color(w, RB_RED)
                    rb_rotate_left(root, w, aug)
                    w = xp.left
                rb_set_color(w, xp.parent_color & 1)
                rb_set_color(xp, RB_BLACK)
                rb_set_color(w.left, RB_BLACK)
                rb_rotate_right(root, xp, aug)
                x = root.node
                break
    if x != NULL:
        rb_set_color(x, RB_BLACK)


cdef void rb_erase(rb_root_t* root, va_t* z, const rb_augment_t* aug) noexcept nogil:
    """Unlink z (rb_erase / rb_erase_augmented)."""
    cdef va_t* y
    cdef va_t* x
    cdef va_t* xp
    cdef va_t* zp = rb_parent(z)
    cdef bint removed_black
    if z.left == NULL or z.right == NULL:
        x = z.left if z.left != NULL else z.right
        removed_black = rb_is_black(z)
        rb_replace_child(root, zp, z, x)
        if x != NULL:
            rb_set_parent(x, zp)
        xp = zp
        aug.propagate(xp, NULL)
    else:
        y = z.right                     # successor: leftmost of the right subtree
        while y.left != NULL:
            y = y.left
        removed_black = rb_is_black(y)
        x = y.right
        if rb_parent(y) == z:
            xp = y
        else:
            xp = rb_parent(y)
            rb_set_left(xp, x)
            if x != NULL:
                rb_set_parent(x, xp)
            rb_set_right(y, z.right)
            rb_set_parent(z.right, y)
        rb_set_left(y, z.left)
        rb_set_parent(z.left, y)
        y.parent_color = z.parent_color     # z's parent and colour
        rb_replace_child(root, zp, z, y)
        aug.copy(z, y)
        if xp != y:
            aug.propagate(xp, y)            # the path that lost y ...
        aug.propagate(y, NULL)              # ... then y's place, which lost z
    if removed_black:
        rb_erase_color(root, x, xp, aug)


cdef inline va_t* rb_first(va_t* n) noexcept nogil:
    if n == NULL:
        return NULL
    while n.left != NULL:
        n = n.left
    return n


cdef inline va_t* rb_last(va_t* n) noexcept nogil:
    if n == NULL:
        return NULL
    while n.right != NULL:
        n = n.right
    return n

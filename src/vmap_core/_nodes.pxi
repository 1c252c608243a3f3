# Busy areas: one plain rb-tree (keyed by start) and address-ordered list per
# node, each under the node's own lock (mm/vmalloc.c, struct vmap_node).  The
# list links reuse prev/next, which a busy record does not need for the free tree.

cdef extern from *:
    void vm_prefetch "__builtin_prefetch"(const void* p) nogil


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
    """The descent, branch-free: one well-predicted test (start <= addr <= last,
    as one unsigned compare), the child picked by a conditional move (both
    loaded, so the compiler emits cmov: a pick by index, &n.left + (addr >
    n.start), added a dependent load to every level), both children
    prefetched while this node is compared."""
    cdef va_t* n = root.node
    cdef va_t* l
    cdef va_t* r
    while n != NULL:
        l = n.left
        r = n.right
        vm_prefetch(l)
        vm_prefetch(r)
        if addr - n.start <= n.last - n.start:
            return n
        n = r if addr > n.start else l
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
    cdef va_t* l
    cdef va_t* r
    cdef uint64_t st, la
    cdef int depth = 0
    while n != NULL:
        depth += 1
        if depth > RB_MAX_DEPTH:
            return -1
        st = vm_load_u64(&n.start)
        la = vm_load_u64(&n.last)
        l = <va_t*>vm_load_ptr(<void**>&n.left)
        r = <va_t*>vm_load_ptr(<void**>&n.right)
        vm_prefetch(l)                  # a prefetch never faults, even on a stale pointer
        vm_prefetch(r)
        if addr - st <= la - st:        # one predictable test, as bt_lookup_root()
            start[0] = st
            last[0] = la
            return 1
        n = r if addr > st else l       # a conditional move, as bt_lookup_root()
    return 0


cdef inline int optimistic_try(vnode_t* vn, uint64_t addr, uint64_t* start,
                               uint64_t* last) noexcept nogil:
    """One lock-free read of a node, validated by its seq: 1 found, 0 not
    there, -1 it saw a change (counted in read_retries)."""
    cdef unsigned seq = vm_read_seqbegin(&vn.seq)
    cdef int found = bt_lookup_racy(vn, addr, start, last)
    if not vm_read_seqretry(&vn.seq, seq) and found >= 0:
        return found
    vm_atomic_inc(&vn.read_retries)
    return -1


cdef inline bint node_read_unlock(space_t* s, vnode_t* vn, uint64_t addr, uint64_t* start,
                                  uint64_t* last) noexcept nogil:
    """The lookup under the reader lock the caller took, then that lock released."""
    cdef va_t* va = bt_lookup(vn, addr)
    if va != NULL:
        start[0] = va.start
        last[0] = va.last
    if s.mode == LOCK_RWLOCK:
        vm_read_unlock(&vn.rw)
    elif s.mode != LOCK_GLOBAL:
        vm_unlock(&vn.lock)
    return va != NULL


cdef int node_find_try(space_t* s, vnode_t* vn, uint64_t addr, uint64_t* start,
                       uint64_t* last) noexcept nogil:
    """One uncontended attempt of node_find(): 1 found, 0 not in this node,
    -1 not answered (the node's lock was busy, or an optimistic read saw a
    change: that try is counted in read_retries, as node_find() counts it)."""
    if s.mode == LOCK_OPTIMISTIC:
        return optimistic_try(vn, addr, start, last)
    if s.mode == LOCK_RWLOCK:
        if not vm_read_trylock(&vn.rw):
            return -1
    elif s.mode != LOCK_GLOBAL:
        if not vm_lock_try(&vn.lock):
            return -1
    return node_read_unlock(s, vn, addr, start, last)


cdef bint node_find_from(space_t* s, vnode_t* vn, uint64_t addr, uint64_t* start,
                         uint64_t* last, int tries) noexcept nogil:
    """node_find() after `tries` optimistic tries were made (and counted)."""
    cdef int found
    if s.mode == LOCK_OPTIMISTIC:
        while tries < OPTIMISTIC_TRIES:
            tries += 1
            found = optimistic_try(vn, addr, start, last)
            if found >= 0:
                return found
        vm_atomic_inc(&vn.read_fallbacks)
        # fall back to the lock, as a writer would
    if s.mode == LOCK_RWLOCK:
        read_lock_acquire(&vn.rw)
    elif s.mode != LOCK_GLOBAL:
        lock_acquire(&vn.lock)
    return node_read_unlock(s, vn, addr, start, last)


cdef inline bint node_find(space_t* s, vnode_t* vn, uint64_t addr, uint64_t* start,
                           uint64_t* last) noexcept nogil:
    """Look addr up in one node, with the reader side of the space's lock mode
    (global mode: the caller holds the lock)."""
    return node_find_from(s, vn, addr, start, last, 0)


cdef inline unsigned node_walk_next(const space_t* s, unsigned i) noexcept nogil:
    # v6.16+ walks downwards: an area spanning zones sits in the node of its
    # (lower) start, so it is met sooner ("find the vmap of vmap_nodes in
    # reverse order"); v6.9-v6.15 walked upwards, i + 1.
    if s.walk_down:
        return i - 1 if i else s.nr_nodes - 1
    return i + 1 if i + 1 < s.nr_nodes else 0


cdef inline uint64_t zone_of(const space_t* s, uint64_t addr) noexcept nogil:
    if s.zone_shift >= 0:
        return addr >> s.zone_shift
    return addr // s.zone_size


cdef int space_find_bounded(space_t* s, uint64_t addr, uint64_t* start,
                            uint64_t* last) noexcept nogil:
    """Not the kernel's walk (off unless switched on: _testhooks.set_bounded_walk()): an area holding
    addr starts in [addr - widest, addr], widest the largest span ever put in
    a busy tree, so only the nodes of those zones can hold it; they are tried
    from addr's own zone down.  The answer is find()'s (areas do not overlap:
    at most one holds addr); a miss costs those nodes, not all of them.
    widest only grows and is raised before an area is published, so every
    area in place when the call starts is within it.  -1: the zones cover
    every node (the kernel's walk then)."""
    cdef uint64_t w = vm_load_u64(&s.widest)
    cdef uint64_t z, zlo
    cdef bint found = False
    if addr < s.start or addr > s.last:
        return 0                        # no area lies outside the space
    z = zone_of(s, addr)
    zlo = zone_of(s, addr - w if addr - s.start > w else s.start)
    if z - zlo >= s.nr_nodes:
        return -1
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    while True:
        found = node_find(s, &s.nodes[z % s.nr_nodes], addr, start, last)
        if found or z == zlo:
            break
        z -= 1
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)
    return found


cdef inline bint space_find(space_t* s, uint64_t addr, uint64_t* start,
                            uint64_t* last) noexcept nogil:
    """find_vmap_area(): start at addr's node, then the others, wrapping
    around; the bounds are copied out while the node cannot change.  The
    common case (a per-node design, the area in addr's own node, its lock
    free or its read unchanged) is inline here; the rest is space_find_rest()."""
    cdef unsigned i
    cdef int rc
    if s.global_lock == NULL and not s.walk_bounded:
        i = addr_to_node_id(s, addr)
        rc = node_find_try(s, &s.nodes[i], addr, start, last)
        if rc > 0:
            return True
        if rc == 0 and s.nr_nodes == 1:
            return False
        return space_find_rest(s, addr, start, last, rc)
    return space_find_rest(s, addr, start, last, -2)


cdef bint space_find_rest(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last,
                          int first_rc) noexcept nogil:
    """space_find() after node_find_try() on addr's node gave first_rc (0: not
    there, -1: not answered, one optimistic try counted), or -2: not tried."""
    cdef int rc
    cdef vnode_t* vn
    if first_rc == -1:
        vn = &s.nodes[addr_to_node_id(s, addr)]
        if node_find_from(s, vn, addr, start, last, 1 if s.mode == LOCK_OPTIMISTIC else 0):
            return True
        first_rc = 0
    if first_rc == 0:
        return space_find_walk(s, addr, start, last, True)
    if s.walk_bounded:
        rc = space_find_bounded(s, addr, start, last)
        if rc >= 0:
            return rc
    return space_find_walk(s, addr, start, last, False)


cdef bint space_find_walk(space_t* s, uint64_t addr, uint64_t* start, uint64_t* last,
                          bint skip_first) noexcept nogil:
    """The walk of find_vmap_area(); skip_first: addr's own node was already
    searched (find_many's grouped descent), so go on from the next one and
    visit each node once, as the kernel's walk does."""
    cdef unsigned i
    cdef unsigned first
    cdef bint found = False
    i = addr_to_node_id(s, addr)
    first = i
    if skip_first:
        i = node_walk_next(s, first)
        if i == first:
            return False
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


# find_many(): several descents in flight at once.  A lookup is a chain of
# dependent cache misses; advancing FM_WIDTH descents one level each per step
# (prefetching the next node of each) overlaps their misses.  Addresses go in
# chunks of FM_CHUNK; a chunk's addresses are grouped by their first node and
# each group is looked up under that node's reader rule, one node at a time
# (a lock is held across at most FM_WIDTH descents, never two node locks at
# once): "node" its spinlock, "rwlock" its read side, "optimistic" nothing,
# then the node's seq validates the whole group (a group that saw a change
# redoes its lookups one by one, with find()'s retries and fallback),
# "global" the one lock over the pass.  A group whose lock is busy waits for
# the chunk's other groups.  The addresses not found in their first node go
# on with find()'s walk in rounds, one node further each (space_find_chunk()).
# Each answer is thus one find() would give: the same node order, the same
# reader rules.

cdef enum:
    FM_WIDTH = 32      # descents in flight
    FM_CHUNK = 64      # addresses per chunk (the most a lock is held across)


cdef inline void bt_lookup_group(va_t* root, const uint64_t* xs, const int* idx, int k,
                                 uint64_t* st, uint64_t* la, signed char* found) noexcept nogil:
    """Up to FM_WIDTH descents of one node's tree (writers kept out by the caller)."""
    cdef va_t* cur[FM_WIDTH]
    cdef va_t* n
    cdef int j, active = k
    cdef uint64_t a
    for j in range(k):
        cur[j] = root
    while active:
        active = 0
        for j in range(k):
            n = cur[j]
            if n == NULL:
                continue
            a = xs[idx[j]]
            if a - n.start <= n.last - n.start:     # as bt_lookup_root(): branch-free
                st[idx[j]] = n.start
                la[idx[j]] = n.last
                found[idx[j]] = 1
                n = NULL
            else:
                n = (<va_t**>&n.left)[a > n.start]
            cur[j] = n
            if n != NULL:
                vm_prefetch(n)
                active += 1


cdef inline void bt_lookup_group_racy(vnode_t* vn, const uint64_t* xs, const int* idx, int k,
                                      uint64_t* st, uint64_t* la, signed char* found) noexcept nogil:
    """bt_lookup_racy() for up to FM_WIDTH addresses at once: atomic loads, each
    descent bounded (found -1: gave up).  Meaningful only if vn.seq held still."""
    cdef va_t* cur[FM_WIDTH]
    cdef va_t* n
    cdef va_t* root = <va_t*>vm_load_ptr(<void**>&vn.root.node)
    cdef int j, depth = 0, active = k
    cdef uint64_t a, s0, l0
    for j in range(k):
        cur[j] = root
    while active:
        depth += 1
        active = 0
        for j in range(k):
            n = cur[j]
            if n == NULL:
                continue
            if depth > RB_MAX_DEPTH:
                found[idx[j]] = -1
                cur[j] = NULL
                continue
            a = xs[idx[j]]
            s0 = vm_load_u64(&n.start)
            l0 = vm_load_u64(&n.last)
            if a - s0 <= l0 - s0:               # branch-free, as bt_lookup_group()
                st[idx[j]] = s0
                la[idx[j]] = l0
                found[idx[j]] = 1
                n = NULL
            else:                               # left and right are adjacent
                n = <va_t*>vm_load_ptr((<void**>&n.left) + (a > s0))
            cur[j] = n
            if n != NULL:
                vm_prefetch(n)
                active += 1


cdef void node_find_group(space_t* s, vnode_t* vn, const uint64_t* xs, const int* idx, int k,
                          uint64_t* st, uint64_t* la, signed char* found) noexcept nogil:
    """Look a group up in its first node, under that node's reader rule."""
    cdef unsigned seq
    cdef int j
    if s.mode == LOCK_OPTIMISTIC:
        seq = vm_read_seqbegin(&vn.seq)
        bt_lookup_group_racy(vn, xs, idx, k, st, la, found)
        if vm_read_seqretry(&vn.seq, seq):
            vm_atomic_inc(&vn.read_retries)
            for j in range(k):            # the node changed: one by one, as find() does
                found[idx[j]] = <signed char>node_find(s, vn, xs[idx[j]], &st[idx[j]], &la[idx[j]])
        else:
            for j in range(k):
                if found[idx[j]] < 0:
                    found[idx[j]] = <signed char>node_find(s, vn, xs[idx[j]], &st[idx[j]],
                                                           &la[idx[j]])
        return
    if s.mode == LOCK_RWLOCK:
        read_lock_acquire(&vn.rw)
    elif s.mode != LOCK_GLOBAL:
        lock_acquire(&vn.lock)
    bt_lookup_group(vn.root.node, xs, idx, k, st, la, found)
    if s.mode == LOCK_RWLOCK:
        vm_read_unlock(&vn.rw)
    elif s.mode != LOCK_GLOBAL:
        vm_unlock(&vn.lock)


cdef bint node_find_group_try(space_t* s, vnode_t* vn, const uint64_t* xs, const int* idx,
                             int k, uint64_t* st, uint64_t* la,
                             signed char* found) noexcept nogil:
    """node_find_group() if the node's reader lock is free now; False (nothing
    done) if another thread holds it."""
    if s.mode == LOCK_NODE:
        if not vm_lock_try(&vn.lock):
            return False
        bt_lookup_group(vn.root.node, xs, idx, k, st, la, found)
        vm_unlock(&vn.lock)
        return True
    if s.mode == LOCK_RWLOCK:
        if not vm_read_trylock(&vn.rw):
            return False
        bt_lookup_group(vn.root.node, xs, idx, k, st, la, found)
        vm_read_unlock(&vn.rw)
        return True
    node_find_group(s, vn, xs, idx, k, st, la, found)
    return True


cdef void space_find_pass(space_t* s, const uint64_t* xs, const int* todo, int n,
                          const unsigned* nid, uint64_t* st, uint64_t* la,
                          signed char* found) noexcept nogil:
    """One node per address: look up xs[todo[i]] in node nid[todo[i]], grouped
    by node (at most FM_WIDTH descents a group).  The groups whose node lock
    another thread holds are left for a second pass: a collision then costs a
    lookup of another node, not a wait (each lookup still runs under its own
    node's reader rule; the global lock, in "global" mode, is held across the
    pass: at most FM_CHUNK lookups)."""
    cdef int order[FM_CHUNK]            # the addresses, group by group
    cdef int gfirst[FM_CHUNK + 1]       # group g is order[gfirst[g]:gfirst[g + 1]]
    cdef unsigned gnode[FM_CHUNK]
    cdef signed char deferred[FM_CHUNK]
    cdef signed char done[FM_CHUNK]
    cdef int i, j, k, g, ng = 0, m = 0
    cdef unsigned node
    for i in range(n):
        done[i] = 0
    for i in range(n):
        if done[i]:
            continue
        node = nid[todo[i]]
        k = 0
        for j in range(i, n):
            if not done[j] and nid[todo[j]] == node:
                done[j] = 1
                if k == 0:
                    gfirst[ng] = m
                    gnode[ng] = node
                    ng += 1
                order[m] = todo[j]
                m += 1
                k += 1
                if k == FM_WIDTH:
                    k = 0
    gfirst[ng] = m
    if s.global_lock != NULL:
        lock_acquire(s.global_lock)
    for g in range(ng):
        deferred[g] = not node_find_group_try(s, &s.nodes[gnode[g]], xs, &order[gfirst[g]],
                                              gfirst[g + 1] - gfirst[g], st, la, found)
    for g in range(ng):
        if deferred[g]:
            node_find_group(s, &s.nodes[gnode[g]], xs, &order[gfirst[g]],
                            gfirst[g + 1] - gfirst[g], st, la, found)
    if s.global_lock != NULL:
        vm_unlock(s.global_lock)


cdef void space_find_chunk(space_t* s, const uint64_t* xs, int n, uint64_t* st, uint64_t* la,
                           signed char* found) noexcept nogil:
    """find() for n <= FM_CHUNK addresses; found[i] 1 or 0, bounds in st/la.
    Every address first in its own node; then the misses go on with the
    kernel's walk in rounds, all of them one node further each round (each
    address still visits the nodes in find()'s order, each once; an area
    holds an address in at most one node, so the answer is find()'s)."""
    cdef unsigned nid[FM_CHUNK]
    cdef int todo[FM_CHUNK]
    cdef int i, m
    cdef unsigned r
    for i in range(n):
        nid[i] = addr_to_node_id(s, xs[i])
        found[i] = 0
        todo[i] = i
    space_find_pass(s, xs, todo, n, nid, st, la, found)
    if s.nr_nodes == 1:
        return
    if s.walk_bounded:
        # Not the kernel's walk: the bounded one starts over from addr's zone.
        for i in range(n):
            if not found[i]:
                found[i] = <signed char>space_find(s, xs[i], &st[i], &la[i])
        return
    for r in range(1, s.nr_nodes):
        m = 0
        for i in range(n):
            if not found[i]:
                nid[i] = node_walk_next(s, nid[i])
                todo[m] = i
                m += 1
        if m == 0:
            return
        space_find_pass(s, xs, todo, m, nid, st, la, found)

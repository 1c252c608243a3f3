"""The kernel's free-space tree, transcribed line by line into Python.

The reference (:mod:`vmap_core.reference`) keeps its free blocks here so that
it is an oracle for the kernel's aligned search too: ``find_vmap_lowest_match()``
tests the blocks *along its path* (``is_within_this_va()`` on the way down and
on the climb back up, shifting ``vstart`` as it goes), so where an allocation
with ``align > PAGE_SIZE`` lands depends on the shape of the red-black tree,
not only on the set of free blocks.  A model of that search is only as good as
its model of the shape, so the shape is produced here by the kernel's own
algorithms, transcribed rather than re-derived:

* ``lib/rbtree.c``: ``__rb_insert()``, ``__rb_erase_augmented()``
  (``include/linux/rbtree_augmented.h``) and ``____rb_erase_color()``, with
  their case numbering, so that every rotation and colour matches;
* ``include/linux/rbtree_augmented.h``: ``RB_DECLARE_CALLBACKS_MAX`` for
  ``subtree_max_size`` (propagate, copy, rotate);
* ``mm/vmalloc.c``: ``find_va_links()``, ``get_va_next_sibling()``,
  ``__link_va()``, ``__unlink_va()``, ``insert_vmap_area_augment()``,
  ``__merge_or_add_vmap_area()``, ``is_within_this_va()``,
  ``find_vmap_lowest_match()``, ``classify_va_fit_type()``, ``va_clip()`` and
  ``va_alloc()``, including the address-sorted list beside the tree.

The Cython core implements the same operations independently (textbook
red-black code with augmentation callbacks); the differential state machine
compares the two trees' shapes and colours after every step.  Addresses are
Python ints, ``va_end`` is exclusive and may be ``2**64``; the kernel's
unsigned wrap-around checks are kept where they decide a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

RB_RED = 0
RB_BLACK = 1
ULONG_LIMIT = 1 << 64       # one past the largest unsigned long


class Node:
    """A ``struct vmap_area`` as the free tree sees it: range, rb links,
    colour, ``subtree_max_size`` and the list links (``va->list``)."""

    __slots__ = ("va_start", "va_end", "left", "right", "parent", "color",
                 "subtree_max_size", "prev", "next")
    va_start: int
    va_end: int
    left: Node | None
    right: Node | None
    parent: Node | None
    color: int
    subtree_max_size: int
    prev: Node
    next: Node

    def __init__(self, va_start: int = 0, va_end: int = 0) -> None:
        self.va_start = va_start
        self.va_end = va_end
        self.left = self.right = self.parent = None
        self.color = RB_RED
        self.subtree_max_size = 0
        self.prev = self.next = self      # list_head: an empty list points at itself

    def __repr__(self) -> str:
        return f"Node({self.va_start:#x}, {self.va_end:#x}, {'rb'[self.color]})"


def va_size(va: Node) -> int:
    return va.va_end - va.va_start


def get_subtree_max_size(node: Node | None) -> int:
    return 0 if node is None else node.subtree_max_size


# -- RB_DECLARE_CALLBACKS_MAX(free_vmap_area_rb_augment_cb, va_size) -----------

def _compute_max(node: Node, exit_: bool) -> bool:
    """RBNAME_compute_max(): True (when exit_) if the value did not change."""
    m = va_size(node)
    if node.left is not None and node.left.subtree_max_size > m:
        m = node.left.subtree_max_size
    if node.right is not None and node.right.subtree_max_size > m:
        m = node.right.subtree_max_size
    if exit_ and node.subtree_max_size == m:
        return True
    node.subtree_max_size = m
    return False


def aug_propagate(rb: Node | None, stop: Node | None) -> None:
    while rb is not stop:
        if _compute_max(rb, True):
            break
        rb = rb.parent


def aug_copy(old: Node, new: Node) -> None:
    new.subtree_max_size = old.subtree_max_size


def aug_rotate(old: Node, new: Node) -> None:
    new.subtree_max_size = old.subtree_max_size
    _compute_max(old, False)


def _noop(*_args: Node | None) -> None:
    pass


Rotate = Callable[[Node, Node], None]
Augment = tuple[Callable[[Node | None, Node | None], None], Rotate, Rotate]
AUGMENTED: Augment = (aug_propagate, aug_copy, aug_rotate)
PLAIN: Augment = (_noop, _noop, _noop)       # rb_insert_color() / rb_erase()


# -- lib/rbtree.c -----------------------------------------------------------

class RbRoot:
    __slots__ = ("rb_node",)
    rb_node: Node | None

    def __init__(self) -> None:
        self.rb_node = None


def _change_child(old: Node, new: Node | None, parent: Node | None, root: RbRoot) -> None:
    """__rb_change_child()"""
    if parent is not None:
        if parent.left is old:
            parent.left = new
        else:
            parent.right = new
    else:
        root.rb_node = new


def _rotate_set_parents(old: Node, new: Node, root: RbRoot, color: int) -> None:
    """__rb_rotate_set_parents(): new takes old's parent and colour; old gets
    new as parent and ``color``."""
    parent = old.parent
    new.parent, new.color = old.parent, old.color
    old.parent, old.color = new, color
    _change_child(old, new, parent, root)


def rb_insert(node: Node, root: RbRoot, augment_rotate: Rotate) -> None:
    """__rb_insert(): rebalance after rb_link_node() hung ``node`` (red)."""
    parent = node.parent
    while True:
        if parent is None:
            node.parent, node.color = None, RB_BLACK
            break
        if parent.color == RB_BLACK:
            break
        gparent = parent.parent
        tmp = gparent.right
        if parent is not tmp:           # parent == gparent->rb_left
            if tmp is not None and tmp.color == RB_RED:
                # Case 1 - color flips
                tmp.parent, tmp.color = gparent, RB_BLACK
                parent.parent, parent.color = gparent, RB_BLACK
                node = gparent
                parent = node.parent
                node.color = RB_RED
                continue
            tmp = parent.right
            if node is tmp:
                # Case 2 - left rotate at parent
                tmp = node.left
                parent.right = tmp
                node.left = parent
                if tmp is not None:
                    tmp.parent, tmp.color = parent, RB_BLACK
                parent.parent, parent.color = node, RB_RED
                augment_rotate(parent, node)
                parent = node
                tmp = node.right
            # Case 3 - right rotate at gparent
            gparent.left = tmp
            parent.right = gparent
            if tmp is not None:
                tmp.parent, tmp.color = gparent, RB_BLACK
            _rotate_set_parents(gparent, parent, root, RB_RED)
            augment_rotate(gparent, parent)
            break
        else:
            tmp = gparent.left
            if tmp is not None and tmp.color == RB_RED:
                # Case 1 - color flips
                tmp.parent, tmp.color = gparent, RB_BLACK
                parent.parent, parent.color = gparent, RB_BLACK
                node = gparent
                parent = node.parent
                node.color = RB_RED
                continue
            tmp = parent.left
            if node is tmp:
                # Case 2 - right rotate at parent
                tmp = node.right
                parent.left = tmp
                node.right = parent
                if tmp is not None:
                    tmp.parent, tmp.color = parent, RB_BLACK
                parent.parent, parent.color = node, RB_RED
                augment_rotate(parent, node)
                parent = node
                tmp = node.left
            # Case 3 - left rotate at gparent
            gparent.right = tmp
            parent.left = gparent
            if tmp is not None:
                tmp.parent, tmp.color = gparent, RB_BLACK
            _rotate_set_parents(gparent, parent, root, RB_RED)
            augment_rotate(gparent, parent)
            break


def _rb_erase_color(parent: Node, root: RbRoot, augment_rotate: Rotate) -> None:
    """____rb_erase_color()"""
    node = None
    while True:
        sibling = parent.right
        if node is not sibling:         # node == parent->rb_left
            if sibling.color == RB_RED:
                # Case 1 - left rotate at parent
                tmp1 = sibling.left
                parent.right = tmp1
                sibling.left = parent
                tmp1.parent, tmp1.color = parent, RB_BLACK
                _rotate_set_parents(parent, sibling, root, RB_RED)
                augment_rotate(parent, sibling)
                sibling = tmp1
            tmp1 = sibling.right
            if tmp1 is None or tmp1.color == RB_BLACK:
                tmp2 = sibling.left
                if tmp2 is None or tmp2.color == RB_BLACK:
                    # Case 2 - sibling color flip
                    sibling.parent, sibling.color = parent, RB_RED
                    if parent.color == RB_RED:
                        parent.color = RB_BLACK
                    else:
                        node = parent
                        parent = node.parent
                        if parent is not None:
                            continue
                    break
                # Case 3 - right rotate at sibling
                tmp1 = tmp2.right
                sibling.left = tmp1
                tmp2.right = sibling
                parent.right = tmp2
                if tmp1 is not None:
                    tmp1.parent, tmp1.color = sibling, RB_BLACK
                augment_rotate(sibling, tmp2)
                tmp1 = sibling
                sibling = tmp2
            # Case 4 - left rotate at parent + color flips
            tmp2 = sibling.left
            parent.right = tmp2
            sibling.left = parent
            tmp1.parent, tmp1.color = sibling, RB_BLACK
            if tmp2 is not None:
                tmp2.parent = parent
            _rotate_set_parents(parent, sibling, root, RB_BLACK)
            augment_rotate(parent, sibling)
            break
        else:
            sibling = parent.left
            if sibling.color == RB_RED:
                # Case 1 - right rotate at parent
                tmp1 = sibling.right
                parent.left = tmp1
                sibling.right = parent
                tmp1.parent, tmp1.color = parent, RB_BLACK
                _rotate_set_parents(parent, sibling, root, RB_RED)
                augment_rotate(parent, sibling)
                sibling = tmp1
            tmp1 = sibling.left
            if tmp1 is None or tmp1.color == RB_BLACK:
                tmp2 = sibling.right
                if tmp2 is None or tmp2.color == RB_BLACK:
                    # Case 2 - sibling color flip
                    sibling.parent, sibling.color = parent, RB_RED
                    if parent.color == RB_RED:
                        parent.color = RB_BLACK
                    else:
                        node = parent
                        parent = node.parent
                        if parent is not None:
                            continue
                    break
                # Case 3 - left rotate at sibling
                tmp1 = tmp2.left
                sibling.right = tmp1
                tmp2.left = sibling
                parent.left = tmp2
                if tmp1 is not None:
                    tmp1.parent, tmp1.color = sibling, RB_BLACK
                augment_rotate(sibling, tmp2)
                tmp1 = sibling
                sibling = tmp2
            # Case 4 - right rotate at parent + color flips
            tmp2 = sibling.right
            parent.left = tmp2
            sibling.right = parent
            tmp1.parent, tmp1.color = sibling, RB_BLACK
            if tmp2 is not None:
                tmp2.parent = parent
            _rotate_set_parents(parent, sibling, root, RB_BLACK)
            augment_rotate(parent, sibling)
            break


def rb_erase(node: Node, root: RbRoot, augment: Augment) -> None:
    """rb_erase_augmented(): __rb_erase_augmented(), then ____rb_erase_color()."""
    propagate, copy, rotate = augment
    child = node.right
    tmp = node.left
    if tmp is None:
        # Case 1: node to erase has no more than 1 child (easy!)
        pparent, pcolor = node.parent, node.color
        parent = pparent
        _change_child(node, child, parent, root)
        if child is not None:
            child.parent, child.color = pparent, pcolor
            rebalance = None
        else:
            rebalance = parent if pcolor == RB_BLACK else None
        tmp = parent
    elif child is None:
        # Still case 1, but this time the child is node->rb_left
        tmp.parent, tmp.color = node.parent, node.color
        parent = node.parent
        _change_child(node, tmp, parent, root)
        rebalance = None
        tmp = parent
    else:
        successor = child
        tmp = child.left
        if tmp is None:
            # Case 2: node's successor is its right child
            parent = successor
            child2 = successor.right
            copy(node, successor)
        else:
            # Case 3: node's successor is leftmost under node's right subtree
            while True:
                parent = successor
                successor = tmp
                tmp = tmp.left
                if tmp is None:
                    break
            child2 = successor.right
            parent.left = child2
            successor.right = child
            child.parent = successor
            copy(node, successor)
            propagate(parent, successor)
        tmp = node.left
        successor.left = tmp
        tmp.parent = successor
        pparent, pcolor = node.parent, node.color
        _change_child(node, successor, pparent, root)
        if child2 is not None:
            successor.parent, successor.color = pparent, pcolor
            child2.parent, child2.color = parent, RB_BLACK
            rebalance = None
        else:
            color2 = successor.color
            successor.parent, successor.color = pparent, pcolor
            rebalance = parent if color2 == RB_BLACK else None
        tmp = successor
    propagate(tmp, None)
    if rebalance is not None:
        _rb_erase_color(rebalance, root, rotate)


# -- list_head ---------------------------------------------------------------

def list_add(new: Node, head: Node) -> None:
    """list_add(): insert new right after head."""
    nxt = head.next
    nxt.prev = new
    new.next = nxt
    new.prev = head
    head.next = new


def list_del_init(entry: Node) -> None:
    entry.prev.next = entry.next
    entry.next.prev = entry.prev
    entry.prev = entry.next = entry


# -- mm/vmalloc.c: the free tree and its list ------------------------------------

class VaTree:
    """An rb-tree of areas and its address-sorted list, as mm/vmalloc.c keeps
    them (``struct rb_root`` + ``struct list_head``).  ``augment`` selects the
    free tree's ``subtree_max_size`` callbacks (``free_vmap_area_root``);
    without it the tree is a plain one (``decay_root`` in
    decay_va_pool_node(), v6.8's purge tree)."""

    def __init__(self, augment: bool = True) -> None:
        self.root = RbRoot()
        self.head = Node()            # the list_head sentinel
        self.augment = augment
        self.count = 0

    # find_va_links() and get_va_next_sibling()
    def find_va_links(self, va: Node,
                      from_node: Node | None = None) -> tuple[Node | None, bool] | None:
        """The place to hang va: (parent, is_left); None on overlap (the
        kernel WARNs and refuses)."""
        node = self.root.rb_node if from_node is None else from_node
        if node is None:
            return (None, False)
        while True:
            if va.va_end <= node.va_start:
                nxt, is_left = node.left, True
            elif va.va_start >= node.va_end:
                nxt, is_left = node.right, False
            else:
                return None
            if nxt is None:
                return (node, is_left)
            node = nxt

    def get_va_next_sibling(self, parent: Node | None, is_left: bool) -> Node | None:
        if parent is None:
            return None
        return parent if is_left else parent.next

    def link_va(self, va: Node, parent: Node | None, is_left: bool) -> None:
        """__link_va()"""
        head = self.head
        if parent is not None:
            head = parent
            if is_left:
                head = head.prev
        # rb_link_node()
        va.parent, va.color = parent, RB_RED
        va.left = va.right = None
        if parent is None:
            self.root.rb_node = va
        elif is_left:
            parent.left = va
        else:
            parent.right = va
        if self.augment:
            rb_insert(va, self.root, aug_rotate)
            va.subtree_max_size = 0
        else:
            rb_insert(va, self.root, _noop)
        list_add(va, head)
        self.count += 1

    def unlink_va(self, va: Node) -> None:
        """__unlink_va()"""
        rb_erase(va, self.root, AUGMENTED if self.augment else PLAIN)
        list_del_init(va)
        va.left = va.right = va.parent = None
        self.count -= 1

    def propagate_from(self, va: Node) -> None:
        """augment_tree_propagate_from()"""
        if self.augment:
            aug_propagate(va, None)

    def insert(self, va: Node, from_node: Node | None = None) -> bool:
        """insert_vmap_area() / insert_vmap_area_augment(); False on overlap."""
        links = self.find_va_links(va, from_node)
        if links is None:
            return False
        self.link_va(va, *links)
        self.propagate_from(va)
        return True

    def merge_or_add(self, va: Node) -> Node | None:
        """__merge_or_add_vmap_area() (+ the propagation of the _augment
        variant).  Returns the area va ended up in, or None on overlap."""
        links = self.find_va_links(va)
        if links is None:
            return None
        parent, is_left = links
        merged = False
        nxt = self.get_va_next_sibling(parent, is_left)
        if nxt is not None:
            if nxt is not self.head and nxt.va_start == va.va_end:
                nxt.va_start = va.va_start
                va = nxt
                merged = True
            if nxt.prev is not self.head:
                sibling = nxt.prev
                if sibling.va_end == va.va_start:
                    if merged:
                        self.unlink_va(va)
                    sibling.va_end = va.va_end
                    va = sibling
                    merged = True
        if not merged:
            self.link_va(va, parent, is_left)
        self.propagate_from(va)
        return va

    # -- searching and clipping ------------------------------------------------
    def lowest_match(self, size: int, align: int, vstart: int,
                     adjust_search_size: bool) -> Node | None:
        """find_vmap_lowest_match()"""
        node = self.root.rb_node
        length = size + align - 1 if adjust_search_size else size
        length = min(length, ULONG_LIMIT)   # a wrapped unsigned sum: no block is that big
        while node is not None:
            if get_subtree_max_size(node.left) >= length and vstart < node.va_start:
                node = node.left
                continue
            if is_within_this_va(node, size, align, vstart):
                return node
            if get_subtree_max_size(node.right) >= length:
                node = node.right
                continue
            while True:
                node = node.parent
                if node is None:
                    break
                if is_within_this_va(node, size, align, vstart):
                    return node
                if get_subtree_max_size(node.right) >= length and vstart <= node.va_start:
                    vstart = node.va_start + 1
                    node = node.right
                    break
        return None

    def lowest_linear_match(self, size: int, align: int, vstart: int) -> Node | None:
        """find_vmap_lowest_linear_match(): the first block in address order
        that fits (what the kernel's debug check compares the tree search with)."""
        va = self.head.next
        while va is not self.head:
            if is_within_this_va(va, size, align, vstart):
                return va
            va = va.next
        return None

    def enclosing(self, addr: int) -> Node | None:
        """The block holding addr, or None (pvm_find_va_enclose_addr())."""
        node = self.root.rb_node
        while node is not None:
            if addr < node.va_start:
                node = node.left
            elif addr >= node.va_end:
                node = node.right
            else:
                return node
        return None

    def clip(self, va: Node, nva_start_addr: int, size: int) -> int:
        """va_clip(): carve [nva, nva + size) out of va (the no-edge fit
        keeps va as the right part and inserts a new area for the left)."""
        kind = classify_va_fit_type(va, nva_start_addr, size)
        lva = None
        if kind == FL_FIT_TYPE:
            self.unlink_va(va)
        elif kind == LE_FIT_TYPE:
            va.va_start += size
        elif kind == RE_FIT_TYPE:
            va.va_end = nva_start_addr
        elif kind == NE_FIT_TYPE:
            lva = Node(va.va_start, nva_start_addr)
            va.va_start = nva_start_addr + size
        else:
            raise AssertionError("va_clip(): the range is not inside the block")
        if kind != FL_FIT_TYPE:
            self.propagate_from(va)
            if lva is not None:
                self.insert(lva, from_node=va)
        return kind

    # -- views -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        va = self.head.next
        while va is not self.head:
            yield va
            va = va.next

    def shape(self) -> list[tuple[int, int, str, int]]:
        """The tree in preorder: (start, end, 'r'|'b', depth) per node."""
        out = []
        stack = [(self.root.rb_node, 0)]
        while stack:
            node, depth = stack.pop()
            if node is None:
                continue
            out.append((node.va_start, node.va_end, "rb"[node.color], depth))
            stack.append((node.right, depth + 1))
            stack.append((node.left, depth + 1))
        return out

    def verify(self) -> None:
        """rb colours and black heights, parent links, order, the list and
        (augmented) subtree_max_size; AssertionError names what is wrong (a
        raise, not an assert statement: it holds under python -O too)."""
        root = self.root.rb_node
        _check(root is None or root.color == RB_BLACK, "free tree: red root")

        def walk(node: Node | None, parent: Node | None, lo: int, hi: int) -> int:
            if node is None:
                return 1
            _check(node.parent is parent, "free tree: parent link")
            _check(lo <= node.va_start < node.va_end <= hi, "free tree: address order")
            if node.color == RB_RED:
                for c in (node.left, node.right):
                    _check(c is None or c.color == RB_BLACK,
                           "free tree: red node with red child")
            lh = walk(node.left, node, lo, node.va_start)
            rh = walk(node.right, node, node.va_end, hi)
            _check(lh == rh, "free tree: black heights differ")
            if self.augment:
                m = max(va_size(node), get_subtree_max_size(node.left),
                        get_subtree_max_size(node.right))
                _check(node.subtree_max_size == m, "free tree: subtree_max_size is stale")
            return lh + (node.color == RB_BLACK)

        walk(root, None, 0, ULONG_LIMIT)
        inorder = []
        stack: list[Node] = []
        node = root
        while stack or node is not None:
            while node is not None:
                stack.append(node)
                node = node.left
            node = stack.pop()
            inorder.append(node)
            node = node.right
        listed = list(self)
        _check(listed == inorder, "free tree: the list is not the tree's in-order sequence")
        _check(len(listed) == self.count, "free tree: count")

    @classmethod
    def from_shape(cls, shape: Sequence[tuple[int, int, str, int]],
                   augment: bool = True) -> VaTree:
        """The tree that shape() described: (start, end, 'r'|'b', depth) in
        preorder, linked as given (no rebalancing), with its list and
        subtree_max_size rebuilt.  ValueError for a sequence that is not a
        preorder, AssertionError (from verify()) for one that is not a sound
        red-black tree in address order."""
        tree = cls(augment)
        path: list[Node] = []           # the nodes from the root to the last one
        nodes: list[Node] = []
        for start, end, colour, depth in shape:
            va = Node(start, end)
            va.color = RB_RED if colour == "r" else RB_BLACK
            if not 0 <= depth <= len(path) or (depth == 0 and nodes):
                raise ValueError(f"node {len(nodes)} at depth {depth} is not in preorder")
            if depth:
                parent = path[depth - 1]
                if start < parent.va_start and parent.left is None and parent.right is None:
                    parent.left = va
                elif start >= parent.va_start and parent.right is None:
                    parent.right = va
                else:
                    raise ValueError(f"node {len(nodes)} has no free place under its parent")
                va.parent = parent
            else:
                tree.root.rb_node = va
            del path[depth:]
            path.append(va)
            nodes.append(va)
        for va in sorted(nodes, key=lambda n: n.va_start):
            list_add(va, tree.head.prev)                    # list_add_tail()
        tree.count = len(nodes)
        if augment:
            for va in reversed(nodes):                      # children before parents
                _compute_max(va, False)
        tree.verify()
        return tree


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)


def is_within_this_va(va: Node, size: int, align: int, vstart: int) -> bool:
    """is_within_this_va(); the kernel's unsigned overflow checks ("can be
    overflowed due to big size or alignment") become: past 2**64 never fits."""
    base = va.va_start if va.va_start > vstart else vstart
    nva_start_addr = (base + align - 1) & -align
    if nva_start_addr + size > ULONG_LIMIT:
        return False
    return nva_start_addr + size <= va.va_end


FL_FIT_TYPE, LE_FIT_TYPE, RE_FIT_TYPE, NE_FIT_TYPE, NOTHING_FIT = 1, 2, 3, 4, 0


def classify_va_fit_type(va: Node, nva_start_addr: int, size: int) -> int:
    """classify_va_fit_type()"""
    if nva_start_addr < va.va_start or nva_start_addr + size > va.va_end:
        return NOTHING_FIT
    if va.va_start == nva_start_addr:
        return FL_FIT_TYPE if va.va_end == nva_start_addr + size else LE_FIT_TYPE
    if va.va_end == nva_start_addr + size:
        return RE_FIT_TYPE
    return NE_FIT_TYPE


def nva_start(va: Node, align: int, vstart: int) -> int:
    """va_alloc()'s start address: ALIGN(max(va_start, vstart), align)."""
    base = va.va_start if va.va_start > vstart else vstart
    return (base + align - 1) & -align


__all__ = ["Node", "VaTree", "classify_va_fit_type", "is_within_this_va", "nva_start",
           "FL_FIT_TYPE", "LE_FIT_TYPE", "RE_FIT_TYPE", "NE_FIT_TYPE"]

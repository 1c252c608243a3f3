#!/usr/bin/env python3
"""ns/op of ``find`` and of a ``free`` + ``alloc`` pair (churn), and bytes per live area.

One seeded workload per size N, shared by every peer:

* a space ``[2**40, 2**40 + 2**38)`` with 4 KiB pages;
* ``M = 1.25 N`` areas of 1..16 pages allocated lowest-fit (so they lie back to
  back), then a random 20 % of them freed in random order, leaving N live areas
  and a fragmented free space.  Every allocator peer is built through its own
  ``alloc``/``free`` with exactly that sequence (results checked); the static
  peers are built from the resulting busy set.

find:  one fixed list of query addresses (~90 % inside random live areas at
       random byte offsets, ~10 % inside holes); every peer runs
       ``for a in qs: f(a)`` with ``f`` a bound method or one small function,
       and its hit count is checked against the ground truth.
churn: free a random live area, then alloc the same size (lowest fit).  The op
       sequence is simulated once up front; each peer walks it with its own
       cursor, every alloc result of a first (untimed) pass is checked against
       the simulation, and the final busy set is checked by checksum.

Times are the best of ``--rounds`` rounds, interleaved round-robin over the
peers, with the garbage collector off.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import importlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import random
import sys
import time
import tracemalloc
from array import array
from pathlib import Path
from time import perf_counter_ns

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src"

SPACE_START = 1 << 40
SPACE_SIZE = 1 << 38
PAGE = 4096
PAGE_SHIFT = 12
MAX_PAGES = 16                 # area sizes are 1..MAX_PAGES pages
FREED_FRACTION = 0.20          # of the M allocated areas, this share is freed
HOLE_QUERY_FRACTION = 0.10     # share of find queries that land in holes
CHECK_MOD = (1 << 61) - 1      # modulus of the busy-set checksum


# --------------------------------------------------------------------------
# imports: vmap_core from an in-place build in src/ if there is one, else the
# installed package; optional peers are skipped with a note when missing.
# --------------------------------------------------------------------------
def import_vmap_core():
    """Return (VmapSpace or None, ReferenceSpace, where, note)."""
    built_in_src = any((SRC / "vmap_core").glob("_space*.so")) or any(
        (SRC / "vmap_core").glob("_space*.pyd"))
    if built_in_src and str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    VmapSpace, note = None, None
    try:
        try:
            importlib.import_module("vmap_core")
        except ImportError:
            if str(SRC) in sys.path:
                raise
            sys.path.insert(0, str(SRC))          # not installed: try the source tree
            importlib.import_module("vmap_core")
        VmapSpace = importlib.import_module("vmap_core").VmapSpace
    except (ImportError, AttributeError) as exc:
        note = (f"vmap_core.VmapSpace not importable ({exc}); build it with "
                "`python setup.py build_ext --inplace` or `pip install .`")
        # The extension is not built: load the pure-Python reference from the
        # source tree without running the package's __init__ (which needs it).
        for name in [m for m in sys.modules if m == "vmap_core" or m.startswith("vmap_core.")]:
            del sys.modules[name]
        spec = importlib.machinery.ModuleSpec("vmap_core", None, is_package=True)
        spec.submodule_search_locations = [str(SRC / "vmap_core")]
        sys.modules["vmap_core"] = importlib.util.module_from_spec(spec)
    ref_mod = importlib.import_module("vmap_core.reference")
    where = str(Path(ref_mod.__file__).resolve().parent)
    return VmapSpace, ref_mod.ReferenceSpace, where, note


def optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def version_of(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


# --------------------------------------------------------------------------
# The sortedcontainers allocator peer (written here, not part of vmap_core).
# --------------------------------------------------------------------------
def make_sorted_allocator_class(SortedList):
    INF = 1 << 70

    class SortedAllocator:
        """Lowest-fit page allocator on sortedcontainers, merging on free.

        Busy areas: ``dict start -> end`` + ``SortedList`` of starts (the
        index ``find`` uses).  Free blocks: ``dict start -> end`` and
        ``dict end -> start`` (O(1) neighbour lookup for merging) + one
        ``SortedList`` of starts per size class: exact classes of 1..K-1
        pages and one class for blocks of >= K pages, where K = ``big``.
        The lowest block that fits a request of p pages is the smallest head
        among the classes >= p (every block there fits), so ``alloc`` is a
        handful of O(log n) SortedList operations; ``heads`` caches each
        class's lowest start.  Requests above K pages fall back to a scan of
        the big class in address order.  Alignment is the page size only.
        """

        def __init__(self, start, end, page_size=PAGE, big=MAX_PAGES + 1):
            self.start, self.end, self.page_size = start, end, page_size
            self.shift = page_size.bit_length() - 1
            self.big = big
            self.busy = {}                                  # start -> end
            self.busy_starts = SortedList()
            self.free_by_start = {}                         # start -> end
            self.free_by_end = {}                           # end -> start
            self.classes = [SortedList() for _ in range(big + 1)]   # [0] unused
            self.heads = [INF] * (big + 1)
            self._add_free(start, end)

        def _class(self, s, e):
            c = (e - s) >> self.shift
            return c if c < self.big else self.big

        def _add_free(self, s, e):
            self.free_by_start[s] = e
            self.free_by_end[e] = s
            c = self._class(s, e)
            self.classes[c].add(s)
            if s < self.heads[c]:
                self.heads[c] = s

        def _del_free(self, s, e):
            del self.free_by_start[s]
            del self.free_by_end[e]
            c = self._class(s, e)
            sl = self.classes[c]
            sl.remove(s)
            if s == self.heads[c]:
                self.heads[c] = sl[0] if sl else INF

        def alloc(self, size):
            pages = size >> self.shift
            if size <= 0 or pages << self.shift != size:
                raise ValueError("size must be a positive multiple of page_size")
            if pages <= self.big:
                b = min(self.heads[pages:])
                if b == INF:
                    raise MemoryError("no free block fits")
                e = self.free_by_start[b]
            else:
                for b in self.classes[self.big]:
                    e = self.free_by_start[b]
                    if e - b >= size:
                        break
                else:
                    raise MemoryError("no free block fits")
            self._del_free(b, e)
            if b + size < e:
                self._add_free(b + size, e)
            self.busy[b] = b + size
            self.busy_starts.add(b)
            return b

        def free(self, addr):
            e = self.busy.pop(addr)                     # KeyError if not busy
            self.busy_starts.remove(addr)
            s, t = addr, e
            left = self.free_by_end.get(addr)
            if left is not None:
                self._del_free(left, addr)
                s = left
            right = self.free_by_start.get(e)
            if right is not None:
                self._del_free(e, right)
                t = right
            self._add_free(s, t)
            return addr, e

        def make_find(self):
            """find(addr) -> start of the busy area holding addr, or None."""
            starts, ends = self.busy_starts, self.busy
            bisect_right = starts.bisect_right

            def find(a):
                i = bisect_right(a)
                if i:
                    s = starts[i - 1]
                    if a < ends[s]:
                        return s
                return None
            return find

        def items(self):
            return self.busy.items()

    return SortedAllocator


# --------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------
class Workload:
    """The areas, the holes and the find queries for one N (all seeded)."""

    def __init__(self, n, seed, n_queries):
        rng = random.Random(f"vmap-bench-{seed}-{n}")
        m = int(round(n / (1 - FREED_FRACTION)))
        self.n, self.m = n, m
        self.alloc_sizes = [rng.randint(1, MAX_PAGES) * PAGE for _ in range(m)]
        # Lowest fit on an empty space lays the areas back to back.
        starts = []
        p = SPACE_START
        for sz in self.alloc_sizes:
            starts.append(p)
            p += sz
        assert p <= SPACE_START + SPACE_SIZE, "space too small for this N"
        self.alloc_starts = starts
        freed = rng.sample(range(m), m - n)           # random order = free order
        self.free_order = [starts[i] for i in freed]
        freed_set = set(freed)
        live = [i for i in range(m) if i not in freed_set]
        holes = sorted(freed)
        # Busy set as compact arrays: static peers build from these, and
        # reading them makes fresh int objects inside the traced window.
        self.live_starts = array("Q", (starts[i] for i in live))
        self.live_ends = array("Q", (starts[i] + self.alloc_sizes[i] for i in live))
        self.live_sizes = [self.alloc_sizes[i] for i in live]
        # find queries
        qs = []
        for _ in range(n_queries):
            if rng.random() < HOLE_QUERY_FRACTION:
                i = holes[rng.randrange(len(holes))]
            else:
                i = live[rng.randrange(n)]
            qs.append(starts[i] + rng.randrange(self.alloc_sizes[i]))
        self.queries = qs
        self._hits = {}

    def expected_hits(self, count):
        """Ground truth: how many of the first ``count`` queries fall in a live area."""
        if count in self._hits:
            return self._hits[count]
        ls, le = self.live_starts, self.live_ends
        hits = 0
        for a in self.queries[:count]:
            i = bisect.bisect_right(ls, a) - 1
            if i >= 0 and a < le[i]:
                hits += 1
        self._hits[count] = hits
        return hits

    def checksum(self, pairs):
        """Order-free checksum of a busy set given as (start, end) pairs."""
        n = s1 = s2 = 0
        for s, e in pairs:
            n += 1
            s1 += s * 3 + e
            s2 = (s2 + s * e) % CHECK_MOD
        return n, s1, s2


def simulate_churn(alloc_space, live_starts, live_sizes, n_ops, rng):
    """Run n_ops free+alloc pairs on alloc_space (already holding the busy set).

    Returns (ops, news, sums): ops[i] = (addr to free, size); news[i] = the
    address the lowest-fit alloc returned; sums[i] = busy-set checksum after
    op i (same formula as Workload.checksum).
    """
    live = list(live_starts)
    sizes = list(live_sizes)
    n = len(live)
    s1 = sum(s * 3 + (s + z) for s, z in zip(live, sizes))
    s2 = sum(s * (s + z) for s, z in zip(live, sizes)) % CHECK_MOD
    free, alloc = alloc_space.free, alloc_space.alloc
    ops, news, sums = [], [], []
    randrange = rng.randrange
    for _ in range(n_ops):
        j = randrange(n)
        a, sz = live[j], sizes[j]
        free(a)
        b = alloc(sz)
        live[j] = b
        s1 += (b - a) * 4
        s2 = (s2 - a * (a + sz) + b * (b + sz)) % CHECK_MOD
        ops.append((a, sz))
        news.append(b)
        sums.append((n, s1, s2))
    return ops, news, sums


# --------------------------------------------------------------------------
# Timing loops (the same code object for every peer)
# --------------------------------------------------------------------------
def time_find(f, qs, warm=True):
    """ns for one pass of f over qs, the loop every peer runs.  warm: after
    an untimed pass over the same queries, so that f is timed with its own
    working set in the caches, not with what the peer timed before it left
    there: that cold start is a cost per pass, not per query, so it would
    weigh more the shorter the pass, that is the faster the peer."""
    if warm:
        time_find(f, qs, False)
    t0 = perf_counter_ns()
    for a in qs:
        f(a)
    return perf_counter_ns() - t0


def time_churn(free, alloc, ops):
    t0 = perf_counter_ns()
    for a, sz in ops:
        free(a)
        alloc(sz)
    return perf_counter_ns() - t0


def time_index_churn(remove, add, ops4):
    t0 = perf_counter_ns()
    for a, e, b, f in ops4:
        remove(a, e)
        add(b, f)
    return perf_counter_ns() - t0


class Peer:
    """One contestant for one N."""

    def __init__(self, name, *, find=None, hit=None, find_factor=1,
                 free=None, alloc=None, churn_factor=1, index_churn=None,
                 items=None, bytes_per_area=None, bytes_method=None,
                 churn_kind=None, note=None, build_s=None, extra=None):
        self.name = name
        self.find, self.hit, self.find_factor = find, hit or (lambda r: r is not None), find_factor
        self.free, self.alloc, self.churn_factor = free, alloc, churn_factor
        self.index_churn = index_churn          # (remove, add) for busy-index-only churn
        self.items = items                      # () -> iterable of (start, end)
        self.bytes_per_area, self.bytes_method = bytes_per_area, bytes_method
        self.churn_kind = churn_kind
        self.note = note
        self.build_s = build_s
        self.extra = extra or {}
        self.find_rounds, self.churn_rounds = [], []
        self.find_q = self.churn_k = 0
        self.cursor = 0

    @property
    def can_churn(self):
        return self.alloc is not None or self.index_churn is not None


def build_alloc_peer(make, wl, trace):
    """Build an allocator peer through its alloc/free with the workload sequence.

    Returns (space, seconds, traced bytes or None, C-heap bytes or None): the
    growth of the Python heap (tracemalloc, when ``trace``) and of the C heap
    (glibc mallinfo2) over the build."""
    gc.collect()
    from vmap_core.measure import malloc_in_use     # after import_vmap_core()
    heap0 = malloc_in_use()
    if trace:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    space = make()
    alloc, free = space.alloc, space.free
    for sz, want in zip(wl.alloc_sizes, wl.alloc_starts):
        got = alloc(sz)
        if got != want:
            raise AssertionError(f"build: alloc({sz:#x}) gave {got:#x}, lowest fit is {want:#x}")
    for a in wl.free_order:
        free(a)
    secs = time.perf_counter() - t0
    traced = None
    if trace:
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    c_heap = None if heap0 is None else malloc_in_use() - heap0
    return space, secs, traced, c_heap


def build_static(make, trace, c_heap=False):
    """Build a static peer; returns (obj, seconds, traced bytes, (C-heap bytes, method))."""
    gc.collect()
    if c_heap:
        from vmap_core.measure import malloc_in_use, rss_bytes  # after import_vmap_core()
        probe, method = (malloc_in_use, "malloc") if malloc_in_use() is not None else (
            rss_bytes, "rss")
        heap0 = probe()
    if trace:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    obj = make()
    secs = time.perf_counter() - t0
    traced = None
    if trace:
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    heap = None
    if c_heap and heap0 is not None:
        heap = (probe() - heap0, method)
    return obj, secs, traced, heap


# --------------------------------------------------------------------------
# One N
# --------------------------------------------------------------------------
def run_size(n, args, mods, log):
    VmapSpace, ReferenceSpace = mods["VmapSpace"], mods["ReferenceSpace"]
    wl = Workload(n, args.seed, args.queries)
    log(f"[N={n:,}] workload: {wl.m:,} allocs, {wl.m - n:,} frees, {len(wl.queries):,} queries")
    space_kw = dict(page_size=PAGE, lock=args.lock)
    if args.nr_nodes:
        space_kw["nr_nodes"] = args.nr_nodes
    end = SPACE_START + SPACE_SIZE
    trace = n <= args.trace_max
    peers, skipped = [], {}
    want = set(args.peers)

    # -- vmap_core -----------------------------------------------------------
    core = None
    if "vmap_core" in want:
        if VmapSpace is None:
            skipped["vmap_core"] = mods["core_note"]
        else:
            core, secs, _, c_heap = build_alloc_peer(
                lambda: VmapSpace(SPACE_START, end, **space_kw), wl, False)
            st = core.stats()
            assert st["busy_areas"] == n == len(core), st
            peers.append(Peer(
                "vmap_core", find=core.find, free=core.free, alloc=core.alloc,
                items=lambda: ((a.start, a.end) for a in core),
                bytes_per_area=st["slab_bytes"] / st["busy_areas"], bytes_method="slab",
                churn_kind="free+alloc", build_s=secs,
                note=f"lock={args.lock}, {st.get('free_areas', '?')} free blocks",
                extra={"slab_bytes": st["slab_bytes"], "busy_areas": st["busy_areas"],
                       "free_areas": st.get("free_areas"),
                       "c_heap_bytes_per_area": None if c_heap is None else c_heap / n}))
            log(f"  built vmap_core in {secs:.2f}s")

    # -- reference -----------------------------------------------------------
    if "reference" in want:
        if n > args.reference_max:
            skipped["reference"] = (f"N > --reference-max={args.reference_max:,} "
                                    "(building it through its API is O(N^2))")
        else:
            ref, secs, traced, _ = build_alloc_peer(
                lambda: ReferenceSpace(SPACE_START, end, **space_kw), wl, trace)
            assert len(ref) == n
            peers.append(Peer(
                "reference", find=ref.find, free=ref.free, alloc=ref.alloc,
                churn_factor=args.slow_churn_factor,
                items=lambda: ((a.start, a.end) for a in ref),
                bytes_per_area=traced / n if traced is not None else None,
                bytes_method="tracemalloc", churn_kind="free+alloc", build_s=secs,
                note="pure Python, linear scan of free blocks"))
            log(f"  built reference in {secs:.2f}s")

    # -- sortedcontainers ----------------------------------------------------
    sc = mods["sortedcontainers"]
    if "sortedcontainers" in want:
        if sc is None:
            skipped["sortedcontainers"] = "not installed (pip install .[bench])"
        else:
            SA = mods["SortedAllocator"]
            sa, secs, traced, _ = build_alloc_peer(lambda: SA(SPACE_START, end), wl, trace)
            assert len(sa.busy) == n
            peers.append(Peer(
                "sortedcontainers", find=sa.make_find(), free=sa.free, alloc=sa.alloc,
                items=sa.items,
                bytes_per_area=traced / n if traced is not None else None,
                bytes_method="tracemalloc", churn_kind="free+alloc", build_s=secs,
                note="SortedList+dict+bisect; allocator in this script"))
            log(f"  built sortedcontainers allocator in {secs:.2f}s")

    # -- intervaltree --------------------------------------------------------
    itmod = mods["intervaltree"]
    if "intervaltree" in want:
        if itmod is None:
            skipped["intervaltree"] = "not installed (pip install .[bench])"
        else:
            IT, IV = itmod.IntervalTree, itmod.Interval
            ls, le = wl.live_starts, wl.live_ends
            tree, secs, traced, _ = build_static(
                lambda: IT(IV(s, e) for s, e in zip(ls, le)), trace)
            assert len(tree) == n
            peers.append(Peer(
                "intervaltree", find=tree.at, hit=bool, find_factor=args.slow_find_factor,
                index_churn=(tree.removei, tree.addi),
                churn_factor=args.slow_index_churn_factor,
                items=lambda: ((iv.begin, iv.end) for iv in tree),
                bytes_per_area=traced / n if traced is not None else None,
                bytes_method="tracemalloc", churn_kind="busy-index only (removei+addi)",
                build_s=secs, note="churn = busy-index update only, no allocation"))
            log(f"  built intervaltree in {secs:.2f}s")

    # -- superintervals ------------------------------------------------------
    simod = mods["superintervals"]
    if "superintervals" in want:
        if simod is None:
            skipped["superintervals"] = "not installed (pip install .[bench])"
        else:
            IM = simod.IntervalMap
            ls, le = wl.live_starts, wl.live_ends

            def make_im():
                # 32-bit keys: page numbers, end inclusive.
                return IM.from_arrays(array("i", (s >> PAGE_SHIFT for s in ls)),
                                      array("i", ((e >> PAGE_SHIFT) - 1 for e in le)))
            im, secs, _, heap = build_static(make_im, False, c_heap=True)
            heap_bytes, heap_method = heap if heap else (None, None)
            if heap_method == "rss" and n < args.rss_min:
                heap_bytes = None                       # RSS is noise at small N
            assert im.size() == n
            has = im.has_overlaps

            def si_find(a):
                p = a >> PAGE_SHIFT
                return has(p, p)
            peers.append(Peer(
                "superintervals", find=si_find, hit=bool,
                bytes_per_area=heap_bytes / n if heap_bytes is not None else None,
                bytes_method=heap_method, churn_kind=None, build_s=secs,
                note="static, lookup only (page numbers)"))
            log(f"  built superintervals in {secs:.2f}s")

    gc.collect()

    # -- find ------------------------------------------------------------------
    qs_all = wl.queries
    for p in peers:
        p.find_q = max(1, len(qs_all) // p.find_factor)
        qs = qs_all[:p.find_q]
        hit = p.hit
        got = sum(1 for a in qs if hit(p.find(a)))            # untimed: the hit check
        expect = wl.expected_hits(p.find_q)
        if got != expect:
            raise AssertionError(f"{p.name}: find hit {got} of {p.find_q}, expected {expect}")
        p.find_hits = got
    hits_by_q = {}
    for p in peers:
        hits_by_q.setdefault(p.find_q, set()).add(p.find_hits)
    assert all(len(v) == 1 for v in hits_by_q.values()), hits_by_q

    gc.disable()
    try:
        for r in range(args.rounds):
            order = peers[r % len(peers):] + peers[:r % len(peers)] if peers else []
            for p in order:
                p.find_rounds.append(time_find(p.find, qs_all[:p.find_q]) / p.find_q)
    finally:
        gc.enable()
    log("  find timed")

    # -- churn -----------------------------------------------------------------
    churners = [p for p in peers if p.can_churn]
    for p in churners:
        p.churn_k = max(args.min_churn_ops, args.churn_ops // p.churn_factor)
    sim_len = max((p.churn_k * (args.rounds + 1) for p in churners), default=0)
    ops = news = sums = None
    if churners:
        # Simulate the op sequence once on a separate instance (vmap_core if
        # built, else the sortedcontainers allocator, else the reference).
        if VmapSpace is not None:
            sim_make, sim_name = (lambda: VmapSpace(SPACE_START, end, **space_kw)), "vmap_core"
        elif sc is not None:
            SA = mods["SortedAllocator"]
            sim_make, sim_name = (lambda: SA(SPACE_START, end)), "sortedcontainers"
        else:
            sim_make, sim_name = (lambda: ReferenceSpace(SPACE_START, end, **space_kw)), "reference"
        sim = build_alloc_peer(sim_make, wl, False)[0]
        t0 = time.perf_counter()
        ops, news, sums = simulate_churn(sim, wl.live_starts, wl.live_sizes, sim_len,
                                         random.Random(f"vmap-churn-{args.seed}-{n}"))
        del sim
        log(f"  churn sequence: {sim_len:,} ops simulated on {sim_name} "
            f"in {time.perf_counter() - t0:.2f}s")
        ops4 = [(a, a + sz, b, b + sz) for (a, sz), b in zip(ops, news)]

        # untimed first pass: every alloc result checked against the simulation
        for p in churners:
            k = p.churn_k
            if p.alloc is not None:
                free, alloc = p.free, p.alloc
                for i, (a, sz) in enumerate(ops[:k]):
                    free(a)
                    got = alloc(sz)
                    if got != news[i]:
                        raise AssertionError(
                            f"{p.name}: churn op {i} (free {a:#x}, alloc {sz:#x}) allocated "
                            f"{got:#x}, {sim_name} allocated {news[i]:#x}")
            else:
                time_index_churn(*p.index_churn, ops4[:k])
            p.cursor = k

        gc.collect()
        gc.disable()
        try:
            for r in range(args.rounds):
                order = churners[r % len(churners):] + churners[:r % len(churners)]
                for p in order:
                    k, c = p.churn_k, p.cursor
                    if p.alloc is not None:
                        ns = time_churn(p.free, p.alloc, ops[c:c + k])
                    else:
                        ns = time_index_churn(*p.index_churn, ops4[c:c + k])
                    p.cursor = c + k
                    p.churn_rounds.append(ns / k)
        finally:
            gc.enable()
        # final busy set of each peer == the simulation's at that point
        for p in churners:
            got = wl.checksum(p.items())
            if got != sums[p.cursor - 1]:
                raise AssertionError(f"{p.name}: busy set after {p.cursor} churn ops "
                                     f"differs from {sim_name}'s")
        log("  churn timed and checked")

    # -- results ---------------------------------------------------------------
    base = next((p for p in peers if p.name == "vmap_core"), None)
    base_find = min(base.find_rounds) if base and base.find_rounds else None
    base_churn = min(base.churn_rounds) if base and base.churn_rounds else None
    out = {"n": n, "allocated": wl.m, "freed": wl.m - n, "queries": len(qs_all),
           "churn_ops": args.churn_ops, "rounds": args.rounds, "churn_sequence": sim_len,
           "peers": {}, "skipped": skipped}
    for p in peers:
        f = min(p.find_rounds) if p.find_rounds else None
        c = min(p.churn_rounds) if p.churn_rounds else None
        out["peers"][p.name] = {
            "find_ns": f, "find_ns_rounds": p.find_rounds, "find_queries": p.find_q,
            "find_hits": p.find_hits,
            "find_ratio": (f / base_find) if f and base_find else None,
            "churn_ns": c, "churn_ns_rounds": p.churn_rounds, "churn_ops": p.churn_k,
            "churn_kind": p.churn_kind if p.can_churn else None,
            "churn_ratio": (c / base_churn) if c and base_churn else None,
            "bytes_per_area": p.bytes_per_area, "bytes_method": p.bytes_method,
            "build_s": p.build_s, "note": p.note, **p.extra,
        }
    return out


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def fmt_ns(x):
    return "–" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}x"


def fmt_bytes(x, method):
    if x is None:
        return "–"
    return f"{'~' if method == 'rss' else ''}{x:,.1f}"


def render(result, console):
    rows, notes = [], []
    for name, d in result["peers"].items():
        if d["churn_kind"] is None:
            churn = "n/a"
        else:
            churn = fmt_ns(d["churn_ns"]) + ("" if d["churn_kind"] == "free+alloc" else " *")
        rows.append([name, fmt_ns(d["find_ns"]), fmt_ratio(d["find_ratio"]), churn,
                     fmt_ratio(d["churn_ratio"]),
                     fmt_bytes(d["bytes_per_area"], d["bytes_method"])])
    for name, why in result["skipped"].items():
        rows.append([name, "skipped", "", "", "", ""])
        notes.append(f"{name} skipped: {why}")
    headers = ["peer", "find ns/op", "ratio", "churn ns/op", "ratio", "bytes/area"]
    title = (f"N = {result['n']:,} live areas ({result['allocated']:,} allocated, "
             f"{result['freed']:,} freed)")
    peers = result["peers"]
    fq = ", ".join(f"{k} {v['find_queries']:,}" for k, v in peers.items()
                   if v["find_queries"] != result["queries"])
    cq = ", ".join(f"{k} {v['churn_ops']:,}" for k, v in peers.items()
                   if v["churn_kind"] and v["churn_ops"] != result["churn_ops"])
    notes[:0] = [
        "ratio = peer ns/op / vmap_core ns/op (bigger = vmap_core faster); "
        f"best of {result['rounds']} interleaved rounds",
        f"find: {result['queries']:,} queries/round" + (f" ({fq})" if fq else "")
        + " (each timed pass after an untimed one)"
        + f"; churn = free+alloc pair, {result['churn_ops']:,} pairs/round"
        + (f" ({cq})" if cq else ""),
        "* intervaltree churn = busy-index update only (removei + addi), no allocation; "
        "superintervals is static (n/a)",
        "bytes/area: vmap_core = stats() slab_bytes / busy_areas; Python peers = tracemalloc "
        "heap growth of the build / N; superintervals = C-heap (mallinfo2) growth / N "
        "(~ = RSS growth where mallinfo2 is missing)",
    ]
    if console is not None:
        from rich.table import Table
        t = Table(title=title, title_justify="left")
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        for line in notes:
            console.print("  " + line, style="dim", highlight=False, soft_wrap=True)
        console.print()
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.rjust(w) if i else h.ljust(w)
                        for i, (h, w) in enumerate(zip(headers, widths))))
        for r in rows:
            print("  ".join(c.rjust(w) if i else c.ljust(w)
                            for i, (c, w) in enumerate(zip(r, widths))))
        for line in notes:
            print("  " + line)
        print()


def parse_size(tok):
    """An integer count, also written as 1e5 or 100_000."""
    try:
        v = float(tok) if any(ch in tok for ch in ".eE") else int(tok)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {tok!r}") from None
    if v < 10 or v != int(v):
        raise argparse.ArgumentTypeError(f"bad size {tok!r} (need an integer >= 10)")
    return int(v)


def parse_sizes(text):
    return [parse_size(tok) for tok in text.replace(",", " ").split()]


ALL_PEERS = ["vmap_core", "reference", "sortedcontainers", "intervaltree", "superintervals"]


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="ns/op of find and of a free+alloc pair (churn), and bytes per live "
                    "area, for vmap_core and its peers on one seeded workload. "
                    "See benchmarks/README.md.")
    ap.add_argument("--sizes", type=parse_sizes, default=None,
                    help="live-area counts N, e.g. '1e3,1e5,1e6' [1e3,1e5,1e6; --quick: 1e3,1e4]")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed rounds, the best is kept [5; --quick: 2]")
    ap.add_argument("--queries", type=int, default=None,
                    help="find queries per round [200000; --quick: 20000]")
    ap.add_argument("--churn-ops", type=int, default=None,
                    help="free+alloc pairs per round for the fast peers [20000; --quick: 2000]")
    ap.add_argument("--slow-find-factor", type=int, default=50,
                    help="intervaltree times queries/FACTOR finds [50]")
    ap.add_argument("--slow-churn-factor", type=int, default=100,
                    help="the reference times churn-ops/FACTOR pairs [100]")
    ap.add_argument("--slow-index-churn-factor", type=int, default=20,
                    help="intervaltree times churn-ops/FACTOR index updates [20]")
    ap.add_argument("--min-churn-ops", type=int, default=50,
                    help="floor on churn ops per round for the slow peers [50]")
    ap.add_argument("--reference-max", type=parse_size, default=10**5,
                    help="largest N at which the reference is built [1e5]")
    ap.add_argument("--trace-max", type=parse_size, default=10**6,
                    help="largest N at which tracemalloc measures bytes/area [1e6]")
    ap.add_argument("--rss-min", type=int, default=10**5,
                    help="smallest N at which an RSS-based bytes/area is shown "
                         "(superintervals without mallinfo2) [1e5]")
    ap.add_argument("--peers", default=",".join(ALL_PEERS),
                    help="comma-separated subset of " + ",".join(ALL_PEERS) + " [all]")
    ap.add_argument("--lock", choices=["node", "global"], default="node",
                    help="vmap_core lock mode [node]")
    ap.add_argument("--nr-nodes", type=int, default=None,
                    help="vmap_core nr_nodes [kernel rule: min(cpu_count, 128)]")
    ap.add_argument("--seed", type=int, default=1, help="workload seed [1]")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "bench_ops.json",
                    help="where to write the results [benchmarks/results/bench_ops.json]")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sizes 1e3,1e4, 2 rounds, fewer ops "
                         "(options given explicitly still win)")
    args = ap.parse_args(argv)
    defaults = (dict(sizes=[10**3, 10**4], rounds=2, queries=20_000, churn_ops=2_000)
                if args.quick else
                dict(sizes=[10**3, 10**5, 10**6], rounds=5, queries=200_000, churn_ops=20_000))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.queries < 1 or args.churn_ops < 1:
        ap.error("--rounds, --queries and --churn-ops must be positive")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(args.peers) - set(ALL_PEERS)
    if unknown:
        ap.error(f"unknown peers: {', '.join(sorted(unknown))}")

    VmapSpace, ReferenceSpace, where, core_note = import_vmap_core()
    sc = optional("sortedcontainers")
    mods = {
        "VmapSpace": VmapSpace, "ReferenceSpace": ReferenceSpace, "core_note": core_note,
        "sortedcontainers": sc,
        "SortedAllocator": make_sorted_allocator_class(sc.SortedList) if sc else None,
        "intervaltree": optional("intervaltree"),
        "superintervals": optional("superintervals"),
    }
    rich = optional("rich")
    console = None
    if rich is not None:
        from rich.console import Console
        console = Console()

    def log(msg):
        if console is not None:
            console.print(msg, style="dim", highlight=False)
        else:
            print(msg, file=sys.stderr)

    log(f"vmap_core from {where}" + ("" if VmapSpace else f"  [{core_note}]"))
    for name in ("sortedcontainers", "intervaltree", "superintervals"):
        if mods[name] is None and name in args.peers:
            log(f"{name}: not installed, skipped (pip install .[bench])")
    if rich is None:
        log("rich not installed: plain-text tables (pip install .[bench])")

    t_start = time.perf_counter()
    results = []
    for n in args.sizes:
        res = run_size(n, args, mods, log)
        results.append(res)
        render(res, console)
        gc.collect()
    total = time.perf_counter() - t_start

    doc = {
        "meta": {
            "cpu_count": os.cpu_count(),
            "python": sys.version,
            "python_implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": _cpu_model(),
            "vmap_core_path": where,
            "vmap_core_built": VmapSpace is not None,
            "versions": {d: version_of(d) for d in
                         ("vmap_core", "sortedcontainers", "intervaltree", "superintervals",
                          "rich", "Cython")},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "workload": {"space": [SPACE_START, SPACE_START + SPACE_SIZE], "page_size": PAGE,
                         "area_pages": [1, MAX_PAGES], "freed_fraction": FREED_FRACTION,
                         "hole_query_fraction": HOLE_QUERY_FRACTION},
            "total_seconds": total,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.json} ({total:.1f}s)")
    return 0


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


if __name__ == "__main__":
    sys.exit(main())

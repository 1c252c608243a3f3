"""Replay a kernel vmalloc trace into a model space and measure the agreement.

:func:`replay` reads a trace (:mod:`vmap_core.trace`), builds a space over its
vmalloc range with the trace's CPUs as nodes and the chosen kernel profile,
and feeds it the trace's events in order: every allocation is first *asked*
of the model (``predict()``: which address, from a pool or the free tree),
compared with the kernel's address, and then applied: as the model's own
choice when they agree, else by putting the area exactly where the kernel did
(``alloc_at()``) so that the model keeps following the kernel.  Lazy frees go
to ``free_lazy()``; purges happen where the trace purges (the model's own
automatic purges are off, unless asked), a purge that follows a failed
allocation being the overflow path's full purge.  An allocation counts as *at
the kernel's address* only when the model's prediction was that address,
never when it was put there.

Mismatches are classified (:data:`CLASSES`): the kernel took a pooled area the
model did not have; the model took a pooled area the kernel did not; both
searched the free tree and found different lowest fits; the kernel's address
was not free in the model (an address the model could not give); the kernel
failed where the model would not.  The first ``divergences`` of them are kept
with their neighbourhood (the free blocks and pool heads around both
addresses).  Purges are compared (areas purged, range), failed allocations
too, and every free's ``nr_lazy`` with the model's lazy pages.

The state before the first event is unknown: /proc/vmallocinfo hashes its
addresses, areas from before the trace are freed in it, pools and lazy lists
may hold areas from before it.  With ``start="infer"`` (the default) a first
pass over the trace infers it by these rules, each counted in the report
(:data:`RULES`):

``pretrace_busy``
    An area the trace frees without having allocated it was busy at the
    start: its address is the free's ``va_start``, its size the increment of
    the kernel's ``nr_lazy`` (the frees of one purge epoch ordered by
    ``nr_lazy``, which the kernel's atomic counter orders exactly).
``pretrace_lazy_pages``
    The kernel's ``nr_lazy`` already counted pages before the first free:
    the unpurged total of a /proc/vmallocinfo dump taken before the trace
    (``vmallocinfo_before``) when given, else the first free's ``nr_lazy``
    less the size it most likely freed (the commonest size the trace frees).
    Only the comparison of ``nr_lazy`` uses it.
``handed_out_free``
    Before the first purge nothing goes back to the free tree, so the
    free-tree allocations of one request go up in address over time: of each
    request's allocations, the longest sequence whose addresses increase (of
    equal ones, the one that keeps closest below the next) are the free tree's,
    the others came from pools filled before the trace.  Address ranges of
    free-tree allocations were free at the start when they form a run carved
    from one block: consecutive in address order, each handed out *after* the
    one below it, starting exactly where alignment puts it after the one below
    (``ALIGN(prev.end, align) == start``), as a lowest-fit allocator carves a
    block from its low end; and no earlier allocation that the run's block
    could have held went above it (else the block was not free then).  This
    rule uses the whole trace: the model is told which ranges the kernel
    carves, not when, nor for whom, nor in which order.
``alignment_gaps_free``
    A gap between two areas the trace knows (handed out, or freed from
    before it) that the upper one's alignment explains (``ALIGN(lower.end,
    align) == upper.start``, the alignment of an area from before the trace
    being the one the trace asks most for its size) is carving waste: free.
``unseen_busy``
    Everything else below the highest such evidence is busy at the start
    (filler areas): ranges the trace never hands out, and ranges handed out
    alone (not in a run: areas the kernel took from pools filled before the
    trace, or from holes the model knows nothing of).  Above it, the space is
    free (the tail of the vmalloc range that no pre-trace area reaches).
``pretrace_handed_out``
    Counted when the kernel hands out part of a filler area: the model gives
    that part up (forced, and counted as a mismatch).
``busy_from_contradiction``
    When the model's own lowest fit lies below the kernel's, or the kernel
    failed where the model had a fit, the model's range was not free in the
    kernel: it is marked busy (a filler), so the model does not take it
    again; a later kernel allocation there frees it.
``pretrace_lazy_purged``
    At the first purge, the areas the kernel purged beyond those the model
    held lazily (lazily freed before the trace; addresses unknown).
``full_purge``
    A purge by the task whose last allocation failed is replayed as the
    overflow path's full purge (pools emptied, nothing pooled): the kernel
    purges in that task's context before it retries (a drain purges from a
    kworker).
``lock_order``
    Concurrent allocations are traced after the free lock is dropped, so two
    of them can be printed in the opposite order to the one in which they
    took the lock.  When the model's answer for an allocation is the address a
    later allocation with the same request (within a few events, no purge in
    between, both from the free tree) got, the two are replayed in that
    order; both then count on their own merit.

With ``start="empty"`` nothing is inferred: the space starts empty, which is
exact for a trace recorded by vmap_core itself from an empty space (``trace=``),
and such a trace replays at 100%.  The library imports no command-line code;
``python -m vmap_core replay`` is in vmap_core.cli.replay.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

from . import profiles
from .trace import Alloc, Free, Purge, TraceReader

CLASSES = {
    "kernel_pool": "the kernel took a pooled area the model did not have",
    "model_pool": "the model took a pooled area the kernel did not",
    "lowest_fit": "both searched the free tree and found different lowest fits",
    "cannot_give": "an address the model could not give (not free in the model)",
    "kernel_failed": "the kernel failed where the model would not",
}
RULES = {
    "pretrace_busy": "areas freed in the trace but allocated before it: busy at the start",
    "pretrace_lazy_pages": "pages lazily freed before the trace (the kernel's nr_lazy offset)",
    "handed_out_free": "runs of handed-out ranges carved from one block: free at the start",
    "alignment_gaps_free": "gaps between known areas that alignment explains: free at the start",
    "unseen_busy": "filler areas: ranges not known free below the pre-trace evidence",
    "pretrace_handed_out": "kernel allocations inside a filler area (forced)",
    "busy_from_contradiction": "model fits below the kernel's, or where it failed: marked busy",
    "pretrace_lazy_purged": "areas purged by the kernel beyond the model's lazy ones",
    "full_purge": "purges after a failed allocation replayed as full purges",
    "lock_order": "allocation pairs replayed in lock order instead of trace order",
}
FILLER = "<unknown>"           # caller tag of the filler areas
PRETRACE = "<pre-trace>"       # caller tag of the areas busy before the trace
PAGE = 4096


def page_align_up(x, p=PAGE):
    return -(-x // p) * p


def vend_exclusive(vend, page=PAGE):
    """A trace's vend as an exclusive end: x86-64's VMALLOC_END (and the
    recorder's) is the last address, not page aligned; a page-aligned vend
    (MODULES_END, arm64) is already exclusive."""
    return vend + 1 if (vend + 1) % page == 0 else vend


# -- the first pass ---------------------------------------------------------------

@dataclass
class Prescan:
    """What a first pass over the trace knows: the range, the CPUs, and what
    the inference rules need."""

    windows: collections.Counter = field(default_factory=collections.Counter)
    cpus: int | None = None
    max_cpu: int = 0
    lazy_max_pages: int | None = None
    handed_out: dict = field(default_factory=dict)   # start -> (end, align, index, request)
    first_purge: int | None = None                    # index of the first purge event
    frees: list = field(default_factory=list)         # (index, addr, nr_lazy, epoch, known size)
    pretrace_frees: dict = field(default_factory=dict)  # index -> addr
    events: int = 0
    limit: int | None = None

    @property
    def range(self):
        """The vmalloc range: the (vstart, vend) window most allocations use
        (ties: the widest), vend made exclusive."""
        if not self.windows:
            raise ValueError("the trace has no alloc_vmap_area event: no range to replay")
        (vs, ve), _ = max(self.windows.items(), key=lambda kv: (kv[1], kv[0][1] - kv[0][0]))
        return vs, vend_exclusive(ve)


def prescan(source, *, limit=None, name=None):
    """One streaming pass: windows, CPUs, allocations and frees (the first
    ``limit`` events only when given: the inference then sees that part)."""
    pre = Prescan(limit=limit)
    reader = TraceReader(source, name=name)
    alive = {}
    epoch = 0
    for i, ev in enumerate(reader):
        if limit is not None and i >= limit:
            break
        pre.events = i + 1
        pre.max_cpu = max(pre.max_cpu, ev.cpu)
        if isinstance(ev, Alloc):
            pre.windows[(ev.vstart, ev.vend)] += 1
            if not ev.failed:
                alive[ev.va_start] = ev.size
                if ev.va_start not in pre.handed_out:
                    pre.handed_out[ev.va_start] = (ev.va_start + ev.size, ev.align, i,
                                                   (ev.size, ev.align, ev.vstart, ev.vend))
        elif isinstance(ev, Free):
            if pre.lazy_max_pages is None:
                pre.lazy_max_pages = ev.nr_lazy_max
            size = alive.pop(ev.va_start, None)
            if size is None:
                pre.pretrace_frees[i] = ev.va_start
            pre.frees.append((i, ev.va_start, ev.nr_lazy, epoch, size))
        else:
            epoch += 1
            if pre.first_purge is None:
                pre.first_purge = i
    pre.cpus = reader.cpus
    return pre


def _free_sizes(pre, page, base0):
    """Pages of every free by the kernel's counter: within a purge epoch, the
    increment over the next lower nr_lazy (the first of epoch 0 over base0;
    the first of a later epoch: None, not knowable before replaying)."""
    sizes = {}
    by_epoch = collections.defaultdict(list)
    for i, _, nr_lazy, epoch, _ in pre.frees:
        by_epoch[epoch].append((nr_lazy, i))
    for epoch, vals in by_epoch.items():
        vals.sort()
        prev = base0 if epoch == 0 else None
        for v, i in vals:
            sizes[i] = None if prev is None or v <= prev else v - prev
            prev = v
    return sizes


@dataclass
class StartState:
    """The inferred state at the first event."""

    pretrace_busy: list            # (start, end)
    fillers: list                  # (start, end)
    free_runs: list                # (start, end)
    tail_start: int
    pretrace_lazy_pages: int
    lazy_pages_assumed: bool
    unknown_sizes: int             # pre-trace frees whose size could not be read
    alignment_gaps: int = 0


MIN_RUN = 2      # areas in a run for handed_out_free


def _longest_increasing(items):
    """Indexes of a longest run of items (in time order) whose addresses
    (item[1]) increase.  Of the equally long ones, each step back takes the
    highest address below the next (the frontier is contiguous; an area from
    a pool that happens to fit the order is the one left out)."""
    tails, length = [], []
    for item in items:
        j = bisect.bisect_left(tails, item[1])
        if j == len(tails):
            tails.append(item[1])
        else:
            tails[j] = item[1]
        length.append(j + 1)
    if not items:
        return set()
    by_length = collections.defaultdict(list)
    for k, n in enumerate(length):
        by_length[n].append(k)
    keep = set()
    cur_k, cur_addr = len(items), float("inf")
    for n in range(max(length), 0, -1):
        best = None
        for k in by_length[n]:
            if k < cur_k and items[k][1] < cur_addr and (best is None or items[k][1] >
                                                         items[best][1]):
                best = k
        keep.add(best)
        cur_k, cur_addr = best, items[best][1]
    return keep


def infer_start(pre, space_range, page=PAGE, vmallocinfo_before=None, min_run=MIN_RUN):
    """The inference rules pretrace_busy, pretrace_lazy_pages,
    handed_out_free and unseen_busy (see the module docstring)."""
    start, end = space_range
    known = [s for *_, s in pre.frees if s is not None]
    common = collections.Counter(known).most_common(1)
    typical = common[0][0] // page if common else 1
    assumed = False
    if vmallocinfo_before is not None:
        base0 = vmallocinfo_before
    elif any(f[3] == 0 for f in pre.frees):
        i, _, nr_lazy, epoch, size = min((f for f in pre.frees if f[3] == 0),
                                         key=lambda f: f[2])
        if size is None:
            size, assumed = typical * page, True
        base0 = nr_lazy - size // page
    else:
        base0 = 0
    sizes = _free_sizes(pre, page, base0)
    pretrace, unknown = [], 0
    for i, addr in sorted(pre.pretrace_frees.items()):
        pages = sizes.get(i)
        if pages is None:
            pages, unknown = typical, unknown + 1
        if start <= addr and addr + pages * page <= end:
            pretrace.append((addr, addr + pages * page))
    pretrace = _disjoint(sorted(set(pretrace)))
    # handed_out_free: before anything was given back (the first purge), the
    # free tree only shrinks, so the free-tree allocations of one request go
    # up in address over time: the longest increasing run of each request's
    # addresses are those; the others came from pools filled before the trace
    # (or from paths the search took).  Consecutive free-tree allocations
    # carved from one block form a run, free at the start.
    first_purge = pre.first_purge if pre.first_purge is not None else float("inf")
    early = [(t, s, e, al, req) for s, (e, al, t, req) in pre.handed_out.items()
             if start <= s and e <= end and t < first_purge and not _overlaps(pretrace, s, e)]
    by_request = collections.defaultdict(list)
    for item in sorted(early):
        by_request[item[4]].append(item)
    tree, singles = [], []
    for items in by_request.values():
        keep = _longest_increasing(items)
        for k, item in enumerate(items):
            (tree if k in keep else singles).append(item)
    runs = []
    cur = None
    for t, s, e, al, _ in sorted(tree, key=lambda x: x[1]):
        al = max(al, page)
        if cur is not None and (s < cur[1] or (cur[3] < t and s - cur[1] < al
                                               and page_align_up(cur[1], al) == s)):
            cur = [cur[0], max(cur[1], e), cur[2] + 1, max(cur[3], t), min(cur[4], t)]
            continue
        if cur is not None:
            runs.append(cur)
        cur = [s, e, 1, t, t]
    if cur is not None:
        runs.append(cur)
    # A run is free at the start only if no earlier free-tree allocation that
    # the run's block could have held went above it: lowest fit would have
    # taken the run's block then (it was busy, or pooled, and freed later
    # without a trace event: free_vmap_area(), the shrinker's pool decay).
    highest = _highest_so_far(tree)
    kept = []
    for r in runs:
        s, e, n, _, t0 = r
        late = any(_fits(s, e, size, al, page) and _max_before(h, t0) >= e
                   for (size, al), h in highest.items())
        if n >= min_run and not late:
            kept.append((s, e))
        else:
            singles.append((None, s, e))
    runs = kept
    singles = [(x[1], x[2]) for x in singles]
    evidence = [e for _, e in pretrace] + [e for _, e in singles]
    tail = max(evidence, default=start)
    free_runs = [(s, e) for s, e in runs if s < tail]
    # alignment gaps: between two areas known to the trace, a gap that the
    # upper one's alignment explains (lowest fit carved it right after the
    # lower one) is free: too small for the request, waste of the carve.
    align_of = _usual_alignments(pre, page)
    known = [(s, e, max(al, page)) for s, (e, al, t, req) in pre.handed_out.items()
             if start <= s and e <= end]
    known += [(s, e, align_of.get(e - s, page)) for s, e in pretrace]
    gaps = []
    prev_end = None
    for s, e, al in sorted(known):
        if prev_end is not None and prev_end < s < prev_end + al and \
                page_align_up(prev_end, al) == s:
            gaps.append((prev_end, s))
        prev_end = e if prev_end is None else max(prev_end, e)
    free = _union(free_runs + [(s, e) for s, e in gaps if s < tail])
    # unseen_busy: the rest below the tail.
    fillers = []
    pos = start
    for s, e in _union(free + pretrace):
        if s > pos:
            fillers.append((pos, s))
        pos = max(pos, e)
    if pos < tail:
        fillers.append((pos, tail))
    return StartState(pretrace, fillers, free_runs, tail, base0, assumed, unknown,
                      len(gaps))


def _usual_alignments(pre, page):
    """The commonest alignment the trace asks for each size (for areas from
    before the trace, whose alignment it does not show)."""
    counts = collections.defaultdict(collections.Counter)
    for s, (e, al, t, req) in pre.handed_out.items():
        counts[e - s][max(al, page)] += 1
    return {size: c.most_common(1)[0][0] for size, c in counts.items()}


def _union(ranges):
    out = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _highest_so_far(tree):
    """Per (size, align) of the free-tree allocations: (times, highest start
    up to that time), for _max_before()."""
    out = {}
    for t, s, e, al, req in sorted(tree):
        key = (e - s, al)
        times, highs = out.setdefault(key, ([], []))
        times.append(t)
        highs.append(max(s, highs[-1]) if highs else s)
    return out


def _max_before(h, t0):
    times, highs = h
    i = bisect.bisect_left(times, t0) - 1
    return highs[i] if i >= 0 else -1


def _fits(s, e, size, align, page):
    return page_align_up(s, max(align, page)) + size <= e


def _overlaps(sorted_ranges, s, e):
    i = bisect.bisect_right(sorted_ranges, (s, float("inf"))) - 1
    for j in (i, i + 1):
        if 0 <= j < len(sorted_ranges):
            a, b = sorted_ranges[j]
            if a < e and s < b:
                return True
    return False


def _disjoint(ranges):
    out = []
    for s, e in ranges:
        if out and s < out[-1][1]:
            continue
        out.append((s, e))
    return out


# -- the report --------------------------------------------------------------

@dataclass
class Report:
    """The replay's outcome (``to_json()`` is what ``--json`` writes)."""

    trace: dict
    profile: str
    space: dict
    start: str
    allocations: int = 0                 # successful kernel allocations replayed
    at_kernel_address: int = 0
    agree_by_source: collections.Counter = field(default_factory=collections.Counter)
    mismatches: collections.Counter = field(default_factory=collections.Counter)
    causes: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    inferences: collections.Counter = field(default_factory=collections.Counter)
    failed: dict = field(default_factory=lambda: {"kernel": 0, "model_also_failed": 0})
    skipped: collections.Counter = field(default_factory=collections.Counter)
    purges: list = field(default_factory=list)
    nr_lazy: dict = field(default_factory=lambda: {"compared": 0, "equal": 0,
                                                   "max_abs_diff": 0})
    divergences: list = field(default_factory=list)
    timeline: dict = field(default_factory=lambda: {"alloc_index": [], "agreement": [],
                                                    "window_agreement": [], "free_blocks": [],
                                                    "fragmentation": [], "event": []})
    split: dict | None = None

    @property
    def agreement(self):
        return self.at_kernel_address / self.allocations if self.allocations else 1.0

    def to_json(self):
        return {
            "trace": self.trace,
            "profile": self.profile,
            "space": self.space,
            "start": self.start,
            "allocations": self.allocations,
            "at_kernel_address": self.at_kernel_address,
            "agreement": self.agreement,
            "agree_by_source": dict(self.agree_by_source),
            "mismatches": {k: self.mismatches.get(k, 0) for k in CLASSES},
            "mismatch_causes": {k: dict(v) for k, v in self.causes.items()},
            "inferences": {k: self.inferences.get(k, 0) for k in RULES},
            "failed_allocations": dict(self.failed),
            "skipped_events": dict(self.skipped),
            "purges": self.purges,
            "nr_lazy": dict(self.nr_lazy),
            "divergences": self.divergences,
            "timeline": self.timeline,
            "split": self.split,
            "classes": CLASSES,
            "rules": RULES,
        }


# -- the replay ----------------------------------------------------------------

class Replayer:
    """One replay: a model space following one trace (see the module docstring)."""

    def __init__(self, pre, *, kernel=None, impl="core", start="infer", nr_nodes=None,
                 auto_purge=False, divergences=10, vmallocinfo_before=None, reorder_window=8,
                 split_index=None, trace_info=None, sample_every=200):
        self.profile = profiles.resolve(kernel)
        self.start_mode = start
        self.space_range = pre.range
        self.pre = pre
        if nr_nodes is None:
            cpus = pre.cpus or pre.max_cpu + 1
            nr_nodes = max(1, min(cpus, 128))
        if not self.profile.nodes:
            nr_nodes = 1
        cls = _space_class(impl)
        self.space = cls(*self.space_range, nr_nodes=nr_nodes, kernel=self.profile.name,
                         auto_purge=auto_purge,
                         lazy_max_pages=pre.lazy_max_pages if auto_purge and
                         pre.lazy_max_pages else None)
        self.auto_purge = auto_purge
        self.max_divergences = divergences
        self.reorder_window = reorder_window
        self.split_index = split_index
        self.sample_every = sample_every
        self.fillers = {}              # start -> end, the filler areas
        self.filler_starts = []        # sorted
        self.kernel_only = set()       # kernel areas the model could not place
        self.lazy_offset = 0
        self.last_pretrace = {}        # (node, size) -> last pre-trace area handed out
        self.window_agree = 0
        self.first_purge_done = False
        self.failed_pids = set()       # tasks whose allocation failed, before its purge
        self.retrying = set()          # tasks retrying after the overflow purge
        self.index = -1
        self.report = Report(trace=trace_info or {}, profile=self.profile.name,
                             space={"start": self.space_range[0], "end": self.space_range[1],
                                    "nr_nodes": self.space.nr_nodes, "impl": impl,
                                    "search": self.space.search, "lock": self.space.lock,
                                    "auto_purge": auto_purge},
                             start=start)
        self._second = None if split_index is None else Report(
            trace={}, profile=self.profile.name, space={}, start=start)
        if start == "infer":
            self._plant(infer_start(pre, self.space_range, self.space.page_size,
                                    vmallocinfo_before))
        elif start != "empty":
            raise ValueError(f"start must be 'infer' or 'empty', not {start!r}")

    # -- the inferred start ------------------------------------------------------
    def _plant(self, st):
        inf = self.report.inferences
        for s, e in st.pretrace_busy:
            self.space.alloc_at(s, e - s, caller=PRETRACE)
        for s, e in st.fillers:
            self._add_filler(s, e)
        inf["pretrace_busy"] = len(st.pretrace_busy)
        inf["handed_out_free"] = len(st.free_runs)
        inf["alignment_gaps_free"] = st.alignment_gaps
        inf["unseen_busy"] = len(st.fillers)
        inf["pretrace_lazy_pages"] = st.pretrace_lazy_pages
        self.lazy_offset = st.pretrace_lazy_pages
        self.start_state = st

    def _add_filler(self, s, e):
        self.space.alloc_at(s, e - s, caller=FILLER)
        self.fillers[s] = e
        bisect.insort(self.filler_starts, s)

    def _drop_filler(self, s):
        del self.fillers[s]
        self.filler_starts.pop(bisect.bisect_left(self.filler_starts, s))
        self.space.free(s)

    def _fillers_over(self, s, e):
        i = bisect.bisect_right(self.filler_starts, s) - 1
        out = []
        i = max(i, 0)
        while i < len(self.filler_starts) and self.filler_starts[i] < e:
            fs = self.filler_starts[i]
            if self.fillers[fs] > s:
                out.append((fs, self.fillers[fs]))
            i += 1
        return out

    # -- events ------------------------------------------------------------------
    def run(self, events):
        pending = collections.deque()
        it = iter(events)
        exhausted = False
        while True:
            while not exhausted and len(pending) <= self.reorder_window:
                try:
                    pending.append(next(it))
                except StopIteration:
                    exhausted = True
            if not pending:
                break
            ev = pending.popleft()
            self.index += 1
            if isinstance(ev, Alloc):
                self._alloc(ev, pending)
            elif isinstance(ev, Free):
                self._free(ev)
            else:
                self._purge(ev)
        self._finish()
        return self.report

    def _in_space(self, ev):
        s, e = self.space_range
        ve = vend_exclusive(ev.vend, self.space.page_size)
        return s <= ev.vstart < ve <= e

    def _request(self, ev):
        return ev.size, ev.align, ev.vstart, vend_exclusive(ev.vend, self.space.page_size)

    def _pool_eligible(self, ev):
        size, align, vs, ve = self._request(ev)
        return (vs, ve) == self.space_range and self.space.nr_nodes > 1

    def _alloc(self, ev, pending):
        rep = self._rep()
        if not self._in_space(ev):
            rep.skipped["alloc outside the replayed range"] += 1
            return
        size, align, vs, ve = self._request(ev)
        if ev.failed:
            # The first failure of an allocation arms the overflow purge; the
            # failure of its retry (after that purge) is final.
            if ev.pid in self.retrying:
                self.retrying.discard(ev.pid)
            else:
                self.failed_pids.add(ev.pid)
            rep.failed["kernel"] += 1
            addr, src = self.space.predict(size, align, vs, ve, cpu=ev.cpu)
            if addr is None:
                rep.failed["model_also_failed"] += 1
            else:
                self._mismatch(ev, "kernel_failed", "the model had room: its fit was not "
                               "free in the kernel (learned busy)", (addr, src))
                if src == "free":
                    self._learn_busy(addr, size)
            return
        self.failed_pids.discard(ev.pid)
        self.retrying.discard(ev.pid)
        rep.allocations += 1
        addr, src = self.space.predict(size, align, vs, ve, cpu=ev.cpu)
        if (addr is not None and addr < ev.va_start and src == "free"
                and self.space.locate(ev.va_start)[0] == "free"
                and self._lock_order(ev, addr, pending)):
            addr, src = self.space.predict(size, align, vs, ve, cpu=ev.cpu)
        if addr == ev.va_start:
            got = self.space.alloc(size, align, vs, ve, cpu=ev.cpu)
            assert got == addr, (got, addr)
            rep.at_kernel_address += 1
            rep.agree_by_source[src] += 1
            self._sample(True)
            return
        self._classify_and_force(ev, addr, src)
        self._sample(False)

    def _lock_order(self, ev, addr, pending):
        """lock_order: a later allocation with the same request got ``addr``
        (no purge in between): replay it first."""
        for k, other in enumerate(pending):
            if isinstance(other, Purge):
                return False
            if (isinstance(other, Alloc) and not other.failed and other.va_start == addr
                    and self._request(other) == self._request(ev)):
                got, src = self.space.predict(*self._request(other), cpu=other.cpu)
                if got != addr or src != "free":
                    return False
                del pending[k]
                self.report.inferences["lock_order"] += 1
                self.index += 1
                self._alloc(other, pending)
                return True
        return False

    def _classify_and_force(self, ev, addr, src):
        size = ev.size
        a = ev.va_start
        state, area, node = self.space.locate(a)
        block = area if state == "free" else None
        eligible = self._pool_eligible(ev)
        near = self._near(ev, addr) if len(self.report.divergences) < self.max_divergences \
            else None
        where = self._place(ev, eligible)
        if src == "pool":
            klass, cause = "model_pool", f"the model's node {ev.cpu % self.space.nr_nodes} pool head"
        elif where == "pooled":
            klass, cause = "kernel_pool", ("the area sat in the model's pool of node "
                                           f"{node}, not at the head of node "
                                           f"{ev.cpu % self.space.nr_nodes}'s")
        elif where == "filler":
            klass = "kernel_pool" if eligible and self._pool_sized(size) else "cannot_give"
            node_id = ev.cpu % self.space.nr_nodes
            last = self.last_pretrace.get((node_id, size))
            self.last_pretrace[(node_id, size)] = a
            if klass == "kernel_pool" and last is not None and a < last:
                cause = ("a pool filled before the trace (the node's pre-trace areas come "
                         "out in descending order, as a LIFO pool gives them)")
            else:
                cause = "an area from before the trace (a pool or a hole the model does not know)"
            self.report.inferences["pretrace_handed_out"] += 1
        elif where is None:
            klass, cause = "cannot_give", f"the model holds it {state}"
        elif addr is None:
            klass, cause = "cannot_give", f"the model found no room ({src})"
        else:
            klass = "lowest_fit"
            length = size + ev.align - 1 if ev.align > self.space.page_size else size
            if addr < a:
                cause = ("the model's fit is lower: its range was not free in the kernel "
                         "(learned busy)")
                self._learn_busy(addr, size, upto=a)
            elif block is not None and block.size < length:
                cause = ("the kernel's search took a block smaller than size + align - 1 "
                         "found on its path: the trees' shapes differ")
            else:
                cause = "the model's fit is higher"
        self._mismatch(ev, klass, cause, (addr, src), state, near)

    def _pool_sized(self, size):
        return size // self.space.page_size <= 256

    def _place(self, ev, eligible):
        """Put the kernel's area into the model: returns "free", "pooled",
        "filler" (part of a filler given up) or None (the model holds that
        range busy or lazy: the area stays the kernel's alone)."""
        a, size = ev.va_start, ev.size
        cpu = ev.cpu if eligible else None
        state, area, _ = self.space.locate(a)
        if state == "free" and area.end >= a + size:
            self.space.alloc_at(a, size, cpu=cpu)
            return "free"
        if state == "pooled" and (area.start, area.end) == (a, a + size):
            self.space.alloc_at(a, size, cpu=cpu)
            return "pooled"
        # Covered by free blocks and filler areas only?
        pos = a
        while pos < a + size:
            st, ar, _ = self.space.locate(pos)
            if st == "free" or (st == "busy" and ar.start in self.fillers):
                pos = ar.end
            else:
                self.kernel_only.add(a)
                return None
        over = self._fillers_over(a, a + size)
        for s, _ in over:
            self._drop_filler(s)
        self.space.alloc_at(a, size, cpu=cpu)
        for s, e in over:
            if s < a:
                self._add_filler(s, a)
            if e > a + size:
                self._add_filler(a + size, e)
        return "filler" if over else "free"

    def _learn_busy(self, addr, size, upto=None):
        """busy_from_contradiction: [addr, addr + size) was not free in the
        kernel; with ``upto`` (the kernel's higher address) nothing of the
        model's free block between addr and upto was: a lowest fit would have
        taken it."""
        state, area, _ = self.space.locate(addr)
        if state == "free" and area.end >= addr + size:
            end = addr + size if upto is None else max(addr + size, min(area.end, upto))
            self._add_filler(addr, end)
            self.report.inferences["busy_from_contradiction"] += 1

    def _free(self, ev):
        rep = self._rep()
        a = ev.va_start
        if a in self.kernel_only:
            self.kernel_only.discard(a)
            rep.skipped["free of an area the model could not place"] += 1
            return
        state, area, _ = self.space.locate(a)
        if state != "busy" or area.start != a or a in self.fillers:
            rep.skipped["free of an area the model does not hold"] += 1
            return
        self.space.free_lazy(a)
        model = self.space.stats()["lazy_pages"] + self.lazy_offset
        rep.nr_lazy["compared"] += 1
        rep.nr_lazy["equal"] += model == ev.nr_lazy
        rep.nr_lazy["max_abs_diff"] = max(rep.nr_lazy["max_abs_diff"], abs(model - ev.nr_lazy))

    def _purge(self, ev):
        full = ev.pid in self.failed_pids
        if full:
            self.failed_pids.discard(ev.pid)
            self.retrying.add(ev.pid)
        if full:
            self.report.inferences["full_purge"] += 1
        before = self.space.stats()
        lazy = self.space.lazy_areas()
        if self.auto_purge:
            n = 0
        else:
            n = self.space.purge(full)
        mstart = min((x.start for x in lazy), default=None)
        mend = max((x.end for x in lazy), default=None)
        kernel = {"line": ev.lineno, "num_purged": ev.num_purged,
                  "start": ev.start if ev.num_purged else None,
                  "end": ev.end if ev.num_purged else None}
        extra = 0
        if not self.first_purge_done and self.lazy_offset and ev.num_purged > n:
            extra = ev.num_purged - n
            self.report.inferences["pretrace_lazy_purged"] += extra
        if not self.first_purge_done:
            self.lazy_offset = 0            # the pre-trace lazy pages are gone now
        self.first_purge_done = True
        self.report.purges.append({
            "kernel": kernel,
            "model": {"num_purged": n, "start": mstart, "end": mend, "full": full,
                      "lazy_pages_before": before["lazy_pages"]},
            "equal_count": n + extra == ev.num_purged,
            "equal_range": (mstart, mend) == (kernel["start"], kernel["end"]) or
            (n == 0 and ev.num_purged == 0),
        })

    # -- bookkeeping ---------------------------------------------------------------
    def _rep(self):
        if self._second is not None and self.index >= self.split_index:
            return self._second
        return self.report

    def _mismatch(self, ev, klass, cause, model, state=None, near=None):
        rep = self._rep()
        rep.mismatches[klass] += 1
        rep.causes[klass][cause] += 1
        if self._second is not None and rep is self._second:
            self.report.mismatches[klass] += 1
            self.report.causes[klass][cause] += 1
        if len(self.report.divergences) < self.max_divergences:
            if near is None:
                near = self._near(ev, model[0])
            self.report.divergences.append(self._neighbourhood(ev, klass, cause, model, state,
                                                               near))

    def _near(self, ev, addr):
        """The model's view around the kernel's and the model's addresses
        (before the kernel's area is put in), and the pool head of the CPU's node."""
        near = []
        for p in sorted({x for x in ((None if ev.failed else ev.va_start), addr)
                         if x is not None}):
            st, area, node = self.space.locate(p)
            if st == "busy" and area.start in self.fillers:
                st = "a filler (unknown before the trace)"
            near.append({"addr": p, "state": st, "area": [area.start, area.end] if area else None,
                         "node": node})
        return near

    def _neighbourhood(self, ev, klass, cause, model, state, near):
        addr, src = model
        return {"line": ev.lineno, "cpu": ev.cpu, "task": ev.task, "ts": ev.ts,
                "class": klass, "cause": cause,
                "kernel": {"addr": ev.va_start if not ev.failed else None, "size": ev.size,
                           "align": ev.align, "state_in_model": state},
                "model": {"addr": addr, "source": src},
                "neighbourhood": near}

    def _sample(self, agreed):
        rep = self._rep()
        if self._second is not None and rep is self._second:
            self.report.allocations += 1
            self.report.at_kernel_address += agreed
        n = self.report.allocations
        self.window_agree += agreed
        if n % self.sample_every == 0 or n == 1:
            st = self.space.stats()
            frag = 1 - st["largest_free"] / st["free_bytes"] if st["free_bytes"] else 0.0
            t = self.report.timeline
            last = t["alloc_index"][-1] if t["alloc_index"] else 0
            t["alloc_index"].append(n)
            t["agreement"].append(self.report.at_kernel_address / n)
            t["window_agreement"].append(self.window_agree / (n - last))
            t["free_blocks"].append(st["free_areas"])
            t["fragmentation"].append(frag)
            t["event"].append(self.index)
            self.window_agree = 0

    def _finish(self):
        if self._second is not None:
            sec = self._second
            first_allocs = self.report.allocations - sec.allocations
            first_agree = self.report.at_kernel_address - sec.at_kernel_address
            self.report.split = {
                "index": self.split_index,
                "seen": {"allocations": first_allocs, "at_kernel_address": first_agree},
                "unseen": {"allocations": sec.allocations,
                           "at_kernel_address": sec.at_kernel_address,
                           "mismatches": dict(sec.mismatches)},
            }


def _space_class(impl):
    if impl == "reference":
        from .reference import ReferenceSpace
        return ReferenceSpace
    if impl == "core":
        from . import VmapSpace
        return VmapSpace
    raise ValueError(f"impl must be 'core' or 'reference', not {impl!r}")


def unpurged_pages(vmallocinfo_path, page=PAGE):
    """Pages of the ``unpurged vm_area`` lines of a /proc/vmallocinfo dump."""
    from .kernel import vmallocinfo
    text, _ = vmallocinfo.read(vmallocinfo_path)
    return sum(page_align_up(e.size, page) // page for e in vmallocinfo.parse(text).entries
               if e.unpurged)


def replay(source, *, kernel=None, impl="core", start="infer", nr_nodes=None,
           auto_purge=False, divergences=10, vmallocinfo_before=None, split=None,
           reorder_window=8, name=None):
    """Replay a trace (path, "-" or stream: read twice when start="infer", so
    a path or a seekable stream) and return its :class:`Report`.

    ``kernel``: the profile (default the newest); ``impl``: "core" or
    "reference"; ``start``: "infer" or "empty"; ``vmallocinfo_before``: a
    dump taken before the trace (its unpurged total is the pre-trace lazy
    pages); ``split``: a fraction in (0, 1): the inference sees only the
    events before it, and the report gives the agreement before and after
    (``report.split``)."""
    if split is not None and not 0 < split < 1:
        raise ValueError("split must be a fraction in (0, 1)")
    total = None
    if split is not None:
        total = sum(1 for _ in TraceReader(source, name=name))
        _rewind(source)
    limit = None if split is None else int(total * split)
    pre = prescan(source, limit=limit, name=name)
    _rewind(source)
    lazy0 = unpurged_pages(vmallocinfo_before) if vmallocinfo_before else None
    reader = TraceReader(source, name=name)
    r = Replayer(pre, kernel=kernel, impl=impl, start=start, nr_nodes=nr_nodes,
                 auto_purge=auto_purge, divergences=divergences, vmallocinfo_before=lazy0,
                 split_index=limit, reorder_window=reorder_window)
    report = r.run(reader)
    report.trace = {"name": reader.name, **reader.counts()}
    return report


def _rewind(source):
    if hasattr(source, "seek"):
        source.seek(0)


__all__ = ["CLASSES", "RULES", "Prescan", "Replayer", "Report", "infer_start", "prescan",
           "replay", "vend_exclusive"]

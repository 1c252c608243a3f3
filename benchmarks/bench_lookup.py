#!/usr/bin/env python3
"""Lookups on workloads besides uniform random: ns per find() and per
find_many() address, against the peers of bench_ops.py.

The areas are bench_ops.py's workload (N live areas of 1..16 pages, lowest fit,
20 % holes; same seed, same build).  Query sets (each peer answers each one,
its hit count checked against the ground truth before timing):

* uniform: bench_ops.py's queries (90 % inside random live areas, 10 % in holes);
* hot: a hot set of 1 % of the live areas, queries at random offsets in them;
* sequential: one query per live area, in address order (a scan);
* misses: addresses in holes only.

The same four sets are then drawn on a second workload, the kernel's mix: N
live areas with the sizes of a real vmallocinfo dump (tests/data/vmallocinfo-
before.txt, bench_aligned.py's mix: thread and IRQ stacks 20 KiB at 16 KiB
alignment, the rest page-aligned, up to MiBs), allocated lowest fit through
vmap_core, 20 % freed at random.

Peers: vmap_core (lock "node", nr_nodes=2: the kernel's per-CPU nodes of a
2-CPU machine, whose lookups walk to the next node when an area crosses into
another node's zone), "vmap_core 1 node" (the configuration the range
tutorial gives an index: no walk; the ratios stay against 2 nodes),
sortedcontainers (bisect on a
SortedList, bench_ops.py's allocator; on the kernel's mix, which it cannot
allocate (alignment), the same index built from the busy set), superintervals
(static, 32-bit keys: page numbers), intervaltree (1/50 of the queries: ~50x
slower); every one in the same loop, ``for a in qs: f(a)``.  Then, for
vmap_core only, on bench_ops.py's workload:

* misses at nr_nodes = 2 and 128, lock designs "node", "optimistic", "rwlock":
  the kernel's walk (a miss visits every node) and the bounded walk
  (``walk="bounded"``, for the designs no kernel shipped: "optimistic" and "rwlock");
* find_many per lock design: ns per address, batched (several descents in
  flight) and one descent at a time (``_find_many_serial``).

Best of ``--rounds`` interleaved rounds, each timed pass after an untimed one
over the same queries (``--cold``: without it); spread = worst / best round.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import random
import sys
from array import array
from pathlib import Path
from time import perf_counter_ns

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_ops as B  # noqa: E402

LOCKS = ("node", "global", "rwlock", "optimistic")


def holes_of(live):
    """The free gaps between address-ordered (start, end) pairs."""
    holes = []
    prev = B.SPACE_START
    for s, e in live:
        if s > prev:
            holes.append((prev, s))
        prev = e
    return holes


def hot_draws(live, rng, k, n_queries):
    """A hot set of k of the (start, end) areas in live, and n_queries random
    picks in it: (the picked area's start, an address at a random offset in it)."""
    hot = rng.sample(live, k)
    return [(s, s + rng.randrange(e - s)) for s, e in (rng.choice(hot) for _ in range(n_queries))]


def query_sets(wl, rng, n_queries):
    live = list(zip(wl.live_starts, wl.live_ends))
    hot = [a for _, a in hot_draws(live, rng, max(1, len(live) // 100), n_queries)]
    holes = holes_of(live)
    return {
        "uniform": wl.queries[:n_queries],
        "hot": hot,
        "sequential": [s + rng.randrange(e - s) for s, e in live[:n_queries]],
        "misses": [s + rng.randrange(e - s) for s, e in (rng.choice(holes) for _ in range(n_queries))],
    }


def truth(wl, qs):
    ls, le = wl.live_starts, wl.live_ends
    hits = 0
    for a in qs:
        i = bisect.bisect_right(ls, a) - 1
        if i >= 0 and a < le[i]:
            hits += 1
    return hits


def build_space(VmapSpace, wl, **kw):
    end = B.SPACE_START + B.SPACE_SIZE
    space, secs, _, _ = B.build_alloc_peer(lambda: VmapSpace(B.SPACE_START, end, **kw), wl, False)
    return space


class KernelMix:
    """N live areas drawn from a real vmallocinfo dump's (size, align) mix,
    allocated lowest fit in a vmap_core space, then a random 20 % freed;
    uniform queries as bench_ops.py's (90 % at random offsets in live areas,
    10 % in holes).  The busy set is what alloc() returned, kept apart from
    find().  space: that space (lock "node", 2 nodes); build() replays the
    same allocs and frees into a new one."""

    def __init__(self, VmapSpace, n, seed, n_queries):
        import bench_aligned            # after B.import_vmap_core() chose the build
        rng = random.Random(f"vmap-lookup-mix-{seed}-{n}")
        mix = bench_aligned.load_mix()
        m = int(round(n / (1 - B.FREED_FRACTION)))
        self.VmapSpace = VmapSpace
        self.requests = [rng.choice(mix) for _ in range(m)]
        self.free_order = rng.sample(range(m), m - n)
        self.space = space = VmapSpace(B.SPACE_START, B.SPACE_START + B.SPACE_SIZE, nr_nodes=2,
                                       lock="node")
        self.starts = [space.alloc(size, align) for size, align in self.requests]
        for i in self.free_order:
            space.free(self.starts[i])
        freed = set(self.free_order)
        live = sorted((self.starts[i], self.requests[i][0]) for i in range(m) if i not in freed)
        self.live_starts = array("Q", (a for a, _ in live))
        self.live_ends = array("Q", (a + size for a, size in live))
        holes = holes_of(zip(self.live_starts, self.live_ends))
        qs = []
        for _ in range(n_queries):
            if rng.random() < B.HOLE_QUERY_FRACTION:
                s, e = holes[rng.randrange(len(holes))]
            else:
                s, size = live[rng.randrange(n)]
                e = s + size
            qs.append(s + rng.randrange(e - s))
        self.queries = qs

    def build(self, **kw):
        """A new space with these allocs and frees; every address checked."""
        space = self.VmapSpace(B.SPACE_START, B.SPACE_START + B.SPACE_SIZE, **kw)
        alloc = space.alloc
        for (size, align), want in zip(self.requests, self.starts):
            got = alloc(size, align)
            if got != want:
                raise AssertionError(f"alloc({size}, {align}) = {got:#x}, expected {want:#x}")
        for i in self.free_order:
            space.free(self.starts[i])
        return space


def static_peers(wl, slow_find_factor):
    """The peers built from a busy set: superintervals and intervaltree."""
    peers = {}
    si = B.optional("superintervals")
    if si is not None:
        im = si.IntervalMap.from_arrays(array("i", (s >> B.PAGE_SHIFT for s in wl.live_starts)),
                                        array("i", ((e >> B.PAGE_SHIFT) - 1 for e in wl.live_ends)))
        has = im.has_overlaps

        def si_find(a):
            p = a >> B.PAGE_SHIFT
            return has(p, p)
        peers["superintervals"] = (si_find, bool, 1)
    it = B.optional("intervaltree")
    if it is not None:
        tree = it.IntervalTree(it.Interval(s, e) for s, e in zip(wl.live_starts, wl.live_ends))
        peers["intervaltree"] = (tree.at, bool, slow_find_factor)
    return peers


def find_table(title, wl, peers, sets, rounds, warm):
    """Check every peer's hits on every set, time them in interleaved rounds,
    print the table; returns {peer: {set: {ns, spread, ratio}}}."""
    for name, (f, hit, factor) in peers.items():
        for sname, qs in sets.items():
            qs = qs[:max(1, len(qs) // factor)]
            got = sum(1 for a in qs if hit(f(a)))
            want = truth(wl, qs)
            if got != want:
                raise AssertionError(f"{title}, {name} {sname}: {got} hits, expected {want}")
    times = {(p, s): [] for p in peers for s in sets}
    gc.disable()
    for r in range(rounds):
        names = list(peers)
        names = names[r % len(names):] + names[:r % len(names)]
        for sname, qs in sets.items():
            for name in names:
                f, _, factor = peers[name]
                q = qs[:max(1, len(qs) // factor)]
                times[name, sname].append(B.time_find(f, q, warm) / len(q))
    gc.enable()
    out = {}
    print(f"\nfind, {title}: ns per call (ratio = peer / vmap_core; spread)")
    print(f"{'peer':18}" + "".join(f"{s:>26}" for s in sets))
    for name in peers:
        row = f"{name:18}"
        for sname in sets:
            b, sp = best_spread(times[name, sname])
            ratio = b / best_spread(times["vmap_core", sname])[0]
            # The ratio of two bests may pair rounds from different phases of a
            # shared machine; each round's own ratio (the peers ran back to
            # back) shows how far the ratio itself moved during the run.
            rs = [p / v for p, v in zip(times[name, sname], times["vmap_core", sname])]
            row += f"{b:12.0f} {ratio:6.2f}x ±{sp - 1:5.0%}"
            out.setdefault(name, {})[sname] = {"ns": b, "spread": sp, "ratio": ratio,
                                               "ratio_rounds": [min(rs), max(rs)]}
        print(row)
    print("each round's own ratio to vmap_core, lowest-highest:")
    for name in peers:
        if name != "vmap_core":
            print(f"{name:18}" + "".join(
                "{:>26}".format("{:.1f}-{:.1f}x".format(*out[name][s]["ratio_rounds"]))
                for s in sets))
    one = "vmap_core 1 node"
    if one in out:
        print(f"ratios against {one} ({', '.join(sets)}): " + "; ".join(
            f"{name} " + " ".join(f"{out[name][s]['ns'] / out[one][s]['ns']:.2f}x" for s in sets)
            for name in peers if not name.startswith("vmap_core")))
    return out


def best_spread(xs):
    return min(xs), max(xs) / min(xs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=B.parse_size, default=10**5, help="live areas N [1e5]")
    ap.add_argument("--queries", type=int, default=100_000, help="queries per set [100000]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slow-find-factor", type=int, default=50,
                    help="intervaltree times queries/this [50]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "bench_lookup.json")
    ap.add_argument("--no-kernel-mix", dest="kernel_mix", action="store_false",
                    help="skip the find table on the kernel's size mix")
    ap.add_argument("--quick", action="store_true", help="N = 1e4, 20000 queries, 2 rounds")
    ap.add_argument("--cold", dest="warm", action="store_false",
                    help="no untimed pass before each timed one: each pass starts with what "
                         "the peer timed before it left in the caches")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.queries, args.rounds = 10**4, 20_000, 2
    VmapSpace, _, where, note = B.import_vmap_core()
    if VmapSpace is None:
        raise SystemExit(f"vmap_core is not built: {note}")
    from vmap_core import MISS
    n = args.size
    wl = B.Workload(n, args.seed, args.queries)
    rng = random.Random(args.seed)
    sets = query_sets(wl, rng, args.queries)
    print(f"N = {n:,} live areas; {args.queries:,} queries per set; best of {args.rounds} "
          f"interleaved rounds (spread = worst / best); each timed pass "
          + ("after an untimed one over the same queries" if args.warm else
             "right after the previous peer's (--cold)") + f"; vmap_core from {where}")

    # -- find: every peer, every set, on each workload ---------------------------
    peers = {}
    for name, nodes in (("vmap_core", 2), ("vmap_core 1 node", 1)):
        space = build_space(VmapSpace, wl, nr_nodes=nodes, lock="node")
        peers[name] = (space.find, lambda r: r is not None, 1)
    sc = B.optional("sortedcontainers")
    if sc is not None:
        SA = B.make_sorted_allocator_class(sc.SortedList)
        sa = build_space(lambda start, end: SA(start, end), wl)
        peers["sortedcontainers"] = (sa.make_find(), lambda r: r is not None, 1)
    peers.update(static_peers(wl, args.slow_find_factor))
    missing = [p for p in ("sortedcontainers", "superintervals", "intervaltree") if p not in peers]
    if missing:
        print(f"skipped (not installed; pip install .[bench]): {', '.join(missing)}")
    result = {"n": n, "queries": args.queries, "rounds": args.rounds, "warm": args.warm}
    result["find"] = find_table("bench_ops.py's workload (1..16 pages)", wl, peers, sets,
                                args.rounds, args.warm)
    peers.clear()
    if args.kernel_mix:
        km = KernelMix(VmapSpace, n, args.seed, args.queries)
        peers["vmap_core"] = (km.space.find, lambda r: r is not None, 1)
        peers["vmap_core 1 node"] = (km.build(nr_nodes=1, lock="node").find,
                                     lambda r: r is not None, 1)
        if sc is not None:
            sa = SA(B.SPACE_START, B.SPACE_START + B.SPACE_SIZE)
            for s_, e_ in zip(km.live_starts, km.live_ends):    # its index only
                sa.busy[s_] = e_
            sa.busy_starts.update(km.live_starts)
            peers["sortedcontainers"] = (sa.make_find(), lambda r: r is not None, 1)
        peers.update(static_peers(km, args.slow_find_factor))
        ksets = query_sets(km, random.Random(args.seed), args.queries)
        result["find_kernel_mix"] = find_table(
            "the kernel's mix (a vmallocinfo dump's sizes, stacks 16 KiB-aligned)",
            km, peers, ksets, args.rounds, args.warm)
        peers.clear()
        del km

    # -- misses: the kernel walk and the bounded walk --------------------------
    walks = {}
    for nodes in (2, 128):
        for lock in ("node", "optimistic", "rwlock"):
            walks[nodes, lock] = build_space(VmapSpace, wl, nr_nodes=nodes, lock=lock)
            if lock != "node":          # the kernel's design keeps the kernel's walk
                walks[nodes, lock + "+bounded"] = build_space(VmapSpace, wl, nr_nodes=nodes,
                                                              lock=lock, walk="bounded")
    misses = sets["misses"]
    for sp in walks.values():
        assert sum(1 for a in misses if sp.find(a) is not None) == 0
    mt = {k: [] for k in walks}
    gc.disable()
    for r in range(args.rounds):
        for k, sp in walks.items():
            mt[k].append(B.time_find(sp.find, misses, args.warm) / len(misses))
    gc.enable()
    print("\nmisses (addresses in holes), ns per find()")
    result["misses"] = {}
    for lock in ("node", "optimistic", "rwlock", "optimistic+bounded", "rwlock+bounded"):
        b2, s2 = best_spread(mt[2, lock])
        b128, s128 = best_spread(mt[128, lock])
        walk = "bounded walk" if "bounded" in lock else "kernel walk"
        print(f"  {lock.split('+')[0]:10} ({walk:12}) nr_nodes=2: {b2:7.0f} ±{s2 - 1:4.0%}   "
              f"nr_nodes=128: {b128:7.0f} ±{s128 - 1:4.0%}   128/2: {b128 / b2:5.2f}x")
        result["misses"][lock] = {"2": b2, "128": b128, "ratio": b128 / b2}
    del walks

    # -- find_many per lock design ----------------------------------------------
    qa = array("Q", sets["uniform"])
    spaces = {lock: build_space(VmapSpace, wl, nr_nodes=2, lock=lock) for lock in LOCKS}
    outs = {}
    for lock, sp in spaces.items():
        want = array("Q", (a.start if (a := sp.find(q)) else MISS for q in qa))
        got = sp.find_many(qa)
        assert got == want, lock
        assert sp._find_many_serial(qa, array("Q", bytes(8 * len(qa)))) == want
        outs[lock] = got
    fm = {(lock, kind): [] for lock in LOCKS for kind in ("batched", "serial")}
    gc.disable()
    for r in range(args.rounds):
        for lock, sp in spaces.items():
            out = outs[lock]
            for kind, run in (("batched", sp.find_many), ("serial", sp._find_many_serial)):
                if args.warm:
                    run(qa, out)
                t0 = perf_counter_ns()
                run(qa, out)
                fm[lock, kind].append((perf_counter_ns() - t0) / len(qa))
    gc.enable()
    print("\nfind_many, uniform queries, ns per address (nr_nodes=2)")
    result["find_many"] = {}
    for lock in LOCKS:
        b, s = best_spread(fm[lock, "batched"])
        b1, s1 = best_spread(fm[lock, "serial"])
        print(f"  {lock:10} batched {b:6.0f} ±{s - 1:4.0%}   one at a time {b1:6.0f} ±{s1 - 1:4.0%}"
              f"   gain {b1 / b:4.2f}x")
        result["find_many"][lock] = {"batched": b, "serial": b1, "spread": s}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

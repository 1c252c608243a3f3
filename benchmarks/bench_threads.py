"""Do Python threads run in parallel in vmap_core?

find_many() and find() from 1 and from N Python threads on one space, per
lock mode, as throughput ratios (N threads / 1 thread) measured in this run:
each figure the best of several interleaved rounds, with the spread of the
per-round ratios.  On a free-threaded CPython (3.13t, 3.14t) with the GIL off
every call runs in parallel; on a GIL build only find_many()'s lookups (which
drop the GIL) and the lock waits do, and the table says which build ran.

Rows:
  find_many            one call per thread over its own 200k-address array
  find                 each thread its own bound method, its own ints and its
                       own slice of the addresses (threads that look up the same
                       sequence in step would collide on every node lock)
  find (shared objs)   one bound method and one list of ints shared by every
                       thread: on a free-threaded build each call then
                       bumps reference counts that the other threads bump too
  find (GIL dropped)   VmapSpace._find_released, the lookup between a release
                       and a retake of the GIL (what find() avoids)

Then the lock statistics of find_many() and find() from 1, 2 and 4 threads in
"global" mode (one lock: contention rises with threads) and in "node" mode:
acquisitions, the share contended, and the mean wait of a contended one, over
--rounds interleaved passes (with the passes' spread, and the median share of
a pass during which every thread was in flight: a pass whose threads did not
overlap, one of them descheduled, shows no contention).

    python benchmarks/bench_threads.py [--areas N] [--rounds R] [--threads N] [--nodes N]
                                       [--json PATH]

--nodes defaults to the machine's CPU count, as the kernel's nr_vmap_nodes:
with as many nodes as threads, "node" mode pays for every collision of two
threads on one node's spinlock (the kernel's design does too); with the nodes
of a bigger machine the collisions thin out.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import random
import statistics
import sys
import sysconfig
import threading
import time

from rich.console import Console
from rich.table import Table

from vmap_core import VmapSpace
from vmap_core._space import line_transfer_ns, lock_totals

P = 4096
LOCKS = ("global", "node", "rwlock", "optimistic")
CALLS = ("find_many", "find", "find (shared objs)", "find (GIL dropped)")


def build(lock: str, n: int, nodes: int, seed: int = 1):
    rng = random.Random(seed)
    space = VmapSpace(1 << 40, (1 << 40) + (1 << 38), nr_nodes=nodes, lock=lock)
    starts = [space.alloc(P * rng.randint(1, 16)) for _ in range(n)]
    qs = array.array("Q", (s + rng.randrange(P) for s in rng.choices(starts, k=200_000)))
    return space, qs


def in_threads(nthreads: int, setup, body) -> tuple[float, float, float]:
    """(wall time, CPU time summed over the threads, share of the wall time
    during which every thread was in flight: had started body and not
    finished it) of body(setup(i)) on nthreads threads at once.  setup (each
    thread's own objects) runs before the clock starts; each thread reads the
    clocks itself, so that a main thread descheduled on a busy machine cannot
    miss the start."""
    barrier = threading.Barrier(nthreads)
    errors = []
    spans = []

    def run(i):
        try:
            state = setup(i)
        except BaseException as e:      # reported below; the barrier still meets
            errors.append(e)
            state = None
        barrier.wait()
        t0, c0 = time.perf_counter(), time.thread_time()
        if state is not None:
            body(state)
        spans.append((t0, time.perf_counter(), time.thread_time() - c0))

    pool = [threading.Thread(target=run, args=(i,)) for i in range(nthreads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    together = min(end for _, end, _ in spans) - max(start for start, _, _ in spans)
    return wall, sum(cpu for _, _, cpu in spans), max(0.0, together) / wall if wall else 1.0


def own_ints(qs) -> list[int]:
    """A list of new int objects with qs's values, owned by the calling thread."""
    out = []
    for a in qs:
        out.append(int.from_bytes(a.to_bytes(8, "little"), "little"))
    return out


def loop(state) -> None:
    fn, addrs = state
    for a in addrs:
        fn(a)


def workloads(space, qs, short):
    """call name -> (setup(i), body(state), ops per thread)."""
    shared_fn = space.find
    k = len(short)

    def mine(i):        # thread i's own slice of the addresses, as many as short
        first = (i * k) % len(qs)
        return (qs[first:] + qs[:first])[:k].tolist()

    return {
        "find_many": (lambda i: (space.find_many, array.array("Q", qs)),
                      lambda st: st[0](st[1]), len(qs)),
        "find": (lambda i: (space.find, own_ints(mine(i))), loop, k),
        "find (shared objs)": (lambda i: (shared_fn, short), loop, len(short)),
        "find (GIL dropped)": (lambda i: (space._find_released, own_ints(mine(i))), loop, k),
    }


def lock_stats(space, qs, short, call: str, nthreads: int) -> dict:
    """acquisitions, contended, wait_ns of the busy locks of space (the one
    lock in "global" mode) while nthreads threads run call: find_many() over
    qs (lookups back to back, so that a lock is held for much of the time, as
    in the kernel's hot paths), or find() over each thread's own slice of the
    addresses, as in the table above; and together, the share of the pass
    during which every thread was in flight (threads that never overlap, one
    descheduled for the length of a pass, see no contention)."""
    setup, body, _ = workloads(space, qs, short)[call]
    kind = "global" if space.lock == "global" else "busy"
    before = lock_totals(space)[kind]
    _, _, together = in_threads(nthreads, setup, body)
    after = lock_totals(space)[kind]
    out = {k: after[k] - before[k] for k in ("acquisitions", "contended", "wait_ns")}
    out["together"] = together
    return out


def build_info() -> str:
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    kind = "free-threaded build" if ft else "GIL build"
    return (f"{platform.python_implementation()} {platform.python_version()} ({kind}, "
            f"GIL {'on' if gil else 'off'}), {os.cpu_count()} CPUs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--areas", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="N, compared with 1 (default 2)")
    ap.add_argument("--finds", type=int, default=50_000, help="find() calls per thread")
    ap.add_argument("--nodes", type=int, default=max(2, os.cpu_count() or 1),
                    help="nr_nodes of every space (default: the CPU count, at least 2)")
    ap.add_argument("--locks", default=",".join(LOCKS))
    ap.add_argument("--json", default="benchmarks/results/bench_threads.json")
    args = ap.parse_args()
    locks = [m for m in args.locks.split(",") if m]
    nts = (1, args.threads)

    spaces = {lock: build(lock, args.areas, args.nodes) for lock in locks}
    times: dict[tuple, list[float]] = {}
    cpus: dict[tuple, list[float]] = {}
    busy: dict[tuple, list[float]] = {}     # CPU time / wall time: the CPUs really had
    handoffs = []                       # the machine's cache-line handoff, once per round
    for _ in range(args.rounds):        # interleaved: every cell once per round
        handoffs.append(line_transfer_ns(50_000))
        for lock, (space, qs) in spaces.items():
            short = qs[:args.finds].tolist()
            for call, (setup, body, ops) in workloads(space, qs, short).items():
                for nt in nts:
                    wall, cpu, _ = in_threads(nt, setup, body)
                    times.setdefault((call, lock, nt), []).append(wall / (nt * ops))
                    cpus.setdefault((call, lock, nt), []).append(cpu / (nt * ops))
                    busy.setdefault((call, lock, nt), []).append(cpu / wall)

    console = Console(width=160)
    n = args.threads
    console.print(f"{build_info()}; {args.areas} areas, {args.nodes} nodes, best of {args.rounds} interleaved "
                  f"rounds.  speedup: throughput of {n} threads / 1 thread, wall clock; "
                  f"CPU/op ratio: CPU time per op on 1 thread / on {n} (1.00 = no "
                  f"contention; a shared machine's other load does not enter it); CPUs had: "
                  f"CPU time / wall time of the {n}-thread run with the best time (at most "
                  f"{n}: what the machine gave; the speedup cannot exceed it); spread: the "
                  f"per-round ratios, min-max.  A cache line passed between two threads took "
                  f"{min(handoffs):.0f}-{max(handoffs):.0f} ns (measured at the start of each round): "
                  f"what a lock taken last by the other CPU costs before its holder can start")
    table = Table("call", "lock", "ns/op 1 thr", f"ns/op {n} thr", "speedup", "spread",
                  "CPUs had", "CPU/op ratio", "spread ")
    rows = []
    for call in CALLS:
        for lock in locks:
            one, many = times[(call, lock, 1)], times[(call, lock, n)]
            c1, cn = cpus[(call, lock, 1)], cpus[(call, lock, n)]
            best = min(one) / min(many)
            per_round = [a / b for a, b in zip(one, many)]
            cpu_ratio = min(c1) / min(cn)
            cpu_rounds = [a / b for a, b in zip(c1, cn)]
            had = busy[(call, lock, n)][many.index(min(many))]
            rows.append({"call": call, "lock": lock, "ns_1thread": min(one) * 1e9,
                         "cpus_had": had,
                         "ns_nthreads": min(many) * 1e9, "threads": n,
                         "speedup": best, "round_speedups": per_round,
                         "cpu_ns_1thread": min(c1) * 1e9, "cpu_ns_nthreads": min(cn) * 1e9,
                         "cpu_ratio": cpu_ratio, "round_cpu_ratios": cpu_rounds})
            table.add_row(call, lock, f"{min(one) * 1e9:.0f}", f"{min(many) * 1e9:.0f}",
                          f"{best:.2f}x", f"{min(per_round):.2f}-{max(per_round):.2f}",
                          f"{had:.2f}",
                          f"{cpu_ratio:.2f}", f"{min(cpu_rounds):.2f}-{max(cpu_rounds):.2f}")
    console.print(table)

    contention = []
    stats_table = Table("call", "lock", "threads", "lock acquisitions", "contended %",
                        "spread", "ns waited per contended", "all threads in flight",
                        title=f"Lock statistics of the busy locks (lock_totals() before and after "
                              f"each pass; {args.rounds} passes, interleaved; spread: the passes' "
                              f"contended %, min-max)")
    cells = [(call, lock, nt) for call in ("find_many", "find") for lock in ("global", "node")
             if lock in spaces for nt in (1, 2, 4)]
    passes: dict[tuple, list[dict]] = {c: [] for c in cells}
    shorts = {lock: qs[:args.finds].tolist() for lock, (_, qs) in spaces.items()}
    for _ in range(args.rounds):
        for call, lock, nt in cells:
            space, qs = spaces[lock]
            passes[call, lock, nt].append(lock_stats(space, qs, shorts[lock], call, nt))
    for call, lock, nt in cells:
        ps = passes[call, lock, nt]
        acq, cont, wait = (sum(p[k] for p in ps) for k in ("acquisitions", "contended", "wait_ns"))
        shares = [100 * p["contended"] / p["acquisitions"] for p in ps if p["acquisitions"]]
        together = statistics.median(p["together"] for p in ps)
        contention.append({"call": call, "lock": lock, "threads": nt, "acquisitions": acq,
                           "contended": cont, "wait_ns": wait, "passes": ps})
        stats_table.add_row(call, lock, str(nt), str(acq),
                            f"{100 * cont / acq:.2f}" if acq else "-",
                            f"{min(shares):.2f}-{max(shares):.2f}" if shares else "-",
                            f"{wait / cont:.0f}" if cont else "-",
                            "-" if nt == 1 else f"{100 * together:.0f}%")
    console.print(stats_table)

    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"python": build_info(), "areas": args.areas, "nodes": args.nodes, "rounds": args.rounds,
                   "line_transfer_ns": handoffs,
                   "results": rows, "contention": contention}, f, indent=1)
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

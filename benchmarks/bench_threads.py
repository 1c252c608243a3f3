"""Do Python threads run in parallel in vmap_core, and what does the GIL cost?

Two questions, one table each, every figure the best of several interleaved
rounds:

1. find_many() from 1 and from 2 Python threads on one space (per lock mode):
   the lookups run without the GIL, so 2 threads should give close to 2x.
2. find() keeping the GIL (what VmapSpace.find does) against a find() that
   drops and retakes it around the lookup (VmapSpace._find_released), from 1
   and from 2 Python threads: the reason the single-address call keeps it.

    python benchmarks/bench_threads.py [--areas N] [--rounds R] [--json PATH]
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import threading
import time

from vmap_core import VmapSpace

P = 4096
LOCKS = ("global", "node", "rwlock", "optimistic")


def build(lock: str, n: int, seed: int = 1):
    rng = random.Random(seed)
    space = VmapSpace(1 << 40, (1 << 40) + (1 << 38), nr_nodes=max(2, os.cpu_count() or 1), lock=lock)
    starts = [space.alloc(P * rng.randint(1, 16)) for _ in range(n)]
    qs = array.array("Q", (s + rng.randrange(P) for s in rng.choices(starts, k=200_000)))
    return space, qs


def in_threads(nthreads: int, fn) -> float:
    """Wall time of running fn() on nthreads threads at once."""
    barrier = threading.Barrier(nthreads + 1)

    def run():
        barrier.wait()
        fn()

    pool = [threading.Thread(target=run) for _ in range(nthreads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--areas", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default="benchmarks/results/bench_threads.json")
    args = ap.parse_args()

    spaces = {lock: build(lock, args.areas) for lock in LOCKS}
    best: dict[tuple, float] = {}
    for _ in range(args.rounds):
        for lock, (space, qs) in spaces.items():
            for nt in (1, 2):
                t = in_threads(nt, lambda: space.find_many(qs))
                key = ("find_many", lock, nt)
                best[key] = min(best.get(key, 1e9), t / (nt * len(qs)))
            short = qs[:50_000].tolist()
            for name, fn in (("find (GIL kept)", space.find), ("find (GIL dropped)", space._find_released)):
                for nt in (1, 2):
                    def loop(fn=fn):
                        for a in short:
                            fn(a)
                    t = in_threads(nt, loop)
                    key = (name, lock, nt)
                    best[key] = min(best.get(key, 1e9), t / (nt * len(short)))

    rows = []
    print(f"{args.areas} areas, {os.cpu_count()} CPUs; ns per lookup (all threads together); "
          f"speedup = throughput of 2 threads / 1 thread")
    print(f"{'call':<20}{'lock':<12}{'1 thread':>10}{'2 threads':>11}{'speedup':>9}")
    for name in ("find_many", "find (GIL kept)", "find (GIL dropped)"):
        for lock in LOCKS:
            one, two = best[(name, lock, 1)] * 1e9, best[(name, lock, 2)] * 1e9
            # per-op time of 2 threads counts both threads' ops against one wall time
            speedup = one / two
            rows.append({"call": name, "lock": lock, "ns_1thread": one, "ns_2threads": two,
                         "speedup": speedup})
            print(f"{name:<20}{lock:<12}{one:>10.1f}{two:>11.1f}{speedup:>8.2f}x")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"cpus": os.cpu_count(), "areas": args.areas, "results": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

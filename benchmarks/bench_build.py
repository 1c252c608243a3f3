#!/usr/bin/env python3
"""Building a big space: seconds and bytes per live area.

N areas of 1..16 pages (uniform, seeded) allocated lowest-fit through
``alloc()`` from Python; with ``--holes F`` a random fraction F of
N / (1 - F) allocated areas is then freed, leaving N live areas and F
holes (each a free-tree record).  Reported: build seconds (allocs, frees),
``stats()["slab_bytes"]`` per live area (64-byte records, 4 KiB chunks) and
the process's RSS growth per live area (which also counts the Python list
of starts the frees need, 8 bytes + an int per allocated area).  With
``--finds Q``, Q lookups of random addresses in the built range are timed
after the build (best of 3 passes, with the spread): lookups at a size
where the records far exceed the caches and the TLB.

    python benchmarks/bench_build.py --size 1e7              # back to back
    python benchmarks/bench_build.py --size 1e7 --holes 0.2  # bench_ops's shape
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vmap_core import VmapSpace  # noqa: E402
from vmap_core.measure import rss_bytes  # noqa: E402

PAGE = 4096


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=float, default=1e7, help="live areas N [1e7]")
    ap.add_argument("--holes", type=float, default=0.0, help="freed fraction [0]")
    ap.add_argument("--finds", type=float, default=0, help="timed lookups after the build [0]")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    n = int(args.size)
    m = int(round(n / (1 - args.holes)))
    rng = random.Random(args.seed)
    sizes = [rng.randint(1, 16) * PAGE for _ in range(m)]
    freed = rng.sample(range(m), m - n) if m > n else []
    space = VmapSpace(1 << 40, 1 << 44, nr_nodes=2)
    r0 = rss_bytes()
    alloc, free = space.alloc, space.free
    t0 = time.perf_counter()
    starts = [alloc(z) for z in sizes] if freed else None
    if starts is None:
        for z in sizes:
            alloc(z)
    t1 = time.perf_counter()
    for i in freed:
        free(starts[i])
    t2 = time.perf_counter()
    st = space.stats()
    assert st["busy_areas"] == n
    print(f"N = {n:,} live areas ({m:,} allocated, {m - n:,} freed): build {t2 - t0:.1f} s "
          f"(allocs {t1 - t0:.1f} s, {(t1 - t0) / m * 1e9:.0f} ns each; frees {t2 - t1:.1f} s)")
    print(f"  slab {st['slab_bytes'] / n:.1f} B per live area; RSS growth "
          f"{(rss_bytes() - r0) / n:.1f} B per live area")
    if args.finds:
        lo = 1 << 40
        hi = lo + sum(sizes)
        qs = [rng.randrange(lo, hi) for _ in range(int(args.finds))]
        find = space.find
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for a in qs:
                find(a)
            runs.append((time.perf_counter() - t0) / len(qs) * 1e9)
        print(f"  find: {min(runs):.0f} ns per lookup (best of 3; passes "
              f"{', '.join(f'{r:.0f}' for r in runs)})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Record memory through churn: grow, shrink, regrow; bytes per live area.

A space is grown to N areas of 1..16 pages (lowest fit, seeded), then
shrunk by freeing a fraction F of its areas, then grown back to N, for R
cycles.  Shrinks are ``random`` (any F of the areas, in random order) or
``top`` (the F most recently allocated, last first: a space that grew and
then gives back its newest areas).  After each step the script reports

* ``slab``: ``stats()["slab_bytes"]`` per live area (64-byte records for busy
  areas and free blocks, 4 KiB chunks, the chunk tables), and the records in
  use per live area (``stats()["slab_records"]``: busy areas + free blocks);
* ``RSS``: the process's resident-set change over a shrink or regrow, per
  live area after it (the list of starts keeps its length, so the step's
  Python objects mostly cancel out): whether the pages the slab stops
  counting really leave the process, and come back on regrowth.

Figures are the median over cycles with [min, max]; the record is 64 bytes.

    python benchmarks/bench_slab.py                        # N = 1e6, F = 0.9, both shapes
    python benchmarks/bench_slab.py --size 1e7 --frac 0.5 --cycles 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vmap_core import VmapSpace  # noqa: E402
from vmap_core.measure import rss_bytes  # noqa: E402

PAGE = 4096


def spread(xs, digits=1):
    if not xs:
        return "-"
    return f"{statistics.median(xs):.{digits}f} [{min(xs):.{digits}f}, {max(xs):.{digits}f}]"


def run(shape, n, frac, cycles, seed):
    rng = random.Random(seed)
    space = VmapSpace(1 << 40, 1 << 44, nr_nodes=2)
    alloc, free = space.alloc, space.free
    starts = [alloc(rng.randint(1, 16) * PAGE) for _ in range(n)]
    k = int(n * frac)
    rows = {"grown": ([], [], []), "shrunk": ([], [], []), "regrown": ([], [], [])}

    def note(step, r_before, live):
        st = space.stats()
        assert st["busy_areas"] == live
        rows[step][0].append(st["slab_bytes"] / live)
        rows[step][1].append(st["slab_records"] / live)
        if r_before is not None:
            rows[step][2].append((rss_bytes() - r_before) / live)

    for _ in range(cycles):
        note("grown", None, n)
        if shape == "random":
            idx = rng.sample(range(n), k)
        else:
            idx = list(range(n - 1, n - 1 - k, -1))
        sizes = [rng.randint(1, 16) * PAGE for _ in idx]
        r = rss_bytes()
        for i in idx:
            free(starts[i])
        note("shrunk", r, n - k)
        r = rss_bytes()
        for i, z in zip(idx, sizes):
            starts[i] = alloc(z)
        note("regrown", r, n)
        if n <= 100_000:
            space.check()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=float, default=1e6, help="areas N at the peak [1e6]")
    ap.add_argument("--frac", type=float, default=0.9, help="fraction F freed by a shrink [0.9]")
    ap.add_argument("--cycles", type=int, default=3, help="shrink/regrow cycles R [3]")
    ap.add_argument("--shapes", default="random,top", help="shrink shapes [random,top]")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    n = int(args.size)
    print(f"N = {n:,}, shrink frees {args.frac:.0%} ({int(n * args.frac):,} areas), "
          f"{args.cycles} cycles; median [min, max] over cycles")
    print(f"{'shape':7} {'step':8} {'slab B/live area':>26} {'records/live area':>22} "
          f"{'RSS change B/live area':>28}")
    for shape in args.shapes.split(","):
        rows = run(shape, n, args.frac, args.cycles, args.seed)
        for step, (slab, recs, rss) in rows.items():
            print(f"{shape:7} {step:8} {spread(slab):>26} {spread(recs, 2):>22} {spread(rss):>28}")


if __name__ == "__main__":
    main()

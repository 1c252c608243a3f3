#!/usr/bin/env python3
"""find() of two or more builds of the extension, side by side in one process.

For a change to the lookup path, the machine's drift between two runs is
larger than the change: this loads each build given (a compiled
vmap_core._space, for example a copy of src/vmap_core/_space*.so taken before
and after the change) as its own module, builds the same spaces in each, and
times them in interleaved rounds.  Each build's answers are checked against
the ground truth before timing.

The spaces are bench_ops.py's workload in the kernel's configuration for two
CPUs (lock "node", 2 nodes), plus one space of one area (the call's cost
without a descent).  Query sets: bench_lookup.py's uniform and sequential
ones, and for each --hot fraction a hot set (queries at random offsets in
that fraction of the areas) as drawn, its queries whose area starts in the
address's own 64 KiB zone ("same zone"), those whose area starts in an
earlier zone ("cross zone": the kernel's walk descends two nodes), and the two
kinds run one after the other ("apart").

    cp src/vmap_core/_space*.so /tmp/before.so      # then change, rebuild
    python benchmarks/ab_find.py /tmp/before.so src/vmap_core/_space*.so

Each cell: best of --rounds ns per find() (median beside it), each timed pass
after an untimed one, and the speed of each build against the first (above 1x:
faster).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_lookup as L  # noqa: E402
import bench_ops as B  # noqa: E402

ZONE_SHIFT = 16         # vmap_zone_size: 16 pages of 4 KiB


def load_builds(paths, tmp):
    """Each build as its own module: a copy under its own name, since the
    dynamic loader returns the first handle again for a path it has loaded."""
    mods = {}
    for k, p in enumerate(paths):
        dst = Path(tmp) / f"b{k}" / Path(p).name
        dst.parent.mkdir()
        shutil.copy(p, dst)
        spec = importlib.util.spec_from_file_location("vmap_core._space", dst)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods[f"{k}:{Path(p).name}"] = mod
    return mods


def query_sets(wl, rng, n_queries, hot_fractions):
    sets = {k: v for k, v in L.query_sets(wl, rng, n_queries).items()
            if k in ("uniform", "sequential")}
    live = list(zip(wl.live_starts, wl.live_ends))
    for f in hot_fractions:
        drawn = L.hot_draws(live, rng, max(1, int(len(live) * f)), n_queries)
        same = [a for s, a in drawn if s >> ZONE_SHIFT == a >> ZONE_SHIFT]
        cross = [a for s, a in drawn if s >> ZONE_SHIFT != a >> ZONE_SHIFT]
        sets[f"hot {f:g}"] = [a for _, a in drawn]
        sets[f"hot {f:g} same zone"] = same
        sets[f"hot {f:g} cross zone"] = cross
        sets[f"hot {f:g} apart"] = same + cross
    # A subset's ints lie scattered over the memory of the list it was taken
    # from: a cache miss per query before find() is called (a third of the
    # cross-zone set's time).  Made afresh, each set's ints lie in its order.
    return {name: [a ^ 0 for a in qs] for name, qs in sets.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", help="compiled vmap_core._space files")
    ap.add_argument("--size", type=B.parse_size, default=10**5, help="live areas N [1e5]")
    ap.add_argument("--queries", type=int, default=100_000, help="queries per set [100000]")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--hot", default="0.01", help="hot-set fractions, comma-separated [0.01]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "ab_find.json")
    args = ap.parse_args(argv)
    _, _, where, note = B.import_vmap_core()    # the package the builds import from
    if note:
        raise SystemExit(note)
    wl = B.Workload(args.size, args.seed, args.queries)
    sets = query_sets(wl, random.Random(args.seed), args.queries,
                      [float(f) for f in args.hot.split(",")])
    want = {name: L.truth(wl, qs) for name, qs in sets.items()}
    tiny_qs = [B.SPACE_START + a % 4096 for a in sets["uniform"]]
    with tempfile.TemporaryDirectory() as tmp:
        mods = load_builds(args.builds, tmp)
        spaces, tiny = {}, {}
        for tag, mod in mods.items():
            spaces[tag] = L.build_space(mod.VmapSpace, wl, nr_nodes=2, lock="node")
            tiny[tag] = t = mod.VmapSpace(B.SPACE_START, B.SPACE_START + B.SPACE_SIZE,
                                          nr_nodes=2, lock="node")
            t.alloc(4096)
            for name, qs in sets.items():
                got = sum(spaces[tag].find(a) is not None for a in qs)
                if got != want[name]:
                    raise AssertionError(f"{tag}: {name}: {got} hits, want {want[name]}")
        cells = [("one area", tiny, tiny_qs)] + [(name, spaces, qs) for name, qs in sets.items()
                                                 if qs]          # a tiny hot set may cross no zone
        ns = {(c, tag): [] for c, _, _ in cells for tag in mods}
        gc.disable()
        try:
            for _ in range(args.rounds):
                for cname, sp, qs in cells:
                    for tag in mods:
                        ns[cname, tag].append(B.time_find(sp[tag].find, qs) / len(qs))
        finally:
            gc.enable()
    print(f"N = {args.size:,}; {args.queries:,} queries per set; lock 'node', 2 nodes; best of "
          f"{args.rounds} interleaved rounds (median); speed against {next(iter(mods))}; "
          f"package from {where}")
    width = max(len(c) for c, _, _ in cells)
    print(f"{'':{width}}  " + "  ".join(f"{tag:>26}" for tag in mods))
    for cname, _, qs in cells:
        first = min(ns[cname, next(iter(mods))])
        row = [f"{min(ns[cname, t]):6.1f} ({statistics.median(ns[cname, t]):6.1f}) "
               f"{first / min(ns[cname, t]):5.3f}x" for t in mods]
        print(f"{cname:{width}}  " + "  ".join(f"{r:>26}" for r in row) + f"   n={len(qs):,}")
    out = {"size": args.size, "rounds": args.rounds, "builds": list(args.builds),
           "cells": {c: {"queries": len(qs), **{t: {"best_ns": min(ns[c, t]),
                                                    "median_ns": statistics.median(ns[c, t])}
                                                for t in mods}} for c, _, qs in cells}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()

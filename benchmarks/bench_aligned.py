#!/usr/bin/env python3
"""Aligned churn: does an alloc get slower as a space ages?

The kernel's most frequent vmalloc request is a thread stack: 20 KiB (16 KiB
plus the guard page) aligned to 16 KiB (THREAD_ALIGN on x86-64).  An exact
lowest-fit search must skip the free blocks that are big enough but fail on
alignment alone; if it tests them one by one, churn piles such blocks up low in
the space and every alloc pays for all of them.

Workload (seeded, the same for every mode):

* the size mix of a real vmallocinfo dump (tests/data/vmallocinfo-before.txt,
  Linux 6.x, every area once): kernel_clone / irq stacks keep their 16 KiB
  alignment, the rest are page-aligned;
* ``--areas`` N live areas (1.25 N allocated, a random 20 % freed), then
  ``--ops`` churn operations: free a random live area, alloc one from the mix;
* the same sequence with every alignment dropped to the page ("page-aligned
  churn"): the cost of the sizes alone.

The ops are timed in ten windows; the modes run window by window, interleaved
(one process, the same noise), ``--rounds`` times; each window reports its best
round and the spread (worst/best) across rounds.  Reported: ns per op (free +
alloc, called from Python) of the first and the last window, their ratio, and
aligned vs page-aligned.  Results go to ``benchmarks/results/bench_aligned.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from vmap_core import VmapSpace  # noqa: E402

SPACE_START = 1 << 40
SPACE_SIZE = 1 << 38
PAGE = 4096
STACK_ALIGN = 16384
STACK_CALLERS = ("kernel_clone", "irq_init_percpu_irqstack", "copy_process")
DUMP = REPO / "tests" / "data" / "vmallocinfo-before.txt"
WINDOWS = 10
LINE = re.compile(r"^0x[0-9a-f]+-0x[0-9a-f]+\s+(\d+)\s+(\S+)")


def load_mix(path=DUMP):
    """(size, align) of every area of a vmallocinfo dump; stacks keep 16 KiB."""
    mix = []
    for line in Path(path).read_text().splitlines():
        m = LINE.match(line)
        if m:
            size, caller = int(m.group(1)), m.group(2)
            align = STACK_ALIGN if caller.startswith(STACK_CALLERS) else PAGE
            mix.append((size, align))
    return mix


class Run:
    """One space walking the shared op sequence (its own live list)."""

    def __init__(self, name, ops, *, search, page_only, kernel):
        self.name = name
        self.space = VmapSpace(SPACE_START, SPACE_START + SPACE_SIZE, search=search,
                               kernel=kernel, nr_nodes=2)
        self.page_only = page_only
        self.ops = ops
        self.live = []
        self.pos = 0

    def req(self, size, align):
        return size, (PAGE if self.page_only else align)

    def build(self, sizes, frees):
        alloc = self.space.alloc
        for size, align in sizes:
            self.live.append(alloc(*self.req(size, align)))
        for f in frees:
            live = self.live
            i = int(f * len(live))
            live[i], live[-1] = live[-1], live[i]
            self.space.free(live.pop())

    def window(self, n):
        """Time n churn ops; ns per op."""
        live = self.live
        alloc, free = self.space.alloc, self.space.free
        page_only = self.page_only
        ops = self.ops
        pos = self.pos
        t0 = time.perf_counter_ns()
        for k in range(pos, pos + n):
            f, size, align = ops[k]
            i = int(f * len(live))
            x = live[i]
            live[i] = live[-1]
            live.pop()
            free(x)
            live.append(alloc(size, PAGE if page_only else align))
        t = time.perf_counter_ns() - t0
        self.pos = pos + n
        return t / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--areas", type=float, default=1e5, help="live areas N [1e5]")
    ap.add_argument("--ops", type=float, default=1e6, help="churn ops [1e6]")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (best per window) [3]")
    ap.add_argument("--kernel", default="6.16", help="kernel profile [6.16]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "bench_aligned.json")
    ap.add_argument("--quick", action="store_true", help="1e4 areas, 1e5 ops, 2 rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.areas, args.ops, args.rounds = 1e4, 1e5, 2
    n, n_ops = int(args.areas), int(args.ops)
    per_window = n_ops // WINDOWS
    rng = random.Random(args.seed)
    mix = load_mix()
    built = [rng.choice(mix) for _ in range(n + n // 4)]
    frees = [rng.random() for _ in range(n // 4)]
    ops = [(rng.random(),) + rng.choice(mix) for _ in range(per_window * WINDOWS)]
    stacks = sum(1 for _, a in mix if a == STACK_ALIGN)
    print(f"mix: {len(mix)} areas of {DUMP.name}, {stacks} stacks (20 KiB / 16 KiB); "
          f"N={n:,}, {per_window * WINDOWS:,} ops, {args.rounds} rounds, kernel {args.kernel}")
    modes = [("lowest, aligned", dict(search="lowest", page_only=False)),
             ("lowest, page-aligned", dict(search="lowest", page_only=True)),
             ("kernel search, aligned", dict(search="kernel", page_only=False))]
    best = {name: [float("inf")] * WINDOWS for name, _ in modes}
    worst = {name: [0.0] * WINDOWS for name, _ in modes}
    gc.disable()
    for r in range(args.rounds):
        runs = [Run(name, ops, kernel=args.kernel, **kw) for name, kw in modes]
        for run in runs:
            run.build(built, frees)
        for w in range(WINDOWS):
            for run in (runs if (w + r) % 2 == 0 else runs[::-1]):
                t = run.window(per_window)
                best[run.name][w] = min(best[run.name][w], t)
                worst[run.name][w] = max(worst[run.name][w], t)
        for run in runs:
            run.space.check()
        print(f"round {r + 1}/{args.rounds} done")
        del runs
    gc.enable()
    out = {"areas": n, "ops": per_window * WINDOWS, "rounds": args.rounds,
           "kernel": args.kernel, "modes": {}}
    print(f"\n{'mode':24} {'first 10%':>11} {'last 10%':>11} {'last/first':>10} "
          f"{'spread':>7}   ns per op (free + alloc, from Python), best of rounds")
    page = best["lowest, page-aligned"]
    for name, _ in modes:
        b = best[name]
        spread = max(worst[name][w] / b[w] for w in range(WINDOWS))
        out["modes"][name] = {"window_ns": b, "window_worst_ns": worst[name]}
        print(f"{name:24} {b[0]:11.0f} {b[-1]:11.0f} {b[-1] / b[0]:10.2f} {spread:7.2f}")
    al = best["lowest, aligned"]
    ratio = sum(al) / sum(page)
    out["aligned_vs_page"] = ratio
    print(f"\nlowest: aligned / page-aligned churn, all windows: {ratio:.2f}x; "
          f"last window: {al[-1] / page[-1]:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

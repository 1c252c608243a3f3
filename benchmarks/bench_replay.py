#!/usr/bin/env python3
"""The real trace replayed end to end: events per second.

``vmap_core.replay.replay()`` on tests/data/vmalloc-trace-6.18.44-16cpu.txt.gz
(Linux 6.18.44, 16 CPUs): reading and parsing the trace twice (the prescan that
infers the pre-trace state, then the replay), building the start state, every
event applied to a space and compared with the kernel's address.  The core
(``impl="core"``) against the pure-Python reference (``impl="reference"``),
interleaved, best of ``--rounds`` (the reference: ``--reference-rounds``, about
a minute each), spread = worst / best.  The agreement with
the kernel's addresses is printed too: both must give the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from vmap_core.replay import replay  # noqa: E402

TRACE = HERE.parent / "tests" / "data" / "vmalloc-trace-6.18.44-16cpu.txt.gz"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reference-rounds", type=int, default=1,
                    help="rounds of the reference (about a minute each) [1]")
    ap.add_argument("--kernel", default="6.16")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "bench_replay.json")
    args = ap.parse_args(argv)
    times = {"core": [], "reference": []}
    reports = {}
    for r in range(args.rounds):
        for impl in times:
            if impl == "reference" and r >= args.reference_rounds:
                continue
            t0 = time.perf_counter()
            reports[impl] = replay(str(TRACE), kernel=args.kernel, impl=impl)
            times[impl].append(time.perf_counter() - t0)
    events = reports["core"].trace["events"]
    agree = {impl: r.agreement for impl, r in reports.items()}
    assert agree["core"] == agree["reference"], agree
    out = {"events": events, "kernel": args.kernel, "agreement": agree["core"]}
    print(f"{TRACE.name}: {events:,} events, kernel {args.kernel}, "
          f"agreement with the kernel's addresses {agree['core']:.2%} (core = reference)")
    for impl, ts in times.items():
        best = min(ts)
        out[impl] = {"seconds": best, "events_per_s": events / best, "spread": max(ts) / best}
        print(f"  {impl:10} {events / best:12,.0f} events/s   ({best:.3f} s, spread "
              f"±{max(ts) / best - 1:.0%})")
    print(f"  core / reference: {min(times['reference']) / min(times['core']):.1f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

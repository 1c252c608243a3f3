"""How fast does vmap_core.trace read a trace, and does its memory stay flat?

The trace is the real one of tests/data (Linux 6.18.44, tracefs format), its
event lines repeated to N events (10**5 and 10**6 by default; the header is
kept).  Per N, best of --rounds interleaved rounds:

* read: the file read in 1 MiB binary chunks, nothing else (the floor);
* parse: ``for ev in TraceReader(path)`` (the C scanner, events built);
* python: the plain-Python parse_line() on every line (the peer: what the
  parser would cost without the C scanner), on the first 10**5 lines only.

Reported: microseconds per event of parse minus read ("over reading the
file"), the python/parse ratio, and the peak traced Python memory while
parsing (tracemalloc, one separate pass), which must not grow with N.

    python benchmarks/bench_trace.py [--sizes 1e5,1e6] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import tempfile
import time
import tracemalloc

from vmap_core.trace import TraceReader, parse_line

ROOT = pathlib.Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "vmalloc-trace-6.18.44-16cpu.txt.gz"


def make_trace(path: pathlib.Path, n: int) -> int:
    with gzip.open(REAL, "rt") as f:
        lines = f.readlines()
    header = [x for x in lines if x.startswith("#")]
    body = [x for x in lines if not x.startswith("#")]
    written = 0
    with open(path, "w") as out:
        out.writelines(header)
        while written < n:
            chunk = body[: n - written]
            out.writelines(chunk)
            written += len(chunk)
    return written


def t_read(path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    return time.perf_counter() - t0


def t_parse(path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for _ in TraceReader(path):
        n += 1
    return time.perf_counter() - t0, n


def t_python(path, limit) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if i > limit:
                break
            if parse_line(line, i) is not None:
                n += 1
    return time.perf_counter() - t0, n


def peak_memory(path) -> int:
    tracemalloc.start()
    for _ in TraceReader(path):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e5,1e6")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python-lines", type=int, default=100_000)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_trace.json"))
    args = ap.parse_args()
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = pathlib.Path(tmp) / f"trace-{n}.txt"
            events = make_trace(path, n)
            reads, parses, pys = [], [], []
            for _ in range(args.rounds):
                reads.append(t_read(path))
                dt, got = t_parse(path)
                assert got == events, (got, events)
                parses.append(dt)
                dt, pyn = t_python(path, args.python_lines)
                pys.append(dt / pyn)
            over = [(p - r) / events * 1e6 for p, r in zip(parses, reads)]
            row = {
                "events": events, "bytes": os.path.getsize(path),
                "read_s": min(reads), "parse_s": min(parses),
                "us_per_event_over_read": min(over),
                "us_per_event_over_read_spread": [min(over), max(over)],
                "python_us_per_event": min(pys) * 1e6,
                "python_over_c": min(pys) / (min(parses) / events),
                "peak_traced_bytes": peak_memory(path),
            }
            rows.append(row)
    print(f"{'events':>10} {'MB':>6} {'read s':>7} {'parse s':>8} {'us/event over read':>19} "
          f"{'(spread)':>13} {'python us/ev':>12} {'ratio':>6} {'peak KiB':>9}")
    for r in rows:
        lo, hi = r["us_per_event_over_read_spread"]
        print(f"{r['events']:>10,} {r['bytes'] / 1e6:>6.0f} {r['read_s']:>7.3f} {r['parse_s']:>8.3f} "
              f"{r['us_per_event_over_read']:>19.3f} {f'{lo:.3f}-{hi:.3f}':>13} "
              f"{r['python_us_per_event']:>12.2f} {r['python_over_c']:>5.1f}x "
              f"{r['peak_traced_bytes'] / 1024:>9.0f}")
    print(f"best of {args.rounds} interleaved rounds; spread = min-max over rounds; ratio = "
          "plain-Python parse_line() time / C scanner time per event; peak = tracemalloc "
          "peak while parsing (flat in N means streaming)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"rounds": args.rounds, "rows": rows}, f, indent=2)
        f.write("\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

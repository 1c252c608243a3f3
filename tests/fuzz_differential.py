"""Differential fuzzer: bytes -> a sequence of API calls, run on the Cython
core and on the pure-Python reference side by side.

After every call both must have returned the same value or raised the same
exception type, and every view must agree: busy areas (iter), free, lazy and
pooled areas, vmallocinfo(), the stats both report, len(), the purges
reported to on_purge, and check() must pass on both.  The first byte of an
input picks the constructor configuration (tests/_configs.py: every shape x
every lock mode x every kernel profile); the rest decode into calls.

Engines (python tests/fuzz_differential.py --help):

* ``atheris`` (coverage-guided, libFuzzer; ``pip install atheris``): the
  reference and this harness are instrumented, so inputs that reach new
  branches of the oracle are kept and mutated.
* ``random``: uniformly random inputs from a seed, for the sanitizer builds
  (whose runtime cannot be mixed with atheris's) and where atheris is absent.

``--seconds`` bounds a run (CI); ``deep`` runs until stopped or --seconds.
A disagreement raises AssertionError with the input's bytes (hex) and the
call that differed; --replay HEX reruns one input.  pytest runs the same
decoder through Hypothesis (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import array
import collections
import json
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _configs import configs, make  # noqa: E402

from vmap_core import VmapSpace  # noqa: E402
from vmap_core.reference import ReferenceSpace  # noqa: E402

CONFIGS = configs()
COMMON_STATS = ("busy_areas", "busy_bytes", "free_areas", "free_bytes", "largest_free",
                "nr_nodes", "node_areas", "lock", "lazy_areas", "lazy_pages", "lazy_max_pages",
                "pooled_areas", "pool_areas", "purges", "tlb_flushes", "purged_areas")
MAX_CALLS = 48


class Reader:
    """Bytes as a stream of small choices; past the end every read is 0."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            self.pos += 1
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def more(self) -> bool:
        return self.pos < len(self.data)

    def int(self, nbytes: int) -> int:
        v = 0
        for _ in range(nbytes):
            v = v << 8 | self.byte()
        return v

    def pick(self, seq):
        return seq[self.byte() % len(seq)]


class Space:
    """One implementation under test, with its on_purge log."""

    def __init__(self, cls, kw):
        self.purges = []
        self.s = make(cls, dict(kw, on_purge=lambda a, b: self.purges.append((a, b))))


def outcome(fn, *args, **kwargs):
    """("ok", value) or ("raise", exception type name)."""
    try:
        value = fn(*args, **kwargs)
    except (ValueError, TypeError, KeyError, MemoryError, OverflowError) as e:
        return ("raise", type(e).__name__)
    return ("ok", plain(value))


def plain(value):
    """A result as plain data: areas as (start, end), buffers and iterators as lists."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "start") and hasattr(value, "end"):
        return (value.start, value.end)
    return [plain(v) for v in value]


def views(sp: Space):
    s = sp.s
    st = s.stats()
    return {
        "busy": [tuple(a) for a in s],
        "free": [tuple(a) for a in s.free_areas()],
        "lazy": [tuple(a) for a in s.lazy_areas()],
        "pooled": [(tuple(a), n) for a, n in s.pooled_areas()],
        "info": s.vmallocinfo(),
        "stats": {k: st[k] for k in COMMON_STATS},
        "len": len(s),
        "purges": list(sp.purges),
    }


def odd(r: Reader) -> bool:
    """True for about one call in eight: then an argument is drawn from the
    edge cases and invalid values rather than from the likely ones."""
    return r.byte() >= 224


def addr_choices(r: Reader, s, *, start_bias=False) -> int:
    """An address: mostly a busy start (start_bias) or one inside an area or
    the space; sometimes an edge, a lazy area's start or a raw value."""
    busy = [tuple(a) for a in s]
    ps = s.page_size
    if odd(r):
        lazy = [tuple(a) for a in s.lazy_areas()]
        edges = [s.start, s.end - 1, s.end, s.start - ps, 0, 2**64 - 1, 2**64, -1, "x", None]
        if lazy:
            edges.append(r.pick(lazy)[0])
        return r.pick(edges)
    if busy and (start_bias or r.byte() & 1):
        a, b = r.pick(busy)
        if start_bias:
            return a
        return r.pick((a, a, b - 1, b, a + (r.int(2) % (b - a))))
    return s.start + (r.int(2) % ((s.end - s.start) // ps)) * ps + (1 if odd(r) else 0)


def decode_call(r: Reader, s):
    """(name, args, kwargs) of one call, decoded from r against space s (the
    core's view is the same as the reference's while they agree)."""
    ps = s.page_size
    op = r.byte() % 16
    if op <= 5:                                    # alloc is the most common call
        pages = r.pick((1, 1, 1, 1, 2, 2, 3, 4, 5, 8, 16, 17, 64, 256, 257, 300))
        size = pages * ps
        if odd(r):
            size = r.pick((0, ps + 1, s.end - s.start, 2**64, 2**64 + ps, -ps, 1.0, None))
        align = None
        b = r.byte()
        if b & 1:
            align = r.pick((ps, 2 * ps, 4 * ps, 16 * ps, 2**40, 2**63, 2**64))
            if odd(r):
                align = r.pick((3 * ps, 0, -ps, "4096"))
        kw = {}
        if b & 2:
            kw["cpu"] = r.pick((0, 1, 2, 3, 5, 7, 2**70, True)) if not odd(r) else r.pick((-1, 1.5))
        if b & 4:
            kw["caller"] = r.pick(("a", "drv+0x10/0x20 [m]")) if not odd(r) else 7
        vstart = vend = None
        if b & 8:
            vstart = (addr_choices(r, s) if odd(r) else
                      s.start + (r.int(2) % ((s.end - s.start) // ps)) * ps)
        if b & 16:
            if isinstance(vstart, int) and not odd(r):
                vend = min(s.end, vstart + (pages + r.byte() % 8) * ps)   # room, or about
            else:
                vend = addr_choices(r, s)
        if b & 32 and vstart is None and vend is None:
            return "alloc", (size,), kw           # the positional forms, too
        return "alloc", (size, align, vstart, vend), kw
    if op <= 7:
        return "free", (addr_choices(r, s, start_bias=True),), {}
    if op <= 9:
        return "free_lazy", (addr_choices(r, s, start_bias=True),), {}
    if op == 10:
        if r.byte() % 3 == 2:
            return "drain_pools", (), {}
        return "purge", r.pick(((), (False,), (True,), (1,))), {}
    if op == 11:
        return "find", (addr_choices(r, s),), {}
    if op == 12:
        n = r.byte() % 6
        return "find_many", (array.array("Q", [a % 2**64 if isinstance(a, int) else 0
                                               for a in (addr_choices(r, s) for _ in range(n))]),), {}
    if op == 13:
        return "check_copy", (addr_choices(r, s), r.pick((0, 1, ps, 2 * ps, 2**64, -1))), {}
    if op == 14:
        return "caller_of", (addr_choices(r, s, start_bias=r.byte() & 1 == 1),), {}
    return r.pick(("areas", "node_of")), (addr_choices(r, s),), {}


def run_input(data: bytes, counts: collections.Counter | None = None) -> None:
    """Run one input; AssertionError on any disagreement."""
    if not data:
        return
    name, kw = CONFIGS[data[0] % len(CONFIGS)]
    if counts is not None:
        counts[kw["lock"]] += 1
    r = Reader(data[1:])
    core, ref = Space(VmapSpace, kw), Space(ReferenceSpace, kw)
    for step in range(MAX_CALLS):
        if not r.more():
            break
        method, args, kwargs = decode_call(r, ref.s)
        got = outcome(getattr(core.s, method), *args, **kwargs)
        want = outcome(getattr(ref.s, method), *args, **kwargs)
        where = f"config {name}, call {step}: {method}{args}{kwargs or ''}, input {data.hex()}"
        assert got == want, f"{where}: core {got} != reference {want}"
        vc, vr = views(core), views(ref)
        for key in vc:
            assert vc[key] == vr[key], f"{where}: {key} differs: core {vc[key]} reference {vr[key]}"
        core.s.check()
        ref.s.check()


# -- engines ---------------------------------------------------------------------------

def random_engine(seed: int, seconds: float | None, runs: int | None, max_len: int) -> collections.Counter:
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    deadline = None if seconds is None else time.monotonic() + seconds
    n = 0
    while (runs is None or n < runs) and (deadline is None or time.monotonic() < deadline):
        data = rng.randbytes(rng.randrange(1, max_len + 1))
        run_input(data, counts)
        n += 1
    return counts


def atheris_engine(seconds: float | None, runs: int | None, max_len: int, corpus: list[str],
                   quiet: bool = False):
    import atheris
    counts: collections.Counter = collections.Counter()

    def one(data: bytes) -> None:
        run_input(data, counts)
        # libFuzzer ends the process with exit(), past Python's atexit: the
        # tally is printed as it goes (its final stats give the total).
        n = sum(counts.values())
        if n and n % 10000 == 0 and data:
            report(counts, "atheris")

    argv = [sys.argv[0], f"-max_len={max_len}", "-print_final_stats=1"]
    if quiet:                   # bounded runs (CI): no line per new corpus unit
        argv.append("-verbosity=0")
    if seconds is not None:
        argv.append(f"-max_total_time={int(seconds)}")
    if runs is not None:
        argv.append(f"-runs={runs}")
    # Coverage of the reference (the oracle) and of this decoder guides the
    # search; the core is C, compiled without libFuzzer's instrumentation.
    atheris.instrument_all()
    atheris.Setup(argv + corpus, one)
    atheris.Fuzz()


def report(counts, engine):
    total = sum(counts.values())
    print(json.dumps({"engine": engine, "inputs": total, "per_lock_mode": dict(counts)}),
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", default="bounded", choices=("bounded", "deep"),
                    help="bounded: stop after --seconds (default 60) or --runs; "
                         "deep: run until --seconds/--runs, else until interrupted")
    ap.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--seed", type=int, default=0, help="random engine's seed")
    ap.add_argument("--max-len", type=int, default=160)
    ap.add_argument("--replay", metavar="HEX", help="run one input and exit")
    ap.add_argument("corpus", nargs="*", default=[], help="atheris corpus directories")
    args = ap.parse_intermixed_args(argv)
    if args.replay:
        run_input(bytes.fromhex(args.replay))
        print("agreed")
        return 0
    seconds = args.seconds
    if args.mode == "bounded" and seconds is None and args.runs is None:
        seconds = 60.0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    if engine == "atheris":
        atheris_engine(seconds, args.runs, args.max_len, args.corpus, quiet=args.mode == "bounded")
        return 0
    report(random_engine(args.seed, seconds, args.runs, args.max_len), "random")
    return 0


if __name__ == "__main__":
    sys.exit(main())

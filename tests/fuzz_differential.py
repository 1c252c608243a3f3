"""Differential fuzzer: bytes -> a sequence of API calls, run on the Cython
core and on the pure-Python reference side by side.

After every call both must have returned the same value or raised the same
exception (type; and message, result and count for OnPurgeError), and every
view must agree: busy areas (iter), free, lazy and pooled areas,
vmallocinfo(), the stats both report, len(), the free tree's shape, the
purges reported to on_purge, the tracepoints written to a trace= recorder,
and check() must pass on both.  The first byte of an input picks the
constructor configuration (tests/_configs.py: every shape x every lock
design x every kernel profile), the second whether the space purges by
itself (auto_purge); the rest decode into calls: every method, a flush
(on_purge) that starts or stops failing, and a copy (the pickled states must
be equal, and the copies carry on).

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
import copy
import io
import json
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _configs import configs, make  # noqa: E402

from vmap_core import OnPurgeError, VmapSpace  # noqa: E402
from vmap_core.reference import ReferenceSpace  # noqa: E402
from vmap_core.trace import Recorder  # noqa: E402

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


class FlushFailed(Exception):
    """What a failing on_purge raises."""


class Space:
    """One implementation under test, with its on_purge log and its trace."""

    def __init__(self, cls, kw, auto_purge):
        self.purges = []
        self.fail_flush = False
        self.trace = io.StringIO()

        def flush(start, end):      # a function, which copies keep (a bound method is copied)
            self.purges.append((start, end))
            if self.fail_flush:
                raise FlushFailed(f"flush of [{start:#x}, {end:#x}) failed")

        self.s = make(cls, dict(kw, on_purge=flush, auto_purge=auto_purge,
                                trace=Recorder(self.trace, clock=lambda: 0.0)))


def outcome(fn, *args, **kwargs):
    """("ok", value) or ("raise", exception type name[, what OnPurgeError says])."""
    try:
        value = fn(*args, **kwargs)
    except OnPurgeError as e:
        return ("raise", "OnPurgeError", str(e), plain(e.result), e.purged,
                type(e.__cause__).__name__)
    except (ValueError, TypeError, KeyError, MemoryError, OverflowError, RuntimeError) as e:
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
        "shape": s._free_tree_shape(),
        "purges": list(sp.purges),
        "trace": sp.trace.getvalue(),
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
    core's view is the same as the reference's while they agree).  Two names
    are not methods: "flaky" (on_purge starts or stops failing) and "copy"."""
    ps = s.page_size
    op = r.byte() % 22
    if op == 16:                                   # predict: alloc()'s arguments
        name, args, kw = decode_call_alloc(r, s)
        kw.pop("caller", None)
        return "predict", args, kw
    if op == 17:
        return decode_alloc_at(r, s)
    if op == 18:
        return "locate", (addr_choices(r, s),), {}
    if op == 19:
        return "flaky", (), {}
    if op == 20:
        return "copy", (), {}
    if op == 21:
        return "alloc", (ps,), {"cpu": r.byte()}  # the pools' fast path
    return decode_op(op, r, s)


def decode_alloc_at(r: Reader, s):
    """alloc_at(): mostly a free range (where pages start), sometimes a pooled
    or lazy area exactly, or an edge."""
    ps = s.page_size
    pooled = [a for a, _ in s.pooled_areas()]
    lazy = s.lazy_areas()
    b = r.byte()
    if b & 3 == 0 and pooled:
        a = r.pick(pooled)
        addr, size = a.start, a.size
    elif b & 3 == 1 and lazy:
        a = r.pick(lazy)
        addr, size = a.start, a.size
    else:
        addr = s.start + (r.int(2) % ((s.end - s.start) // ps)) * ps
        size = r.pick((1, 1, 2, 3, 8)) * ps
        if odd(r):
            addr, size = r.pick(((addr + 1, size), (addr, size + 1), (addr, 0), (-ps, ps),
                                 (s.end - ps, 2 * ps), (2**64, ps), ("x", ps)))
    kw = {}
    if b & 4:
        kw["cpu"] = r.pick((0, 1, 2, 7)) if not odd(r) else -1
    if b & 8:
        kw["caller"] = "at"
    return "alloc_at", (addr, size), kw


def decode_call_alloc(r: Reader, s):
    return decode_op(0, r, s)


def decode_op(op: int, r: Reader, s):
    """The calls of ops 0-15."""
    ps = s.page_size
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
    r = Reader(data[1:])
    auto_purge = r.byte() % 4 != 3                  # one input in four: no automatic purge
    if counts is not None:
        counts[name] += 1
    core, ref = Space(VmapSpace, kw, auto_purge), Space(ReferenceSpace, kw, auto_purge)
    for step in range(MAX_CALLS):
        if not r.more():
            break
        method, args, kwargs = decode_call(r, ref.s)
        where = f"config {name}, call {step}: {method}{args}{kwargs or ''}, input {data.hex()}"
        if method == "flaky":
            core.fail_flush = ref.fail_flush = not ref.fail_flush
            continue
        if method == "copy":
            got, want = core.s.__reduce__()[2], ref.s.__reduce__()[2]
            assert got == want, f"{where}: pickled states differ: core {got} reference {want}"
            core.s, ref.s = copy.deepcopy(core.s), copy.deepcopy(ref.s)   # they record nothing
        else:
            got = outcome(getattr(core.s, method), *args, **kwargs)
            want = outcome(getattr(ref.s, method), *args, **kwargs)
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
    """One JSON line: inputs in all, per configuration, per lock design and per
    kernel profile."""
    total = sum(counts.values())
    per_lock: collections.Counter = collections.Counter()
    per_profile: collections.Counter = collections.Counter()
    kws = dict(CONFIGS)
    for name, n in counts.items():
        kw = kws[name]
        per_lock[kw["lock"]] += n
        per_profile["-".join(f"{k}={kw[k]}" for k in ("kernel", "search") if k in kw)] += n
    print(json.dumps({"engine": engine, "inputs": total, "per_lock_mode": dict(per_lock),
                      "per_profile": dict(per_profile), "per_config": dict(sorted(counts.items()))}),
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

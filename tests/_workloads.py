"""Workloads that record traces with vmap_core's own recorder (trace=), for
the replay tests: the trace of a known run, optionally after a warm-up that
the trace does not show (so that the replay has to infer the start)."""

from __future__ import annotations

import io
import random

from vmap_core import VmapExhausted

P = 4096
BASE = 0xffffc90000000000


class Switch(io.StringIO):
    """A text stream that keeps what is written while ``on``."""

    def __init__(self):
        super().__init__()
        self.on = True

    def write(self, s):
        return super().write(s) if self.on else len(s)


def stacks(space, rng, steps, live):
    """Threads' stacks: 4 pages + a guard, 16 KiB aligned, from many CPUs,
    freed lazily in random order (the shared trace's main workload)."""
    for _ in range(steps):
        if live and rng.random() < 0.45:
            space.free_lazy(live.pop(rng.randrange(len(live))))
        else:
            live.append(space.alloc(5 * P, 4 * P, cpu=rng.randrange(16)))


def mixed(space, rng, steps, live):
    """Sizes of 1 page to 300 (past the pools' 256 classes), alignments up to
    1 MiB, a window now and then, purges now and then (a trace cannot tell a
    full purge apart, so only the overflow path does one), in a space small
    enough that allocations fail and the overflow path purges."""
    for _ in range(steps):
        r = rng.random()
        if live and r < 0.4:
            space.free_lazy(live.pop(rng.randrange(len(live))))
        elif r < 0.42:
            space.purge()           # a full purge is only the overflow path (below)
        else:
            size = rng.choice([1, 2, 3, 5, 8, 16, 64, 300]) * P
            align = rng.choice([P, P, 2 * P, 4 * P, 16 * P, 256 * P])
            kw = {}
            if rng.random() < 0.1:
                lo = space.start + rng.randrange(0, (space.end - space.start) // 2, P)
                kw = dict(vstart=lo, vend=space.end)
            try:
                live.append(space.alloc(size, align, cpu=rng.randrange(16), **kw))
            except VmapExhausted:
                pass


WORKLOADS = {"stacks": stacks, "mixed": mixed}


def record(cls, workload, *, kernel=None, steps=2000, warmup=0, seed=1, nr_nodes=4,
           pages=1 << 14, lazy_max_pages=256):
    """Run a workload on a fresh space of ``pages`` pages with a recorder;
    the first ``warmup`` steps are not in the trace.  Returns (trace text,
    space)."""
    out = Switch()
    space = cls(BASE, BASE + pages * P, nr_nodes=nr_nodes if kernel != "6.8" else None,
                kernel=kernel, lazy_max_pages=lazy_max_pages, trace=out)
    rng = random.Random(seed)
    live = []
    if warmup:
        out.on = False              # the header is in; the warm-up is not
        WORKLOADS[workload](space, rng, warmup, live)
        out.on = True
    WORKLOADS[workload](space, rng, steps, live)
    return out.getvalue(), space

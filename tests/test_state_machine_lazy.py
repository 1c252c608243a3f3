"""The differential state machine, grown with the kernel-parity rules.

On top of test_state_machine.Differential (alloc, free, find, bad inputs;
check() and the structure compared after every step), the core and the
reference also take: alloc with a cpu and a caller tag, free_lazy (vfree),
purge and full purge, drain_pools (the shrinker), areas(from_addr) walks,
and bad inputs to each; after every step their lazy areas, pooled areas,
vmallocinfo() text, purge counters and the TLB-flush ranges reported to
on_purge must agree.  Runs for every lock mode of the core and every kernel
profile; some configurations give on_purge a callback that raises now and
then (the purge and its caller complete, OnPurgeError reports it) or that
checks the space from inside the flush.
"""

from __future__ import annotations

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

import _util
from _util import TOP, ReferenceSpace, span
from test_state_machine import Differential, register

P = 4096
LAZY_STATS = ("lazy_areas", "lazy_pages", "lazy_max_pages", "pooled_areas", "pool_areas",
              "purges", "tlb_flushes", "purged_areas")
CALLERS = [None, "irq_init_percpu_irqstack+0x114/0x150", "bpf_prog_alloc", "x"]


class LazyDifferential(Differential):
    def __init__(self):
        super().__init__()
        cfg = self.config
        self.flushes = ([], [])
        kw = dict(page_size=self.P, nr_nodes=cfg["nr_nodes"], zone_size=cfg.get("zone_size"),
                  lock=cfg["lock"], lazy_max_pages=cfg["lazy_max_pages"],
                  kernel=cfg.get("kernel"))
        self.core = _util.require_core()(self.start, self.end, **kw,
                                         on_purge=self._flush_callback(0))
        self.ref = ReferenceSpace(self.start, self.end, **kw, on_purge=self._flush_callback(1))

    def _flush_callback(self, side):
        mode = self.config.get("on_purge")

        def flush(start, end):
            space = self.core if side == 0 else self.ref
            seen = self.flushes[side]
            if mode == "check":
                # From inside the flush: the detached areas are neither lazy
                # nor free yet, still counted in the lazy pages; check() holds.
                space.check()
                seen.append((start, end, space.stats()["lazy_pages"],
                             [span(a) for a in space.free_areas()]))
            else:
                seen.append((start, end))
            if mode == "raise" and len(seen) % 3 == 0:
                raise ValueError(f"flush {len(seen)} failed")
        return flush

    @rule(data=st.data())
    def alloc_tagged(self, data):
        """alloc() over the whole range with a CPU (its node's pool first) and a caller."""
        size = data.draw(st.integers(1, 6), label="pages") * self.P
        kwargs = {}
        if data.draw(st.booleans(), label="give cpu"):
            kwargs["cpu"] = data.draw(st.one_of(st.integers(0, 9), st.sampled_from(
                [-1, 1 << 70, 1.0, "0"])), label="cpu")
        if data.draw(st.booleans(), label="give caller"):
            kwargs["caller"] = data.draw(st.sampled_from(CALLERS + [3, b"x"]), label="caller")
        if data.draw(st.booleans(), label="give align"):
            kwargs["align"] = self.P << data.draw(st.integers(0, 3), label="align shift")
        pooled = len(self.ref.pooled_areas())
        nva = self.both("alloc", size, **kwargs)
        if nva is not None and len(self.ref.pooled_areas()) < pooled:
            event("alloc served from a pool")

    @rule(data=st.data())
    def free_lazy(self, data):
        areas = [span(a) for a in self.ref]
        kind = data.draw(st.integers(0, 3), label="free_lazy kind")
        if areas and kind < 3:
            addr = data.draw(st.sampled_from(areas), label="area")[0]
        else:
            addr = data.draw(self.any_addr(), label="addr")
        before = self.ref.stats()["purges"]
        self.both("free_lazy", addr)
        if self.ref.stats()["purges"] > before:
            event("free_lazy: automatic purge")

    @rule(full=st.sampled_from([False, True, 0, None]))
    def purge(self, full):
        n = self.both("purge", full)
        event(f"purge(full={full!r}): {'some' if n else 'none'}")

    @rule()
    def drain_pools(self):
        self.both("drain_pools")

    @rule(data=st.data())
    def walk_areas(self, data):
        addr = data.draw(st.one_of(self.any_addr(), st.sampled_from([-1, TOP, 1.5])),
                         label="from_addr")
        r, rexc = _call_list(self.ref, addr)
        c, cexc = _call_list(self.core, addr)
        assert type(rexc) is type(cexc), (addr, rexc, cexc)
        assert c == r, f"areas({addr:#x}): core {c} != reference {r}"

    @rule(data=st.data())
    def caller_of(self, data):
        areas = [span(a) for a in self.ref]
        if areas and data.draw(st.booleans(), label="a start"):
            addr = data.draw(st.sampled_from(areas), label="area")[0]
        else:
            addr = data.draw(self.any_addr(), label="addr")
        self.both("caller_of", addr)

    @invariant()
    def same_lazy_state(self):
        assert [span(a) for a in self.core.lazy_areas()] == [span(a) for a in self.ref.lazy_areas()]
        assert [(span(a), n) for a, n in self.core.pooled_areas()] == \
            [(span(a), n) for a, n in self.ref.pooled_areas()]
        assert self.core.vmallocinfo() == self.ref.vmallocinfo()
        cs, rs = self.core.stats(), self.ref.stats()
        for key in LAZY_STATS:
            assert cs[key] == rs[key], f"stats[{key!r}]: core {cs[key]!r} != reference {rs[key]!r}"
        assert self.flushes[0] == self.flushes[1]


def _call_list(space, addr):
    try:
        return [span(a) for a in space.areas(addr)], None
    except Exception as exc:  # noqa: BLE001 - compared by type
        return None, exc


CONFIGS = {
    f"{lock}_{name}": dict(cfg, lock=lock)
    for lock in ("node", "global", "rwlock", "optimistic")
    for name, cfg in {
        # tiny zones and a small lazy limit: areas span nodes, purges run on their own
        "four_nodes": dict(start=0x100000, end=0x100000 + 96 * P, nr_nodes=4, zone_size=P,
                           lazy_max_pages=12),
        # one node: no pools; a space ending at 2**64
        "one_node_top": dict(start=TOP - 64 * P, end=TOP, nr_nodes=1, zone_size=2 * P,
                             lazy_max_pages=8),
        # no automatic purge: lazy areas pile up until exhaustion forces one
        "three_nodes_no_auto_purge": dict(start=0, end=48 * P, nr_nodes=3, zone_size=3 * P,
                                          lazy_max_pages=1 << 40),
    }.items()
}

# The older profiles, and the on_purge callbacks that raise or look inside.
CONFIGS.update({
    "v6_8_split": dict(start=0x100000, end=0x100000 + 96 * P, nr_nodes=1, lock="split",
                       lazy_max_pages=12, kernel="6.8"),
    "v6_8_global_raising_flush": dict(start=0, end=64 * P, nr_nodes=None, lock="global",
                                      lazy_max_pages=10, kernel="6.8", on_purge="raise"),
    "v6_9_four_nodes": dict(start=0x100000, end=0x100000 + 96 * P, nr_nodes=4, zone_size=P,
                            lock="node", lazy_max_pages=12, kernel="6.9"),
    "v6_9_checking_flush": dict(start=0, end=48 * P, nr_nodes=3, zone_size=3 * P,
                                lock="rwlock", lazy_max_pages=9, kernel="6.9",
                                on_purge="check"),
    "node_raising_flush": dict(start=0x100000, end=0x100000 + 96 * P, nr_nodes=4, zone_size=P,
                               lock="node", lazy_max_pages=12, on_purge="raise"),
})

register(LazyDifferential, CONFIGS, globals())

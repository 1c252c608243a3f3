"""The core against the reference through the kit's machine, with every
kernel-parity rule.

On top of test_state_machine.py's rules (alloc, free, find, bad inputs;
check(), the structure and the free trees' shapes compared after every
step), the core and the reference also take: alloc with a cpu and a caller
tag, free_lazy (vfree), purge and full purge, drain_pools (the shrinker),
areas(from_addr) walks, caller_of, and bad inputs to each; after every step
their lazy areas, pooled areas, vmallocinfo() text, purge counters and the
TLB-flush ranges reported to on_purge must agree (all are
vmap_core.testing.VmapContract's, detected on the core).  Runs for every
lock mode of the core and every kernel profile; some configurations give
on_purge a callback that raises now and then (the purge and its caller
complete, OnPurgeError reports it) or that checks the space from inside the
flush.
"""

from __future__ import annotations

from _util import TOP
from test_state_machine import CoreContract, register
from vmap_core.testing import FEATURES

P = 4096


class LazyContract(CoreContract):
    __test__ = False
    features = FEATURES             # all of them: a missing one is an error, not a skip


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

register("LazyDifferential", LazyContract, CONFIGS, globals())

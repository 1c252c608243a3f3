"""The constructor configurations that the differential fuzzer and the
fault-injection tests run over: every shape x every lock mode x every kernel
profile.  A new profile (``kernel="6.8"``, ...) is one line in PROFILES.
"""

from __future__ import annotations

P = 4096

LOCK_MODES = ("node", "global", "rwlock", "optimistic")

# Kernel-version profiles the core models; {} is the default behaviour.
PROFILES: tuple[dict, ...] = (
    {},
)

# Space shapes: small ranges so that the free tree fills and the purge paths
# run, tiny zones so that areas span nodes, and the edges of the address space.
SHAPES: dict[str, dict] = {
    "nodes3": dict(start=1 << 30, end=(1 << 30) + (256 * P), nr_nodes=3, zone_size=2 * P,
                   lazy_max_pages=24),
    "node1": dict(start=1 << 30, end=(1 << 30) + (128 * P), nr_nodes=1, lazy_max_pages=16),
    "top": dict(start=2**64 - 512 * P, end=2**64, nr_nodes=4, zone_size=P, lazy_max_pages=40),
    "bytes": dict(start=0, end=2**64, page_size=1, nr_nodes=2, zone_size=16,
                  lazy_max_pages=2**63),
    "zone3p": dict(start=3 * P, end=3 * P + 300 * P, nr_nodes=5, zone_size=3 * P,
                   lazy_max_pages=8),
}


def configs(shapes=None, locks=LOCK_MODES, profiles=PROFILES):
    """(id, kwargs) for every combination; kwargs include start and end."""
    out = []
    for shape in shapes or SHAPES:
        for lock in locks:
            for profile in profiles:
                tag = "-".join(f"{k}={v}" for k, v in profile.items())
                name = "-".join(x for x in (shape, lock, tag) if x)
                out.append((name, dict(SHAPES[shape], lock=lock, **profile)))
    return out


def make(cls, kwargs):
    """A space of class cls from a configuration's kwargs."""
    kw = dict(kwargs)
    return cls(kw.pop("start"), kw.pop("end"), **kw)

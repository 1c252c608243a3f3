"""The constructor configurations that the differential fuzzer and the
fault-injection tests run over: every shape x every lock design x every
kernel profile, where they combine.  A new profile is one line in PROFILES.
"""

from __future__ import annotations

P = 4096

# Every lock design: the per-node ones of v6.9+ and v6.8's three locks
# ("split"); profiles.resolve_lock() says which combine with which kernel.
LOCK_MODES = ("node", "global", "rwlock", "optimistic", "split")

# Kernel-version profiles (vmap_core.profiles), with the kernel's aligned
# search; the exact lowest match (search="lowest") where it differs, i.e.
# with nodes and pools (6.8 adds nothing the 6.16 row does not cover).
PROFILES: tuple[dict, ...] = (
    {"kernel": "6.16"},
    {"kernel": "6.9"},
    {"kernel": "6.8"},
    {"kernel": "6.16", "search": "lowest"},
)

# Space shapes: small ranges so that the free tree fills and the purge paths
# run, tiny zones so that areas span nodes, and the edges of the address space.
# A profile without nodes (6.8) runs each with one node.
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


def combines(lock: str, profile: dict) -> bool:
    """Whether a lock design combines with a kernel profile (as
    profiles.resolve_lock() decides: "split" is v6.8's only, "node" needs
    the nodes of v6.9+)."""
    if profile.get("kernel") == "6.8":
        return lock != "node"
    return lock != "split"


def configs(shapes=None, locks=LOCK_MODES, profiles=PROFILES):
    """(id, kwargs) for every combination that combines; kwargs include start and end."""
    out = []
    for shape in shapes or SHAPES:
        for lock in locks:
            for profile in profiles:
                if not combines(lock, profile):
                    continue
                kw = dict(SHAPES[shape], lock=lock, **profile)
                if profile.get("kernel") == "6.8":
                    kw["nr_nodes"] = 1          # v6.8 has no nodes
                tag = "-".join(f"{k}={v}" for k, v in profile.items())
                out.append(("-".join(x for x in (shape, lock, tag) if x), kw))
    return out


def make(cls, kwargs):
    """A space of class cls from a configuration's kwargs."""
    kw = dict(kwargs)
    return cls(kw.pop("start"), kw.pop("end"), **kw)

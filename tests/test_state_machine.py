"""The core against the reference through the conformance kit's machine.

vmap_core.testing.VmapContract is the one differential state machine: every
step sends the same call to the Cython core and to the reference (alloc with
random sizes, alignments and vstart/vend windows, free of live areas,
non-starts, double frees and any address, runs of neighbours freed in any
order, find inside areas, on their and their zones' edges, in holes and out
of range, node_of, bad inputs of every documented kind) and compares the
result or the exception's exact type.  After a raised exception the core
must be exactly as before.  After every step both check() and their list(),
free_areas(), len() and stats() must agree, and so must the two free trees'
shapes and colours (the kernel's aligned search depends on the shape).  Now
and then both are replaced by copies of themselves, which must carry the
same pickled state and go on as the originals would.

This module runs it without the kernel-parity features (those are
test_state_machine_lazy.py's) over several configurations: one and several
nodes, tiny zones so that areas span zones, both lock modes, a space ending
at 2**64, the whole 64-bit space, big pages, every kernel profile (6.8, 6.9,
6.16) and search ("kernel", "lowest").
"""

from __future__ import annotations

from typing import Any

import _util
from _util import TOP
from vmap_core.testing import LAZY_FEATURES, VmapContract


def core_space(start: int, end: int, **kwargs: Any) -> Any:
    """The Cython core (skip, or fail under VMAP_CORE_REQUIRE=1, when not built)."""
    return _util.require_core()(start, end, **kwargs)


class CoreContract(VmapContract):
    """The core, held to the reference's exact exception classes."""

    __test__ = False
    space_class = core_space
    exact_exceptions = True
    search = None                   # the profile's (kernel) search unless a config says


def register(prefix: str, base: type[VmapContract], configs: dict[str, dict[str, Any]],
             namespace: dict[str, Any]) -> None:
    """One contract per configuration, put into namespace (a test module's
    globals()) as Test<prefix>_<config>; a configuration's keys are the
    contract's knobs."""
    for name, cfg in configs.items():
        cls_name = f"Test{prefix}_{name}"
        namespace[cls_name] = type(cls_name, (base,), {"__test__": True, **cfg})


class BaseContract(CoreContract):
    __test__ = False
    exclude_features = LAZY_FEATURES
    on_purge = None


P = 4096
CONFIGS = {
    "one_node": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=1, lock="node"),
    "one_node_global": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=1, lock="global"),
    "four_nodes_tiny_zones": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=4,
                                  zone_size=P, lock="node"),
    "four_nodes_global": dict(start=0, end=96 * P, nr_nodes=4, zone_size=2 * P, lock="global"),
    "three_nodes_odd_zones": dict(start=0x40000, end=0x40000 + 80 * P, nr_nodes=3,
                                  zone_size=3 * P, lock="node"),
    "top_of_space": dict(start=TOP - 64 * P, end=TOP, nr_nodes=4, zone_size=P, lock="node"),
    "top_of_space_global": dict(start=TOP - 48 * P, end=TOP, nr_nodes=2, zone_size=2 * P,
                                lock="global"),
    "wide": dict(start=1 << 32, end=1 << 48, nr_nodes=4, zone_size=None, lock="node"),
    "whole_64_bit": dict(start=0, end=TOP, nr_nodes=4, zone_size=1 << 58, lock="node"),
    "big_pages": dict(start=0, end=1 << 30, page_size=1 << 21, nr_nodes=2,
                      zone_size=1 << 21, lock="global"),
    # the other kernel profiles and the exact lowest match
    "v6_8": dict(start=0x100000, end=0x100000 + 96 * P, nr_nodes=1, lock=None, kernel="6.8"),
    "v6_9_tiny_zones": dict(start=0x100000, end=0x100000 + 64 * P, nr_nodes=4,
                            zone_size=P, lock="node", kernel="6.9"),
    "lowest_search": dict(start=0, end=128 * P, nr_nodes=2, zone_size=2 * P, lock="node",
                          search="lowest"),
}

register("Differential", BaseContract, CONFIGS, globals())

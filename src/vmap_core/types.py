"""Types of the public API, for annotations (mypy --strict clean).

Imports nothing from vmap_core, so every module may use it.
"""

from __future__ import annotations

from typing import Literal, TypedDict

LockMode = Literal["node", "global", "rwlock", "optimistic", "split"]
"""``lock=`` of a space: how busy trees and lookups are locked ("split" is
v6.8's three locks, for ``kernel="6.8"`` only; the others need nodes)."""

SearchMode = Literal["kernel", "lowest"]
WalkMode = Literal["kernel", "bounded"]
"""``search=`` of a space: the kernel's aligned search (find_vmap_lowest_match(),
which depends on the free tree's shape) or the exact lowest match."""

UsercopyMode = Literal["nocheck", "unlocked", "node", "global", "rwlock", "optimistic"]
"""A mode of the usercopy experiment: a lock design of the newest kernel, or no
lookup / an unlocked one."""


class SpaceStats(TypedDict):
    """stats() of either implementation."""

    busy_areas: int
    busy_bytes: int
    free_areas: int
    free_bytes: int
    largest_free: int
    nr_nodes: int
    node_areas: list[int]
    lock: LockMode
    lazy_areas: int
    lazy_pages: int
    lazy_max_pages: int
    pooled_areas: int
    pool_areas: list[dict[int, int]]      # per node: {size class: areas}
    purges: int
    tlb_flushes: int
    purged_areas: int


class CoreStats(SpaceStats):
    """stats() of the Cython core: also its memory and its locks."""

    slab_bytes: int
    slab_records: int
    slab_compactions: int
    record_bytes: int
    lock_acquisitions: dict[str, int]     # "free" and "node<k>", or "global"
    lock_contended: dict[str, int]
    rwlock_read_waits: list[int]          # per node
    optimistic_retries: list[int]
    optimistic_fallbacks: list[int]


class SpaceState(TypedDict):
    """What pickle and copy carry of a space besides its constructor arguments
    (``__reduce__``); the same for both implementations.  The free tree's
    shape is carried because the kernel's aligned search depends on it: a
    copy places every later allocation where the original would."""

    version: int
    busy: list[tuple[int, int, int | None, str | None]]   # start, end, node tag, caller
    lazy: list[tuple[int, int, int | None]]               # start, end, node tag
    pooled: list[tuple[int, int, int]]                    # node, start, end: head to tail
    free_tree: list[tuple[int, int, str, int]]  # start, end, "r"|"b", depth: preorder
    load_notes: list[str]


__all__ = ["CoreStats", "LockMode", "SearchMode", "SpaceState", "SpaceStats", "UsercopyMode",
           "WalkMode"]

"""Kernel-version profiles: which mm/vmalloc.c a space behaves like.

``VmapSpace(..., kernel="6.9")`` (and the reference) picks one; the default is
the newest.  Any version string from 6.8 on is accepted and mapped to the
profile of the last change at or before it ("6.12" behaves as "6.9", "6.18.44"
as "6.16").  What each profile changes, with the function and the change that
introduced it, is the README's version table; in short:

* ``"6.8"``: before "Mitigate a vmap lock contention" (v6.9): one busy tree
  under ``vmap_area_lock``, the free tree under ``free_vmap_area_lock``, lazily
  freed areas merged in one purge tree under ``purge_vmap_area_lock`` and given
  back in address order by ``__purge_vmap_area_lazy()``; no nodes, no pools.
* ``"6.9"``: per-node busy and lazy trees and pools; find_vmap_area() and
  find_unlink_vmap_area() walk the nodes upwards (``i + 1``); a non-full pool
  decay empties a pool of 1-3 areas (its unsigned ``n_decay`` wraps); a failed
  allocation returns (and traces) ``vend``.
* ``"6.16"``: the nodes are walked downwards (``i - 1``), such pools are kept,
  and failures return ``-ENOENT`` / ``-ERANGE`` ("mm/vmalloc.c: code cleanup
  and improvements", Baoquan He, merged for v6.16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .types import LockMode, SearchMode

ENOENT = 2
ERANGE = 34


@dataclass(frozen=True)
class Profile:
    """What one kernel version does differently."""

    name: str
    nodes: bool            # per-node busy/lazy trees and pools (v6.9+)
    walk_down: bool        # find_vmap_area() walks i - 1 (v6.16+), else i + 1
    decay_keeps_small: bool  # a non-full decay keeps pools of 1-3 areas (v6.16+)
    errno_errors: bool     # failures return -ENOENT/-ERANGE (v6.16+), else vend
    lazy_merge: bool       # lazily freed areas merge in one purge tree (v6.8)

    @property
    def default_lock(self) -> LockMode:
        return "node" if self.nodes else "split"


PROFILES = {
    "6.8": Profile("6.8", nodes=False, walk_down=False, decay_keeps_small=False,
                   errno_errors=False, lazy_merge=True),
    "6.9": Profile("6.9", nodes=True, walk_down=False, decay_keeps_small=False,
                   errno_errors=False, lazy_merge=False),
    "6.16": Profile("6.16", nodes=True, walk_down=True, decay_keeps_small=True,
                    errno_errors=True, lazy_merge=False),
}
NEWEST = "6.16"
KERNELS = tuple(PROFILES)

SEARCHES: tuple[SearchMode, ...] = ("kernel", "lowest")
# "split": v6.8's three locks (busy tree, free tree, lazy tree); the other four
# are the per-node designs of v6.9+ and the alternatives this package studies.
LOCK_MODES: tuple[LockMode, ...] = ("node", "global", "rwlock", "optimistic", "split")

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:[.\-+~].*)?\s*$")


def resolve(kernel: object) -> Profile:
    """The profile for a version string (None: the newest).  ValueError for a
    version before 6.8 or a string that is not a version, TypeError for a
    non-string."""
    if kernel is None:
        return PROFILES[NEWEST]
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a version string such as '6.9', not "
                        f"{type(kernel).__name__}")
    m = _VERSION.match(kernel)
    if m is None:
        raise ValueError(f"kernel must be a version such as '6.8', '6.9' or '6.16', not {kernel!r}")
    version = (int(m[1]), int(m[2]))
    if version < (6, 8):
        raise ValueError(f"kernel {kernel!r}: profiles start at 6.8 ({', '.join(KERNELS)})")
    name = max((k for k in KERNELS if _key(k) <= version), key=_key)
    return PROFILES[name]


def _key(name: str) -> tuple[int, int]:
    major, minor = name.split(".")
    return int(major), int(minor)


def resolve_lock(profile: Profile, lock: object) -> LockMode:
    """The lock design for a profile: None means the profile's own ("node"
    from v6.9, "split" for v6.8).  v6.8 has no per-node locks, so "node" does
    not combine with it; "split" is v6.8's design only."""
    if lock is None:
        return profile.default_lock
    if not isinstance(lock, str):
        raise TypeError(f"lock must be a str or None, not {type(lock).__name__}")
    # Our own literal, not the caller's str (subclass); a loop, not a generator, so that
    # a MemoryError under fault injection is raised here rather than "ignored" at close.
    mode = None
    for m in LOCK_MODES:
        if m == lock:
            mode = m
            break
    if mode is None:
        raise ValueError(f"lock must be one of {LOCK_MODES} or None, not {lock!r}")
    if lock == "node" and not profile.nodes:
        raise ValueError("lock='node' needs per-node locks, which kernel 6.8 does not have "
                         "(its design is lock='split': busy, free and lazy trees each under "
                         "one lock)")
    if lock == "split" and profile.nodes:
        raise ValueError(f"lock='split' is v6.8's three locks; kernel {profile.name} has "
                         "per-node locks (lock='node')")
    return mode


def lock_modes(profile: Profile | None = None) -> tuple[LockMode, ...]:
    """The lock designs that combine with a profile (default: the newest)."""
    profile = PROFILES[NEWEST] if profile is None else profile
    return tuple(m for m in LOCK_MODES if m != ("node" if not profile.nodes else "split"))


def resolve_search(search: object) -> SearchMode:
    """search=: None is the kernel's search."""
    if search is None:
        return "kernel"
    if not isinstance(search, str):
        raise TypeError(f"search must be a str or None, not {type(search).__name__}")
    mode = next((m for m in SEARCHES if m == search), None)
    if mode is None:
        raise ValueError(f"search must be one of {SEARCHES}, not {search!r}")
    return mode


def failure_value(profile: Profile, kind: str, vend_printed: int) -> int:
    """What alloc_vmap_area() returns (and its tracepoint prints as va_start)
    when nothing fits: ``vend`` before v6.16, then -ENOENT (no block) or
    -ERANGE (the fit ends past vend) as an unsigned long."""
    if not profile.errno_errors:
        return vend_printed
    return (1 << 64) - (ENOENT if kind == "ENOENT" else ERANGE)


__all__ = ["KERNELS", "LOCK_MODES", "NEWEST", "PROFILES", "Profile", "SEARCHES",
           "failure_value", "lock_modes", "resolve", "resolve_lock", "resolve_search"]

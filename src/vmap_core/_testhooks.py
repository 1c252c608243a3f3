"""Test-only hooks of the Cython core, for the test suite and .ci/sanitize.

Not API: nothing here is for programs.  The hooks are compiled into the core
but are neither attributes of VmapSpace nor names of ``vmap_core._space``;
importing the core (``import vmap_core``) hands them to this module, which
imports nothing.  A new hook is one more keyword of ``_install()`` in
``_space.pyx`` and one function here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

_HOOKS: dict[str, Callable[..., Any]] = {}


def _install(**hooks: Callable[..., Any]) -> None:
    _HOOKS.update(hooks)


def _hook(name: str) -> Callable[..., Any]:
    try:
        return _HOOKS[name]
    except KeyError:
        raise RuntimeError(f"test hook {name!r} is not installed: import vmap_core "
                           "(the built Cython core) first") from None


def debug_corrupt(space: Any, kind: str) -> None:
    """Break the invariant named by kind (space_corrupt() in _check.pxi; one
    kind per message of check(), listed in tests/test_check.py: "color",
    "subtree_max", "order", "coalesce", "node_placement", "tiling", "list",
    "lazy_pages", "slab", "pool_class", ...) so that check() can be shown to
    catch it; ValueError for an unknown kind or a space without what the kind
    breaks.  The space is unusable afterwards."""
    _hook("debug_corrupt")(space, kind)


def fit_cache(space: Any) -> list[tuple[int, int, int, list[tuple[int, int]]]]:
    """The fit cache of an aligned search="lowest" space (_freetree.pxi): per
    (size, align) class, (size, align, floor, [(hole_start, hole_end), ...])."""
    return cast("list[tuple[int, int, int, list[tuple[int, int]]]]", _hook("fit_cache")(space))


def search_tests(space: Any) -> int:
    """Free blocks tested by search="lowest" walks so far (the cost the fit
    cache bounds)."""
    return int(_hook("search_tests")(space))


def set_bounded_walk(space: Any, on: bool) -> None:
    """Switch find()'s walk of a space to the bounded walk (space_find_bounded():
    only the nodes of the zones an area holding the address can start in, by
    the widest area ever inserted; the same answers) or back to the kernel's.
    Not the kernel's cost model, so not the default of any design; set it
    before other threads use the space."""
    _hook("set_bounded_walk")(space, on)


def set_slab_tuning(space: Any, compact_min: int = 1, keep_empty: int = 0) -> None:
    """Let a small space's record slab compact (from compact_min resident
    4 KiB chunks; by default 64) and give back every empty chunk beyond
    keep_empty (by default 16), so that tests reach _compact.pxi and the
    page release of _slab.pxi without building 256 KiB of records."""
    _hook("set_slab_tuning")(space, compact_min, keep_empty)


def debug_pool_order(space: Any) -> list[tuple[int, int, int]]:
    """(node, start, end) of every pooled area, node by node, size class by
    size class, head first: the order pooled_areas() sorts away, which
    decides what the next pooled alloc() gets."""
    return list(_hook("debug_pool_order")(space))


def fail_c_alloc(k: int = -1) -> int:
    """Make the k-th C allocation of the core from now on fail (0 is the next
    one), once; -1 turns it off.  Returns the number of C allocations made so
    far, so that a test can tell whether a call made any."""
    return int(_hook("fail_c_alloc")(k))


def c_alloc_count() -> int:
    """The number of C allocations the core has made."""
    return int(_hook("c_alloc_count")())


def pause_writer(site: str) -> None:
    """Arm a pause point: the next writer to reach site ("publish": alloc()'s
    new area is in its node's tree, the change not yet ended; "unlink":
    free()'s area is out of its node's tree, likewise) waits there, holding
    its locks, until release_writer().  "off" disarms."""
    _hook("pause_arm")(site)


def wait_writer_paused(timeout: float = 10.0) -> None:
    """Block until an armed writer waits at its site; TimeoutError if none
    arrives in time (the site is disarmed then)."""
    import time
    deadline = time.monotonic() + timeout
    while not _hook("pause_state")():
        if time.monotonic() > deadline:
            _hook("pause_arm")("off")
            raise TimeoutError("no writer reached the armed pause point")
        time.sleep(0.001)


def release_writer() -> None:
    """Let the paused writer go on (and disarm the site)."""
    _hook("pause_arm")("off")
    _hook("pause_release")()


def lock_state(space: Any, node: int) -> dict[str, Any]:
    """A node's locks and read counters, read atomically without taking any
    lock (safe while a writer is paused): global_locked, free_locked,
    node_locked, node_acquisitions, rw_writer, seq, read_retries, read_fallbacks, read_waits."""
    return dict(_hook("lock_state")(space, node))


def race_selftest(n: int = 100000) -> int:
    """Two native threads race on one plain word: a ThreadSanitizer build reports it."""
    return int(_hook("race_selftest")(n))


def leak_selftest(nbytes: int = 4096) -> bool:
    """Lose one malloc'ed block: a LeakSanitizer build reports it."""
    return bool(_hook("leak_selftest")(nbytes))


def ubsan_selftest(shift: int = 64) -> int:
    """Shift a 64-bit word by shift bits (64: undefined behaviour): an
    UndefinedBehaviorSanitizer build reports it."""
    return int(_hook("ubsan_selftest")(shift))


__all__ = ["c_alloc_count", "debug_corrupt", "debug_pool_order", "fail_c_alloc",
           "leak_selftest", "lock_state", "pause_writer", "race_selftest", "release_writer",
           "ubsan_selftest", "wait_writer_paused"]

"""The differential comparison that the contract's state machine makes at
every step: one call on the space under test and on the reference, the
results or the exceptions compared, and everything observable compared."""

from __future__ import annotations

from typing import Any

from .._errors import OnPurgeError

__all__ = ["COMMON_STATS", "LAZY_STATS", "EXPECTED_ERRORS", "span", "snapshot", "call",
           "error_kind", "normalise"]

#: stats() keys that mean the same for every implementation of the API.
COMMON_STATS = ("busy_areas", "busy_bytes", "free_areas", "free_bytes", "largest_free",
                "nr_nodes", "node_areas", "lock")
#: stats() keys of lazy free, purges and pools.
LAZY_STATS = ("lazy_areas", "lazy_pages", "lazy_max_pages", "pooled_areas", "pool_areas",
              "purges", "tlb_flushes", "purged_areas")

#: The exceptions the API may raise, most specific first (VmapExhausted is a
#: MemoryError; OnPurgeError a RuntimeError; KeyError before the LookupError
#: it is).  An exception's kind is the first of these that it is.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OnPurgeError, KeyError, TypeError, ValueError, MemoryError, RuntimeError)


def span(area: Any) -> tuple[int, int]:
    """(start, end) of an area, read through its attributes; the types, and
    size == end - start > 0 where it has a size, are checked."""
    start, end = area.start, area.end
    assert type(start) is int and type(end) is int, f"{area!r}: start/end are not ints"
    size = getattr(area, "size", end - start)
    assert type(size) is int and size == end - start > 0, f"{area!r}: bad size"
    return (start, end)


def _stats(space: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    got = space.stats()
    out = {k: got[k] for k in keys}
    if "node_areas" in out:
        out["node_areas"] = list(out["node_areas"])
    return out


def snapshot(space: Any, stats_keys: tuple[str, ...] = (), free_areas: bool = True
             ) -> tuple[Any, ...]:
    """Everything observable about the structure: len(), the busy areas in
    iteration order, the free blocks (when free_areas), and the stats() keys
    given."""
    return (len(space), [span(a) for a in space],
            [span(a) for a in space.free_areas()] if free_areas else None,
            _stats(space, stats_keys) if stats_keys else None)


def call(space: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
         ) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, exception) of space.name(*args, **kwargs)."""
    try:
        return getattr(space, name)(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - every exception is compared
        return None, exc


def error_kind(exc: BaseException) -> type[BaseException] | None:
    """The documented kind of an exception (see EXPECTED_ERRORS), or None."""
    return next((k for k in EXPECTED_ERRORS if isinstance(exc, k)), None)


def normalise(name: str, value: Any) -> Any:
    """A result in a comparable form: ints stay (and must be ints), areas
    become (start, end), None and caller_of's strings stay."""
    if value is None:
        return None
    if name in ("alloc", "node_of", "purge", "drain_pools"):
        assert type(value) is int, f"{name} returned {type(value).__name__}, not int"
        return value
    if name == "caller_of":
        return value
    return span(value)

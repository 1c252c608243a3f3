"""Exceptions shared by the Cython core and the pure-Python reference."""

from __future__ import annotations


class VmapExhausted(MemoryError):
    """No free block satisfies the request (the kernel's -ENOMEM / -ERANGE)."""


class OnPurgeError(RuntimeError):
    """The ``on_purge`` callback raised (its exception is ``__cause__``).

    The callback runs where the kernel flushes the TLB, between detaching the
    lazily freed areas and giving them back; when it raises, the purge still
    completes, and so does the call that triggered it (``purge()``,
    ``free_lazy()`` crossing ``lazy_max_pages``, or ``alloc()`` purging before
    its one retry): the space is consistent (``check()`` passes).  ``result``
    holds what that call returns (None for an allocation whose retry failed),
    ``purged`` the number of lazy areas the purge handled.
    """

    def __init__(self, message: str, *, result: object = None, purged: int = 0) -> None:
        super().__init__(message)
        self.result = result
        self.purged = purged


def on_purge_error(call: str, start: int, end: int, purged: int, exc: BaseException,
                   result: object) -> OnPurgeError:
    """The OnPurgeError for a callback that raised ``exc`` during the purge of
    [start, end) that ``call`` ("purge()", "free_lazy(0x...)", "alloc(...)")
    started; ``result`` is what the call returns."""
    if call.startswith("alloc"):
        outcome = (f"its retry returned {result:#x}" if result is not None
                   else "its retry found no space")
    elif call.startswith("free_lazy"):
        outcome = "the area it freed is lazy or purged"
    else:
        outcome = f"it returns {result}"
    return OnPurgeError(
        f"on_purge({start:#x}, {end:#x}) raised {type(exc).__name__}: {exc}; the purge "
        f"completed ({purged} lazy areas given back) and {call} took effect: {outcome}",
        result=result, purged=purged)


__all__ = ["OnPurgeError", "VmapExhausted", "on_purge_error"]

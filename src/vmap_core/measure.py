"""How repeated measurements are summarised, and the process's memory probes,
in one place for every command, benchmark and test.

A cell of an experiment runs several interleaved rounds; it reports its best
round, keeps every round, and shows how far apart they were (``spread``).  A
cell is *noisy* when its rounds differ by more than ``NOISY_SPREAD`` of the
best, or when it contradicts its floor (a result that cannot be true of the
model, such as a mode with lookups beating the one without): its number is
then shown marked, never dropped.

Imports nothing from vmap_core.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable, Sequence
from typing import Any

#: Rounds further apart than this (of the best) mark a cell noisy.
NOISY_SPREAD = 0.10


def spread(values: Sequence[float]) -> float | None:
    """(largest - smallest) / largest of a cell's rounds (rates or times),
    or None for fewer than two rounds."""
    if len(values) < 2 or not max(values):
        return None
    return (max(values) - min(values)) / max(values)


def is_noisy(values: Sequence[float], *, contradicts_floor: bool = False) -> bool:
    """Rounds more than NOISY_SPREAD apart, or a result that contradicts its floor."""
    sp = spread(values)
    return contradicts_floor or (sp is not None and sp > NOISY_SPREAD)


def si(x: float, digits: int = 3) -> str:
    """A rate in at most 6 characters, never cut: 999, 1.23k, 25.4M, 114k."""
    units = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
    for k, (div, unit) in enumerate(units):
        if abs(x) >= div or unit == "":
            text = f"{x / div:.{digits}g}"
            if "e" in text or abs(float(text)) >= 1000:       # rounded up to the next unit
                if k:
                    div, unit = units[k - 1]
                    text = f"{x / div:.{digits}g}"
            return text + unit
    raise AssertionError("unreachable")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or ''."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_name() -> str:
    """'this machine (AMD EPYC, x86_64, 2 CPUs available)': what the tables
    name as the machine that measured."""
    what = ", ".join(x for x in (cpu_model(), platform.machine()) if x)
    n = available_cpus()
    return f"this machine ({what}, {n} CPU{'' if n == 1 else 's'} available)"


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (/proc/self/statm), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


@functools.cache
def _mallinfo2() -> Callable[[], Any] | None:
    """glibc's mallinfo2(), or None; loaded on first use, so that importing
    this module (every command does) costs no ctypes."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return fn


def malloc_in_use() -> int | None:
    """Bytes glibc's malloc (so C++ new too) has handed out and not had back,
    mapped blocks included (mallinfo2()), or None without glibc.  Unlike the
    RSS, it does not count what the allocator keeps free for reuse."""
    fn = _mallinfo2()
    if fn is None:
        return None
    mi = fn()
    return int(mi.uordblks + mi.hblkhd)


__all__ = ["NOISY_SPREAD", "available_cpus", "cpu_model", "is_noisy", "machine_name",
           "malloc_in_use", "rss_bytes", "si", "spread"]

"""Read a Linux /proc/vmallocinfo dump and rebuild its address space.

:func:`parse` turns the kernel's lines (``mm/vmalloc.c``: ``vmalloc_info_show``)
into :class:`Entry` records::

    0xffffc90000000000-0xffffc90000005000   20480 irq_init_percpu_irqstack+0xca/0x100 vmap
    0xffffc90000019000-0xffffc9000001e000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4
    0xffffc90000040000-0xffffc90000045000   20480 unpurged vm_area
    0xffffc90000080000-0xffffc90000084000   16384 vm_map_ram

The addresses are printed with ``%pK``: zeros when ``kptr_restrict`` hides
them, and hashed ids (not page aligned, ``end - start != size``, overlapping)
when the kernel's pointer hashing is on (``kptr_restrict=0``, the default).
:func:`detect` says which; :func:`layout` then lays the areas out again,
keeping each size and the gaps that are known: a hashed pointer is the same
value wherever the same address is printed, so an area whose hashed end equals
another's hashed start sat right below it.  :func:`load` builds a space that
holds exactly the dump's busy areas and returns notes on what it did.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from .._errors import VmapExhausted

PAGE_SIZE = 4096
# x86-64 (4-level paging) VMALLOC_START .. VMALLOC_END + 1: 32 TiB.
KERNEL_RANGE = (0xffffc90000000000, 0xffffe90000000000)
ADDR_LIMIT = 1 << 64
ROUND = 1 << 21              # ranges that do not fit the kernel's are rounded out to 2 MiB
# The most a dump file may hold.  A real /proc/vmallocinfo is a few MB (about
# 100 bytes a line); this bounds what a wrong path (a device, a huge file) costs.
MAX_DUMP_BYTES = 64 << 20

_LINE = re.compile(r"^\s*0x([0-9a-fA-F]+)\s*-\s*0x([0-9a-fA-F]+)\s+(\d+)\s*(.*?)\s*$")
_FLAGS = {"ioremap", "sparse", "vmalloc", "vmap", "user", "dma-coherent", "vpages",
          "vm_map_ram", "unpurged", "vm_area"}     # the words vmalloc_info_show() prints
_NODE = re.compile(r"^N(\d+)=(\d+)$")


@dataclass
class Entry:
    """One line of /proc/vmallocinfo: ``[start, end)`` as printed, ``size`` in bytes."""

    start: int
    end: int
    size: int
    caller: str | None = None          # "sym+0x../0x.. [module]", None when absent
    flags: tuple[str, ...] = ()        # words such as "vmalloc", "ioremap", "vmap"
    pages: int | None = None
    phys: int | None = None
    nodes: dict[int, int] = field(default_factory=dict)   # NUMA node -> pages (N0=4)
    lineno: int = 0

    @property
    def unpurged(self) -> bool:
        """A lazily freed area (``unpurged vm_area``): not busy, not yet reusable."""
        return "unpurged" in self.flags

    @property
    def busy(self) -> bool:
        return not self.unpurged


@dataclass
class Dump:
    """Result of :func:`parse`: the entries and the lines that were not understood."""

    entries: list[Entry]
    skipped: list[tuple[int, str]]     # (line number, text)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)


def _parse_line(m: re.Match, lineno: int) -> Entry:
    e = Entry(int(m[1], 16), int(m[2], 16), int(m[3]), lineno=lineno)
    caller, flags = [], []
    for tok in m[4].split():
        key, eq, val = tok.partition("=")
        node = _NODE.match(tok)
        if node:
            e.nodes[int(node[1])] = int(node[2])
        elif eq and key == "pages" and val.isdigit():
            e.pages = int(val)
        elif eq and key == "phys":
            try:
                e.phys = int(val, 16)
            except ValueError:
                flags.append(tok)
        elif eq or tok in _FLAGS or flags:
            flags.append(tok)            # unknown words after the flags stay flags
        else:                            # the caller (and a "[module]" after it)
            caller.append(tok)
    e.caller = " ".join(caller) or None
    e.flags = tuple(flags)
    return e


def parse(text: str) -> Dump:
    """Parse a /proc/vmallocinfo dump; blank lines are ignored, others skipped and kept."""
    entries, skipped = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            skipped.append((lineno, line))
        else:
            entries.append(_parse_line(m, lineno))
    return Dump(entries, skipped)


def read(text_or_path, *, max_bytes: int = MAX_DUMP_BYTES) -> tuple[str, str]:
    """(text, where): the dump itself (str or bytes), or the contents of a
    path (str or os.PathLike).  TypeError for anything else; ValueError for a
    path that is not a regular file (a device, a FIFO, a directory) or that
    holds more than ``max_bytes``; OSError when it cannot be opened."""
    if isinstance(text_or_path, (bytes, bytearray)):
        return bytes(text_or_path).decode("utf-8", "replace"), "<bytes>"
    if not isinstance(text_or_path, (str, os.PathLike)):
        raise TypeError("a vmallocinfo dump must be given as str, bytes or a path, "
                        f"not {type(text_or_path).__name__}")
    if isinstance(text_or_path, os.PathLike) or (
            "\n" not in text_or_path and not text_or_path.lstrip().startswith("0x")
            and text_or_path.strip()):
        path = os.fspath(text_or_path)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        return read_file(path, max_bytes), path
    return text_or_path, "<text>"


def read_file(path: str, max_bytes: int = MAX_DUMP_BYTES) -> str:
    """A regular file's text, at most max_bytes (procfs files are regular,
    and report size 0: the read itself is bounded).  ValueError naming the
    file for anything else or anything larger; OSError when it cannot be
    opened."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on files).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a character device"
                    if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                    else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
                    if stat.S_ISSOCK(mode) else "not a regular file")
            raise ValueError(f"{path}: {kind}, not a vmallocinfo dump")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes, more than a vmallocinfo dump "
                         "can be (a real one is a few MB)")
    return data.decode("utf-8", "replace")


# -- hidden addresses ------------------------------------------------------------

def detect(entries, page_size: int = PAGE_SIZE) -> tuple[str, list[str]]:
    """("real" | "zeroed" | "hashed", reasons): are the printed addresses the real ones?"""
    if entries and all(e.start == 0 and e.end == 0 for e in entries):
        return "zeroed", ["all addresses are zero (kptr_restrict hides them)"]
    reasons = []
    bad_align = sum(1 for e in entries if e.start % page_size or e.end % page_size)
    bad_size = sum(1 for e in entries if e.end - e.start != e.size)
    if bad_align:
        reasons.append(f"{bad_align} not page aligned")
    if bad_size:
        reasons.append(f"{bad_size} with end - start != size")
    # Overlaps as the areas will be placed: a size rounded up to the page, at
    # least one (a zero-size line at another's address collides with it).
    spans = sorted((e.start, e.start + -(-max(e.size, 1) // page_size) * page_size)
                   for e in entries)
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    if overlaps:
        reasons.append(f"{overlaps} overlapping")
    return ("hashed" if reasons else "real"), reasons


def chains(entries) -> list[list[int]]:
    """Indexes of ``entries`` in runs known to be adjacent (hashed end == hashed start).

    Runs come in dump order of their first entry; entries with no known neighbour
    are runs of one.  Zeroed dumps have no links.
    """
    by_start: dict[int, int] = {}
    for i, e in enumerate(entries):
        by_start.setdefault(e.start, i)
    nxt: dict[int, int] = {}
    has_prev: set[int] = set()
    for i, e in enumerate(entries):
        j = by_start.get(e.end)
        if j is not None and j != i and j not in has_prev and e.end != e.start:
            nxt[i] = j
            has_prev.add(j)
    runs, seen = [], set()
    for head in [i for i in range(len(entries)) if i not in has_prev] + list(range(len(entries))):
        run, i = [], head
        while i is not None and i not in seen:     # the second pass catches cycles
            seen.add(i)
            run.append(i)
            i = nxt.get(i)
        if run:
            runs.append(run)
    return runs


def layout(entries, base: int, *, gap: int = PAGE_SIZE, page_size: int = PAGE_SIZE):
    """New start of each entry: runs of known neighbours laid end to end from ``base``.

    Sizes are kept (rounded up to the page); each run follows the previous one
    after ``gap`` bytes, the gap between areas whose neighbourhood is unknown.
    Returns (starts, number of runs).
    """
    starts = [0] * len(entries)
    runs = chains(entries)
    pos = base
    for k, run in enumerate(runs):
        if k:
            pos += gap
        for i in run:
            starts[i] = pos
            pos += -(-max(entries[i].size, page_size) // page_size) * page_size
    return starts, len(runs)


# -- building a space --------------------------------------------------------------

def _round_out(lo: int, hi: int) -> tuple[int, int]:
    return lo // ROUND * ROUND, min(-(-hi // ROUND) * ROUND, ADDR_LIMIT)


def plan(dump: Dump, *, page_size: int = PAGE_SIZE, gap: int | None = None):
    """(range, [(entry, start, size)], notes): where every entry of ``dump`` goes."""
    entries = dump.entries
    notes = []
    kind, reasons = detect(entries, page_size)
    sizes = [-(-max(e.size, 1) // page_size) * page_size for e in entries]
    odd = sum(1 for e, s in zip(entries, sizes) if s != e.size)
    if odd:
        notes.append(f"{odd} sizes not a multiple of {page_size} rounded up")
    if kind == "real":
        starts = [e.start for e in entries]
    else:
        gap = page_size if gap is None else gap
        starts, runs = layout(entries, KERNEL_RANGE[0], gap=gap, page_size=page_size)
        linked = len(entries) - runs
        what = "addresses hidden" if kind == "zeroed" else "addresses hashed"
        notes.append(f"{what} ({'; '.join(reasons)}): {len(entries)} areas relaid in dump "
                     f"order from {KERNEL_RANGE[0]:#x}, sizes kept; {linked} known "
                     f"adjacencies kept, {gap} B between the {runs} runs of unknown neighbours")
    placed = list(zip(entries, starts, sizes))
    lo = min((s for _, s, _ in placed), default=KERNEL_RANGE[0])
    hi = max((s + z for _, s, z in placed), default=KERNEL_RANGE[1])
    if KERNEL_RANGE[0] <= lo and hi <= KERNEL_RANGE[1]:
        rng = KERNEL_RANGE
    else:
        rng = _round_out(lo, hi)
        notes.append(f"areas outside x86-64's vmalloc range: space is [{rng[0]:#x}, {rng[1]:#x})")
    return rng, placed, notes


def load(text_or_path, *, cls=None, keep_unpurged: bool = True, gap: int | None = None,
         source: str | None = None, **space_kwargs):
    """Build a space holding exactly the areas of a /proc/vmallocinfo dump:
    busy + lazy areas account for every line.

    ``text_or_path``: the dump's text, or a path to it.  ``cls``: the space class
    (default :class:`vmap_core.VmapSpace`); ``space_kwargs`` go to it (page size
    4096 unless given; ``auto_purge=False`` unless given, so that the lazy areas
    stay lazy as in the dump).  Each busy area is placed with ``alloc(size,
    vstart=addr, vend=addr + size, caller=...)``; ``unpurged vm_area`` lines
    (lazily freed, not yet purged) are placed and freed lazily, or, with
    ``keep_unpurged=False`` or a space without ``free_lazy``, left free.
    ``gap``: bytes between relaid areas whose neighbours are unknown (default
    one page); ``source``: the dump's name in the notes.  Returns
    ``(space, notes)``.  Raises ``ValueError`` when the dump holds no area or
    an area that cannot be placed, or when the path is not a regular file or
    holds more than ``MAX_DUMP_BYTES``; ``TypeError`` for an argument that is
    neither text nor a path; ``OSError`` when the path cannot be read.
    """
    if cls is None:
        from .._space import VmapSpace as cls
    text, where = read(text_or_path)
    where = source or where
    dump = parse(text)
    if not dump.entries:
        hint = f"; {len(dump.skipped)} lines not understood" if dump.skipped else ""
        raise ValueError(f"{where}: no vmalloc areas in the dump{hint}")
    space_kwargs.setdefault("page_size", PAGE_SIZE)
    page_size = space_kwargs["page_size"]
    lazy = keep_unpurged and hasattr(cls, "free_lazy")
    if lazy:
        space_kwargs.setdefault("auto_purge", False)          # the dump's lazy areas stay
    rng, placed, notes = plan(dump, page_size=page_size, gap=gap)
    space = cls(rng[0], rng[1], **space_kwargs)
    with_caller = hasattr(space, "caller_of")
    busy = unpurged = 0
    for e, start, size in placed:
        if e.unpurged and not lazy:
            unpurged += 1
            continue
        kw = {"caller": e.caller} if with_caller and e.caller else {}
        try:
            space.alloc(size, vstart=start, vend=start + size, **kw)
        except (ValueError, VmapExhausted) as exc:     # a dump no kernel printed
            raise ValueError(f"{where}: line {e.lineno}: the area at {start:#x} "
                             f"({size} bytes) cannot be placed: {exc}") from None
        if e.unpurged:
            space.free_lazy(start)
            unpurged += 1
        else:
            busy += 1
    if unpurged:
        notes.append(f"{unpurged} unpurged (lazily freed) areas "
                     + ("kept as lazy areas" if lazy else "left free"))
    if dump.skipped:
        first = dump.skipped[0]
        notes.append(f"{len(dump.skipped)} lines not understood, skipped "
                     f"(first: line {first[0]}: {first[1][:60]!r})")
    notes.insert(0, f"{busy} busy areas from {where}")
    return space, notes


__all__ = ["Dump", "Entry", "KERNEL_RANGE", "MAX_DUMP_BYTES", "chains", "detect", "layout", "load",
           "parse", "plan", "read", "read_file"]

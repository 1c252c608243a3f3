"""``python -m vmap_core info [FILE]``: summary of a /proc/vmallocinfo dump.

Loads the dump with :func:`vmap_core.vmallocinfo.load` (default: this
machine's /proc/vmallocinfo, readable by root only) and prints areas, bytes, a
size histogram in power-of-two page buckets, the spread over busy-tree nodes,
the largest free block, fragmentation (1 - largest free / free bytes) and the
notes on what was done to the dump; ``--json PATH`` writes the same as JSON.
"""

from __future__ import annotations

import json
import os
import sys

DEFAULT_FILE = "/proc/vmallocinfo"


def _add_info(sub) -> None:
    from .cli import _Help, _positive_int
    p = sub.add_parser(
        "info", formatter_class=_Help,
        help="summary of a /proc/vmallocinfo dump (areas, sizes, nodes, fragmentation)",
        description="Load a /proc/vmallocinfo dump into a space (hashed or hidden addresses "
        "are detected and the areas relaid, keeping sizes) and summarise it.")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE,
                   help="the dump (reading this machine's needs root)")
    p.add_argument("--nr-nodes", type=_positive_int, default=None,
                   help="busy-tree nodes (default: the kernel's rule, CPUs clamped to 1..128)")
    p.add_argument("--impl", choices=("core", "reference"), default="core",
                   help="space class: the Cython core or the pure-Python reference")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    p.set_defaults(func=_cmd_info, parser=p)


def space_class(impl: str):
    """VmapSpace for 'core', ReferenceSpace for 'reference'."""
    if impl == "reference":
        from .reference import ReferenceSpace
        return ReferenceSpace
    from . import VmapSpace
    return VmapSpace


def _bucket(pages: int) -> int:
    """The power of two at or above pages (1, 2, 4, ...)."""
    return 1 << max(0, pages - 1).bit_length()


def _label(b: int) -> str:
    return str(b) if b <= 2 else f"{b // 2 + 1}-{b}"


def summarize(space, dump, notes, source: str) -> dict:
    """The info summary as a plain dict (what --json writes)."""
    from .addrmap import summary
    page = space.page_size
    areas = list(space)
    hist: dict[int, list[int]] = {}
    per_node = [[0, 0] for _ in range(space.nr_nodes)]
    for a in areas:
        h = hist.setdefault(_bucket(-(-a.size // page)), [0, 0])
        h[0] += 1
        h[1] += a.size
        n = per_node[space.node_of(a.start)]
        n[0] += 1
        n[1] += a.size
    numa: dict[int, int] = {}
    for e in dump.entries:
        for node, pages in e.nodes.items():
            numa[node] = numa.get(node, 0) + pages
    unpurged = [e for e in dump.entries if e.unpurged]
    return {
        "source": source, "space": [space.start, space.end], "page_size": page,
        **summary(space),
        "dump_lines": len(dump.entries) + len(dump.skipped), "skipped_lines": len(dump.skipped),
        "unpurged_areas": len(unpurged), "unpurged_bytes": sum(e.size for e in unpurged),
        "size_histogram": [{"pages": _label(b), "areas": c, "bytes": s}
                           for b, (c, s) in sorted(hist.items())],
        "nr_nodes": space.nr_nodes,
        "node_areas": [c for c, _ in per_node], "node_bytes": [s for _, s in per_node],
        "numa_pages": {f"N{k}": v for k, v in sorted(numa.items())},
        "notes": notes,
    }


def _human(n: int) -> str:
    from .addrmap import _human
    return _human(n)


def _node_line(info) -> str:
    counts = info["node_areas"]
    if len(counts) <= 16:
        return "  ".join(f"{i}:{c}" for i, c in enumerate(counts))
    mean = sum(counts) / len(counts)
    return f"min {min(counts)}, mean {mean:.1f}, max {max(counts)} areas per node"


def format_text(info) -> str:
    """The summary as plain text."""
    top = max((h["areas"] for h in info["size_histogram"]), default=1)
    lines = [
        f"vmallocinfo: {info['source']}",
        f"  space          [{info['space'][0]:#x}, {info['space'][1]:#x})",
        f"  busy areas     {info['busy_areas']}  ({_human(info['busy_bytes'])}, "
        f"{info['busy_bytes']} B)",
        f"  unpurged       {info['unpurged_areas']} lazily freed areas in the dump "
        f"({_human(info['unpurged_bytes'])})",
        f"  free blocks    {info['free_blocks']}  ({_human(info['free_bytes'])})",
        f"  largest free   {_human(info['largest_free'])}",
        f"  fragmentation  {info['fragmentation']:.6f}  (1 - largest free / free bytes)",
        "size histogram (pages, guard page included):",
    ]
    for h in info["size_histogram"]:
        bar = "#" * max(1, round(40 * h["areas"] / top))
        lines.append(f"  {h['pages']:>9}  {h['areas']:6d}  {_human(h['bytes']):>10}  {bar}")
    lines.append(f"per-node spread (nr_nodes={info['nr_nodes']}): {_node_line(info)}")
    if info["numa_pages"]:
        lines.append("NUMA pages (N<n>= fields): "
                     + "  ".join(f"{k}={v}" for k, v in info["numa_pages"].items()))
    lines.append("notes:")
    lines += [f"  - {n}" for n in info["notes"]]
    return "\n".join(lines)


def _print_rich(console, info) -> None:
    from rich.table import Table
    t = Table(title=f"vmallocinfo: {info['source']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("space", f"[{info['space'][0]:#x}, {info['space'][1]:#x})")
    t.add_row("busy areas", f"{info['busy_areas']} ({_human(info['busy_bytes'])})")
    t.add_row("unpurged", f"{info['unpurged_areas']} ({_human(info['unpurged_bytes'])})")
    t.add_row("free blocks", f"{info['free_blocks']} ({_human(info['free_bytes'])})")
    t.add_row("largest free", _human(info["largest_free"]))
    t.add_row("fragmentation", f"{info['fragmentation']:.6f}")
    t.add_row(f"nodes ({info['nr_nodes']})", _node_line(info))
    if info["numa_pages"]:
        t.add_row("NUMA pages", "  ".join(f"{k}={v}" for k, v in info["numa_pages"].items()))
    console.print(t)
    h = Table(title="size histogram (pages, guard page included)")
    for col in ("pages", "areas", "bytes", ""):
        h.add_column(col, justify="right" if col else "left")
    top = max((r["areas"] for r in info["size_histogram"]), default=1)
    for r in info["size_histogram"]:
        h.add_row(r["pages"], str(r["areas"]), _human(r["bytes"]),
                  "#" * max(1, round(30 * r["areas"] / top)))
    console.print(h)
    for n in info["notes"]:
        console.print(f"- {n}", markup=False, highlight=False)


def load_dump(path: str, impl: str = "core", **kw):
    """(space, dump, notes) for a file; OSError / ValueError with a clear message."""
    from . import vmallocinfo as vi
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not text.strip():
        raise ValueError("empty file, no vmalloc areas")
    space, notes = vi.load(text, cls=space_class(impl), source=path, **kw)
    return space, vi.parse(text), notes


def _cmd_info(args) -> int:
    from .cli import _rich_console
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        args.parser.error(f"--json {args.json}: no such directory")
    try:
        space, dump, notes = load_dump(args.file, args.impl, nr_nodes=args.nr_nodes)
    except OSError as e:
        hint = " (it is readable by root only: sudo, or a saved copy)" \
            if args.file == DEFAULT_FILE else ""
        print(f"vmap-core: cannot read {args.file}: {e.strerror or e}{hint}", file=sys.stderr)
        return 1
    except (ValueError, MemoryError) as e:      # MemoryError: VmapExhausted
        print(f"vmap-core: {args.file}: {e}", file=sys.stderr)
        return 1
    info = summarize(space, dump, notes, args.file)
    console = _rich_console()
    if console is not None:
        _print_rich(console, info)
    else:
        print(format_text(info))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0

"""``python -m vmap_core info [FILE]``: summary of a /proc/vmallocinfo dump.

Loads the dump (default: this machine's /proc/vmallocinfo, readable by root
only; unpurged areas kept lazy, as ``map`` keeps them) and prints areas,
bytes, a size histogram in power-of-two page buckets, the spread over
busy-tree nodes, the largest free block, fragmentation and the notes on what
was done to the dump; ``--json PATH`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import common

NAME = "info"
DEFAULT_FILE = "/proc/vmallocinfo"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="summary of a /proc/vmallocinfo dump (areas, sizes, nodes, fragmentation)",
        description="Load a /proc/vmallocinfo dump into a space (hashed or hidden addresses "
        "are detected and the areas relaid, keeping sizes; unpurged areas stay lazily freed) "
        "and summarise it.")
    p.add_argument("file", nargs="?", default=DEFAULT_FILE,
                   help="the dump (reading this machine's needs root)")
    p.add_argument("--nr-nodes", type=common.nr_nodes_arg, default=None,
                   help="busy-tree nodes (default: the kernel's rule, CPUs clamped to 1..128)")
    p.add_argument("--impl", choices=("core", "reference"), default="core",
                   help="space class: the Cython core or the pure-Python reference")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    p.set_defaults(func=run, parser=p)


def _bucket(pages: int) -> int:
    """The power of two at or above pages (1, 2, 4, ...)."""
    return 1 << max(0, pages - 1).bit_length()


def _label(b: int) -> str:
    return str(b) if b <= 2 else f"{b // 2 + 1}-{b}"


def summarize(space: Any, dump: Any, notes: list[str], source: str) -> dict[str, Any]:
    """The info summary as a plain dict (what --json writes; fragmentation as
    a fraction, see vmap_core.addrmap.fragmentation)."""
    from ..addrmap import summary
    page = space.page_size
    hist: dict[int, list[int]] = {}
    per_node = [[0, 0] for _ in range(space.nr_nodes)]
    for a in space:
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
    state = summary(space)
    return {
        "source": source, "space": [space.start, space.end], "page_size": page,
        **state,
        "unpurged_areas": state["lazy_areas"], "unpurged_bytes": state["lazy_bytes"],
        "dump_lines": len(dump.entries) + len(dump.skipped), "skipped_lines": len(dump.skipped),
        "size_histogram": [{"pages": _label(b), "areas": c, "bytes": s}
                           for b, (c, s) in sorted(hist.items())],
        "nr_nodes": space.nr_nodes,
        "node_areas": [c for c, _ in per_node], "node_bytes": [s for _, s in per_node],
        "numa_pages": {f"N{k}": v for k, v in sorted(numa.items())},
        "notes": notes,
    }


def _node_line(info: dict[str, Any]) -> str:
    counts = info["node_areas"]
    if len(counts) <= 16:
        return "  ".join(f"{i}:{c}" for i, c in enumerate(counts))
    mean = sum(counts) / len(counts)
    return f"min {min(counts)}, mean {mean:.1f}, max {max(counts)} areas per node"


def print_summary(console: Any, info: dict[str, Any]) -> None:
    from rich.table import Table
    hs = common.human_size
    t = Table(title=f"vmallocinfo: {info['source']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("space", f"[{info['space'][0]:#x}, {info['space'][1]:#x})")
    t.add_row("busy areas", f"{info['busy_areas']} ({hs(info['busy_bytes'])})")
    t.add_row("unpurged", f"{info['unpurged_areas']} ({hs(info['unpurged_bytes'])}), lazily "
              "freed: not reusable until a purge")
    t.add_row("free blocks", f"{info['free_blocks']} ({hs(info['free_bytes'])})")
    t.add_row("largest free", hs(info["largest_free"]))
    t.add_row("fragmentation", f"{common.percent(info['fragmentation'])} of the free bytes "
              "lie outside the largest free block")
    t.add_row(f"nodes ({info['nr_nodes']})", _node_line(info))
    if info["numa_pages"]:
        t.add_row("NUMA pages", "  ".join(f"{k}={v}" for k, v in info["numa_pages"].items()))
    console.print(t)
    h = common.table("size histogram (pages, guard page included)")
    for col in ("pages", "areas", "bytes", ""):
        h.add_column(col, justify="right" if col else "left")
    top = max((r["areas"] for r in info["size_histogram"]), default=1)
    for r in info["size_histogram"]:
        h.add_row(r["pages"], str(r["areas"]), hs(r["bytes"]),
                  "#" * max(1, round(30 * r["areas"] / top)))
    console.print(h)
    for n in info["notes"]:
        console.print(f"- {n}", markup=False)


def run(args: argparse.Namespace) -> int:
    common.check_out_dir(args.parser, "--json", args.json)
    try:
        space, dump, notes = common.load_dump(args.file, args.impl, nr_nodes=args.nr_nodes)
    except (OSError, ValueError, MemoryError) as e:      # MemoryError: VmapExhausted
        hint = " (it is readable by root only: sudo, or a saved copy)" \
            if isinstance(e, OSError) and args.file == DEFAULT_FILE else ""
        print(f"vmap-core: {common.dump_error(args.file, e)}{hint}", file=sys.stderr)
        return 1
    info = summarize(space, dump, notes, args.file)
    print_summary(common.console(), info)
    if args.json:
        common.write_json(args.json, info)
        print(f"wrote {args.json}")
    return 0

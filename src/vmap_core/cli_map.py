"""``python -m vmap_core map --out map.png``: the address space as a picture.

Busy areas coloured by node, free, lazily freed and pooled space, as a strip
(rows of addresses) or a Hilbert curve, with the fragmentation summary in the
legend (see :mod:`vmap_core.addrmap`).  The space comes from a
/proc/vmallocinfo dump (``--from-vmallocinfo``, unpurged areas kept as lazy
where the space supports it) or, by default, from a seeded random demo
workload that shows every state.  Needs matplotlib (``vmap_core[plot]``).
"""

from __future__ import annotations

import os
import sys


def _add_map(sub) -> None:
    from .addrmap import LAYOUTS
    from .cli import _Help, _positive_int
    p = sub.add_parser(
        "map", formatter_class=_Help,
        help="picture of the address space coloured by state (needs vmap_core[plot])",
        description="Draw the address space as a PNG: busy areas coloured by node, free, "
        "lazy and pooled space, with a fragmentation summary in the legend.")
    p.add_argument("--from-vmallocinfo", metavar="FILE",
                   help="draw this /proc/vmallocinfo dump (default: a seeded demo workload)")
    p.add_argument("--out", required=True, metavar="PATH", help="the PNG to write")
    p.add_argument("--layout", choices=LAYOUTS, default="strip",
                   help="strip: rows of addresses; hilbert: a Hilbert curve")
    p.add_argument("--span", choices=("used", "full"), default="used",
                   help="draw from the first to the last used address, or the whole space")
    p.add_argument("--pixel", choices=("priority", "majority"), default="priority",
                   help="a pixel's state: any busy > lazy > pooled > free, or most bytes")
    p.add_argument("--nr-nodes", type=_positive_int, default=None,
                   help="busy-tree nodes (default: 4 for the demo, else the kernel's rule)")
    p.add_argument("--seed", type=int, default=1, help="seed of the demo workload")
    p.add_argument("--impl", choices=("core", "reference"), default="core",
                   help="space class: the Cython core or the pure-Python reference")
    p.set_defaults(func=_cmd_map, parser=p)


def _cmd_map(args) -> int:
    from . import addrmap
    from .cli_info import load_dump, space_class
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        args.parser.error(f"--out {args.out}: no such directory")
    try:
        addrmap.require_matplotlib()
    except ImportError as e:
        print(f"vmap-core: {e}", file=sys.stderr)
        return 2
    cls = space_class(args.impl)
    if args.from_vmallocinfo:
        try:
            space, _, notes = load_dump(args.from_vmallocinfo, args.impl,
                                        nr_nodes=args.nr_nodes, keep_unpurged=True)
        except OSError as e:
            print(f"vmap-core: cannot read {args.from_vmallocinfo}: {e.strerror or e}",
                  file=sys.stderr)
            return 1
        except (ValueError, MemoryError) as e:
            print(f"vmap-core: {args.from_vmallocinfo}: {e}", file=sys.stderr)
            return 1
        title = f"vmallocinfo: {args.from_vmallocinfo}"
    else:
        space = addrmap.demo_space(cls, seed=args.seed, nr_nodes=args.nr_nodes or 4)
        notes = [f"demo workload, seed {args.seed}: random alloc from 64 CPUs, "
                 "half freed lazily and purged, then more alloc, free and lazy free"]
        title = f"demo space, seed {args.seed}"
    info = addrmap.plot(space, args.out, layout=args.layout, span=args.span,
                        mode=args.pixel, title=title)
    for n in notes:
        print(f"- {n}")
    print(f"busy {info['busy_areas']}, lazy {info['lazy_areas']}, pooled "
          f"{info['pooled_areas']}, free blocks {info['free_blocks']}, "
          f"fragmentation {info['fragmentation']:.4f}")
    print(f"wrote {args.out} ({args.layout}, [{info['lo']:#x}, {info['hi']:#x}), "
          f"{info['bytes_per_pixel']} B per pixel)")
    return 0

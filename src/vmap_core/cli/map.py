"""``python -m vmap_core map --out map.png``: the address space as a picture.

Busy areas coloured by node (categorical colours; nodes past the tenth share
one), free, lazily freed and pooled space, as a strip (rows of addresses) or a
Hilbert curve, with the fragmentation summary beside it (the pixels come from
:mod:`vmap_core.addrmap`).  The space comes from a /proc/vmallocinfo dump
(``--from-vmallocinfo``; unpurged areas kept lazy, as ``info`` keeps them) or,
by default, from a seeded random demo workload that shows every state.  A dump
whose addresses the kernel hashed or hid is drawn with its areas relaid, and
the picture says so.  Needs matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import common

NAME = "map"


def add_parser(sub: Any) -> None:
    from ..addrmap import LAYOUTS
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="picture of the address space coloured by state (needs matplotlib)",
        description="Draw the address space: busy areas coloured by node, free, lazy and "
        "pooled space, with a fragmentation summary beside it.")
    p.add_argument("--from-vmallocinfo", metavar="FILE",
                   help="draw this /proc/vmallocinfo dump (default: a seeded demo workload)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the picture to write, in the format its extension names (PNG "
                   "without one); written to exactly this path")
    p.add_argument("--layout", choices=LAYOUTS, default="strip",
                   help="strip: rows of addresses; hilbert: a Hilbert curve")
    p.add_argument("--span", choices=("used", "full"), default="used",
                   help="draw from the first to the last used address, or the whole space")
    p.add_argument("--pixel", choices=("priority", "majority"), default="priority",
                   help="a pixel's state: any busy > lazy > pooled > free, or most bytes")
    p.add_argument("--nr-nodes", type=common.nr_nodes_arg, default=None,
                   help="busy-tree nodes (default: 4 for the demo, else the kernel's rule)")
    p.add_argument("--seed", type=int, default=1, help="seed of the demo workload")
    p.add_argument("--impl", choices=("core", "reference"), default="core",
                   help="space class: the Cython core or the pure-Python reference")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from .. import addrmap
    common.check_image_path(args.parser, "--out", args.out, "the map")
    synthetic = None
    if args.from_vmallocinfo:
        try:
            space, dump, notes = common.load_dump(args.from_vmallocinfo, args.impl,
                                                  nr_nodes=args.nr_nodes)
        except (OSError, ValueError, MemoryError) as e:
            print(f"vmap-core: {common.dump_error(args.from_vmallocinfo, e)}", file=sys.stderr)
            return 1
        title = f"vmallocinfo: {args.from_vmallocinfo}"
        synthetic = common.synthetic_layout(dump)
    else:
        space = addrmap.demo_space(common.space_class(args.impl), seed=args.seed,
                                   nr_nodes=args.nr_nodes or 4)
        notes = [f"demo workload, seed {args.seed}: random alloc from 64 CPUs, "
                 "half freed lazily and purged, then more alloc, free and lazy free"]
        title = f"demo space, seed {args.seed}"
    fig, info = figure(space, layout=args.layout, span=args.span, mode=args.pixel,
                       title=title, synthetic=synthetic)
    fmt = common.save_figure(fig, args.out)
    for n in notes:
        print(f"- {n}")
    print(f"busy {info['busy_areas']}, lazy {info['lazy_areas']}, pooled "
          f"{info['pooled_areas']}, free blocks {info['free_blocks']}, "
          f"fragmentation {common.percent(info['fragmentation'])}")
    print(f"wrote {args.out} ({fmt.upper()}, {args.layout}, [{info['lo']:#x}, {info['hi']:#x}), "
          f"{common.human_size(info['bytes_per_pixel'])} per pixel)")
    return 0


def figure(space: Any, *, layout: str = "strip", span: str = "used", mode: str = "priority",
           title: str | None = None, synthetic: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(matplotlib Figure, summary with the drawn range) of ``space``.

    ``synthetic``: why the addresses are not the kernel's ("hashed", ...); the
    picture then says that the layout is synthetic."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .. import addrmap as am
    if layout not in am.LAYOUTS:
        raise ValueError(f"layout must be one of {am.LAYOUTS}, not {layout!r}")
    regs = am.regions(space)
    lo, hi = am.used_span(space, regs) if span == "used" else (space.start, space.end)
    # strip: 240 rows of 640 pixels (at most one screen pixel each); hilbert: 512 x 512
    width, rows = (640, 240) if layout == "strip" else (512, 512)
    state, node, bpp = am.rasterize(space, width * rows, lo, hi, mode=mode, regs=regs)
    gs, gn = am.image(state, node, layout, width)

    nodes = space.nr_nodes
    own, collapsed = common.node_colours(nodes)
    fixed = {am.FREE: "#e8e8e8", am.LAZY: "#d62728", am.POOLED: "#ff9f1c"}
    colours = [fixed[am.FREE], fixed[am.LAZY], fixed[am.POOLED]] + own
    if collapsed:
        colours.append(common.OTHER_NODES_COLOUR)
    busy_idx = 3 + np.clip(gn, 0, len(own) if collapsed else len(own) - 1)
    idx = np.where(gs == am.FREE, 0, np.where(gs == am.LAZY, 1,
                   np.where(gs == am.POOLED, 2, busy_idx)))
    fig = Figure(figsize=(11, 6.2 if layout == "strip" else 8.5), dpi=110)
    ax = fig.add_axes((0.13, 0.08, 0.56, 0.80))
    ax.imshow(idx, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1,
              interpolation="nearest", aspect="auto" if layout == "strip" else "equal")
    for spine in ax.spines.values():                # would hide the edge pixels
        spine.set_visible(False)
    hs = common.human_size
    if layout == "strip":
        ticks = np.linspace(0, gs.shape[0] - 1, 6).astype(int)
        ax.set_yticks(ticks, [f"{lo + int(t) * width * bpp:#x}" for t in ticks], fontsize=7)
        ax.set_xticks([0, width // 2, width - 1],
                      ["+0", f"+{hs(width * bpp / 2)}", f"+{hs(width * bpp)}"], fontsize=7)
        ax.set_ylabel("row start address" + (" (synthetic)" if synthetic else ""))
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("Hilbert curve: neighbouring addresses stay close")
    common.fit_title(fig, ax, title or "vmap address space")
    if synthetic:
        fig.text(0.41, 0.955, f"SYNTHETIC LAYOUT: the kernel {synthetic} the addresses; "
                 "areas relaid in dump order, sizes and known adjacencies kept",
                 ha="center", va="top", fontsize=9, color="#b00000", weight="bold", wrap=True)

    info = am.summary(space)
    handles = [Patch(color=c, label=f"busy, node {n}") for n, c in enumerate(own)]
    if collapsed:
        handles.append(Patch(color=common.OTHER_NODES_COLOUR,
                             label=f"busy, nodes {len(own)}..{nodes - 1}"))
    handles += [Patch(color=fixed[am.LAZY], label=f"lazy ({info['lazy_areas']})"),
                Patch(color=fixed[am.POOLED], label=f"pooled ({info['pooled_areas']})"),
                Patch(color=fixed[am.FREE], label="free")]
    text = (f"range  [{lo:#x},\n        {hi:#x})\n"
            f"pixel  {hs(bpp)} ({mode})\n"
            f"busy   {info['busy_areas']} areas, {hs(info['busy_bytes'])}\n"
            f"free   {info['free_blocks']} blocks, {hs(info['free_bytes'])}\n"
            f"largest free  {hs(info['largest_free'])}\n"
            f"fragmentation {common.percent(info['fragmentation'])}\n"
            f"lazy   {hs(info['lazy_bytes'])}\npooled {hs(info['pooled_bytes'])}")
    leg = fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.71, 0.88),
                     fontsize=8, title="state", title_fontsize=9)
    leg.get_frame().set_alpha(0.9)
    fig.text(0.715, 0.08, text, family="monospace", fontsize=7.5, va="bottom")
    return fig, {**info, "lo": lo, "hi": hi, "bytes_per_pixel": bpp, "layout": layout}

"""The address space as a picture: each pixel a run of addresses, coloured by state.

:func:`regions` reads a space's lists (busy areas, ``free_areas()``,
``lazy_areas()``, ``pooled_areas()``); :func:`rasterize` turns them into one
state per pixel (numpy); :func:`plot` draws a strip (rows of addresses, left to
right, top to bottom) or a Hilbert curve (neighbouring addresses stay close)
with matplotlib, the fragmentation summary in the legend.  :func:`demo_space`
builds a small space whose picture shows every state.
"""

from __future__ import annotations

import random

FREE, POOLED, LAZY, BUSY = 0, 1, 2, 3          # also the priority order
STATE_NAMES = ("free", "pooled", "lazy", "busy")
PLOT_HINT = "the map needs matplotlib: pip install vmap_core[plot]"
LAYOUTS = ("strip", "hilbert")


def regions(space):
    """{state: [(start, end, node)]} from the space's lists (node -1 where none)."""
    out = {BUSY: [(a.start, a.end, space.node_of(a.start)) for a in space],
           FREE: [(a.start, a.end, -1) for a in space.free_areas()],
           LAZY: [], POOLED: []}
    if hasattr(space, "lazy_areas"):
        out[LAZY] = [(a.start, a.end, -1) for a in space.lazy_areas()]
        out[POOLED] = [(a.start, a.end, n) for a, n in space.pooled_areas()]
    return out


def summary(space) -> dict:
    """Counts and bytes per state, largest free block, fragmentation."""
    st = space.stats()
    free, largest = st["free_bytes"], st["largest_free"]
    regs = regions(space)
    out = {"busy_areas": st["busy_areas"], "busy_bytes": st["busy_bytes"],
           "free_blocks": st["free_areas"], "free_bytes": free, "largest_free": largest,
           "fragmentation": 1 - largest / free if free else 0.0,
           "lazy_areas": len(regs[LAZY]), "lazy_bytes": sum(e - s for s, e, _ in regs[LAZY]),
           "pooled_areas": len(regs[POOLED]),
           "pooled_bytes": sum(e - s for s, e, _ in regs[POOLED])}
    return out


def used_span(space, regs=None) -> tuple[int, int]:
    """[lo, hi): the addresses from the first to the last non-free byte, plus 1/64 margin."""
    regs = regs or regions(space)
    used = [r for k in (BUSY, LAZY, POOLED) for r in regs[k]]
    if not used:
        return space.start, space.end
    lo, hi = min(r[0] for r in used), max(r[1] for r in used)
    pad = (hi - lo) // 64
    return max(space.start, lo - pad), min(space.end, hi + pad)


def rasterize(space, npix: int, lo: int | None = None, hi: int | None = None, *,
              mode: str = "priority", regs=None):
    """(state, node, bytes_per_pixel): numpy arrays of ``npix`` pixels over [lo, hi).

    ``priority``: a pixel touched by any busy byte is busy, else lazy, pooled,
    free (small areas stay visible).  ``majority``: the state holding most of
    the pixel's bytes.  ``node`` is the node of a busy or pooled pixel, else -1.
    """
    import numpy as np
    lo = space.start if lo is None else lo
    hi = space.end if hi is None else hi
    regs = regs or regions(space)
    bpp = max(1, -(-(hi - lo) // npix))
    state = np.zeros(npix, np.uint8)
    node = np.full(npix, -1, np.int32)
    cover = np.zeros((4, npix)) if mode == "majority" else None
    if mode not in ("priority", "majority"):
        raise ValueError(f"mode must be priority or majority, not {mode!r}")
    order = (FREE, POOLED, LAZY, BUSY) if cover is not None else (POOLED, LAZY, BUSY)
    for k in order:                                 # rising priority: later ones win
        for s, e, n in regs[k]:
            s, e = max(s, lo), min(e, hi)
            if s >= e:
                continue
            p0, p1 = (s - lo) // bpp, (e - 1 - lo) // bpp
            if cover is None:
                state[p0:p1 + 1] = k
            elif p0 == p1:
                cover[k, p0] += e - s
            else:
                cover[k, p0] += lo + (p0 + 1) * bpp - s
                cover[k, p1] += e - (lo + p1 * bpp)
                cover[k, p0 + 1:p1] += bpp
            if n >= 0:
                node[p0:p1 + 1] = n
    if cover is not None:
        state = cover.argmax(axis=0).astype(np.uint8)
        state[cover.sum(axis=0) == 0] = FREE
    node[(state != BUSY) & (state != POOLED)] = -1
    return state, node, bpp


def hilbert_xy(order: int):
    """(x, y) numpy arrays: the cell of each index along a Hilbert curve of 2**order side."""
    import numpy as np
    n = 1 << order
    d = np.arange(n * n, dtype=np.int64)
    x = np.zeros_like(d)
    y = np.zeros_like(d)
    t = d.copy()
    s = 1
    while s < n:
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        flip = (ry == 0) & (rx == 1)
        x = np.where(flip, s - 1 - x, x)
        y = np.where(flip, s - 1 - y, y)
        swap = ry == 0
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        x += s * rx
        y += s * ry
        t //= 4
        s *= 2
    return x, y


def image(state, node, layout: str, width: int):
    """2-D (state, node) grids: ``strip`` rows of ``width``; ``hilbert`` a square."""
    import numpy as np
    if layout == "strip":
        return state.reshape(-1, width), node.reshape(-1, width)
    order = (len(state) - 1).bit_length() // 2
    x, y = hilbert_xy(order)
    gs = np.zeros((1 << order, 1 << order), state.dtype)
    gn = np.zeros((1 << order, 1 << order), node.dtype)
    gs[y, x], gn[y, x] = state, node
    return gs, gn


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def require_matplotlib() -> None:
    """ImportError with the install hint unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(PLOT_HINT) from None


def plot(space, path, *, layout: str = "strip", span: str = "used", mode: str = "priority",
         title: str | None = None) -> dict:
    """Write a PNG map of ``space`` to ``path``; returns its :func:`summary` plus the range."""
    require_matplotlib()
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    regs = regions(space)
    lo, hi = used_span(space, regs) if span == "used" else (space.start, space.end)
    # strip: 240 rows of 640 pixels (at most one screen pixel each); hilbert: 512 x 512
    width, rows = (640, 240) if layout == "strip" else (512, 512)
    npix = width * rows
    state, node, bpp = rasterize(space, npix, lo, hi, mode=mode, regs=regs)
    gs, gn = image(state, node, layout, width)

    nodes = space.nr_nodes
    busy_cols = [tuple(c) for c in _node_colors(nodes)]
    fixed = {FREE: "#e8e8e8", LAZY: "#d62728", POOLED: "#ff9f1c"}
    colors = [fixed[FREE], fixed[LAZY], fixed[POOLED]] + busy_cols
    idx = np.where(gs == FREE, 0, np.where(gs == LAZY, 1, np.where(gs == POOLED, 2,
                   3 + np.clip(gn, 0, nodes - 1))))
    fig = Figure(figsize=(11, 6.2 if layout == "strip" else 8.5), dpi=110)
    ax = fig.add_axes([0.13, 0.08, 0.56, 0.84])
    ax.imshow(idx, cmap=ListedColormap(colors), vmin=0, vmax=len(colors) - 1,
              interpolation="nearest", aspect="auto" if layout == "strip" else "equal")
    for spine in ax.spines.values():                # would hide the edge pixels
        spine.set_visible(False)
    if layout == "strip":
        rows = gs.shape[0]
        ticks = np.linspace(0, rows - 1, 6).astype(int)
        ax.set_yticks(ticks, [f"{lo + int(t) * width * bpp:#x}" for t in ticks], fontsize=7)
        ax.set_xticks([0, width // 2, width - 1],
                      ["+0", f"+{_human(width * bpp / 2)}", f"+{_human(width * bpp)}"], fontsize=7)
        ax.set_ylabel("row start address")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("Hilbert curve: neighbouring addresses stay close")
    ax.set_title(title or "vmap address space", fontsize=10)

    info = summary(space)
    shown = min(nodes, 8)
    handles = [Patch(color=busy_cols[n], label=f"busy, node {n}") for n in range(shown)]
    if nodes > shown:
        handles.append(Patch(color=busy_cols[-1], label=f"busy, nodes {shown}..{nodes - 1}"))
    handles += [Patch(color=fixed[LAZY], label=f"lazy ({info['lazy_areas']})"),
                Patch(color=fixed[POOLED], label=f"pooled ({info['pooled_areas']})"),
                Patch(color=fixed[FREE], label="free")]
    text = (f"range  [{lo:#x},\n        {hi:#x})\n"
            f"pixel  {_human(bpp)} ({mode})\n"
            f"busy   {info['busy_areas']} areas, {_human(info['busy_bytes'])}\n"
            f"free   {info['free_blocks']} blocks, {_human(info['free_bytes'])}\n"
            f"largest free  {_human(info['largest_free'])}\n"
            f"fragmentation {info['fragmentation']:.2%}\n"
            f"lazy   {_human(info['lazy_bytes'])}\npooled {_human(info['pooled_bytes'])}")
    leg = fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.71, 0.92),
                     fontsize=8, title="state", title_fontsize=9)
    leg.get_frame().set_alpha(0.9)
    fig.text(0.715, 0.08, text, family="monospace", fontsize=7.5, va="bottom")
    fig.savefig(path)
    return {**info, "lo": lo, "hi": hi, "bytes_per_pixel": bpp, "layout": layout}


def _node_colors(n: int):
    """Distinct blue-green-purple shades for busy areas of n nodes."""
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.75 * (i / max(1, n - 1))) for i in range(n)]


def demo_space(cls=None, *, seed: int = 1, nr_nodes: int = 4, pages: int = 1 << 14):
    """A seeded random alloc / free_lazy / purge / free workload on a ``pages``-page space.

    Areas come from several CPUs (so pools fill by node), some freed lazily and
    purged (to pools or the free tree), later ones left lazy; with a space
    without lazy free it frees at once.
    """
    if cls is None:
        from . import VmapSpace as cls
    rng = random.Random(seed)
    base = 0xffffc90000000000
    lazy = hasattr(cls, "free_lazy")
    kw = {"lazy_max_pages": 1 << 40} if lazy else {}
    space = cls(base, base + pages * 4096, nr_nodes=nr_nodes, **kw)
    live = []

    def alloc_some(n):
        for _ in range(n):
            size = 4096 * min(256, int(rng.paretovariate(1.2)))
            try:
                kw = {"cpu": rng.randrange(64), "caller": "demo"} if lazy else {}
                live.append(space.alloc(size, **kw))
            except Exception:   # VmapExhausted: the demo space is full enough
                return

    def release(frac, how):
        rng.shuffle(live)
        for _ in range(int(len(live) * frac)):
            addr = live.pop()
            (space.free_lazy if lazy and how == "lazy" else space.free)(addr)

    alloc_some(2500)
    release(0.5, "lazy")
    if lazy:
        space.purge()
    alloc_some(1500)
    release(0.15, "free")
    release(0.15, "lazy")
    return space


__all__ = ["BUSY", "FREE", "LAZY", "POOLED", "STATE_NAMES", "demo_space", "hilbert_xy",
           "image", "plot", "rasterize", "regions", "summary", "used_span"]

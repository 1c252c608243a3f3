"""The address space as pixels: each pixel a run of addresses, with a state.

:func:`regions` reads a space's lists (busy areas, ``free_areas()``,
``lazy_areas()``, ``pooled_areas()``); :func:`rasterize` turns them into one
state per pixel (numpy); :func:`image` lays the pixels out as a strip (rows of
addresses, left to right, top to bottom) or a Hilbert curve (neighbouring
addresses stay close).  :func:`summary` counts each state, with the one
definition of :func:`fragmentation`.  :func:`demo_space` builds a small space
whose picture shows every state.  The picture itself is drawn by
:mod:`vmap_core.cli.map`.
"""

from __future__ import annotations

import random

FREE, POOLED, LAZY, BUSY = 0, 1, 2, 3          # also the priority order
STATE_NAMES = ("free", "pooled", "lazy", "busy")
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


def fragmentation(free_bytes: int, largest_free: int) -> float:
    """The one definition: the share of free bytes outside the largest free
    block, ``1 - largest_free / free_bytes`` (0 when nothing is free).  Lazy
    and pooled areas are not free: a purge must run before they can be reused."""
    return 1 - largest_free / free_bytes if free_bytes else 0.0


def summary(space) -> dict:
    """Counts and bytes per state, largest free block, :func:`fragmentation`."""
    st = space.stats()
    free, largest = st["free_bytes"], st["largest_free"]
    regs = regions(space)
    out = {"busy_areas": st["busy_areas"], "busy_bytes": st["busy_bytes"],
           "free_blocks": st["free_areas"], "free_bytes": free, "largest_free": largest,
           "fragmentation": fragmentation(free, largest),
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


def demo_space(cls=None, *, seed: int = 1, nr_nodes: int = 4, pages: int = 1 << 14):
    """A seeded random alloc / free_lazy / purge / free workload on a ``pages``-page space.

    Areas come from several CPUs (so pools fill by node), some freed lazily and
    purged (to pools or the free tree), later ones left lazy; with a space
    without lazy free it frees at once.
    """
    if cls is None:
        from ._space import VmapSpace as cls
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


__all__ = ["BUSY", "FREE", "LAYOUTS", "LAZY", "POOLED", "STATE_NAMES", "demo_space",
           "fragmentation", "hilbert_xy", "image", "rasterize", "regions", "summary",
           "used_span"]

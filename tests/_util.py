"""Helpers shared by the test modules (imported as ``_util``; see conftest.py)."""

from __future__ import annotations

import os

import pytest

from vmap_core.reference import ReferenceSpace
from vmap_core.reference import VmapArea as RefArea
from vmap_core.testing import COMMON_STATS
from vmap_core.testing import span as _span
from vmap_core.testing import snapshot as _snapshot
from vmap_core.testing.strategies import Index

try:
    from vmap_core import VmapExhausted
except ImportError:  # package __init__ not written yet: the shared module
    from vmap_core._errors import VmapExhausted

P = 4096                       # the default page size
TOP = 1 << 64                  # one past the highest address



def load_core():
    """(VmapSpace, None) when the Cython core imports, else (None, reason)."""
    try:
        from vmap_core import VmapSpace
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return VmapSpace, None


def require_core():
    """The core class, or skip (fail under VMAP_CORE_REQUIRE=1) when not built."""
    core, err = load_core()
    if core is None:
        msg = f"Cython core not built ({err}); run `python setup.py build_ext --inplace`"
        if os.environ.get("VMAP_CORE_REQUIRE") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return core


def span(area):
    """(start, end) of an area, read through its attributes (the kit's span();
    here the area must have a size too, as the package's own do)."""
    assert type(area.size) is int, area
    return _span(area)


def busy(space):
    """Busy areas as (start, end) tuples, in the order iter(space) gives."""
    return [span(a) for a in space]


def free(space):
    """Free blocks as (start, end) tuples, in the order free_areas() gives."""
    return [span(a) for a in space.free_areas()]


def common_stats(space):
    st = space.stats()
    out = {k: st[k] for k in COMMON_STATS}
    out["node_areas"] = list(out["node_areas"])
    return out


def snapshot(space):
    """Everything observable about the structure, for before/after comparisons
    (the kit's: len, busy areas, free blocks, the COMMON_STATS keys)."""
    return _snapshot(space, COMMON_STATS)


def carve(space, start, end, holes):
    """On a fresh space [start, end), allocate everything but `holes`.

    `holes` is a sorted list of disjoint (s, e) page-aligned ranges; each gap
    between them is taken by one alloc(vstart=gap) (the lowest match from
    vstart is vstart itself when it is free).  Returns the busy (s, e) list.
    """
    taken, pos = [], start
    for s, e in list(holes) + [(end, end)]:
        if pos < s:
            got = space.alloc(s - pos, vstart=pos)
            assert got == pos, (hex(got), hex(pos))
            taken.append((pos, s))
        pos = e
    assert free(space) == [tuple(h) for h in holes]
    return taken


def lowest_linear_match(free_blocks, size, align, vstart, vend):
    """The contract, spelled out independently of both implementations.

    Among free blocks in address order, take the first where
    nva = ALIGN(max(block.start, vstart), align) has nva + size <= block.end;
    None if there is none or if nva + size > vend.
    """
    for s, e in free_blocks:
        nva = -(-max(s, vstart) // align) * align
        if nva + size <= e:
            return nva if nva + size <= vend else None
    return None


def both_spaces(core_cls, *args, **kwargs):
    return core_cls(*args, **kwargs), ReferenceSpace(*args, **kwargs)


__all__ = ["P", "TOP", "COMMON_STATS", "ReferenceSpace", "RefArea", "VmapExhausted",
           "load_core", "require_core", "span", "busy", "free", "common_stats",
           "snapshot", "carve", "lowest_linear_match", "both_spaces", "Index"]


def subprocess_env():
    """The environment for `python -m vmap_core` in a child process: the
    package these tests import (installed or from src/) comes first."""
    import vmap_core
    root = os.path.dirname(os.path.dirname(os.path.abspath(vmap_core.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def run_child(code: str, timeout: float = 60) -> "subprocess.CompletedProcess":
    """Run code (dedented) in a fresh interpreter that imports the package
    under test; a crash, a non-zero exit or a hang (timeout) fails the test.
    For repros whose failure is a crash or a hang."""
    import subprocess
    import sys
    import textwrap
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=subprocess_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child hung for {timeout} s; output so far: {e.stdout!r} {e.stderr!r}")
    assert proc.returncode == 0, (f"child exited with {proc.returncode} "
                                  f"(negative: killed by that signal)\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_inside_figure(fig, text):
    """A matplotlib Text artist lies wholly inside its figure (nothing cut off)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = text.get_window_extent(renderer=canvas.get_renderer())
    assert box.x0 >= 0 and box.y0 >= 0, (box, fig.bbox)
    assert box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)

"""vmap_core: the Linux vmalloc address-space allocator as a Python package.

Free space in one augmented red-black tree (lowest fit, with alignment;
coalescing free), busy areas sharded over per-CPU nodes by address, each
node under its own spinlock, as in Linux mm/vmalloc.c since v6.9; the
``kernel=`` argument picks the behaviour of one version (6.8, 6.9, 6.16).

    >>> from vmap_core import VmapSpace
    >>> space = VmapSpace(0x10000, 0x100000, nr_nodes=4)
    >>> a = space.alloc(0x3000)
    >>> space.find(a + 0x1000)
    VmapArea(start=0x10000, end=0x13000)
    >>> a + 0x1000 in space
    True

:mod:`vmap_core.reference` holds the same API in plain Python (the oracle);
:mod:`vmap_core.types` the types for annotations; :mod:`vmap_core.testing`
(the ``testing`` extra, Hypothesis) a conformance kit for your own allocator.
"""

from ._errors import OnPurgeError, VmapExhausted
from ._space import MISS, VmapArea, VmapSpace
from ._version import __version__
from .types import (CoreStats, LockMode, SearchMode, SpaceState, SpaceStats, UsercopyMode,
                    WalkMode)

__all__ = ["MISS", "CoreStats", "LockMode", "OnPurgeError", "SearchMode", "SpaceState",
           "SpaceStats", "UsercopyMode", "VmapArea", "VmapExhausted", "VmapSpace",
           "__version__", "WalkMode"]

"""vmap_core.testing: a conformance kit for your own allocator or reader.

Needs Hypothesis: ``pip install "vmap_core[testing]"``.  ``import vmap_core``
never does.

* :class:`VmapContract` -- subclass it, set ``space_class``, and pytest or
  unittest runs the differential state machine of vmap_core's own tests
  against :class:`vmap_core.reference.ReferenceSpace`::

      import vmap_core.testing

      class TestMine(vmap_core.testing.VmapContract):
          space_class = MySpace

* :mod:`vmap_core.testing.strategies` -- Hypothesis strategies for the API's
  inputs (sizes, alignments, windows, addresses, bad inputs of every
  documented kind, whole call sequences), parametrised by a
  :class:`~vmap_core.testing.strategies.Geometry`.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # the kit's one dependency beyond the package
    raise ImportError(
        "vmap_core.testing needs Hypothesis, an optional dependency: "
        'pip install "vmap_core[testing]"') from exc

from . import strategies
from ._compare import COMMON_STATS, LAZY_STATS, snapshot, span
from .contract import FEATURES, LAZY_FEATURES, VmapContract, detect_features
from .strategies import Call, Geometry

__all__ = ["COMMON_STATS", "FEATURES", "LAZY_FEATURES", "LAZY_STATS", "Call", "Geometry",
           "VmapContract", "detect_features", "snapshot", "span", "strategies"]

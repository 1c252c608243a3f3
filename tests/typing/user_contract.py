"""A user's contract test file: checked by `mypy --strict` in CI (pytest
collects it nowhere: tests/typing is not a test directory it reads).

It must type-check against the kit's annotations with nothing but the
package's own names.
"""

from __future__ import annotations

from hypothesis import given, settings

import vmap_core.testing
from vmap_core.reference import ReferenceSpace
from vmap_core.testing import Call, Geometry, VmapContract
from vmap_core.testing import strategies as vst


class TestReference(vmap_core.testing.VmapContract):
    space_class = ReferenceSpace


class TestFourNodes(VmapContract):
    space_class = ReferenceSpace
    nr_nodes = 4
    zone_size = 2 * 4096
    lazy_max_pages = 16
    search = None
    on_purge = "check"
    settings = settings(max_examples=10)


G = Geometry(0x100000, 0x100000 + 64 * 4096)


@given(calls=vst.operations(G), size=vst.sizes(G))
def test_sequence(calls: list[Call], size: int) -> None:
    space = ReferenceSpace(G.start, G.end, nr_nodes=1)
    for call in calls:
        try:
            call(space)
        except (TypeError, ValueError, KeyError, MemoryError):
            pass
    assert size % G.page_size == 0

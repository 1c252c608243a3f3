"""Mistakes that `mypy --strict` must report against the package's types: CI
checks that it finds exactly the lines marked ``# E``, so the typing check is
shown able to fail."""

from __future__ import annotations

from vmap_core import VmapSpace
from vmap_core.reference import ReferenceSpace

space = VmapSpace(0, 1 << 20, lock="spin")  # E: not a LockMode
area = space.find(4096)
print(area.start)  # E: area may be None
print(space.stats()["no_such_key"])  # E: not a stats() key
ref = ReferenceSpace(0, 1 << 20)
n: str = ref.alloc(4096)  # E: alloc() returns int
low = VmapSpace(0, 1 << 20, search="fastest")  # E: not a SearchMode

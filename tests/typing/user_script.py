"""What a user writes: checked by `mypy --strict` in CI (never run by pytest).

It must type-check against the stub of the core and the annotations of the
reference, with nothing but the package's own types.
"""

from __future__ import annotations

import array
import copy
import pickle

from vmap_core import CoreStats, LockMode, SpaceStats, VmapArea, VmapExhausted, VmapSpace
from vmap_core.reference import ReferenceSpace


def biggest_hole(stats: SpaceStats) -> int:
    return stats["largest_free"]


def build(lock: LockMode) -> VmapSpace:
    space = VmapSpace(0xffffc90000000000, 0xffffe90000000000, nr_nodes=4, lock=lock)
    a: int = space.alloc(5 * 4096, caller="user_script")
    area: VmapArea | None = space.find(a + 100)
    assert area is not None and a + 100 in area and a in space
    start, end = area
    assert start < end and sorted([area, area])[0] == area
    try:
        space.alloc(1 << 60)
    except VmapExhausted:
        pass
    return space


def lookups(space: VmapSpace) -> array.array[int]:
    addrs = array.array("Q", [space.start, space.start + 4096])
    out: array.array[int] = space.find_many(addrs)
    into = space.find_many(addrs, array.array("Q", bytes(16)))
    return out if len(out) == len(into) else into


def kernel_model() -> int:
    space = VmapSpace(0xffffc90000000000, 0xffffe90000000000, nr_nodes=16, kernel="6.9",
                      search="lowest", auto_purge=False)
    addr, source = space.predict(5 * 4096, 4 * 4096, cpu=3)
    got = space.alloc(5 * 4096, 4 * 4096, cpu=3)
    assert source in ("pool", "free") and addr == got
    state, area, node = space.locate(got)
    assert state == "busy" and area is not None and node is not None
    return space.alloc_at(got + 8 * 4096, 4096)


def oracle() -> ReferenceSpace:
    ref = ReferenceSpace.from_vmallocinfo(
        "0xffffc90000000000-0xffffc90000002000    8192 f+0x0/0x10 pages=1 vmalloc\n")
    same: ReferenceSpace = copy.deepcopy(ref)
    return same


def main() -> None:
    space = build("optimistic")
    st: CoreStats = space.stats()
    print(biggest_hole(st), st["lock_acquisitions"], len(lookups(space)))
    again: VmapSpace = pickle.loads(pickle.dumps(space))
    again.check()
    loaded: VmapSpace = VmapSpace.from_vmallocinfo(again.vmallocinfo())
    print(biggest_hole(oracle().stats()), len(loaded), kernel_model())


if __name__ == "__main__":
    main()

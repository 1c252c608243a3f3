"""Type stub of the Cython core (vmap_core._space)."""

import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, SupportsIndex

from ._errors import VmapExhausted as VmapExhausted

ADDR_LIMIT: int
MISS: int
LOCK_MODES: tuple[str, ...]

LockMode = Literal["node", "global", "rwlock", "optimistic", "split"]

class VmapArea:
    def __init__(self, start: SupportsIndex, end: SupportsIndex) -> None: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def size(self) -> int: ...
    def __iter__(self) -> Iterator[int]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class VmapSpace:
    start: int
    end: int
    page_size: int
    nr_nodes: int
    zone_size: int
    lock: LockMode
    lazy_max_pages: int
    on_purge: Callable[[int, int], object] | None
    kernel: str
    search: Literal["kernel", "lowest"]
    auto_purge: bool
    load_notes: list[str]
    def __init__(
        self,
        start: SupportsIndex,
        end: SupportsIndex,
        *,
        page_size: SupportsIndex = 4096,
        nr_nodes: SupportsIndex | None = None,
        zone_size: SupportsIndex | None = None,
        lock: LockMode | None = None,
        lazy_max_pages: SupportsIndex | None = None,
        on_purge: Callable[[int, int], object] | None = None,
        kernel: str | None = None,
        search: Literal["kernel", "lowest"] | None = None,
        auto_purge: bool = True,
        trace: Any = None,
    ) -> None: ...
    @classmethod
    def from_vmallocinfo(cls, text_or_path: str | os.PathLike[str], **space_kwargs: Any) -> VmapSpace: ...
    def alloc(
        self,
        size: SupportsIndex,
        align: SupportsIndex | None = None,
        vstart: SupportsIndex | None = None,
        vend: SupportsIndex | None = None,
        *,
        cpu: SupportsIndex | None = None,
        caller: str | None = None,
    ) -> int: ...
    def predict(
        self,
        size: SupportsIndex,
        align: SupportsIndex | None = None,
        vstart: SupportsIndex | None = None,
        vend: SupportsIndex | None = None,
        *,
        cpu: SupportsIndex | None = None,
    ) -> tuple[int | None, str]: ...
    def alloc_at(
        self,
        addr: SupportsIndex,
        size: SupportsIndex,
        *,
        cpu: SupportsIndex | None = None,
        caller: str | None = None,
    ) -> int: ...
    def free_lazy(self, addr: SupportsIndex) -> VmapArea: ...
    def purge(self, full: bool = False) -> int: ...
    def drain_pools(self) -> int: ...
    def areas(self, from_addr: SupportsIndex = 0) -> Iterator[VmapArea]: ...
    def caller_of(self, addr: SupportsIndex) -> str | None: ...
    def lazy_areas(self) -> list[VmapArea]: ...
    def pooled_areas(self) -> list[tuple[VmapArea, int]]: ...
    def vmallocinfo(self) -> str: ...
    def find(self, addr: SupportsIndex) -> VmapArea | None: ...
    def free(self, addr: SupportsIndex) -> VmapArea: ...
    def find_many(self, addrs: Any, out: Any = None) -> Any: ...
    def check_copy(self, addr: SupportsIndex, n: SupportsIndex) -> None: ...
    def node_of(self, addr: SupportsIndex) -> int: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[VmapArea]: ...
    def free_areas(self) -> list[VmapArea]: ...
    def check(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def _debug_corrupt(self, kind: str) -> None: ...
    def _free_tree_shape(self) -> list[tuple[int, int, str, int]]: ...

def default_nr_nodes() -> int: ...
def usercopy_cell(
    mode: str,
    threads: int,
    *,
    buffers: int = 1000,
    buffer_size: int = 65536,
    copy_size: int = 1024,
    seconds: float = 1.0,
    churn_us: int = 100,
    work_ns: int = 0,
    nr_nodes: int | None = None,
) -> dict[str, Any]: ...
def stress_native(
    space: VmapSpace, threads: int, ops: int, seed: int = 1, max_owned: int = 256
) -> dict[str, Any]: ...

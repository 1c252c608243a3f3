"""The scenarios of Linux ``lib/test_vmalloc.c`` over a vmap space.

The kernel's test module (Uladzislau Rezki, 2018; read here in its 2025 form:
``nr_threads``, ``vm_map_ram_test``, ``run_test_mask`` 7 by default, and
``align_shift_alloc_test`` counted as *xfailed*) stresses vmalloc with
eleven scenarios, selected by ``run_test_mask`` and run by
``nr_threads`` kernel threads, each in its own shuffled order.  This module runs
the same scenarios, with the same sizes, alignments, counts and random draws
(:class:`KernelRandom`), against a :class:`vmap_core.VmapSpace` (or
:class:`vmap_core.reference.ReferenceSpace`) laid out like x86-64's vmalloc range.
Two drivers run them (:mod:`vmap_core.kernel.driver`): native threads without
the GIL (``_tvmalloc.pxi``, the same scenarios in C, held to these by the tests),
and Python threads sharing one space.

What a scenario calls, and what that is here (see :class:`Vmalloc`):

* ``vmalloc(size)`` / ``__vmalloc_node(size, align)``: ``__vmalloc_node_range``
  rounds the size up to pages and adds one guard page (no ``VM_NO_GUARD``),
  then ``alloc_vmap_area(size, align)`` over the whole range; here
  ``space.alloc(size + PAGE_SIZE, align)`` (``vmalloc`` passes ``align = 1``).
  ``vmalloc_huge`` (``use_huge``) rounds a size of 2 MiB or more up to, and
  aligns it on, ``PMD_SIZE``.  A failed allocation (:class:`VmapExhausted`) is
  the kernel's ``NULL``.
* ``vfree(addr)``: lazy in the kernel (``free_vmap_area_noflush``); here
  ``space.free_lazy(addr)`` when the space has it, else ``space.free(addr)``.
  The runner purges at the end (``purge(full=True)`` and ``drain_pools()``
  where the space has them) so that ``check()`` sees everything returned.
* Pages are never allocated, mapped or touched: the writes of the scenarios
  (``*((__u8 *)p) = 1``) have nothing to write to.

Scenarios, by ``run_test_mask`` bit (``SCENARIOS``):

====  ==================================  =======================================
bit   kernel scenario                      here
====  ==================================  =======================================
1     fix_size_alloc_test                  as the kernel (``nr_pages``, ``use_huge``)
2     full_fit_alloc_test                  as the kernel
4     long_busy_list_alloc_test            as the kernel
8     random_size_alloc_test               as the kernel
16    fix_align_alloc_test                 as the kernel (x86-64 ``THREAD_ALIGN``)
32    random_size_align_alloc_test         as the kernel
64    align_shift_alloc_test               as the kernel; supposed to fail
128   pcpu_alloc_test                      model of the percpu chunks it uses
256   kvfree_rcu_1_arg_vmalloc_test        model of kvfree_rcu's batched frees
512   kvfree_rcu_2_arg_vmalloc_test        same model as bit 256
1024  vm_map_ram_test                      model of vmap blocks; pages skipped
====  ==================================  =======================================

Every scenario frees what it allocated before it returns, also where the
kernel leaves it to a later grace period (kvfree_rcu) or keeps a partly used
vmap block for later (vm_map_ram).  Scenarios of other kernel versions that
never reach vmalloc (``kvfree_rcu_{1,2}_arg_slab_test``: kmalloc) are left out.

The module's parameters are in :class:`Params`, with the kernel's defaults
(the Python driver divides ``test_loop_count`` by ten: ``DEFAULT_TEST_LOOP_COUNT``);
the driver, its presets and its reports are in :mod:`vmap_core.kernel.driver`.
"""

from __future__ import annotations

import dataclasses
import os

from .._errors import VmapExhausted

# -- the kernel's constants (x86-64, 4 KiB pages, 4-level paging) ----------------

PAGE_SIZE = 4096
VMALLOC_START = 0xFFFFC90000000000      # arch/x86/include/asm/pgtable_64_types.h
VMALLOC_SIZE = 32 << 40                 # VMALLOC_SIZE_TB = 32 (4-level paging)
VMALLOC_END = VMALLOC_START + VMALLOC_SIZE   # exclusive (the kernel's is inclusive)
THREAD_SIZE_PAGES = 4                   # x86-64 THREAD_SIZE_ORDER 2 (no KASAN)
PMD_SIZE = 2 << 20                      # vmalloc_huge's mapping size, pcpu atom size
BITS_PER_LONG = 64
INT_MAX = (1 << 31) - 1
USHRT_MAX = (1 << 16) - 1
SIZEOF_PTR = 8

# vm_map_ram(): counts up to VMAP_MAX_ALLOC pages come from per-CPU vmap blocks of
# VMAP_BBMAP_BITS pages (min(1024, max(128, VMALLOC pages / NR_CPUS / 16)) = 1024).
VMAP_MAX_ALLOC = BITS_PER_LONG
VMAP_BBMAP_BITS = 1024
# kvfree_rcu(): one bulk page holds (PAGE_SIZE - 40) / 8 pointers on 64-bit.
KVFREE_BULK_MAX_ENTRIES = (PAGE_SIZE - 40) // SIZEOF_PTR
# percpu: x86-64 boot logs commonly show "u262144" (256 KiB units), atom PMD_SIZE.
PCPU_UNIT_SIZE = 256 << 10

LONG_BUSY_LIST_AREAS = 15000            # long_busy_list_alloc_test
PCPU_OBJECTS = 35000                    # pcpu_alloc_test

KERNEL_TEST_LOOP_COUNT = 1_000_000
#: test_loop_count of the Python driver by default: the kernel's 1,000,000
#: divided by 10.  Every loop is a Python loop around the calls (about 1.3 us an
#: alloc + lazy free with the core), so the kernel's count takes some 13 s per
#: lock mode; a tenth takes about 2 s each.  The native driver keeps the
#: kernel's count.  The fixed counts of the scenarios (15000, 35000,
#: fls(cpus) * 32 MiB / PAGE_SIZE, 64 shifts) are kept.
DEFAULT_TEST_LOOP_COUNT = KERNEL_TEST_LOOP_COUNT // 10
#: run_test_mask by default: the first three tests, "expected to pass cleanly"
#: (lib/test_vmalloc.c since 2025; INT_MAX, all of them, before).
KERNEL_RUN_TEST_MASK = 7


def fls(x: int) -> int:
    """The kernel's fls(): the 1-based index of the highest set bit, 0 for 0."""
    return x.bit_length()


def get_order(size: int, page_size: int = PAGE_SIZE) -> int:
    """The kernel's get_order(): the smallest order with page_size << order >= size."""
    return max(0, ((size - 1) // page_size).bit_length())


def _round_up(x: int, a: int) -> int:
    return -(-x // a) * a


_M64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """splitmix64's finalizer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class KernelRandom:
    """The kernel's get_random_u8(), get_random_u32(), get_random_u32_below()
    and get_random_u32_inclusive() as the scenarios call them, over one
    splitmix64 stream.  The native workers (_tvmalloc.pxi) draw from the same
    generator, so a scenario makes the same draws in both drivers; ``state``
    is all there is to it.  get_random_u32_below() is the kernel's
    multiply-and-shift with rejection."""

    __slots__ = ("state",)

    def __init__(self, state: int):
        self.state = state & _M64

    @classmethod
    def for_worker(cls, seed: int, index: int) -> "KernelRandom":
        """Worker ``index``'s stream for a run's ``seed``."""
        return cls(_mix64((seed & _M64) ^ _mix64(index + 1)))

    def _next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _M64
        return _mix64(self.state)

    def get_random_u32(self) -> int:
        return self._next() >> 32

    def get_random_u8(self) -> int:
        return self._next() >> 56

    def get_random_u32_below(self, ceil: int) -> int:
        mult = ceil * self.get_random_u32()
        if mult & 0xFFFFFFFF < ceil:
            bound = ((1 << 32) - ceil) % ceil
            while mult & 0xFFFFFFFF < bound:
                mult = ceil * self.get_random_u32()
        return mult >> 32

    def get_random_u32_inclusive(self, lo: int, hi: int) -> int:
        return lo + self.get_random_u32_below(hi - lo + 1)


# -- the kernel calls, over a space --------------------------------------------

class Vmalloc:
    """vmalloc, __vmalloc_node, vfree and alloc_vmap_area as the scenarios use them.

    ``None`` is the kernel's NULL: a failed allocation, and ``vfree(None)`` is
    a no-op.  Frees are lazy where the space has ``free_lazy``.
    """

    __slots__ = ("space", "page", "_alloc", "_vfree")

    def __init__(self, space):
        self.space = space
        self.page = space.page_size
        self._alloc = space.alloc
        self._vfree = getattr(space, "free_lazy", None) or space.free

    def vmalloc_node(self, size: int, align: int, *, huge: bool = False):
        """__vmalloc_node_range(): page-rounded size plus a guard page."""
        shift_size = self.page
        if huge and size >= PMD_SIZE:          # VM_ALLOW_HUGE_VMAP, one NUMA node
            shift_size = PMD_SIZE
            align = max(align, PMD_SIZE)
        size = _round_up(_round_up(size, self.page), shift_size) + self.page
        try:
            return self._alloc(size, align)
        except VmapExhausted:
            return None

    def vmalloc(self, size: int):
        return self.vmalloc_node(size, 1)

    def vmalloc_huge(self, size: int):
        return self.vmalloc_node(size, 1, huge=True)

    def vfree(self, addr) -> None:
        if addr is not None:
            self._vfree(addr)

    def alloc_vmap_area(self, size: int, align: int):
        """alloc_vmap_area() without a guard page (vm_map_ram, vmap blocks, percpu)."""
        try:
            return self._alloc(size, align)
        except VmapExhausted:
            return None

    # free_vmap_area_noflush(): the same lazy free as vfree's
    free_vmap_area = vfree


@dataclasses.dataclass(frozen=True)
class Params:
    """The module parameters of lib/test_vmalloc.c (and the CPU count it reads).

    Values are taken as given; :meth:`effective` applies the module's own
    clamping (``init_test_configuration``).
    """

    run_test_mask: int = KERNEL_RUN_TEST_MASK
    nr_threads: int = 0                 # the kernel's default; clamped to 1
    test_loop_count: int = DEFAULT_TEST_LOOP_COUNT
    test_repeat_count: int = 1
    sequential_test_order: bool = False
    nr_pages: int = 0                   # 0: one page (fix_size, vm_map_ram)
    use_huge: bool = False
    online_cpus: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    def effective(self) -> "Params":
        """nr_threads clamped to 1..USHRT_MAX; loop and repeat counts at least 1."""
        return dataclasses.replace(
            self,
            nr_threads=min(max(self.nr_threads, 1), USHRT_MAX),
            test_loop_count=max(self.test_loop_count, 1),
            test_repeat_count=max(self.test_repeat_count, 1),
            online_cpus=max(self.online_cpus, 1))

    @property
    def map_nr_pages(self) -> int:
        return self.nr_pages if self.nr_pages > 0 else 1


# -- the scenarios ---------------------------------------------------------------
# Each takes (space, rng, params) and returns True when the kernel's would return 0.

def fix_size_alloc_test(space, rng, params) -> bool:
    """vmalloc(nr_pages pages, default 1) and vfree it, test_loop_count times."""
    vm = Vmalloc(space)
    size = params.map_nr_pages * vm.page
    for _ in range(params.test_loop_count):
        ptr = vm.vmalloc_huge(size) if params.use_huge else vm.vmalloc(size)
        if ptr is None:
            return False
        vm.vfree(ptr)
    return True


def full_fit_alloc_test(space, rng, params) -> bool:
    """Interleave fls(cpus) * 32 MiB / PAGE_SIZE pairs of single pages, free one
    of each pair, then vmalloc/vfree one page into the holes."""
    vm = Vmalloc(space)
    junk_length = fls(params.online_cpus) * (32 * 1024 * 1024 // vm.page)
    ptr = vm.vmalloc(SIZEOF_PTR * junk_length)
    if ptr is None:
        return False
    junk = vm.vmalloc(SIZEOF_PTR * junk_length)
    if junk is None:
        vm.vfree(ptr)
        return False
    ptrs, junk_ptrs = [], []
    for _ in range(junk_length):
        ptrs.append(vm.vmalloc(vm.page))
        junk_ptrs.append(vm.vmalloc(vm.page))
    for p in junk_ptrs:
        vm.vfree(p)
    rv = True
    for _ in range(params.test_loop_count):
        tmp = vm.vmalloc(vm.page)
        if tmp is None:
            rv = False
            break
        vm.vfree(tmp)
    for p in ptrs:
        vm.vfree(p)
    vm.vfree(ptr)
    vm.vfree(junk)
    return rv


def long_busy_list_alloc_test(space, rng, params) -> bool:
    """Keep 15000 single pages busy while vmalloc/vfree-ing 100 pages and 1 page."""
    vm = Vmalloc(space)
    ptr = vm.vmalloc(SIZEOF_PTR * LONG_BUSY_LIST_AREAS)
    if ptr is None:
        return False
    busy = [vm.vmalloc(vm.page) for _ in range(LONG_BUSY_LIST_AREAS)]
    rv = True
    for _ in range(params.test_loop_count):
        ptr_1 = vm.vmalloc(100 * vm.page)
        if ptr_1 is None:
            rv = False
            break
        ptr_2 = vm.vmalloc(vm.page)
        if ptr_2 is None:
            vm.vfree(ptr_1)
            rv = False
            break
        vm.vfree(ptr_1)
        vm.vfree(ptr_2)
    for p in busy:
        vm.vfree(p)
    vm.vfree(ptr)
    return rv


def random_size_alloc_test(space, rng, params) -> bool:
    """vmalloc/vfree of 1..100 pages (uniform), test_loop_count times."""
    vm = Vmalloc(space)
    for _ in range(params.test_loop_count):
        p = vm.vmalloc(rng.get_random_u32_inclusive(1, 100) * vm.page)
        if p is None:
            return False
        vm.vfree(p)
    return True


def fix_align_alloc_test(space, rng, params) -> bool:
    """__vmalloc_node(5 pages, THREAD_ALIGN << 1) and vfree, test_loop_count times."""
    vm = Vmalloc(space)
    align = (THREAD_SIZE_PAGES * vm.page) << 1
    for _ in range(params.test_loop_count):
        ptr = vm.vmalloc_node(5 * vm.page, align)
        if ptr is None:
            return False
        vm.vfree(ptr)
    return True


def random_size_align_alloc_test(space, rng, params) -> bool:
    """One random byte r: align 1 << (r % 23), size (r % 10 + 1) pages."""
    vm = Vmalloc(space)
    for _ in range(params.test_loop_count):
        rnd = rng.get_random_u8()
        ptr = vm.vmalloc_node((rnd % 10 + 1) * vm.page, 1 << (rnd % 23))
        if ptr is None:
            return False
        vm.vfree(ptr)
    return True


def align_shift_alloc_test(space, rng, params) -> bool:
    """One page aligned on 1 << i for i in 0..63: "supposed to be failed" (the
    kernel's comment): no 32 TiB range holds an address aligned on 2**63."""
    vm = Vmalloc(space)
    for i in range(BITS_PER_LONG):
        ptr = vm.vmalloc_node(vm.page, 1 << i)
        if ptr is None:
            return False
        vm.vfree(ptr)
    return True


class _PcpuChunks:
    """The part of the percpu allocator that reaches vmalloc, for one thread.

    A chunk is one area of PCPU_UNIT_SIZE per unit (units: the space's nodes,
    the possible CPUs), PMD_SIZE-aligned (pcpu_get_vm_areas with the atom size).
    Objects are placed in the current chunk's unit offsets in order (first fit
    and bump placement agree while nothing is freed); a chunk whose last object
    is freed goes back with a lazy free (pcpu_free_vm_areas).  Simplified: the
    kernel's chunks are shared by all CPUs, placed top-down, and an empty one
    is kept for later.
    """

    def __init__(self, vm: Vmalloc):
        self.vm = vm
        self.chunk_size = PCPU_UNIT_SIZE * vm.space.nr_nodes
        self.live: dict[int, int] = {}      # chunk address -> objects in it
        self.current = None
        self.top = 0

    def alloc(self, size: int, align: int):
        off = _round_up(self.top, align)
        if self.current is None or off + size > PCPU_UNIT_SIZE:
            chunk = self.vm.alloc_vmap_area(self.chunk_size, PMD_SIZE)
            if chunk is None:
                return None
            self._retire()
            self.current, self.live[chunk], off = chunk, 0, 0
        self.top = off + size
        self.live[self.current] += 1
        return (self.current, off)

    def free(self, obj) -> None:
        if obj is None:
            return
        chunk = obj[0]
        self.live[chunk] -= 1
        if self.live[chunk] == 0 and chunk != self.current:
            del self.live[chunk]
            self.vm.free_vmap_area(chunk)

    def _retire(self) -> None:
        cur, self.current = self.current, None
        if cur is not None and self.live[cur] == 0:
            del self.live[cur]
            self.vm.free_vmap_area(cur)

    def release(self) -> None:
        """Free the last, now empty, chunk (pcpu_balance_free)."""
        self._retire()
        assert not self.live, "percpu objects still live"


def pcpu_alloc_test(space, rng, params) -> bool:
    """35000 __alloc_percpu(1..PAGE_SIZE/4 bytes, align 2**1..2**11), then free.

    The objects are sub-page; what the space sees are the percpu chunks that
    hold them (see :class:`_PcpuChunks`): about a hundred chunk areas with a
    PMD_SIZE alignment, plus the vmalloc'ed array of 35000 pointers.
    """
    vm = Vmalloc(space)
    pcpu = vm.vmalloc(SIZEOF_PTR * PCPU_OBJECTS)
    if pcpu is None:
        return False
    chunks = _PcpuChunks(vm)
    rv, objs = True, []
    for _ in range(PCPU_OBJECTS):
        size = rng.get_random_u32_inclusive(1, vm.page // 4)
        align = 1 << rng.get_random_u32_inclusive(1, 11)
        obj = chunks.alloc(size, align)
        if obj is None:
            rv = False
        objs.append(obj)
    for obj in objs:
        chunks.free(obj)
    chunks.release()
    vm.vfree(pcpu)
    return rv


def _kvfree_rcu_vmalloc_test(space, rng, params) -> bool:
    vm = Vmalloc(space)
    pending = []
    rv = True
    for _ in range(params.test_loop_count):
        p = vm.vmalloc(vm.page)
        if p is None:
            rv = False
            break
        pending.append(p)                        # kvfree_rcu(p)
        if len(pending) == KVFREE_BULK_MAX_ENTRIES:
            for q in pending:                    # a grace period later: kvfree
                vm.vfree(q)
            pending.clear()
    for q in pending:                            # rcu_barrier()
        vm.vfree(q)
    return rv


def kvfree_rcu_1_arg_vmalloc_test(space, rng, params) -> bool:
    """vmalloc(1 page) then kvfree_rcu_mightsleep(p), test_loop_count times.

    The frees are deferred: pointers gather in a bulk page of
    KVFREE_BULK_MAX_ENTRIES and the page is vfree'd in one go once full (its
    grace period); what is left is freed at the end (rcu_barrier).  The
    one- and two-argument forms differ in where the pointer is queued, not in
    what vmalloc sees, so both are this model.
    """
    return _kvfree_rcu_vmalloc_test(space, rng, params)


def kvfree_rcu_2_arg_vmalloc_test(space, rng, params) -> bool:
    """vmalloc(1 page) then kvfree_rcu(p, rcu): the model of bit 256."""
    return _kvfree_rcu_vmalloc_test(space, rng, params)


class _VmapBlock:
    __slots__ = ("va", "free", "dirty")

    def __init__(self, va: int, free: int):
        self.va, self.free, self.dirty = va, free, 0


class _VmapBlocks:
    """vb_alloc()/vb_free() for one CPU: blocks of VMAP_BBMAP_BITS pages.

    A block is an area of VMAP_BLOCK_SIZE aligned on its size; allocations of
    2**order pages are taken in order from its free part; freed pages turn
    dirty, and a block all dirty goes back with a lazy free (free_vmap_block).
    """

    def __init__(self, vm: Vmalloc):
        self.vm = vm
        self.block_size = VMAP_BBMAP_BITS * vm.page
        self.free_list: list[_VmapBlock] = []
        self.blocks: dict[int, _VmapBlock] = {}

    def alloc(self, nr: int):
        need = 1 << get_order(nr * self.vm.page, self.vm.page)
        for vb in self.free_list:
            if vb.free < need:
                continue
            off = VMAP_BBMAP_BITS - vb.free
            vb.free -= need
            if vb.free == 0:
                self.free_list.remove(vb)
            return vb.va + off * self.vm.page
        va = self.vm.alloc_vmap_area(self.block_size, self.block_size)   # new_vmap_block
        if va is None:
            return None
        vb = _VmapBlock(va, VMAP_BBMAP_BITS - need)
        self.blocks[va // self.block_size] = vb
        if vb.free:
            self.free_list.append(vb)
        return va

    def free(self, addr: int, nr: int) -> None:
        vb = self.blocks[addr // self.block_size]
        vb.dirty += 1 << get_order(nr * self.vm.page, self.vm.page)
        if vb.dirty == VMAP_BBMAP_BITS:
            del self.blocks[vb.va // self.block_size]
            self.vm.free_vmap_area(vb.va)

    def purge_fragmented(self) -> None:
        """vm_unmap_aliases(): free blocks whose pages are all free or dirty."""
        for vb in list(self.free_list):
            if vb.free + vb.dirty == VMAP_BBMAP_BITS and vb.dirty != VMAP_BBMAP_BITS:
                self.free_list.remove(vb)
                del self.blocks[vb.va // self.block_size]
                self.vm.free_vmap_area(vb.va)
        assert not self.blocks, "vmap blocks still in use"


def vm_map_ram_test(space, rng, params) -> bool:
    """vm_map_ram(nr_pages) and vm_unmap_ram, test_loop_count times.

    The address side only: alloc_pages_bulk and the mapping of real pages are
    skipped.  Up to VMAP_MAX_ALLOC pages come from the thread's vmap blocks
    (:class:`_VmapBlocks`), more from alloc_vmap_area(size, PAGE_SIZE) with no
    guard page.  At the end the partly used block is purged as
    vm_unmap_aliases() would, where the kernel keeps it for later use.
    """
    vm = Vmalloc(space)
    nr = params.map_nr_pages
    rv = True
    if nr <= VMAP_MAX_ALLOC:
        blocks = _VmapBlocks(vm)
        for _ in range(params.test_loop_count):
            v_ptr = blocks.alloc(nr)
            if v_ptr is None:                   # the kernel would oops on *v_ptr
                rv = False
                break
            blocks.free(v_ptr, nr)
        blocks.purge_fragmented()
    else:
        for _ in range(params.test_loop_count):
            v_ptr = vm.alloc_vmap_area(nr * vm.page, vm.page)
            if v_ptr is None:
                rv = False
                break
            vm.free_vmap_area(v_ptr)
    return rv


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    func: object
    #: align_shift_alloc_test: "This test case is supposed to be failed."
    supposed_to_fail: bool = False

    def __call__(self, space, rng, params) -> bool:
        return bool(self.func(space, rng, params))


#: test_case_array[]: bit i of run_test_mask selects SCENARIOS[i].
SCENARIOS = (
    Scenario("fix_size_alloc_test", fix_size_alloc_test),
    Scenario("full_fit_alloc_test", full_fit_alloc_test),
    Scenario("long_busy_list_alloc_test", long_busy_list_alloc_test),
    Scenario("random_size_alloc_test", random_size_alloc_test),
    Scenario("fix_align_alloc_test", fix_align_alloc_test),
    Scenario("random_size_align_alloc_test", random_size_align_alloc_test),
    Scenario("align_shift_alloc_test", align_shift_alloc_test, supposed_to_fail=True),
    Scenario("pcpu_alloc_test", pcpu_alloc_test),
    Scenario("kvfree_rcu_1_arg_vmalloc_test", kvfree_rcu_1_arg_vmalloc_test),
    Scenario("kvfree_rcu_2_arg_vmalloc_test", kvfree_rcu_2_arg_vmalloc_test),
    Scenario("vm_map_ram_test", vm_map_ram_test),
)
ALL_TESTS_MASK = (1 << len(SCENARIOS)) - 1


def selected(run_test_mask: int) -> list[int]:
    """Indices of the scenarios run_test_mask selects (bit i: SCENARIOS[i])."""
    return [i for i in range(len(SCENARIOS)) if (run_test_mask >> i) & 1]


def shuffle_array(arr: list, rng: KernelRandom) -> None:
    """The module's shuffle_array(): j drawn below i, so every element moves."""
    for i in range(len(arr) - 1, 0, -1):
        j = rng.get_random_u32_below(i)
        arr[i], arr[j] = arr[j], arr[i]


__all__ = ["KernelRandom", "Params", "Scenario", "SCENARIOS", "ALL_TESTS_MASK", "Vmalloc",
           "selected", "shuffle_array", "fls", "get_order", "VMALLOC_START", "VMALLOC_END",
           "PAGE_SIZE", "DEFAULT_TEST_LOOP_COUNT", "KERNEL_TEST_LOOP_COUNT",
           "KERNEL_RUN_TEST_MASK"] + [s.name for s in SCENARIOS]

"""vmap_core.kernel.vmallocinfo: parsing real-looking dumps, hidden addresses, load()."""

from __future__ import annotations

import hashlib
import re

import pytest

from vmap_core.kernel import vmallocinfo as vi

# As root reads it with kptr_restrict=1 (real addresses), v6.9+ order: node by
# node, then the unpurged areas.  Sizes include the guard page.
SAMPLE = """\
0xffffc90000000000-0xffffc90000005000   20480 irq_init_percpu_irqstack+0xca/0x100 vmap
0xffffc90000005000-0xffffc90000007000    8192 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x00000000000a0000 ioremap
0xffffc9000000c000-0xffffc90000011000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4
0xffffc90000011000-0xffffc90000013000    8192 vp_modern_map_capability+0x12d/0x1c0 phys=0x0000004000000000 ioremap
0xffffc90000020000-0xffffc90000041000  135168 alloc_large_system_hash+0x19f/0x2a0 pages=32 vmalloc vpages N0=32
0xffffc90000041000-0xffffc90000045000   16384 vm_map_ram
0xffffc90000060000-0xffffc90000062000    8192 nf_tables_newset+0x49b/0xa80 [nf_tables] pages=1 vmalloc N1=1
0xffffe8ffffc00000-0xffffe8ffffe01000 2101248 pcpu_get_vm_areas+0x0/0x1050 vmalloc
0xffffc90000008000-0xffffc9000000b000   12288 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x000000000009f000 ioremap
0xffffc90000014000-0xffffc90000019000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=2 N1=2
0xffffc90000050000-0xffffc90000055000   20480 bpf_prog_alloc_no_stats+0x3f/0x1d0 pages=4 vmalloc user N0=4
0xffffc90000070000-0xffffc90000079000   36864 pcpu_create_chunk+0x56/0x230 pages=8 vmalloc N0=8
0xffffc90000100000-0xffffc90000121000  135168 dma_direct_alloc+0x1f2/0x2c0 pages=32 vmap dma-coherent
0xffffc90000080000-0xffffc90000085000   20480 unpurged vm_area
0xffffc90000085000-0xffffc9000008a000   20480 unpurged vm_area
"""

_ADDR = re.compile(r"0x([0-9a-f]{16})")


def hashed(text: str) -> str:
    """The dump as kptr_restrict=0 prints it: each address a 32-bit hashed id."""
    def h(m):
        v = int.from_bytes(hashlib.sha256(m[1].encode()).digest()[:4], "little")
        return f"0x{v:016x}"
    return _ADDR.sub(h, text)


def zeroed(text: str) -> str:
    """The dump as an unprivileged reader sees it under kptr_restrict=1 (or 2)."""
    return _ADDR.sub("0x0000000000000000", text)


def busy_spans(text):
    return sorted((e.start, e.start + e.size) for e in vi.parse(text) if e.busy)


# -- parse -----------------------------------------------------------------------

def test_parse_fields():
    dump = vi.parse(SAMPLE)
    assert len(dump) == 15 and dump.skipped == []
    e = dump.entries
    assert (e[0].start, e[0].end, e[0].size) == (0xffffc90000000000, 0xffffc90000005000, 20480)
    assert e[0].caller == "irq_init_percpu_irqstack+0xca/0x100" and e[0].flags == ("vmap",)
    assert e[1].phys == 0xa0000 and e[1].flags == ("ioremap",)
    assert e[4].pages == 32 and e[4].flags == ("vmalloc", "vpages") and e[4].nodes == {0: 32}
    assert e[5].caller is None and e[5].flags == ("vm_map_ram",) and e[5].busy
    assert e[6].caller == "nf_tables_newset+0x49b/0xa80 [nf_tables]"
    assert e[9].nodes == {0: 2, 1: 2}
    assert e[12].flags == ("vmap", "dma-coherent")
    assert e[13].unpurged and not e[13].busy and e[13].caller is None
    assert [x.lineno for x in e[:3]] == [1, 2, 3]


def test_parse_is_liberal_and_counts_skipped():
    text = "garbage line\n\n" + SAMPLE.replace("\n", "\r\n", 2) + "  0xABC000-0xABD000 4096\n"
    dump = vi.parse(text)
    assert len(dump) == 16
    assert dump.skipped == [(1, "garbage line")]
    last = dump.entries[-1]
    assert (last.start, last.size, last.caller, last.flags) == (0xabc000, 4096, None, ())


# -- hidden addresses ----------------------------------------------------------------

def test_detect():
    assert vi.detect(vi.parse(SAMPLE).entries) == ("real", [])
    kind, why = vi.detect(vi.parse(hashed(SAMPLE)).entries)
    assert kind == "hashed" and any("page aligned" in w for w in why)
    assert vi.detect(vi.parse(zeroed(SAMPLE)).entries)[0] == "zeroed"
    # page aligned and sized right, but overlapping: not the real addresses either
    over = ("0xffffc90000000000-0xffffc90000002000 8192 a+0x1/0x2 vmalloc\n"
            "0xffffc90000001000-0xffffc90000003000 8192 b+0x1/0x2 vmalloc\n")
    kind, why = vi.detect(vi.parse(over).entries)
    assert kind == "hashed" and why == ["1 overlapping"]


def test_chains_follow_equal_hashes():
    entries = vi.parse(hashed(SAMPLE)).entries
    runs = vi.chains(entries)
    assert sorted(i for r in runs for i in r) == list(range(len(entries)))
    assert [0, 1] in runs and [2, 3] in runs and [4, 5] in runs and [13, 14] in runs
    assert vi.chains(vi.parse(zeroed(SAMPLE)).entries) == [[i] for i in range(15)]


@pytest.mark.parametrize("variant", [hashed, zeroed])
def test_relaid_keeps_sizes_order_and_known_gaps(impl, variant):
    space, notes = vi.load(variant(SAMPLE), cls=impl, nr_nodes=4)
    space.check()
    entries = vi.parse(SAMPLE).entries
    busy = [e for e in entries if e.busy]
    got = list(space)
    assert sorted(a.size for a in got) == sorted(e.size for e in busy)
    assert space.start == vi.KERNEL_RANGE[0] and space.end == vi.KERNEL_RANGE[1]
    assert any(("hashed" if variant is hashed else "hidden") in n for n in notes)
    assert any("2 unpurged" in n for n in notes)
    starts = sorted(a.start for a in got)
    if variant is hashed:           # irq stack, then the ioremap right above it
        assert got[0].size == 20480 and got[1].start == got[0].end and got[1].size == 8192
    else:                           # dump order, one page between unknown neighbours
        assert [a.size for a in got] == [e.size for e in busy]
        assert all(b - a.end == 4096 for a, b in zip(got, starts[1:]))
    if hasattr(space, "caller_of"):
        assert space.caller_of(got[0].start) == "irq_init_percpu_irqstack+0xca/0x100"


# -- load --------------------------------------------------------------------------

def test_load_round_trip(impl, tmp_path):
    path = tmp_path / "vmallocinfo"
    path.write_text(SAMPLE)
    for src in (SAMPLE, path, str(path)):
        space, notes = vi.load(src, cls=impl, nr_nodes=2)
        space.check()
        assert [(a.start, a.end) for a in space] == busy_spans(SAMPLE)
        assert (space.start, space.end) == vi.KERNEL_RANGE
        assert notes[0].startswith("13 busy areas from ")
        assert "2 unpurged (lazily freed) areas kept as lazy areas" in notes
        assert not any("hashed" in n for n in notes)
    if hasattr(space, "caller_of"):
        for e in vi.parse(SAMPLE):
            if e.busy:
                assert space.caller_of(e.start) == e.caller
    if hasattr(space, "vmallocinfo"):   # our own dump reads back the same areas
        again = vi.parse(space.vmallocinfo())
        assert busy_spans(space.vmallocinfo()) == busy_spans(SAMPLE)
        assert {(e.start, e.caller) for e in again if e.busy} == \
            {(e.start, e.caller) for e in vi.parse(SAMPLE) if e.busy}


def test_load_keeps_unpurged_as_lazy(impl):
    """Busy + lazy areas account for every line of a dump (the default)."""
    space = impl.from_vmallocinfo(SAMPLE, nr_nodes=2)
    space.check()
    entries = vi.parse(SAMPLE).entries
    assert [(a.start, a.end) for a in space.lazy_areas()] == \
        [(e.start, e.end) for e in entries if e.unpurged]
    assert len(space) + len(space.lazy_areas()) == len(entries)
    assert "2 unpurged (lazily freed) areas kept as lazy areas" in space.load_notes
    assert space.auto_purge is False
    # and the dump we print reads back with the same busy and unpurged lines
    again = vi.parse(space.vmallocinfo()).entries
    assert sorted((e.start, e.end, e.unpurged) for e in again) == \
        sorted((e.start, e.end, e.unpurged) for e in entries)
    left, notes = vi.load(SAMPLE, cls=impl, keep_unpurged=False)
    assert left.lazy_areas() == [] and "2 unpurged (lazily freed) areas left free" in notes


def test_load_the_real_dump(impl):
    """The shared trace's dump: addresses hashed, 350 busy and 84 unpurged lines."""
    import pathlib
    path = pathlib.Path(__file__).parent / "data" / "vmallocinfo-before.txt"
    space = impl.from_vmallocinfo(path, nr_nodes=16)
    space.check()
    assert (len(space), len(space.lazy_areas())) == (350, 84)
    assert space.stats()["lazy_pages"] == 850


def test_vmallocinfo_lines_as_the_kernel_prints_them(impl):
    """pages= counts the pages without the guard page (vmalloc_info_show()),
    and is left out when there are none; an area without a caller is a
    vmalloc area with no caller, not vm_map_ram."""
    s = impl(0x100000, 0x200000, nr_nodes=1)
    a = s.alloc(5 * 4096, caller="kernel_clone+0x96/0x3f0")
    b = s.alloc(3 * 4096)
    c = s.alloc(4096, caller="x")
    lines = s.vmallocinfo().splitlines()
    assert lines[0] == f"0x{a:016x}-0x{a + 5 * 4096:016x}   20480 kernel_clone+0x96/0x3f0 " \
                       "pages=4 vmalloc"
    assert lines[1] == f"0x{b:016x}-0x{b + 3 * 4096:016x}   12288 pages=2 vmalloc"
    assert lines[2] == f"0x{c:016x}-0x{c + 4096:016x}    4096 x vmalloc"
    assert "vm_map_ram" not in s.vmallocinfo()


def test_load_outside_kernel_range_rounds_out(impl):
    text = SAMPLE + ("0xffffffffc0a00000-0xffffffffc0a0b000   45056 "
                     "load_module+0x1a2/0x2b0 pages=10 vmalloc N0=10\n")
    space, notes = vi.load(text, cls=impl)
    space.check()
    assert space.start == 0xffffc90000000000 and space.end == 0xffffffffc0c00000
    assert any("outside x86-64's vmalloc range" in n for n in notes)
    assert space.find(0xffffffffc0a00000 + 100).start == 0xffffffffc0a00000


def test_load_errors(impl, tmp_path):
    with pytest.raises(ValueError, match="no vmalloc areas"):
        vi.load("not a dump\nat all\n", cls=impl)
    with pytest.raises(OSError):
        vi.load(tmp_path / "missing", cls=impl)


def test_load_notes_skipped_lines(impl):
    space, notes = vi.load("hello\n" + SAMPLE, cls=impl)
    assert len(space) == 13
    assert any("1 lines not understood" in n and "line 1" in n for n in notes)

"""The reliability review's wrong-result and wrong-error repros
(shared/reviews/reliability-5c5c659.md), in process, for the core and the reference."""

from __future__ import annotations

import array
import ctypes
import mmap
import os
import threading

import pytest

from _util import P, VmapExhausted, busy, run_child
from vmap_core.kernel import vmallocinfo

np = pytest.importorskip("numpy")

BASE = 1 << 40


# -- W2 / C1: page counts of a 2**64-byte area ----------------------------------------

def test_w2_lazy_free_of_the_whole_space_purges(impl):
    """The lazy page count of an area of 2**64 one-byte pages no longer wraps to 0."""
    s = impl(0, 2**64, page_size=1, nr_nodes=1)
    s.free_lazy(s.alloc(2**64))
    st = s.stats()
    assert (st["purges"], st["lazy_pages"], s.lazy_areas()) == (1, 0, [])
    assert [(x.start, x.end) for x in s.free_areas()] == [(0, 2**64)]
    s.check()


# -- W3: the default cpu after fork -------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_w3_default_cpu_after_fork(impl):
    """In a forked child the default cpu is the child's own thread id."""
    def node_used():
        s = impl(BASE, 2 * BASE, nr_nodes=1024)
        s.free_lazy(s.alloc(P))
        s.purge()
        return s.pooled_areas()[0][1]

    assert node_used() == threading.get_native_id() % 1024     # fills the parent's cache
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:            # the child: report and leave at once, whatever happens
        try:
            os.write(w, f"{threading.get_native_id() % 1024} {node_used()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        want, got = f.read().split()
    os.waitpid(pid, 0)
    assert got == want


# -- W4: MemoryError after the change ---------------------------------------------------

def _has_set_nomemory():
    try:
        import _testcapi
    except ImportError:
        return False
    return hasattr(_testcapi, "set_nomemory")


@pytest.mark.skipif(not _has_set_nomemory(),
                    reason="this Python's _testcapi has no set_nomemory()")
@pytest.mark.parametrize("op", ["alloc", "alloc_pooled", "free", "free_lazy"])
def test_w4_memory_error_leaves_the_space_as_it_was(core, op):
    """alloc, free and free_lazy used to raise MemoryError after the change.
    (The core's promise: the reference, an oracle, is not hardened for it.)"""
    import _testcapi
    s = core(BASE, 2 * BASE, nr_nodes=2)
    keep = s.alloc(4 * P, caller="keep")
    if op == "alloc_pooled":
        s.free_lazy(s.alloc(2 * P, cpu=1))
        s.purge()
    before = (busy(s), s.free_areas(), s.lazy_areas(), s.pooled_areas(), s.vmallocinfo())
    calls = {"alloc": lambda: s.alloc(2 * P, caller="x" * 50, cpu=1),
             "alloc_pooled": lambda: s.alloc(2 * P, caller="y" * 50, cpu=1),
             "free": lambda: s.free(keep), "free_lazy": lambda: s.free_lazy(keep)}
    raised = 0
    for k in range(6):
        _testcapi.set_nomemory(k, k + 1)
        try:
            calls[op]()
        except MemoryError:
            raised += 1
            failed = True
        else:
            failed = False
        finally:
            _testcapi.remove_mem_hooks()
        if not failed:
            break
        assert (busy(s), s.free_areas(), s.lazy_areas(), s.pooled_areas(),
                s.vmallocinfo()) == before, k
        s.check()
    if op.startswith("alloc"):          # free() may take its result from a freelist
        assert raised, "no allocation of the call was failed"


# -- E1: find_many ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [None, np.zeros(2, dtype=[("a", "<u8")]),
                                 np.zeros(2, dtype=">u8"), np.zeros((2, 2), dtype=np.uint64),
                                 b"\0" * 16, "abcdefgh", 5])
def test_e1_find_many_refuses_what_is_not_a_uint64_vector(impl, bad):
    s = impl(BASE, 2 * BASE)
    with pytest.raises(TypeError):
        s.find_many(bad)
    if bad is not None:         # out=None is the default: a new buffer
        with pytest.raises(TypeError):
            s.find_many(array.array("Q", [0, 0]), out=bad)


def test_e1_find_many_returns_the_input_kind(impl):
    s = impl(BASE, 2 * BASE)
    a = s.alloc(2 * P)
    got = s.find_many(np.array([a, a + P, 0], dtype=np.uint64))
    assert isinstance(got, np.ndarray) and got.dtype == np.uint64
    assert got.tolist() == [a, a, 2**64 - 1]
    got = s.find_many(array.array("Q", [a + 1]))
    assert isinstance(got, array.array) and got.typecode == "Q" and list(got) == [a]
    got = s.find_many(memoryview(array.array("Q", [a])))
    assert isinstance(got, array.array) and list(got) == [a]


# -- E2: the dump loader's errors -----------------------------------------------------------------

def test_e2_zero_size_entry_at_another_entrys_address(impl):
    """Such a dump is not a real one: it is relaid, not refused with VmapExhausted."""
    s = impl.from_vmallocinfo("0xffffc90000000000-0xffffc90000000000 0 foo\n"
                              "0xffffc90000000000-0xffffc90000001000 4096 bar\n")
    assert len(s) == 2 and any("hashed" in n for n in s.load_notes)


def test_e2_unplaceable_area_is_a_value_error(impl):
    """Whatever the dump, the loader raises ValueError, never VmapExhausted."""
    dump = "0xffffc90000000000-0xffffc90000002000 8192 a\n" * 2
    with pytest.raises(ValueError) as e:
        vmallocinfo.load(dump, cls=impl, gap=2**64)
    assert not isinstance(e.value, VmapExhausted)


@pytest.mark.parametrize("bad", [5, None, 1.5, ["0x0-0x1000 4096 a"]])
def test_e2_not_text_nor_a_path_is_a_type_error(impl, bad):
    with pytest.raises(TypeError):
        impl.from_vmallocinfo(bad)


# -- H4: bounded reads -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_h4_refuses_what_is_not_a_regular_file(impl, path):
    """Run in a child whose address space may grow by at most 1 GiB once the
    package is imported: /dev/zero was read until memory ran out.  (Counted
    from what is mapped after the imports: a free-threaded CPython reserves
    about 1 GiB of address space for its allocator up front.)"""
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    cls = "VmapSpace" if impl.__name__ == "VmapSpace" else "ReferenceSpace"
    run_child(f"""
        import resource
        from vmap_core import VmapSpace
        from vmap_core.reference import ReferenceSpace
        with open("/proc/self/status") as f:
            mapped = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")][0]
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), mapped + (1 << 30)))
        try:
            {cls}.from_vmallocinfo({path!r})
        except ValueError as e:
            assert "not a vmallocinfo dump" in str(e), e
        else:
            raise AssertionError("accepted")
    """)


def test_h4_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    """In a child: opening a FIFO used to wait for a writer forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    run_child(f"""
        from vmap_core.kernel import vmallocinfo
        try:
            vmallocinfo.read({str(fifo)!r})
        except ValueError as e:
            assert "FIFO" in str(e), e
        else:
            raise AssertionError("accepted")
    """, timeout=20)


def test_h4_reads_at_most_max_bytes(tmp_path):
    dump = tmp_path / "big"
    line = "0xffffc90000000000-0xffffc90000001000    4096 a pages=1 vmalloc\n"
    dump.write_text(line * 100)
    assert vmallocinfo.read(dump, max_bytes=len(line) * 100)[0] == line * 100
    with pytest.raises(ValueError, match="larger than"):
        vmallocinfo.read(dump, max_bytes=len(line) * 100 - 1)
    assert vmallocinfo.MAX_DUMP_BYTES >= 16 << 20      # real dumps are a few MB


# -- E3: the reference's own errors ------------------------------------------------------------

def test_e3_find_many_on_ctypes_and_unaligned_buffers(impl):
    s = impl(BASE, 2 * BASE)
    a = s.alloc(P)
    addrs = (ctypes.c_uint64 * 3)(a, a + 1, 7)      # exported as "<Q"
    assert list(s.find_many(addrs)) == [a, a, 2**64 - 1]
    raw = np.zeros(3 * 8 + 1, dtype=np.uint8)
    out = raw[1:].view(np.uint64)                   # unaligned, exported as "=Q"
    assert s.find_many(array.array("Q", [a, 0, a + 5]), out=out) is out
    assert out.tolist() == [a, 2**64 - 1, a]
    out = (ctypes.c_uint64 * 3)()
    s.find_many(array.array("Q", [a, 0, a]), out=out)
    assert list(out) == [a, 2**64 - 1, a]
    strided = np.array([a, 0, a + 9, 0], dtype=np.uint64)[::2]
    assert s.find_many(strided).tolist() == [a, a]


def test_e3_areas_checks_its_argument_at_the_call(impl):
    s = impl(BASE, 2 * BASE)
    with pytest.raises(ValueError):
        s.areas(-1)
    with pytest.raises(TypeError):
        s.areas("0")


def test_e3_released_or_closed_buffers_raise_type_error(impl):
    s = impl(BASE, 2 * BASE)
    view = memoryview(array.array("Q", [1]))
    view.release()
    with pytest.raises(TypeError):
        s.find_many(view)
    m = mmap.mmap(-1, 8)
    m.close()
    with pytest.raises(TypeError):
        s.find_many(m)


# -- X: an uninitialised space ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["__repr__", "vmallocinfo", "stats", "__iter__", "free_areas",
                                    "lazy_areas", "pooled_areas", "check", "__len__"])
def test_x_uninitialised_space_raises_runtime_error(core, method):
    with pytest.raises(RuntimeError, match="__init__ was not called"):
        getattr(core.__new__(core), method)()

"""find_many() and check_copy(), the usercopy-side API: the core in every
lock mode and the reference give the same answers and the same errors."""

import array

import pytest

from vmap_core import VmapSpace, _space
from vmap_core.reference import ReferenceSpace

LOCKS = ("node", "global", "rwlock", "optimistic")
P = 4096
MISS = _space.MISS


@pytest.fixture(params=[*LOCKS, "reference"])
def space(request):
    if request.param == "reference":
        s = ReferenceSpace(1 << 20, 1 << 24, nr_nodes=3, zone_size=P)
    else:
        s = VmapSpace(1 << 20, 1 << 24, nr_nodes=3, zone_size=P, lock=request.param)
    for size in (3, 1, 5, 2):
        s.alloc(size * P)
    s.free((1 << 20) + 3 * P)          # a hole
    return s


def test_miss_is_never_a_page_aligned_start():
    assert MISS == 2**64 - 1 and MISS % P


def test_find_many_matches_find(space):
    addrs = [0, (1 << 20) - 1, 1 << 20, (1 << 20) + 3 * P - 1, (1 << 20) + 3 * P,
             (1 << 20) + 4 * P, (1 << 20) + 9 * P - 1, (1 << 20) + 11 * P - 1, 2**64 - 1]
    want = [a.start if a else MISS for a in map(space.find, addrs)]
    assert list(space.find_many(array.array("Q", addrs))) == want
    out = array.array("Q", [7] * len(addrs))
    assert space.find_many(array.array("Q", addrs), out) is out
    assert list(out) == want


def test_find_many_takes_numpy_and_memoryview(space):
    np = pytest.importorskip("numpy")
    addrs = np.array([1 << 20, (1 << 20) + 3 * P, (1 << 20) + 5 * P], dtype=np.uint64)
    out = space.find_many(addrs, np.zeros(3, dtype=np.uint64))
    assert out.tolist() == [1 << 20, MISS, (1 << 20) + 4 * P]
    strided = np.arange(1 << 20, (1 << 20) + 8 * P, P, dtype=np.uint64)[::2]
    assert list(space.find_many(strided)) == [a.start if a else MISS
                                              for a in map(space.find, strided.tolist())]


def test_find_many_empty(space):
    assert len(space.find_many(array.array("Q"))) == 0


@pytest.mark.parametrize("addrs", [[1, 2], "abc", array.array("d", [1.0]), array.array("i", [1])])
def test_find_many_rejects_other_types(space, addrs):
    with pytest.raises(TypeError):
        space.find_many(addrs)


def test_find_many_rejects_bad_out(space):
    addrs = array.array("Q", [1 << 20, 0])
    with pytest.raises(ValueError):
        space.find_many(addrs, array.array("Q", [0]))
    with pytest.raises(TypeError):
        space.find_many(addrs, bytes(16))           # read-only
    with pytest.raises(TypeError):
        space.find_many(addrs, array.array("d", [0, 0]))


def test_check_copy(space):
    a = space.find(1 << 20)                          # [1 MiB, +3 pages)
    space.check_copy(a.start, a.size)
    space.check_copy(a.end - 1, 1)
    space.check_copy(a.start + 5, 0)
    with pytest.raises(ValueError, match="past the end"):
        space.check_copy(a.start, a.size + 1)
    with pytest.raises(ValueError, match="past the end"):
        space.check_copy(a.end - 8, 9)
    with pytest.raises(ValueError, match="not in a vmap area"):
        space.check_copy(a.end, 1)                   # the hole after it
    with pytest.raises(ValueError):
        space.check_copy(a.start, -1)
    with pytest.raises(TypeError):
        space.check_copy(a.start, 1.5)
    with pytest.raises(TypeError):
        space.check_copy("x", 1)


@pytest.mark.parametrize("kernel,lock", [(k, lk) for k in ("6.9", "6.16") for lk in LOCKS]
                         + [("6.8", "split"), ("6.8", "optimistic")])
@pytest.mark.parametrize("nr_nodes,zone", [(1, 16), (2, 1), (7, 3)])
def test_find_many_batches_match_find(kernel, lock, nr_nodes, zone):
    """The interleaved descents (several in flight, grouped by first node,
    chunks of 64): every length around the chunk and group sizes, hits in
    every node, areas spanning zones (found by the walk), misses everywhere."""
    import random
    rng = random.Random(nr_nodes * 100 + zone)
    nodes = None if kernel == "6.8" else nr_nodes
    s = VmapSpace(1 << 32, (1 << 32) + (1 << 24), nr_nodes=nodes, zone_size=zone * P,
                  lock=lock, kernel=kernel)
    starts = [s.alloc(rng.randint(1, 9) * P) for _ in range(600)]
    for a in rng.sample(starts, 150):
        s.free(a)
    pool = ([a + rng.randrange(9 * P) for a in starts] + [rng.randrange(1 << 32, (1 << 32) + (1 << 24))
            for _ in range(200)] + [0, 2**64 - 1, (1 << 32) - 1])
    for n in (1, 7, 15, 16, 17, 63, 64, 65, 129, len(pool)):
        addrs = array.array("Q", rng.sample(pool, n))
        want = [a.start if a else MISS for a in map(s.find, addrs)]
        assert list(s.find_many(addrs)) == want, n
    assert any(x == MISS for x in s.find_many(array.array("Q", pool)))
    s.check()

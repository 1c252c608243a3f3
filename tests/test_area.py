"""VmapArea: immutable, start/end/size, equal by (start, end), unpacks, hashes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import vmap_core
from _util import P, TOP, RefArea, ReferenceSpace, VmapExhausted, require_core

B = 0x500000


def areas_from(impl):
    """Two different areas and a second copy of the first, all made by the space."""
    s = impl(B, B + 16 * P, nr_nodes=2)
    s.alloc(3 * P)
    s.alloc(P)
    a1, a2, b = s.find(B), s.find(B + 2 * P), s.find(B + 3 * P)
    return s, a1, a2, b


def test_attributes(impl):
    s, a, _, b = areas_from(impl)
    assert (a.start, a.end, a.size) == (B, B + 3 * P, 3 * P)
    assert (b.start, b.end, b.size) == (B + 3 * P, B + 4 * P, P)
    assert all(type(v) is int for v in (a.start, a.end, a.size))


def test_unpacking(impl):
    _, a, _, _ = areas_from(impl)
    start, end = a
    assert (start, end) == (B, B + 3 * P)
    assert tuple(a) == (B, B + 3 * P) and list(a) == [B, B + 3 * P]
    with pytest.raises(ValueError):
        x, y, z = a


@pytest.mark.parametrize("name", ["start", "end", "size"])
def test_immutable_attributes(impl, name):
    _, a, _, _ = areas_from(impl)
    old = getattr(a, name)
    with pytest.raises(AttributeError):
        setattr(a, name, 0)
    with pytest.raises(AttributeError):
        delattr(a, name)
    assert getattr(a, name) == old


def test_no_new_attributes(impl):
    _, a, _, _ = areas_from(impl)
    with pytest.raises(AttributeError):
        a.color = "red"
    assert not hasattr(a, "color")


def test_equality_and_hash(impl):
    _, a1, a2, b = areas_from(impl)
    assert a1 == a2 and not (a1 != a2)
    assert a1 != b and not (a1 == b)
    assert hash(a1) == hash(a2)
    assert len({a1, a2, b}) == 2
    d = {a1: "x"}
    assert d[a2] == "x"
    assert (a1 == (B, B + 3 * P)) in (True, False)   # other types: no exception
    assert (a1 == object()) is False


def test_areas_survive_free_and_reuse(impl):
    s, a, _, _ = areas_from(impl)
    f = s.free(B)
    assert f == a and (f.start, f.end) == (B, B + 3 * P)
    assert s.alloc(P) == B                    # the record may be reused; the value is not
    assert (a.start, a.end, a.size) == (B, B + 3 * P, 3 * P)
    assert (f.start, f.end, f.size) == (B, B + 3 * P, 3 * P)
    assert s.find(B) != a


def test_free_area_list_items_are_areas(impl):
    s, _, _, _ = areas_from(impl)
    fa = s.free_areas()
    assert isinstance(fa, list)
    assert [(x.start, x.end, x.size) for x in fa] == [(B + 4 * P, B + 16 * P, 12 * P)]
    assert list(s) == [s.find(B), s.find(B + 3 * P)]


def test_area_at_2_pow_64(impl):
    s = impl(TOP - 4 * P, TOP, nr_nodes=1)
    s.alloc(P, vstart=TOP - P)
    a = s.find(TOP - 1)
    assert (a.start, a.end, a.size) == (TOP - P, TOP, P)
    assert tuple(a) == (TOP - P, TOP)
    assert a == RefArea(TOP - P, TOP)
    s.alloc(4 * P - P)
    assert [tuple(x) for x in s] == [(TOP - 4 * P, TOP - P), (TOP - P, TOP)]


def test_repr_is_informative(impl):
    _, a, _, _ = areas_from(impl)
    r = repr(a)
    assert "VmapArea" in r
    assert hex(B) in r.lower() or str(B) in r


# -- core and reference agree on areas -----------------------------------------

def test_core_area_equals_reference_area():
    core = require_core()
    c = core(B, B + 16 * P, nr_nodes=2)
    r = ReferenceSpace(B, B + 16 * P, nr_nodes=2)
    for s in (c, r):
        s.alloc(3 * P)
        s.alloc(P)
    ca, ra = c.find(B), r.find(B)
    assert isinstance(ca, vmap_core.VmapArea)
    assert ca == ra and ra == ca
    assert not (ca != ra) and not (ra != ca)
    assert hash(ca) == hash(ra)               # equal objects must hash equal
    assert c.find(B + 3 * P) != ra and ra != c.find(B + 3 * P)
    assert list(c) == list(r) and c.free_areas() == r.free_areas()
    assert c.free(B) == r.free(B)


def test_reference_area_constructor_validates():
    assert tuple(RefArea(0, TOP)) == (0, TOP)
    for bad in ((5, 5), (6, 5), (-1, 5), (0, TOP + 1)):
        with pytest.raises(ValueError):
            RefArea(*bad)
    with pytest.raises(TypeError):
        RefArea(0.0, 1)


# -- the package surface --------------------------------------------------------

def test_package_exports():
    require_core()
    for name in ("VmapSpace", "VmapArea", "VmapExhausted", "__version__"):
        assert hasattr(vmap_core, name), name
    assert vmap_core.VmapExhausted is VmapExhausted
    assert issubclass(vmap_core.VmapExhausted, MemoryError)
    assert isinstance(vmap_core.__version__, str) and vmap_core.__version__
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.exists():
        m = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
        if m:
            assert vmap_core.__version__ == m.group(1)


def test_core_raises_the_shared_exhausted_class():
    core = require_core()
    s = core(0, P, nr_nodes=1)
    s.alloc(P)
    with pytest.raises(VmapExhausted) as info:
        s.alloc(P)
    assert type(info.value) is VmapExhausted

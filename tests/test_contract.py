"""The conformance kit (vmap_core.testing) shown to work both ways.

A correct allocator written from scratch passes it with only alloc/free/find;
three deliberately wrong ones (tests/_plain_space.py) fail it, each with a
shrunk counterexample that is short and names the call that goes wrong.
The core and the reference pass it in tests/test_state_machine*.py, which
run the kit's machine over every configuration.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import Phase, given, settings

import _util
from _plain_space import HighestFit, NoMerge, PlainSpace, ZoneBlindFind
from vmap_core.reference import ReferenceSpace
from vmap_core.testing import FEATURES, LAZY_FEATURES, VmapContract, detect_features
from vmap_core.testing import strategies as vst


def contract(space: type, **knobs: object) -> type[VmapContract]:
    """A VmapContract subclass for space (not collected: made in a test)."""
    return type(f"Contract{space.__name__}", (VmapContract,),
                {"space_class": space, "__test__": False, **knobs})


def run(case: type[VmapContract]) -> None:
    case("test_conformance").test_conformance()


def counterexample(space: type, **knobs: object) -> tuple[list[str], BaseException]:
    """Run the contract on a wrong space: (the printed steps, the error).
    The steps are the rule calls Hypothesis printed for the shrunk example
    (the invariant checks it also prints are left out)."""
    # the loaded profile's settings (bounded, derandomized in CI), one bug,
    # no database, no explain phase (slow, and not what is asserted on)
    quick = settings(report_multiple_bugs=False, database=None,
                     phases=[p for p in Phase if p is not Phase.explain])
    with pytest.raises(AssertionError) as info:
        run(contract(space, settings=quick, **knobs))
    notes = getattr(info.value, "__notes__", [])
    print("\n".join(notes), "\n", info.value)
    steps = [ln for ln in notes if re.match(r"(\(?areas_\d+,?\)? = )?state\.", ln)
             and not re.match(r"state\.(same_\w+|teardown)\(\)", ln)]
    # Hypothesis's header: "Failing test case" since 6.16x, "Falsifying example" before
    # (the newest with a wheel for a free-threaded CPython 3.13t is older).
    assert notes and notes[0].startswith(("Failing test case", "Falsifying example")), notes
    return steps, info.value


# -- both ways ---------------------------------------------------------------

def test_a_correct_plain_allocator_passes():
    """alloc/free/find/free_areas only, from scratch: the contract passes,
    with only the features it has exercised."""
    case = contract(PlainSpace, max_examples=60)
    assert case.active_features() == frozenset({"free_areas", "copy"})
    run(case)


def test_alloc_free_find_alone_is_enough():
    """Declared with no feature at all: only results, exceptions, len() and
    the busy areas are compared (no free_areas(), no copies)."""
    case = contract(PlainSpace, features=frozenset(), max_examples=20)
    machine = case.state_machine()
    assert not hasattr(machine, "copy_both") and not hasattr(machine, "free_lazy")
    run(case)


def test_the_reference_passes_with_every_feature():
    case = contract(ReferenceSpace, nr_nodes=3, zone_size=4096, lazy_max_pages=10,
                    search=None, max_examples=30)
    assert LAZY_FEATURES <= case.active_features()
    run(case)


def test_highest_fit_fails_with_a_short_counterexample():
    steps, err = counterexample(HighestFit)
    # two free blocks made (an area placed above the start, or two areas and
    # a free), then an allocation that the lowest fit puts lower than yours
    assert 2 <= len(steps) <= 4, steps
    assert "alloc" in steps[0] and "alloc" in steps[-1], steps
    got = re.search(r"yours returned (0x[0-9a-f]+), reference (0x[0-9a-f]+)", str(err))
    assert got and int(got[1], 16) > int(got[2], 16), err


def test_forgotten_merge_fails_with_a_short_counterexample():
    steps, err = counterexample(NoMerge)
    # one area allocated and freed: two free blocks where there is one
    assert len(steps) == 2, steps
    assert "alloc" in steps[0] and "free" in steps[1], steps
    assert "free areas" in str(err), err


def test_zone_blind_find_fails_with_a_short_counterexample():
    steps, err = counterexample(ZoneBlindFind)
    # one area across a zone boundary, then find() past the boundary
    assert len(steps) == 2, steps
    assert "alloc" in steps[0] and "find" in steps[1], steps
    assert "find(" in str(err) and "yours returned None" in str(err), err


# -- the contract's own mechanics -------------------------------------------

def test_the_base_class_is_not_a_test():
    assert VmapContract.__test__ is False
    assert contract(PlainSpace).__test__ is False           # said so explicitly
    sub = type("TestX", (VmapContract,), {"space_class": PlainSpace})
    assert sub.__test__ is True


def test_the_base_class_skips_when_run():
    import unittest
    result = unittest.TestResult()
    VmapContract("test_conformance").run(result)
    assert len(result.skipped) == 1 and not result.failures and not result.errors


def test_constructor_gets_only_what_it_accepts():
    case = contract(PlainSpace, nr_nodes=4, lock="node")
    assert case.space_configuration() == {"page_size": 4096}
    assert case.configuration() == {"page_size": 4096, "nr_nodes": 4, "lock": "node",
                                    "search": "lowest"}
    core = contract(_util.require_core(), nr_nodes=4, space_kwargs={"auto_purge": True})
    kw = core.space_configuration(print)
    assert kw["nr_nodes"] == 4 and kw["auto_purge"] is True and kw["on_purge"] is print


def test_declared_features_are_checked():
    with pytest.raises(ValueError, match="unknown features"):
        contract(PlainSpace, features=frozenset({"free_areas", "teleport"})).active_features()
    case = contract(ReferenceSpace, exclude_features=LAZY_FEATURES)
    assert not case.active_features() & LAZY_FEATURES


def test_detected_features_of_the_core():
    core = _util.require_core()
    found = detect_features(core(0, 1 << 20), {"on_purge": print})
    assert found == FEATURES


def test_user_settings_are_respected():
    case = contract(PlainSpace, max_examples=3, step_count=4)
    s = case("test_conformance").hypothesis_settings()
    assert s is not None and s.max_examples == 3 and s.stateful_step_count == 4
    assert s.derandomize == settings.default.derandomize        # the profile's
    mine = settings(max_examples=1)
    assert contract(PlainSpace, settings=mine)("test_conformance").hypothesis_settings() is mine
    assert contract(PlainSpace)("test_conformance").hypothesis_settings() is None


# -- strategies --------------------------------------------------------------

G = vst.Geometry(0x100000, 0x100000 + 64 * 4096)


def test_bad_calls_cover_every_documented_kind():
    kinds = {kind for values in vst.bad_values(G).values() for kind, _ in values}
    assert kinds == set(vst.BAD_KINDS)


@settings(max_examples=200)
@given(call=vst.bad_calls(G))
def test_bad_calls_raise_the_documented_kind(call):
    """Each bad value raises its kind's exception on the reference, and the
    integer-like ones are accepted."""
    ref = ReferenceSpace(G.start, G.end, nr_nodes=1)
    want = {"not an integer": TypeError, "integer-like": None}.get(call.kind, ValueError)
    if want is None:
        try:
            call(ref)
        except KeyError:        # free of an integer-like address: no area there
            assert call.name == "free"
        except MemoryError:     # 2**63 alignment: a valid request that cannot fit
            assert call.kwargs.get("align") == 1 << 63
    else:
        with pytest.raises(want):
            call(ref)


@settings(max_examples=100)
@given(size=vst.sizes(G), align=vst.alignments(G), window=vst.windows(G, valid=True))
def test_valid_inputs_are_valid(size, align, window):
    ref = ReferenceSpace(G.start, G.end, nr_nodes=1)
    assert size % G.page_size == 0 and size > 0
    try:
        ref.alloc(size, align, *window)
    except MemoryError:
        pass                    # valid, but too big or too aligned to fit


@given(window=vst.windows(G, valid=False))
def test_invalid_windows_are_refused(window):
    with pytest.raises(ValueError):
        ReferenceSpace(G.start, G.end, nr_nodes=1).alloc(G.page_size, None, *window)


@settings(max_examples=60)
@given(calls=vst.operations(G))
def test_operation_sequences_agree_on_core_and_reference(calls):
    """A whole sequence on the core and on the reference: the same results
    or exception types, and the same structure at the end."""
    spaces = [_util.require_core()(G.start, G.end, nr_nodes=1),
              ReferenceSpace(G.start, G.end, nr_nodes=1)]
    for c in calls:
        out = []
        for s in spaces:
            try:
                r = c(s)
                out.append(("ok", vst_span(r)))
            except Exception as exc:  # noqa: BLE001 - compared by type
                out.append(("raised", type(exc)))
        assert out[0] == out[1], (c, out)
    assert _util.snapshot(spaces[0]) == _util.snapshot(spaces[1])


def vst_span(r):
    return (r.start, r.end) if hasattr(r, "start") else r


def test_calls_print_as_code():
    assert repr(vst.Call("alloc", (8192,), {"align": 1 << 16})) == "alloc(0x2000, align=0x10000)"


# -- the optional dependency --------------------------------------------------

BLOCK_HYPOTHESIS = """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "hypothesis" or name.startswith("hypothesis."):
                raise ImportError("hypothesis blocked")
    sys.meta_path.insert(0, Block())
"""


def test_import_vmap_core_never_needs_hypothesis():
    _util.run_child(BLOCK_HYPOTHESIS + """
    import vmap_core, vmap_core.reference, vmap_core.replay, vmap_core.usercopy
    assert "hypothesis" not in sys.modules
    """)


def test_the_kit_without_hypothesis_names_the_extra():
    proc = _util.run_child(BLOCK_HYPOTHESIS + """
    try:
        import vmap_core.testing
    except ImportError as exc:
        print(exc)
    else:
        raise SystemExit("imported without hypothesis")
    """)
    assert 'pip install "vmap_core[testing]"' in proc.stdout

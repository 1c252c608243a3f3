"""The differential fuzzer's decoder (tests/fuzz_differential.py) driven by
Hypothesis: random bytes become API calls on the core and the reference, in
every configuration (tests/_configs.py: shapes x lock modes x kernel
profiles), and every result, exception and view must agree after each call.
CI also runs the coverage-guided engine for a bounded time (.ci/run); run
``python tests/fuzz_differential.py deep`` for as long as you like."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fuzz_differential as fuzz

pytestmark = pytest.mark.usefixtures("core")

# Inputs that once made the two disagree or crashed the core (with the
# review finding they reproduce): the configuration's name, then the input
# after its first byte (auto_purge's byte, then the calls).
REGRESSIONS = {
    # W2 / C1: alloc(2**64) then free_lazy() of it in the 2**64-byte space of
    # one-byte pages: the page count wrapped (no automatic purge), and with
    # two nodes the pool class wrapped (SIGSEGV).
    "w2-whole-space-lazy": ("bytes-node-kernel=6.16", bytes([0, 0, 0, 0xE0, 2, 0, 8, 0, 0])),
    # The same in v6.8's merging lazy tree, whose page count (and the trace's
    # nr_lazy) must say 2**64 as the reference does.
    "w2-whole-space-lazy-6.8": ("bytes-split-kernel=6.8",
                                bytes([0, 0, 0, 0xE0, 2, 0, 8, 0, 0])),
}
CONFIG_INDEX = {name: i for i, (name, _) in enumerate(fuzz.CONFIGS)}


def regression_input(name):
    config, data = REGRESSIONS[name]
    return bytes([CONFIG_INDEX[config]]) + data


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_inputs(name):
    fuzz.run_input(regression_input(name))


def test_regression_input_decodes_as_documented():
    """The W2 input really is alloc(2**64) then free_lazy() in the bytes shape."""
    name, kw = fuzz.CONFIGS[regression_input("w2-whole-space-lazy")[0]]
    assert name.startswith("bytes") and kw["page_size"] == 1
    calls = []
    orig = fuzz.outcome
    try:
        fuzz.outcome = lambda fn, *a, **k: (calls.append((fn.__name__, a)), orig(fn, *a, **k))[1]
        fuzz.run_input(regression_input("w2-whole-space-lazy"))
    finally:
        fuzz.outcome = orig
    assert calls[0] == ("alloc", (2**64, None, None, None))
    assert calls[2] == ("free_lazy", (0,))


@pytest.mark.parametrize("index", range(len(fuzz.CONFIGS)),
                         ids=[name for name, _ in fuzz.CONFIGS])
@given(data=st.binary(min_size=4, max_size=160))
def test_core_and_reference_agree(index, data):
    fuzz.run_input(bytes([index]) + data)

"""The mutation harness (tools/mutants.py) stays in step with the code.

Every mutant's original text must occur exactly once in its file, and
applying it must change the file: a code change that makes a mutant stale
fails here, in the normal suite, instead of silently testing nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("vmap_core_mutants", ROOT / "tools/mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


mutants = _load()
NAMES = [m.name for m in mutants.MUTANTS]


def test_mutants_are_many_named_once_and_cover_every_layer():
    assert len(NAMES) >= 30
    assert len(set(NAMES)) == len(NAMES)
    layers = {m.layer for m in mutants.MUTANTS}
    assert layers == set(mutants.LAYER_TESTS)
    files = {Path(m.path).name for m in mutants.MUTANTS}
    for f in ("_rbtree.pxi", "_freetree.pxi", "_nodes.pxi", "_locks.h", "_lazy.pxi",
              "_slab.pxi", "_check.pxi", "_space.pyx", "reference.py", "freetree.py",
              "common.py", "trace.py", "_traceparse.pyx"):
        assert f in files, f
    for m in mutants.MUTANTS:
        assert m.bug and m.original != m.replacement
        for t in m.tests or mutants.LAYER_TESTS[m.layer]:
            assert (ROOT / t.split("::")[0]).exists(), t


@pytest.mark.parametrize("name", NAMES)
def test_mutant_text_occurs_once_and_applies(name, tmp_path):
    m = next(m for m in mutants.MUTANTS if m.name == name)
    src = ROOT / m.path
    assert src.read_text().count(m.original) == 1, \
        f"mutant {name} is stale: refresh its text in tools/mutants.py"
    dst = tmp_path / m.path
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    mutants.apply(m, tmp_path)
    after = dst.read_text()
    assert after != src.read_text()
    assert after.count(m.replacement) >= 1


def test_sample_is_chosen_by_the_seed():
    a = mutants.select(None, 3, "f5c26e9")
    assert a == mutants.select(None, 3, "f5c26e9") and len(a) == 3
    assert len({tuple(m.name for m in mutants.select(None, 3, str(i))) for i in range(20)}) > 1
    with pytest.raises(SystemExit):
        mutants.select("no_such_mutant", None, None)


def test_stale_text_is_refused(tmp_path):
    m = mutants.MUTANTS[0]
    (tmp_path / m.path).parent.mkdir(parents=True)
    (tmp_path / m.path).write_text("nothing of the original here\n")
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutants.apply(m, tmp_path)

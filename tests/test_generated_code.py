"""The C that Cython generates for the core holds no pattern known to break
under memory pressure (review finding C5).

Cython 3.3.0 and 3.3.1 compile a list comprehension whose items are
temporaries with __Pyx_ListComp_AppendAndDecref(), whose error path (the
list cannot grow) decrefs the item and then the caller's cleanup decrefs it
again: a use-after-free.  3.0.12, 3.1.8, 3.2.4 and 3.2.9 do not emit it.  The
core builds its lists with explicit loops and uses no typed memoryview (whose
utility code holds such comprehensions), so no version emits it; this test
compiles the core (both Cython modules) with the installed Cython and fails
if one ever comes back.
"""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "vmap_core"


@pytest.mark.parametrize("module", ["_space", "_traceparse"])
def test_no_comprehension_double_decref_in_the_generated_c(tmp_path, module):
    cython = pytest.importorskip("Cython.Build", reason="Cython is not installed here")
    if not (SRC / f"{module}.pyx").exists():
        pytest.skip("no source checkout beside the tests")
    work = tmp_path / "vmap_core"
    shutil.copytree(SRC, work, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    cython.cythonize([str(work / f"{module}.pyx")], quiet=True,
                     compiler_directives={"language_level": 3})
    c = (work / f"{module}.c").read_text()
    calls = re.findall(r"__Pyx_ListComp_AppendAndDecref\(__pyx", c)
    assert not calls, f"{len(calls)} comprehensions that decref twice on MemoryError"
    assert "__pyx_memoryview_new" not in c, "a typed memoryview pulls in such comprehensions"

"""Memory failure: every method of the core either completes exactly as it
would have, or raises MemoryError with the space exactly as it was, whichever
allocation fails inside it (tests/_fault_child.py does the sweep, in a child
process so that a crash fails one test only).  Table-driven over the shared
configurations (tests/_configs.py): every lock mode, every kernel profile."""

from __future__ import annotations

import json
import pathlib
import sysconfig

import pytest

from _configs import configs
from _util import run_child

pytestmark = pytest.mark.usefixtures("core")

CHILD = pathlib.Path(__file__).with_name("_fault_child.py")
CONFIGS = configs(shapes=["nodes3", "bytes"])


def _has_set_nomemory():
    try:
        import _testcapi
    except ImportError:
        return False
    return hasattr(_testcapi, "set_nomemory")


def sweep(kind, kw):
    code = f"""
        import runpy, sys
        sys.argv = [{str(CHILD)!r}, {kind!r}, {json.dumps(kw)!r}]
        sys.path.insert(0, {str(CHILD.parent)!r})
        runpy.run_path(sys.argv[0], run_name="__main__")
    """
    out = run_child(code, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _has_set_nomemory(),
                    reason="CPython's _testcapi.set_nomemory() is not available in this Python "
                           "(it ships with CPython's test modules; 3.10 to 3.13 have it)")
@pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                    reason="on a free-threaded CPython (3.13.15t) a child that swapped the "
                           "allocators with _testcapi.set_nomemory() completes its sweep, then "
                           "spins at exit in mimalloc (_mi_page_free_collect, from "
                           "_PyThreadState_ClearMimallocHeaps); the core's own C allocations "
                           "(test_c_allocation_failures) still run there")
@pytest.mark.parametrize("name, kw", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_python_allocation_failures(name, kw):
    summary = sweep("python", kw)
    # The views and the allocating methods must have met failures at all.
    for method in ("alloc", "iter", "vmallocinfo", "stats", "pooled_areas"):
        assert summary[method][0] > 0, (method, summary)


@pytest.mark.parametrize("name, kw", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_c_allocation_failures(name, kw):
    summary = sweep("c", kw)
    for method in ("iter", "free_areas", "lazy_areas", "pooled_areas", "vmallocinfo", "stats",
                   "check", "grow_slab", "construct"):
        assert summary[method][0] > 0, (method, summary)

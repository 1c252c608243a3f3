"""Shared test setup: Hypothesis profiles and the core/reference parametrization.

One suite runs against both implementations (as msgpack runs its suite against
its C extension and its pure-Python fallback): the ``impl`` fixture yields the
space class, ``"core"`` for :class:`vmap_core.VmapSpace` (the Cython build) and
``"reference"`` for :class:`vmap_core.reference.ReferenceSpace`.

Profiles (choose with the ``HYPOTHESIS_PROFILE`` environment variable):

* ``ci`` (default): derandomized and bounded, so a CI run is reproducible and
  short.
* ``deep``: many more examples and longer state-machine runs, for local runs.

If the extension is not built, core-parametrized tests are skipped, unless
``VMAP_CORE_REQUIRE=1`` is set, in which case they fail.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, settings

# Run from a source checkout without installing: fall back to src/ only when
# vmap_core is not importable (an installed package always wins).
try:
    import vmap_core.reference  # noqa: F401
except ImportError:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "src"))

# tests/ itself holds the shared helpers module (_util).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _util  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=2000,
    stateful_step_count=120,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    core, err = _util.load_core()
    getname = getattr(settings, "get_current_profile_name", None)
    profile = getname() if getname else os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if core is None:
        return [f"vmap_core: core NOT built ({err}); hypothesis profile: {profile}"]
    return [f"vmap_core: core {core.__module__}.{core.__name__}; hypothesis profile: {profile}"]


@pytest.fixture(scope="session", params=["core", "reference"])
def impl(request):
    """The space class under test: the Cython core or the pure-Python reference."""
    if request.param == "reference":
        return _util.ReferenceSpace
    return _util.require_core()


@pytest.fixture(scope="session")
def core():
    """The Cython core class alone (for the core-only test hooks of vmap_core._testhooks)."""
    return _util.require_core()


@pytest.fixture(scope="session", params=["node", "global", "rwlock", "optimistic"])
def lock(request):
    """Lock mode: every mode of the core (the reference accepts them and ignores them)."""
    return request.param

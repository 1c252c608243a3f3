"""pytest plugin of tools/mutants.py: name the test a mutant hangs or crashes.

Before each test it appends "MUTANT-TEST <nodeid>" to the file named by
VMAP_MUTANT_LOG (outside pytest's output capture, which a dying interpreter
never flushes), so the harness can name the test that was running; with
VMAP_MUTANT_HANG_S set, a test that runs longer than that many seconds is a
hang: faulthandler (a C thread: it fires even while the core holds the GIL)
dumps the stacks into the same file and exits.
"""

from __future__ import annotations

import faulthandler
import os

import pytest

_LIMIT = float(os.environ.get("VMAP_MUTANT_HANG_S", "0") or 0)
_PATH = os.environ.get("VMAP_MUTANT_LOG")
_LOG = open(_PATH, "a", buffering=1) if _PATH else None   # noqa: SIM115 - lives as long as pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _LOG is not None:
        _LOG.write(f"MUTANT-TEST {item.nodeid}\n")
        _LOG.flush()
        faulthandler.enable(file=_LOG)        # a crash's stacks, too
        if _LIMIT > 0:
            faulthandler.dump_traceback_later(_LIMIT, exit=True, file=_LOG)
    try:
        yield
    finally:
        if _LOG is not None and _LIMIT > 0:
            faulthandler.cancel_dump_traceback_later()

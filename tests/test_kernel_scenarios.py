"""The lib/test_vmalloc.c scenarios (vmap_core.kernel.scenarios) and `test-vmalloc`."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys

import pytest

import _util

from vmap_core.kernel import scenarios as tv
from vmap_core.cli import main
from vmap_core.cli.common import kernel_int

P = 4096
LOCKS = ("node", "global", "rwlock", "optimistic")
SMALL = tv.Params(test_loop_count=40, online_cpus=1)   # full_fit: 8192 pairs
NAMES = [s.name for s in tv.SCENARIOS]


@pytest.fixture(params=["core", "reference"])
def reference(request):
    if request.param == "core":
        _util.require_core()
    return request.param == "reference"


def _assert_returned(space):
    """Nothing busy; after purging, check() passes and one free block is left."""
    assert len(space) == 0
    space.check()                       # lazy areas count in check() too
    if hasattr(space, "purge"):
        space.purge(full=True)
    if hasattr(space, "drain_pools"):
        space.drain_pools()
    space.check()
    assert len(space) == 0
    assert [(a.start, a.end) for a in space.free_areas()] == [(space.start, space.end)]


# -- each scenario, on the core and on the reference ------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_scenario_result_and_space_returned(reference, name):
    sc = tv.SCENARIOS[NAMES.index(name)]
    space = tv.make_space("node", reference)
    assert sc(space, random.Random(1), SMALL.effective()) is (not sc.supposed_to_fail)
    _assert_returned(space)


@pytest.mark.parametrize("nr_pages", [3, 64, 65, 200])
def test_vm_map_ram_block_and_direct_paths(reference, nr_pages):
    """Up to VMAP_MAX_ALLOC pages from vmap blocks, more from alloc_vmap_area."""
    space = tv.make_space("node", reference)
    p = tv.Params(test_loop_count=600, nr_pages=nr_pages).effective()
    assert tv.vm_map_ram_test(space, random.Random(0), p)
    _assert_returned(space)


def test_fix_size_nr_pages_and_use_huge(reference):
    space = tv.make_space("node", reference)
    for huge in (False, True):
        p = tv.Params(test_loop_count=5, nr_pages=600, use_huge=huge).effective()
        assert tv.fix_size_alloc_test(space, random.Random(0), p)
    _assert_returned(space)


def test_vmalloc_model_guard_page_and_alignment(reference):
    space = tv.make_space("node", reference)
    vm = tv.Vmalloc(space)
    a = vm.vmalloc(1)                                  # one byte: one page + guard
    assert space.find(a).size == 2 * P
    b = vm.vmalloc_node(5 * P, 8 * P)                  # fix_align_alloc_test's call
    assert b % (8 * P) == 0 and space.find(b).size == 6 * P
    c = vm.vmalloc_huge(tv.PMD_SIZE + 1)               # rounded to PMD_SIZE, aligned
    assert c % tv.PMD_SIZE == 0 and space.find(c).size == 2 * tv.PMD_SIZE + P
    d = vm.vmalloc_huge(3 * P)                         # below PMD_SIZE: small pages
    assert space.find(d).size == 4 * P
    assert vm.vmalloc_node(P, 1 << 63) is None         # NULL, not an exception
    for x in (a, b, c, d, None):
        vm.vfree(x)
    _assert_returned(space)


def test_failures_free_everything_on_a_small_space(reference):
    """On a space too small for them the scenarios fail, as the kernel's would,
    and their error paths still give everything back."""
    cls = tv.space_class(reference)
    space = cls(1 << 32, (1 << 32) + 4096 * P, nr_nodes=2)
    for sc in tv.SCENARIOS:
        ok = sc(space, random.Random(2), SMALL.effective())
        # full_fit ignores failures of its fill, as the kernel's does, and passes
        assert ok is (sc.name not in ("long_busy_list_alloc_test", "align_shift_alloc_test",
                                      "pcpu_alloc_test")), sc.name
        assert len(space) == 0, sc.name
    _assert_returned(space)


# -- the driver --------------------------------------------------------------------

def test_params_clamped_as_the_kernel_does():
    p = tv.Params(nr_threads=0, test_loop_count=0, test_repeat_count=-3).effective()
    assert (p.nr_threads, p.test_loop_count, p.test_repeat_count) == (1, 1, 1)
    assert tv.Params(nr_threads=70000).effective().nr_threads == 65535
    assert tv.Params().test_loop_count == tv.KERNEL_TEST_LOOP_COUNT // 10
    assert tv.Params().run_test_mask == tv.INT_MAX


def test_mask_selects_tests():
    assert tv.selected(tv.INT_MAX) == list(range(11))
    assert tv.selected(-1) == list(range(11))
    assert tv.selected(0) == []
    assert tv.selected(0b101) == [0, 2]
    assert tv.selected(1 << 11) == []
    assert [tv.SCENARIOS[i].name for i in tv.selected(0x41)] == [
        "fix_size_alloc_test", "align_shift_alloc_test"]


@pytest.mark.parametrize("mask", [0x1, 0x29, 0x440])
def test_run_runs_only_the_masked_tests(reference, mask):
    space = tv.make_space("node", reference)
    r = tv.run(space, tv.Params(run_test_mask=mask, nr_threads=2, test_loop_count=20,
                                sequential_test_order=True), seed=3, impl="x")
    names = [tv.SCENARIOS[i].name for i in tv.selected(mask)]
    assert [row["name"] for row in r.summary()] == names
    for w in r.workers:
        assert w.order == tv.selected(mask)            # sequential: mask order
        assert sorted(w.data) == tv.selected(mask)
    assert r.ok and r.check_ok and r.empty
    _assert_returned(space)


def test_shuffle_array_moves_every_element():
    rng = random.Random(5)
    for n in range(2, 12):
        for _ in range(20):
            arr = list(range(n))
            tv.shuffle_array(arr, rng)
            assert sorted(arr) == list(range(n))
            assert all(arr[i] != i for i in range(n))  # j < i: Sattolo's cycle


def test_workers_shuffle_unless_sequential():
    space = tv.make_space("node", True)
    mask = 0x1 | 0x8 | 0x10 | 0x20 | 0x100 | 0x200
    r = tv.run(space, tv.Params(run_test_mask=mask, nr_threads=4, test_loop_count=2),
               seed=11)
    orders = [w.order for w in r.workers]
    assert all(sorted(o) == tv.selected(mask) for o in orders)
    assert any(o != tv.selected(mask) for o in orders)


def test_reference_under_threads_is_serialized():
    """ReferenceSpace has no locks: run() shares it through one lock, so that
    several workers leave it sound (unserialized, its lists get corrupted)."""
    mask = 0x1 | 0x8 | 0x10 | 0x20 | 0x100 | 0x200 | 0x400
    for seed in range(25):
        space = tv.make_space("node", True)
        r = tv.run(space, tv.Params(run_test_mask=mask, nr_threads=3, test_loop_count=30,
                                    nr_pages=2), seed=seed)
        assert r.ok, tv.verdict(r)
        _assert_returned(space)


@pytest.mark.parametrize("lock", LOCKS)
def test_threads_share_one_core_space_every_lock(lock):
    _util.require_core()
    mask = tv.ALL_TESTS_MASK & ~0x2 & ~0x4 & ~0x80    # the heavy fixed-size ones out
    space = tv.make_space(lock)
    r = tv.run(space, tv.Params(run_test_mask=mask, nr_threads=4, test_loop_count=300,
                                test_repeat_count=2, nr_pages=3), seed=7)
    for row in r.summary():
        if row["supposed_to_fail"]:
            assert (row["passed"], row["failed"]) == (0, 8), row
        else:
            assert (row["passed"], row["failed"]) == (8, 0), row
        assert row["avg_usec"] > 0
    assert r.ok, tv.verdict(r)
    _assert_returned(space)


def test_run_locks_all_tests_and_progress(reference):
    calls = []
    runs = tv.run_locks(["node", "global"], SMALL, seed=1, reference=reference,
                        progress=lambda d, t, c: calls.append((d, t, c)))
    assert [r.lock for r in runs] == ["node", "global"]
    assert all(r.ok for r in runs), [tv.verdict(r) for r in runs]
    assert calls[-1] == (22, 22, None)
    lines = tv.kernel_lines(runs[0])
    assert lines[0].startswith("Summary: ") and " repeat: 1 loops: 40 avg: " in lines[0]
    assert lines[-1].startswith("All test took worker0=")
    assert "align_shift_alloc_test passed: 0 failed: 1" in "\n".join(lines)


def test_a_bug_in_a_scenario_is_raised(monkeypatch):
    def broken(space, rng, params):
        space.free(12345)                               # not an area: KeyError
    monkeypatch.setattr(tv, "SCENARIOS", (tv.Scenario("broken", broken),))
    with pytest.raises(KeyError):
        tv.run(tv.make_space("node", True), tv.Params(run_test_mask=1), seed=1)


# -- the command line ---------------------------------------------------------------

CHEAP = str(0x1 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400)


def test_cli_end_to_end_json(reference, tmp_path, capsys):
    out = tmp_path / "tv.json"
    argv = ["test-vmalloc", "--test-loop-count", "30", "--nr-threads", "2",
            "--test-repeat-count", "2", "--nr-pages", "2", "--seed", "9",
            "--run-test-mask", CHEAP, "--json", str(out)]
    if reference:
        argv.append("--reference")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "vm_map_ram_test" in text
    data = json.loads(out.read_text())
    locks = ["node"] if reference else list(LOCKS)
    assert [r["lock"] for r in data["runs"]] == locks
    assert data["params"]["nr_threads"] == 2 and data["seed"] == 9
    for r in data["runs"]:
        assert r["ok"] and r["check_ok"] and r["empty"]
        assert r["impl"] == ("reference" if reference else "core")
        assert len(r["workers"]) == 2
        assert [s["id"] for s in r["summary"]] == [1 << i for i in tv.selected(int(CHEAP))]
        shift = next(s for s in r["summary"] if s["name"] == "align_shift_alloc_test")
        assert (shift["passed"], shift["failed"]) == (0, 4)


def test_cli_whole_default_mask_small_loops(capsys):
    assert main(["test-vmalloc", "--reference", "--test-loop-count", "10",
                 "--sequential-test-order", "--kernel-log", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    for name in NAMES:
        assert f"Summary: {name} passed: " in text
    assert "reference/node: all as expected; check() ok, space empty" in text


def test_cli_kernel_log_lines(capsys):
    assert main(["test-vmalloc", "--reference", "--locks", "global", "--test-loop-count",
                 "5", "--run-test-mask", "0x41", "--seed", "1", "--kernel-log"]) == 0
    text = capsys.readouterr().out
    assert "Summary: fix_size_alloc_test passed: 1 failed: 0 repeat: 1 loops: 5 avg: " in text
    assert "Summary: align_shift_alloc_test passed: 0 failed: 1" in text
    assert "reference/global: all as expected" in text and "PASS" in text


@pytest.mark.parametrize("text, value", [("010", 8), ("0x10", 16), ("0X1f", 31), ("10", 10),
                                         ("0", 0), ("-010", -8), ("+7", 7), (" 017 ", 15)])
def test_module_param_integers(text, value):
    """Read as kstrtoint(s, 0, ...) reads them: a leading 0 is octal, as the help says."""
    assert kernel_int(text) == value


@pytest.mark.parametrize("text", ["08", "0x", "1_000", "1e3", "", "0b101", "--1", "0x-1"])
def test_module_param_integers_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        kernel_int(text)


def test_cli_octal_mask(capsys):
    """--run-test-mask 010 is bit 3 (random_size_alloc_test), not a usage error."""
    assert main(["test-vmalloc", "--reference", "--run-test-mask", "010",
                 "--test-loop-count", "3", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "random_size_alloc_test" in text and "fix_size_alloc_test" not in text
    assert "run_test_mask 0x8" in text


@pytest.mark.parametrize("argv", [
    ["--run-test-mask", "0"], ["--run-test-mask", "0x800"], ["--locks", "spin"],
    ["--run-test-mask", "zz"], ["--run-test-mask", "08"], ["--sequential-test-order", "maybe"],
    ["--json", "/nonexistent/dir/x.json"]])
def test_cli_usage_errors(argv, capsys):
    assert main(["test-vmalloc", "--reference", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_fails_when_scenarios_fail(monkeypatch, capsys):
    """A space too small for long_busy_list: exit status 1, the row in the table."""
    from vmap_core.reference import ReferenceSpace
    monkeypatch.setattr(tv, "make_space", lambda lock, reference=False, **kw:
                        ReferenceSpace(1 << 32, (1 << 32) + 1024 * P, lock=lock))
    assert main(["test-vmalloc", "--reference", "--run-test-mask", "0x5",
                 "--test-loop-count", "5", "--seed", "1"]) == 1
    text = capsys.readouterr().out
    assert "UNEXPECTED: long_busy_list_alloc_test" in text and "FAIL" in text


def test_python_m_vmap_core_test_vmalloc(tmp_path):
    """The registered subcommand, through the interpreter."""
    env = _util.subprocess_env()
    proc = subprocess.run(
        [sys.executable, "-m", "vmap_core", "test-vmalloc", "--reference", "--seed", "2",
         "--test-loop-count", "10", "--run-test-mask", "0x11"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fix_align_alloc_test" in proc.stdout and "PASS" in proc.stdout
    help_ = subprocess.run([sys.executable, "-m", "vmap_core", "--help"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert "test-vmalloc" in help_.stdout

"""The lib/test_vmalloc.c scenarios (vmap_core.kernel.scenarios), their Python
driver (vmap_core.kernel.driver.run) and the Python side of `test-vmalloc`.
The native driver is tested in test_tvmalloc_native.py."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import _util

from vmap_core.kernel import driver as drv
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


# -- the kernel's random draws --------------------------------------------------------

def test_kernel_random_ranges_and_determinism():
    a, b = tv.KernelRandom(7), tv.KernelRandom(7)
    draws = [a.get_random_u32_inclusive(1, 100) for _ in range(2000)]
    assert draws == [b.get_random_u32_inclusive(1, 100) for _ in range(2000)]
    assert min(draws) == 1 and max(draws) == 100
    assert all(0 <= a.get_random_u8() < 256 for _ in range(500))
    for ceil in (1, 2, 3, 10, 1 << 31, (1 << 32) - 1):
        assert all(0 <= a.get_random_u32_below(ceil) < ceil for _ in range(200))
    assert a.state != tv.KernelRandom(7).state
    assert tv.KernelRandom.for_worker(1, 0).state != tv.KernelRandom.for_worker(1, 1).state
    assert tv.KernelRandom.for_worker(1, 0).state == tv.KernelRandom.for_worker(1, 0).state


def test_u32_below_rejects_as_the_kernel_does():
    """A draw whose low 32 bits fall below (2**32 - ceil) % ceil is drawn again:
    ceil = 3 * 2**30 rejects a quarter of all u32, so the stream moves further."""
    rng = tv.KernelRandom(3)
    start = rng.state
    ceil = 3 << 30
    for _ in range(400):
        rng.get_random_u32_below(ceil)
    steps = (rng.state - start) * pow(0x9E3779B97F4A7C15, -1, 1 << 64) % (1 << 64)
    assert 400 < steps < 700


# -- each scenario, on the core and on the reference ------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_scenario_result_and_space_returned(reference, name):
    sc = tv.SCENARIOS[NAMES.index(name)]
    space = drv.make_space("node", reference)
    assert sc(space, tv.KernelRandom(1), SMALL.effective()) is (not sc.supposed_to_fail)
    _assert_returned(space)


@pytest.mark.parametrize("nr_pages", [3, 64, 65, 200])
def test_vm_map_ram_block_and_direct_paths(reference, nr_pages):
    """Up to VMAP_MAX_ALLOC pages from vmap blocks, more from alloc_vmap_area."""
    space = drv.make_space("node", reference)
    p = tv.Params(test_loop_count=600, nr_pages=nr_pages).effective()
    assert tv.vm_map_ram_test(space, tv.KernelRandom(0), p)
    _assert_returned(space)


def test_fix_size_nr_pages_and_use_huge(reference):
    space = drv.make_space("node", reference)
    for huge in (False, True):
        p = tv.Params(test_loop_count=5, nr_pages=600, use_huge=huge).effective()
        assert tv.fix_size_alloc_test(space, tv.KernelRandom(0), p)
    _assert_returned(space)


def test_vmalloc_model_guard_page_and_alignment(reference):
    space = drv.make_space("node", reference)
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
    cls = drv.space_class(reference)
    space = cls(1 << 32, (1 << 32) + 4096 * P, nr_nodes=2)
    for sc in tv.SCENARIOS:
        ok = sc(space, tv.KernelRandom(2), SMALL.effective())
        # full_fit ignores failures of its fill, as the kernel's does, and passes
        assert ok is (sc.name not in ("long_busy_list_alloc_test", "align_shift_alloc_test",
                                      "pcpu_alloc_test")), sc.name
        assert len(space) == 0, sc.name
    _assert_returned(space)


# -- parameters, presets, the emulated machine ------------------------------------------

def test_params_clamped_as_the_kernel_does():
    p = tv.Params(nr_threads=0, test_loop_count=0, test_repeat_count=-3).effective()
    assert (p.nr_threads, p.test_loop_count, p.test_repeat_count) == (1, 1, 1)
    assert tv.Params(nr_threads=70000).effective().nr_threads == 65535
    assert tv.Params().test_loop_count == tv.KERNEL_TEST_LOOP_COUNT // 10
    assert tv.Params().run_test_mask == 7                 # the current kernel's default


def test_presets_are_test_vmalloc_sh():
    """PERF_PARAM, SMOKE_PARAM, STRESS_PARAM of tools/testing/selftests/mm/test_vmalloc.sh."""
    assert drv.preset_params("performance", 8) == {"sequential_test_order": True,
                                                   "test_repeat_count": 3}
    assert drv.preset_params("smoke", 8) == {"test_loop_count": 10000, "test_repeat_count": 10}
    assert drv.preset_params("stress", 48) == {"nr_threads": 48, "test_repeat_count": 20}


@pytest.mark.parametrize("kernel, cpus, nodes, lazy", [
    ("6.16", 64, 64, 7 * 8192), ("6.9", 48, 48, 6 * 8192), ("6.16", 1000, 128, 10 * 8192),
    ("6.8", 64, 1, 7 * 8192), ("6.16", 1, 1, 8192)])
def test_emulated_machine(reference, kernel, cpus, nodes, lazy):
    lock = "split" if kernel == "6.8" else "node"
    space = drv.make_space(lock, reference, kernel=kernel, cpus=cpus)
    assert (space.nr_nodes, space.lazy_max_pages, space.kernel) == (nodes, lazy, kernel)


def test_workers_run_on_emulated_cpus():
    p = tv.Params(nr_threads=5, online_cpus=3, run_test_mask=1).effective()
    workers, rngs = drv.plan(p, 9)
    assert [w.cpu for w in workers] == [0, 1, 2, 0, 1]
    assert len({r.state for r in rngs}) == 5


def test_on_cpu_passes_the_cpu_to_alloc(reference):
    """The pool of the worker's CPU's node serves it: a pooled area of node 3
    goes to CPU 3 (or 3 + nr_nodes), not to CPU 0."""
    space = drv.make_space("node", reference, cpus=4, auto_purge=False)
    a = drv.OnCpu(space, 3).alloc(2 * P, 1)
    space.free_lazy(a)
    space.purge()                                     # tagged for node 3: into its pool
    assert drv.OnCpu(space, 0).alloc(2 * P, 1) != a
    assert drv.OnCpu(space, 7).alloc(2 * P, 1) == a


def test_full_fit_follows_the_emulated_cpus():
    """junk_length = fls(num_online_cpus()) * 32 MiB / PAGE_SIZE: 64 CPUs, 7 * 8192 pairs."""
    _util.require_core()
    space = drv.make_space("node")

    class Counting:
        page_size, free_lazy, nr_nodes = space.page_size, space.free_lazy, space.nr_nodes
        calls: list[int] = []

        def alloc(self, size, align=None):
            self.calls.append(size)
            return space.alloc(size, align)
    c = Counting()
    assert tv.full_fit_alloc_test(c, tv.KernelRandom(1),
                                  tv.Params(test_loop_count=1, online_cpus=64).effective())
    assert c.calls.count(2 * P) == 2 * 7 * 8192 + 1
    assert len(space) == 0


# -- the Python driver ---------------------------------------------------------------

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
    space = drv.make_space("node", reference)
    r = drv.run(space, tv.Params(run_test_mask=mask, nr_threads=2, test_loop_count=20,
                                 sequential_test_order=True), seed=3, impl="x")
    names = [tv.SCENARIOS[i].name for i in tv.selected(mask)]
    assert [row["name"] for row in r.summary()] == names
    for w in r.workers:
        assert w.order == tv.selected(mask)            # sequential: mask order
        assert sorted(w.data) == tv.selected(mask)
    assert r.ok and r.check_ok and r.empty
    _assert_returned(space)


def test_xfail_counting_is_the_kernels():
    """align_shift_alloc_test failing is xfailed; passing, it would count as failed."""
    space = drv.make_space("node", True)
    r = drv.run(space, tv.Params(run_test_mask=0x41, test_loop_count=3, test_repeat_count=2),
                seed=1)
    rows = {row["name"]: row for row in r.summary()}
    assert (rows["align_shift_alloc_test"]["passed"], rows["align_shift_alloc_test"]["failed"],
            rows["align_shift_alloc_test"]["xfailed"]) == (0, 0, 2)
    assert rows["align_shift_alloc_test"]["as_expected"] and r.ok


def test_xfail_test_that_passes_is_failed(monkeypatch):
    sc = tv.SCENARIOS[6]
    monkeypatch.setattr(tv, "SCENARIOS", tv.SCENARIOS[:6] + (
        tv.Scenario(sc.name, lambda space, rng, p: True, supposed_to_fail=True),)
        + tv.SCENARIOS[7:])
    monkeypatch.setattr(drv, "SCENARIOS", tv.SCENARIOS)
    r = drv.run(drv.make_space("node", True), tv.Params(run_test_mask=0x40), seed=1)
    assert (r.summary()[0]["failed"], r.summary()[0]["xfailed"]) == (1, 0)
    assert not r.ok


def test_shuffle_array_moves_every_element():
    rng = tv.KernelRandom(5)
    for n in range(2, 12):
        for _ in range(20):
            arr = list(range(n))
            tv.shuffle_array(arr, rng)
            assert sorted(arr) == list(range(n))
            assert all(arr[i] != i for i in range(n))  # j < i: Sattolo's cycle


def test_workers_shuffle_unless_sequential():
    space = drv.make_space("node", True)
    mask = 0x1 | 0x8 | 0x10 | 0x20 | 0x100 | 0x200
    r = drv.run(space, tv.Params(run_test_mask=mask, nr_threads=4, test_loop_count=2),
                seed=11)
    orders = [w.order for w in r.workers]
    assert all(sorted(o) == tv.selected(mask) for o in orders)
    assert any(o != tv.selected(mask) for o in orders)


def test_reference_under_threads_is_serialized():
    """ReferenceSpace has no locks: run() shares it through one lock, so that
    several workers leave it sound (unserialized, its lists get corrupted)."""
    mask = 0x1 | 0x8 | 0x10 | 0x20 | 0x100 | 0x200 | 0x400
    for seed in range(25):
        space = drv.make_space("node", True)
        r = drv.run(space, tv.Params(run_test_mask=mask, nr_threads=3, test_loop_count=30,
                                     nr_pages=2), seed=seed)
        assert r.ok, drv.verdict(r)
        _assert_returned(space)


@pytest.mark.parametrize("lock", LOCKS)
def test_python_threads_share_one_core_space_every_lock(lock):
    _util.require_core()
    mask = tv.ALL_TESTS_MASK & ~0x2 & ~0x4 & ~0x80    # the heavy fixed-size ones out
    space = drv.make_space(lock)
    r = drv.run(space, tv.Params(run_test_mask=mask, nr_threads=4, test_loop_count=300,
                                 test_repeat_count=2, nr_pages=3), seed=7)
    for row in r.summary():
        if row["supposed_to_fail"]:
            assert (row["passed"], row["failed"], row["xfailed"]) == (0, 0, 8), row
        else:
            assert (row["passed"], row["failed"], row["xfailed"]) == (8, 0, 0), row
        assert row["avg_usec"] > 0
    assert r.ok, drv.verdict(r)
    assert r.locks is not None
    assert r.locks["global" if lock == "global" else "busy"]["acquisitions"] > 0
    _assert_returned(space)


def test_run_locks_all_tests_and_progress(reference):
    calls = []
    p = tv.Params(test_loop_count=40, online_cpus=1, run_test_mask=tv.ALL_TESTS_MASK)
    runs = drv.run_locks(["node", "global"], p, seed=1, reference=reference,
                         progress=lambda d, t, c: calls.append((d, t, c)))
    assert [r.lock for r in runs] == ["node", "global"]
    assert all(r.ok for r in runs), [drv.verdict(r) for r in runs]
    assert calls[-1] == (22, 22, None)
    lines = drv.kernel_lines(runs[0])
    assert lines[0].startswith("Summary: ") and " repeat: 1 loops: 40 avg: " in lines[0]
    assert lines[-1].startswith("All test took worker0=")
    assert "align_shift_alloc_test passed: 0 failed: 0 xfailed: 1" in "\n".join(lines)


def test_a_bug_in_a_scenario_is_raised(monkeypatch):
    def broken(space, rng, params):
        space.free(12345)                               # not an area: KeyError
    monkeypatch.setattr(drv, "SCENARIOS", (tv.Scenario("broken", broken),))
    with pytest.raises(KeyError):
        drv.run(drv.make_space("node", True), tv.Params(run_test_mask=1), seed=1)


# -- the kernel's Summary lines ------------------------------------------------------------

#: Lines as a 2025 kernel prints them into its log (dmesg), in the module's
#: format: "Summary: %s passed: %d failed: %d xfailed: %d repeat: %d loops: %d
#: avg: %llu usec", then "All test took worker%d=%lu cycles".
KERNEL_LOG = """\
[  512.100201] Summary: fix_size_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1000000 avg: 1320371 usec
[  512.100205] Summary: full_fit_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1000000 avg: 1706113 usec
[  512.100207] Summary: long_busy_list_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1000000 avg: 8424566 usec
[  512.100209] All test took worker0=30345567204 cycles
[  512.100211] Summary: fix_size_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1000000 avg: 1308040 usec
[  512.100213] Summary: full_fit_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1000000 avg: 1712284 usec
[  512.100214] Summary: long_busy_list_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 1000000 avg: 8399501 usec
[  512.100216] All test took worker1=30296613388 cycles
[  512.100220] Summary: align_shift_alloc_test passed: 0 failed: 0 xfailed: 1 repeat: 1 loops: 1000000 avg: 11 usec
"""


def test_parse_kernel_log_reads_a_kernels_dmesg():
    rows = drv.parse_kernel_log(KERNEL_LOG)
    assert [(r["worker"], r["name"]) for r in rows] == [
        (0, "fix_size_alloc_test"), (0, "full_fit_alloc_test"), (0, "long_busy_list_alloc_test"),
        (1, "fix_size_alloc_test"), (1, "full_fit_alloc_test"), (1, "long_busy_list_alloc_test"),
        (2, "align_shift_alloc_test")]
    assert rows[2] == {"worker": 0, "name": "long_busy_list_alloc_test", "passed": 1,
                       "failed": 0, "xfailed": 0, "repeat": 1, "loops": 1000000,
                       "avg_usec": 8424566}
    assert rows[-1]["xfailed"] == 1


def test_parse_kernel_log_before_the_xfail_column():
    old = ("test_vmalloc: Summary: fix_size_alloc_test passed: 3 failed: 0 repeat: 3 "
           "loops: 100 avg: 77 usec\n")
    assert drv.parse_kernel_log(old) == [{"worker": 0, "name": "fix_size_alloc_test",
                                          "passed": 3, "failed": 0, "xfailed": None,
                                          "repeat": 3, "loops": 100, "avg_usec": 77}]


def test_our_summary_lines_parse_as_the_kernels(reference):
    p = tv.Params(run_test_mask=0x59, nr_threads=2, test_loop_count=7, test_repeat_count=2,
                  sequential_test_order=True)
    r = drv.run(drv.make_space("node", reference), p, seed=5)
    lines = drv.kernel_lines(r)
    rows = drv.parse_kernel_log("\n".join(lines))
    assert len(rows) == 2 * 4
    for line in lines:
        if line.startswith("Summary:"):
            assert drv.SUMMARY_RE.fullmatch(line), line
    for w in r.workers:
        got = [x for x in rows if x["worker"] == w.index]
        assert [x["name"] for x in got] == [tv.SCENARIOS[i].name for i in w.order]
        for x in got:
            d = w.data[[s.name for s in tv.SCENARIOS].index(x["name"])]
            assert (x["passed"], x["failed"], x["xfailed"], x["repeat"], x["loops"]) == (
                d.passed, d.failed, d.xfailed, 2, 7)


# -- the command line (Python driver; the native one in test_tvmalloc_native.py) ------------

CHEAP = str(0x1 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400)


def test_cli_end_to_end_json(reference, tmp_path, capsys):
    out = tmp_path / "tv.json"
    argv = ["test-vmalloc", "--driver", "python", "--test-loop-count", "30", "--nr-threads",
            "2", "--test-repeat-count", "2", "--nr-pages", "2", "--seed", "9",
            "--run-test-mask", CHEAP, "--json", str(out)]
    if reference:
        argv = [a for a in argv if a not in ("--driver", "python")] + ["--reference"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "vm_map_ram_test" in text
    data = json.loads(out.read_text())
    locks = ["node"] if reference else list(LOCKS)
    assert [r["lock"] for r in data["runs"]] == locks
    assert all(r["driver"] == "python" and r["kernel"] == "6.16" for r in data["runs"])
    assert data["params"]["nr_threads"] == 2 and data["seed"] == 9
    for r in data["runs"]:
        assert r["ok"] and r["check_ok"] and r["empty"]
        assert r["impl"] == ("reference" if reference else "core")
        assert len(r["workers"]) == 2
        assert [s["id"] for s in r["summary"]] == [1 << i for i in tv.selected(int(CHEAP))]
        shift = next(s for s in r["summary"] if s["name"] == "align_shift_alloc_test")
        assert (shift["passed"], shift["failed"], shift["xfailed"]) == (0, 0, 4)


def test_cli_whole_mask_small_loops(capsys):
    assert main(["test-vmalloc", "--reference", "--test-loop-count", "10", "--run-test-mask",
                 "0x7ff", "--sequential-test-order", "--kernel-log", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    for name in NAMES:
        assert f"Summary: {name} passed: " in text
    assert "reference/6.16/node: all as expected; check() ok, space empty" in text


def test_cli_kernel_log_lines(capsys):
    assert main(["test-vmalloc", "--reference", "--locks", "global", "--test-loop-count",
                 "5", "--run-test-mask", "0x41", "--seed", "1", "--kernel-log"]) == 0
    text = capsys.readouterr().out
    assert ("Summary: fix_size_alloc_test passed: 1 failed: 0 xfailed: 0 repeat: 1 loops: 5 "
            "avg: ") in text
    assert "Summary: align_shift_alloc_test passed: 0 failed: 0 xfailed: 1" in text
    assert "reference/6.16/global: all as expected" in text and "PASS" in text


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
    ["--json", "/nonexistent/dir/x.json"], ["--kernel", "5.4"], ["--preset", "sanity"],
    ["--driver", "native"], ["--compare", "seed"], ["--cpus", "0"]])
def test_cli_usage_errors(argv, capsys):
    assert main(["test-vmalloc", "--reference", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_fails_when_scenarios_fail(monkeypatch, capsys):
    """A space too small for long_busy_list: exit status 1, the row in the table."""
    from vmap_core.reference import ReferenceSpace
    monkeypatch.setattr(drv, "make_space", lambda lock, reference=False, **kw:
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

"""The native test_vmalloc driver (_tvmalloc.pxi, vmap_core.kernel.driver.run_native)
and `test-vmalloc` on it: each native scenario against the Python one on the
same seed, the Summary lines, the presets, the emulated machine, --compare
cover-letter.  Loop counts are small; nothing here is timed."""

from __future__ import annotations

import json

import pytest

import _util

from vmap_core.cli import main
from vmap_core.kernel import driver as drv
from vmap_core.kernel import scenarios as tv

_util.require_core()
from vmap_core import _space  # noqa: E402

FNV_OFFSET, FNV_PRIME, M64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
NATIVE = tv.selected(drv.NATIVE_MASK)


class Recording:
    """A worker's view of a space on one CPU that records what the native
    worker counts: allocations that returned an area, NULLs, and the FNV-1a
    hash of the addresses handed out, in order."""

    def __init__(self, space, cpu):
        self._space, self.cpu = space, cpu
        self.allocs = self.nulls = 0
        self.hash = FNV_OFFSET

    def __getattr__(self, name):
        return getattr(self._space, name)

    def alloc(self, size, align=None, vstart=None, vend=None):
        try:
            a = self._space.alloc(size, align, vstart, vend, cpu=self.cpu)
        except Exception:
            self.nulls += 1
            raise
        self.allocs += 1
        self.hash = ((self.hash ^ a) * FNV_PRIME) & M64
        return a


def _state(space):
    spans = lambda areas: [(a.start, a.end) for a in areas]  # noqa: E731
    st = space.stats()
    return (spans(space.free_areas()), spans(space.lazy_areas()), space.pooled_areas(),
            spans(space), st["purges"], st["purged_areas"], st["lazy_pages"])


CASES = ([("6.16", "node", cpus, i) for cpus in (1, 64) for i in NATIVE]
         + [(k, lock, 48, i) for k, lock in (("6.8", "split"), ("6.9", "node"),
                                            ("6.16", "optimistic")) for i in NATIVE])


@pytest.mark.parametrize("kernel, lock, cpus, index", CASES)
def test_native_scenario_equals_the_python_one(kernel, lock, cpus, index):
    """Same seed, same CPU, fresh spaces of the same design: the native scenario
    returns what the Python one returns, makes the same allocations (count,
    NULLs, every address in order) and leaves the same free tree, lazy areas,
    pools and purge counts behind."""
    p = tv.Params(test_loop_count=300, online_cpus=cpus, nr_pages=3).effective()
    py_space = drv.make_space(lock, kernel=kernel, cpus=cpus)
    nat_space = drv.make_space(lock, kernel=kernel, cpus=cpus)
    rng = tv.KernelRandom.for_worker(1234, index)
    start = rng.state
    rec = Recording(py_space, cpu=5)
    ok = tv.SCENARIOS[index](rec, rng, p)
    res = _space.test_vmalloc_native(nat_space, [[index]], [5], [start], test_loop_count=300,
                                     online_cpus=cpus, nr_pages=3)
    t = res["workers"][0]["tests"][index]
    want = (1, 0, 0) if ok and index != 6 else (0, 0, 1) if index == 6 and not ok else None
    assert want is not None, (tv.SCENARIOS[index].name, ok)
    assert (t["passed"], t["failed"], t["xfailed"]) == want
    assert (t["allocs"], t["nulls"], t["hash"]) == (rec.allocs, rec.nulls, rec.hash)
    assert rec.allocs > 0
    assert _state(nat_space) == _state(py_space)
    assert res["free_errors"] == 0
    nat_space.check()


def test_native_scenarios_with_huge_pages_equal_the_python_ones():
    p = tv.Params(test_loop_count=20, online_cpus=4, nr_pages=600, use_huge=True).effective()
    a, b = drv.make_space("node", cpus=4), drv.make_space("node", cpus=4)
    rec = Recording(a, cpu=1)
    assert tv.fix_size_alloc_test(rec, tv.KernelRandom(3), p)
    res = _space.test_vmalloc_native(b, [[0]], [1], [3], test_loop_count=20, online_cpus=4,
                                     nr_pages=600, use_huge=True)
    t = res["workers"][0]["tests"][0]
    assert (t["allocs"], t["hash"]) == (rec.allocs, rec.hash)
    assert _state(a) == _state(b)


def test_the_native_mask_is_the_cores():
    assert _space.TEST_VMALLOC_NATIVE_MASK == drv.NATIVE_MASK
    assert drv.not_native(0x7FF) == ["pcpu_alloc_test", "vm_map_ram_test"]
    assert drv.not_native(7) == []


@pytest.mark.parametrize("kwargs", [
    dict(orders=[], cpus=[], rng_states=[]),
    dict(orders=[[0]], cpus=[0, 1], rng_states=[1]),
    dict(orders=[[7]], cpus=[0], rng_states=[1]),
    dict(orders=[[11]], cpus=[0], rng_states=[1]),
    dict(orders=[[0]], cpus=[0], rng_states=[1], test_loop_count=0),
])
def test_native_driver_rejects_bad_plans(kwargs):
    args = dict(test_loop_count=10)
    args.update(kwargs)
    space = drv.make_space("node", cpus=2)
    with pytest.raises(ValueError):
        _space.test_vmalloc_native(space, args.pop("orders"), args.pop("cpus"),
                                   args.pop("rng_states"), **args)
    assert len(space) == 0


def test_run_native_refuses_python_only_scenarios():
    with pytest.raises(ValueError, match="pcpu_alloc_test"):
        drv.run_native(drv.make_space("node"), tv.Params(run_test_mask=0x80))


@pytest.mark.parametrize("design", drv.COVER_LETTER_DESIGNS + [("6.8", "global"),
                                                               ("6.9", "rwlock")])
def test_native_threads_every_design_64_cpus(design):
    """--cpus 64 --nr-threads 2 for every design: every test as expected, the
    space sound and empty afterwards, and the lock statistics counted."""
    kernel, lock = design
    p = tv.Params(run_test_mask=0x3F, nr_threads=2, test_loop_count=300, online_cpus=64)
    r = drv.run_designs([design], p, seed=3, cpus=64)[0]
    assert r.driver == "native" and r.design == f"{kernel}/{lock}" and r.cpus == 64
    assert r.ok, drv.verdict(r)
    assert r.stats["nr_nodes"] == (1 if kernel == "6.8" else 64)
    locks = r.locks
    taken = sum(locks[k]["acquisitions"] for k in ("busy", "lazy", "pool", "free", "global"))
    assert taken > 2 * 300 * 4
    assert 0 <= locks["contended"] <= taken
    if lock == "global":
        assert locks["global"]["acquisitions"] > 0 and locks["busy"]["acquisitions"] == 0
    else:
        assert locks["busy"]["acquisitions"] > 0 and locks["global"]["acquisitions"] == 0
    assert r.lock_wait_share is not None and 0 <= r.lock_wait_share
    for w in r.workers:
        assert w.usec > 0
        for i in w.order:
            assert w.data[i].allocs > 0 and w.data[i].hash is not None


def test_native_more_workers_than_cpus_and_repeats():
    p = tv.Params(run_test_mask=drv.NATIVE_MASK & ~0x6, nr_threads=6, test_loop_count=200,
                  test_repeat_count=2, online_cpus=3, nr_pages=2)
    r = drv.run_designs([("6.16", "node")], p, seed=8, cpus=3)[0]
    assert r.ok, drv.verdict(r)
    assert [w.cpu for w in r.workers] == [0, 1, 2, 0, 1, 2]
    for row in r.summary():
        want = (0, 0, 12) if row["supposed_to_fail"] else (12, 0, 0)
        assert (row["passed"], row["failed"], row["xfailed"]) == want, row
    rows = drv.parse_kernel_log("\n".join(drv.kernel_lines(r)))
    assert len(rows) == 6 * len(r.summary())
    assert all(x["repeat"] == 2 and x["loops"] == 200 for x in rows)


def test_lock_statistics_count_waits_only_when_contended():
    """One worker: no lock is ever contended, so nothing waited."""
    r = drv.run_designs([("6.8", "split")], tv.Params(run_test_mask=1, test_loop_count=2000),
                        seed=1, cpus=4)[0]
    assert r.locks["contended"] == 0 and r.locks["wait_ns"] == 0
    assert r.locks["busy"]["acquisitions"] >= 2 * 2000


# -- the command line ----------------------------------------------------------------------

def test_cli_native_by_default_json(tmp_path, capsys):
    out = tmp_path / "tv.json"
    assert main(["test-vmalloc", "--cpus", "64", "--nr-threads", "2", "--kernel", "6.8,6.16",
                 "--lock", "split,node", "--test-loop-count", "500", "--seed", "4",
                 "--kernel-log", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "native driver: 2 native threads without the GIL" in flat
    assert "emulated 64-CPU machine (64 nodes from 6.9 on, lazy_max_pages 57,344)" in flat
    assert "run_test_mask 0x7" in flat and "PASS" in flat
    rows = drv.parse_kernel_log(text)
    assert len(rows) == 2 * 2 * 3                      # designs x workers x tests
    data = json.loads(out.read_text())
    assert [(r["kernel"], r["lock"], r["driver"], r["cpus"]) for r in data["runs"]] == [
        ("6.8", "split", "native", 64), ("6.16", "node", "native", 64)]
    for r in data["runs"]:
        assert r["ok"] and r["locks"]["busy"]["acquisitions"] > 0
        assert r["stats"]["lazy_max_pages"] == 57344
        assert [w["cpu"] for w in r["workers"]] == [0, 1]
    assert [d["design"] for d in data["designs"]] == ["6.8/split", "6.16/node"]


@pytest.mark.parametrize("preset, extra, want", [
    ("performance", [], {"sequential_test_order": True, "test_repeat_count": 3,
                         "nr_threads": 1, "test_loop_count": 300}),
    ("smoke", ["--test-loop-count", "200"], {"test_loop_count": 200, "test_repeat_count": 10}),
    ("stress", ["--cpus", "3"], {"nr_threads": 3, "test_repeat_count": 20,
                                 "online_cpus": 3}),
    ("stress", ["--cpus", "3", "--test-repeat-count", "2"], {"test_repeat_count": 2}),
])
def test_cli_presets(preset, extra, want, tmp_path, capsys):
    out = tmp_path / "p.json"
    argv = ["test-vmalloc", "--preset", preset, "--lock", "node", "--run-test-mask", "0x19",
            "--seed", "1", "--json", str(out), *extra]
    if "--test-loop-count" not in extra:
        argv += ["--test-loop-count", "300"]
    assert main(argv) == 0
    params = json.loads(out.read_text())["params"]
    for k, v in want.items():
        assert params[k] == v, (k, params)


def test_cli_compare_cover_letter(tmp_path, capsys):
    out = tmp_path / "cl.json"
    assert main(["test-vmalloc", "--compare", "cover-letter", "--test-loop-count", "300",
                 "--nr-threads", "2", "--rounds", "2", "--seed", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "651.27" in text and "51.30" in text and "93.07%" in text and "16.51%" in text
    assert "12.7x" in flat and "Threadripper 3970X" in flat
    assert "target" not in text and "issue" not in text
    for line in text.splitlines():
        assert len(line) <= 80, line
    data = json.loads(out.read_text())
    assert data["rounds"] == 2 and data["compare"]["speedup"] == pytest.approx(12.695, abs=1e-3)
    designs = {d["design"]: d for d in data["designs"]}
    assert list(designs) == [f"{k}/{lock}" for k, lock in drv.COVER_LETTER_DESIGNS]
    for d in designs.values():
        assert len(d["rounds_wall_s"]) == 2 and d["wall_s"] == min(d["rounds_wall_s"])
        assert isinstance(d["noisy"], bool) and d["lock_wait_share"] is not None
        assert 0 <= d["contended_share"] <= 1
    assert designs["6.8/split"]["speedup_vs_6_8"] == 1.0
    assert all(r["cpus"] == 64 for r in data["runs"])


@pytest.mark.parametrize("argv, message", [
    (["--run-test-mask", "0x80"], "--driver python"),
    (["--run-test-mask", "0x7ff"], "vm_map_ram_test"),
    (["--kernel", "6.8", "--lock", "node"], "6.8"),
])
def test_cli_native_usage_errors(argv, message, capsys):
    assert main(["test-vmalloc", *argv]) == 2
    assert message in capsys.readouterr().err


def test_an_interrupt_stops_the_native_workers(tmp_path):
    """Ctrl-C during a long native run: the workers stop at their next loop,
    are joined, and the command exits with 130."""
    import signal
    import subprocess
    import sys
    import time
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmap_core", "test-vmalloc", "--cpus", "8", "--nr-threads", "3",
         "--test-loop-count", "1000000000", "--lock", "node"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_util.subprocess_env(),
        cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_cli_thread_bounds_match_the_core(capsys):
    """The CLI refuses more native threads than the core runs, as a usage
    error before any work (the core's bound is the one CLI constant)."""
    from vmap_core import _space
    from vmap_core.cli import common
    assert common.MAX_NATIVE_THREADS == _space.MAX_NATIVE_THREADS
    too_many = str(common.MAX_NATIVE_THREADS + 1)
    for argv in (["test-vmalloc", "--nr-threads", too_many],
                 ["usercopy", "--threads", too_many]):
        assert main(argv) == 2
        assert too_many in capsys.readouterr().err

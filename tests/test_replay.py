"""Replay (vmap_core.replay, python -m vmap_core replay) and the recorder.

* Traces vmap_core records itself (trace=) replay at 100% from an empty
  start, for every profile and workload: every allocation at the recorded
  address, purges, failed allocations and nr_lazy equal.
* From a start the trace does not show (a warm-up that is not recorded), the
  inference keeps the agreement above a floor on workloads of the shared
  trace's kind.
* The shared real trace (Linux 6.18.44) keeps its agreement above a floor,
  its mismatches classified, the same in the core and the reference.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import pathlib

import pytest

import _util
from _workloads import record
from vmap_core.replay import CLASSES, RULES, replay
from vmap_core.trace import parse_line

DATA = pathlib.Path(__file__).parent / "data"
REAL = DATA / "vmalloc-trace-6.18.44-16cpu.txt.gz"
BEFORE = DATA / "vmallocinfo-before.txt"
KERNELS = ("6.8", "6.9", "6.16")


def exact(report, min_allocations=300):
    j = report.to_json()
    assert j["allocations"] > min_allocations
    assert j["at_kernel_address"] == j["allocations"], j["mismatches"]
    assert sum(j["mismatches"].values()) == 0
    assert j["failed_allocations"]["kernel"] == j["failed_allocations"]["model_also_failed"]
    assert all(p["equal_count"] and p["equal_range"] for p in j["purges"])
    assert j["nr_lazy"]["equal"] == j["nr_lazy"]["compared"] > 0
    assert j["skipped_events"] == {}
    return j


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("workload", ["stacks", "mixed"])
def test_recorded_trace_replays_exactly(kernel, workload):
    core = _util.require_core()
    text, space = record(core, workload, kernel=kernel, steps=1500, seed=7)
    j = exact(replay(io.StringIO(text), kernel=kernel, start="empty"))
    assert j["profile"] == kernel and j["space"]["nr_nodes"] == space.nr_nodes
    if workload == "mixed":                    # the overflow path was exercised
        assert j["failed_allocations"]["kernel"] > 0 and j["inferences"]["full_purge"] > 0


def test_recorded_trace_replays_exactly_in_the_reference():
    core = _util.require_core()
    text, _ = record(core, "mixed", kernel="6.9", steps=600, seed=3)
    exact(replay(io.StringIO(text), kernel="6.9", start="empty", impl="reference"))


def test_core_and_reference_record_the_same_trace():
    core = _util.require_core()
    texts = []
    for cls in (core, _util.ReferenceSpace):
        text, _ = record(cls, "mixed", kernel="6.16", steps=800, seed=5)
        texts.append([line.split(": ", 1)[1] for line in text.splitlines()
                      if not line.startswith("#")])       # without task, cpu, time
    assert texts[0] == texts[1] and len(texts[0]) > 800


def test_recorder_lines_are_the_kernels_format():
    core = _util.require_core()
    for kernel, failure in (("6.9", "vend"), ("6.16", "ENOENT")):
        out = io.StringIO()
        s = core(0x100000, 0x100000 + 8 * 4096, nr_nodes=2, kernel=kernel, trace=out,
                 lazy_max_pages=5)
        a = s.alloc(4 * 4096, cpu=1)
        with pytest.raises(MemoryError):
            s.alloc(8 * 4096, cpu=1)
        s.free_lazy(a)
        s.free_lazy(s.alloc(2 * 4096, cpu=0))          # past lazy_max_pages: a purge
        text = out.getvalue()
        assert "#P:2" in text.splitlines()[2]
        events = [e for e in (parse_line(x, i) for i, x in enumerate(text.splitlines()))
                  if e is not None]
        kinds = [e.kind for e in events]
        assert kinds == ["alloc", "alloc", "purge", "alloc", "free", "alloc", "free",
                         "purge"], kinds
        first = events[0]
        assert (first.va_start, first.size, first.align, first.vstart, first.vend,
                first.failed, first.cpu) == (0x100000, 4 * 4096, 4096, 0x100000,
                                             0x100000 + 8 * 4096 - 1, False, 1)
        assert events[1].failed and events[1].error == failure
        assert events[4].nr_lazy == 4 and events[4].nr_lazy_max == 5
        assert (events[7].num_purged, events[7].start) == (2, 0x100000)


@pytest.mark.parametrize("kernel,floor", [("6.8", 0.95), ("6.9", 0.85), ("6.16", 0.85)])
def test_inferred_start_keeps_the_agreement_of_an_unseen_warm_up(kernel, floor):
    """A thread-stack workload whose first 1500 steps are not in the trace:
    the replay infers what they left (areas busy, lazy and in pools)."""
    core = _util.require_core()
    for seed in (1, 2):
        text, _ = record(core, "stacks", kernel=kernel, steps=3000, warmup=1500, seed=seed)
        j = replay(io.StringIO(text), kernel=kernel).to_json()
        assert j["agreement"] >= floor, (seed, j["agreement"], j["mismatches"])
        assert j["inferences"]["pretrace_busy"] > 0 and j["inferences"]["unseen_busy"] > 0


def test_inferred_start_on_a_recycling_workload_is_measured_not_exact():
    """Sizes up to 300 pages, alignments up to 1 MiB, a space that fills up:
    the areas from before the trace are reused all along, so the agreement is
    lower; every allocation is still accounted for."""
    core = _util.require_core()
    text, _ = record(core, "mixed", kernel="6.16", steps=3000, warmup=1500, seed=1)
    j = replay(io.StringIO(text)).to_json()
    assert 0.5 <= j["agreement"] < 1
    assert j["at_kernel_address"] + sum(v for k, v in j["mismatches"].items()
                                        if k != "kernel_failed") == j["allocations"]


# -- the shared real trace --------------------------------------------------------

@pytest.fixture(scope="module")
def real_reports():
    _util.require_core()
    return {k: replay(REAL, kernel=k, vmallocinfo_before=BEFORE).to_json() for k in KERNELS}


def test_shared_trace_agreement_floor(real_reports):
    j = real_reports["6.16"]
    assert j["allocations"] == 8069
    assert j["agreement"] >= 0.835, j["mismatches"]
    pre = j["inferences"]["pretrace_handed_out"]
    assert j["at_kernel_address"] / (j["allocations"] - pre) >= 0.995
    # what is left: areas from before the trace, and a few shape-dependent fits
    assert j["mismatches"]["kernel_pool"] == pre
    assert j["mismatches"]["lowest_fit"] <= 20
    assert j["mismatches"]["model_pool"] == j["mismatches"]["cannot_give"] == 0
    assert all(p["equal_count"] and p["equal_range"] for p in j["purges"])
    assert j["inferences"]["pretrace_lazy_pages"] == 850
    assert j["inferences"]["pretrace_lazy_purged"] == 84


def test_shared_trace_every_profile(real_reports):
    for k, j in real_reports.items():
        assert j["profile"] == k and j["agreement"] >= 0.83, (k, j["mismatches"])
        assert j["at_kernel_address"] + sum(j["mismatches"].values()) == j["allocations"]
    # v6.8 has no pools: the pool hits cannot be a model's pool either
    assert real_reports["6.8"]["mismatches"]["kernel_pool"] == 0
    assert real_reports["6.8"]["space"]["nr_nodes"] == 1


def test_shared_trace_core_and_reference_agree(tmp_path):
    """The reference replays the first 4000 lines of the real trace to the
    same report as the core (the trees' shapes decide the kernel search)."""
    core = _util.require_core()
    head = tmp_path / "head.txt"
    with gzip.open(REAL, "rt") as f:
        head.write_text("".join(itertools.islice(f, 4000)))
    reports = [replay(head, impl=impl, vmallocinfo_before=BEFORE).to_json()
               for impl in ("core", "reference")]
    for j in reports:
        del j["space"]["impl"]
    assert reports[0] == reports[1]
    assert core is not None


def test_split_reports_the_part_the_inference_did_not_see(real_reports):
    j = replay(REAL, split=0.5, vmallocinfo_before=BEFORE, divergences=0).to_json()
    s = j["split"]
    assert s["seen"]["allocations"] + s["unseen"]["allocations"] == j["allocations"]
    assert s["unseen"]["at_kernel_address"] / s["unseen"]["allocations"] >= 0.85


def test_report_json_has_the_keys(real_reports):
    j = real_reports["6.16"]
    for key in ("allocations", "at_kernel_address", "mismatches", "inferences", "profile"):
        assert key in j
    assert set(j["mismatches"]) == set(CLASSES) and set(j["inferences"]) == set(RULES)
    d = j["divergences"][0]
    assert {"line", "cpu", "class", "cause", "kernel", "model", "neighbourhood"} <= set(d)
    json.dumps(j)


# -- the command line ------------------------------------------------------------------

def test_cli_replay_json_and_plot(tmp_path, capsys):
    _util.require_core()
    from vmap_core.cli import main
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["replay", str(REAL), "--vmallocinfo-before", str(BEFORE), "--json", str(out),
                 "--plot", str(png), "--divergences", "3"]) == 0
    text = capsys.readouterr().out
    assert "allocations at the kernel's address:" in text and "kernel_pool" in text
    j = json.loads(out.read_text())
    assert j["profile"] == "6.16" and len(j["divergences"]) == 3
    assert png.stat().st_size > 10_000


def test_cli_replay_errors(tmp_path, capsys):
    from vmap_core.cli import main
    bad = tmp_path / "bad.txt"
    bad.write_text("  a-1 [000] 1.0: alloc_vmap_area: va_start: 1 size=2\n")
    assert main(["replay", str(bad)]) == 1
    assert f"{bad}:1: malformed alloc_vmap_area event" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing")]) == 1
    assert main(["replay", str(REAL), "--kernel", "5.4"]) == 1
    assert main(["replay", "-"]) != 0               # stdin cannot be read twice
    assert main(["replay", str(REAL), "--split", "2"]) != 0


def test_allocations_traced_out_of_lock_order_are_replayed_in_lock_order():
    """Two allocations of the same request printed in the opposite order to
    the one in which they took the free lock: both count, once reordered."""
    core = _util.require_core()
    out = io.StringIO()
    s = core(0x100000, 0x100000 + 64 * 4096, nr_nodes=1, trace=out)
    for _ in range(4):
        s.alloc(2 * 4096, 2 * 4096)
    lines = out.getvalue().splitlines()
    first = next(i for i, line in enumerate(lines) if "alloc_vmap_area" in line)
    lines[first + 1], lines[first + 2] = lines[first + 2], lines[first + 1]
    j = replay(io.StringIO("\n".join(lines) + "\n"), start="empty").to_json()
    assert (j["at_kernel_address"], j["allocations"]) == (4, 4)
    assert j["inferences"]["lock_order"] == 1

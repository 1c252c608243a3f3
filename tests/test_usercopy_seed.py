"""usercopy's per-lookup counts, noise marking, 80-column tables, memory and
CPU checks, and `usercopy --compare seed [--calibrate]` (vmap_core.seed).
Cells are tiny; nothing here is timed."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import pytest
from rich.console import Console

import _util

from vmap_core import anchors, cli, measure, seed, usercopy
from vmap_core.cli import usercopy as uc_cmd

TINY = dict(buffers=48, buffer_size=16384, copy_size=512, seconds=0.03, churn_us=20,
            work_ns=0, nr_nodes=None)


def rows_of(rates, rounds=None):
    """Rows as run_sweep returns them, from {(design, threads): requests/s}."""
    out = []
    for (d, t), r in rates.items():
        kernel, mode = usercopy.parse_design(d)
        out.append({"mode": mode, "kernel": kernel, "design": d, "threads": t,
                    "requests_per_s": r, "requests": int(r), "elapsed": 1.0,
                    "rounds": list(rounds or [r, r * 0.95]), "noisy": False,
                    "noisy_reason": None, "node_locks_per_lookup": 1.0, "off_first_node": 0.4,
                    "contended_per_lookup": 0.001, "retries_per_lookup": 0.0,
                    "nodes_per_lookup": 2.0, "lock_wait_share": 0.01, "lookups": int(r)})
    return out


def render(renderable, width=80) -> str:
    con = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    con.print(renderable)
    return con.export_text()


# -- designs --------------------------------------------------------------------------

@pytest.mark.parametrize("design, want", [
    ("node", ("6.16", "node")), ("nocheck", ("6.16", "nocheck")), ("6.8", ("6.8", "split")),
    ("6.8/split", ("6.8", "split")), ("6.9/rwlock", ("6.9", "rwlock")),
    ("6.12/node", ("6.9", "node")), ("6.9/unlocked", ("6.9", "unlocked"))])
def test_parse_design(design, want):
    assert usercopy.parse_design(design) == want


@pytest.mark.parametrize("design", ["bogus", "6.8/node", "6.9/split", "5.10/node", "split",
                                    "6.9/bogus"])
def test_parse_design_refuses(design):
    with pytest.raises(ValueError):
        usercopy.parse_design(design)


# -- the native cell ---------------------------------------------------------------------

def _cell(mode, **kw):
    _util.require_core()
    from vmap_core import _space
    args = dict(buffers=96, buffer_size=65536, copy_size=1024, seconds=0.05, churn_us=20)
    args.update(kw)
    return _space.usercopy_run(mode, 2, **args)


def test_cell_counts_lookups_per_request():
    r = _cell("node", lookups=3, nr_nodes=4)
    assert r["requests"] > 0 and r["lookups"] == 3 * r["requests"]
    assert _cell("nocheck", lookups=3)["lookups"] == 0


def test_cell_walks_as_each_kernel_walks():
    """48 nodes, 68 KiB areas over 64 KiB zones: the 6.9 walk goes up through
    the nodes when the lookup starts past its area's node, the 6.16 walk
    down, one node; 6.8 has one node."""
    up = _cell("node", kernel="6.9", nr_nodes=48, count_lookups=20000)
    down = _cell("node", kernel="6.16", nr_nodes=48, count_lookups=20000)
    one = _cell("split", kernel="6.8", count_lookups=5000)
    off_up, off_down = (r["walk_off_first"] / r["walk_lookups"] for r in (up, down))
    assert 0.3 < off_up < 0.6 and 0.3 < off_down < 0.6
    assert up["walk_nodes"] / up["walk_lookups"] > 15
    assert 1 < down["walk_nodes"] / down["walk_lookups"] < 2.1
    assert one["walk_nodes"] == one["walk_lookups"] and one["walk_off_first"] == 0
    assert (one["kernel"], one["lock"], one["nr_nodes"]) == ("6.8", "split", 1)


def test_lazy_writer_purges():
    r = _cell("node", nr_nodes=4, lazy_writer=True, lazy_max_pages=16, seconds=0.1)
    assert r["churn_ops"] > 8 and r["churn_purges"] > 0
    assert r["locks"]["lazy"]["acquisitions"] >= r["churn_ops"]


@pytest.mark.parametrize("kwargs", [dict(mode="bogus"), dict(lookups=0), dict(threads=0),
                                    dict(buffer_size=5000), dict(copy_size=0),
                                    dict(mode="node", kernel="6.8"), dict(kernel="4.19")])
def test_cell_rejects_bad_arguments(kwargs):
    _util.require_core()
    from vmap_core import _space
    args = dict(mode="node", threads=1, buffers=4, seconds=0.01)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError)):
        _space.usercopy_run(args.pop("mode"), args.pop("threads"), **args)


def test_work_calibration_keeps_its_loop():
    """The spin loop's result is kept: 1 µs of work is about a thousand
    iterations, not the tens of millions a loop the compiler dropped gives."""
    _util.require_core()
    from vmap_core import _space
    assert 0 < _space._calibrate_work(1000) < 1_000_000


# -- the sweep: per-lookup counts in the JSON, noise ---------------------------------------

def test_sweep_rows_carry_the_per_lookup_counts(tmp_path):
    out = tmp_path / "uc.json"
    assert cli.main(["usercopy", "--threads", "2", "--rounds", "2", "--buffers", "48",
                     "--seconds", "0.03", "--churn-us", "20", "--cpus", "16",
                     "--modes", "nocheck,unlocked,6.8,6.9/node,rwlock,optimistic,global",
                     "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["cpus"] == measure.available_cpus()
    res = {r["design"]: r for r in data["results"]}
    for r in res.values():
        assert len(r["rounds"]) == 2 and r["requests_per_s"] == max(r["rounds"])
        assert isinstance(r["noisy"], bool)
        for k in ("node_locks_per_lookup", "off_first_node", "contended_per_lookup",
                  "retries_per_lookup"):
            assert k in r
    assert res["nocheck"]["node_locks_per_lookup"] is None
    assert res["6.8"]["node_locks_per_lookup"] == 1.0 and res["6.8"]["off_first_node"] == 0
    assert res["6.9/node"]["node_locks_per_lookup"] > 1
    assert res["global"]["node_locks_per_lookup"] == 1.0
    assert res["unlocked"]["node_locks_per_lookup"] == 0
    assert res["optimistic"]["retries_per_lookup"] >= 0
    assert res["6.9/node"]["nr_nodes"] == 16 and res["6.8"]["nr_nodes"] == 1


def test_noise_marks_spread_and_floors():
    rows = rows_of({("nocheck", 1): 100.0, ("unlocked", 1): 80.0, ("node", 1): 90.0,
                    ("global", 1): 50.0, ("rwlock", 1): 105.0})
    rows[3]["rounds"] = [50.0, 44.0]                     # 12% apart
    rows[0]["rounds"] = [100.0, 91.0]                    # 9%: not noisy
    usercopy.mark_noise(rows)
    by = {r["design"]: r for r in rows}
    assert not by["nocheck"]["noisy"] and not by["unlocked"]["noisy"]
    assert by["node"]["noisy"] and by["node"]["noisy_reason"] == "faster than unlocked"
    assert by["global"]["noisy"] and "12% apart" in by["global"]["noisy_reason"]
    assert by["rwlock"]["noisy"] and by["rwlock"]["noisy_reason"] == "faster than nocheck"


def test_noisy_cells_are_marked_in_the_table_and_summary():
    rows = rows_of({("nocheck", 2): 9.6e6, ("global", 2): 4.4e6, ("node", 2): 9.9e6})
    usercopy.mark_noise(rows)
    text = render(uc_cmd.format_table(rows, title="t"))
    assert "9.9M~" in text and "4.4M~" not in text
    assert "Noisy (~): node at 2 (faster than nocheck)" in uc_cmd.summary(rows)


def test_table_fits_80_columns_without_cutting_numbers():
    designs = ["nocheck", "unlocked", "global", "node", "rwlock", "optimistic", "6.8",
               "6.9/node"]
    rates = {(d, t): 53_712_345.0 / (k + 1) + t for k, d in enumerate(designs)
             for t in (1, 2, 4, 64)}
    rows = rows_of(rates, rounds=[1.0, 0.5])
    text = render(uc_cmd.format_table(rows, title="usercopy: a title " * 4))
    assert max(len(line) for line in text.splitlines()) <= 80
    for (d, t), r in rates.items():
        assert measure.si(r) in text
    assert "…" not in text


def test_seed_table_fits_80_columns_with_tiny_counts():
    rows = rows_of({(d, 2): 3.06e6 / (k + 1) for k, (d, _) in enumerate(seed.DESIGNS)},
                   rounds=[1.0, 0.5])
    for r in rows:
        r.update(node_locks_per_lookup=2.34e-06, contended_per_lookup=9.4e-07,
                 retries_per_lookup=3.3e-05, off_first_node=0.4621, noisy=True)
    text = render(uc_cmd.format_seed_table(seed.compare_rows(rows), title="t"))
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "2e-06" in text and "9e-07" in text and "46%" in text


@pytest.mark.parametrize("x, s", [(22.71, "22.7"), (1.4612, "1.46"), (0.41, "0.41"),
                                  (0.000313, "3e-04"), (0, "0"), (None, ""), (150.2, "150")])
def test_per_lookup_counts_are_short(x, s):
    assert uc_cmd._small(x) == s


@pytest.mark.parametrize("x, s", [(53.7e6, "53.7M"), (25.4e6, "25.4M"), (113_536.56, "114k"),
                                  (999_999, "1M"), (805_164.78, "805k"), (12.0, "12")])
def test_si_never_longer_than_six(x, s):
    assert measure.si(x) == s and len(measure.si(x)) <= 6


# -- memory and CPUs ---------------------------------------------------------------------

def test_memory_is_checked_before_anything(monkeypatch, capsys):
    def refuse(*a, **k):
        raise AssertionError("the sweep ran before the memory check")
    monkeypatch.setattr(usercopy, "run_sweep", refuse)
    monkeypatch.setattr(usercopy, "memory_available", lambda: 64 << 20)
    assert cli.main(["usercopy", "--buffers", "2000", "--buffer-size", "65536"]) == 2
    err = capsys.readouterr().err
    assert "125.0 MiB, more than the 64.0 MiB of memory available" in " ".join(err.split())
    with pytest.raises(MemoryError, match="fewer --buffers"):
        usercopy.check_memory(10, 1 << 30, available=1 << 30)
    usercopy.check_memory(10, 1 << 20, available=1 << 30)


def test_cpu_count_is_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert measure.available_cpus() == 1
    assert usercopy.default_threads() == [1, 2]
    assert usercopy.to_json([], {})["cpus"] == 1


# -- plots ------------------------------------------------------------------------------------

def test_plot_ratio_and_log():
    pytest.importorskip("matplotlib")
    rows = rows_of({("nocheck", 1): 100.0, ("node", 1): 50.0, ("nocheck", 2): 200.0,
                    ("node", 2): 80.0})
    fig = uc_cmd.figure(rows, title="x", ratio=True, log=True)
    ax = fig.axes[0]
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines() if ln.get_label()[0] != "_"}
    assert lines["node"] == [0.5, 0.4] and lines["nocheck"] == [1.0, 1.0]
    assert ax.get_yscale() == "log"


def test_seed_plot_has_reference_marks_and_a_fitting_title():
    pytest.importorskip("matplotlib")
    cmp = seed.compare_rows(rows_of({("nocheck", 2): 100.0, ("6.8/split", 2): 30.0,
                                     ("6.9/node", 2): 60.0, ("6.16/node", 2): 80.0}))
    title = "usercopy --compare seed: " + "a long title that goes on " * 6
    fig = uc_cmd.figure_seed(cmp, title=title)
    ax = fig.axes[0]
    marks = [ln for ln in ax.get_lines()]
    assert sorted(round(ln.get_ydata()[0], 3) for ln in marks) == sorted(
        round(anchors.SEED_BY_KEY[k].ratio, 3) for k in ("nocheck", "6.8", "6.9/node"))
    _util.assert_inside_figure(fig, ax.title)


# -- the seed's comparison -------------------------------------------------------------------

def test_seed_figures_and_buffers():
    assert anchors.SEED_BY_KEY["6.9/node"].ratio == pytest.approx(0.725, abs=1e-3)
    assert anchors.SEED_BY_KEY["6.8"].ratio == pytest.approx(0.141, abs=1e-3)
    assert anchors.SEED_BY_KEY["6.9/rwlock"].ratio == pytest.approx(0.571, abs=1e-3)
    assert anchors.SEED_BUFFERS == 4000 and anchors.SMC_SNDBUF == anchors.SMC_RMB == 64 << 10
    s = seed.Setup()
    assert (s.nr_nodes, s.lazy_max_pages, s.lookups) == (48, 6 * 8192, 4)
    assert seed.seed_cpu_ns_per_request() == pytest.approx(59_615, rel=1e-3)


def test_compare_seed_end_to_end(tmp_path, capsys):
    out = tmp_path / "seed.json"
    assert cli.main(["usercopy", "--compare", "seed", "--buffers", "96", "--seconds", "0.03",
                     "--rounds", "2", "--cpus", "8", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for line in text.splitlines():
        assert len(line) <= 80, line
    assert "…" not in text
    flat = " ".join(text.split())
    assert "805k" in text and "114k" in text and "584k" in text and "460k" in text
    assert "0.725" in text and "0.141" in text and "0.571" in text and "kzalloc" in text
    assert "64 KiB" in flat and "net.smc.wmem" in flat and "Order here, slowest first" in flat
    assert "target" not in text and "issue" not in text
    data = json.loads(out.read_text())
    cmp = {r["design"]: r for r in data["compare"]["rows"]}
    assert list(cmp) == [d for d, _ in seed.DESIGNS]
    assert cmp["6.9/node"]["seed_requests_per_s"] == pytest.approx(583_729.93)
    assert cmp["6.16/node"]["seed_requests_per_s"] is None
    for r in cmp.values():
        assert len(r["rounds"]) == 2 and isinstance(r["noisy"], bool)
        assert r["lookups"] is not None
    assert cmp["6.9/node"]["nodes_per_lookup"] > cmp["6.16/node"]["nodes_per_lookup"]
    assert data["params"]["lazy_writer"] is True and data["params"]["nr_nodes"] == 8
    assert data["params"]["buffer_size"] == 65536 and data["params"]["lookups"] == 4
    assert data["compare"]["calibration"] is None and data["compare"]["predictions"] == []
    assert sorted(data["compare"]["order"]) == sorted(seed.SEED_ORDER)


def _fake_sweep(copy_ns=200.0, hold_ns=150.0):
    """A model of the cells: nocheck takes work + lookups x copy per request on
    each thread; 6.8's lock serves at most 1/hold lookups per second."""
    calls = []

    def sweep(modes, threads_list, *, work_ns, lookups, seconds, rounds, progress=None, **kw):
        t = threads_list[0]
        per = work_ns + lookups * copy_ns
        rows = []
        for m in modes:
            free_rate = t / (per * 1e-9)
            rate = free_rate if m == "nocheck" else min(
                t / ((per + lookups * hold_ns) * 1e-9), 1e9 / (lookups * hold_ns))
            rows.append({"design": m, "mode": m, "threads": t, "requests_per_s": rate})
        calls.append((tuple(modes), lookups, work_ns))
        return rows
    return sweep, calls


def test_calibration_fits_the_two_rows(monkeypatch):
    sweep, calls = _fake_sweep()
    monkeypatch.setattr(seed.usercopy, "run_sweep", sweep)
    cal = seed.calibrate(seed.Setup(threads=48))
    per = seed.seed_cpu_ns_per_request()
    assert cal.feasible and cal.copy_ns == pytest.approx(200.0)
    assert cal.work_ns == int(per - cal.lookups * 200.0)
    assert cal.reached_ratio == pytest.approx(cal.target_ratio, rel=0.05)
    # the bisection was monotone: every step's ratio falls with its lookups
    steps = sorted(cal.steps, key=lambda s: s["lookups"])
    assert all(a["ratio"] >= b["ratio"] for a, b in zip(steps, steps[1:]))
    assert len(calls) < 20


def test_calibration_says_when_the_lock_cannot_saturate(monkeypatch):
    sweep, _ = _fake_sweep(hold_ns=20.0)
    monkeypatch.setattr(seed.usercopy, "run_sweep", sweep)
    cal = seed.calibrate(seed.Setup(threads=2))
    assert not cal.feasible and cal.reached_ratio > cal.target_ratio
    assert cal.lookups == int(seed.seed_cpu_ns_per_request() // 200.0)
    assert "never saturates" in cal.note


def test_predictions_hit_and_miss_with_reasons():
    cmp = seed.compare_rows(rows_of({("nocheck", 2): 1000.0, ("6.8/split", 2): 141.0,
                                     ("6.9/node", 2): 700.0, ("6.9/rwlock", 2): 300.0,
                                     ("6.16/node", 2): 900.0}))
    preds = {p["design"]: p for p in seed.predictions(cmp, lookups=4)}
    assert preds["6.9/node"]["verdict"] == "hit"
    assert preds["6.9/rwlock"]["verdict"] == "missed"
    assert "the walk visited 2.0 nodes per lookup" in preds["6.9/rwlock"]["reason"]
    assert preds["6.9/rwlock"]["needed_lookup_ns"] < preds["6.9/rwlock"]["lookup_ns"]
    assert preds["6.16/node"]["verdict"] == "not measured by the seed"
    text = seed.summary(cmp, list(preds.values()), None)
    assert "the seed's: global (6.8) < rwlock < per-node (6.9) < no lookup" in text


def test_calibrate_end_to_end_with_a_fake_sweep(monkeypatch, tmp_path, capsys):
    """--calibrate prints the fit and the predictions against the seed; the
    cells are modelled, so that the command's flow is tested, not the machine."""
    sweep, _ = _fake_sweep()

    def sweep_with_counts(modes, threads_list, **kw):
        rows = sweep(modes, threads_list, **kw)
        for r in rows:
            kernel, mode = usercopy.parse_design(r["design"])
            r.update(kernel=kernel, mode=mode, rounds=[r["requests_per_s"]] * 2, noisy=False,
                     noisy_reason=None, nodes_per_lookup=1.5, off_first_node=0.46,
                     node_locks_per_lookup=1.5, contended_per_lookup=0.0,
                     retries_per_lookup=0.0, lock_wait_share=0.0, lookups=1,
                     requests=1, elapsed=1.0)
        return rows
    monkeypatch.setattr(usercopy, "run_sweep", sweep_with_counts)
    out = tmp_path / "cal.json"
    assert cli.main(["usercopy", "--compare", "seed", "--calibrate", "--threads", "48",
                     "--json", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "calibrated at 48 threads" in text and "predictions" in text
    data = json.loads(out.read_text())
    cal = data["compare"]["calibration"]
    assert cal["feasible"] and data["params"]["lookups"] == cal["lookups"]
    assert [p["design"] for p in data["compare"]["predictions"]] == [
        "6.9/node", "6.9/rwlock", "6.16/node", "6.16/optimistic"]


@pytest.mark.parametrize("argv", [["--calibrate"], ["--compare", "bogus"],
                                  ["--nr-nodes", "4", "--cpus", "8"],
                                  ["--modes", "6.8/node"], ["--kernel", "6.8,6.9"]])
def test_seed_usage_errors(argv, capsys, monkeypatch):
    monkeypatch.setattr(usercopy, "run_sweep", lambda *a, **k: pytest.fail("ran"))
    assert cli.main(["usercopy", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_setup_cell_kwargs_follow_the_emulated_machine():
    s = dataclasses.replace(seed.Setup(), cpus=200, lookups=7, work_ns=5)
    kw = s.cell_kwargs()
    assert (kw["nr_nodes"], kw["lazy_max_pages"], kw["lookups"], kw["work_ns"]) == (
        128, 8 * 8192, 7, 5)
    assert kw["lazy_writer"] is True

"""The main job, `python -m vmap_core usercopy`, end to end on tiny cells."""

import json
import os
import subprocess
import sys

import pytest

import _util

from vmap_core import cli, usercopy
from vmap_core.cli import usercopy as uc_cmd

FAST = ["--buffers", "16", "--seconds", "0.02", "--churn-us", "10"]


def test_default_threads():
    assert usercopy.default_threads(1) == [1, 2]
    assert usercopy.default_threads(2) == [1, 2, 4]
    assert usercopy.default_threads(3) == [1, 2, 4, 6]
    assert usercopy.default_threads(8) == [1, 2, 4, 8, 16]


def test_sweep_json_and_table(tmp_path, capsys):
    out = tmp_path / "uc.json"
    assert cli.main(["usercopy", "--threads", "1,2", "--rounds", "2", *FAST,
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert isinstance(data["cpus"], int) and data["params"]["rounds"] == 2
    cells = {(r["mode"], r["threads"]) for r in data["results"]}
    assert cells == {(m, t) for m in usercopy.MODES for t in (1, 2)}
    for r in data["results"]:
        assert r["requests_per_s"] > 0 and len(r["rounds_per_s"]) == 2
        assert r["requests_per_s"] == max(r["rounds_per_s"])
    for mode in usercopy.MODES:
        assert mode in printed
    assert "1.00x" in printed                       # global against itself
    assert "±" in printed                           # the spread of the rounds is shown
    assert "target" not in printed and "issue" not in printed


def test_sweep_subset_of_modes():
    rows = usercopy.run_sweep(["node", "optimistic"], [1], buffers=8, buffer_size=8192,
                              copy_size=512, seconds=0.01, churn_us=10, work_ns=50,
                              nr_nodes=2, rounds=1)
    assert [(r["mode"], r["threads"]) for r in rows] == [("node", 1), ("optimistic", 1)]
    assert all(r["requests"] > 0 for r in rows)
    assert "optimistic" in uc_cmd.summary(rows)


def rows_of(rates):
    """Rows as run_sweep returns them, from {(mode, threads): requests/s}."""
    return [{"mode": m, "threads": t, "requests_per_s": r, "requests": int(r),
             "elapsed": 1.0, "rounds_per_s": [r, r * 0.9]} for (m, t), r in rates.items()]


def test_summary_compares_node_and_global_at_any_thread_count():
    """node and global both ran (not at 2 threads): the summary compares them."""
    text = uc_cmd.summary(rows_of({("node", 1): 300.0, ("global", 1): 200.0,
                                   ("node", 4): 600.0, ("global", 4): 200.0}))
    assert "No mode pair" not in text
    assert "At 4 threads per-node locks give 3.00x the global lock" in text
    assert "target" not in text


def test_summary_of_other_pairs_and_of_one_mode():
    text = uc_cmd.summary(rows_of({("rwlock", 8): 100.0, ("unlocked", 8): 400.0}))
    assert "At 8 threads, against rwlock: unlocked 4.00x." == text
    assert "give --modes two or more" in uc_cmd.summary(rows_of({("node", 1): 5.0}))


def test_spread_of_rounds():
    assert uc_cmd.spread({"rounds_per_s": [100.0, 90.0, 95.0]}) == pytest.approx(0.1)
    assert uc_cmd.spread({"rounds_per_s": [100.0]}) is None


@pytest.mark.parametrize("kwargs", [dict(modes=["bogus"]), dict(rounds=0)])
def test_sweep_rejects_bad_arguments(kwargs):
    args = dict(modes=["node"], threads_list=[1], buffers=4, buffer_size=8192, copy_size=64,
                seconds=0.01, churn_us=10, work_ns=0, nr_nodes=None, rounds=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        usercopy.run_sweep(args.pop("modes"), args.pop("threads_list"), **args)


@pytest.fixture
def no_sweep(monkeypatch):
    """Usage errors must come before any work: the sweep may not run."""
    def refuse(*a, **k):
        raise AssertionError("the sweep ran before the arguments were checked")
    monkeypatch.setattr(usercopy, "run_sweep", refuse)


@pytest.mark.parametrize("argv", [
    ["--threads", "0"], ["--threads", "x"], ["--modes", "node,bogus"], ["--seconds", "-1"],
    ["--seconds", "inf"], ["--seconds", "nan"],
    ["--buffer-size", "1000"], ["--copy-size", "70000"], ["--rounds", "0"],
    ["--json", "/nonexistent-dir/x.json"],
    ["--churn-us", "99999999999999999999"], ["--churn-us", "1e20"],
    ["--work-ns", "99999999999999999999"], ["--work-ns", "-1"],
    ["--nr-nodes", "2000"], ["--nr-nodes", "0"], ["--buffers", "10000000000"],
    ["--plot", "x.foo"], ["--plot", "/nonexistent-dir/x.png"],
])
def test_bad_options_are_usage_errors(argv, capsys, no_sweep):
    assert cli.main(["usercopy", *argv]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_plot_format_is_checked_before_the_sweep(capsys, no_sweep, tmp_path):
    pytest.importorskip("matplotlib")
    assert cli.main(["usercopy", "--plot", str(tmp_path / "x.foo")]) == 2
    err = capsys.readouterr().err
    assert "cannot write .foo images" in err and ".png" in err
    assert not (tmp_path / "x.foo").exists()


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch, capsys, no_sweep, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["usercopy", "--plot", str(tmp_path / "x.png")]) == 2
    assert 'pip install ".[plot]"' in capsys.readouterr().err


@pytest.mark.parametrize("name, magic", [("uc.png", b"\x89PNG\r\n\x1a\n"), ("uc", b"\x89PNG"),
                                         ("uc.svg", b"<?xml")])
def test_plot_writes_exactly_the_path(tmp_path, capsys, name, magic):
    pytest.importorskip("matplotlib")
    out = tmp_path / name
    assert cli.main(["usercopy", "--threads", "1", "--rounds", "1", "--modes", "global,node",
                     *FAST, "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert sorted(os.listdir(tmp_path)) == [name]
    assert f"wrote {out}" in capsys.readouterr().out


def test_plot_title_fits_the_figure():
    pytest.importorskip("matplotlib")
    title = "usercopy: " + "a very long title of many words " * 6
    fig = uc_cmd.figure(rows_of({("node", 1): 3.0, ("global", 1): 2.0}), title=title)
    _util.assert_inside_figure(fig, fig.axes[0].title)


def test_bare_command_prints_help(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    for command in ("usercopy", "info", "map", "test-vmalloc"):
        assert command in out


def test_module_entry_point_help():
    env = _util.subprocess_env()
    for argv in (["--help"], []):
        res = subprocess.run([sys.executable, "-m", "vmap_core", *argv], capture_output=True,
                             text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("usage: python -m vmap_core")
        for command in ("usercopy", "info", "map", "test-vmalloc"):
            assert command in res.stdout


def test_console_script_prints_help():
    """The installed `vmap-core` script, where this interpreter has it."""
    script = os.path.join(os.path.dirname(sys.executable), "vmap-core")
    if not os.path.exists(script):
        pytest.skip("vmap-core is not installed next to this interpreter")
    res = subprocess.run([script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: vmap-core")


# -- Python threads as the workers (--python-threads) ---------------------------

def test_python_threads_sweep(tmp_path, capsys):
    """--python-threads runs every mode a Python worker can (not "unlocked"),
    says whether the GIL serialises the workers, and records the worker kind."""
    from vmap_core import usercopy_python
    out = tmp_path / "py.json"
    assert cli.main(["usercopy", "--python-threads", "--threads", "1,2", "--rounds", "1",
                     *FAST, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["params"]["workers"] == "python"
    cells = {(r["mode"], r["threads"]) for r in data["results"]}
    assert cells == {(m, t) for m in usercopy.MODES if m != "unlocked" for t in (1, 2)}
    assert all(r["requests"] > 0 for r in data["results"])
    assert usercopy_python.gil_note() in printed
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    assert ("serialises" in printed) == gil


def test_python_threads_refuse_unlocked(capsys):
    from vmap_core.usercopy_python import python_cell
    assert cli.main(["usercopy", "--python-threads", "--modes", "node,unlocked", *FAST]) == 2
    assert "unlocked" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unlocked"):
        usercopy.run_sweep(["unlocked"], [1], buffers=8, buffer_size=8192, copy_size=512,
                           seconds=0.01, churn_us=10, work_ns=0, nr_nodes=2,
                           runner=python_cell)


def test_python_threads_through_run_sweep():
    """The Python cell is a runner of run_sweep: its rows carry the same
    per-lookup keys as the native cell's (the walk counts are the native
    counting pass's, absent here), 6.8's split design included."""
    from vmap_core.usercopy_python import python_cell
    rows = usercopy.run_sweep(["node", "6.8/split"], [1], buffers=8, buffer_size=8192,
                              copy_size=512, seconds=0.02, churn_us=10, work_ns=0,
                              nr_nodes=2, lookups=2, lazy_writer=True, runner=python_cell)
    assert [(r["design"], r["threads"]) for r in rows] == [("node", 1), ("6.8/split", 1)]
    for r in rows:
        assert r["requests"] > 0 and r["lookups"] == 2 * r["requests"]
        assert r["contended_per_lookup"] is not None and r["nodes_per_lookup"] is None


def test_python_cell_counts_and_checks():
    """A Python cell: every worker's requests are counted, the lookups reach
    the space's locks, and a bad argument is refused as the native cell does."""
    from vmap_core.usercopy_python import python_cell
    r = python_cell("node", 2, buffers=8, buffer_size=8192, copy_size=512, seconds=0.05,
                    churn_us=10, nr_nodes=2)
    assert r["requests"] == sum(r["per_thread"]) and min(r["per_thread"]) > 0
    assert r["churn_ops"] > 0 and r["workers"] == "python"
    assert r["locks"]["busy"]["acquisitions"] >= r["requests"]
    with pytest.raises(ValueError):
        python_cell("node", 0, seconds=0.01)
    with pytest.raises(ValueError):
        python_cell("node", 1, buffer_size=5000, seconds=0.01)
    with pytest.raises(TypeError):
        python_cell("node", 1, seconds="1")

"""The main job, `python -m vmap_core usercopy`, end to end on tiny cells."""

import json
import subprocess
import sys

import pytest

from vmap_core import cli, usercopy

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


def test_sweep_subset_of_modes():
    rows = usercopy.run_sweep(["node", "optimistic"], [1], buffers=8, buffer_size=8192,
                              copy_size=512, seconds=0.01, churn_us=10, work_ns=50,
                              nr_nodes=2, rounds=1)
    assert [(r["mode"], r["threads"]) for r in rows] == [("node", 1), ("optimistic", 1)]
    assert all(r["requests"] > 0 for r in rows)
    assert "optimistic" in usercopy.format_text(rows)


@pytest.mark.parametrize("kwargs", [dict(modes=["bogus"]), dict(rounds=0)])
def test_sweep_rejects_bad_arguments(kwargs):
    args = dict(modes=["node"], threads_list=[1], buffers=4, buffer_size=8192, copy_size=64,
                seconds=0.01, churn_us=10, work_ns=0, nr_nodes=None, rounds=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        usercopy.run_sweep(args.pop("modes"), args.pop("threads_list"), **args)


@pytest.mark.parametrize("argv", [
    ["--threads", "0"], ["--threads", "x"], ["--modes", "node,bogus"], ["--seconds", "-1"],
    ["--buffer-size", "1000"], ["--copy-size", "70000"], ["--rounds", "0"],
    ["--json", "/nonexistent-dir/x.json"],
])
def test_bad_options_are_usage_errors(argv, capsys):
    assert cli.main(["usercopy", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "uc.png"
    assert cli.main(["usercopy", "--threads", "1", "--rounds", "1", "--modes", "global,node",
                     *FAST, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point_help():
    res = subprocess.run([sys.executable, "-m", "vmap_core", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0
    for command in ("usercopy", "info", "map", "test-vmalloc"):
        assert command in res.stdout

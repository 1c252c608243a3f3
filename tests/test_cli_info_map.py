"""``python -m vmap_core info`` and ``map``, and the pixel maths of vmap_core.addrmap."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import _util
from test_vmallocinfo import SAMPLE, hashed

from vmap_core import addrmap, cli_info
from vmap_core import vmallocinfo as vi
from vmap_core.cli import main
from vmap_core.reference import ReferenceSpace

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def impl_name(impl):   # --impl of the class under test (core skipped where not built)
    return "reference" if impl is ReferenceSpace else "core"


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "vmallocinfo.txt"
    path.write_text(SAMPLE)
    return path


# -- info --------------------------------------------------------------------------

def test_info_sample_json(sample, tmp_path, capsys, impl_name):
    out = tmp_path / "info.json"
    rc = main(["info", str(sample), "--impl", impl_name, "--nr-nodes", "3", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "busy areas" in text and "fragmentation" in text and f"wrote {out}" in text
    info = json.loads(out.read_text())
    assert info["busy_areas"] == 13 and info["unpurged_areas"] == 2
    assert info["busy_bytes"] == sum(e.size for e in vi.parse(SAMPLE) if e.busy)
    assert info["nr_nodes"] == 3 and sum(info["node_areas"]) == 13
    assert sum(h["areas"] for h in info["size_histogram"]) == 13
    assert [h["pages"] for h in info["size_histogram"]] == ["2", "3-4", "5-8", "9-16",
                                                            "33-64", "513-1024"]
    assert info["numa_pages"] == {"N0": 50, "N1": 3}
    assert 0 <= info["fragmentation"] < 1
    assert info["fragmentation"] == pytest.approx(1 - info["largest_free"] / info["free_bytes"])


def test_info_plain_text_without_rich(sample, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert main(["info", str(sample), "--impl", "reference"]) == 0
    text = capsys.readouterr().out
    assert "size histogram (pages, guard page included):" in text
    assert "  busy areas     13" in text and "per-node spread" in text


def test_info_hashed_dump_says_so(tmp_path, capsys):
    path = tmp_path / "hashed.txt"
    path.write_text(hashed(SAMPLE))
    assert main(["info", str(path), "--impl", "reference"]) == 0
    assert "addresses hashed" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [(None, "No such file"),
                                              ("", "empty file"),
                                              ("no areas here\n", "no vmalloc areas")])
def test_info_errors(tmp_path, capsys, content, message):
    path = tmp_path / "dump.txt"
    if content is not None:
        path.write_text(content)
    assert main(["info", str(path), "--impl", "reference"]) == 1
    assert message in capsys.readouterr().err


def test_info_default_file_unreadable(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_info, "DEFAULT_FILE", str(tmp_path / "vmallocinfo"))
    assert main(["info", "--impl", "reference"]) == 1
    assert "readable by root only" in capsys.readouterr().err


def test_info_this_machine(capsys):
    """This machine's /proc/vmallocinfo: a summary as root, a clear error otherwise."""
    path = "/proc/vmallocinfo"
    if not os.path.exists(path):
        pytest.skip("no /proc/vmallocinfo")
    rc = main(["info", "--impl", "reference"])
    cap = capsys.readouterr()
    if os.access(path, os.R_OK):
        assert rc == 0 and "busy areas" in cap.out
    else:
        assert rc == 1 and "cannot read /proc/vmallocinfo" in cap.err


# -- map ---------------------------------------------------------------------------

def test_map_demo_png(tmp_path, capsys, impl_name):
    pytest.importorskip("matplotlib")
    for layout in ("strip", "hilbert"):
        out = tmp_path / f"map-{layout}.png"
        assert main(["map", "--out", str(out), "--layout", layout, "--impl", impl_name]) == 0
        assert out.read_bytes()[:8] == PNG
        assert f"wrote {out}" in capsys.readouterr().out


def test_map_from_vmallocinfo(sample, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.png"
    assert main(["map", "--from-vmallocinfo", str(sample), "--out", str(out),
                 "--span", "full", "--pixel", "majority", "--impl", "reference"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "busy 13, lazy 2" in capsys.readouterr().out


def test_map_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["map", "--out", str(tmp_path / "m.png")]) == 2
    assert "pip install vmap_core[plot]" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_python_m_map(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.png"
    env = _util.subprocess_env()
    r = subprocess.run([sys.executable, "-m", "vmap_core", "map", "--out", str(out),
                        "--impl", "reference"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == PNG


# -- addrmap -------------------------------------------------------------------------

def test_demo_space_shows_every_state(impl):
    space = addrmap.demo_space(impl)
    if not hasattr(space, "lazy_areas"):
        pytest.skip("space without lazy free")
    space.check()
    s = addrmap.summary(space)
    assert s["busy_areas"] and s["lazy_areas"] and s["pooled_areas"] and s["free_blocks"]


def test_rasterize_priority_and_majority():
    pytest.importorskip("numpy")
    P = 4096
    sp = ReferenceSpace(0, 64 * P, nr_nodes=2, lazy_max_pages=1 << 20)
    a = sp.alloc(P, vstart=0, vend=P)                 # one busy page in pixel 0
    sp.alloc(P, vstart=20 * P, vend=21 * P)           # busy page 20: pixel 2 (8 pages each)
    b = sp.alloc(6 * P, vstart=40 * P, vend=46 * P)
    sp.free_lazy(b)                                   # lazy pages 40..45: pixel 5
    state, node, bpp = addrmap.rasterize(sp, 8)
    assert bpp == 8 * P
    B, F, L = addrmap.BUSY, addrmap.FREE, addrmap.LAZY
    assert list(state) == [B, F, B, F, F, L, F, F]
    assert node[0] == sp.node_of(a) and node[1] == -1
    state, _, _ = addrmap.rasterize(sp, 8, mode="majority")
    assert list(state) == [F, F, F, F, F, L, F, F]
    with pytest.raises(ValueError):
        addrmap.rasterize(sp, 8, mode="mean")


def test_hilbert_curve_steps_to_neighbours():
    np = pytest.importorskip("numpy")
    x, y = addrmap.hilbert_xy(4)
    assert len(set(zip(x.tolist(), y.tolist()))) == 256
    assert (np.abs(np.diff(x)) + np.abs(np.diff(y)) == 1).all()

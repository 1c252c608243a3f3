"""``python -m vmap_core info`` and ``map``, and the pixel maths of vmap_core.addrmap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import _util
from test_vmallocinfo import SAMPLE, hashed, zeroed

from vmap_core import addrmap
from vmap_core.cli import common, main
from vmap_core.cli import info as info_cmd
from vmap_core.cli import map as map_cmd
from vmap_core.kernel import vmallocinfo as vi
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
    assert info["lazy_areas"] == 2 and info["unpurged_bytes"] == 2 * 20480
    assert info["busy_bytes"] == sum(e.size for e in vi.parse(SAMPLE) if e.busy)
    assert info["nr_nodes"] == 3 and sum(info["node_areas"]) == 13
    assert sum(h["areas"] for h in info["size_histogram"]) == 13
    assert [h["pages"] for h in info["size_histogram"]] == ["2", "3-4", "5-8", "9-16",
                                                            "33-64", "513-1024"]
    assert info["numa_pages"] == {"N0": 50, "N1": 3}
    assert 0 <= info["fragmentation"] < 1
    assert info["fragmentation"] == pytest.approx(1 - info["largest_free"] / info["free_bytes"])


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
    err = capsys.readouterr().err
    assert message in err
    assert err.count(str(path)) == 1 and err.count("\n") == 1      # one line, the path once


def test_info_names_the_file_once(tmp_path, capsys):
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/false\n")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"vmap-core: {path}: no vmalloc areas in it; 2 lines not understood\n"


def test_info_dev_zero_is_refused_before_reading(capsys):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    assert main(["info", "/dev/zero"]) == 1
    err = capsys.readouterr().err
    assert err == "vmap-core: /dev/zero: a character device, not a vmallocinfo dump\n"


def test_info_size_is_capped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common, "MAX_DUMP_BYTES", 1000)
    path = tmp_path / "big.txt"
    path.write_text(SAMPLE * 2)
    assert main(["info", str(path), "--impl", "reference"]) == 1
    err = capsys.readouterr().err
    assert "more than a vmallocinfo dump can be" in err and err.count("\n") == 1


def test_info_size_cap_holds_for_files_that_report_no_size(tmp_path, monkeypatch):
    """/proc files report st_size 0: the read itself is bounded too."""
    monkeypatch.setattr(common, "MAX_DUMP_BYTES", 1000)
    real_stat = os.stat
    monkeypatch.setattr(common.os, "stat", lambda p: os.stat_result(
        (*real_stat(p)[:6], 0, *real_stat(p)[7:])))
    path = tmp_path / "big.txt"
    path.write_text(SAMPLE * 2)
    with pytest.raises(ValueError, match="more than"):
        common.read_dump(str(path))


def test_info_default_file_unreadable(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(info_cmd, "DEFAULT_FILE", str(tmp_path / "vmallocinfo"))
    parser_default = str(tmp_path / "vmallocinfo")
    assert main(["info", parser_default, "--impl", "reference"]) == 1
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


@pytest.mark.parametrize("argv", [["info", "--nr-nodes", "2000"], ["info", "--nr-nodes", "0"],
                                  ["map", "--out", "m.png", "--nr-nodes", "2000"]])
def test_nr_nodes_out_of_range_is_a_usage_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--nr-nodes" in err and "out of range: 1..1,024" in err


def test_integer_arguments_take_both_bounds():
    """An integer option accepts its documented bounds and nothing past them."""
    import argparse

    from vmap_core.cli.common import int_in, int_list, nr_nodes_arg
    assert nr_nodes_arg("1") == 1 and nr_nodes_arg("1024") == 1024
    for bad in ("0", "1025", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            nr_nodes_arg(bad)
    assert int_in(5, 7)("7") == 7 and int_in(5)("5") == 5
    assert int_list(4)("4,1,4") == [1, 4]
    with pytest.raises(argparse.ArgumentTypeError):
        int_list(4)("1,5")


# -- one rule, one format ------------------------------------------------------------

def test_info_and_map_agree_on_unpurged_areas(sample, tmp_path, capsys):
    """Both keep a dump's unpurged areas lazily freed: the same free blocks and bytes."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "info.json"
    assert main(["info", str(sample), "--impl", "reference", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    capsys.readouterr()
    assert main(["map", "--from-vmallocinfo", str(sample), "--out", str(tmp_path / "m.png"),
                 "--impl", "reference"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("busy "))
    assert line == (f"busy {info['busy_areas']}, lazy {info['lazy_areas']}, pooled 0, "
                    f"free blocks {info['free_blocks']}, fragmentation "
                    f"{common.percent(info['fragmentation'])}")
    assert info["lazy_areas"] == 2


def test_fragmentation_is_printed_one_way(sample, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["info", str(sample), "--impl", "reference"]) == 0
    assert main(["map", "--from-vmallocinfo", str(sample), "--out", str(tmp_path / "m.png"),
                 "--impl", "reference"]) == 0
    text = capsys.readouterr().out
    found = re.findall(r"fragmentation[\s│]+(\S+)", text)
    assert len(found) == 2 and found[0] == found[1] and found[0].endswith("%")


def test_percent_format():
    assert common.percent(0.26011) == "26.01%"
    assert common.percent(0.0) == "0.00%"
    assert common.percent(1e-9) == "<0.01%"
    assert addrmap.fragmentation(100, 25) == 0.75 and addrmap.fragmentation(0, 0) == 0.0


# -- map ---------------------------------------------------------------------------

def test_map_demo_png(tmp_path, capsys, impl_name):
    pytest.importorskip("matplotlib")
    for layout in ("strip", "hilbert"):
        out = tmp_path / f"map-{layout}.png"
        assert main(["map", "--out", str(out), "--layout", layout, "--impl", impl_name]) == 0
        assert out.read_bytes()[:8] == PNG
        assert f"wrote {out} (PNG" in capsys.readouterr().out


def test_map_from_vmallocinfo(sample, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.png"
    assert main(["map", "--from-vmallocinfo", str(sample), "--out", str(out),
                 "--span", "full", "--pixel", "majority", "--impl", "reference"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "busy 13, lazy 2" in capsys.readouterr().out


def test_map_writes_exactly_the_path(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "noext"
    assert main(["map", "--out", str(out), "--impl", "reference"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert os.listdir(tmp_path) == ["noext"]
    assert f"wrote {out} (PNG" in capsys.readouterr().out


def test_map_format_from_the_extension(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.svg"
    assert main(["map", "--out", str(out), "--impl", "reference"]) == 0
    assert b"<svg" in out.read_bytes()[:400]


def test_map_unknown_format_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(addrmap, "demo_space", lambda *a, **k: pytest.fail("ran"))
    assert main(["map", "--out", str(tmp_path / "x.foo")]) == 2
    err = capsys.readouterr().err
    assert "cannot write .foo images" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_map_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["map", "--out", str(tmp_path / "m.png")]) == 2
    assert 'the map needs matplotlib: pip install ".[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_python_m_map(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.png"
    env = _util.subprocess_env()
    r = subprocess.run([sys.executable, "-m", "vmap_core", "map", "--out", str(out),
                        "--impl", "reference"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == PNG


# -- what the picture says ------------------------------------------------------------

def legend_labels(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def legend_colours(fig):
    from matplotlib.colors import to_hex
    return [to_hex(h.get_facecolor()) for h in fig.legends[0].legend_handles]


@pytest.mark.parametrize("nodes", [4, 10, 16, 1000])
def test_map_legend_categorical_nodes(nodes):
    """Each node shown has its own colour, all distinct; past ten they are collapsed."""
    pytest.importorskip("matplotlib")
    space = addrmap.demo_space(ReferenceSpace, nr_nodes=nodes, pages=1 << 12)
    fig, _ = map_cmd.figure(space)
    labels = legend_labels(fig)
    busy = [lb for lb in labels if lb.startswith("busy")]
    if nodes <= 10:
        assert busy == [f"busy, node {n}" for n in range(nodes)]
    else:
        assert busy == [f"busy, node {n}" for n in range(9)] + [f"busy, nodes 9..{nodes - 1}"]
    colours = legend_colours(fig)
    assert len(set(colours)) == len(colours)


def test_map_pixels_use_the_legend_colours():
    """A busy area of a collapsed node is drawn in the collapsed nodes' colour."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex
    sp = ReferenceSpace(0, 64 * 4096, nr_nodes=16, zone_size=4096)
    sp.alloc(4096, vstart=12 * 4096, vend=13 * 4096)      # node 12: collapsed
    fig, _ = map_cmd.figure(sp, span="full")
    im = fig.axes[0].images[0]
    drawn = {to_hex(im.cmap(im.norm(v))) for v in set(im.get_array().ravel().tolist())}
    assert common.OTHER_NODES_COLOUR in drawn


def test_map_long_title_fits(sample):
    pytest.importorskip("matplotlib")
    space, _, _ = common.load_dump(str(sample), "reference")
    fig, _ = map_cmd.figure(space, title="vmallocinfo: /" + "very-long-directory/" * 12 + "x")
    _util.assert_inside_figure(fig, fig.axes[0].title)


@pytest.mark.parametrize("make, synthetic", [(hashed, True), (zeroed, True),
                                             (lambda t: t, False)])
def test_map_says_when_the_layout_is_synthetic(tmp_path, make, synthetic):
    pytest.importorskip("matplotlib")
    path = tmp_path / "dump.txt"
    path.write_text(make(SAMPLE))
    _, dump, _ = common.load_dump(str(path), "reference")
    why = common.synthetic_layout(dump)
    assert (why is not None) == synthetic
    space, _, _ = common.load_dump(str(path), "reference")
    fig, _ = map_cmd.figure(space, synthetic=why)
    texts = " ".join(t.get_text() for t in fig.texts)
    assert ("SYNTHETIC LAYOUT" in texts) == synthetic
    if synthetic:
        note = next(t for t in fig.texts if "SYNTHETIC" in t.get_text())
        _util.assert_inside_figure(fig, note)


# -- addrmap -------------------------------------------------------------------------

def test_demo_space_shows_every_state(impl):
    space = addrmap.demo_space(impl)
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

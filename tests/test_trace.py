"""vmap_core.trace: the vmalloc tracepoints read from tracefs, trace-cmd and
perf output, by the C scanner and by the plain-Python parser, which must agree.

The trace-cmd and perf samples are made here from real events, in the layouts
those tools document (no capture with them was available)."""

from __future__ import annotations

import gzip
import io
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmap_core.trace import (ENOENT_VALUE, ERANGE_VALUE, Alloc, Free, Purge, TraceReader,
                             parse_line, read)

DATA = pathlib.Path(__file__).parent / "data"
REAL = DATA / "vmalloc-trace-6.18.44-16cpu.txt.gz"
VEND = 0xffffe8ffffffffff
VSTART = 0xffffc90000000000


# -- rendering events in each tool's layout ------------------------------------

def fields(ev):
    if isinstance(ev, Alloc):
        return ("alloc_vmap_area", f"va_start: {ev.va_start} size={ev.size} align={ev.align} "
                f"vstart={ev.vstart:#x} vend={ev.vend:#x} failed={int(ev.failed)}")
    if isinstance(ev, Free):
        return ("free_vmap_area_noflush",
                f"va_start={ev.va_start:#x} nr_lazy={ev.nr_lazy} nr_lazy_max={ev.nr_lazy_max}")
    return ("purge_vmap_area_lazy",
            f"start={ev.start:#x} end={ev.end:#x} num_purged={ev.num_purged}")


def tracefs(ev, flags=True, tgid=False):
    name, text = fields(ev)
    col = f"({ev.pid:>7}) " if tgid else ""
    fl = "..... " if flags else ""
    return f"{ev.task:>16}-{ev.pid:<7} {col}[{ev.cpu:03d}] {fl}{ev.ts:12.6f}: {name}: {text}"


def trace_cmd(ev):
    """trace-cmd report: "comm-pid [cpu] ts: event: fields", the name padded."""
    name, text = fields(ev)
    return f"{ev.task:>16}-{ev.pid:<5} [{ev.cpu:03d}] {ev.ts:12.6f}: {name + ':':<22} {text}"


def perf(ev, pid_tid=False):
    """perf script (default fields for tracepoints): comm tid [cpu] time: sys:event: fields."""
    name, text = fields(ev)
    ident = f"{ev.pid}/{ev.pid}" if pid_tid else f"{ev.pid:>5}"
    return f"{ev.task:>16} {ident} [{ev.cpu:03d}] {ev.ts:12.6f}: vmalloc:{name}: {text}"


LAYOUTS = {
    "tracefs": tracefs,
    "tracefs_no_flags": lambda ev: tracefs(ev, flags=False),
    "tracefs_tgid": lambda ev: tracefs(ev, tgid=True),
    "trace_cmd": trace_cmd,
    "perf": perf,
    "perf_pid_tid": lambda ev: perf(ev, pid_tid=True),
}


def same(a, b, lineno=None):
    """Equal but for the line number."""
    ta, tb = list(a.astuple()), list(b.astuple())
    ta[4] = tb[4] = 0
    return type(a) is type(b) and ta == tb


@pytest.fixture(scope="module")
def real():
    events, reader = read(REAL)
    return events, reader


# -- the real trace ------------------------------------------------------------

def test_real_trace_counts(real):
    events, r = real
    assert (r.allocs, r.frees, r.purges, r.failed_allocs) == (8069, 8061, 4, 0)
    assert (r.events, r.header_lines, r.other_lines, r.cpus) == (16134, 12, 0, 16)
    first = events[0]
    assert isinstance(first, Alloc)
    assert (first.cpu, first.ts, first.task, first.pid, first.lineno) == (15, 57.195445, "<...>",
                                                                         4572, 13)
    assert (first.va_start, first.size, first.align, first.vstart, first.vend) == \
        (18446683600791420928, 20480, 16384, VSTART, VEND)
    assert first.error is None
    free = next(e for e in events if isinstance(e, Free))
    assert (free.task, free.pid, free.va_start, free.nr_lazy, free.nr_lazy_max) == \
        ("kworker/0:1", 11, 0xffffc9000ced4000, 855, 40960)
    purges = [e for e in events if isinstance(e, Purge)]
    assert [p.num_purged for p in purges] == [8071, 7, 65, 0]
    assert (purges[-1].start, purges[-1].end) == ((1 << 64) - 1, 0)    # an empty purge


def test_real_trace_python_parser_agrees(real):
    events, _ = real
    with gzip.open(REAL, "rt") as f:
        py = [e for e in (parse_line(line, n) for n, line in enumerate(f, 1)) if e is not None]
    assert py == events                         # line numbers included


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_events(real, layout):
    events = real[0][::37]                      # a sample of each kind
    assert {type(e) for e in events} >= {Alloc, Free}
    events.append(real[0][-1])                  # the empty purge
    text = "\n".join(LAYOUTS[layout](e) for e in events) + "\n"
    if layout == "trace_cmd":
        text = "version = 6\ncpus=16\nCPU 3 is empty\n" + text
    got, reader = read(io.BytesIO(text.encode()))
    assert len(got) == len(events)
    assert all(same(a, b) for a, b in zip(got, events))
    py = [parse_line(line) for line in text.splitlines()]
    assert all(same(a, b) for a, b in zip([e for e in py if e], events))
    if layout == "trace_cmd":
        assert (reader.cpus, reader.other_lines) == (16, 3)


# -- both parsers on generated lines --------------------------------------------

tasks = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/:-_.<>", min_size=1,
                max_size=16) | st.sampled_from(["<...>", "kworker/0:1", "Web Content", "a-1",
                                                "x 5", "cuda00001400006"])
u64 = st.integers(0, (1 << 64) - 1)
common = dict(cpu=st.integers(0, 4095), ts=st.integers(0, 10**12).map(lambda n: n / 10**6),
              task=tasks.filter(lambda t: t == t.strip()), pid=st.integers(0, 4194304))
events = st.one_of(
    st.builds(lambda cpu, ts, task, pid, a, b, c, d, e, f: Alloc(cpu, ts, task, pid, 0, a, b, c,
                                                                  d, e, f),
              **common, a=u64, b=u64, c=u64, d=u64, e=u64, f=st.booleans()),
    st.builds(lambda cpu, ts, task, pid, a, b, c: Free(cpu, ts, task, pid, 0, a, b, c),
              **common, a=u64, b=u64, c=u64),
    st.builds(lambda cpu, ts, task, pid, a, b, c: Purge(cpu, ts, task, pid, 0, a, b, c),
              **common, a=u64, b=u64, c=st.integers(0, (1 << 32) - 1)),
)


@given(evs=st.lists(events, min_size=1, max_size=20),
       layout=st.sampled_from(sorted(LAYOUTS)), chunk=st.sampled_from([7, 64, 1 << 20]))
def test_generated_lines_round_trip(evs, layout, chunk):
    lines = [LAYOUTS[layout](e) for e in evs]
    got, _ = read(io.BytesIO(("\n".join(lines) + "\n").encode()), chunk_size=chunk)
    assert all(same(a, b) for a, b in zip(got, evs)) and len(got) == len(evs)
    assert all(same(parse_line(line, i + 1), e) for i, (line, e) in enumerate(zip(lines, evs)))


# -- skipped lines, failures, streams ------------------------------------------

SAMPLE = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 5/5   #P:4
#
           <...>-12    [001] .....    10.000001: alloc_vmap_area: va_start: 18446683600570597376 size=8192 align=4096 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0
          bash-13      [002] d..1.    10.000002: sched_switch: prev_comm=bash prev_pid=13 ==> next_comm=swapper/2
          <idle>-0     [000] ..s1.    10.000003: bputs: alloc_vmap_area: not ours, a string in another event

           <...>-12    [001] .....    10.000004: free_vmap_area_noflush: va_start=0xffffc90000200000 nr_lazy=2 nr_lazy_max=32768
           <...>-12    [003] .....    10.000005: purge_vmap_area_lazy: start=0xffffc90000200000 end=0xffffc90000202000 num_purged=1
"""


def test_each_pass_counts_from_zero():
    """Iterating a reader again reads the trace again; the counters describe
    that pass (they used to add up over passes), and an open file that is
    exhausted gives an empty pass."""
    r = TraceReader(REAL)
    first = list(r)
    once = r.counts()
    assert list(r) == first
    assert r.counts() == once and once["allocs"] == 8069
    with gzip.open(REAL, "rb") as f:
        stream = TraceReader(f)
        assert len(list(stream)) == len(first) and stream.counts() == once
        assert list(stream) == []
        assert stream.counts()["events"] == 0 and stream.counts()["allocs"] == 0


def test_other_events_and_headers_are_counted():
    got, r = read(io.StringIO(SAMPLE), name="sample")
    assert [e.kind for e in got] == ["alloc", "free", "purge"]
    assert [e.lineno for e in got] == [5, 9, 10]
    assert (r.header_lines, r.other_lines, r.cpus) == (4, 3, 4)
    assert r.counts()["events"] == 3


def test_failed_allocations_are_kept():
    old = f"  a-1 [000] 1.0: alloc_vmap_area: va_start: {VEND} size=4096 align=4096 " \
          f"vstart={VSTART:#x} vend={VEND:#x} failed=1"
    enoent = old.replace(f"va_start: {VEND}", f"va_start: {ENOENT_VALUE}")
    erange = old.replace(f"va_start: {VEND}", f"va_start: {ERANGE_VALUE}")
    got, r = read(io.StringIO("\n".join([old, enoent, erange, old.replace("failed=1",
                                                                           "failed=0")])))
    assert [e.error for e in got] == ["vend", "ENOENT", "ERANGE", None]
    assert r.failed_allocs == 3
    assert [parse_line(x).error for x in (old, enoent, erange)] == ["vend", "ENOENT", "ERANGE"]


MALFORMED = [
    "           <...>-12    [001] .....    10.000001: alloc_vmap_area: va_start: 1844668360057 size=8192",
    "           <...>-12    [001] .....    10.000001: alloc_vmap_area: va_start: 0x10 size=8192 align=4096 vstart=0x0 vend=0x1 failed=0",
    "           <...>-12    [001] .....    10.000001: free_vmap_area_noflush: va_start=0xzz nr_lazy=2 nr_lazy_max=3",
    "           <...>-12    [001] .....    10.000001: free_vmap_area_noflush: va_start=0x10 nr_lazy=2 nr_lazy_max=3 extra",
    "           <...>-12    [001] .....    10.000001: purge_vmap_area_lazy: start=0x10000000000000000 end=0x0 num_purged=0",
    "           <...>-12    [001] .....    10.000001: purge_vmap_area_lazy: start=0x1 end=0x2 num_purged=18446744073709551616",
    "           <...>-12    [001] .....    10.000001: purge_vmap_area_lazy:",
    "  perf  12 [001]    10.000001: vmalloc:alloc_vmap_area: va_start: 1 size=2 align=3 vstart=0x4 vend=0x5",
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_line_names_file_and_line(bad, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# tracer: nop\n" + SAMPLE.splitlines()[4] + "\n" + bad + "\n")
    reader = TraceReader(path)
    seen = []
    with pytest.raises(ValueError, match=rf"{path}:3: malformed \w+ event"):
        for ev in reader:
            seen.append(ev)
    assert len(seen) == 1                       # the good line before it was delivered
    with pytest.raises(ValueError, match=r"x:3: malformed"):
        parse_line(bad, 3, "x")


def test_streams_crlf_and_a_last_line_without_newline(monkeypatch):
    text = SAMPLE.replace("\n", "\r\n").rstrip("\r\n")
    got, _ = read(io.BytesIO(text.encode()))
    assert [e.kind for e in got] == ["alloc", "free", "purge"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(SAMPLE.encode())))
    assert [e.kind for e in read("-")[0]] == ["alloc", "free", "purge"]


def test_events_compare_pickle_and_print():
    import pickle
    ev = parse_line(SAMPLE.splitlines()[4], 5)
    assert pickle.loads(pickle.dumps(ev)) == ev
    assert hash(ev) == hash(pickle.loads(pickle.dumps(ev)))
    assert "va_start=0xffffc9000008c000" in repr(ev)
    assert ev != parse_line(SAMPLE.splitlines()[4], 6)


@given(ts=st.integers(0, 10**15), digits=st.integers(0, 9))
def test_timestamps_read_as_float_reads_them(ts, digits):
    text = f"{ts // 10**digits}.{ts % 10**digits:0{digits}d}" if digits else f"{ts}."
    line = f"  a-1 [000] {text}: purge_vmap_area_lazy: start=0x1 end=0x2 num_purged=1\n"
    (ev,), _ = read(io.BytesIO(line.encode()))
    assert ev.ts == float(text) == parse_line(line).ts

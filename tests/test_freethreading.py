"""Python-visible state shared between threads (README, "Threads"): caller
tags, on_purge, load_notes, copies and traces while other threads change the
space, on the core and the reference alike.  On a free-threaded CPython these
threads really run at once; on a GIL build they interleave at the GIL's
switch points and at every lock wait."""

import copy
import io
import pickle
import random
import subprocess
import sys
import sysconfig
import threading
import time

import pytest

from vmap_core.reference import info_line
from vmap_core.trace import read

P = 4096
BASE = 1 << 32
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def run_threads(n, target):
    """Run target(i) on n threads started together; re-raise the first error."""
    errors = []
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:     # reported by the main thread
            errors.append(e)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded CPython build")
def test_import_keeps_the_gil_off():
    """Importing vmap_core (both extensions) does not turn the GIL back on."""
    code = ("import sys, vmap_core, vmap_core._traceparse, vmap_core.reference; "
            "assert not sys._is_gil_enabled(), 'the GIL came back at import'")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHON_GIL"}
    subprocess.run([sys.executable, "-X", "warnings=error", "-c", code], check=True, env=env)


def test_caller_tags_follow_their_areas(impl, lock):
    """Threads alloc (half with a caller tag, half without), alloc_at, free and
    free_lazy at once; afterwards every live area carries exactly the tag its
    own alloc gave it, in caller_of() and in vmallocinfo()."""
    space = impl(BASE, BASE + (1 << 24), nr_nodes=4, zone_size=4 * P, lock=lock,
                 lazy_max_pages=64)
    owned = [None] * 4

    def worker(i):
        rng = random.Random(i)
        mine = {}
        deadline = time.monotonic() + 0.5
        n = 0
        while time.monotonic() < deadline or n < 200:
            n += 1
            op = rng.random()
            if (op < 0.5 and len(mine) < 100) or not mine:
                tag = f"t{i}.{n}" if rng.random() < 0.5 else None
                start = space.alloc(P * rng.randint(1, 4), caller=tag)
                mine[start] = tag
            elif op < 0.6:
                start = rng.choice(list(mine))
                size = space.find(start).size
                space.free(start)
                tag = f"t{i}.{n}at" if rng.random() < 0.5 else None
                try:        # another thread may take the range first
                    mine[space.alloc_at(start, size, caller=tag)] = tag
                except ValueError:
                    del mine[start]
            else:
                start = rng.choice(list(mine))
                (space.free if op < 0.8 else space.free_lazy)(start)
                del mine[start]
        owned[i] = mine

    run_threads(4, worker)
    space.check()
    every = {}
    for mine in owned:
        every.update(mine)
    assert sorted(every) == [a.start for a in space]
    for start, tag in every.items():
        assert space.caller_of(start) == tag
    lines = set(space.vmallocinfo().splitlines())
    for area in space:
        assert info_line(area.start, area.end, every[area.start], P) in lines


def test_on_purge_runs_while_other_threads_work(impl, lock):
    """One thread's on_purge (which reads the space, allocs and frees) runs
    while other threads alloc, free_lazy, purge and take views: a purge from
    inside on_purge is refused only in the flushing thread, other threads'
    purges wait for it, and the space is whole afterwards."""
    flushes = []
    refused = []

    def on_purge(start, end):
        flushes.append((start, end))
        a = space.alloc(P)
        assert space.find(a) is not None
        space.free(a)
        try:
            space.purge()
        except RuntimeError:
            refused.append(threading.get_ident())

    space = impl(BASE, BASE + (1 << 24), nr_nodes=2, lock=lock, lazy_max_pages=16,
                 on_purge=on_purge)

    def worker(i):
        rng = random.Random(i)
        mine = []
        for n in range(300):
            if len(mine) < 20 or rng.random() < 0.5:
                mine.append(space.alloc(P * rng.randint(1, 3)))
            else:
                space.free_lazy(mine.pop(rng.randrange(len(mine))))
            if n % 50 == 0:
                space.purge()
                space.stats()
                space.lazy_areas()
        for a in mine:
            space.free(a)

    run_threads(3, worker)
    space.purge()
    assert flushes and len(refused) == len(flushes)
    space.check()
    assert len(space) == 0


def test_load_notes_shared(impl):
    """load_notes is replaced and read from several threads: every read is
    one of the lists written, whole."""
    space = impl(BASE, BASE + (1 << 20))
    lists = [[f"note {i}.{j}" for j in range(i + 1)] for i in range(8)]

    def worker(i):
        for n in range(2000):
            if i % 2:
                space.load_notes = lists[n % 8]
            else:
                notes = space.load_notes
                assert notes == [] or notes in lists

    run_threads(4, worker)


def test_copies_while_others_change_it(impl, lock):
    """pickle and copy.copy of a space that other threads change: each copy
    is one consistent state (its check() passes)."""
    space = impl(BASE, BASE + (1 << 24), nr_nodes=3, lock=lock, lazy_max_pages=32)
    stop = threading.Event()

    def worker(i):
        if i == 0:
            try:
                for _ in range(5):
                    for c in (copy.copy(space), pickle.loads(pickle.dumps(space))):
                        c.check()
            finally:
                stop.set()
            return
        rng = random.Random(i)
        mine = []
        while not stop.is_set():
            if len(mine) < 50 or (len(mine) < 200 and rng.random() < 0.5):
                mine.append(space.alloc(P * rng.randint(1, 3), caller=f"w{i}"))
            else:
                (space.free if rng.random() < 0.5 else space.free_lazy)(
                    mine.pop(rng.randrange(len(mine))))

    run_threads(3, worker)
    space.check()


def test_trace_from_threads(impl):
    """A trace written by several threads: one header, every line whole and
    parsed back."""
    out = io.StringIO()
    space = impl(BASE, BASE + (1 << 24), nr_nodes=2, lazy_max_pages=8, trace=out)

    def worker(i):
        for _ in range(200):
            space.free_lazy(space.alloc(P))

    run_threads(4, worker)
    text = out.getvalue()
    assert text.count("# tracer: nop") == 1
    events, _ = read(io.StringIO(text))
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("Alloc") == 800 and kinds.count("Free") == 800


def test_caller_tags_read_while_their_areas_are_freed(impl):
    """vmallocinfo(), caller_of() and copies read caller tags while other
    threads free those areas (dropping the tags) and allocate new ones with
    new tag strings: each read gets a whole tag or none (on a free-threaded
    build a borrowed tag could be freed under the reader)."""
    space = impl(BASE, BASE + (1 << 24), nr_nodes=2)
    stop = threading.Event()

    def worker(i):
        if i < 2:
            rng = random.Random(i)
            mine = []
            try:
                for n in range(1000):
                    if len(mine) < 32 or rng.random() < 0.5:
                        mine.append(space.alloc(P, caller="".join(["tag", str(i), ".", str(n)])))
                    else:
                        space.free(mine.pop(rng.randrange(len(mine))))
            finally:
                stop.set()
            return
        while not stop.is_set():
            for line in space.vmallocinfo().splitlines():
                assert line.endswith("vmalloc")
            for area in list(space)[:8]:
                try:
                    tag = space.caller_of(area.start)
                except KeyError:        # freed meanwhile
                    continue
                assert tag is None or tag.startswith("tag")
            pickle.loads(pickle.dumps(space)).check()

    run_threads(4, worker)
    space.check()

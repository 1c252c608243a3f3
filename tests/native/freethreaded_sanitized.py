"""The Python-visible state of a space under ThreadSanitizer, GIL off (run by
.ci/freethreaded): in every lock mode, Python threads alloc with and without
caller tags, alloc_at, free and free lazily (purges running on_purge, which
allocs and frees itself) while others read and replace load_notes, take
vmallocinfo() and copies, and call find() through shared and own bound
methods.  Afterwards check() must pass and every live area must carry its
own caller tag.  The sanitizer fails the run on any report.
Usage: python this.py [ops per thread]
"""
import copy
import random
import sys
import threading

from vmap_core import VmapSpace

OPS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
P = 4096


def workload(lock: str, kernel: str | None = None) -> None:
    def on_purge(start, end):
        space.free(space.alloc(P, caller="flush"))

    space = VmapSpace(1 << 32, (1 << 32) + (1 << 26), nr_nodes=1 if kernel else 4,
                      zone_size=4 * P, lock=lock, lazy_max_pages=32, on_purge=on_purge,
                      kernel=kernel)
    owned = [dict() for _ in range(3)]
    stop = threading.Event()
    errors = []
    shared_find = space.find

    def mutator(k):
        rng = random.Random(k)
        mine = owned[k]
        for n in range(OPS):
            op = rng.random()
            if (op < 0.5 and len(mine) < 64) or not mine:
                tag = f"m{k}.{n}" if rng.random() < 0.5 else None
                mine[space.alloc(P * rng.randint(1, 3), caller=tag)] = tag
            elif op < 0.6:
                start = rng.choice(list(mine))
                size = space.free(start).size
                del mine[start]
                tag = f"m{k}.{n}at" if rng.random() < 0.5 else None
                try:
                    mine[space.alloc_at(start, size, caller=tag)] = tag
                except ValueError:
                    pass
            else:
                start = rng.choice(list(mine))
                (space.free if op < 0.8 else space.free_lazy)(start)
                del mine[start]
            shared_find(rng.choice(list(mine) or [0]))

    def viewer(k):
        notes = [f"note {k}"]
        while not stop.is_set():
            space.load_notes = notes
            assert isinstance(space.load_notes, list)
            space.vmallocinfo()
            copy.copy(space).check()
            space.stats()

    def guard(fn, k):
        try:
            fn(k)
        except BaseException as e:      # reported by the main thread
            errors.append(e)
            stop.set()

    viewers = [threading.Thread(target=guard, args=(viewer, k)) for k in range(2)]
    mutators = [threading.Thread(target=guard, args=(mutator, k)) for k in range(3)]
    for t in viewers + mutators:
        t.start()
    for t in mutators:
        t.join()
    stop.set()
    for t in viewers:
        t.join()
    if errors:
        raise errors[0]
    space.purge()
    space.check()
    every = {}
    for mine in owned:
        every.update(mine)
    assert sorted(every) == [a.start for a in space], lock
    for start, tag in every.items():
        assert space.caller_of(start) == tag, (lock, start, tag)


for lock, kernel in (("optimistic", None), ("node", None), ("global", None),
                     ("rwlock", None), ("split", "6.8")):
    workload(lock, kernel)
    print(f"free-threaded workload, lock={lock}: clean")

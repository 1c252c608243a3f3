"""Python-thread workload for the sanitizer builds (run by .ci/sanitize).

In every lock mode, optimistic first: Python threads call find_many()
(nogil, lock-free in "optimistic") while others alloc and free, free lazily
and purge, and take stats(), list(space) and vmallocinfo() snapshots.  Each
snapshot must be consistent (no overlap); afterwards check() must pass.
Then lock-free find_many() readers race native writers that keep growing the
slab: the readers reach records of chunks allocated a moment before (with
relaxed tree links ThreadSanitizer reported those chunks' memset against the
readers' loads; links are now published with release and read with acquire).
The sanitizer fails the run on any report.  Usage: python this.py [rounds]
"""
import array
import sys
import threading

from vmap_core import VmapSpace, _space

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
P = 4096


def workload(lock: str, kernel: str | None = None) -> dict:
    flushes = []
    # on_purge runs with the purge lock held (as the kernel's flush holds
    # vmap_purge_lock), while the viewer's stats() and copies wait for it.
    space = VmapSpace(1 << 30, (1 << 30) + (1 << 30), nr_nodes=1 if kernel == "6.8" else 4,
                      zone_size=2 * P, lock=lock, lazy_max_pages=256, kernel=kernel,
                      on_purge=lambda start, end: flushes.append(end - start))
    base = [space.alloc(P * (1 + i % 4)) for i in range(256)]
    addrs = array.array("Q", [a + 1 for a in base] * 32)
    errors, counts = [], {"finds": 0, "writes": 0, "views": 0}

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as e:      # reported by the main thread
                errors.append(e)
        return run

    @guard
    def reader():
        for _ in range(ROUNDS):
            out = space.find_many(addrs)
            assert list(out[:256]) == base, "a base area was not found"
            counts["finds"] += len(out)

    @guard
    def writer():
        kept = []       # every 4th area stays: the slab keeps growing under the readers
        for i in range(ROUNDS * 20):
            a = space.alloc(P * (1 + i % 3), cpu=i)
            if i % 4 == 0:
                kept.append(a)
            elif i % 2:
                space.free(a)
            else:
                space.free_lazy(a)
            if i % 50 == 0:
                space.purge()
            counts["writes"] += 1
        for a in kept:
            space.free(a)

    @guard
    def viewer():
        for _ in range(ROUNDS // 2):
            st = space.stats()
            assert st["busy_areas"] >= 256 and st["optimistic_retries"] is not None
            busy = [(a.start, a.end) for a in space]
            assert all(x[1] <= y[0] for x, y in zip(busy, busy[1:])), "overlapping busy areas"
            space.vmallocinfo()
            space.__reduce__()                      # the pickled state: every lock at once
            space.predict(P, cpu=1)
            space.locate(base[0])
            counts["views"] += 1

    pool = [threading.Thread(target=f) for f in (reader, reader, writer, writer, viewer)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    space.check()
    return counts


def slab_growth_under_readers(ops: int) -> int:
    space = VmapSpace(1 << 30, (1 << 30) + (1 << 32), nr_nodes=2, zone_size=2 * P,
                      lock="optimistic", lazy_max_pages=1 << 40)
    base = [space.alloc(P) for _ in range(64)]
    addrs = array.array("Q", [a + 1 for a in base] + [(1 << 30) + i * 7 * P for i in range(4096)])
    stop = threading.Event()
    found = []

    def reader():
        while not stop.is_set():
            out = space.find_many(addrs)
            found.append(list(out[:64]) == base)

    def writer():
        try:
            _space.stress_native(space, 2, ops, max_owned=1 << 18)
        finally:
            stop.set()

    pool = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert found and all(found), "a base area was not found"
    space.check()
    return space.stats()["slab_records"]


def main() -> int:
    for lock, kernel in (("optimistic", None), ("node", None), ("rwlock", None),
                         ("global", None), ("node", "6.9"), ("split", "6.8")):
        c = workload(lock, kernel)
        print(f"python threads {lock:>10} kernel {kernel or 'newest':>6}: {c['finds']} lookups, "
              f"{c['writes']} writes, {c['views']} snapshots, check() passed")
    records = slab_growth_under_readers(ROUNDS * 500)
    print(f"slab growth under lock-free readers: {records} records in use, check() passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

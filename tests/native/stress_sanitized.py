"""Native concurrent stress for the sanitizer builds (run by .ci/sanitize).

Several native threads (Python threads inside nogil loops) alloc, free and
find on one space at once, for every lock mode, then the usercopy cells
(lock-free optimistic readers included) run beside a writer.  Exit status 0
means every check held; the sanitizer itself fails the run on a report.
"""
import sys

from vmap_core import VmapSpace, _space

OPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000


def main() -> int:
    for lock, kernel in (("node", None), ("global", None), ("rwlock", None),
                         ("optimistic", None), ("node", "6.9"), ("split", "6.8")):
        # A tiny zone size spreads areas over nodes and makes them span zones
        # (v6.8: one busy tree, lazy areas merging in one purge tree).
        space = VmapSpace(1 << 30, (1 << 30) + (1 << 26), nr_nodes=1 if kernel == "6.8" else 3,
                          zone_size=2 * 4096, lock=lock, kernel=kernel)
        res = _space.stress_native(space, 4, OPS, seed=7)
        space.check()
        assert res["errors"] == 0, (lock, res["errors"])
        for owned in res["owned"]:
            for start, end in owned:
                area = space.find(start)
                assert area is not None and (area.start, area.end) == (start, end)
        print(f"{lock:>10} kernel {kernel or 'newest':>6}: {res['allocs']} allocs, {res['frees']} frees, "
              f"{res['finds']} finds, 0 errors, check() passed")
    for mode in ("unlocked", "node", "rwlock", "optimistic"):
        cell = _space.usercopy_cell(mode, 3, buffers=64, seconds=0.2, churn_us=0)
        print(f"usercopy {mode:>10}: {cell['requests']} requests, {cell['churn_ops']} writer ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())

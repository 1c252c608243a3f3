"""Native concurrent stress for the sanitizer builds (run by .ci/sanitize).

Several native threads (Python threads inside nogil loops) alloc, free and
find on one space at once, for every lock mode, then the usercopy cells
(lock-free optimistic readers included) run beside a writer.  Exit status 0
means every check held; the sanitizer itself fails the run on a report.
"""
import sys

from vmap_core import VmapSpace, _space
from vmap_core._testhooks import set_slab_tuning

OPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000


def main() -> int:
    for lock, kernel in (("node", None), ("global", None), ("rwlock", None),
                         ("optimistic", None), ("node", "6.9"), ("split", "6.8")):
        # A tiny zone size spreads areas over nodes and makes them span zones
        # (v6.8: one busy tree, lazy areas merging in one purge tree).
        space = VmapSpace(1 << 30, (1 << 30) + (1 << 26), nr_nodes=1 if kernel == "6.8" else 3,
                          zone_size=2 * 4096, lock=lock, kernel=kernel)
        # Compaction and page release made eager: records move and pages go
        # back while the other workers' readers run.
        set_slab_tuning(space, 1, 0)
        res = _space.stress_native(space, 4, OPS, seed=7)
        space.check()
        assert res["errors"] == 0, (lock, res["errors"])
        for owned in res["owned"]:
            for start, end in owned:
                area = space.find(start)
                assert area is not None and (area.start, area.end) == (start, end)
        print(f"{lock:>10} kernel {kernel or 'newest':>6}: {res['allocs']} allocs, {res['frees']} frees, "
              f"{res['finds']} finds, 0 errors, check() passed, "
              f"{space.stats()['slab_compactions']} slab compactions")
    for mode in ("unlocked", "node", "rwlock", "optimistic"):
        cell = _space.usercopy_run(mode, 3, buffers=64, seconds=0.2, churn_us=0, count_lookups=0)
        print(f"usercopy {mode:>10}: {cell['requests']} requests, {cell['churn_ops']} writer ops")
    anchors_experiments()
    return 0


def anchors_experiments() -> None:
    """The native test_vmalloc workers on every design of a 4-CPU machine, and
    the usercopy cell with a lazy writer and several lookups per request."""
    from vmap_core.kernel import driver as drv
    from vmap_core.kernel import scenarios as tv
    p = tv.Params(run_test_mask=drv.NATIVE_MASK & ~0x2, nr_threads=3,
                  test_loop_count=max(50, OPS // 40), online_cpus=4, nr_pages=2)
    for r in drv.run_designs(drv.COVER_LETTER_DESIGNS, p, seed=5, cpus=4):
        assert r.ok, drv.verdict(r)
        print(f"test_vmalloc {r.design:>16}: {r.locks['contended']} contended acquisitions")
    for design in ("6.8/split", "6.9/node", "6.9/rwlock", "6.16/optimistic"):
        kernel, mode = design.split("/")
        cell = _space.usercopy_run(mode, 3, buffers=64, seconds=0.2, churn_us=0, kernel=kernel,
                                   nr_nodes=None if kernel == "6.8" else 8, lookups=2,
                                   lazy_writer=True, lazy_max_pages=64, count_lookups=2000)
        print(f"usercopy_run {design:>16}: {cell['requests']} requests, "
              f"{cell['churn_purges']} writer purges")


if __name__ == "__main__":
    sys.exit(main())

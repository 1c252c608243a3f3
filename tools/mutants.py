#!/usr/bin/env python3
"""Mutation testing of vmap_core: does the suite fail when the code is wrong?

Each mutant is one plausible bug: an exact piece of text in one file (it
must occur there exactly once) and its replacement.  For each mutant the
harness copies the tree to a temporary directory (never the working tree),
applies it, rebuilds the extension when a compiled file changed, and runs
pytest -x on the mutant's fast subset of the suite; only if that passes
(the mutant survived it) does it run the whole suite.  It prints a table (who
killed each mutant, in how many seconds), a score, writes JSON, and exits 1
when the score is below --threshold.

    python tools/mutants.py                      # every mutant
    python tools/mutants.py --only walk_up,pool_class_off_by_one
    python tools/mutants.py --sample 3 --seed "$(git rev-parse HEAD)"   # CI
    python tools/mutants.py --list

Adding a mutant: append a Mutant to MUTANTS below (a short, distinctive
original text; the layer picks the fast subset unless tests= names one).
tests/test_mutants.py checks that every original still occurs exactly once,
so a change to the code that makes a mutant stale fails the suite loudly.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/vmap_core"


@dataclass(frozen=True)
class Mutant:
    name: str
    layer: str
    path: str               # relative to the repository root
    original: str           # occurs exactly once in the file
    replacement: str
    bug: str                # the bug it stands for
    tests: tuple[str, ...] = ()     # the fast subset; default: LAYER_TESTS[layer]
    equivalent: str = ""    # non-empty: not a bug (the reason); not run


# The fast subset per layer: test files (or node ids), run with pytest -x.
LAYER_TESTS: dict[str, tuple[str, ...]] = {
    "rbtree": ("tests/test_check.py", "tests/test_alloc.py", "tests/test_free_merge.py"),
    "freetree": ("tests/test_alloc.py", "tests/test_free_merge.py", "tests/test_check.py"),
    "freetree-kernel": ("tests/test_alloc.py", "tests/test_profiles.py",
                        "tests/test_kernel_scenarios.py", "tests/test_state_machine.py"),
    "nodes": ("tests/test_walk.py", "tests/test_find.py", "tests/test_alloc.py"),
    "locks": ("tests/test_interleavings.py", "tests/test_walk.py"),
    "lazy": ("tests/test_purge_nodes.py", "tests/test_pool_classes.py", "tests/test_profiles.py",
             "tests/test_check.py", "tests/test_on_purge.py", "tests/test_state_machine_lazy.py"),
    "pools": ("tests/test_pool_classes.py", "tests/test_profiles.py", "tests/test_purge_nodes.py",
              "tests/test_kernel_scenarios.py", "tests/test_state_machine_lazy.py"),
    "slab": ("tests/test_check.py", "tests/test_snapshots.py", "tests/test_leaks.py",
             "tests/test_slab.py"),
    "find_many": ("tests/test_batch.py",),
    "check": ("tests/test_check.py",),
    "reference": ("tests/test_alloc.py", "tests/test_pool_classes.py", "tests/test_free_merge.py",
                  "tests/test_state_machine.py"),
    "cli": ("tests/test_cli_info_map.py", "tests/test_trace.py", "tests/test_cli_usercopy.py",
            "tests/test_replay.py"),
}

# A test running longer than this is a hang (tools/_hang_watchdog.py).  The
# subsets with Hypothesis state machines get more: one of those takes up to a
# minute on a loaded 2-core machine.
HANG_SECONDS = 15.0
SLOW_LAYERS = {"freetree-kernel", "lazy", "pools", "reference", "cli"}
SLOW_HANG_SECONDS = 240.0

RB, FT, ND, AL, LZ = (f"{PKG}/_rbtree.pxi", f"{PKG}/_freetree.pxi", f"{PKG}/_nodes.pxi",
                      f"{PKG}/_alloc.pxi", f"{PKG}/_lazy.pxi")
TY, LK, CK, SL, SP = (f"{PKG}/_types.pxi", f"{PKG}/_locks.h", f"{PKG}/_check.pxi",
                      f"{PKG}/_slab.pxi", f"{PKG}/_space.pyx")

MUTANTS: tuple[Mutant, ...] = (
    # -- red-black mechanics ------------------------------------------------
    Mutant("rb_no_recolour", "rbtree", RB,
           "if rb_is_red(u):      # recolour and go up two levels",
           "if False:      # recolour and go up two levels",
           "insert rebalancing never recolours a red uncle (rotates instead)"),
    Mutant("rb_rotate_left_parent", "rbtree", RB,
           "    rb_set_right(x, y.left)\n    if y.left != NULL:",
           "    rb_set_right(x, y.left)\n    if False:",
           "a left rotation leaves the moved subtree's parent link stale"),
    Mutant("rb_erase_no_fixup", "rbtree", RB,
           "        removed_black = rb_is_black(y)",
           "        removed_black = False",
           "erasing a node with two children skips the black-height fixup"),
    Mutant("rb_erase_no_propagate", "rbtree", RB,
           "            aug.propagate(xp, y)            # the path that lost y ...",
           "            pass",
           "erase does not update the augmentation on the successor's old path"),
    # -- free tree and its augmentation -------------------------------------
    Mutant("fit_rejects_exact", "freetree", FT,
           "if nva > va.last or va.last - nva < szm1:",
           "if nva > va.last or va.last - nva <= szm1:",
           "is_within_this_va() rejects an exact fit"),
    Mutant("lowest_skips_exact_left", "freetree", FT,
           "if n.left != NULL and n.left.aux >= szm1 and vstart < n.start:",
           "if n.left != NULL and n.left.aux > szm1 and vstart < n.start:",
           'search="lowest" skips a left subtree whose largest block fits exactly'),
    Mutant("kernel_skips_exact_left", "freetree-kernel", FT,
           "if node.left != NULL and node.left.aux >= need and vstart < node.start:",
           "if node.left != NULL and node.left.aux > need and vstart < node.start:",
           'search="kernel" skips a left subtree whose largest block fits exactly'),
    Mutant("kernel_adjust_exact_range", "freetree-kernel", FT,
           "adjust = not (align <= s.page_size or vlast - vstart == szm1)",
           "adjust = not (align <= s.page_size)",
           'search="kernel" adjusts the length for a range that is exactly the request'),
    Mutant("merge_prev_off_by_one", "freetree", FT,
           "join_prev = prev != NULL and va.start != 0 and prev.last == va.start - 1",
           "join_prev = prev != NULL and va.start != 0 and prev.last == va.start",
           "a freed block never merges with the block before it"),
    Mutant("merge_next_off_by_one", "freetree", FT,
           "join_next = next != NULL and va.last != UINT64_MAX and next.start == va.last + 1",
           "join_next = next != NULL and va.last != UINT64_MAX and next.start == va.last",
           "a freed block never merges with the block after it"),
    Mutant("fit_type_ne_as_re", "freetree", FT,
           "return RE_FIT_TYPE if va.last == nlast else NE_FIT_TYPE",
           "return RE_FIT_TYPE if va.last >= nlast else NE_FIT_TYPE",
           "a fit in the middle of a block is clipped as a right-edge fit (the tail is lost)"),
    Mutant("aug_propagate_stops_early", "freetree", FT,
           "        if n.aux == m:\n            break",
           "        if n.aux >= m:\n            break",
           "augmentation stops climbing when a subtree max shrinks"),
    Mutant("clip_ne_overlap", "freetree", FT,
           "        vm_store_u64(&spare.last, nva - 1)",
           "        vm_store_u64(&spare.last, nva)",
           "an NE clip leaves the head block overlapping the new area by one byte"),
    # -- nodes and walks -----------------------------------------------------
    Mutant("walk_up_on_6_16", "nodes", ND,
           "return i - 1 if i else s.nr_nodes - 1",
           "return i + 1 if i + 1 < s.nr_nodes else 0",
           "v6.16's lookup walks the nodes upwards (i + 1) instead of downwards"),
    Mutant("walk_down_on_6_9", "nodes", ND,
           "    return i + 1 if i + 1 < s.nr_nodes else 0",
           "    return i - 1 if i else s.nr_nodes - 1",
           "v6.9's lookup walks the nodes downwards instead of upwards (i + 1)"),
    Mutant("walk_skips_last_node", "nodes", ND,
           "        i = node_walk_next(s, i)\n        if i == first:\n            break\n"
           "    if s.global_lock != NULL:\n        vm_unlock(s.global_lock)\n    return found",
           "        i = node_walk_next(s, i)\n        if node_walk_next(s, i) == first:\n"
           "            break\n    if s.global_lock != NULL:\n        vm_unlock(s.global_lock)\n"
           "    return found",
           "the wraparound lookup stops one node early"),
    Mutant("node_id_mask", "nodes", TY,
           "return <unsigned>(zone % s.nr_nodes)",
           "return <unsigned>(zone & (s.nr_nodes - 1))",
           "addr_to_node_id() masks instead of taking the remainder (wrong for 3 nodes)"),
    Mutant("unlink_not_start", "nodes", ND,
           "            if va.start == addr:",
           "            if va.start <= addr:",
           "free() of an address inside an area (not its start) frees the area"),
    # -- locks and lock modes ---------------------------------------------------
    Mutant("optimistic_no_retry_check", "locks", ND,
           "    if not vm_read_seqretry(&vn.seq, seq) and found >= 0:\n        return found\n"
           "    vm_atomic_inc(&vn.read_retries)",
           "    if found >= 0:\n        return found\n    vm_atomic_inc(&vn.read_retries)",
           "an optimistic reader uses its result without validating the seqcount"),
    Mutant("publish_without_node_lock", "locks", AL,
           "        vm_unlock(s.free_lock)\n        busy_lock(s, vn)",
           "        vm_unlock(s.free_lock)",
           "alloc() publishes its area in the node's tree without the node's lock"),
    Mutant("seqcount_write_skipped", "locks", TY,
           "    elif s.mode == LOCK_OPTIMISTIC:\n        vm_write_seqbegin(&vn.seq)",
           "    elif False:\n        vm_write_seqbegin(&vn.seq)",
           "writers never bump the seqcount (optimistic readers see no change)"),
    Mutant("seqbegin_half_skipped", "locks", LK,
           "    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELAXED);\n"
           "    __atomic_thread_fence(__ATOMIC_RELEASE);",
           "    __atomic_thread_fence(__ATOMIC_RELEASE);",
           "vm_write_seqbegin() does not make the count odd (only the end bumps it)"),
    Mutant("wait_ticks_not_converted", "locks", LK,
           "        return (uint64_t)((double)ticks * scale + 0.5);",
           "        return ticks;",
           "the lock statistics report TSC ticks as nanoseconds (wait_ns off by the TSC's GHz)"),
    Mutant("handoff_does_not_wait", "locks", f"{PKG}/_runs.pxi",
           "        while vm_load_int(&h.turn) != me:",
           "        while False:",
           "line_transfer_ns() times a loop that never waits for the other thread",
           tests=("tests/test_threads.py",)),
    Mutant("unlink_lock_released_early", "locks", ND,
           "        busy_lock(s, vn)\n        va = bt_lookup(vn, addr)",
           "        busy_lock(s, vn)\n        busy_unlock(s, vn)\n        va = bt_lookup(vn, addr)",
           "free() releases the node's lock before it unlinks the area"),
    Mutant("rwlock_writer_not_exclusive", "locks", TY,
           "    if s.mode == LOCK_RWLOCK:\n        if not vm_write_lock_rw_begin(&vn.rw):",
           "    if False:\n        if not vm_write_lock_rw_begin(&vn.rw):",
           'an "rwlock" writer changes the tree without shutting readers out'),
    Mutant("node_reader_unlocked", "locks", ND,
           "    elif s.mode != LOCK_GLOBAL:\n        lock_acquire(&vn.lock)\n    return node_read_unlock(",
           "    elif False:\n        lock_acquire(&vn.lock)\n    return node_read_unlock(",
           'a "node" mode lookup reads the node\'s tree without its lock'),
    Mutant("node_reader_try_unlocked", "locks", ND,
           "    elif s.mode != LOCK_GLOBAL:\n        if not vm_lock_try(&vn.lock):\n            return -1",
           "    elif False:\n        if not vm_lock_try(&vn.lock):\n            return -1",
           'find()\'s first, uncontended try in "node" mode reads the tree without the lock'),
    Mutant("global_find_unlocked", "locks", ND,
           "    if s.global_lock != NULL:\n        lock_acquire(s.global_lock)\n    while True:\n"
           "        found = node_find(s, &s.nodes[i]",
           "    if False:\n        lock_acquire(s.global_lock)\n    while True:\n"
           "        found = node_find(s, &s.nodes[i]",
           'a "global" mode lookup walks the nodes without the one lock'),
    # -- lazy free and purge ------------------------------------------------------
    Mutant("purge_skips_last_node", "lazy", LZ,
           "    for k in range(s.nr_nodes):\n        vn = &s.nodes[k]\n        if not s.lazy_merge:",
           "    for k in range(s.nr_nodes - 1):\n        vn = &s.nodes[k]\n        if not s.lazy_merge:",
           "a purge never detaches the last node's lazy areas"),
    Mutant("flush_start_first_node", "lazy", LZ,
           "        if vn.purge_list.start < flush_start[0]:",
           "        if flush_start[0] == UINT64_MAX:",
           "the flush range starts at the first node's lowest lazy area, not the lowest"),
    Mutant("lazy_nr_undercount", "lazy", LZ,
           "    nr_lazy[0] = vm_atomic_add(&s.lazy_nr, pages)",
           "    nr_lazy[0] = vm_atomic_add(&s.lazy_nr, pages - 1)",
           "vmap_lazy_nr counts one page less per lazily freed area"),
    Mutant("lazy_in_start_node", "lazy", LZ,
           "    vn = &s.nodes[va.aux - 1 if va.aux else addr_to_node_id(s, va.start)]",
           "    vn = &s.nodes[addr_to_node_id(s, va.start)]",
           "a lazily freed area goes to the node of its start, not of its tag"),
    Mutant("lazy_merge_prev_off_by_one", "lazy", LZ,
           "    join_prev = prev != NULL and va.start != 0 and prev.last == va.start - 1",
           "    join_prev = prev != NULL and va.start != 0 and prev.last == va.start",
           "v6.8's purge tree never merges a lazy area with the one before it"),
    # -- pools and decay ---------------------------------------------------------
    Mutant("pool_class_off_by_one", "pools", LZ,
           "    ok[0] = pm1 < MAX_VA_SIZE_PAGES",
           "    ok[0] = pm1 + 1 < MAX_VA_SIZE_PAGES",
           "a 256-page area gets no pool size class"),
    Mutant("decay_half", "pools", LZ,
           "            n >>= 2",
           "            n >>= 1",
           "a decay takes half of each pool instead of a quarter"),
    Mutant("decay_small_inverted", "pools", LZ,
           "            if n == 0 and not s.decay_keeps_small:",
           "            if n == 0 and s.decay_keeps_small:",
           "v6.16 drains pools of 1-3 areas and v6.9 keeps them (the profiles swapped)"),
    Mutant("full_purge_still_pools", "pools", LZ,
           "            if not full and va.aux and ok:",
           "            if va.aux and ok:",
           "a full purge still puts areas into the pools"),
    # -- slab ------------------------------------------------------------------------
    Mutant("slab_free_uncounted", "slab", SL,
           "    m.nfree += 1\n    s.in_use -= 1",
           "    m.nfree += 1",
           "slab_free() does not count the record as returned"),
    Mutant("slab_cursor_not_lowered", "slab", SL,
           "        if c < s.cur:\n            s.cur = c",
           "        pass",
           "a freed record below the cursor is never reused (the slab only grows)"),
    Mutant("slab_release_keeps_free_list", "slab", SL,
           "        m.free = NULL\n        m.untouched = SLAB_CHUNK_RECORDS",
           "        m.untouched = SLAB_CHUNK_RECORDS",
           "a chunk given back keeps its free list: records handed out twice"),
    Mutant("compact_parent_not_relinked", "slab", f"{PKG}/_compact.pxi",
           "    rb_replace_child(root, rb_parent(x), x, y)",
           "    pass",
           "a moved record's parent still points at the old copy"),
    # -- find_many ---------------------------------------------------------------------
    Mutant("find_many_miss_zero", "find_many", SP,
           "x = sts[j] if found[j] else MISS_U64",
           "x = sts[j] if found[j] else 0",
           "find_many() writes 0 instead of MISS for an address in no area"),
    Mutant("find_many_group_unlocked", "find_many", ND,
           "    elif s.mode != LOCK_GLOBAL:\n        lock_acquire(&vn.lock)\n    bt_lookup_group(",
           "    elif False:\n        lock_acquire(&vn.lock)\n    bt_lookup_group(",
           "find_many's batched descents read a node's tree without its lock in \"node\" mode",
           tests=("tests/test_walk.py", "tests/test_batch.py", "tests/test_interleavings.py")),
    Mutant("find_many_walk_skips_last_node", "find_many", ND,
           "    for r in range(1, s.nr_nodes):",
           "    for r in range(1, s.nr_nodes - 1):",
           "find_many's walk of the misses stops one node short of find()'s",
           tests=("tests/test_walk.py", "tests/test_batch.py", "tests/test_find.py")),
    Mutant("find_many_try_unlocked", "find_many", ND,
           "        if not vm_lock_try(&vn.lock):\n            return False\n        bt_lookup_group(",
           "        if False:\n            return False\n        bt_lookup_group(",
           "find_many's first pass reads a node's tree without its lock in \"node\" mode",
           tests=("tests/test_walk.py", "tests/test_batch.py", "tests/test_interleavings.py")),
    # -- the exact aligned search's fit cache ------------------------------------------
    Mutant("fit_cache_forgets_merged_hole", "freetree", FT,
           "        if e.align == 0 or va.start >= e.floor or not fc_fits(va.start, va.last, e.szm1, e.align):",
           "        if True:",
           "a free that makes a fitting block below the cache's floor is not remembered as a hole "
           "(search=\"lowest\" then misses the lowest aligned fit)",
           tests=("tests/test_aligned_search.py", "tests/test_check.py")),
    # -- check() -------------------------------------------------------------------------
    Mutant("check_no_lazy_pages", "check", CK,
           "    if lazy_pages != s.lazy_nr:",
           "    if False and lazy_pages != s.lazy_nr:",
           "check() no longer compares vmap_lazy_nr with the lazy trees"),
    Mutant("check_no_slab_count", "check", CK,
           "    if s.slab.in_use != nblocks:",
           "    if False:",
           "check() no longer compares the slab's records with the blocks"),
    Mutant("check_no_pool_class", "check", CK,
           "            if size_to_va_pool(s, n.last - n.start, &ok) != cls or not ok:",
           "            if False:",
           "check() no longer verifies that a pooled area is in its size class"),
    Mutant("check_no_lazy_placement", "check", CK,
           "        if (n.aux - 1 if n.aux else addr_to_node_id(s, n.start)) != k:",
           "        if False:",
           "check() no longer verifies the node of a lazy area"),
    Mutant("check_no_subtree_max", "check", CK,
           "    if augmented and n.aux != ft_subtree_max(n):",
           "    if False and n.aux != ft_subtree_max(n):",
           "check() no longer verifies subtree_max_size"),
    # -- the reference -------------------------------------------------------------------
    Mutant("ref_pool_class_off_by_one", "reference", f"{PKG}/reference.py",
           "return pages - 1 if pages <= MAX_VA_SIZE_PAGES else None",
           "return pages - 1 if pages < MAX_VA_SIZE_PAGES else None",
           "the reference gives a 256-page area no pool class"),
    Mutant("ref_fit_rejects_exact", "reference", f"{PKG}/freetree.py",
           "    return nva_start_addr + size <= va.va_end",
           "    return nva_start_addr + size < va.va_end",
           "the reference's free tree rejects an exact fit"),
    Mutant("ref_merge_next_never", "reference", f"{PKG}/freetree.py",
           "if nxt is not self.head and nxt.va_start == va.va_end:",
           "if nxt is not self.head and nxt.va_start == va.va_end + 1:",
           "the reference's free tree never merges with the next block"),
    # -- the CLI's and the trace's parsers --------------------------------------------------
    Mutant("cli_int_range_exclusive", "cli", f"{PKG}/cli/common.py",
           "        if v < lo or (hi is not None and v > hi):",
           "        if v < lo or (hi is not None and v >= hi):",
           "a CLI integer option rejects its documented maximum"),
    Mutant("cli_kernel_int_no_octal", "cli", f"{PKG}/cli/common.py",
           '    return sign * int(body, 8 if body.startswith("0") else 10)',
           "    return sign * int(body, 10)",
           'a module_param integer "010" is read as decimal 10, not octal 8',
           tests=("tests/test_kernel_scenarios.py::test_module_param_integers",
                  "tests/test_kernel_scenarios.py")),
    Mutant("trace_hex_digit", "cli", f"{PKG}/_traceparse.pyx",
           "            v = (v << 4) | <uint64_t>(c - c'a' + 10)",
           "            v = (v << 4) | <uint64_t>(c - c'a' + 11)",
           "the native trace parser reads hex digits a-f one too high",
           tests=("tests/test_trace.py",)),
    Mutant("trace_py_lazy_base", "cli", f"{PKG}/trace.py",
           '"free_vmap_area_noflush": (16, 10, 10),',
           '"free_vmap_area_noflush": (16, 16, 10),',
           "the Python trace parser reads nr_lazy as hexadecimal",
           tests=("tests/test_trace.py",)),
)

COMPILED = (".pyx", ".pxi", ".pxd", ".h")


def occurrences(m: Mutant, root: Path = ROOT) -> int:
    return (root / m.path).read_text().count(m.original)


def apply(m: Mutant, root: Path) -> None:
    """Apply m to the tree at root (a copy); ValueError if its text is stale."""
    p = root / m.path
    text = p.read_text()
    n = text.count(m.original)
    if n != 1:
        raise ValueError(f"{m.name}: its original text occurs {n} times in {m.path}")
    p.write_text(text.replace(m.original, m.replacement))
    if p.suffix in COMPILED:
        # Force the rebuild of the extension that includes it.
        ext = "_traceparse" if p.name == "_traceparse.pyx" else "_space"
        for f in (root / PKG).glob(f"{ext}.*"):
            if f.suffix in (".c", ".so"):
                f.unlink()


_IGNORE = shutil.ignore_patterns(".git", ".venv*", "dist", ".hypothesis",
                                 ".pytest_cache", "__pycache__", "*.egg-info", "results",
                                 ".mypy_cache", "*.html")


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=_IGNORE, symlinks=True)


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    """Run cmd; its output, with the watchdog's log (tools/_hang_watchdog.py) after it."""
    log = Path(tempfile.mkstemp(prefix="mutant-watch-", suffix=".log")[1])
    env = {**env, "VMAP_MUTANT_LOG": str(log)}
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, out = -1, out + "\n[timeout]"
    secs = time.monotonic() - t0
    try:
        out += "\n" + log.read_text(errors="replace")
    finally:
        log.unlink()
    return rc, out, secs


# Mutants build without optimisation (VMAP_CORE_DEBUG=1: -O0), several times
# faster to compile; no kill depends on timing (the concurrency tests force
# their interleavings), so the optimisation level does not decide one.
BUILD_ENV = {"VMAP_CORE_DEBUG": "1"}


def build(root: Path, python: str, env: dict[str, str]) -> tuple[bool, str, float]:
    env = {**env, **BUILD_ENV}
    rc, out, secs = run([python, "setup.py", "build_ext", "--inplace"], root, env, 900)
    return rc == 0, out, secs


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
_RUNNING = re.compile(r"^MUTANT-TEST (\S+)", re.M)


def first_failure(out: str) -> str:
    """The test that killed the mutant: pytest's first FAILED/ERROR line, or
    the test that was running when the interpreter hung or crashed."""
    m = _FAILED.search(out)
    if m:
        return m.group(1)
    running = _RUNNING.findall(out)
    last = running[-1] if running else "?"
    if "Timeout (" in out:
        return f"{last} (hang)"
    if "Fatal Python error" in out:
        return f"{last} (crash)"
    if "[timeout]" in out:
        return f"{last} (timeout)"
    return f"{last} (exit without a report)"


def _slow_not_killed(rc: int, out: str) -> bool:
    """The run hit its overall time limit with no test failing or hanging
    (the watchdog did not fire): too slow to tell, not a kill."""
    return rc == -1 and "Timeout (" not in out and not _FAILED.search(out)


@dataclass
class Result:
    name: str
    layer: str
    bug: str
    status: str = "error"    # killed, survived, timeout, equivalent, stale, error
    killed_by: str = ""
    stage: str = ""          # subset, full, build
    seconds: float = 0.0     # pytest wall time to the kill (build not counted)
    build_seconds: float = 0.0
    detail: str = field(default="", repr=False)


def test_env(root: Path, hang_seconds: float = 0) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join((str(root / "src"), str(root / "tools")))
    env["VMAP_MUTANT_HANG_S"] = str(hang_seconds)
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    env["VMAP_CORE_REQUIRE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest_cmd(python: str, tests: tuple[str, ...] | list[str]) -> list[str]:
    return [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_hang_watchdog",
            *tests]


def run_mutant(m: Mutant, base: Path, python: str, full_timeout: float,
               subset_timeout: float) -> Result:
    r = Result(m.name, m.layer, m.bug)
    if m.equivalent:
        r.status, r.detail = "equivalent", m.equivalent
        return r
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        root = Path(tmp) / "tree"
        copy_tree(base, root)
        try:
            apply(m, root)
        except ValueError as e:
            r.status, r.detail = "stale", str(e)
            return r
        env = test_env(root)
        if Path(m.path).suffix in COMPILED:
            ok, out, r.build_seconds = build(root, python, env)
            if not ok:
                # A mutant that does not compile tests nothing: fix its text.
                r.status, r.stage, r.detail = "error", "build", out[-2000:]
                return r
        check = run([python, "-c", "import vmap_core, sys; print(vmap_core.__file__)"],
                    root, env, 120)
        if not check[1].strip().startswith(str(root)):
            r.status, r.detail = "error", f"imported the wrong vmap_core: {check[1][-500:]}"
            return r
        subset = m.tests or LAYER_TESTS[m.layer]
        hang = SLOW_HANG_SECONDS if m.layer in SLOW_LAYERS else HANG_SECONDS
        rc, out, secs = run(pytest_cmd(python, subset), root, test_env(root, hang), subset_timeout)
        r.seconds = secs
        if _slow_not_killed(rc, out):
            r.status, r.stage, r.detail = "timeout", "subset", "the subset ran out of time"
            return r
        if rc != 0:
            r.status, r.stage, r.killed_by, r.detail = "killed", "subset", first_failure(out), out[-3000:]
            return r
        rc, out, secs = run(pytest_cmd(python, ["tests"]), root, test_env(root, SLOW_HANG_SECONDS),
                            full_timeout)
        r.seconds += secs
        if _slow_not_killed(rc, out):
            r.status, r.stage, r.detail = "timeout", "full", "the suite ran out of time"
        elif rc != 0:
            r.status, r.stage, r.killed_by, r.detail = "killed", "full", first_failure(out), out[-3000:]
        else:
            r.status, r.stage = "survived", "full"
    return r


def prepare_base(python: str) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    """One copy of the working tree, built once: each mutant copies it (with
    its built extensions), so only the extension a mutant touches rebuilds."""
    tmp = tempfile.TemporaryDirectory(prefix="mutants-base-")
    base = Path(tmp.name) / "tree"
    copy_tree(ROOT, base)
    ok, out, _ = build(base, python, test_env(base))
    if not ok:
        raise SystemExit(f"the unmutated tree does not build:\n{out[-3000:]}")
    return tmp, base


def select(names: str | None, sample: int | None, seed: str | None) -> list[Mutant]:
    chosen = list(MUTANTS)
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {m.name: m for m in MUTANTS}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise SystemExit(f"unknown mutant(s): {', '.join(unknown)} (see --list)")
        chosen = [known[n] for n in wanted]
    if sample is not None and sample < len(chosen):
        # A seed (a commit hash in CI) picks the sample, so that over many
        # commits every mutant runs.
        rng = random.Random(seed if seed is not None else time.time_ns())
        chosen = rng.sample(chosen, sample)
    return chosen


def score(results: list[Result]) -> tuple[int, int, float]:
    counted = [r for r in results if r.status != "equivalent"]
    killed = sum(r.status == "killed" for r in counted)
    return killed, len(counted), (killed / len(counted) if counted else 1.0)


def print_table(results: list[Result]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    t = Table(title="vmap_core mutants")
    for col, just in (("mutant", "left"), ("layer", "left"), ("result", "left"),
                      ("killed by", "left"), ("stage", "left"), ("s to kill", "right"),
                      ("build s", "right")):
        t.add_column(col, justify=just)   # type: ignore[arg-type]
    style = {"killed": "green", "survived": "bold red", "stale": "bold red", "timeout": "bold red",
             "error": "bold red", "equivalent": "yellow"}
    for r in results:
        t.add_row(r.name, r.layer, f"[{style[r.status]}]{r.status}[/]",
                  escape(r.killed_by or (r.detail[:60] if r.status != "killed" else "")),
                  r.stage, f"{r.seconds:.1f}" if r.status in ("killed", "survived") else "",
                  f"{r.build_seconds:.0f}" if r.build_seconds else "")
    Console(width=max(170, shutil.get_terminal_size().columns)).print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", metavar="NAMES", help="comma-separated mutant names")
    ap.add_argument("--sample", type=int, metavar="K", help="run K mutants chosen by --seed")
    ap.add_argument("--seed", metavar="S", help="seed of the sample (CI: the commit hash)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    ap.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    ap.add_argument("--threshold", type=float, default=1.0,
                    help="exit 1 when killed / (mutants - equivalent) is below it (default 1.0)")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter with the test dependencies (default: this one)")
    ap.add_argument("--subset-timeout", type=float, default=600,
                    help="seconds for a mutant's subset; running out is no kill (default 600)")
    ap.add_argument("--full-timeout", type=float, default=1800)
    ap.add_argument("--optimised", action="store_true",
                    help="build the mutants with the release flags (-O2; slower to build)")
    ap.add_argument("--check-base", action="store_true",
                    help="first run the chosen mutants' subsets on the unmutated tree")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    if args.sample is not None and args.sample < 1:
        ap.error("--sample must be at least 1")

    if args.list:
        for m in MUTANTS:
            print(f"{m.name:30} {m.layer:16} {m.path:32} {m.bug}")
        return 0
    if args.optimised:
        BUILD_ENV.clear()
    chosen = select(args.only, args.sample, args.seed)
    stale = [m.name for m in chosen if occurrences(m) != 1]
    if stale:
        print(f"stale mutants (their text no longer occurs exactly once): {', '.join(stale)}",
              file=sys.stderr)
        return 2
    tmp, base = prepare_base(args.python)
    if args.check_base:
        # Every subset passes on the unmutated tree, or no kill would mean anything.
        files = sorted({t for m in chosen for t in (m.tests or LAYER_TESTS[m.layer])})
        rc, out, secs = run([args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                            base, test_env(base, SLOW_HANG_SECONDS), args.full_timeout)
        if rc != 0:
            tmp.cleanup()
            print(out[-3000:], file=sys.stderr)
            print("the fast subsets fail on the unmutated tree", file=sys.stderr)
            return 2
        print(f"the fast subsets pass on the unmutated tree ({secs:.0f} s)", flush=True)
    t0 = time.monotonic()
    with tmp, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_mutant, m, base, args.python, args.full_timeout,
                               args.subset_timeout) for m in chosen]
        results = []
        for m, f in zip(chosen, futures):
            r = f.result()
            results.append(r)
            print(f"{r.name}: {r.status} {r.killed_by} ({r.seconds:.1f} s)", flush=True)
    killed, counted, frac = score(results)
    print_table(results)
    print(f"score: {killed}/{counted} killed = {frac:.0%} "
          f"({sum(r.status == 'equivalent' for r in results)} equivalent); "
          f"slowest kill {max((r.seconds for r in results if r.status == 'killed'), default=0):.1f} s; "
          f"{time.monotonic() - t0:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({
            "killed": killed, "counted": counted, "score": frac,
            "threshold": args.threshold,
            "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return 0 if frac >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())

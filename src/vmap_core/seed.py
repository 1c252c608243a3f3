"""The seed's table in the model: ``usercopy --compare seed``.

The seed (:mod:`vmap_core.anchors`) measured nginx + wrk over SMC on a 48-vCPU
guest with the buffers vzalloc'ed, so that every copy to or from them looked
its area up.  The preset mirrors that machine in the model: 48 nodes (or
``--cpus``), lazy_max_pages of 48 CPUs, the buffers of 1000 SMC connections
(``anchors.SEED_BUFFER_REASON``), a writer that frees lazily as vfree() does,
and the designs the seed ran (v6.8's one lock, v6.9's per-node locks and the
rwlock test patch, no lookup) plus two it never ran (v6.16's walk, seqcount
readers), all measured in one run.

Absolute requests/s of a 48-vCPU guest running nginx cannot be compared with
a model's; ratios to the no-lookup row can, once a request costs the same
share of lookups and other work in both.  :func:`calibrate` fits the two
numbers that set that share, the CPU work per request besides the lookups and
the lookups per request, to two of the seed's rows (v6.8's global lock and no
lookup) at the thread count this machine can really run; the other rows are
then *predictions*, measured with no further tuning and reported against the
seed, a miss with the measured reason (:func:`predictions`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from . import anchors, measure, usercopy

#: The designs of the comparison: (model design, seed row key or None).
DESIGNS: tuple[tuple[str, str | None], ...] = (
    ("nocheck", "nocheck"),
    ("6.8/split", "6.8"),
    ("6.9/node", "6.9/node"),
    ("6.9/rwlock", "6.9/rwlock"),
    ("6.16/node", None),
    ("6.16/optimistic", None),
    ("unlocked", None),
)
SEED_KEY = dict(DESIGNS)

#: Each request of the seed's benchmark is four checked copies: wrk writes the
#: request into its socket's send buffer, nginx reads it out of its RMB, nginx
#: writes the response, wrk reads it.
DEFAULT_LOOKUPS = 4
#: nginx's default index page with its headers is about 850 bytes, a GET request
#: about 100: copies of 1 KiB.
DEFAULT_COPY_SIZE = 1024

#: A prediction within this share of the seed's ratio is a hit.
HIT_TOLERANCE = 0.15


@dataclasses.dataclass(frozen=True)
class Setup:
    """The model's side of the comparison."""
    cpus: int = anchors.SEED_CPUS
    buffers: int = anchors.SEED_BUFFERS
    buffer_size: int = anchors.SMC_SNDBUF
    copy_size: int = DEFAULT_COPY_SIZE
    churn_us: int = 100
    lookups: int = DEFAULT_LOOKUPS
    work_ns: int = 0
    threads: int = 1

    @property
    def nr_nodes(self) -> int:
        return max(1, min(self.cpus, 128))

    @property
    def lazy_max_pages(self) -> int:
        return self.cpus.bit_length() * (32 << 20) // 4096

    def cell_kwargs(self) -> dict[str, Any]:
        return {"buffers": self.buffers, "buffer_size": self.buffer_size,
                "copy_size": self.copy_size, "churn_us": self.churn_us,
                "work_ns": self.work_ns, "nr_nodes": self.nr_nodes,
                "lookups": self.lookups, "lazy_writer": True,
                "lazy_max_pages": self.lazy_max_pages}


def seed_cpu_ns_per_request() -> float:
    """The seed's CPU time per request with no lookup: 48 vCPUs / 805,165 req/s."""
    return anchors.SEED_CPUS / anchors.SEED_NOCHECK * 1e9


# -- calibration -------------------------------------------------------------------

@dataclasses.dataclass
class Calibration:
    """The fit: work_ns and lookups per request, and how it was reached."""
    threads: int
    work_ns: int
    lookups: int
    copy_ns: float                  # thread time per checked-copy-less copy, measured
    target_ratio: float             # the seed's global / no lookup
    reached_ratio: float | None     # the model's at the fit
    steps: list[dict[str, Any]]     # every (lookups, work_ns, ratio) tried
    feasible: bool                  # whether the target lies within the model's reach
    note: str


def _ratio_at(setup: Setup, lookups: int, work_ns: int, *, seconds: float, rounds: int,
              progress=None) -> tuple[float, float, float]:
    """(6.8's requests/s, no lookup's, their ratio) at ``lookups`` and ``work_ns``."""
    s = dataclasses.replace(setup, lookups=lookups, work_ns=work_ns)
    rows = usercopy.run_sweep(["nocheck", "6.8/split"], [setup.threads], seconds=seconds,
                              rounds=rounds, progress=progress, **s.cell_kwargs())
    rate = {r["design"]: r["requests_per_s"] for r in rows}
    return rate["6.8/split"], rate["nocheck"], rate["6.8/split"] / rate["nocheck"]


def calibrate(setup: Setup, *, seconds: float = 0.3, rounds: int = 2,
              progress=None) -> Calibration:
    """Fit work_ns and lookups per request to the seed's no-lookup and global rows.

    1. No-lookup row: a thread's time per request equals the seed's CPU time
       per request, 48 vCPUs / 805,165 req/s = 59.6 µs.  A no-lookup cell at
       one lookup and no work measures the time of one copy (``copy_ns``), so
       ``work_ns = 59.6 µs - lookups x copy_ns``.
    2. Global row: 6.8 over no lookup at ``setup.threads`` threads equals the
       seed's 0.141; the ratio falls as lookups grow, so lookups is found by
       bisection between 1 and the most that still leave work_ns >= 0.

    When even that most leaves the ratio above the seed's (the lock does not
    saturate with this few threads), the fit stops there and says so
    (``feasible`` False).
    """
    target = anchors.SEED_BY_KEY["6.8"].ratio
    per_request = seed_cpu_ns_per_request()
    s0 = dataclasses.replace(setup, lookups=1, work_ns=0)
    rows = usercopy.run_sweep(["nocheck"], [setup.threads], seconds=seconds, rounds=rounds,
                              progress=progress, **s0.cell_kwargs())
    copy_ns = setup.threads / rows[0]["requests_per_s"] * 1e9
    top = max(1, int(per_request // copy_ns))
    steps: list[dict[str, Any]] = []

    def work(lookups: int) -> int:
        return max(0, int(per_request - lookups * copy_ns))

    def at(lookups: int) -> float:
        g, n, r = _ratio_at(setup, lookups, work(lookups), seconds=seconds, rounds=rounds,
                            progress=progress)
        steps.append({"lookups": lookups, "work_ns": work(lookups), "global_per_s": g,
                      "nocheck_per_s": n, "ratio": r})
        return r

    lo, hi = 1, top
    r_lo = at(lo)
    if r_lo <= target:
        fit, reached, feasible = lo, r_lo, True
        note = "one lookup per request already brings the global lock down to the seed's ratio"
    else:
        r_hi = at(hi) if hi > lo else r_lo
        if r_hi > target:
            fit, reached, feasible = hi, r_hi, False
            note = (f"with {setup.threads} threads the global lock keeps {r_hi:.2f} of no "
                    f"lookup even at {hi} lookups per request (all of the seed's "
                    f"{per_request / 1e3:.1f} µs per request spent copying and looking up): "
                    f"it never saturates as the seed's 48 CPUs saturated it")
        else:
            while hi - lo > 1:
                mid = int(math.sqrt(lo * hi))
                mid = min(max(mid, lo + 1), hi - 1)
                if at(mid) > target:
                    lo = mid
                else:
                    hi = mid
            fit = min((lo, hi), key=lambda k: abs(_last(steps, k) - target))
            reached, feasible = _last(steps, fit), True
            note = "bisection on lookups per request"
    return Calibration(threads=setup.threads, work_ns=work(fit), lookups=fit, copy_ns=copy_ns,
                       target_ratio=target, reached_ratio=reached, steps=steps,
                       feasible=feasible, note=note)


def _last(steps: list[dict[str, Any]], lookups: int) -> float:
    return next(s["ratio"] for s in reversed(steps) if s["lookups"] == lookups)


# -- the comparison ------------------------------------------------------------------

def compare_rows(rows: list[dict]) -> list[dict[str, Any]]:
    """One row per design (the first thread count): the model's requests/s,
    ratio to no lookup, noise, per-lookup counts, and the seed's row beside it."""
    nc = {r["threads"]: r["requests_per_s"] for r in rows if r["mode"] == "nocheck"}
    out = []
    for r in rows:
        key = SEED_KEY.get(r["design"])
        seed = anchors.SEED_BY_KEY.get(key) if key else None
        base = nc.get(r["threads"])
        out.append({**r, "ratio_to_nocheck": r["requests_per_s"] / base if base else None,
                    "seed_key": key,
                    "seed_requests_per_s": seed.requests_per_s if seed else None,
                    "seed_second_run": seed.second_run if seed else None,
                    "seed_ratio": seed.ratio if seed else None})
    return out


def lookup_ns(row: dict, nocheck: dict, lookups: int) -> float | None:
    """Thread time one lookup adds to a request: (T / rate - T / rate_nocheck) / lookups."""
    if not row["requests_per_s"] or not nocheck["requests_per_s"]:
        return None
    t = row["threads"]
    return (t / row["requests_per_s"] - t / nocheck["requests_per_s"]) * 1e9 / lookups


def predictions(cmp: list[dict[str, Any]], lookups: int) -> list[dict[str, Any]]:
    """The predicted rows against the seed: v6.9's per-node locks and rwlock
    (hit when within HIT_TOLERANCE of the seed's ratio), and v6.16 (never
    measured by the seed).  A miss carries the measured reason: the thread time
    each lookup added here against the time the seed's ratio implies, and the
    walk, contention and waiting behind it."""
    by = {r["design"]: r for r in cmp}
    nc = by.get("nocheck")
    out = []
    for design in ("6.9/node", "6.9/rwlock", "6.16/node", "6.16/optimistic"):
        r = by.get(design)
        if r is None or nc is None or r["ratio_to_nocheck"] is None:
            continue
        seed_ratio = r["seed_ratio"]
        got = r["ratio_to_nocheck"]
        row: dict[str, Any] = {"design": design, "predicted_ratio": got,
                               "seed_ratio": seed_ratio, "noisy": r["noisy"]}
        ns = lookup_ns(r, nc, lookups)
        row["lookup_ns"] = ns
        if seed_ratio is None:
            row["verdict"] = "not measured by the seed"
        else:
            err = got / seed_ratio - 1
            row["error"] = err
            row["verdict"] = "hit" if abs(err) <= HIT_TOLERANCE else "missed"
            if row["verdict"] == "missed":
                t = r["threads"]
                need = (t / (nc["requests_per_s"] * seed_ratio) - t / nc["requests_per_s"]) \
                    * 1e9 / lookups
                row["needed_lookup_ns"] = need
                row["reason"] = miss_reason(r, ns, need, by.get("6.8/split"), nc, lookups)
        out.append(row)
    return out


def miss_reason(r: dict, ns: float | None, need: float, g: dict | None, nc: dict,
                lookups: int) -> str:
    parts = []
    if ns is not None:
        parts.append(f"a lookup added {ns:,.0f} ns of thread time here, the seed's ratio "
                     f"implies {need:,.0f} ns")
    if r.get("nodes_per_lookup") is not None:
        parts.append(f"the walk visited {r['nodes_per_lookup']:.1f} nodes per lookup "
                     f"({r['off_first_node']:.0%} of lookups started in a node not holding "
                     "their area)")
    if r.get("contended_per_lookup") is not None:
        parts.append(f"{r['contended_per_lookup']:.4f} contended acquisitions per lookup")
    if r.get("lock_wait_share") is not None:
        parts.append(f"{r['lock_wait_share']:.0%} of the threads' time waiting for locks")
    if g is not None:
        gns = lookup_ns(g, nc, lookups)
        if gns is not None:
            parts.append(f"6.8's one lock cost {gns:,.0f} ns per lookup "
                         f"({g['contended_per_lookup'] or 0:.4f} contended per lookup, "
                         f"{g['lock_wait_share'] or 0:.0%} waiting)")
    return "; ".join(parts)


def order(cmp: list[dict[str, Any]], designs=("6.8/split", "6.9/rwlock", "6.9/node",
                                              "nocheck")) -> list[str]:
    """The seed's four designs, slowest first, by the model's requests/s."""
    by = {r["design"]: r for r in cmp}
    return sorted((d for d in designs if d in by), key=lambda d: by[d]["requests_per_s"])


SEED_ORDER = ["6.8/split", "6.9/rwlock", "6.9/node", "nocheck"]


def summary(cmp: list[dict[str, Any]], preds: list[dict[str, Any]],
            cal: Calibration | None) -> str:
    """What was measured against what the seed measured, in words."""
    by = {r["design"]: r for r in cmp}
    names = {"6.8/split": "global (6.8)", "6.9/rwlock": "rwlock", "6.9/node": "per-node (6.9)",
             "nocheck": "no lookup"}
    got = order(cmp)
    parts = [f"Order here, slowest first: {' < '.join(names[d] for d in got)}; the seed's: "
             f"{' < '.join(names[d] for d in SEED_ORDER)}"
             + (" (the same)." if got == SEED_ORDER else " (it differs).")]
    node, n16 = by.get("6.9/node"), by.get("6.16/node")
    if node and node["ratio_to_nocheck"] is not None:
        parts.append(f"Per-node locks (6.9 walk) keep {node['ratio_to_nocheck']:.3f} of no "
                     f"lookup here, the seed's kept {anchors.SEED_BY_KEY['6.9/node'].ratio:.3f}.")
    if node and n16 and node["requests_per_s"]:
        parts.append(f"The 6.16 walk gives {n16['requests_per_s'] / node['requests_per_s']:.2f}x "
                     f"the 6.9 walk ({n16['nodes_per_lookup'] or 0:.2f} against "
                     f"{node['nodes_per_lookup'] or 0:.2f} nodes per lookup); the seed never "
                     "measured 6.16.")
    noisy = [r["design"] for r in cmp if r["noisy"]]
    if noisy:
        parts.append(f"Noisy (~): {', '.join(noisy)}.")
    if cal is not None:
        parts.append(f"Calibration at {cal.threads} threads: {cal.lookups} lookups and "
                     f"{cal.work_ns:,} ns of other work per request bring 6.8 to "
                     f"{cal.reached_ratio:.3f} of no lookup (the seed: {cal.target_ratio:.3f})"
                     + ("" if cal.feasible else f"; {cal.note}") + ".")
        for p in preds:
            if p["verdict"] == "not measured by the seed":
                parts.append(f"{p['design']} predicted at {p['predicted_ratio']:.3f} of no "
                             "lookup (not measured by the seed).")
            else:
                parts.append(f"{p['design']} predicted {p['predicted_ratio']:.3f}, the seed "
                             f"measured {p['seed_ratio']:.3f}: {p['verdict']}"
                             + (f" ({p['reason']})" if p.get("reason") else "") + ".")
    return " ".join(parts)


__all__ = ["Calibration", "DEFAULT_COPY_SIZE", "DEFAULT_LOOKUPS", "DESIGNS", "HIT_TOLERANCE",
           "SEED_ORDER", "Setup", "calibrate", "compare_rows", "lookup_ns", "order",
           "predictions", "seed_cpu_ns_per_request", "summary"]

"""``python -m vmap_core replay TRACE``: replay a kernel vmalloc trace.

The command-line face of :mod:`vmap_core.replay` (the logic is there): the
trace's events into a space over its vmalloc range, with its CPUs as nodes
and the chosen kernel profile; prints the agreement, the mismatches by class
and cause, the inferences by rule, purges, failed allocations, nr_lazy and
the first divergences; ``--json PATH`` writes the report, ``--plot PATH``
draws agreement and the free tree's blocks over the trace (needs matplotlib).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import common

NAME = "replay"


def add_parser(sub: Any) -> None:
    from ..profiles import KERNELS, NEWEST
    p = sub.add_parser(
        NAME, formatter_class=common.HelpFormatter,
        help="replay a kernel vmalloc trace and measure where the model agrees",
        description="Replay the alloc_vmap_area / free_vmap_area_noflush / "
        "purge_vmap_area_lazy events of a trace (tracefs trace or trace_pipe, trace-cmd "
        "report, perf script; .gz too; - for stdin) into a space over the trace's vmalloc "
        "range, and report how many allocations land where the kernel put them.")
    p.add_argument("trace", help="the trace file (- for standard input: start=empty only)")
    p.add_argument("--kernel", default=None, metavar="VERSION",
                   help=f"kernel profile ({', '.join(KERNELS)}, or any later version; "
                   f"default the newest, {NEWEST})")
    p.add_argument("--impl", choices=("core", "reference"), default="core",
                   help="space class: the Cython core or the pure-Python reference")
    p.add_argument("--start", choices=("infer", "empty"), default="infer",
                   help="infer the state before the trace, or start from an empty space "
                   "(exact for a trace vmap_core recorded from an empty space)")
    p.add_argument("--vmallocinfo-before", metavar="FILE",
                   help="/proc/vmallocinfo taken before the trace: its unpurged total is the "
                   "kernel's lazy pages at the start")
    p.add_argument("--nr-nodes", type=common.nr_nodes_arg, default=None,
                   help="nodes of the space (default: the trace's CPUs, clamped to 1..128)")
    p.add_argument("--auto-purge", action="store_true",
                   help="let the model purge by itself at the trace's nr_lazy_max instead of "
                   "where the trace purges")
    p.add_argument("--split", type=common.float_in(0, 1), default=None, metavar="FRACTION",
                   help="the inference sees only the events before this fraction; agreement "
                   "is reported before and after it")
    p.add_argument("--divergences", type=common.int_in(0), default=10, metavar="N",
                   help="how many mismatches to show with their neighbourhood")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON here")
    p.add_argument("--plot", metavar="PATH",
                   help="write a picture of agreement and fragmentation over the trace, in "
                   "the format its extension names (PNG without one; needs matplotlib)")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from ..replay import replay
    common.check_out_dir(args.parser, "--json", args.json)
    common.check_image_path(args.parser, "--plot", args.plot, "the replay plot")
    if args.trace == "-" and args.start == "infer":
        args.parser.error("standard input is read once: use --start empty, or a file")
    if args.split == 1:
        args.parser.error("--split must be a fraction in (0, 1)")
    try:
        report = replay(args.trace, kernel=args.kernel, impl=args.impl, start=args.start,
                        nr_nodes=args.nr_nodes, auto_purge=args.auto_purge,
                        divergences=args.divergences,
                        vmallocinfo_before=args.vmallocinfo_before, split=args.split)
    except OSError as e:
        print(f"vmap-core: cannot read {e.filename or args.trace}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:
        print(f"vmap-core: {e}", file=sys.stderr)
        return 1
    for line in summary_lines(report):
        print(line)
    if args.json:
        common.write_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    if args.plot:
        fmt = common.save_figure(figure(report), args.plot)
        print(f"wrote {args.plot} ({fmt.upper()})")
    return 0


def summary_lines(report: Any) -> list[str]:
    """The report as plain lines (what the command prints)."""
    from ..replay import CLASSES, RULES
    j = report.to_json()
    t, sp = j["trace"], j["space"]
    n, ok = j["allocations"], j["at_kernel_address"]
    pre = j["inferences"]["pretrace_handed_out"]
    lines = [
        f"trace {t.get('name')}: {t.get('events', 0):,} events ({t.get('allocs', 0):,} "
        f"alloc_vmap_area, {t.get('frees', 0):,} free_vmap_area_noflush, "
        f"{t.get('purges', 0)} purge_vmap_area_lazy); {t.get('header_lines', 0)} header and "
        f"{t.get('other_lines', 0)} other lines skipped; CPUs {t.get('cpus')}",
        f"model: kernel {j['profile']} profile ({sp['impl']}), [{sp['start']:#x}, "
        f"{sp['end']:#x}), {sp['nr_nodes']} nodes, search {sp['search']}, lock "
        f"{sp['lock']}, start {j['start']}",
        "",
        f"allocations at the kernel's address: {ok:,} of {n:,} ({common.percent(j['agreement'])})"
        f"  [model's own choice: {j['agree_by_source'].get('free', 0):,} from the free tree, "
        f"{j['agree_by_source'].get('pool', 0):,} from a pool]",
    ]
    if pre:
        rest = n - pre
        lines.append(f"  leaving out the {pre:,} the kernel took from state before the trace: "
                     f"{ok:,} of {rest:,} ({common.percent(ok / rest if rest else 1)})")
    f = j["failed_allocations"]
    lines.append(f"failed allocations: {f['kernel']} in the trace, {f['model_also_failed']} "
                 "failed in the model too")
    lines.append("mismatches:")
    for k, desc in CLASSES.items():
        count = j["mismatches"][k]
        lines.append(f"  {count:>7,}  {k}: {desc}")
        for cause, c in sorted(j["mismatch_causes"].get(k, {}).items(), key=lambda x: -x[1]):
            lines.append(f"  {c:>16,}  {cause}")
    lines.append("inferences about the unknown start (and learned on the way):")
    for k, desc in RULES.items():
        lines.append(f"  {j['inferences'][k]:>7,}  {k}: {desc}")
    lines.append("purges (kernel num_purged / model num_purged, range equal):")
    for p in j["purges"]:
        k, m = p["kernel"], p["model"]
        lines.append(f"  line {k['line']:>7}: {k['num_purged']:>6} / {m['num_purged']:<6}"
                     f" count {'equal' if p['equal_count'] else 'differs'}, range "
                     f"{'equal' if p['equal_range'] else 'differs'}"
                     f"{', full (after a failed allocation)' if m['full'] else ''}")
    z = j["nr_lazy"]
    lines.append(f"nr_lazy of each free against the model's lazy pages: {z['equal']:,} of "
                 f"{z['compared']:,} equal, max |difference| {z['max_abs_diff']} pages "
                 "(concurrent frees are traced out of their counter's order)")
    if j["skipped_events"]:
        lines.append("events not replayed: " + ", ".join(
            f"{v} {k}" for k, v in j["skipped_events"].items()))
    if j["split"]:
        s = j["split"]
        for part in ("seen", "unseen"):
            a, b = s[part]["at_kernel_address"], s[part]["allocations"]
            lines.append(f"split at event {s['index']:,}: {part} part {a:,} of {b:,} "
                         f"({common.percent(a / b if b else 1)})")
    if j["divergences"]:
        lines.append(f"first {len(j['divergences'])} divergences (line, cpu, class: kernel -> "
                     "model):")
        for d in j["divergences"]:
            kaddr = d["kernel"]["addr"]
            maddr = d["model"]["addr"]
            lines.append(
                f"  {d['line']:>7} [{d['cpu']:03d}] {d['class']}: "
                f"{'failed' if kaddr is None else hex(kaddr)} size={d['kernel']['size']:#x} "
                f"align={d['kernel']['align']:#x} -> "
                f"{'none' if maddr is None else hex(maddr)} ({d['model']['source']}); "
                + "; ".join(f"{x['addr']:#x} is {x['state']}" +
                            (f" [{x['area'][0]:#x}, {x['area'][1]:#x})" if x["area"] else "")
                            for x in d["neighbourhood"]))
    return lines


def figure(report: Any) -> Any:
    """A matplotlib Figure: agreement (per window and cumulative) and the free
    tree's blocks against the allocations replayed."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    t = report.timeline
    fig = Figure(figsize=(9, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    x = t["alloc_index"]
    ax.plot(x, [100 * a for a in t["window_agreement"]], color="tab:blue", alpha=0.45,
            label="at the kernel's address, per window (%)")
    ax.plot(x, [100 * a for a in t["agreement"]], color="tab:blue",
            label="at the kernel's address, cumulative (%)")
    ax.set_xlabel("allocations replayed")
    ax.set_ylabel("agreement (%)", color="tab:blue")
    ax.set_ylim(0, 102)
    ax2 = ax.twinx()
    ax2.plot(x, t["free_blocks"], color="tab:red", label="free blocks in the model's tree")
    ax2.set_ylabel("free blocks (fragmentation)", color="tab:red")
    ax2.set_ylim(0, max(t["free_blocks"] or [1]) * 1.1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
    common.fit_title(fig, ax, f"replay of {os.path.basename(str(report.trace.get('name')))}: "
                     f"kernel {report.profile} profile, {report.agreement:.1%} at the "
                     "kernel's address")
    return fig

"""What the commands share; it imports no command.

- argparse types, each turning a bad value into a usage error;
- output: the console, the progress bar, the table style, sizes and
  percentages (one format for each);
- plots: the matplotlib check, image formats checked before any work,
  titles that fit the figure, categorical colours;
- dumps: reading a /proc/vmallocinfo file with a size cap, and the one rule
  for its unpurged areas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rich import box
from rich.console import Console
from rich.table import Table

from .. import measure, profiles
from ..kernel.vmallocinfo import MAX_DUMP_BYTES, read_file
from ..reference import LOCK_MODES, MAX_NODES

PLOT_HINT = 'needs matplotlib: pip install ".[plot]" (from a checkout of vmap_core)'


# -- argparse types -------------------------------------------------------------

def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a decimal integer in [lo, hi]."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{s} is out of range: {lo}.." + (f"{hi:,}" if hi is not None else ""))
        return v
    parse.__name__ = "integer"          # argparse names the type in its errors
    return parse


positive_int = int_in(1)
nr_nodes_arg = int_in(1, MAX_NODES)     # the constructors' limit, as a usage error


def float_in(lo_exclusive: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a number in (lo_exclusive, hi]."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if not lo_exclusive < v <= hi:
            raise argparse.ArgumentTypeError(f"{s} is out of range: above {lo_exclusive:g}, "
                                             f"at most {hi:g}")
        return v
    parse.__name__ = "number"
    return parse


# The core's bound on native worker threads (vmap_core._space.MAX_NATIVE_THREADS; a test
# keeps the two equal): the CLI refuses more as a usage error, before any work.
MAX_NATIVE_THREADS = 1024


def int_list(hi: int) -> Callable[[str], list[int]]:
    """'1,2,4' -> [1, 2, 4]: each in 1..hi, sorted, without duplicates."""
    one = int_in(1, hi)

    def parse(s: str) -> list[int]:
        counts = sorted({one(tok) for tok in s.split(",") if tok.strip()})
        if not counts:
            raise argparse.ArgumentTypeError(f"empty list: {s!r}")
        return counts
    parse.__name__ = "list"
    return parse


def choice_list(known: tuple[str, ...], what: str) -> Callable[[str], list[str]]:
    """'a,b' -> ['a', 'b']: known names, in order, without duplicates."""
    def parse(s: str) -> list[str]:
        names = list(dict.fromkeys(m.strip() for m in s.split(",") if m.strip()))
        bad = [m for m in names if m not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what}(s) {', '.join(bad) or '(none given)'}; "
                f"choose from {','.join(known)}")
        return names
    parse.__name__ = "list"
    return parse


lock_list = choice_list(LOCK_MODES, "lock mode")
#: Lock designs of every kernel profile: "split" is v6.8's.
design_lock_list = choice_list(profiles.LOCK_MODES, "lock mode")


def design_list(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    """'node,6.9/node,6.8' -> designs of the usercopy experiment: modes in
    ``known``, or KERNEL/MODE (vmap_core.usercopy.parse_design), in order,
    without duplicates."""
    def parse(s: str) -> list[str]:
        from ..usercopy import parse_design
        names = list(dict.fromkeys(m.strip() for m in s.split(",") if m.strip()))
        bad = []
        for m in names:
            try:
                parse_design(m)
            except (TypeError, ValueError):
                bad.append(m)
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown mode(s) {', '.join(bad) or '(none given)'}; choose from "
                f"{','.join(known)}, or KERNEL/MODE such as 6.9/node, 6.8/split")
        return names
    parse.__name__ = "list"
    return parse


def kernel_list(s: str) -> list[str]:
    """'6.9,6.16' -> the profiles' names (any version from 6.8 on maps to the
    profile of the last change at or before it), in order, without duplicates."""
    from ..profiles import resolve
    names = []
    for tok in s.split(","):
        if not tok.strip():
            continue
        try:
            names.append(resolve(tok.strip()).name)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError(f"empty list: {s!r}")
    return list(dict.fromkeys(names))


_KERNEL_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def kernel_int(s: str) -> int:
    """An integer as the kernel's module_param reads it (kstrtoint, base 0):
    decimal, 0x hexadecimal, or octal after a leading 0 ("010" is 8)."""
    t = s.strip()
    if not _KERNEL_INT.fullmatch(t):
        raise argparse.ArgumentTypeError(
            f"not an integer: {s!r} (decimal, 0x hexadecimal or 0 octal)")
    sign, body = (-1 if t[0] == "-" else 1), t.lstrip("+-")
    if body[:2].lower() == "0x":
        return sign * int(body[2:], 16)
    return sign * int(body, 8 if body.startswith("0") else 10)


def kernel_bool(s: str) -> bool:
    """A bool module_param: 1/0, y/n, yes/no, true/false, on/off."""
    v = s.strip().lower()
    if v in ("1", "y", "yes", "true", "on"):
        return True
    if v in ("0", "n", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {s!r}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def check_out_dir(parser: argparse.ArgumentParser, option: str, path: str | None) -> None:
    """A usage error unless the directory of an output path exists."""
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        parser.error(f"{option} {path}: no such directory")


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")


# -- text output ----------------------------------------------------------------

def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def table(title: str | None = None, *, caption: str | None = None, **kw: Any) -> Table:
    """A rich Table in the house style (simple head rule, no outer edge)."""
    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False,
                 pad_edge=False, **kw)


def human_size(n: float) -> str:
    """Bytes in binary units: '512 B', '1.5 KiB', '32.0 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def percent(x: float) -> str:
    """A fraction as a percentage with two decimals; '<0.01%' for a tiny non-zero one."""
    if 0 < x < 0.00005:
        return "<0.01%"
    return f"{x:.2%}"


def machine_name() -> str:
    """'this machine (AMD EPYC, x86_64, 2 CPUs available)'."""
    return measure.machine_name()


T = TypeVar("T")

#: What stops an experiment with a one-line message (exit status 1) instead of a traceback.
RUN_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, MemoryError,
                                               OverflowError)


def guarded(run: Callable[[], T],
            errors: tuple[type[BaseException], ...] = RUN_ERRORS) -> tuple[T | None, int]:
    """``(run(), 0)``; or, once one line on stderr said what stopped it,
    ``(None, 1)`` for one of ``errors`` and ``(None, 130)`` for an interrupt."""
    try:
        return run(), 0
    except errors as e:
        print(f"vmap-core: {type(e).__name__}: {e}", file=sys.stderr)
        return None, 1
    except KeyboardInterrupt:
        print("vmap-core: interrupted", file=sys.stderr)
        return None, 130


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@contextlib.contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[int, int, tuple[str, int] | None], None]]:
    """Yield ``update(done, total, cell)``, drawing a transient bar on stderr."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(desc, total=None)

        def update(done: int, total: int, cell: tuple[str, int] | None) -> None:
            what = f"{desc}: {cell[0]}, {plural(cell[1], 'thread')}" if cell else desc
            bar.update(task, completed=done, total=total, description=what)
        yield update


# -- plots ------------------------------------------------------------------------

class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says how to get it."""


def require_matplotlib(what: str = "this") -> None:
    """MissingExtra with the install hint unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtra(f"{what} {PLOT_HINT}") from None


def image_formats() -> dict[str, str]:
    """{extension: description} of the formats matplotlib can write here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    return dict(FigureCanvasAgg.get_supported_filetypes())


def image_format(path: str) -> str:
    """The format a path asks for: its extension, or png where it has none.
    ValueError for an extension matplotlib cannot write."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if not ext:
        return "png"
    formats = image_formats()
    if ext not in formats:
        raise ValueError(f"cannot write .{ext} images; use one of "
                         + ", ".join("." + f for f in sorted(formats)))
    return ext


def check_image_path(parser: argparse.ArgumentParser, option: str, path: str | None,
                     what: str) -> None:
    """Before any work: the directory exists, matplotlib is there and can write
    the format the path asks for; else a usage error (exit status 2)."""
    if not path:
        return
    check_out_dir(parser, option, path)
    try:
        require_matplotlib(what)
        image_format(path)
    except (ImportError, ValueError) as e:
        parser.error(f"{option} {path}: {e}")


def save_figure(fig: Any, path: str) -> str:
    """Write exactly ``path`` (no extension added); returns the format written."""
    fmt = image_format(path)
    fig.savefig(path, format=fmt)
    return fmt


def fit_title(fig: Any, ax: Any, text: str, *, fontsize: float = 10) -> Any:
    """Set ax's title wrapped to the figure's width, so that no side is cut off."""
    width_in = fig.get_figwidth() * ax.get_position().width
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))   # ~0.6 em per character
    lines = textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False)
    return ax.set_title("\n".join(lines), fontsize=fontsize)


#: Categorical colours for node numbers (matplotlib's tab10, without its grey,
#: which marks the collapsed nodes); past these a legend cannot be read.
_NODE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#aec7e8", "#98df8a", "#c5b0d5")
OTHER_NODES_COLOUR = "#7f7f7f"


def node_colours(nr_nodes: int) -> tuple[list[str], bool]:
    """(colour of each node shown on its own, collapsed): up to ten nodes get
    their own colour; with more, nodes from the tenth on share OTHER_NODES_COLOUR."""
    shown = min(nr_nodes, len(_NODE_COLOURS))
    if nr_nodes > len(_NODE_COLOURS):
        shown -= 1
    return list(_NODE_COLOURS[:shown]), nr_nodes > shown


# -- dumps ------------------------------------------------------------------------

def read_dump(path: str) -> str:
    """The text of a /proc/vmallocinfo dump; OSError, or ValueError (one line,
    naming the file) for something that is not a regular file, is larger
    than MAX_DUMP_BYTES (a dump is a few MB even on large machines; /dev/zero
    never ends) or is empty (vmallocinfo.read_file() reads it)."""
    text = read_file(path, MAX_DUMP_BYTES)
    if not text.strip():
        raise ValueError(f"{path}: empty file, no vmalloc areas")
    return text


def space_class(impl: str) -> Any:
    """VmapSpace for 'core', ReferenceSpace for 'reference'."""
    if impl == "reference":
        from ..reference import ReferenceSpace
        return ReferenceSpace
    from .._space import VmapSpace
    return VmapSpace


def load_dump(path: str, impl: str = "core", **space_kwargs: Any) -> tuple[Any, Any, list[str]]:
    """(space, parsed dump, notes) for a dump file.  One rule for its
    ``unpurged vm_area`` lines, for every command: they are lazily freed
    areas, kept lazy (not reusable until a purge), never counted as free."""
    from ..kernel import vmallocinfo as vi
    text = read_dump(path)
    dump = vi.parse(text)
    if not dump.entries:
        hint = f"; {plural(len(dump.skipped), 'line')} not understood" if dump.skipped else ""
        raise ValueError(f"{path}: no vmalloc areas in it{hint}")
    space, notes = vi.load(text, cls=space_class(impl), source=path, keep_unpurged=True,
                           **space_kwargs)
    return space, dump, notes


def dump_error(path: str, e: BaseException) -> str:
    """One line for a dump that could not be loaded, naming the file once."""
    if isinstance(e, OSError):
        return f"cannot read {path}: {e.strerror or e}"
    msg = str(e) or type(e).__name__
    return msg if path in msg else f"{path}: {msg}"


def synthetic_layout(dump: Any) -> str | None:
    """Why the addresses of a dump are not the kernel's (hashed or hidden), or None."""
    from ..kernel import vmallocinfo as vi
    kind, _ = vi.detect(dump.entries)
    if kind == "real":
        return None
    return "hashed" if kind == "hashed" else "hidden (zeroed)"

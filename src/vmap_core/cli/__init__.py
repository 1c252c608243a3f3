"""The command line: ``python -m vmap_core COMMAND`` or ``vmap-core COMMAND``.

One module per command, each with ``NAME``, ``add_parser(subparsers)`` (adds
its parser and sets ``func``: parsed args -> exit status) and the code that
runs it; what they share is in :mod:`vmap_core.cli.common`, which imports no
command.  A new command is one module here plus one entry in ``COMMANDS``.
With no command, the help is printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from . import info, map as map_cmd, replay, scenarios, usercopy

#: The commands, in the order the help lists them.
COMMANDS = (usercopy, info, map_cmd, scenarios, replay)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every command in ``COMMANDS``."""
    ap = argparse.ArgumentParser(
        prog=prog or "vmap-core",
        description="vmap_core: the Linux vmalloc address-space allocator as a Python "
        "package. The main job: 'usercopy'.")
    ap.add_argument("--version", action="version", version=f"vmap_core {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    try:
        if not args_list:
            parser.print_help()
            return 0
        args = parser.parse_args(args_list)
        if getattr(args, "func", None) is None:
            parser.error("a command is needed")
        return int(args.func(args))
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)

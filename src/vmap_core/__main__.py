"""``python -m vmap_core COMMAND ...``: the command line (see :mod:`vmap_core.cli`).

With no command it prints the help.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vmap_core"))

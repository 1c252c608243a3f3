"""Build the Cython core: `pip install .` runs cythonize with warnings on.

VMAP_CORE_SANITIZE=thread|address|undefined, or a comma-separated mix such as
address,undefined, builds the extension with those sanitizers (used by
.ci/sanitize); with undefined, every report aborts the run.
VMAP_CORE_DEBUG=1 builds without optimisation.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

cflags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-function", "-Wno-unused-parameter",
          "-Wno-missing-field-initializers"]
ldflags = []
sanitize = os.environ.get("VMAP_CORE_SANITIZE")
if sanitize:
    kinds = [k.strip() for k in sanitize.split(",") if k.strip()]
    unknown = set(kinds) - {"thread", "address", "undefined"}
    if not kinds or unknown or ("thread" in kinds and "address" in kinds):
        raise SystemExit(f"VMAP_CORE_SANITIZE={sanitize!r}: use thread, address, undefined "
                         "or a comma-separated mix (thread and address do not mix)")
    flag = "-fsanitize=" + ",".join(kinds)
    cflags += [flag, "-g", "-O1", "-fno-omit-frame-pointer"]
    ldflags += [flag]
    if "undefined" in kinds:
        cflags += ["-fno-sanitize-recover=undefined"]
if os.environ.get("VMAP_CORE_DEBUG"):
    cflags += ["-O0", "-g"]

extensions = [
    Extension(
        "vmap_core._space",
        ["src/vmap_core/_space.pyx"],
        include_dirs=["src/vmap_core"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)

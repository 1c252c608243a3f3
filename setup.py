"""Build the Cython extensions with warnings on: the core (vmap_core._space) and
the trace parser (vmap_core._traceparse).

The .pyx files are compiled at build time (Cython is a build requirement, so
the sdist carries the sources, not generated C).  A C compiler and the Python
headers are required: without them the build stops with one clear message.

VMAP_CORE_SANITIZE=thread|address|undefined, or a comma-separated mix such as
address,undefined, builds the extension with those sanitizers (used by
.ci/sanitize); with undefined, every report aborts the run.
VMAP_CORE_DEBUG=1 builds without optimisation.
"""
import os
import shutil
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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

NEEDS = ("vmap_core is a C extension (Cython) and needs {what} to build. {how} "
         "Then install again; see 'Requirements' in the README.")
HOW = ("On Debian/Ubuntu: apt install gcc python3-dev; on Fedora: dnf install gcc "
       "python3-devel; in a conda environment: conda install c-compiler.")


class BuildExt(build_ext):
    """Cythonize at build time; say plainly what is missing when the toolchain is."""

    def finalize_options(self):
        from Cython.Build import cythonize
        # Before setuptools' own finalize_options, which annotates each extension.
        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules,
            compiler_directives={
                "language_level": 3,
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "initializedcheck": False,
            },
        )
        super().finalize_options()

    def build_extensions(self):
        cc = getattr(self.compiler, "compiler_so", None)
        if cc and shutil.which(cc[0]) is None:
            raise SystemExit("error: " + NEEDS.format(
                what=f"a C compiler ({cc[0]!r} was not found)", how=HOW))
        include = sysconfig.get_paths()["include"]
        if not os.path.exists(os.path.join(include, "Python.h")):
            raise SystemExit("error: " + NEEDS.format(
                what=f"the Python headers ({include}/Python.h was not found)", how=HOW))
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "vmap_core._space",
            ["src/vmap_core/_space.pyx"],
            include_dirs=["src/vmap_core"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        ),
        Extension(
            "vmap_core._traceparse",
            ["src/vmap_core/_traceparse.pyx"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        ),
    ],
    cmdclass={"build_ext": BuildExt},
)

"""Build the Cython core: `pip install .` runs cythonize with warnings on.

VMAP_CORE_SANITIZE=thread|address builds the extension with that sanitizer
(used by .ci/sanitize); VMAP_CORE_DEBUG=1 builds without optimisation.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

cflags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-function", "-Wno-unused-parameter",
          "-Wno-missing-field-initializers"]
ldflags = []
sanitize = os.environ.get("VMAP_CORE_SANITIZE")
if sanitize:
    cflags += [f"-fsanitize={sanitize}", "-g", "-O1", "-fno-omit-frame-pointer"]
    ldflags += [f"-fsanitize={sanitize}"]
if os.environ.get("VMAP_CORE_DEBUG"):
    cflags += ["-O0", "-g"]

extensions = [
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

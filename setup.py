"""Build the Cython kernels in fixnet/_kernels/.

Every ``fixnet/_kernels/_*.pyx`` becomes an extension module ``fixnet._kernels._*``.
Set ``FIXNET_NATIVE=1`` to tune for the build machine (``-march=native`` on x86-64,
``-mcpu=native`` on ARM) when you build on the device itself.
"""
import glob
import os
import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def compile_args():
    if sys.platform == "win32":
        return ["/O2"]
    args = ["-O3", "-fno-strict-aliasing"]
    if os.environ.get("FIXNET_NATIVE") == "1":
        machine = platform.machine().lower()
        args.append("-mcpu=native" if machine in ("aarch64", "arm64", "armv7l") else "-march=native")
    if os.environ.get("FIXNET_VEC_REPORT") == "1":
        args.append("-fopt-info-vec-optimized")
    return args


extensions = [
    Extension(
        "fixnet._kernels." + os.path.splitext(os.path.basename(path))[0],
        [path],
        include_dirs=[np.get_include(), "fixnet/_kernels"],
        extra_compile_args=compile_args(),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for path in sorted(glob.glob(os.path.join("fixnet", "_kernels", "_*.pyx")))
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

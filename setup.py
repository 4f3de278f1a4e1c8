"""Build the Cython kernels in fixnet/_kernels/.

Every ``fixnet/_kernels/_*.pyx`` becomes an extension module ``fixnet._kernels._*``, built for
the baseline of the target (x86-64: SSE2; aarch64: armv8-a).

The hot modules (ISA_MODULES) are built a second (third) time for wider instruction sets, as
NumPy does: setup.py copies each into a generated, git-ignored package
``fixnet/_kernels/isa_<name>/`` and compiles it with that ISA's flags; ``fixnet._kernels``
picks the best build the CPU runs at import (``FIXNET_ISA=baseline`` forces the baseline).

Environment:
  FIXNET_BUILD_JOBS=N   parallel Cython and compiler jobs (default: the CPUs available)
  FIXNET_NATIVE=1       tune the (only) build for this machine: ``-march=native`` on x86-64,
                        ``-mcpu=native`` on ARM (for building on the device itself); no variants
  FIXNET_ISA_BUILDS=0   build the baseline only (no ISA variants)
  FIXNET_VEC_REPORT=1   print what gcc vectorised (``-fopt-info-vec-optimized``)
  FIXNET_SANITIZE=address[,undefined]
                        build every extension with gcc's sanitizers for testing (-fsanitize=...,
                        -g, frame pointers, same -O3 code); python must then preload the
                        ASan runtime (README, development section)
"""
import glob
import os
import platform
import shutil
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("fixnet", "_kernels")
# C headers of the micro-kernels (qgemm.h), included by the Cython modules of every build
KERNEL_CSRC = os.path.join(KERNELS, "csrc")

# Modules that include the C headers of fixnet/_kernels/csrc.
CSRC_MODULES = ("_conv.pyx", "_dense.pyx", "_merge.pyx", "_pool.pyx")

# Modules compiled once more per instruction set (the rest only for the baseline).
ISA_MODULES = ("_dense", "_elementwise", "_affine", "_softmax", "_conv", "_pool", "_merge",
               "_recurrent")

# x86-64-v3 minus the features gcc never emits for these kernels (f16c, lzcnt, movbe), so the
# runtime check (fixnet._kernels) needs only what __builtin_cpu_supports can name.
_X86_AVX2 = ["-mavx", "-mavx2", "-mfma", "-mbmi", "-mbmi2"]

# name -> extra compiler flags, per target machine. The order is the preference at import.
# FMA contraction is switched off: a fused a * b + c rounds once, where the baseline (and the
# oracle) round twice; the float code of the kernels must give the same bits on every build.
ISA_VARIANTS = {
    "x86_64": {
        "avx512vnni": _X86_AVX2 + ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq",
                                   "-mavx512vl", "-mavx512vnni", "-mprefer-vector-width=512",
                                   "-ffp-contract=off"],
        "avx2": _X86_AVX2 + ["-ffp-contract=off"],
    },
    "aarch64": {
        "dotprod": ["-march=armv8.2-a+dotprod", "-ffp-contract=off"],
    },
}


# Modules whose loops run over channel counts too short for 64 int8 lanes: in the AVX-512
# build they keep AVX-512's instructions but 256-bit vectors (measured faster; see bench/).
NARROW_VECTOR_MODULES = ("_conv", "_pool", "_merge")


def module_flags(module, flags):
    if module in NARROW_VECTOR_MODULES:
        return [("-mprefer-vector-width=256" if f == "-mprefer-vector-width=512" else f)
                for f in flags]
    return list(flags)


def target_machine():
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def compile_args():
    if sys.platform == "win32":
        return ["/O2"]
    # no FMA contraction anywhere (aarch64's baseline has FMA too): see ISA_VARIANTS.
    # -g0: no debug information (Python's own CFLAGS ask for -g, which made most of each .so;
    # FIXNET_SANITIZE builds add -g back after this)
    args = ["-O3", "-fno-strict-aliasing", "-ffp-contract=off", "-g0"]
    if os.environ.get("FIXNET_NATIVE") == "1":
        args.append("-mcpu=native" if target_machine() in ("aarch64", "armv7l") else "-march=native")
    if os.environ.get("FIXNET_VEC_REPORT") == "1":
        args.append("-fopt-info-vec-optimized")
    return args


def sanitize_args():
    """-fsanitize flags for both compile and link from FIXNET_SANITIZE (comma-separated
    ``address``, ``undefined``), or none."""
    names = [n for n in os.environ.get("FIXNET_SANITIZE", "").replace(" ", "").split(",") if n]
    unknown = sorted(set(names) - {"address", "undefined"})
    if unknown:
        sys.exit(f"setup.py: FIXNET_SANITIZE={os.environ['FIXNET_SANITIZE']!r}: unknown "
                 f"sanitizer(s) {unknown}; use address and/or undefined")
    if not names:
        return []
    # undefined: report and abort on the first error instead of printing and going on
    extra = ["-fno-sanitize-recover=undefined"] if "undefined" in names else []
    return ["-fsanitize=" + ",".join(names), "-fno-omit-frame-pointer", "-g"] + extra


def isa_variants():
    """{name: flags} of the extra builds for this target (none on Windows, with
    FIXNET_NATIVE=1 or FIXNET_ISA_BUILDS=0)."""
    if (sys.platform == "win32" or os.environ.get("FIXNET_NATIVE") == "1"
            or os.environ.get("FIXNET_ISA_BUILDS") == "0"):
        return {}
    return ISA_VARIANTS.get(target_machine(), {})


def copy_if_changed(src, dst):
    """Copy src to dst unless dst already holds the same bytes (keeps mtimes, so cythonize
    only re-translates what changed)."""
    if os.path.exists(dst):
        with open(src, "rb") as a, open(dst, "rb") as b:
            if a.read() == b.read():
                return
    shutil.copy2(src, dst)


def variant_sources(name):
    """Generate fixnet/_kernels/isa_<name>/ (an __init__.py and a copy of each ISA module)
    and return the copies' paths."""
    package = os.path.join(KERNELS, "isa_" + name)
    os.makedirs(package, exist_ok=True)
    init = os.path.join(package, "__init__.py")
    if not os.path.exists(init):
        with open(init, "w") as f:
            f.write(f'"""Generated by setup.py: fixnet/_kernels/{ISA_MODULES} built for '
                    f'{name}. Do not edit."""\n')
    paths = []
    for module in ISA_MODULES:
        dst = os.path.join(package, module + ".pyx")
        copy_if_changed(os.path.join(KERNELS, module + ".pyx"), dst)
        paths.append(dst)
    return paths


def extension(name, path, extra_args=()):
    return Extension(
        name,
        [path],
        include_dirs=[np.get_include(), KERNELS, KERNEL_CSRC],
        # the micro-kernel headers: only these modules include them (a change rebuilds only
        # those)
        depends=(sorted(glob.glob(os.path.join(KERNEL_CSRC, "*.h")))
                 if os.path.basename(path) in CSRC_MODULES else []),
        extra_compile_args=compile_args() + list(extra_args) + sanitize_args(),
        extra_link_args=sanitize_args(),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


def remove_stale_variants(keep):
    """Delete generated isa_<name>/ packages this build does not make (FIXNET_NATIVE=1,
    FIXNET_ISA_BUILDS=0): left in place, fixnet._kernels would still import their older code
    in preference to the fresh baseline build."""
    for package in glob.glob(os.path.join(KERNELS, "isa_*")):
        init = os.path.join(package, "__init__.py")
        name = os.path.basename(package)[len("isa_"):]
        if name in keep or not os.path.isfile(init):
            continue
        with open(init) as f:
            generated = f.read().startswith('"""Generated by setup.py')
        if generated:
            shutil.rmtree(package)


def write_build_record(variants):
    """Write fixnet/_kernels/_build_record.py (generated, git-ignored): which ISA variants this
    build made and which it knows for this target, and the switches that can leave them out, so
    the tests can tell a build that lost a variant from one asked to skip them."""
    switches = {k: os.environ.get(k) for k in ("FIXNET_NATIVE", "FIXNET_ISA_BUILDS")}
    text = (f'"""Generated by setup.py: what this build of the kernels made. Do not edit."""\n'
            f"MACHINE = {target_machine()!r}\n"
            f"PLATFORM = {sys.platform!r}\n"
            f"VARIANTS = {tuple(variants)!r}\n"
            f"KNOWN_VARIANTS = {tuple(ISA_VARIANTS.get(target_machine(), {}))!r}\n"
            f"SWITCHES = {switches!r}\n")
    path = os.path.join(KERNELS, "_build_record.py")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


extensions = [
    extension("fixnet._kernels." + os.path.splitext(os.path.basename(path))[0], path)
    for path in sorted(glob.glob(os.path.join(KERNELS, "_*.pyx")))
]
remove_stale_variants(isa_variants())
write_build_record(isa_variants())
for isa, flags in isa_variants().items():
    for path in variant_sources(isa):
        module = os.path.splitext(os.path.basename(path))[0]
        extensions.append(extension(f"fixnet._kernels.isa_{isa}.{module}", path,
                                    module_flags(module, flags)))



def build_jobs():
    """Parallel jobs for Cython and the C compiler: FIXNET_BUILD_JOBS, else every CPU this
    process may use (pip runs setup.py without ``-j``; one job per CPU halves the build on 2)."""
    if os.environ.get("FIXNET_BUILD_JOBS"):
        return max(1, int(os.environ["FIXNET_BUILD_JOBS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not on Linux
        return max(1, os.cpu_count() or 1)


class ParallelBuildExt(build_ext):
    """build_ext that compiles the extensions in parallel unless ``-j`` says otherwise."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = build_jobs()


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        nthreads=build_jobs() if sys.platform != "win32" else 0,
        include_path=["."],   # the ISA copies cimport fixnet._kernels.fixedpoint from the root
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)

"""Which kernel builds exist and were tested: every ISA build this CPU can run was built, the
import chose the preferred one, and the kernel tests ran on each of them.

setup.py builds, besides the baseline, one variant per instruction set it knows for the target
(setup.ISA_VARIANTS: AVX2 and AVX-512 VNNI on x86-64, the dot-product extension on aarch64)
unless FIXNET_NATIVE=1 or FIXNET_ISA_BUILDS=0 asks for the baseline only; it records what it
made in fixnet/_kernels/_build_record.py. A build that silently lost a variant (a compiler
that refused a flag, a packaging slip) fails here instead of leaving that variant untested.
"""
import os
import sys

import pytest

import fixnet._kernels as kernels

try:
    from fixnet._kernels import _build_record as RECORD
except ImportError:          # built before setup.py wrote the record
    RECORD = None

KERNEL_TEST_FILES = ("test_kernels.py", "test_kernels_conv.py", "test_kernels_pool.py")

# /proc/cpuinfo flags each variant needs (what its compiler flags in setup.py enable)
CPUINFO_FLAGS = {
    "avx2": {"avx", "avx2", "fma", "bmi1", "bmi2"},
    "avx512vnni": {"avx", "avx2", "fma", "bmi1", "bmi2", "avx512f", "avx512cd", "avx512bw",
                   "avx512dq", "avx512vl", "avx512_vnni"},
    "dotprod": {"asimddp"},
}


def _opted_out():
    """Why this build may hold the baseline only (None: every variant is required)."""
    switches = RECORD.SWITCHES if RECORD is not None else os.environ
    if switches.get("FIXNET_NATIVE") == "1":
        return "FIXNET_NATIVE=1"
    if switches.get("FIXNET_ISA_BUILDS") == "0":
        return "FIXNET_ISA_BUILDS=0"
    if (RECORD.PLATFORM if RECORD is not None else sys.platform) == "win32":
        return "Windows (setup.py makes no variants there)"
    return None


def _cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags or None


def required_builds():
    """The variants this machine must have built and must run: those setup.py makes for it
    (or, without a build record, every name in ISA_PREFERENCE) that this CPU supports."""
    if _opted_out():
        return []
    names = RECORD.KNOWN_VARIANTS if RECORD is not None else kernels.ISA_PREFERENCE
    return [n for n in kernels.ISA_PREFERENCE if n in names and kernels.cpu_supports(n)]


def test_build_record_is_consistent_with_the_runtime():
    if RECORD is None:
        pytest.skip("no fixnet/_kernels/_build_record.py (built by an older setup.py): "
                    "every variant in ISA_PREFERENCE the CPU runs is required instead")
    assert set(RECORD.KNOWN_VARIANTS) <= set(kernels.ISA_PREFERENCE), \
        "setup.py makes a variant that fixnet._kernels would never choose"
    if _opted_out() is None:
        assert set(RECORD.VARIANTS) == set(RECORD.KNOWN_VARIANTS), \
            f"setup.py made {RECORD.VARIANTS} of {RECORD.KNOWN_VARIANTS} with no switch asking for fewer"
    else:
        assert RECORD.VARIANTS == ()


def test_cpu_feature_probe_agrees_with_proc_cpuinfo():
    # a probe that wrongly says "not supported" would excuse a missing build
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags on this system")
    for name in kernels.ISA_PREFERENCE:
        assert kernels.cpu_supports(name) == CPUINFO_FLAGS[name].issubset(flags), name


def test_every_build_this_cpu_runs_was_built_and_is_available():
    missing = [n for n in required_builds() if not kernels.is_built(n)]
    assert not missing, (f"the {missing} kernel build(s) are missing although this CPU runs them: "
                         "rebuild (python setup.py build_ext --inplace, or pip install .)")
    available = kernels.available_builds()
    assert available[-1] == "baseline"
    assert set(required_builds()) <= set(available)
    assert all(kernels.is_built(n) and kernels.cpu_supports(n) for n in available)


def test_the_preferred_runnable_build_is_the_one_in_use():
    if os.environ.get("FIXNET_ISA", "").strip():
        assert kernels.ISA == os.environ["FIXNET_ISA"].strip().lower()
        return
    assert kernels.ISA == kernels.available_builds()[0]
    if required_builds():
        assert kernels.ISA == required_builds()[0]


def test_kernel_tests_cover_every_available_build(request):
    """In this session, each kernel test file that was collected runs its tests on every
    available build (the `build` or `kernel_build` parameter), not on the chosen one alone."""
    seen = {}
    for item in request.session.items:
        file = os.path.basename(str(item.fspath))
        params = getattr(getattr(item, "callspec", None), "params", {})
        build = params.get("build", params.get("kernel_build"))
        if file in KERNEL_TEST_FILES and build is not None:
            seen.setdefault(file, set()).add(getattr(build, "name", build))
    if not seen:
        pytest.skip("no kernel test file collected in this session")
    for file, builds in seen.items():
        assert builds == set(kernels.available_builds()), f"{file} ran on {sorted(builds)}"

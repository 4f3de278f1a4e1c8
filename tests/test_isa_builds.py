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


# Every kernel test file, and the parameter that names the kernel build its tests run on
# (tests/kernel_builds.py: a test function parameter or an autouse module fixture). A file that
# tests modules built once, outside fixnet._kernels.ISA_MODULES, says so instead.
KERNEL_TEST_FILES = {
    "test_kernels.py": "build",
    "test_kernels_conv.py": "kernel_build",
    "test_kernels_depthwise.py": "kernel_build",
    "test_kernels_gemm.py": "conv",
    "test_kernels_pool.py": "kernel_build",
    "test_kernels_recurrent.py": "build",
    "test_kernels_prelu.py": None,          # _prelu: baseline only (not an ISA module)
    "test_kernels_rounding.py": "kernel_build",
    "test_kernels_wide.py": None,           # _wide: baseline only (not an ISA module)
}
SINGLE_BUILD_MODULES = {"test_kernels_prelu.py": "_prelu", "test_kernels_wide.py": "_wide"}
# tests of a parametrised file that test no one build: the build machinery itself, a whole
# model on the build in use, or the oracle alone
NOT_PER_BUILD = {
    "test_kernels.py": {"test_builds_are_listed_preferred_first_and_the_baseline_always_runs",
                        "test_fixnet_isa_rejects_an_unknown_build",
                        "test_predict_fast_path_returns_arrays_the_caller_owns",
                        "test_predict_fast_path_agrees_with_every_other_way_in"},
    "test_kernels_recurrent.py": {"test_function_table_error_bound",
                                  "test_table_lookup_interpolates_between_entries"},
    "test_kernels_rounding.py": {"test_single_rounding_rule_is_exact_rational_rounding_ties_away"},
}
# tests whose build parameter has another name than their file's
PARAM_BY_TEST = {("test_kernels.py", "test_fixnet_isa_forces_a_build"): "name"}

_COLLECT = """
import json, sys, pytest
class Dump:
    def __init__(self): self.items = []
    def pytest_collection_finish(self, session):
        for item in session.items:
            cs = getattr(item, "callspec", None)
            params = {k: getattr(v, "name", v) for k, v in (cs.params.items() if cs else ())
                      if isinstance(getattr(v, "name", v), str)}
            self.items.append([item.nodeid, item.originalname, params,
                               item.get_closest_marker("skip") is not None])
d = Dump()
rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "", *sys.argv[1:]],
                 plugins=[d])
print("@@" + json.dumps(d.items))
sys.exit(rc)
"""


def _collected(files):
    """[(nodeid, function, {param: value}, skipped)] of the tests in `files` (collected in a
    child pytest, so the check holds whatever this session selected)."""
    import json
    import subprocess
    import fixnet
    here = os.path.dirname(os.path.abspath(__file__))
    # run from tests/, with the fixnet this session imported first on the path: from the
    # checkout's root, `python -c` would import the checkout's fixnet/, which a plain
    # `pip install .` leaves without its compiled kernels
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    r = subprocess.run([sys.executable, "-c", _COLLECT] + [os.path.join(here, f) for f in files],
                       cwd=here, env=env, capture_output=True, text=True, timeout=600)
    out = [line for line in r.stdout.splitlines() if line.startswith("@@")]
    assert r.returncode == 0 and out, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out[-1][2:])


def test_the_list_of_kernel_test_files_is_every_kernel_test_file():
    import glob
    here = os.path.dirname(os.path.abspath(__file__))
    found = {os.path.basename(p) for p in glob.glob(os.path.join(here, "test_kernels*.py"))}
    assert found == set(KERNEL_TEST_FILES), \
        f"tests/test_kernels*.py is {sorted(found)}: update KERNEL_TEST_FILES"
    for file, module in SINGLE_BUILD_MODULES.items():
        assert module not in kernels.ISA_MODULES, \
            f"{module} is built per ISA now: {file} must run on every build"


def test_kernel_tests_run_on_every_build():
    """Each kernel test file's tests take the build parameter, with one value per build
    fixnet knows: the builds this machine runs run, the others are skipped with a reason.
    A file (or a test) that lost its parameter, or a build dropped from the list, fails."""
    every = set(kernels.ISA_PREFERENCE) | {"baseline"}
    runnable = set(kernels.available_builds())
    items = _collected(sorted(KERNEL_TEST_FILES))
    by_test = {}
    for nodeid, function, params, skipped in items:
        file = os.path.basename(nodeid.split("::")[0])
        by_test.setdefault((file, function), []).append((params, skipped))
    assert {f for f, _ in by_test} == set(KERNEL_TEST_FILES), "a kernel test file collected no test"
    checked = 0
    for (file, function), runs in sorted(by_test.items()):
        key = PARAM_BY_TEST.get((file, function), KERNEL_TEST_FILES[file])
        if key is None or function in NOT_PER_BUILD.get(file, ()):
            continue
        values = [p.get(key) for p, _ in runs]
        assert None not in values, f"{file}::{function} has no {key!r} parameter"
        assert set(values) == every, f"{file}::{function} has builds {sorted(set(values))}"
        ran = {v for v, (_, skipped) in zip(values, runs, strict=True) if not skipped}
        assert ran == runnable, f"{file}::{function} runs on {sorted(ran)}, not {sorted(runnable)}"
        checked += 1
    assert checked >= 100, f"only {checked} per-build kernel test functions found"

"""The kernel builds a kernel test runs on, as pytest parameters.

Every build fixnet._kernels knows (ISA_PREFERENCE and the baseline) is a parameter: the ones
this machine has and runs are tested, the others are skipped with the reason (the CPU lacks the
instruction set, setup.py makes no such build for this architecture, or the build is not
installed), so a build left untested shows in the report instead of vanishing from the list.
tests/test_isa_builds.py checks that every kernel test file is parametrised this way.
"""
import pytest

import fixnet._kernels as kernels

try:
    from fixnet._kernels import _build_record as _RECORD
except ImportError:
    _RECORD = None

ALL_BUILDS = tuple(kernels.ISA_PREFERENCE) + ("baseline",)


def why_not_runnable(name):
    """None if the build `name` is installed and this CPU runs it, else why not."""
    if name == "baseline":
        return None
    if _RECORD is not None and name not in _RECORD.KNOWN_VARIANTS:
        return (f"kernel build {name}: setup.py makes none for {_RECORD.MACHINE} "
                f"(it makes {', '.join(_RECORD.KNOWN_VARIANTS) or 'the baseline only'})")
    if not kernels.is_built(name):
        return f"kernel build {name}: not installed (see tests/test_isa_builds.py)"
    if not kernels.cpu_supports(name):
        return f"kernel build {name}: this CPU does not run its instructions"
    return None


def build_params(value=lambda name: name):
    """[pytest.param(value(name), id=name)] for every build; the ones this machine cannot run
    carry a skip mark with the reason and the name as their value (value() is not called for
    them: loading a build the CPU cannot run may crash it)."""
    out = []
    for name in ALL_BUILDS:
        reason = why_not_runnable(name)
        if reason is None:
            out.append(pytest.param(value(name), id=name))
        else:
            out.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=reason)))
    runnable = [p.id for p in out if not p.marks]
    assert runnable == kernels.available_builds(), (runnable, kernels.available_builds())
    return out

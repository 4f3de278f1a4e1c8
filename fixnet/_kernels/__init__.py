"""Integer-only Cython kernels. Private: call them through fixnet.runtime, which checks
shapes and dtypes once when it plans a model.

The hot modules (``ISA_MODULES``) exist in several builds: the baseline (``fixnet._kernels._dense``
...: SSE2 on x86-64, armv8-a on aarch64) and, when setup.py made them, builds for wider
instruction sets in ``fixnet._kernels.isa_<name>`` (AVX2 and AVX-512 VNNI on x86-64, the
dot-product extension on aarch64). At import the first of ``ISA_PREFERENCE`` that was built and
that this CPU runs is chosen and its modules are this package's ``_dense``, ``_elementwise``,
``_affine``, ``_softmax``, ``_conv``, ``_pool``, ``_merge``, ``_recurrent`` attributes, which is what ``from fixnet._kernels import _dense`` returns. Every
build computes the same bits (the tests run each one against the oracle).

``FIXNET_ISA=<name>`` forces a build (``baseline`` for the baseline; an unknown, unbuilt or
unsupported name raises ImportError, so a forced choice never silently falls back).
``ISA`` names the build in use.
"""
import importlib
import importlib.util
import os

ISA_MODULES = ("_dense", "_elementwise", "_affine", "_softmax", "_conv", "_pool", "_merge",
               "_recurrent")
ISA_PREFERENCE = ("avx512vnni", "avx2", "dotprod")


class _Build:
    """The ISA_MODULES of one build, as attributes."""

    def __init__(self, name, modules):
        self.name = name
        for module_name, module in modules.items():
            setattr(self, module_name, module)

    def __repr__(self):
        return f"<fixnet kernels built for {self.name}>"


def _package(name):
    return "fixnet._kernels" if name == "baseline" else f"fixnet._kernels.isa_{name}"


def is_built(name):
    """Whether the build `name` is installed (without importing it: importing a build the CPU
    cannot run may already execute its instructions)."""
    try:
        return all(importlib.util.find_spec(f"{_package(name)}.{m}") is not None
                   for m in ISA_MODULES)
    except ImportError:       # no isa_<name> package at all
        return False


def load_build(name):
    """The ISA_MODULES built for `name` ("baseline" or one of ISA_PREFERENCE). Check
    cpu_supports(name) first: a build for an instruction set the CPU lacks may crash it."""
    if not cpu_supports(name):
        raise ImportError(f"fixnet kernels: this CPU does not run the {name} build")
    return _Build(name, {m: importlib.import_module(f"{_package(name)}.{m}")
                         for m in ISA_MODULES})


def cpu_supports(name):
    """Whether this CPU runs the build `name` (always True for "baseline")."""
    if name == "baseline":
        return True
    from . import _elementwise as baseline_elementwise  # the probe, in the baseline build
    return baseline_elementwise.cpu_supports(name)


def available_builds():
    """Names of the builds installed and runnable here, the preferred first, baseline last."""
    return [n for n in ISA_PREFERENCE if is_built(n) and cpu_supports(n)] + ["baseline"]


def _choose():
    forced = os.environ.get("FIXNET_ISA", "").strip().lower()
    if forced:
        if forced != "baseline" and forced not in ISA_PREFERENCE:
            raise ImportError(f"FIXNET_ISA={forced!r}: unknown kernel build; one of "
                              f"{('baseline',) + ISA_PREFERENCE}")
        if not is_built(forced):
            raise ImportError(f"FIXNET_ISA={forced!r}: that build is not installed")
        if not cpu_supports(forced):
            raise ImportError(f"FIXNET_ISA={forced!r}: this CPU does not run that build")
        return load_build(forced)
    return load_build(available_builds()[0])


# The baseline modules are imported first, always: the import system sets a package
# attribute when it first loads a submodule, so a later `import fixnet._kernels._dense` (or
# load_build("baseline")) would otherwise replace the dispatched `_dense` below with the
# baseline. Loaded now, they are found in sys.modules then and leave the attributes alone.
_baseline = load_build("baseline")
_build = _choose()
ISA = _build.name
_dense = _build._dense
_elementwise = _build._elementwise
_affine = _build._affine
_softmax = _build._softmax
_conv = _build._conv
_pool = _build._pool
_merge = _build._merge

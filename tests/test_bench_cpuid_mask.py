"""bench/cpuid_mask: the LD_PRELOAD shim that hides AVX-512 and AVX-VNNI from a process (so
peers choose their AVX2 kernels beside fixnet's AVX2 build). Runs where the CPU can fault
CPUID and a C compiler is present; elsewhere it skips saying why."""
import os
import shutil
import subprocess
import sys

import pytest

import fixnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "bench", "cpuid_mask")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                    reason="the shim is for Linux x86-64")
@pytest.mark.skipif("cpuid_fault" not in _cpu_flags(), reason="this CPU cannot fault CPUID")
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_the_shim_hides_avx512_and_fixnet_then_picks_its_avx2_build(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    so = subprocess.run([sys.executable, TOOL], capture_output=True, text=True, env=env,
                        timeout=120)
    assert so.returncode == 0, so.stderr
    path = so.stdout.strip()
    assert os.path.isfile(path) and path.startswith(str(tmp_path))
    probe = ("import fixnet._kernels as K, numpy as np; "
             "print(K.ISA, K.cpu_supports('avx512vnni'), K.cpu_supports('avx2'))")
    env.update(LD_PRELOAD=path, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    env.pop("FIXNET_ISA", None)
    # outside the checkout: "-c" puts the working folder first on sys.path, and a checkout's
    # fixnet/ (unbuilt, in a fresh clone) would shadow the installed package
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["avx2", "False", "True"]

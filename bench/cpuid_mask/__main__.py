"""Build the CPUID-masking shim and print its path, for LD_PRELOAD:

    LD_PRELOAD=$(python bench/cpuid_mask) python bench/peers.py --models ...

The shim (cpuid_mask.c, beside this file) makes the process it is preloaded into see a CPU
without AVX-512 and without AVX-VNNI: an AVX2 machine. Every library that chooses its kernels
by CPUID then chooses as it would there: TFLite's XNNPACK, ONNX Runtime's MLAS, NumPy, and
fixnet itself (its avx2 build). So fixnet's AVX2 build is timed against the peers' AVX2
kernels, on a machine that has AVX-512: "measure every ISA build" for the peers too.

It works by CPUID faulting (Linux arch_prctl(ARCH_SET_CPUID, 0); the CPU flag cpuid_fault,
present on recent Intel CPUs and their VMs): every CPUID instruction traps, and the shim's
SIGSEGV handler runs it and clears the AVX-512 and AVX-VNNI bits of leaf 7. Only CPUID is
masked: the instructions still run if a library uses them without asking (none of the above
does). Built with the system's C compiler into ~/.cache/fixnet (or $XDG_CACHE_HOME), once per
source version. Exits 1 with a message if the CPU cannot fault CPUID or nothing compiles.
"""
import hashlib
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def build():
    src = HERE / "cpuid_mask.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    out = cache / "fixnet" / f"cpuid_mask-{digest}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        tmp = out.with_suffix(".tmp.so")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(src)], check=True)
        tmp.replace(out)
    return out


def main():
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "AMD64"):
        sys.exit("cpuid_mask: only on Linux x86-64")
    with open("/proc/cpuinfo") as f:
        if "cpuid_fault" not in f.read():
            sys.exit("cpuid_mask: this CPU (or VM) cannot fault CPUID (no cpuid_fault flag)")
    try:
        print(build())
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cpuid_mask: cannot build the shim: {e}")


if __name__ == "__main__":
    main()

"""Run docs/tutorial.md and write (or check) the output printed under each of its steps.

The tutorial's Python blocks (```python tutorial```) run in order in one namespace, from the
checkout's root, as one reader's session would; each block's printed output goes into the
```text output``` block right after it. The outputs are never typed by hand:

    python tools/tutorial.py --write     # run the blocks, rewrite the output blocks
    python tools/tutorial.py --check     # run them, exit 1 where an output differs

tests/test_tutorial.py runs --check's comparison. The steps run in a child Python whose
OpenBLAS is pinned to its AVX2 kernels on x86-64 (float_env), so that every x86-64 machine
prints the same numbers.
"""
import argparse
import contextlib
import difflib
import io
import json
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "docs", "tutorial.md")
BLOCK = re.compile(r"^```python tutorial\n(?P<code>.*?)^```\n\n```text output\n(?P<out>.*?)^```$",
                   re.M | re.S)


def blocks(text):
    """[(match, code, output)] of the tutorial's step blocks, in order."""
    return [(m, m.group("code"), m.group("out")) for m in BLOCK.finditer(text)]


def float_env():
    """The environment the steps run in: on an x86-64 CPU with AVX2, OpenBLAS pinned to its
    Haswell (AVX2) kernels. The float reference behind every number the tutorial prints is
    NumPy's matrix products; OpenBLAS picks its kernels by CPU, and its AVX-512 ones round
    differently, so an AVX-512 machine would print other calibration ranges and SQNRs than
    an AVX2 one. Pinned, every x86-64 machine prints the same."""
    env = dict(os.environ)
    if platform.machine() in ("x86_64", "AMD64") and "OPENBLAS_CORETYPE" not in env:
        try:
            with open("/proc/cpuinfo") as f:
                avx2 = " avx2" in f.read()
        except OSError:
            avx2 = False
        if avx2:
            env["OPENBLAS_CORETYPE"] = "Haswell"
    return env


def run_blocks(text):
    """The printed output of each step block (run_here's), in a child Python started with
    float_env()."""
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--emit"], input=text,
                       capture_output=True, text=True, env=float_env(), cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"the tutorial's steps failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout)


def run_here(text):
    """The printed output of each step block, run in order in one namespace from ROOT."""
    namespace = {"__name__": "__tutorial__"}
    outputs = []
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for i, (_, code, _) in enumerate(blocks(text)):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(code, f"tutorial step {i + 1}", "exec"), namespace)
            outputs.append(buf.getvalue())
    finally:
        os.chdir(cwd)
    return outputs


def with_outputs(text, outputs):
    """``text`` with each step's output block replaced by ``outputs``."""
    parts, last = [], 0
    for (m, _, _), out in zip(blocks(text), outputs):
        start = m.start("out")
        parts.append(text[last:start])
        parts.append(out if out.endswith("\n") or not out else out + "\n")
        last = m.end("out")
    parts.append(text[last:])
    return "".join(parts)


def differences(text):
    """Unified diff lines between the tutorial and its freshly run outputs (empty: same)."""
    fresh = with_outputs(text, run_blocks(text))
    return list(difflib.unified_diff(text.splitlines(), fresh.splitlines(), "docs/tutorial.md",
                                     "as run now", lineterm=""))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite the output blocks")
    g.add_argument("--check", action="store_true", help="exit 1 where an output differs")
    g.add_argument("--emit", action="store_true",
                   help="(internal) run the tutorial text on stdin here, print its outputs as JSON")
    args = p.parse_args(argv)
    if args.emit:
        out = sys.stdout
        print(json.dumps(run_here(sys.stdin.read())), file=out)
        return 0
    with open(TUTORIAL, encoding="utf-8") as f:
        text = f.read()
    if args.write:
        fresh = with_outputs(text, run_blocks(text))
        with open(TUTORIAL, "w", encoding="utf-8") as f:
            f.write(fresh)
        print(f"wrote the outputs of {len(blocks(text))} steps into {TUTORIAL}")
        return 0
    diff = differences(text)
    print("\n".join(diff) if diff else f"the {len(blocks(text))} steps print what the tutorial shows")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/arm_mca.py, the static analysis of the NEON kernels: how it finds and measures a hot
loop in assembly (natural loops, numeric labels, MACs counted per instruction, loads), and that
it says what to install when its tools are missing. No speed is asserted here: with the tools
installed, one kernel is analysed end to end and its record checked for shape only."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "arm_mca.py")


@pytest.fixture(scope="module")
def mca():
    spec = importlib.util.spec_from_file_location("arm_mca", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A GCC-style function: a tap loop around a K loop, with the K tail laid out after the
# function's return and jumping back into the tap loop (so it sits between no label and its
# branch, and a "branch to an earlier line" is not a loop unless its target dominates it).
GCC_ASM = """\
f:
    mov x3, 0
.L2:
    ldr x4, [x0, x3, lsl 3]
    cbz x1, .L3
    mov x5, x1
.L4:
    ldr q0, [x4], 16
    ldp q1, q2, [x2], 32
    smull v3.8h, v0.8b, v1.8b
    smlal2 v3.8h, v0.16b, v1.16b
    sadalp v16.4s, v3.8h
    sdot v17.4s, v2.16b, v0.4b[1]
    subs x5, x5, 1
    bne .L4
.L3:
    cbnz x6, .L9
.L5:
    add x3, x3, 1
    cmp x3, x7
    bne .L2
    ret
.L9:
    ldr d0, [x4]
    smull v3.8h, v0.8b, v1.8b
    b .L5
"""

XNN_ASM = """\
0:
    SUBS x0, x2, 16
1:
    LDR q0, [x3], 16
    SDOT v16.4s, v4.16b, v0.4b[0]
    SDOT v17.4s, v4.16b, v0.4b[1]
    SUBS x0, x0, 16
    B.HS 1b
    B.NE 0b
"""


def test_the_innermost_loop_with_macs_is_cut(mca):
    lines = mca.function_lines(GCC_ASM, None)
    loops = mca.hot_loop(lines, 0)
    assert len(loops) == 1
    loop = loops[0]
    assert loop.body[0] == ".L4:" and loop.body[-1].startswith("bne")
    # smull 8 + smlal2 8 + sdot (4 lanes x 4) 16; the tail's smull (after ret) is not in it
    assert loop.macs == 32 and loop.peak_family == "sdot"
    assert loop.loads == 3 and loop.branches == 0 and loop.spills == 0 and loop.calls == 0


def test_a_tail_placed_after_the_return_is_not_a_loop(mca):
    lines = mca.function_lines(GCC_ASM, None)
    loops, blocks = mca.find_loops(lines)
    headers = sorted(lines[blocks[l[0]][0]] for l in loops)
    assert headers == [".L2:", ".L4:"]
    outer = [l for l in loops if lines[blocks[l[0]][0]] == ".L2:"][0]
    text = [lines[i] for b in outer for i in range(*blocks[b])]
    assert "ldr d0, [x4]" in text       # the tail runs inside the tap loop, via .L9 -> .L5


def test_numeric_labels_as_in_xnnpack_assembly(mca):
    lines = mca.function_lines(XNN_ASM, None)
    loop = mca.hot_loop(lines, 0)[0]
    assert loop.body[0] == "1:" and loop.macs == 32
    text = mca.mca_text(loop.body)
    assert ".Lnum1:" in text and "B.HS .Lnum1" in text


@pytest.mark.parametrize("line, macs", [
    ("sdot v1.4s, v2.16b, v3.16b", 16), ("sdot v1.2s, v2.8b, v3.4b[2]", 8),
    ("smull v1.8h, v2.8b, v3.8b", 8), ("smlal2 v1.8h, v2.16b, v3.16b", 8),
    ("smlal v1.4s, v2.4h, v3.4h", 4), ("mla v1.16b, v2.16b, v3.16b", 16),
    ("sqrdmulh v1.4s, v2.4s, v3.4s", 0), ("saddw v1.4s, v1.4s, v2.4h", 0),
    ("add x1, x1, 16", 0)])
def test_macs_per_instruction(mca, line, macs):
    assert mca.macs_of(line)[0] == macs


def test_missing_tools_exit_2_naming_them():
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                          env={"PATH": os.path.dirname(sys.executable)})
    assert proc.returncode == 2
    assert "aarch64-linux-gnu-gcc" in proc.stderr and "llvm-19" in proc.stderr


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("llvm-mca-19")),
                    reason="needs aarch64-linux-gnu-gcc and llvm-mca-19")
def test_one_kernel_end_to_end(tmp_path):
    out = tmp_path / "mca.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--kernel", "gemm-1x8c16-q8", "--json",
                           str(out), "--iterations", "50"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out.read_text())
    assert {(r["build"], r["cpu"]) for r in records} == {
        (b, c) for b in ("O3", "O2", "O3-noinline", "O2-noinline") for c in ("pi4", "pi5")}
    for r in records:
        assert r["kernel"] == "gemm-1x8c16-q8" and r["peak_mac_per_cycle"] == 8
        assert r["macs_per_iteration"] == 128 and r["mac_per_cycle"] > 0

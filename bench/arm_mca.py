"""Static analysis of fixnet's NEON micro-kernels (and, optionally, XNNPACK's) for the Raspberry Pi.

    python bench/arm_mca.py                       # the table, fixnet's kernels
    python bench/arm_mca.py --xnnpack ~/XNNPACK   # and XNNPACK's, from a checkout of it
    python bench/arm_mca.py --json out.json       # also the records, as JSON
    python bench/arm_mca.py --show gemm-4x16c4-q8 --build O2 --cpu pi5   # the cut loop

What it does, per kernel: compiles it with aarch64-linux-gnu-gcc at the project's flags
(setup.py: -O3 -fno-strict-aliasing -ffp-contract=off -g0; -march=armv8.2-a+dotprod for the
dot-product build, -march=armv8-a for the baseline), and the same at -O2, in these builds:

    O3, O2              the micro-kernel inlined into a driver that calls it once per block of
                        output channels, as _conv.pyx's task loop does
    O3-noinline,        the micro-kernel compiled alone, called through a noinline wrapper (what
    O2-noinline         happens if GCC declines to inline it)
    asm                 (XNNPACK's hand-written assembly kernels: as written)

cuts the hot loop out of the assembly (the innermost loop holding multiply-accumulates: the K
loop of a GEMM, the channel-tile loop of depthwise, with all its taps), runs llvm-mca-19 on it
for the Pi 4 (-mcpu=cortex-a72: LLVM models the A72 with the A57's scheduling model, close
enough) and the Pi 5 (-mcpu=neoverse-n1, which models the A76's pipes), and prints per kernel,
build and CPU: cycles per iteration, MACs per iteration (counted from the loop's instructions:
sdot on 16 lanes = 16, smull/smlal(2) on 8 lanes = 8, on 4 lanes = 4, mla/mul per lane, ...),
MAC/cycle, % of the pipe peak, GMAC/s at 1.5 GHz (Pi 4) / 2.4 GHz (Pi 5). Peaks per core:
smull/smlal on 8-bit lanes issue on one pipe, 8 MAC/cycle on both CPUs; sdot on either of the
A76's two vector pipes, 32 MAC/cycle (the A72 has no sdot). A loop is also checked for stack
traffic (spilled registers), calls, dup/ld1r broadcasts and branches inside the loop (llvm-mca
runs every instruction of the cut loop: a loop with branches inside is overestimated).

A static model: every load hits L1, no front-end or branch-prediction stalls beyond what
llvm-mca models; not a measurement (bench/kernels.py times the kernels on a real machine).

Needs aarch64-linux-gnu-gcc (apt: gcc-aarch64-linux-gnu) and llvm-mca-19 (apt: llvm-19); exits
with status 2 and says so if either is missing. ``--xnnpack PATH`` reads XNNPACK's kernel
sources from a checkout at PATH (compiled in a temporary folder; nothing is copied into fixnet).
``--json OUT`` writes a list of records: kernel, library, isa, build, cpu, macs_per_iteration,
cycles_per_iteration, mac_per_cycle, peak_mac_per_cycle, percent_of_peak, gmac_per_s, ghz,
instructions, spills, calls, broadcasts, branches, loads, load_bound_mac_per_cycle.
``--summary`` prints one row per kernel instead (the worst build per CPU).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "fixnet", "_kernels", "csrc")

GCC = "aarch64-linux-gnu-gcc"
MCA = "llvm-mca-19"
PROJECT_FLAGS = ["-fno-strict-aliasing", "-ffp-contract=off", "-g0"]
MARCH = {"dotprod": "-march=armv8.2-a+dotprod", "baseline": "-march=armv8-a"}

# cpu: (llvm-mca -mcpu, GHz, which builds it runs)
CPUS = {
    "pi4": ("cortex-a72", 1.5, ("baseline",)),
    "pi5": ("neoverse-n1", 2.4, ("baseline", "dotprod")),
}
LOAD_PIPES = {"pi4": 1, "pi5": 2}   # loads per cycle (the A72 has one load pipe, the A76 two)
PEAK_MLAL = 8       # smull/smlal on 8-bit lanes: one pipe, 8 MAC/cycle (A72 and A76)
PEAK_SDOT = 32      # sdot: two pipes x 16 MACs (A76)

BUILDS = ("O3", "O2", "O3-noinline", "O2-noinline")


# ---- fixnet's kernels: small C drivers over the project's headers ---------------------------

GEMM_DRIVE = r"""
#include "qgemm.h"

/* once per block of QG_NR output channels, as _conv.pyx's task loop calls it */
void drive_tile(size_t blocks, size_t taps, size_t cin, const int8_t** a, const int8_t* packed,
                size_t block_bytes, int32_t* acc, size_t width)
{
    for (size_t b = 0; b < blocks; b++)
        qg_tile(taps, cin, a, packed + b * block_bytes + QG_NR * 4, acc + b * QG_NR, width,
                acc + b * QG_NR, width);
}
void drive_tile_q8(size_t blocks, size_t taps, size_t cin, const int8_t** a,
                   const int8_t* packed, size_t block_bytes, size_t mr, const fx_requant* q,
                   int8_t* out, size_t out_stride)
{
    for (size_t b = 0; b < blocks; b++)
        qg_tile_q8(taps, cin, a, packed + b * block_bytes, mr, QG_NR, q, b * QG_NR,
                   out + b * QG_NR, out_stride);
}
void drive_row_q8(size_t blocks, size_t cin, const int8_t** a, const int8_t* packed,
                  size_t block_bytes, const fx_requant* q, int8_t* out)
{
    for (size_t b = 0; b < blocks; b++)
        qg_row_q8(1, cin, a, packed + b * block_bytes, QG_NR, q, b * QG_NR, out + b * QG_NR);
}
void drive_row2_q8(size_t blocks, size_t cin, const int8_t** a, const int8_t* packed,
                   size_t block_bytes, const fx_requant* q, int8_t* out)
{
    for (size_t b = 0; b + 1 < blocks; b += 2)
        qg_row2_q8(1, cin, a, packed + b * block_bytes, block_bytes, 2 * QG_NR, q, b * QG_NR,
                   out + b * QG_NR);
}
"""

GEMM_ALONE = r"""
#include "qgemm.h"

/* the micro-kernel as a function of its own, called through a noinline wrapper */
__attribute__((noinline)) void alone_tile(size_t taps, size_t cin, const int8_t** a,
        const void* w, const int32_t* init, size_t init_stride, int32_t* c, size_t c_stride)
{
    qg_tile(taps, cin, a, w, init, init_stride, c, c_stride);
}
__attribute__((noinline)) void alone_tile_q8(size_t taps, size_t cin, const int8_t** a,
        const void* block, size_t mr, size_t nc, const fx_requant* q, size_t c0, int8_t* out,
        size_t out_stride)
{
    qg_tile_q8(taps, cin, a, block, mr, nc, q, c0, out, out_stride);
}
__attribute__((noinline)) void alone_row_q8(size_t taps, size_t cin, const int8_t** a,
        const void* block, size_t nc, const fx_requant* q, size_t c0, int8_t* out)
{
    qg_row_q8(taps, cin, a, block, nc, q, c0, out);
}
__attribute__((noinline)) void alone_row2_q8(size_t taps, size_t cin, const int8_t** a,
        const void* block, size_t block_bytes, size_t nc, const fx_requant* q, size_t c0,
        int8_t* out)
{
    qg_row2_q8(taps, cin, a, block, block_bytes, nc, q, c0, out);
}
"""

DW_DRIVE = r"""
#include "dwconv.h"

/* dw_run_simd is the driver (pixel loop, tile loop, taps unrolled for 9 and 25) */
void drive_dw(const dw_call* k, ptrdiff_t first, ptrdiff_t last) { dw_run_simd(k, first, last); }
"""
DW_ALONE = r"""
#include "dwconv.h"

__attribute__((noinline)) void alone_dw(const dw_call* k, ptrdiff_t first, ptrdiff_t last)
{
    dw_run_simd(k, first, last);
}
"""


@dataclass
class Kernel:
    name: str           # e.g. gemm-4x16c4-q8
    library: str        # fixnet / xnnpack
    isa: str            # dotprod / baseline
    what: str           # one line for the table
    source: object      # fixnet: {build: C text} (every function of its assembly is
                        # searched); xnnpack: the path of the kernel's file
    macs: int = 0       # the cut loop's MACs must be a multiple of this (one tile's); 0: any
    assembly: bool = False


def only(source, fn):
    """source with the functions for other kernels than fn (tile, tile_q8, row_q8, row2_q8)
    removed: one caller per translation unit, so the inlining is GCC's choice for that one."""
    head, *funcs = re.split(r"\n(?=(?:__attribute__\(\(noinline\)\) )?void )", source)
    keep = [f for f in funcs if re.match(rf"(?:__attribute__\(\(noinline\)\) )?void \w+_{fn}\(", f)]
    return "\n".join([head] + keep)


def fixnet_kernels():
    ks = []
    for isa, tile, row in (("dotprod", "4x16c4", "1x16c4"), ("baseline", "2x8c16", "1x8c16")):
        rows = [(f"gemm-{row}-q8", "one row, fused (dense at batch 1)", "row_q8")]
        if isa == "dotprod":
            # its own two-block kernel (elsewhere qg_row2_q8 is two qg_row_q8 calls); the
            # 1x16 then runs only for a last odd block of 16 channels
            rows = [("gemm-1x32c4-q8", "one row, two blocks, fused (dense at batch 1)",
                     "row2_q8"),
                    (f"gemm-{row}-q8", "one row, a last odd block of 16 channels", "row_q8")]
        for name, what, fn in (
                (f"gemm-{tile}-q8", "fused tile (accumulate, requantize, int8)", "tile_q8"),
                (f"gemm-{tile}", "int32 tile (layers of more than 32 taps)", "tile"),
                *rows):
            ks.append(Kernel(name, "fixnet", isa, f"GEMM {name[5:]}: {what}",
                             {b: only(GEMM_ALONE if "noinline" in b else GEMM_DRIVE, fn)
                              for b in BUILDS}))
        for taps in (9, 25):
            ks.append(Kernel(f"dw-{taps}p16c", "fixnet", isa,
                             f"depthwise {taps} taps x 16 channels (+ epilogue)",
                             {b: DW_ALONE if "noinline" in b else DW_DRIVE for b in BUILDS},
                             macs=taps * 16))
    return ks


XNN_GEMM = "src/qs8-qc8w-gemm/gen/qs8-qc8w-gemm-"
XNN_DW = "src/qs8-qc8w-dwconv/gen/qs8-qc8w-dwconv-"
XNNPACK_KERNELS = (
    # name, isa, what, file (.c: compiled at O3/O2; .S: as written), loop MACs (0: the most)
    ("gemm-4x16c4-ld128", "dotprod", "GEMM 4x16c4 sdot by lane, 16-byte loads (asm)",
     XNN_GEMM + "4x16c4-minmax-fp32-asm-aarch64-neondot-ld128.S", 0),
    ("gemm-4x16c4", "dotprod", "GEMM 4x16c4 sdot by lane, 8-byte loads (C)",
     XNN_GEMM + "4x16c4-minmax-fp32-neondot.c", 0),
    ("gemm-1x16c4", "dotprod", "GEMM 1x16c4 sdot by lane (C)",
     XNN_GEMM + "1x16c4-minmax-fp32-neondot.c", 0),
    ("gemm-2x8c16", "baseline", "GEMM 2x8c16 smull/smlal2/sadalp (asm)",
     XNN_GEMM + "2x8c16-minmax-fp32-asm-aarch64-neon-mlal.S", 0),
    ("gemm-2x8c8", "baseline", "GEMM 2x8c8 smull/smlal/sadalp (C)",
     XNN_GEMM + "2x8c8-minmax-fp32-neon-mlal.c", 0),
    ("gemm-1x8c8", "baseline", "GEMM 1x8c8 smull/smlal/sadalp (C)",
     XNN_GEMM + "1x8c8-minmax-fp32-neon-mlal.c", 0),
    # depthwise: the kernels XNNPACK's config picks on arm64 (9p16c and 25p16c neonv8 mla8
    # ld64), and the 16-byte-load variant
    ("dw-9p16c-mla8-ld64", "baseline", "depthwise 9 taps x 16, smull+smlal pairs (C, arm64 pick)",
     XNN_DW + "9p16c-minmax-fp32-neonv8-mla8-ld64.c", 144),
    ("dw-9p16c-mla8-ld128", "baseline", "depthwise 9 taps x 16, smull+smlal pairs, 16-byte loads (C)",
     XNN_DW + "9p16c-minmax-fp32-neonv8-mla8-ld128.c", 144),
    ("dw-25p16c-mla8-ld64", "baseline", "depthwise 25 taps x 16, smull+smlal pairs (C, arm64 pick)",
     XNN_DW + "25p16c-minmax-fp32-neonv8-mla8-ld64.c", 400),
)


def xnnpack_kernels(path):
    ks = []
    for name, isa, what, rel, macs in XNNPACK_KERNELS:
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            print(f"arm_mca: {rel} is not in {path}; skipped", file=sys.stderr)
            continue
        asm = rel.endswith(".S")
        ks.append(Kernel(name, "xnnpack", isa, what, full, macs=macs, assembly=asm))
    return ks


# ---- compiling and cutting -----------------------------------------------------------------

@dataclass
class Loop:
    body: list          # instruction lines, label first
    macs: int
    peak_family: str    # "sdot" or "mlal"
    spills: int
    calls: int
    broadcasts: int
    branches: int       # branches inside the loop besides the one back to its top
    loads: int          # registers loaded (one load-pipe slot each)


def compile_c(source_path, isa, opt, includes, workdir):
    out = os.path.join(workdir, f"{os.path.basename(source_path)}.{isa}.{opt}.s")
    cmd = [GCC, f"-{opt}", *PROJECT_FLAGS, MARCH[isa], *[f"-I{i}" for i in includes],
           "-S", source_path, "-o", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    with open(out) as f:
        return f.read()


def preprocess_asm(source_path, includes, workdir):
    out = os.path.join(workdir, os.path.basename(source_path) + ".s")
    cmd = [GCC, "-E", "-P", "-x", "assembler-with-cpp", *[f"-I{i}" for i in includes],
           source_path, "-o", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    with open(out) as f:
        return f.read()


def function_lines(asm, symbol):
    """The instruction and label lines of one function (all functions if symbol is None),
    comments and directives removed."""
    lines, inside = [], symbol is None
    for raw in asm.splitlines():
        line = raw.split("//")[0].split("@")[0]
        if line.lstrip().startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        if symbol is not None and line == f"{symbol}:":
            inside = True
            continue
        if not inside:
            continue
        if symbol is not None and line.startswith(".size") and symbol in line:
            break
        if line.startswith(".") and not re.match(r"^\.?[\w.$]+:$", line):
            continue        # a directive
        lines.append(line)
    return lines


LABEL = re.compile(r"^([\w.$]+):$")
BRANCH = re.compile(r"^(b(?:\.?(?:eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al))?|cbn?z|tbn?z)"
                    r"\s+(.*)$", re.I)


def branch_target(line):
    m = BRANCH.match(line)
    if not m:
        return None
    return m.group(2).split(",")[-1].strip()


def resolve(lines, i, target, defined):
    """The line index of the label a branch at line i names (numeric labels: 1b, 1f)."""
    m = re.fullmatch(r"(\d+)([bf])", target)
    if m:
        spots = defined.get(m.group(1), [])
        before = [j for j in spots if j < i]
        after = [j for j in spots if j > i]
        if m.group(2) == "b":
            return before[-1] if before else None
        return after[0] if after else None
    spots = defined.get(target, [])
    return spots[0] if spots else None


def basic_blocks(lines):
    """[(first line, last line + 1)] and each block's successors (indices of blocks)."""
    defined = {}
    for i, line in enumerate(lines):
        m = LABEL.match(line)
        if m:
            defined.setdefault(m.group(1), []).append(i)
    starts = {0}
    for i, line in enumerate(lines):
        op = mnemonic_and_operands(line)[0]
        if LABEL.match(line):
            starts.add(i)
        elif (branch_target(line) is not None or op in ("ret", "br")) and i + 1 < len(lines):
            starts.add(i + 1)
    starts = sorted(starts)
    blocks = list(zip(starts, starts[1:] + [len(lines)]))
    block_at = {}
    for b, (s, e) in enumerate(blocks):
        for i in range(s, e):
            block_at[i] = b
    succ = []
    for b, (s, e) in enumerate(blocks):
        last = lines[e - 1]
        op = mnemonic_and_operands(last)[0]
        target = branch_target(last)
        nxt = [b + 1] if b + 1 < len(blocks) else []
        if target is not None:
            j = resolve(lines, e - 1, target, defined)
            to = [block_at[j]] if j is not None else []
            succ.append(to if op == "b" else to + nxt)
        elif op in ("ret", "br"):
            succ.append([])
        else:
            succ.append(nxt)
    return blocks, succ


def dominators(n, succ, entries):
    """dom[b]: the set of blocks that dominate b (iterative data flow from the entries)."""
    pred = [[] for _ in range(n)]
    for b, ss in enumerate(succ):
        for t in ss:
            pred[t].append(b)
    everything = set(range(n))
    dom = [({b} if b in entries else set(everything)) for b in range(n)]
    changed = True
    while changed:
        changed = False
        for b in range(n):
            if b in entries:
                continue
            ps = [dom[p] for p in pred[b]]
            new = (set.intersection(*ps) if ps else set()) | {b}
            if new != dom[b]:
                dom[b], changed = new, True
    return dom, pred


def find_loops(lines):
    """Natural loops: [sorted block indices], and the blocks. A back edge is a branch to a
    block that dominates it (not merely one laid out earlier: GCC places cold code after a
    loop and jumps back from it); its loop is every block that reaches the branch without
    passing the header."""
    blocks, succ = basic_blocks(lines)
    entries = {0} | {b for b, (s, _) in enumerate(blocks)
                     if LABEL.match(lines[s]) and not re.match(r"^(\.|\d+:)", lines[s])}
    dom, pred = dominators(len(blocks), succ, entries)
    loops = {}
    for u, ss in enumerate(succ):
        for h in ss:
            if h not in dom[u]:
                continue
            body, stack = {h, u}, [u]
            while stack:
                b = stack.pop()
                if b == h:
                    continue
                for p in pred[b]:
                    if p not in body:
                        body.add(p)
                        stack.append(p)
            loops.setdefault(h, set()).update(body)
    return [sorted(v) for v in loops.values()], blocks


def mnemonic_and_operands(line):
    parts = line.split(None, 1)
    return parts[0].lower(), (parts[1].lower() if len(parts) > 1 else "")


ARRANGEMENT_LANES = {"16b": 16, "8b": 8, "8h": 8, "4h": 4, "4s": 4, "2s": 2, "2d": 2}


def macs_of(line):
    """(MACs, family) of one instruction: sdot family or widening/plain integer multiplies."""
    op, args = mnemonic_and_operands(line)
    first = re.match(r"v\d+\.(\w+)", args)
    if not first:
        return 0, None
    lanes = ARRANGEMENT_LANES.get(first.group(1), 0)
    if op in ("sdot", "udot", "usdot", "sudot"):
        return lanes * 4, "sdot"
    if re.fullmatch(r"[su](mull|mlal|mlsl)2?", op) or op in ("mul", "mla", "mls"):
        return lanes, "mlal"
    return 0, None


def loaded_registers(line):
    """Registers one instruction loads from memory (ldr: 1, ldp: 2, ld1 {..}: as listed)."""
    op, args = mnemonic_and_operands(line)
    if not re.match(r"ld(r|ur|p|np|[1-4])", op):
        return 0
    if op.startswith("ldp") or op.startswith("ldnp"):
        return 2
    m = re.match(r"ld([1-4])r?$", op)
    if m:
        regs = re.match(r"\{([^}]*)\}", args)
        if regs and "-" in regs.group(1):
            a, b = (int(x) for x in re.findall(r"v(\d+)", regs.group(1))[:2])
            return (b - a) % 32 + 1
        return len(re.findall(r"v\d+", regs.group(1))) if regs else 1
    return 1


def analyse_loop(lines, body_lines):
    body = [lines[i] for i in body_lines]
    macs, families = 0, set()
    spills = calls = broadcasts = branches = loads = 0
    for line in body:
        loads += loaded_registers(line)
        if branch_target(line) is not None:
            branches += 1
        n, family = macs_of(line)
        macs += n
        if family:
            families.add(family)
        op, args = mnemonic_and_operands(line)
        if re.search(r"\[sp\b", args) and re.match(r"(ld|st)", op):
            spills += 1
        if op in ("bl", "blr"):
            calls += 1
        if op in ("dup", "ld1r", "ld2r", "ld4r") or (op == "mov" and re.search(r"\.\w+\[\d+\]$", args)):
            broadcasts += 1
    return Loop(body, macs, "sdot" if "sdot" in families else "mlal", spills, calls, broadcasts,
                max(branches - 1, 0), loads)


def hot_loop(lines, macs_wanted):
    """The innermost loops holding the most multiply-accumulates per iteration (a multiple of
    macs_wanted if given): every copy (GCC may duplicate a loop); None if none."""
    loops, blocks = find_loops(lines)
    analysed = [(set(l), analyse_loop(lines, [i for b in l for i in range(*blocks[b])]))
                for l in loops]
    with_macs = [(s, a) for s, a in analysed if a.macs]
    # innermost among the loops with MACs (a loop inside, say a byte-copy loop of a K tail
    # inside the K loop, does not disqualify it)
    found = [a for s, a in with_macs if not any(o < s for o, _ in with_macs)]
    if macs_wanted:     # one tile's MACs: a loop over one tile or several at a time
        found = [l for l in found if l.macs % macs_wanted == 0]
    if not found:
        return None
    most = max(l.macs for l in found)
    return [l for l in found if l.macs == most]


def mca_text(body):
    """The loop as llvm-mca reads it: numeric local labels (1:, b.hs 1b) renamed, which its
    parser does not take."""
    out = []
    for line in body:
        line = re.sub(r"^(\d+):$", r".Lnum\1:", line)
        target = branch_target(line)
        if target is not None and re.fullmatch(r"\d+[bf]", target):
            line = line[:line.rindex(target)] + ".Lnum" + target[:-1]
        out.append(line)
    return "\n".join(out) + "\n"


def run_mca(body, mcpu, iterations):
    text = mca_text(body)
    cmd = [MCA, "-mtriple=aarch64", f"-mcpu={mcpu}", f"-iterations={iterations}"]
    if mcpu == "neoverse-n1":
        cmd.append("-mattr=+dotprod")
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}\n{text}")
    total = int(re.search(r"Total Cycles:\s+(\d+)", proc.stdout).group(1))
    iters = int(re.search(r"Iterations:\s+(\d+)", proc.stdout).group(1))
    return total / iters, proc.stdout


@dataclass
class Record:
    kernel: str
    library: str
    isa: str
    build: str
    cpu: str
    what: str
    macs_per_iteration: int
    cycles_per_iteration: float
    mac_per_cycle: float
    peak_mac_per_cycle: int
    percent_of_peak: float
    gmac_per_s: float
    ghz: float
    instructions: int
    spills: int
    calls: int
    broadcasts: int
    branches: int
    loads: int
    load_bound_mac_per_cycle: float     # MACs per cycle if the loads were the only limit
    loop: list = field(default_factory=list, repr=False)


def builds_of(kernel):
    if kernel.assembly:
        return ("asm",)
    if kernel.library == "xnnpack":
        return ("O3", "O2")
    return BUILDS


def analyse(kernel, workdir, iterations, includes, csrc=CSRC):
    """Records of one kernel: per build and CPU."""
    records = []
    for build in builds_of(kernel):
        if kernel.assembly:
            lines = function_lines(preprocess_asm(kernel.source, includes, workdir), None)
        else:
            opt = build.split("-")[0]
            if kernel.library == "fixnet":
                src = os.path.join(workdir, f"{kernel.name}-{kernel.isa}-{build}.c")
                with open(src, "w") as f:
                    f.write(kernel.source[build])
                asm = compile_c(src, kernel.isa, opt, [csrc], workdir)
                lines = function_lines(asm, None)
            else:
                asm = compile_c(kernel.source, kernel.isa, opt, includes, workdir)
                lines = function_lines(asm, None)
        loops = hot_loop(lines, kernel.macs)
        if not loops:
            raise RuntimeError(f"{kernel.library} {kernel.name} ({build}): no loop with "
                               f"{kernel.macs or 'any'} MACs found")
        for cpu, (mcpu, ghz, isas) in CPUS.items():
            if kernel.isa not in isas:
                continue
            worst = None
            for loop in loops:
                cycles, _ = run_mca(loop.body, mcpu, iterations)
                if worst is None or cycles > worst[0]:
                    worst = (cycles, loop)
            cycles, loop = worst
            peak = PEAK_SDOT if loop.peak_family == "sdot" else PEAK_MLAL
            mpc = loop.macs / cycles
            records.append(Record(
                kernel.name, kernel.library, kernel.isa, build, cpu, kernel.what, loop.macs,
                round(cycles, 2), round(mpc, 2), peak, round(100 * mpc / peak, 1),
                round(mpc * ghz, 1), ghz, sum(not LABEL.match(x) for x in loop.body), loop.spills, loop.calls,
                loop.broadcasts, loop.branches, loop.loads,
                round(loop.macs * LOAD_PIPES[cpu] / max(loop.loads, 1), 2), loop.body))
    return records


def check_tools():
    """Exit with status 2, saying what to install, if the cross compiler or llvm-mca is missing."""
    missing = [t for t in (GCC, MCA) if shutil.which(t) is None]
    if missing:
        print(f"arm_mca: {' and '.join(missing)} not found on PATH. Install them "
              f"(Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu llvm-19); "
              f"see docs/development.md.", file=sys.stderr)
        sys.exit(2)


def table(records):
    head = ("library", "kernel", "isa", "build", "cpu", "MACs/it", "cyc/it", "MAC/cyc", "peak",
            "% peak", "GMAC/s", "spill", "call", "dup", "br")
    rows = [(r.library, r.kernel, r.isa, r.build, r.cpu, str(r.macs_per_iteration),
             f"{r.cycles_per_iteration:.2f}", f"{r.mac_per_cycle:.2f}",
             str(r.peak_mac_per_cycle), f"{r.percent_of_peak:.1f}", f"{r.gmac_per_s:.1f}",
             str(r.spills), str(r.calls), str(r.broadcasts), str(r.branches)) for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        out.append("| " + " | ".join(c.rjust(w) if i >= 5 else c.ljust(w)
                                     for i, (c, w) in enumerate(zip(row, widths))) + " |")
    return "\n".join(out)


def summary(records):
    """One row per library, kernel and build set: per CPU the worst MAC/cycle over the
    compiler builds (O3, O2, inlined or not), its % of the pipe peak, GMAC/s, and the loads'
    bound (loaded registers / load pipes) where that is what holds the loop below the pipe
    peak (a one-row GEMM reads each weight once: 17 loads per 16 sdots)."""
    groups = {}
    for r in records:
        groups.setdefault((r.library, r.kernel, r.isa), []).append(r)
    out = ["| library | kernel | isa | builds | Pi 4 (A72): MAC/cycle, % of peak, GMAC/s "
           "| Pi 5 (A76): MAC/cycle, % of peak, GMAC/s |",
           "|---|---|---|---|---|---|"]
    for (library, kernel, isa), rs in groups.items():
        cells = []
        for cpu in CPUS:
            on = [r for r in rs if r.cpu == cpu]
            if not on:
                cells.append("-")
                continue
            worst = min(on, key=lambda r: r.mac_per_cycle)
            best = max(on, key=lambda r: r.mac_per_cycle)
            cell = (f"{worst.mac_per_cycle:.2f} of {worst.peak_mac_per_cycle}, "
                    f"{worst.percent_of_peak:.1f}%, {worst.gmac_per_s:.1f}")
            if best.mac_per_cycle > worst.mac_per_cycle + 0.005:
                cell += f" (best build {best.mac_per_cycle:.2f})"
            bound = worst.load_bound_mac_per_cycle
            if bound < worst.peak_mac_per_cycle and 0.95 * bound <= worst.mac_per_cycle <= bound:
                cell += f"; the loads bound it at {bound:.2f}"
            cells.append(cell)
        builds = ", ".join(sorted({r.build for r in rs}, key=lambda b: (len(b), b)))
        out.append(f"| {library} | {kernel} | {isa} | {builds} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="OUT", help="write the records as JSON to OUT")
    p.add_argument("--xnnpack", metavar="PATH",
                   help="also analyse XNNPACK's kernels, from a checkout at PATH")
    p.add_argument("--kernel", action="append", metavar="NAME",
                   help="only these kernels (by name; repeatable)")
    p.add_argument("--iterations", type=int, default=300, help="llvm-mca iterations (300)")
    p.add_argument("--csrc", metavar="DIR", default=CSRC,
                   help="fixnet's kernel headers from DIR instead of this checkout's (e.g. an "
                        "older commit's: git archive COMMIT fixnet/_kernels/csrc | tar -x -C DIR)")
    p.add_argument("--summary", action="store_true",
                   help="one row per kernel: the worst build per CPU (the table in bench/README.md)")
    p.add_argument("--show", metavar="NAME",
                   help="print the cut loop of kernel NAME (with --build, --cpu, --library)")
    p.add_argument("--build", default="O3", help="with --show: the build (O3)")
    p.add_argument("--cpu", default="pi5", choices=sorted(CPUS), help="with --show (pi5)")
    p.add_argument("--library", default="fixnet", help="with --show (fixnet)")
    p.add_argument("--isa", help="with --show: dotprod or baseline (default: the first)")
    args = p.parse_args(argv)
    check_tools()

    kernels = fixnet_kernels()
    includes = []
    if args.xnnpack:
        xnn = os.path.abspath(os.path.expanduser(args.xnnpack))
        if not os.path.isdir(os.path.join(xnn, "src", "xnnpack")):
            sys.exit(f"arm_mca: --xnnpack {args.xnnpack}: not an XNNPACK checkout "
                     f"(no src/xnnpack/ in it)")
        kernels += xnnpack_kernels(xnn)
    wanted = set(args.kernel or []) | ({args.show} if args.show else set())
    if wanted:
        kernels = [k for k in kernels if k.name in wanted]
        if not kernels:
            sys.exit(f"arm_mca: no kernel named {', '.join(sorted(wanted))}")
    if args.show:
        kernels = [k for k in kernels if k.library == args.library
                   and (args.isa is None or k.isa == args.isa)][:1]

    records = []
    with tempfile.TemporaryDirectory(prefix="arm_mca_") as workdir:
        if args.xnnpack:
            # xnnpack.h includes <pthreadpool.h> for one type; the kernels need nothing else
            stub = os.path.join(workdir, "stub")
            os.makedirs(stub)
            with open(os.path.join(stub, "pthreadpool.h"), "w") as f:
                f.write("typedef struct pthreadpool* pthreadpool_t;\n")
            includes = [xnn, os.path.join(xnn, "include"), stub]
        for k in kernels:
            try:
                records += analyse(k, workdir, args.iterations, includes,
                                   os.path.abspath(args.csrc))
            except RuntimeError as e:
                sys.exit(f"arm_mca: {e}")

    if args.show:
        for r in records:
            if r.build == args.build and r.cpu == args.cpu:
                print(f"# {r.library} {r.kernel} ({r.isa}, {r.build}, {r.cpu}): "
                      f"{r.macs_per_iteration} MACs in {r.cycles_per_iteration} cycles")
                print("\n".join(r.loop))
                return 0
        sys.exit(f"arm_mca: {args.show} has no {args.build} build for {args.cpu}")

    print("Static model (llvm-mca-19; every load in L1), per core; not a measurement.")
    print(summary(records) if args.summary else table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in asdict(r).items() if k != "loop"} for r in records],
                      f, indent=1)
        print(f"records written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""int8 outputs of every model fixture, to compare two machines (or two kernel builds) bit for bit.

    python tools/int8_outputs.py make FXN_DIR OUT.npz      quantize each fixture (the default
                                                           quantize(x_calib)), save FXN_DIR/<name>.fxn
                                                           and write the int8 outputs of x_test
    python tools/int8_outputs.py run FXN_DIR OUT.npz       only load the .fxn files and run them
    python tools/int8_outputs.py compare A.npz B.npz       per fixture: bit-identical or how many
                                                           values differ; exit status 1 on any
                                                           difference

A fixture is a Keras file models/<name>.h5 with models/<name>.npz holding x_calib and x_test (or
x_calib_0, x_calib_1, ... and x_test_0, ... for several inputs). ``make`` records a fixture that
fixnet refuses (a FixnetError) as skipped with the reason; ``compare`` counts a fixture present in
one file only as a difference. The outputs are ``qm.predict(x_test, output="int8")``; each .npz
also records the machine, the kernel build (``fixnet._kernels.ISA``; ``FIXNET_ISA=baseline``
forces the baseline) and the numpy version.

Options: --models DIR (default: models/ next to this folder), --only SUBSTRING (repeatable).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def as_list(d, key):
    """Arrays stored as ``key`` (one tensor) or ``key_0, key_1, ...`` (several)."""
    if key in d:
        return [d[key]]
    out = []
    while f"{key}_{len(out)}" in d:
        out.append(d[f"{key}_{len(out)}"])
    return out


def fixtures(models, only):
    """Names of the fixtures in ``models``: <name>.h5 with a <name>.npz holding x_calib and x_test."""
    names = []
    for f in sorted(os.listdir(models)):
        if not f.endswith(".h5") or f.endswith(".weights.h5"):
            continue
        name = f[:-3]
        if only and not any(s in name for s in only):
            continue
        npz = os.path.join(models, name + ".npz")
        if not os.path.exists(npz):
            continue
        with np.load(npz) as d:
            if as_list(d, "x_calib") and as_list(d, "x_test"):
                names.append(name)
    return names


def test_inputs(models, name):
    with np.load(os.path.join(models, name + ".npz")) as d:
        return as_list(d, "x_test")


def outputs_of(qm, xs):
    out = qm.predict(xs if len(xs) > 1 else xs[0], output="int8")
    return out if isinstance(out, list) else [out]


def header():
    import fixnet
    import fixnet._kernels
    return {"__machine__": np.array(platform.machine()),
            "__isa__": np.array(fixnet._kernels.ISA),
            "__numpy__": np.array(np.__version__),
            "__fixnet__": np.array(fixnet.__version__)}


def write(path, results, skipped):
    arrays = header()
    for name, outs in results.items():
        for i, o in enumerate(outs):
            arrays[f"{name}/{i}"] = o
    for name, reason in skipped.items():
        arrays[f"__skipped__/{name}"] = np.array(reason)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(results)} fixtures ({arrays['__machine__']}, kernels "
          f"{arrays['__isa__']}), {len(skipped)} skipped")


def make(args):
    import fixnet
    os.makedirs(args.fxn_dir, exist_ok=True)
    results, skipped = {}, {}
    for name in fixtures(args.models, args.only):
        t = time.perf_counter()
        with np.load(os.path.join(args.models, name + ".npz")) as d:
            calib = as_list(d, "x_calib")
        try:
            qm = fixnet.load(os.path.join(args.models, name + ".h5")).quantize(
                calib if len(calib) > 1 else calib[0], progress=False)
        except fixnet.FixnetError as e:
            skipped[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        qm.save(os.path.join(args.fxn_dir, name + ".fxn"))
        results[name] = outputs_of(qm, test_inputs(args.models, name))
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    write(args.out, results, skipped)


def run(args):
    import fixnet
    results = {}
    names = sorted(f[:-4] for f in os.listdir(args.fxn_dir) if f.endswith(".fxn"))
    for name in names:
        if args.only and not any(s in name for s in args.only):
            continue
        t = time.perf_counter()
        qm = fixnet.load(os.path.join(args.fxn_dir, name + ".fxn"))
        results[name] = outputs_of(qm, test_inputs(args.models, name))
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    write(args.out, results, {})


def load_outputs(path):
    """(meta, {fixture: [outputs]}, skipped) of a file ``write`` made."""
    meta, outs, skipped = {}, {}, {}
    with np.load(path) as d:
        for key in d.files:
            if key.startswith("__skipped__/"):
                skipped[key.split("/", 1)[1]] = str(d[key])
            elif key.startswith("__"):
                meta[key.strip("_")] = str(d[key])
            else:
                name, i = key.rsplit("/", 1)
                outs.setdefault(name, {})[int(i)] = d[key]
    return meta, {n: [o[i] for i in sorted(o)] for n, o in outs.items()}, skipped


def compare(args):
    meta_a, a, skip_a = load_outputs(args.a)
    meta_b, b, skip_b = load_outputs(args.b)
    print(f"A: {args.a} ({meta_a.get('machine')}, kernels {meta_a.get('isa')}, numpy {meta_a.get('numpy')})")
    print(f"B: {args.b} ({meta_b.get('machine')}, kernels {meta_b.get('isa')}, numpy {meta_b.get('numpy')})")
    n_diff = 0
    for name in sorted(set(a) | set(b) | set(skip_a) | set(skip_b)):
        if name not in a or name not in b:
            reasons = "; ".join(f"{k} skipped it: {s[name].splitlines()[0]}"
                                for k, s in (("A", skip_a), ("B", skip_b)) if name in s)
            if name in a or name in b:
                print(f"{name}: only in {'A' if name in a else 'B'}" +
                      (f" ({reasons})" if reasons else ""))
                n_diff += 1
            else:
                print(f"{name}: in neither ({reasons})")
            continue
        parts, differs = [], False
        if len(a[name]) != len(b[name]):
            print(f"{name}: {len(a[name])} vs {len(b[name])} outputs")
            n_diff += 1
            continue
        for i, (x, y) in enumerate(zip(a[name], b[name])):
            if x.shape != y.shape or x.dtype != y.dtype:
                parts.append(f"output {i}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                differs = True
                continue
            ne = x != y
            if ne.any():
                d = np.abs(x.astype(np.int32) - y.astype(np.int32))[ne]
                rows = ne.reshape(len(ne), -1).any(1).sum() if ne.ndim else 1
                parts.append(f"output {i}: {ne.sum()} of {ne.size} values differ "
                             f"(in {rows} of {len(ne)} samples; |diff| max {d.max()}, "
                             f"{np.sum(d == 1)} by 1)")
                differs = True
        n_diff += differs
        print(f"{name}: " + ("; ".join(parts) if differs else
                             f"bit-identical ({sum(x.size for x in a[name])} values)"))
    total = len(set(a) | set(b))
    print(f"{total - n_diff} of {total} fixtures bit-identical" +
          (f", {n_diff} differ" if n_diff else ""))
    return 1 if n_diff else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=os.path.join(ROOT, "models"))
    p.add_argument("--only", action="append", default=[])
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("make", "run"):
        s = sub.add_parser(mode)
        s.add_argument("fxn_dir")
        s.add_argument("out")
    s = sub.add_parser("compare")
    s.add_argument("a")
    s.add_argument("b")
    args = p.parse_args(argv)
    return {"make": make, "run": run, "compare": compare}[args.mode](args) or 0


if __name__ == "__main__":
    sys.exit(main())

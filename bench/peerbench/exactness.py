"""For a .tflite file given on --models (no Keras model to take an SQNR against): how exactly
fixnet's outputs match TFLite's on the same inputs. Against the reference kernels (BUILTIN_REF),
which fixnet reproduces bit for bit where it runs a file, and, for information, against XNNPACK
and the builtin kernels (their own rounding may differ by a code)."""
import numpy as np

from .catalog import TFLITE_FILE_BASE

# the TFLite runners fixnet's outputs are compared with, the one that should match first
AGAINST = ["tflite_ref", "tflite_xnnpack", "tflite_builtin"]


def as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def compare_outputs(got, want):
    """How many values of `got` equal `want`'s (one array each, or lists with one per output):
    {"equal", "total", "max_abs_diff", "outputs": [the same per output]}, or {"error": ...}
    where the outputs' number or shapes differ. Values compared in their own type (codes for
    integer outputs), as float64 for the difference."""
    got, want = as_list(got), as_list(want)
    if len(got) != len(want):
        return {"error": f"{len(got)} output(s) vs {len(want)}"}
    per = []
    for j, (a, b) in enumerate(zip(got, want)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return {"error": f"output {j}: shape {a.shape} vs {b.shape}"}
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        per.append({"equal": int(np.count_nonzero(diff == 0)), "total": int(a.size),
                    "max_abs_diff": float(diff.max()) if a.size else 0.0,
                    "dtype": a.dtype.name})
    return {"equal": sum(p["equal"] for p in per), "total": sum(p["total"] for p in per),
            "max_abs_diff": max((p["max_abs_diff"] for p in per), default=0.0),
            "outputs": per}


def exactness(runners, m):
    """fixnet's outputs on the file of `m` (TfliteFileInputs) against each TFLite runner of
    AGAINST that ran, on m.acc samples: key -> compare_outputs(...) (with "error" where the
    comparison could not be made). Outputs whose types differ between the two (a float32
    output of fixnet where the file mixes output types) are compared dequantized."""
    by_key = {r.key: r for r in runners}
    base = by_key.get(TFLITE_FILE_BASE)
    if base is None:
        return {}
    try:
        got = base.calls[m.acc]()
    except Exception as e:  # noqa: BLE001 - said in the table, the run goes on
        return {key: {"error": f"fixnet: {type(e).__name__}: {e}"} for key in AGAINST
                if key in by_key}
    out = {}
    for key in AGAINST:
        peer = by_key.get(key)
        if peer is None:
            continue
        try:
            want = peer.calls[m.acc]()
            a, b = as_list(got), as_list(want)
            if len(a) == len(b) and any(np.asarray(x).dtype != np.asarray(y).dtype
                                        for x, y in zip(a, b)):
                a, b = base.floats(got), peer.floats(want)
            out[key] = compare_outputs(a, b)
        except Exception as e:  # noqa: BLE001 - said in the table, the run goes on
            out[key] = {"error": f"{type(e).__name__}: {e}"}
    return out

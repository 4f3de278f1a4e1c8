"""bench/peerbench/ (the code of bench/peers.py) has no side effect at import, and times with
fixnet bench's clock (fixnet/cli/measure.py).

Importing any of its modules, in a fresh Python with arguments it does not know in sys.argv,
must not parse those arguments, change os.environ, sys.argv or sys.path, try to import a
peer runtime (TensorFlow, Keras, ONNX Runtime, tf2onnx, LiteRT: tried, not only imported, so
the check means something where they are not installed), write, create, rename or delete a
file, or start a process. The command line's module imports nothing but the standard library,
so that main() sets the thread variables before NumPy starts its BLAS pool.

Also the int16 runners (issue 19: fixnet int16, TFLite 16x8), as far as they run without
int16 kernels and without TensorFlow: listed, selected by --int16 and --only, the fixnet runner's
call (with stand-in models), the int16 input codes, and their side-by-side table."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import BENCH, peerbench

import fixnet
from fixnet.cli import measure as fixnet_measure

PACKAGE = os.path.join(BENCH, "peerbench")
PEER_RUNTIMES = ("tensorflow", "tf_keras", "keras", "onnxruntime", "onnx", "tf2onnx",
                 "ai_edge_litert", "tflite_runtime")


def package_modules():
    """Every module of bench/peerbench/, as dotted names, read from the folder."""
    names = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(folder, BENCH).replace(os.sep, ".")
        names += [rel if f == "__init__.py" else f"{rel}.{f[:-3]}"
                  for f in sorted(files) if f.endswith(".py")]
    return names


# Run in a child Python (-B: no bytecode written): records the peer imports tried (a finder
# first on sys.meta_path) and the audit events that write to the file system, change the
# environment or start a process, while the command line's module and then every module of
# the package are imported (NumPy and fixnet, which the package needs, are imported between
# the two, unwatched).
CHILD = r"""
import json, os, sys

bench, modules, runtimes = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
sys.argv = ["peers.py", "--no-such-option", "--threads", "7", "--models", "zoo"]
sys.path.insert(0, bench)
tried, events = [], []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in runtimes:
            tried.append(name)
        return None

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = ("os.putenv", "os.unsetenv", "os.mkdir", "os.remove", "os.rmdir", "os.rename",
           "os.link", "os.symlink", "os.truncate", "os.chmod", "os.utime", "shutil.",
           "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.spawn")

watching = [True]

def audit(event, args):
    if not watching[0]:
        return
    if event == "open":
        path, mode, flags = (list(args) + [None, None])[:3]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & WRITE_FLAGS):
            events.append(f"open {path} {mode} {flags}")
    elif event.startswith(CHANGES):
        events.append(f"{event} {args!r}"[:200])

environ, argv, path = dict(os.environ), list(sys.argv), list(sys.path)
sys.meta_path.insert(0, Watch())
sys.addaudithook(audit)
import importlib
importlib.import_module("peerbench.cli")        # first, as bench/peers.py imports it
numpy_after_cli = "numpy" in sys.modules
watching[0] = False         # NumPy and fixnet's own imports are theirs (NumPy sets and unsets
import numpy, fixnet        # OPENBLAS_MAIN_FREE while it loads)
watching[0] = True
for name in modules:
    importlib.import_module(name)
print(json.dumps({
    "environ": sorted(set(os.environ.items()) ^ set(environ.items())),
    "argv": sys.argv == argv, "path": sys.path == path, "tried": tried, "events": events,
    "runtimes_loaded": sorted(m for m in sys.modules if m.split(".")[0] in runtimes),
    "numpy_after_cli": numpy_after_cli}))
"""


def _import_in_child(modules):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(var, None)          # so that setting one at import would show
    # cwd: tests/, not the checkout's root, which `python -c` would put first on sys.path
    # (its uncompiled fixnet/ ahead of the installed one in a pip-installed run)
    r = subprocess.run([sys.executable, "-B", "-c", CHILD, BENCH, json.dumps(modules),
                        json.dumps(PEER_RUNTIMES)],
                       capture_output=True, text=True, env=env, timeout=300,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_package_docstring_names_each_of_its_modules():
    assert {"peerbench.cli", "peerbench.runners.tflite"} <= set(package_modules())
    peerbench("catalog")
    doc = sys.modules["peerbench"].__doc__
    for entry in sorted(os.listdir(PACKAGE)):
        if entry.endswith(".py") and entry != "__init__.py":
            assert f"\n  {entry} " in doc, f"{entry} is not in peerbench's docstring"
        elif os.path.isfile(os.path.join(PACKAGE, entry, "__init__.py")):
            assert f"\n  {entry}/ " in doc, f"{entry}/ is not in peerbench's docstring"


def test_importing_every_module_has_no_side_effect():
    got = _import_in_child(package_modules())
    assert got["environ"] == [], "os.environ changed at import"
    assert got["argv"] and got["path"], "sys.argv or sys.path changed at import"
    assert got["tried"] == [] and got["runtimes_loaded"] == [], \
        f"a peer runtime was imported at import: {got['tried'] or got['runtimes_loaded']}"
    assert got["events"] == [], f"the file system or a process was touched: {got['events']}"
    # the command line comes first, and NumPy after it: main() sets the thread variables
    assert got["numpy_after_cli"] is False, "peerbench.cli imports NumPy at import"


def test_main_sets_the_thread_and_log_variables_and_keeps_the_callers(monkeypatch):
    cli = peerbench("cli")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "5")
    cli.set_environment(3)
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["MKL_NUM_THREADS"] == "5" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_the_peers_time_with_fixnet_benchs_clock():
    for mod in ("measure", "runners.fixnet_runners", "runners.keras_float"):
        m = peerbench(mod)
        assert m.seconds_per_call is fixnet_measure.seconds_per_call, mod
    m = peerbench("measure")
    assert m.calls_per_sample is fixnet_measure.calls_per_sample
    assert m.host_info is fixnet_measure.host_info


def test_seconds_per_call_and_calls_per_sample():
    calls = []
    assert fixnet_measure.seconds_per_call(lambda: calls.append(1), 50) >= 0
    assert len(calls) == 50

    def sleep_1ms():
        time.sleep(0.001)
    assert fixnet_measure.seconds_per_call(sleep_1ms, 5) == pytest.approx(0.001, abs=0.05)
    n = fixnet_measure.calls_per_sample(sleep_1ms, 0.02)
    assert 1 <= n <= 20                        # at most 20 calls of at least 1 ms in 20 ms
    assert fixnet_measure.calls_per_sample(lambda: None, 1e-12) == 1     # never below 1


# --------------------------------------------------------------------------- int16 runners
def _args(*argv):
    return peerbench("cli").parse_args(["--models", "none", "--micro", "none", *argv])


def test_the_int16_runners_are_listed_and_selected_by_int16_and_only():
    catalog, run = peerbench("catalog"), peerbench("run")
    assert catalog.INT16_KEYS == ["fixnet_int16", "tflite_16x8"]
    assert set(catalog.INT16_KEYS) <= set(catalog.RUNNER_KEYS)
    assert not set(catalog.INT16_KEYS) & set(catalog.INT8_KEYS + catalog.DEPLOY_PEERS)
    for k in catalog.INT16_KEYS:
        assert k in catalog.SHORT and k in catalog.LABELS
    assert "fixnet_int16, tflite_16x8" in peerbench("cli").EPILOG
    default = run.wanted_runners(_args())
    assert not set(catalog.INT16_KEYS) & set(default)              # opt-in: --int16 or --only
    assert run.wanted_runners(_args("--int16")) == (
        catalog.INT8_KEYS + catalog.INT16_KEYS + catalog.TFLITE_FLOAT_KEYS)
    assert run.wanted_runners(_args("--only", "fixnet_int16,tflite_16x8")) == [
        "fixnet_int8", "fixnet_int16", "tflite_16x8"]
    assert run.wanted_runners(_args("--only", "tflite_16x8")) == ["fixnet_int8", "tflite_16x8"]
    assert "tflite_16x8" not in run.wanted_runners(_args("--int16", "--skip", "tflite_16x8"))


class _FakeQuantized:
    """A stand-in QuantizedModel: int16 input, outputs of the given types; predict records its
    calls (or raises `error`)."""

    def __init__(self, out_bits, error=None):
        from fixnet.quant.qparams import QParams
        self.input_qparams = [QParams(1 / 4096, 0, 16)]
        self.output_qparams = [QParams(1 / 256, -128, 8) if b == 8 else QParams(1 / 32768, 0, 16)
                               for b in out_bits]
        self.error, self.calls = error, []

    def predict(self, x, output="float32", **kw):
        self.calls.append((x.dtype, x.shape, output))
        if self.error is not None:
            raise self.error
        return np.zeros((x.shape[0], 10), np.int16 if output == "int16" else np.int8)


class _FakeFloat:
    def __init__(self, qm=None, error=None):
        self.qm, self.error, self.asked = qm, error, []

    def quantize(self, calibration, config=None, **settings):
        self.asked.append(settings)
        if self.error is not None:
            raise self.error
        return self.qm


def _inputs():
    import pathlib
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (6, 8)).astype(np.float32)
    return peerbench("models").ModelInputs("fake", pathlib.Path("fake.h5"),
                                           pathlib.Path("fake.tflite"), x, x[:4],
                                           np.zeros((6, 10), np.float32), None, None, [1], 4,
                                           "cnn")


def test_fixnet_int16_quantizes_with_activations_int16_and_runs_on_int16_codes():
    fr = peerbench("runners.fixnet_runners")
    m = _inputs()
    qm = _FakeQuantized([8])                  # a softmax output may stay int8
    fm = _FakeFloat(qm)
    r = fr.fixnet_int16_runner(m, fm)
    assert fm.asked == [{"activations": "int16"}]
    assert r.key == "fixnet_int16" and qm.calls == [(np.dtype(np.int16), (1, 8), "int8")]
    assert r.out_q == (1 / 256, -128) and "output='int8'" in r.note
    r.calls[4]()
    assert qm.calls[-1] == (np.dtype(np.int16), (4, 8), "int8")
    # codes of one type out; both types among the outputs: floats
    assert fr.codes_runner("k", "k", _FakeQuantized([16]), m, 1).out_q == (1 / 32768, 0)
    both = fr.codes_runner("k", "k", _FakeQuantized([16, 8]), m, 1)
    assert both.out_q == [None, None] and "output='float32'" in both.note


def test_fixnet_int16_failures_say_which_call_failed():
    fr = peerbench("runners.fixnet_runners")
    m = _inputs()
    with pytest.raises(RuntimeError, match=r"quantize\(calib, activations='int16'\) raised "
                                           r"OverflowRiskError: layer 'x'"):
        fr.fixnet_int16_runner(m, _FakeFloat(error=fixnet.OverflowRiskError("layer 'x'")))
    dtype_error = ValueError("Buffer dtype mismatch, expected 'const int8_t' but got 'short'")
    with pytest.raises(RuntimeError, match="all-int16 model raised ValueError: Buffer dtype "
                                           ".*no int16 kernel for that layer yet"):
        fr.fixnet_int16_runner(m, _FakeFloat(_FakeQuantized([16], error=dtype_error)))


def test_tflite_16x8_input_codes_round_half_away_from_zero_and_clip():
    int16_codes = peerbench("runners.tflite").int16_codes
    detail = {"dtype": np.int16, "quantization": (0.5, 0)}
    x = np.array([0.25, -0.25, 0.75, -0.74, 20000.0, -20000.0], np.float32)
    q = int16_codes(x, detail)
    assert q.dtype == np.int16 and q.tolist() == [1, -1, 2, -1, 32767, -32768]
    tokens = np.array([[3, 4]], np.int64)
    assert int16_codes(tokens, {"dtype": np.int32, "quantization": (0.0, 0)}).dtype == np.int32


def test_the_int16_table_sets_each_engines_int16_beside_its_int8():
    tables = peerbench("tables")

    def ok(us, sqnr):
        return {"label": "x", "status": "ok", "note": "", "sqnr_db": sqnr,
                "batches": {"1": {"median_us": us, "fixnet_over": None, "gmacs": 1.0}}}
    failed = {"label": "x", "status": "failed: RuntimeError: boom", "note": "failed: boom"}
    models = {
        "a": {"kind": "cnn", "runners": {"fixnet_int8": ok(100.0, 20.0), "fixnet_int16": ok(
            130.0, 30.0), "tflite_xnnpack": ok(200.0, 19.0), "tflite_16x8": ok(2600.0, 25.0)}},
        "b": {"kind": "rnn", "runners": {"fixnet_int8": ok(10.0, 40.0),
                                         "fixnet_int16": failed, "tflite_16x8": failed}},
        "c": {"kind": "cnn", "runners": {"fixnet_int8": ok(10.0, 40.0)}},    # no int16 runner
    }
    ((title, header, rows, notes),) = tables.int16_tables(models, 1)
    assert "batch 1" in title and [r[0] for r in rows] == ["a", "b"]
    row = dict(zip(header, rows[0]))
    assert row["fixnet int16 / int8"] == "1.30x" and row["TFLite 16x8 / XNNPACK int8"] == "13.0x"
    assert row["fixnet int16 / TFLite 16x8"] == "0.05x"
    assert (row["SQNR fixnet int16"], row["SQNR TFLite 16x8"]) == ("30.0", "25.0")
    row = dict(zip(header, rows[1]))
    assert row["fixnet int16"] == "failed" and row["fixnet int16 / int8"] == ""
    assert "fixnet int16 failed on b: failed: boom" in notes
    assert "TFLite 16x8 failed on b: failed: boom" in notes
    # the int16 runners have this table only, not columns in the int8 tables
    results = {"machine": {"fixnet_isa": "avx2"}, "models": {"a": dict(
        models["a"], what="", macs_per_sample=1000, accuracy_samples=10)}}
    keys = peerbench("catalog").RUNNER_KEYS
    titles = [t[0] for t in tables.tables(results, keys, [1])]
    assert titles[-1] == title
    for t, header, _, _ in tables.tables(results, keys, [1])[:-1]:
        assert not any("int16" in h or "16x8" in h for h in header), t

"""bench/peerbench/ (the code of bench/peers.py) has no side effect at import, and times with
fixnet bench's clock (fixnet/cli/measure.py).

Importing any of its modules, in a fresh Python with arguments it does not know in sys.argv,
must not parse those arguments, change os.environ, sys.argv or sys.path, try to import a
peer runtime (TensorFlow, Keras, ONNX Runtime, tf2onnx, LiteRT: tried, not only imported, so
the check means something where they are not installed), write, create, rename or delete a
file, or start a process. The command line's module imports nothing but the standard library,
so that main() sets the thread variables before NumPy starts its BLAS pool."""
import json
import os
import subprocess
import sys
import time

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

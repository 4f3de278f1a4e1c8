"""bench/peers.py without TensorFlow: TFLite from `ai_edge_litert` (the LiteRT runtime a
Raspberry Pi user installs) on the .tflite files stored in models/, and the peers that need
TensorFlow (the layer benches, ONNX Runtime through tf2onnx) left out with a message.

The selection order is tested here with stand-in modules (this Python has neither TensorFlow
nor LiteRT); the real run is skipped unless `ai_edge_litert` is installed (docs/raspberry-pi.md
says where it was run)."""
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from conftest import PEERS, peerbench

import fixnet

MICRO = peerbench("catalog").MICRO
Unavailable = peerbench("runners.base").Unavailable


@pytest.fixture()
def tflite(monkeypatch):
    """runners/tflite.py, with no TensorFlow imported yet as far as it knows (the cache of an
    earlier import is cleared for the test)."""
    monkeypatch.setattr(peerbench("runners.base"), "_TF", None)
    return peerbench("runners.tflite")


def _fake_runtime(monkeypatch, package, version):
    """Register a stand-in `package` with an `interpreter` module (Interpreter, OpResolverType)."""
    pkg = types.ModuleType(package)
    pkg.__path__ = []
    pkg.__version__ = version
    interp = types.ModuleType(package + ".interpreter")

    class Interpreter:
        pass

    class OpResolverType:
        BUILTIN_REF = 2

    interp.Interpreter, interp.OpResolverType = Interpreter, OpResolverType
    pkg.interpreter = interp
    monkeypatch.setitem(sys.modules, package, pkg)
    monkeypatch.setitem(sys.modules, package + ".interpreter", interp)
    return interp


def test_without_tensorflow_auto_takes_ai_edge_litert_and_names_its_version(tflite, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)        # `import tensorflow` fails
    lit = _fake_runtime(monkeypatch, "ai_edge_litert", "9.8.7")
    _fake_runtime(monkeypatch, "tflite_runtime", "1.0")
    interpreter, resolver, source = tflite.tflite_interpreter_api("auto", 1)
    assert interpreter is lit.Interpreter and resolver is lit.OpResolverType
    assert source == "ai_edge_litert 9.8.7"


def test_without_tensorflow_and_litert_auto_falls_back_to_tflite_runtime(tflite, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    rt = _fake_runtime(monkeypatch, "tflite_runtime", "2.14.0")
    interpreter, _, source = tflite.tflite_interpreter_api("auto", 1)
    assert interpreter is rt.Interpreter and source == "tflite_runtime 2.14.0"


def test_no_tflite_at_all_is_reported_as_not_installed_naming_each_source(tflite, monkeypatch):
    for name in ("tensorflow", "ai_edge_litert", "tflite_runtime"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(Unavailable, match=r"^not installed \(tensorflow, ai_edge_litert, "
                                                r"tflite_runtime\)$"):
        tflite.tflite_interpreter_api("auto", 1)
    with pytest.raises(Unavailable, match=r"^not installed \(ai_edge_litert\)$"):
        tflite.tflite_interpreter_api("ai_edge_litert", 1)


def _run_peers(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, PEERS, "--models", "mlp_seq_k3", "kws_dscnn_k3",
                        "--rounds", "3", "--warmup", "2", "--sample-ms", "0.2",
                        "--json", str(out)] + list(args),
                       capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, json.loads(out.read_text())


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed: this checks a run without it")
def test_without_tensorflow_the_layer_benches_and_onnx_are_skipped_with_one_message(tmp_path):
    """(and --threads reaches fixnet too)"""
    stdout, res = _run_peers(tmp_path, "--skip", "tflite_xnnpack,tflite_builtin,tflite_ref",
                             "--threads", "2")
    # every layer bench, named once in one line
    assert f"layer benches ({', '.join(MICRO)}) skipped" in stdout
    assert "conv3x3" in MICRO and "dense1024" in MICRO
    assert set(res["models"]) == {"mlp_seq_k3", "kws_dscnn_k3"}      # no layer bench
    for m in res["models"].values():
        assert m["runners"]["ort_int8"]["status"] == "not installed"
    # the reason is printed once, not once per model
    reason = res["models"]["mlp_seq_k3"]["runners"]["ort_int8"]["note"]
    assert stdout.count(reason) == 1 and "pip install onnxruntime" in reason
    # fixnet gets the peers' thread budget
    for m in res["models"].values():
        assert m["runners"]["fixnet_int8"]["note"].endswith("num_threads=2)")


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                    reason="ai_edge_litert is not installed (pip install ai-edge-litert)")
def test_ai_edge_litert_runs_the_stored_tflite_files(tmp_path):
    _, res = _run_peers(tmp_path, "--tflite", "ai_edge_litert", "--micro", "none")
    for name, m in res["models"].items():
        runners = m["runners"]
        fixnet_sqnr = runners["fixnet_int8"]["sqnr_db"]
        for key in ("tflite_xnnpack", "tflite_builtin", "tflite_ref"):
            r = runners[key]
            assert r["status"] == "ok", (name, key, r)
            assert r["note"].startswith("ai_edge_litert ")
            assert r["batches"]["1"]["median_us"] > 0
            # TFLite's int8 of the same model is about as close to Keras float as fixnet's
            assert abs(r["sqnr_db"] - fixnet_sqnr) < 10, (name, key, r["sqnr_db"], fixnet_sqnr)
    assert "ai_edge_litert" in res["machine"]["versions"]

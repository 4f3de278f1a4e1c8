"""bench/peers.py's bookkeeping (bench/peerbench/): the 1 dB counting rule, issue 9's bars, the
Markdown table, and a run without any peer installed (this Python has no TensorFlow / ONNX
Runtime, or the run is told to skip them)."""
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import PEERS, peerbench

import fixnet

accuracy = peerbench("accuracy")
verdicts = peerbench("verdicts")


def _runner(sqnr, fixnet_over=None, status="ok"):
    r = {"label": "x", "status": status, "sqnr_db": sqnr, "batches": {}}
    if fixnet_over is not None:
        r["batches"]["1"] = {"fixnet_over": fixnet_over, "median_us": 10.0, "gmacs": 1.0}
    return r


def _model(kind="cnn", **runners):
    return {"kind": kind, "what": "", "macs_per_sample": 1000, "accuracy_samples": 10,
            "runners": runners}


def test_a_peer_more_than_1_db_below_the_best_peer_does_not_count():
    runners = {"fixnet_int8": _runner(50.0, 1.0), "tflite_xnnpack": _runner(40.0, 2.0),
               "tflite_builtin": _runner(38.9, 0.5), "tflite_ref": _runner(39.5, 0.2),
               "ort_int8": _runner(39.0, 0.8)}
    best = accuracy.apply_counting_rule(runners)
    assert best == 40.0                           # fixnet and the reference kernels are not peers
    assert runners["tflite_xnnpack"]["counts"] and runners["ort_int8"]["counts"]
    assert not runners["tflite_builtin"]["counts"]            # 1.1 dB below
    assert runners["tflite_ref"]["counts"] and runners["fixnet_int8"]["counts"]


def test_bars_skip_peers_that_do_not_count_and_take_the_geometric_mean():
    results = {"machine": {"fixnet_isa": "avx512vnni"}, "settings": {"accuracy_samples": 10},
               "models": {
                   "a": _model(fixnet_int8=_runner(40, 1.0), tflite_xnnpack=_runner(40, 2.0),
                               tflite_builtin=_runner(40, 0.9), ort_int8=_runner(30, 3.0)),
                   "b": _model(fixnet_int8=_runner(40, 1.0), tflite_xnnpack=_runner(40, 0.5),
                               tflite_builtin=_runner(40, 1.2), ort_int8=_runner(40, 0.7)),
                   "c": _model(fixnet_int8=_runner(30, 1.0), tflite_xnnpack=_runner(40, 1.3),
                               tflite_builtin=_runner(38, 0.5), ort_int8=_runner(40, 0.9)),
               }}
    for res in results["models"].values():
        res["best_peer_sqnr_db"] = accuracy.apply_counting_rule(res["runners"])
    v = verdicts.verdicts(results)
    assert v["tflite_builtin"]["slower"] == ["b 1.20x"]
    assert v["tflite_builtin"]["not_counted"] == ["c"] and not v["tflite_builtin"]["holds"]
    assert v["ort_int8"]["not_counted"] == ["a"] and v["ort_int8"]["holds"]
    assert v["xnnpack"]["geomean"] == pytest.approx(math.exp((math.log(2.0) + math.log(0.5)
                                                              + math.log(1.3)) / 3))
    assert v["xnnpack"]["worst_model"] == "a" and v["xnnpack"]["above_1.25"] == ["a 2.00x",
                                                                                "c 1.30x"]
    assert v["fixnet_less_accurate"] == ["c 30.0 dB vs 40.0"]
    assert "conv3x3_avx2_gmacs" not in v          # no layer bench in these results


def test_run_without_peers_writes_json_and_markdown(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    r = subprocess.run([sys.executable, PEERS, "--models", "mlp_seq_k3", "--micro", "none",
                        "--rounds", "3", "--warmup", "2", "--sample-ms", "0.2",
                        "--skip", "tflite_xnnpack,tflite_builtin,tflite_ref,ort_int8",
                        "--json", str(out_json), "--markdown", str(out_md)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out_json.read_text())
    m = res["models"]["mlp_seq_k3"]
    assert m["macs_per_sample"] == 64 * 64 + 64 * 32 + 32 * 10
    f = m["runners"]["fixnet_int8"]
    assert f["status"] == "ok" and f["batches"]["1"]["fixnet_over"] == 1.0
    assert f["sqnr_db"] > 30 and f["top1_agree_keras"] > 0.95      # int8 near Keras float
    assert m["accuracy_samples"] == 360
    md = out_md.read_text()
    assert "| mlp_seq_k3 | 6.5 k |" in md and "--models mlp_seq_k3" in md
    assert res["machine"]["fixnet_isa"] in md

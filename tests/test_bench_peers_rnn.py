"""bench/peers.py on the recurrent fixtures, without TensorFlow: which files `--models rnn` picks,
their inputs and Keras goldens (several outputs, integer tokens), the per-sample TFLite call
that resets the recurrent state, the accuracy of several outputs, a fixnet int8 failure
reported in the row instead of stopping the run, and the recurrent tables."""
import argparse
import io

import numpy as np
import pytest

from conftest import peerbench, sqnr_db

import fixnet
from fixnet.cost import macs
from fixnet.errors import UnsupportedLayerError

WRITERS = ("k3", "tfk2")
catalog, models, accuracy = peerbench("catalog"), peerbench("models"), peerbench("accuracy")
tflite, fixnet_runners = peerbench("runners.tflite"), peerbench("runners.fixnet_runners")
model_bench, measure = peerbench("model_bench"), peerbench("measure")
tables, verdicts = peerbench("tables"), peerbench("verdicts")
Runner = peerbench("runners.base").Runner
MODELS_DIR = catalog.MODELS_DIR


def test_the_rnn_group_and_pattern_pick_every_recurrent_fixture_and_the_default_none():
    expected = {f"{f}_{w}" for f in catalog.RNN_FAMILIES for w in WRITERS}
    assert len(expected) == 20
    assert {p.stem for p in models.model_paths(["rnn"])} == expected
    assert {p.stem for p in models.model_paths(["rnn_*"])} == expected
    # a family name is both writers of that family, not its longer-named relatives
    assert [p.stem for p in models.model_paths(["rnn_gru"])] == ["rnn_gru_k3", "rnn_gru_tfk2"]
    assert not any(p.stem.startswith("rnn_") for p in models.model_paths(None))
    assert len(models.model_paths(["mlp", "rnn_gru", "mlp_seq_k3"])) == 6   # no duplicates


def test_fixture_inputs_of_several_outputs_and_of_integer_tokens():
    m = models.ModelInputs.fixture(MODELS_DIR / "rnn_variants_tfk2.h5", [1], 12)
    d = np.load(MODELS_DIR / "rnn_variants_tfk2.npz")
    assert m.kind == "rnn" and len(m.keras_outs) == len(d["keras_output_names"]) == 6
    np.testing.assert_array_equal(m.keras_outs[5], d["keras_float_5"][:12])
    assert "killed by signal 11" in m.tflite_error            # the converter crashed there
    assert m.x[1].dtype == np.float32 and m.x[12].shape == (12, 10, 8)

    t = models.ModelInputs.fixture(MODELS_DIR / "rnn_text_k3.h5", [1, 4], None)
    assert t.x[4].dtype == np.int32 and t.x_calib.dtype == np.int32    # token ids stay ids
    np.testing.assert_array_equal(t.x[4], np.load(MODELS_DIR / "rnn_text_k3.npz")
                                  ["x_test"][:4])
    assert t.acc == 360 and len(t.keras_outs) == 1
    lstm = models.ModelInputs.fixture(MODELS_DIR / "rnn_lstm_tfk2.h5", [1], 5)
    assert lstm.tflite_error is None and lstm.tflite.exists() and lstm.tflite_x[5].dtype == np.int8


class _StatefulInterpreter:
    """A stand-in for a batch-1 TFLite model with a fused recurrent op: its output is the input
    plus a state that every invoke() adds the input to, until reset_all_variables()."""

    def __init__(self):
        self.state, self.x, self.resets = 0.0, None, 0

    def reset_all_variables(self):
        self.state = 0.0
        self.resets += 1

    def set_tensor(self, index, x):
        assert index == 0 and x.shape[0] == 1
        self.x = x.copy()

    def invoke(self):
        self.state = self.state + self.x

    def get_tensor(self, index):
        return (self.state * (1 if index == 1 else -1)).copy()


def test_a_sequence_call_resets_the_state_before_every_sample_and_stacks_outputs():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    interp = _StatefulInterpreter()
    call = tflite._tflite_seq_call(interp, 0, [1], x)
    np.testing.assert_array_equal(call(), x)          # each sample from a zero state
    np.testing.assert_array_equal(call(), x)          # and again: no state left from call 1
    assert interp.resets == 8
    y, neg = tflite._tflite_seq_call(interp, 0, [1, 2], x)()        # several outputs: a list
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(neg, -x)


def test_accuracy_of_several_outputs_is_the_worst_output_and_top1_of_output_0():
    rng = np.random.default_rng(0)
    k0 = rng.random((20, 10))
    k1 = rng.standard_normal((20, 4, 8))
    m = models.ModelInputs("multi", None, None, rng.random((20, 3, 2)), rng.random((5, 3, 2)),
                          [k0, k1], None, None, [1], None, "rnn")
    q0, q1 = (0.01, -3), (0.05, 2)                 # int8 outputs, one scale per output
    c0 = np.clip(np.round(k0 / q0[0]) + q0[1], -128, 127).astype(np.int8)
    c1 = np.clip(np.round(k1 / q1[0]) + q1[1], -128, 127).astype(np.int8)
    c0[0] = c0[0][::-1]                            # sample 0: another top-1 (almost surely)
    r = Runner("fixnet_int8", "x", {20: lambda: [c0, c1]}, out_q=[q0, q1])
    sq, top1, raw, per = accuracy.accuracy(r, m)
    d0 = (c0.astype(np.float64) - q0[1]) * q0[0]
    d1 = (c1.astype(np.float64) - q1[1]) * q1[0]
    assert per == pytest.approx([sqnr_db(k0, d0), sqnr_db(k1, d1)])
    assert sq == min(per) and raw[0] is c0
    assert top1 == pytest.approx(np.mean(d0.argmax(1) == k0.argmax(1))) and top1 < 1
    bad = Runner("ort_int8", "x", {20: lambda: [d0]})
    with pytest.raises(ValueError, match="1 output"):
        accuracy.accuracy(bad, m)


def _args(**kw):
    a = dict(threads=1, tflite="auto", rounds=3, sample_ms=0.2, warmup=1, micro_isa_list=[])
    a.update(kw)
    return argparse.Namespace(**a)


def _bench(name, want):
    from rich.console import Console

    m = models.ModelInputs.fixture(MODELS_DIR / f"{name}.h5", [1], 40)
    console = Console(file=io.StringIO(), width=200)
    return model_bench.bench_model(m, _args(), want, console, {}), console.file.getvalue()


def _refuse_int8(monkeypatch):
    def quantize(self, *a, **kw):
        raise UnsupportedLayerError("models/x.h5: cannot quantize 1 layer(s):\n"
                                    "  - 'lstm' (LSTM): not yet")
    monkeypatch.setattr(fixnet.FloatModel, "quantize", quantize)


def test_a_fixnet_int8_failure_on_a_recurrent_model_is_its_row_not_the_end(monkeypatch):
    _refuse_int8(monkeypatch)
    res, printed = _bench("rnn_lstm_k3", ["fixnet_int8", "fixnet_float"])
    f = res["runners"]["fixnet_int8"]
    assert f["status"] == "failed: UnsupportedLayerError: models/x.h5: cannot quantize 1 layer(s):"
    assert "'lstm' (LSTM)" in f["note"] and "timing the peers without it" in printed
    ref = res["runners"]["fixnet_float"]               # the float reference is still timed
    assert ref["status"] == "ok" and ref["batches"]["1"]["median_us"] > 0
    assert ref["batches"]["1"]["fixnet_over"] is None          # no baseline to divide by
    assert ref["sqnr_db"] > 60 and ref["top1_agree_keras"] == 1.0
    assert res["macs_per_sample"] == macs(fixnet.load(str(MODELS_DIR / "rnn_lstm_k3.h5")).graph)
    assert res["tflite_error"].startswith("conversion: RuntimeError")
    with pytest.raises(SystemExit, match="fixnet itself failed on mlp_seq_k3"):
        _bench("mlp_seq_k3", ["fixnet_int8"])           # elsewhere it stops the run


def test_several_outputs_reach_the_row_per_output():
    res, _ = _bench("rnn_variants_tfk2", ["fixnet_int8", "fixnet_float"])
    r = res["runners"]["fixnet_float"]
    assert res["outputs"] == 6 and len(r["sqnr_db_outputs"]) == 6
    assert r["sqnr_db"] == min(r["sqnr_db_outputs"]) > 60
    f = res["runners"]["fixnet_int8"]
    if f["status"] == "ok":                # once fixnet runs these layers in int8
        assert len(f["sqnr_db_outputs"]) == 6 and f["sqnr_db"] > 15
    else:
        assert f["status"].startswith("failed: UnsupportedLayerError")


def _runner(status="ok", us=100.0, over=None, sqnr=40.0, top1=0.99, note=""):
    r = {"label": "x", "status": status, "note": note or status}
    if status == "ok":
        r.update(sqnr_db=sqnr, top1_agree_keras=top1,
                 batches={"1": {"median_us": us, "fixnet_over": over, "gmacs": 1.0}})
    return r


def test_recurrent_tables_show_times_ratios_failures_and_why():
    results = {"machine": {"fixnet_isa": "avx2"}, "models": {
        "rnn_a_k3": {"kind": "rnn", "macs_per_sample": 41280, "accuracy_samples": 360,
                     "tflite_error": "conversion: boom",
                     "runners": {
                         "fixnet_int8": _runner("failed: UnsupportedLayerError: x",
                                                note="failed: UnsupportedLayerError: x\n - 'lstm'"),
                         "tflite_xnnpack": _runner("no int8 .tflite (boom)"),
                         "tflite_f32_xnnpack": _runner("failed: RuntimeError: READ_VARIABLE"),
                         "ort_int8": _runner(us=30.0, top1=1.0)}},
        "rnn_b_tfk2": {"kind": "rnn", "macs_per_sample": 41280, "accuracy_samples": 360,
                     "tflite_error": None,
                       "runners": {
                           "fixnet_int8": _runner(us=50.0, over=1.0, sqnr=39.0),
                           "tflite_xnnpack": _runner(us=100.0, over=0.5),
                           "ort_int8": _runner(us=25.0, over=2.0, top1=None)}},
        "mlp_x_k3": {"kind": "mlp", "macs_per_sample": 1000, "accuracy_samples": 360,
                     "runners": {
            "fixnet_int8": _runner(us=1.0, over=1.0), "tflite_xnnpack": _runner(over=0.5)}}}}
    keys = ["fixnet_int8", "tflite_xnnpack", "ort_int8", "tflite_f32_xnnpack"]
    out = tables.tables(results, keys, [1])
    titles = [t for t, _, _, _ in out]
    assert titles[0].startswith("Models, batch 1") and titles[-2:] == [
        "Recurrent models, batch 1: time per call",
        "Recurrent models: output SQNR (dB) against Keras float / top-1 agreement, on 360 test "
        "samples"]
    assert "TFLite FLOAT XNNPACK" not in " ".join(out[0][1])      # CNN / MLP columns unchanged
    _, header, rows, notes = out[-2]
    assert header == ["model", "MACs/sample", "fixnet", "XNNPACK", "ORT int8",
                      "TFLite FLOAT XNNPACK"]
    assert rows[0] == ["rnn_a_k3", "41.3 k", "failed", "no int8", "30.0 us", "failed"]
    assert rows[1] == ["rnn_b_tfk2", "41.3 k", "50.0 us", "100.0 us (0.50x)", "25.0 us (2.00x)", ""]
    _, _, rows, notes = out[-1]
    assert rows[0][1:] == ["failed", "no int8", "40.0 / 100%", "failed"]
    assert rows[1][1:4] == ["39.0 / 99.0%", "40.0 / 99.0%", "40.0"]
    why = [n for n in notes if n.startswith("rnn_a_k3: ")]
    assert why == ["rnn_a_k3: no int8 .tflite, the fixture's converter failed: conversion: boom; "
                   "fixnet: failed: UnsupportedLayerError: x - 'lstm'; TFLite FLOAT XNNPACK: "
                   "failed: RuntimeError: READ_VARIABLE"]
    # issue 9's bars are about the CNN and MLP models only
    for res in results["models"].values():
        res["best_peer_sqnr_db"] = accuracy.apply_counting_rule(res["runners"])
    v = verdicts.verdicts(results)
    assert v["xnnpack"]["models"] == 1 and v["xnnpack"]["geomean"] == 0.5


def test_summarize_without_fixnet_int8_has_no_ratio():
    st = measure.summarize({"ort_int8": [1e-4, 2e-4, 3e-4]}, {"ort_int8": 5}, 2000, 1)
    assert st["ort_int8"]["fixnet_over"] is None
    assert st["ort_int8"]["median_us"] == pytest.approx(200.0)
    assert st["ort_int8"]["gmacs"] == pytest.approx(2000 / 2e-4 / 1e9)


def test_fixnet_int8_of_a_model_with_several_outputs_reads_each_output_with_its_own_scale():
    """(what rnn_variants needs once fixnet runs it in int8; layers_upsampling_k3 has one input
    and two outputs and runs in int8 today)"""
    d = np.load(MODELS_DIR / "layers_upsampling_k3.npz")
    h5 = MODELS_DIR / "layers_upsampling_k3.h5"
    m = models.ModelInputs("up", h5, None, d["x_test_0"], d["x_calib_0"],
                          [d["keras_float_0"], d["keras_float_1"]], None, None, [1], 16, "rnn")
    fm = fixnet.load(str(h5))
    (r,) = fixnet_runners.fixnet_runners(m, fm, ["fixnet_int8"])
    qm = fm.quantize(m.x_calib)
    assert r.out_q == [(float(q.scale), int(q.zero_point)) for q in qm.output_qparams]
    assert r.out_q[0] != r.out_q[1]               # two outputs, two scales
    sq, top1, raw, per = accuracy.accuracy(r, m)
    assert [y.dtype for y in raw] == [np.int8, np.int8]
    floats = qm.predict(m.x[16])                  # fixnet's own dequantization, per output
    assert per == pytest.approx([sqnr_db(k, f) for k, f in zip(m.keras_outs, floats)])
    assert min(per) > 25 and sq == min(per)

"""Recurrent layers with int16 activations (activations="int16"): the rnn steps take int16
sequences, initial states and masks and give int16 outputs and states (zero points 0), run
bit-exactly with the oracle and under checked execution, keep their overflow proof (|x| <=
32768 in the input projection; a layer whose proof fails stays int8), save and load as .fxn,
and are at least as accurate as the int16 models whose recurrent layers ran int8, and as
TFLite's 16x8 models.

The accuracy comparison over every fixture is slow (pytest -m slow); the default part runs
three fixtures that cover masks, initial and returned states, both directions, Bidirectional
merges and token ids.
"""
import os

import numpy as np
import pytest

import fixnet
from conftest import as_list, fixture_data, fixture_path, sqnr_db

WRITERS = ("k3", "tfk2")
FAMILIES = ("rnn_gru", "rnn_gru_ra0", "rnn_lstm", "rnn_simplernn", "rnn_bilstm", "rnn_stacked",
            "rnn_variants", "rnn_sensor", "rnn_text", "rnn_kws")
ALL = [f"{n}_{w}" for n in FAMILIES for w in WRITERS]
# masking, return_state, initial states, go_backwards, Bidirectional merges (rnn_variants);
# token ids (rnn_text: an Embedding folded into the GRU); a plain GRU
FAST = ["rnn_variants_k3", "rnn_text_k3", "rnn_gru_k3"]
# the noise of rounding on 360 test sequences: the int16 model's SQNR moves by up to ~1 dB
# between quarters of x_test when only the rounding inside the network changes
NOISE_DB = 0.1

_MODELS = {}


def _outs(v):
    return v if isinstance(v, list) else [v]


def quantized(name, n_calib, **settings):
    key = (name, n_calib, repr(sorted(settings.items())))
    if key not in _MODELS:
        d = fixture_data(name)
        fm = fixnet.load(fixture_path(name))
        _MODELS[key] = (fm.quantize(d["x_calib"][:n_calib], progress=False, **settings), d)
    return _MODELS[key]


def rnn_layers(qm):
    return sorted({s.layer for s in qm.steps if s.op == "rnn"})


@pytest.mark.parametrize("name", FAST)
def test_rnn_steps_run_int16_bit_exactly(name, tmp_path):
    qm, d = quantized(name, 64, activations="int16")
    rnn = [s for s in qm.steps if s.op == "rnn"]
    assert rnn and all(s.bits == 16 for s in rnn) and not qm.kept_int8
    for s in rnn:                      # one type per step: every input and output is int16
        for t in s.inputs + s.outputs:
            assert qm.tensors[t].qparams.bits == 16 and qm.tensors[t].qparams.zero_point == 0
    x = d["x_test"][:24]
    got, oracle = _outs(qm.predict(x)), _outs(qm.predict_oracle(x))
    checked = _outs(qm.predict(x, check_overflow=True))
    for t, g, o, c in zip(qm.outputs, got, oracle, checked, strict=True):
        qp = qm.tensors[t].qparams
        assert o.dtype == qp.dtype
        np.testing.assert_array_equal(g, qp.dequantize(o))
        np.testing.assert_array_equal(c, g)
    assert qm.overflow_report().proven
    # batch 1 gives the rows of the batch
    for g, one in zip(got, _outs(qm.predict(x[5:6])), strict=True):
        np.testing.assert_array_equal(one[0], g[5])
    path = str(tmp_path / "m.fxn")
    qm.save(path)
    back = fixnet.load(path)
    assert [s.bits for s in back.steps if s.op == "rnn"] == [s.bits for s in rnn]
    for g, b in zip(got, _outs(back.predict(x)), strict=True):
        np.testing.assert_array_equal(b, g)


def test_int16_states_and_mask_follow_the_step():
    """rnn_variants' decoder reads the encoder's returned states as initial states, and the
    masked layers read the mask: all int16 tensors (one mask, made by the int16 masking
    layer)."""
    qm, _ = quantized("rnn_variants_k3", 64, activations="int16")
    by_name = {s.name: s for s in qm.steps}
    dec = next(s for s in qm.steps if s.op == "rnn" and s.n_init == 2)
    assert dec.bits == 16 and dec.init_zp == (0, 0)
    enc = next(s for s in qm.steps if s.op == "rnn" and s.return_state)
    assert enc.bits == 16 and (enc.y_zp, enc.hs_zp, enc.cs_zp) == (0, 0, 0)
    masked = [s for s in qm.steps if s.op == "rnn" and s.masked]
    assert masked and all(s.mask_zp == 0 for s in masked)
    assert len({s.inputs[-1] for s in masked}) == 1        # one mask for all
    mask = masked[0].inputs[-1]
    assert qm.tensors[mask].qparams.bits == 16
    writer = next(s for s in qm.steps if mask in s.outputs)
    assert writer.bits == 16 and writer is by_name[writer.name]


def test_rnn_whose_int16_proof_fails_stays_int8():
    """600 input features of full-scale kernel weights: 600 * 127 * 32768 >= 2^31, so int16
    inputs could wrap the input projection's int32 accumulator; with int8 inputs (x 128) it
    is proven. The layer runs int8, converted at both ends, and says why."""
    from fixnet.graph import Graph, Node
    from fixnet.quant.quantizer import quantize_graph
    rng = np.random.default_rng(0)
    U, F = 4, 600
    node = Node("wide_in", "rnn", ["x"], ["y"],
                {"cell": "gru", "units": U, "activation": {"fn": "tanh"},
                 "recurrent_activation": {"fn": "sigmoid"}, "reset_after": True},
                {"kernel": np.sign(rng.normal(size=(F, 3 * U))).astype(np.float32) * 0.01,
                 "recurrent_kernel": rng.normal(size=(U, 3 * U)).astype(np.float32),
                 "bias": np.zeros(3 * U, np.float32),
                 "recurrent_bias": np.zeros(3 * U, np.float32)},
                layer="wide_in", keras_class="GRU")
    g = Graph(["x"], ["y"], [node], name="wide_in")
    g.infer_shapes([(5, F)])
    calib = rng.uniform(-1, 1, (16, 5, F)).astype(np.float32)
    qm = quantize_graph(g, calib, activations="int16", weight_rounding="nearest", progress=False)
    (step,) = [s for s in qm.steps if s.op == "rnn"]
    assert step.bits == 8
    assert [layer for layer, _ in qm.kept_int8] == ["wide_in"]
    assert "2^31" in qm.kept_int8[0][1]
    assert qm.overflow_report().proven
    # the same layer with int16 inputs would not be proven
    assert int(np.abs(step.w_q.astype(np.int64)).sum(axis=1).max()) * 32768 >= 2 ** 31
    x = calib[:4]
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))


def _accuracy_row(name):
    """SQNR (dB, the worst output) against Keras float on all of x_test: the int16 model, the
    int16 model with its recurrent layers int8 (before rnn ran int16), TFLite 16x8 (or None)."""
    qm, d = quantized(name, 200, activations="int16")
    kept8 = quantized(name, 200, activations="int16",
                      overrides={layer: {"activations": "int8"} for layer in rnn_layers(qm)})[0]
    ref = as_list(d, "keras_float")
    x = d["x_test"]

    def sq(outs):
        return min(sqnr_db(r, o) for r, o in zip(ref, _outs(outs), strict=True))
    tfl = None
    path = fixture_path(name, ".tflite16x8.npz")
    if os.path.exists(path):
        with np.load(path) as t:
            if "tflite16x8" in t or "tflite16x8_0" in t:
                tfl = sq(as_list(t, "tflite16x8"))
    return qm, sq(qm.predict(x)), sq(kept8.predict(x)), tfl


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_int16_rnn_at_least_as_accurate(name):
    qm, s16, s_rnn8, tfl = _accuracy_row(name)
    print(f"{name}: int16 {s16:.2f} dB, with int8 recurrent layers {s_rnn8:.2f}, "
          f"TFLite 16x8 {tfl if tfl is None else round(tfl, 2)}")
    assert all(s.bits == 16 for s in qm.steps if s.op == "rnn")
    assert s16 >= s_rnn8 - NOISE_DB
    if tfl is not None:
        assert s16 >= tfl


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in FAST])
def test_every_fixture_runs_int16_bit_exactly(name, tmp_path):
    test_rnn_steps_run_int16_bit_exactly(name, tmp_path)

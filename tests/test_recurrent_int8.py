"""int8 recurrent models against ground truth: every recurrent fixture (models/rnn_*, made by
real Keras with both writers, with the int8 outputs of TensorFlow Lite where its converter
works and of ONNX Runtime everywhere stored beside them) quantized on its calibration set.

Issue 11's bars: output SQNR against Keras float at least the best int8 peer's on every
output; top-1 within 1 point of float on the digits sequence classifiers; kernels bit-exact
with the oracle, batch 1 equal to batch N; the overflow proof covering every recurrent layer;
.fxn save/load bit-identical. Also: every calibration method and data-free quantization give
working models, and qm.report() shows every gate and state.
"""

import numpy as np
import pytest

import fixnet
import fixnet.fxn
from conftest import as_list, by_index, fixture_data, fixture_path, fixtures, sqnr_db
from fixnet.quant.ranges import METHODS

FIXTURES = fixtures(["rnn_"])
DIGITS = [f for f in FIXTURES if f.split("_")[1] in ("gru", "lstm", "simplernn", "bilstm", "stacked")]
PEERS = ("tflite_int8", "ort_int8")
ORACLE_ROWS = 48


def _outs(v):
    return v if isinstance(v, list) else [v]


_cache = {}


def quantized(name):
    if name not in _cache:
        d = fixture_data(name)
        qm = fixnet.load(fixture_path(name)).quantize(d["x_calib"], progress=False)
        _cache[name] = qm, d
    return _cache[name]


def test_every_family_and_writer_is_here():
    assert len(FIXTURES) == 20
    assert len(DIGITS) == 12


@pytest.mark.parametrize("name", FIXTURES)
def test_int8_sqnr_at_least_the_best_peer(name):
    qm, d = quantized(name)
    got = _outs(qm.predict(d["x_test"]))
    refs = as_list(d, "keras_float")
    assert len(got) == len(refs)
    for i, (g, ref) in enumerate(zip(got, refs, strict=True)):
        peers = {p: sqnr_db(ref, v[i]) for p in PEERS for v in [by_index(d, p)] if i in v}
        assert peers, f"{name}: no peer output {i} stored"
        best = max(peers.values())
        ours = sqnr_db(ref, g)
        assert ours >= best, f"{name} output {i}: fixnet int8 {ours:.2f} dB < best peer {peers}"


@pytest.mark.parametrize("name", DIGITS)
def test_digits_top1_within_one_point_of_float(name):
    qm, d = quantized(name)
    y = d["y_test"]
    acc_int8 = np.mean(qm.predict(d["x_test"]).argmax(axis=1) == y) * 100
    acc_float = np.mean(d["keras_float"].argmax(axis=1) == y) * 100
    assert abs(acc_int8 - acc_float) <= 1.0, (name, acc_int8, acc_float)


@pytest.mark.parametrize("name", FIXTURES)
def test_kernels_match_the_oracle_and_batch_one(name):
    qm, d = quantized(name)
    x = d["x_test"][:ORACLE_ROWS]
    fast = _outs(qm.predict(x, output="int8"))
    for a, b in zip(fast, _outs(qm.predict_oracle(x)), strict=True):
        np.testing.assert_array_equal(a, b)
    for i in (0, 7, ORACLE_ROWS - 1):
        for a, b in zip(_outs(qm.predict(x[i:i + 1], output="int8")), fast, strict=True):
            np.testing.assert_array_equal(a[0], b[i])


@pytest.mark.parametrize("name", FIXTURES)
def test_overflow_proof_covers_every_recurrent_layer(name):
    qm, d = quantized(name)
    rnn_layers = {s.layer for s in qm.steps if s.op == "rnn"}
    assert rnn_layers
    proven = {r["layer"] for r in qm.overflow_report() if r["op"] == "rnn" and r["proven"]}
    assert proven == rnn_layers
    # checked execution (int64 accumulators, every step's) agrees with the kernels
    x = d["x_test"][:16]
    for a, b in zip(_outs(qm.predict(x, output="int8", check_overflow=True)),
                    _outs(qm.predict(x, output="int8")), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", FIXTURES)
def test_fxn_round_trip_is_bit_identical(name, tmp_path):
    qm, d = quantized(name)
    path = tmp_path / f"{name}.fxn"
    qm.save(path)
    back = fixnet.load(path)
    x = d["x_test"][:64]
    for a, b in zip(_outs(back.predict(x, output="int8")), _outs(qm.predict(x, output="int8")),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    # saved again, the file holds the same integers and graph: only the name of the file it
    # was converted from differs
    again = tmp_path / "again.fxn"
    back.save(again)
    first, second = _entries(path), _entries(again)
    assert first["manifest.json"].pop("converted_from") == f"{name}.h5"
    assert second["manifest.json"].pop("converted_from") == f"{name}.fxn"
    assert first == second


def _entries(path):
    import io
    import json
    import zipfile
    data = path.read_bytes()
    z = zipfile.ZipFile(io.BytesIO(data[data.index(b"PK\x03\x04"):]))
    out = {n: z.read(n) for n in z.namelist()}
    out["manifest.json"] = json.loads(out["manifest.json"])
    return out


def test_overflow_risk_is_refused_naming_the_layer():
    """A recurrent kernel whose worst-case accumulator cannot be bounded below 2^31 (600 units
    of full-scale recurrent weights times int16 states) is refused, naming the layer."""
    from fixnet.graph import Graph, Node
    rng = np.random.default_rng(0)
    U, F = 600, 3
    node = Node("big", "rnn", ["x"], ["y"],
                {"cell": "simple_rnn", "units": U, "activation": {"fn": "tanh"}},
                {"kernel": rng.normal(size=(F, U)).astype(np.float32),
                 "recurrent_kernel": np.sign(rng.normal(size=(U, U))).astype(np.float32),
                 "bias": np.zeros(U, np.float32)},
                layer="big", keras_class="SimpleRNN")
    g = Graph(["x"], ["y"], [node], name="big")
    g.infer_shapes([(4, F)])
    from fixnet.quant.quantizer import quantize_graph
    with pytest.raises(fixnet.OverflowRiskError, match="'big' \\(rnn\\)"):
        quantize_graph(g, rng.normal(size=(8, 4, F)), progress=False)


@pytest.mark.parametrize("method", METHODS)
def test_every_calibration_method(method):
    d = fixture_data("rnn_lstm_tfk2")
    qm = fixnet.load(fixture_path("rnn_lstm_tfk2")).quantize(d["x_calib"], method, progress=False)
    assert sqnr_db(d["keras_float"], qm.predict(d["x_test"])) > 38.0


@pytest.mark.parametrize("name", ["rnn_gru_k3", "rnn_lstm_k3", "rnn_simplernn_tfk2", "rnn_kws_k3"])
def test_data_free(name):
    """Without calibration data, gate and state ranges come from running the layer on inputs
    drawn from the input's statistics: still close to float."""
    d = fixture_data(name)
    x = d["x_calib"]
    with pytest.warns(UserWarning, match="without calibration data"):
        qm = fixnet.load(fixture_path(name)).quantize(input_range=(float(x.min()), float(x.max())))
    assert sqnr_db(d["keras_float"], qm.predict(d["x_test"])) > 35.0


def test_report_shows_every_gate_and_state():
    qm, d = quantized("rnn_gru_ra0_k3")
    r = qm.report(d["x_test"][:50])
    whats = {x["what"] for x in r.internal}
    assert whats == {"pre-activation of gate z", "gate z", "pre-activation of gate r", "gate r",
                     "pre-activation of gate n", "gate n", "state h"}
    for x in r.internal:
        assert x["sqnr_db"] > 35.0, x
    assert "inside recurrent layers" in str(r)
    assert r.to_dict()["internal"]


@pytest.mark.parametrize("name", [f for f in FIXTURES if f.startswith("rnn_sensor")])
def test_any_length_equals_separate_runs(name):
    """The sensor LSTM reads sequences of any length: one model called at 24, 16, 5 and 24
    steps again gives, at each length, the bits of a model that only ever ran that length,
    and the oracle's; at the second stored length it stays close to Keras float."""
    qm, d = quantized(name)
    long_, short = d["x_test"][:40], d["x_test_len16"][:40]
    seq = [long_, short, long_[:, :5], long_]
    first = [qm.predict(x, output="int8") for x in seq]
    for x, got in zip(seq, first, strict=True):
        fresh = fixnet.runtime.model_from_bytes(fixnet.fxn.encode_model(qm, name))
        np.testing.assert_array_equal(fresh.predict(x, output="int8"), got)
        np.testing.assert_array_equal(qm.predict_oracle(x), got)
        np.testing.assert_array_equal(qm.predict(x[3:4], output="int8")[0], got[3])
    assert sqnr_db(d["keras_float_len16"], qm.predict(d["x_test_len16"])) > 30.0


@pytest.mark.parametrize("cell", ["simple_rnn", "gru", "lstm"])
@pytest.mark.parametrize("act, ract", [("relu", "sigmoid"), ("linear", "hard_sigmoid"),
                                       ("tanh", "tanh"), ("softsign", "sigmoid")])
def test_activation_variants(cell, act, ract):
    """Activations Keras allows beyond tanh/sigmoid: unbounded ones (relu, linear) get tables
    over their calibrated ranges, a recurrent activation that is not in [0, 1] (tanh) a
    calibrated state range. Random layers on Gaussian sequences: int8 within reach of float
    (the int8 input and output alone allow about 40 dB here), kernels equal to the oracle."""
    from fixnet import reference
    from fixnet.graph import Graph, Node
    from fixnet.ops.recurrent import GATES
    from fixnet.quant.quantizer import quantize_graph
    rng = np.random.default_rng(0)
    U, F, T, G = 12, 5, 9, GATES[cell]
    attrs = {"cell": cell, "units": U, "activation": {"fn": act},
             "recurrent_activation": {"fn": ract}, "return_sequences": True, "reset_after": True}
    w = {"kernel": (rng.normal(size=(F, G * U)) * 0.3).astype(np.float32),
         "recurrent_kernel": (rng.normal(size=(U, G * U)) * 0.2).astype(np.float32),
         "bias": (rng.normal(size=G * U) * 0.1).astype(np.float32)}
    if cell == "gru":
        w["recurrent_bias"] = (rng.normal(size=G * U) * 0.1).astype(np.float32)
    g = Graph(["x"], ["y"], [Node("r", "rnn", ["x"], ["y"], attrs, w, layer="r", keras_class=cell)])
    g.infer_shapes([(T, F)])
    x = rng.normal(size=(300, T, F)).astype(np.float32)
    qm = quantize_graph(g, x[:200], progress=False)
    ref = reference.run(g, [x[200:].astype(np.float64)])[0]
    assert sqnr_db(ref, qm.predict(x[200:])) > 28.0
    np.testing.assert_array_equal(qm.predict(x[200:], output="int8"), qm.predict_oracle(x[200:]))

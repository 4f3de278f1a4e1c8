"""TFLite's int8 UNIDIRECTIONAL_SEQUENCE_LSTM (fixnet/tflite/lstm.py): files the converter
wrote for Keras LSTMs give TFLite's reference kernels' outputs bit for bit; the step's run
equals its oracle (a transcription of lstm_eval.cc's integer LSTM), also on inputs that drive
the gates into saturation; the model saves to .fxn; the LSTM variants fixnet does not run are
refused, naming the op and why."""
import dataclasses
import glob
import os

import numpy as np
import pytest

import fixnet
from conftest import fixture_path
from fixnet.tflite import read_tflite
from fixnet.tflite.convert import UnsupportedTfliteError, convert
from fixnet.tflite.lstm import TfliteLstmStep, _gate_oracle, gate_multiplier, lstm_reference

import tflite  # noqa: E402,F401  (the test extra's parser: a missing one fails here, not skips)

LSTM_DIR = os.path.join(os.path.dirname(fixture_path("x")), "tflite", "lstm")
# models/make_tflite_lstm_fixtures.py: digits read as 8 steps of 8 features
CONVERTED = sorted(os.path.basename(p)[:-len(".tflite")]
                   for p in glob.glob(os.path.join(LSTM_DIR, "*.tflite")))
# models/make_recurrent_models.py's tf_keras fixtures whose every op fixnet runs (the LSTM,
# its last step taken by STRIDED_SLICE; rnn_kws: a Conv1D before it; rnn_stacked: two LSTMs)
RECURRENT = ["rnn_lstm_tfk2", "rnn_stacked_tfk2", "rnn_sensor_tfk2", "rnn_kws_tfk2"]


def lstm_fixture(name):
    with np.load(os.path.join(LSTM_DIR, name + ".npz")) as z:
        return {k: z[k] for k in z.files}


def load(name):
    return fixnet.load(os.path.join(LSTM_DIR, name + ".tflite"))


def test_the_fixtures_exist_and_hold_the_fused_op():
    assert len(CONVERTED) >= 4
    for name in CONVERTED:
        ops = [str(o) for o in lstm_fixture(name)["ops"]]
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops, (name, ops)


@pytest.mark.parametrize("name", CONVERTED)
def test_converted_lstm_gives_tflite_reference_outputs_bit_for_bit(name):
    d = lstm_fixture(name)
    qm = load(name)
    assert any(s.op == "tflite_lstm" for s in qm.steps)
    got = qm.predict(d["x"], output="int8")
    assert got.shape == d["ref"].shape
    np.testing.assert_array_equal(got, d["ref"])        # every value


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_fixtures_give_tflite_reference_outputs_bit_for_bit(name):
    qm = fixnet.load(fixture_path(name, ".tflite"))
    with np.load(fixture_path(name, ".npz")) as z:
        x, want, kernels = z["tflite_input_int8"], z["tflite_int8_raw"], str(z["tflite_kernels"])
    assert kernels == "BUILTIN_REF"
    np.testing.assert_array_equal(qm.predict(x, output="int8"), want)


def lstm_steps(qm):
    steps = [s for s in qm.steps if isinstance(s, TfliteLstmStep)]
    assert steps
    return steps


@pytest.mark.parametrize("name", ["digits_lstm_seq", "digits_lstm_centred", "digits_lstm_stacked"])
def test_step_run_equals_its_oracle_also_in_saturation(name):
    """The step's run (float64 products, activation tables) against its oracle (int64, the
    gemmlowp functions) on the fixture's inputs, on random codes, and on every input code at
    its extremes, with the weights scaled up so that the gates and the cell saturate."""
    qm = load(name)
    rng = np.random.default_rng(0)
    for step in lstm_steps(qm):
        steps, features = step.steps, step.params["w_x"].shape[2]
        xs = [rng.integers(-128, 128, size=(16, steps, features)).astype(np.int8),
              np.full((2, steps, features), 127, np.int8),
              np.full((2, steps, features), -128, np.int8)]
        if step is lstm_steps(qm)[0]:
            xs.append(lstm_fixture(name)["x"][:40])
        # x16 on every gate product, and a cell clip of 1.5 (in 2^cell_shift units)
        loud_params = dict(step.params, s_x=step.params["s_x"] + 4, s_h=step.params["s_h"] + 4,
                           cell_clip=3 << (-step.params["cell_shift"] - 1))
        loud = TfliteLstmStep(step.name, step.layer, step.inputs, step.outputs, loud_params,
                              steps)
        for s in (step, loud):
            for x in xs:
                np.testing.assert_array_equal(s.run(x), s.oracle([x])[0])
        # the loud step's gates do reach the int16 clamps (else this test proves less)
        h = rng.integers(-128, 128, size=(16, step.params["w_h"].shape[2]))
        pre = np.array([_gate_oracle(loud_params, g, xs[0][:, 0].astype(np.int64), h)
                        for g in range(4)])
        assert np.isin(pre, [-32768, 32767]).mean() > 0.2


@pytest.mark.parametrize("name", ["digits_lstm_last", "digits_lstm_stacked"])
def test_model_oracle_checked_run_overflow_proof_and_fxn_agree(name, tmp_path):
    qm = load(name)
    x = lstm_fixture(name)["x"][:32]
    got = qm.predict(x, output="int8")
    np.testing.assert_array_equal(qm.predict_oracle(x), got)
    np.testing.assert_array_equal(qm.predict(x, output="int8", check_overflow=True), got)
    assert qm.overflow_report().proven
    path = tmp_path / f"{name}.fxn"
    qm.save(path)
    back = fixnet.load(path)
    assert any(isinstance(s, TfliteLstmStep) for s in back.steps)
    np.testing.assert_array_equal(back.predict(x, output="int8"), got)
    np.testing.assert_array_equal(back.predict(x), qm.predict(x))


def test_state_starts_at_the_output_states_zero_point_and_is_not_kept_between_calls():
    """TFLite resets an int8 variable tensor to its zero point; fixnet starts every predict
    there (a Keras LSTM's zero state), whatever ran before."""
    name = "digits_lstm_seq"
    qm = load(name)
    d = lstm_fixture(name)
    first = qm.predict(d["x"][:5], output="int8")
    qm.predict(d["x"][5:50], output="int8")
    np.testing.assert_array_equal(qm.predict(d["x"][:5], output="int8"), first)
    step = lstm_steps(qm)[0]
    zp = step.params["state_zp"]
    x = d["x"][:3].astype(np.int64)
    h0 = np.full((3, step.params["w_h"].shape[2]), zp, np.int8)
    c0 = np.zeros((3, step.params["w_x"].shape[1]), np.int16)
    np.testing.assert_array_equal(lstm_reference(x, step.params, h0, c0), first[:3])


def test_gate_multiplier_is_the_float32_product_over_2_to_the_minus_12():
    # float32(w * x) * 4096, then QuantizeMultiplier: e.g. 0.5 * 2^-12 -> 0.5 -> 2^30, shift 0
    assert gate_multiplier(np.float32(0.5), np.float32(2.0 ** -12)) == (2 ** 30, 0)
    w, x = np.float32(0.0123), np.float32(0.00392157)
    m, s = gate_multiplier(w, x)
    assert abs(m * 2.0 ** (s - 31) - float(np.float32(w * x)) * 4096) < 2 ** -31 * 2 ** s


# --- what is refused ------------------------------------------------------------------------

def edited(name, **changes):
    """The fixture read, its first LSTM operator changed: ``inputs`` {position: tensor index},
    ``options`` {field: value}."""
    m = read_tflite(os.path.join(LSTM_DIR, name + ".tflite"))
    ops = list(m.operators)
    k = next(i for i, op in enumerate(ops) if op.op == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    op = ops[k]
    inputs = list(op.inputs)
    for pos, idx in changes.get("inputs", {}).items():
        inputs[pos] = idx if idx is None or idx < 0 else op.inputs[idx]
    ops[k] = dataclasses.replace(op, inputs=tuple(inputs),
                                 options=dict(op.options, **changes.get("options", {})))
    return dataclasses.replace(m, operators=tuple(ops))


@pytest.mark.parametrize("changes, reason", [
    ({"inputs": {1: -1, 5: -1, 12: -1}}, "CIFG"),
    ({"inputs": {9: 13, 10: 13, 11: 13}}, "peephole"),
    ({"inputs": {16: 5}}, "projection"),
    ({"inputs": {20: 13, 21: 13, 22: 13, 23: 13}}, "layer normalization"),
    ({"options": {"time_major": True}}, "time_major"),
    ({"options": {"fused_activation_function": "RELU"}}, "activation RELU"),
    ({"inputs": {2: 0}}, "not a float or hybrid|weights|fit"),
])
def test_lstm_variants_fixnet_does_not_run_are_refused_naming_the_op_and_why(changes, reason):
    with pytest.raises(UnsupportedTfliteError) as e:
        convert(edited("digits_lstm_seq", **changes))
    msg = str(e.value)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in msg
    assert any(r in msg for r in reason.split("|")), msg
    assert isinstance(e.value, fixnet.UnsupportedLayerError)


def test_a_float_lstm_is_refused():
    """A float LSTM (float32 input and weights), as the file would hold it unquantized: the
    fixture's tensors retyped."""
    m = read_tflite(os.path.join(LSTM_DIR, "digits_lstm_seq.tflite"))
    op = next(op for op in m.operators if op.op == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    tensors = list(m.tensors)
    for i in op.inputs[1:9]:
        tensors[i] = dataclasses.replace(tensors[i], type="FLOAT32", quantization=None)
    with pytest.raises(UnsupportedTfliteError, match="float or hybrid"):
        convert(dataclasses.replace(m, tensors=tuple(tensors)))

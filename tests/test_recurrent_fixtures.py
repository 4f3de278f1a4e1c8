"""The recurrent fixtures of models/make_recurrent_models.py (issue 11, item 5).

What can be checked without a loader for recurrent layers: every fixture exists for both
writers with its files, its .npz has the documented keys with consistent shapes, the digits
sequence classifiers are accurate in Keras float, and the stored int8 peer outputs
(TFLite / ONNX Runtime) are finite, shaped like the float outputs, and their agreement and
SQNR against Keras float are printed (run with -s to see them).
"""
import os

import h5py
import numpy as np
import pytest

from conftest import as_list, fixture_data, fixture_path, sqnr_db

DIGIT_SEQ = ("rnn_gru", "rnn_gru_ra0", "rnn_lstm", "rnn_simplernn", "rnn_bilstm", "rnn_stacked")
NAMES = DIGIT_SEQ + ("rnn_variants", "rnn_sensor", "rnn_text", "rnn_kws")
WRITERS = {"k3": "keras3", "tfk2": "tfkeras2"}
CASES = [f"{n}_{w}" for n in NAMES for w in WRITERS]
# recurrent layer class names that must appear in each model's config
LAYERS = {
    "rnn_gru": {"GRU"}, "rnn_gru_ra0": {"GRU"}, "rnn_lstm": {"LSTM"}, "rnn_simplernn": {"SimpleRNN"},
    "rnn_bilstm": {"Bidirectional", "LSTM"}, "rnn_stacked": {"LSTM"},
    "rnn_variants": {"Masking", "Bidirectional", "LSTM", "GRU", "SimpleRNN", "RepeatVector",
                     "TimeDistributed"},
    "rnn_sensor": {"LSTM"}, "rnn_text": {"Embedding", "GRU"}, "rnn_kws": {"Conv1D", "LSTM"},
}


def peer_outputs(d, key, n):
    if n == 1:
        return [d.get(key)]
    return [d.get(f"{key}_{i}") for i in range(n)]


def class_names(path):
    import json
    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node:
                found.add(node["class_name"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(cfg)
    return found


@pytest.mark.parametrize("base", CASES)
def test_files_and_keys(base):
    name, suffix = base.rsplit("_", 1)
    assert os.path.getsize(fixture_path(base)) > 1000
    if suffix == "k3":
        assert os.path.getsize(fixture_path(base, ".keras")) > 1000
    d = fixture_data(base)
    for k in ("x_test", "x_calib", "y_test", "keras_input_names", "keras_output_names", "writer",
              "keras_version", "tf_version", "n_params", "epochs"):
        assert k in d, (base, k)
    assert str(d["writer"]) == WRITERS[suffix]
    assert str(d["keras_version"]).startswith("3." if suffix == "k3" else "2.")
    assert LAYERS[name] <= class_names(fixture_path(base)), (base, class_names(fixture_path(base)))
    kf = as_list(d, "keras_float")
    assert len(kf) == len(d["keras_output_names"]) >= 1
    n = len(d["x_test"])
    assert len(d["x_calib"]) >= 100
    assert d["x_test"].shape[1:] == d["x_calib"].shape[1:]
    for o in kf:
        assert o.shape[0] == n and o.dtype == np.float32 and np.all(np.isfinite(o))
    assert len(d["y_test"]) == n
    # exactly one of (working peer, recorded failure) per peer
    assert ("tflite_int8" in d or "tflite_int8_0" in d) != ("tflite_error" in d), base
    assert os.path.exists(fixture_path(base, ".tflite")) == ("tflite_error" not in d)
    assert ("ort_int8" in d or "ort_int8_0" in d) != ("ort_error" in d), base


@pytest.mark.parametrize("base", [c for c in CASES if c.rsplit("_", 1)[0] in DIGIT_SEQ + ("rnn_text", "rnn_kws")])
def test_classifiers_accurate(base):
    d = fixture_data(base)
    kf = as_list(d, "keras_float")[0]
    assert kf.shape == (len(d["y_test"]), 10)
    assert np.allclose(kf.sum(axis=1), 1.0, atol=1e-5)      # softmax
    acc = float(np.mean(kf.argmax(1) == d["y_test"]))
    assert acc > 0.85, (base, acc)


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_variants_outputs(suffix):
    d = fixture_data(f"rnn_variants_{suffix}")
    kf = as_list(d, "keras_float")
    assert [o.shape[1:] for o in kf] == [(10,)] * 5 + [(4, 8)]
    x = d["x_test"]
    assert x.shape[1:] == (10, 8)
    assert np.any(np.all(x == 0, axis=2)), "no all-zero (masked) steps in the data"
    for o in kf[:5]:
        assert np.mean(o.argmax(1) == d["y_test"]) > 0.85
    # the decoded row-pair means are a real regression, better than predicting their mean
    target = d["y_test_5"]
    assert np.abs(kf[5] - target).mean() < np.abs(target - target.mean()).mean()


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_sensor_variable_length(suffix):
    d = fixture_data(f"rnn_sensor_{suffix}")
    x, x16 = d["x_test"], d["x_test_len16"]
    assert x.shape[1:] == (24, 2) and x16.shape[1:] == (16, 2)
    assert np.array_equal(x16, x[:, -16:])
    y = d["y_test"]
    for kf in (d["keras_float"], d["keras_float_len16"]):
        assert kf.shape == y.shape == (len(x), 1)
        # better than carrying the last value forward
        assert np.abs(kf - y).mean() < np.abs(x[:, -1, :1] - y).mean()
    # the two lengths give different (not copied) outputs
    assert not np.array_equal(d["keras_float"], d["keras_float_len16"])


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_text_tokens(suffix):
    d = fixture_data(f"rnn_text_{suffix}")
    x = d["x_test"]
    assert np.issubdtype(x.dtype, np.integer) and x.shape[1] == 40
    assert x.min() >= 0 and x.max() < 200 and np.any(x == 0)


@pytest.mark.parametrize("base", CASES)
def test_peer_outputs(base):
    name = base.rsplit("_", 1)[0]
    d = fixture_data(base)
    kf = as_list(d, "keras_float")
    for key in ("tflite_int8", "ort_int8"):
        qs = peer_outputs(d, key, len(kf))
        if any(q is None for q in qs):
            err = str(d.get(key.split("_")[0] + "_error", ""))
            assert err, (base, key)
            print(f"{base}: {key} failed: {err.splitlines()[0][:120]}")
            continue
        sq = []
        for f, q in zip(kf, qs, strict=True):
            assert q.shape == f.shape and np.all(np.isfinite(q)), (base, key)
            sq.append(sqnr_db(f, q))
        msg = f"{base}: {key} SQNR " + " / ".join(f"{s:.1f}" for s in sq) + " dB"
        if name != "rnn_sensor":
            agree = float(np.mean(qs[0].argmax(1) == kf[0].argmax(1)))
            msg += f", top-1 agreement {agree:.3f}"
        print(msg)
        # sanity only: a peer's output is an approximation of the float one, not noise
        assert max(sq) > 3.0, (base, key, sq)

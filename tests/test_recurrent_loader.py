"""The recurrent fixtures (models/rnn_*, made by real Keras, both writers): every one loads from
every format it can be written in and its float outputs match Keras's within 1e-5 relative to
the output's magnitude (the bar of tests/test_model_fixtures.py); batch 1 and batch N give the
same outputs; a model with a time dimension of any length runs any length; what fixnet cannot
run (stateful layers, int8 recurrent execution) is refused naming the layer; damaged recurrent
weights and configs are ModelFileErrors naming the layer.

Formats: the fixture's .h5 and .keras as Keras saved them; its architecture JSON with weights
(the .h5's model_config with the .h5 as weights file, and the .keras archive's config.json
with its model.weights.h5: Keras 3's native weight layout); a tf.keras 2 file rewritten the
way Keras 2.0 wrote files (tests/keras20.py).
"""
import json
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

import fixnet
from fixnet.errors import MissingWeightError, ModelFileError, UnsupportedLayerError
from conftest import KERAS_ARCHIVES, as_list, fixture_data, fixture_path, fixtures
from keras20 import to_keras20

RNN = fixtures(["rnn_"])
RECURRENT_CLASSES = {"SimpleRNN", "GRU", "LSTM", "RNN"}


def _h5(name, tmp_path):
    return fixnet.load(fixture_path(name))


def _keras(name, tmp_path):
    return fixnet.load(fixture_path(name, ".keras"))


def _json_with_h5_weights(name, tmp_path):
    with h5py.File(fixture_path(name), "r") as f:
        cfg = f.attrs["model_config"]
    arch = tmp_path / "model.json"
    arch.write_bytes(cfg if isinstance(cfg, bytes) else cfg.encode())
    return fixnet.load(str(arch), weights=fixture_path(name))


def _json_with_keras3_weights(name, tmp_path):
    with zipfile.ZipFile(fixture_path(name, ".keras")) as z:
        (tmp_path / "model.json").write_bytes(z.read("config.json"))
        (tmp_path / "model.weights.h5").write_bytes(z.read("model.weights.h5"))
    return fixnet.load(str(tmp_path / "model.json"), weights=str(tmp_path / "model.weights.h5"))


def _keras20(name, tmp_path):
    return fixnet.load(to_keras20(fixture_path(name), str(tmp_path / "old.h5")))


def _formats(name):
    out = [("h5", _h5), ("json+h5", _json_with_h5_weights)]
    if name in KERAS_ARCHIVES:
        out += [("keras", _keras), ("json+weights.h5", _json_with_keras3_weights)]
    if name.endswith("_tfk2"):
        out.append(("keras2.0", _keras20))
    return out


CASES = [(name, fmt, load) for name in RNN for fmt, load in _formats(name)]


def _inputs(d, suffix=""):
    xs = as_list(d, "x_test" + suffix)
    return xs[0] if len(xs) == 1 else xs


def _outs(v):
    return v if isinstance(v, list) else [v]


def _max_relative_error(got, refs):
    errs = []
    for g, ref in zip(got, refs, strict=True):
        assert g.shape == ref.shape
        errs.append(np.abs(g.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))
    return max(errs)


def test_the_recurrent_fixtures_are_there():
    assert len(RNN) >= 2, "no models/rnn_* fixtures (models/make_recurrent_models.py makes them)"
    assert {n.rsplit("_", 1)[1] for n in RNN} == {"k3", "tfk2"}


@pytest.mark.parametrize("name, fmt, load", CASES, ids=[f"{n}-{f}" for n, f, _ in CASES])
def test_float_path_matches_keras(name, fmt, load, tmp_path):
    d = fixture_data(name)
    fm = load(name, tmp_path)
    got, refs = _outs(fm.predict(_inputs(d))), as_list(d, "keras_float")
    assert len(got) == len(refs) == len(d["keras_output_names"])
    err = _max_relative_error(got, refs)
    assert err <= 1e-5, f"{name} ({fmt}): max error {err:.2e} relative to the output's magnitude"


@pytest.mark.parametrize("name", RNN)
def test_batch_one_and_batch_n_identical(name):
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    x = as_list(d, "x_test")
    n = min(len(x[0]), 16)
    whole = _outs(fm.predict([xi[:n] for xi in x] if len(x) > 1 else x[0][:n]))
    rows = [_outs(fm.predict([xi[i:i + 1] for xi in x] if len(x) > 1 else x[0][i:i + 1]))
            for i in range(n)]
    for k, w in enumerate(whole):
        assert np.array_equal(w, np.concatenate([r[k] for r in rows])), (name, k)


VARIABLE = [n for n in RNN if "x_test_len16" in fixture_data(n)]


@pytest.mark.parametrize("name", VARIABLE)
def test_a_time_dimension_of_any_length(name):
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    assert fm.input_shapes[0][0] is None
    long_, short = d["x_test"], d["x_test_len16"]
    assert long_.shape[1] != short.shape[1]
    for x, key in ((long_, "keras_float"), (short, "keras_float_len16")):
        err = _max_relative_error(_outs(fm.predict(x)), as_list(d, key))
        assert err <= 1e-5, f"{name}, {x.shape[1]} steps: max error {err:.2e}"
    # any length, also one the file never saw: every prefix of one window
    one = long_[:1]
    for t in (1, 5, long_.shape[1]):
        assert fm.predict(one[:, :t]).shape == (1,) + tuple(d["keras_float"].shape[1:])
    assert fm.predict(long_[:0]).shape == (0,) + tuple(d["keras_float"].shape[1:])
    # int8 at any length: tests/test_recurrent_int8.py


def _recurrent_layers(cfg):
    """Configs of every recurrent layer (inside Bidirectional too) in a model config."""
    found = []

    def walk(o):
        if isinstance(o, dict):
            if o.get("class_name") in RECURRENT_CLASSES and isinstance(o.get("config"), dict):
                found.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(cfg)
    return found


def _edit_config(path, edit):
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg)
        f.attrs["model_config"] = json.dumps(cfg)


def _top_layer_names(path):
    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    layers = cfg["config"]["layers"] if isinstance(cfg["config"], dict) else cfg["config"]
    return {l.get("name") or l["config"]["name"]: l for l in layers}


@pytest.mark.parametrize("name", RNN)
def test_stateful_layers_are_refused_naming_the_layer(name, tmp_path):
    p = str(tmp_path / "stateful.h5")
    shutil.copy(fixture_path(name), p)
    layers = _top_layer_names(p)
    target = next(n for n, l in layers.items() if _recurrent_layers(l))

    def edit(cfg):
        top = cfg["config"]["layers"] if isinstance(cfg["config"], dict) else cfg["config"]
        layer = next(l for l in top if (l.get("name") or l["config"]["name"]) == target)
        for rnn in _recurrent_layers(layer):
            rnn["config"]["stateful"] = True
    _edit_config(p, edit)
    with pytest.raises(UnsupportedLayerError, match="stateful") as e:
        fixnet.load(p)
    assert f"'{target}'" in str(e.value) and p in str(e.value)
    assert [row[0] for row in e.value.layers] == [target]


# --- damaged files ----------------------------------------------------------------------------

def _weight_datasets(path, layer):
    """HDF5 paths of a layer's weight datasets in a full-model .h5 file."""
    out = []
    with h5py.File(path, "r") as f:
        f["model_weights"][layer].visititems(
            lambda n, o: out.append(o.name) if isinstance(o, h5py.Dataset) else None)
    return out


DAMAGE = [n for n in RNN if n.startswith(("rnn_gru_", "rnn_bilstm_", "rnn_lstm_"))] or RNN[:2]


def _copy_with_recurrent_weight(name, weight, tmp_path):
    """A copy of fixture ``name`` to damage: (path, its first recurrent layer, the dataset of
    that layer's ``weight``)."""
    p = str(tmp_path / "damaged.h5")
    shutil.copy(fixture_path(name), p)
    layer = next(n for n, l in _top_layer_names(p).items() if _recurrent_layers(l))
    ds = [d for d in _weight_datasets(p, layer) if d.rsplit("/", 1)[-1].split(":")[0] == weight]
    assert ds, (name, layer, weight)
    return p, layer, ds


@pytest.mark.parametrize("name", DAMAGE)
@pytest.mark.parametrize("weight", ["kernel", "recurrent_kernel", "bias"])
def test_a_missing_recurrent_weight_names_the_layer(name, weight, tmp_path):
    p, layer, ds = _copy_with_recurrent_weight(name, weight, tmp_path)
    with h5py.File(p, "r+") as f:
        del f[ds[0]]
    with pytest.raises(MissingWeightError) as e:
        fixnet.load(p)
    assert f"'{layer}'" in str(e.value) and p in str(e.value)


@pytest.mark.parametrize("name", DAMAGE)
@pytest.mark.parametrize("weight", ["kernel", "recurrent_kernel", "bias"])
def test_a_misshapen_recurrent_weight_names_the_layer_and_weight(name, weight, tmp_path):
    p, layer, ds = _copy_with_recurrent_weight(name, weight, tmp_path)
    with h5py.File(p, "r+") as f:
        arr = np.array(f[ds[0]])
        del f[ds[0]]
        f[ds[0]] = np.concatenate([arr, arr[..., :1]], axis=-1)     # one column too many
    with pytest.raises(MissingWeightError, match=weight) as e:
        fixnet.load(p)
    assert f"'{layer}'" in str(e.value)


# the fixtures with a Keras 3 .keras archive (tf.keras 2 writes none)
DAMAGE_KERAS = [n for n in DAMAGE if os.path.exists(fixture_path(n, ".keras"))]


@pytest.mark.parametrize("name", DAMAGE_KERAS)
def test_a_missing_weight_in_the_keras3_archive_names_the_layer(name, tmp_path):
    src = fixture_path(name, ".keras")
    w = tmp_path / "w.h5"
    with zipfile.ZipFile(src) as z:
        w.write_bytes(z.read("model.weights.h5"))
        entries = {n: z.read(n) for n in z.namelist() if n != "model.weights.h5"}
    with h5py.File(w, "r+") as f:
        cells = []
        f.visititems(lambda n, o: cells.append(n) if n.endswith("/vars") and "cell" in n else None)
        assert cells
        del f[cells[0] + "/1"]                    # the recurrent kernel
    p = str(tmp_path / "damaged.keras")
    with zipfile.ZipFile(p, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
        z.writestr("model.weights.h5", w.read_bytes())
    with pytest.raises(MissingWeightError) as e:
        fixnet.load(p)
    assert "layer '" in str(e.value) and p in str(e.value)


@pytest.mark.parametrize("name", DAMAGE)
@pytest.mark.parametrize("units", [10 ** 12, -3, 0, "many", 2.5])
def test_absurd_units_are_a_model_file_error_naming_the_layer(name, units, tmp_path):
    p = str(tmp_path / "damaged.h5")
    shutil.copy(fixture_path(name), p)
    layer = next(n for n, l in _top_layer_names(p).items() if _recurrent_layers(l))

    def edit(cfg):
        top = cfg["config"]["layers"] if isinstance(cfg["config"], dict) else cfg["config"]
        target = next(l for l in top if (l.get("name") or l["config"]["name"]) == layer)
        for rnn in _recurrent_layers(target):
            rnn["config"]["units"] = units
    _edit_config(p, edit)
    with pytest.raises(ModelFileError) as e:
        fixnet.load(p)
    assert f"'{layer}'" in str(e.value)


@pytest.mark.parametrize("name", DAMAGE[:1])
def test_large_units_with_matching_weights_stay_within_the_memory_budget(name, tmp_path):
    """A file whose recurrent layer declares weights far beyond the memory limit is refused
    before they are read."""
    p = str(tmp_path / "big.h5")
    shutil.copy(fixture_path(name), p)
    layer = next(n for n, l in _top_layer_names(p).items() if _recurrent_layers(l))
    ds = [d for d in _weight_datasets(p, layer) if d.rsplit("/", 1)[-1].startswith("recurrent_kernel")]
    with h5py.File(p, "r+") as f:
        del f[ds[0]]
        f.create_dataset(ds[0], shape=(1 << 16, 1 << 16), dtype="f4")   # 16 GiB declared, none written
    with pytest.raises(ModelFileError, match="memory limit") as e:
        fixnet.load(p, max_memory="1G")
    assert f"'{layer}'" in str(e.value)


# --- config fields, by what they must (not) change --------------------------------------------

def _edited(name, tmp_path, edit_layer, edit_input=None):
    """A copy of fixture ``name``'s .h5 with every recurrent layer's config (and Embedding's,
    and the input's) edited in place."""
    p = str(tmp_path / f"{name}_{len(os.listdir(tmp_path))}.h5")
    shutil.copy(fixture_path(name), p)

    def edit(cfg):
        for rnn in _recurrent_layers(cfg):
            edit_layer(rnn["class_name"], rnn["config"])

        def walk(o):
            if isinstance(o, dict):
                if edit_input and isinstance(o.get("config"), dict) and o.get("class_name") in (
                        "InputLayer", "Embedding"):
                    edit_input(o["class_name"], o["config"])
                for v in o.values():
                    walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(cfg)
    _edit_config(p, edit)
    return fixnet.load(p)


SIMPLE = [n for n in RNN if n.startswith(("rnn_gru_", "rnn_lstm_", "rnn_simplernn_", "rnn_bilstm_"))]


@pytest.mark.parametrize("name", SIMPLE)
def test_unroll_and_dropout_do_not_change_inference(name, tmp_path):
    d = fixture_data(name)
    ref = fixnet.load(fixture_path(name)).predict(d["x_test"][:32])

    def edit(cls, cfg):
        cfg.update(unroll=True, dropout=0.5, recurrent_dropout=0.25)
    assert np.array_equal(_edited(name, tmp_path, edit).predict(d["x_test"][:32]), ref)


@pytest.mark.parametrize("name", [n for n in SIMPLE if not n.startswith("rnn_bilstm_")])
def test_go_backwards_reads_the_sequence_from_its_end(name, tmp_path):
    d = fixture_data(name)
    x = d["x_test"][:32]
    forward = fixnet.load(fixture_path(name))

    def edit(cls, cfg):
        cfg["go_backwards"] = True
    backward = _edited(name, tmp_path, edit)
    ref = forward.predict(x[:, ::-1])
    err = np.abs(backward.predict(x) - ref).max() / np.abs(ref).max()
    assert err <= 1e-6
    assert np.abs(backward.predict(x) - forward.predict(x)).max() > 1e-3   # it does change them


TEXT = [n for n in RNN if n.startswith("rnn_text_")]


@pytest.mark.parametrize("name", TEXT)
def test_mask_zero_skips_the_padding_as_an_unpadded_run_of_any_length(name, tmp_path):
    """Embedding(mask_zero=True) masks the left padding: the GRU's state stays at its initial
    zeros through it, so a padded sequence gives what its unpadded tokens give alone."""
    x = fixture_data(name)["x_test"][:24]

    def any_length(cls, cfg):
        for key in ("batch_input_shape", "batch_shape"):
            if cfg.get(key) is not None:
                cfg[key] = [None, None]

    def masked_input(cls, cfg):
        any_length(cls, cfg)
        if cls == "Embedding":
            cfg["mask_zero"] = True
    masked = _edited(name, tmp_path, lambda c, cfg: None, masked_input)
    plain = _edited(name, tmp_path, lambda c, cfg: None, any_length)
    assert masked.input_shapes == [(None,)]
    got = masked.predict(x)
    starts = [int((row != 0).argmax()) for row in x]
    assert len(set(starts)) > 1
    for row, start, g in zip(x, starts, got, strict=True):
        assert not (row[start:] == 0).any()
        alone = plain.predict(row[None, start:])[0]
        np.testing.assert_allclose(g, alone, rtol=1e-6, atol=1e-7 * np.abs(alone).max())
    assert np.abs(got - plain.predict(x)).max() > 1e-3      # the mask matters here


VARIANTS = [n for n in RNN if n.startswith("rnn_variants_")]


@pytest.mark.parametrize("name", VARIANTS)
def test_time_distributed_of_a_layer_over_whole_frames_is_refused_naming_it(name, tmp_path):
    p = str(tmp_path / "td.h5")
    shutil.copy(fixture_path(name), p)
    td = [n for n, l in _top_layer_names(p).items() if l["class_name"] == "TimeDistributed"]
    assert td

    def edit(cfg):
        for l in cfg["config"]["layers"]:
            if l["class_name"] == "TimeDistributed":
                l["config"]["layer"] = {"class_name": "Conv1D", "config": {
                    "name": "conv", "filters": 8, "kernel_size": 3, "padding": "same"}}
    _edit_config(p, edit)
    with pytest.raises(UnsupportedLayerError, match=r"TimeDistributed\(Conv1D\)") as e:
        fixnet.load(p)
    assert sorted(row[0] for row in e.value.layers) == sorted(td)


def test_the_property_tests_have_their_fixtures():
    """Nothing above is skipped for want of a fixture: a variable-length model, a text model
    and the variants model are among models/rnn_*."""
    assert VARIABLE and TEXT and VARIANTS and SIMPLE and DAMAGE

"""Every mistake a user can make gives a FixnetError subclass whose message says what and where."""
import os

import h5py
import numpy as np
import pytest

import fixnet
from conftest import edit_config, fixture_data, fixture_path


@pytest.fixture(scope="module")
def qm():
    d = fixture_data("mlp_func_tfk2")
    return fixnet.load(fixture_path("mlp_func_tfk2")).quantize(d["x_calib"])


def test_every_error_is_a_fixnet_error():
    for cls in (fixnet.ModelFileError, fixnet.MissingWeightError, fixnet.UnsupportedLayerError,
                fixnet.InputShapeError, fixnet.InputDtypeError, fixnet.NonFiniteInputError,
                fixnet.CalibrationError, fixnet.OverflowRiskError, fixnet.AccumulatorOverflowError):
        assert issubclass(cls, fixnet.FixnetError)


def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.h5")
    with pytest.raises(fixnet.ModelFileError, match="nope.h5"):
        fixnet.load(p)


def test_wrong_file_type(tmp_path):
    p = tmp_path / "model.h5"
    p.write_text("this is a CSV file, not a model\n1,2,3\n")
    with pytest.raises(fixnet.ModelFileError, match=r"model\.h5: not an HDF5 file"):
        fixnet.load(str(p))


def test_zip_archives_that_are_not_keras_models(tmp_path):
    import zipfile
    p = tmp_path / "model.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(fixnet.ModelFileError, match=r"model\.keras: a zip archive without config\.json"):
        fixnet.load(str(p))
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", '{"class_name": "Sequential", "config": {"layers": []}}')
    with pytest.raises(fixnet.ModelFileError, match=r"model\.keras: the archive holds no model\.weights\.h5"):
        fixnet.load(str(p))
    p.write_bytes(b"PK\x03\x04 and then garbage")
    with pytest.raises(fixnet.ModelFileError, match=r"model\.keras: a damaged zip archive"):
        fixnet.load(str(p))


@pytest.mark.parametrize("keep", [0.95, 0.5, 0.1, 0.01])
def test_truncated_file(tmp_path, keep):
    data = open(fixture_path("mlp_seq_k3"), "rb").read()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(fixnet.ModelFileError, match=r"cut\.h5"):
        fixnet.load(str(p))


def test_hdf5_that_is_not_a_keras_model(tmp_path):
    p = str(tmp_path / "data.h5")
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(10)
    with pytest.raises(fixnet.ModelFileError, match="not a Keras model"):
        fixnet.load(p)


def test_weights_only_file(tmp_path):
    p = str(tmp_path / "w.h5")
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
    with pytest.raises(fixnet.ModelFileError, match="weights only"):
        fixnet.load(p)


def test_missing_weight_names_layer_and_weight(copy_fixture):
    p = copy_fixture("mlp_func_tfk2")
    with h5py.File(p, "r+") as f:
        del f["model_weights/dense_1/dense_1/bias:0"]
    with pytest.raises(fixnet.MissingWeightError, match=r"dense_1.*Dense.*bias"):
        fixnet.load(p)


def test_missing_weight_group(copy_fixture):
    p = copy_fixture("mlp_seq_k3")
    with h5py.File(p, "r+") as f:
        del f["model_weights/dense_1"]
    with pytest.raises(fixnet.MissingWeightError, match=r"'dense_1' \(Dense\).*kernel"):
        fixnet.load(p)


def test_misshapen_weight(copy_fixture):
    p = copy_fixture("mlp_seq_tfk2")
    with h5py.File(p, "r+") as f:
        del f["model_weights/dense_2/dense_2/kernel:0"]
        f["model_weights/dense_2/dense_2/kernel:0"] = np.zeros((32, 7), np.float32)
    with pytest.raises(fixnet.MissingWeightError, match=r"dense_2.*kernel.*\(32, 7\)"):
        fixnet.load(p)


def test_damaged_json(copy_fixture):
    p = copy_fixture("mlp_seq_k3")
    with h5py.File(p, "r+") as f:
        f.attrs["model_config"] = '{"class_name": "Sequential", "config": {'
    with pytest.raises(fixnet.ModelFileError, match="not valid JSON"):
        fixnet.load(p)


def _insert_after(cfg, after, layers):
    out = []
    for l in cfg["config"]["layers"]:
        out.append(l)
        if l["name"] == after:
            out.extend(layers)
    cfg["config"]["layers"] = out
    return cfg


def _rewire(cfg, consumer, producer):
    for l in cfg["config"]["layers"]:
        if l["name"] == consumer:
            l["inbound_nodes"] = [[[producer, 0, 0, {}]]]
    return cfg


def test_unsupported_layers_are_all_listed_at_once(copy_fixture):
    p = copy_fixture("mlp_func_tfk2")

    def edit(cfg):
        cfg = _insert_after(cfg, "dense", [
            {"class_name": "Lambda", "name": "my_lambda", "inbound_nodes": [[["dense", 0, 0, {}]]],
             "config": {"name": "my_lambda", "function": ["4wEAAAAAAAAA", None, None]}},
            {"class_name": "ConvLSTM1D", "name": "conv_lstm", "inbound_nodes": [[["my_lambda", 0, 0, {}]]],
             "config": {"name": "conv_lstm", "filters": 4, "kernel_size": 3}},
            {"class_name": "MyAttention", "name": "attn", "inbound_nodes": [[["conv_lstm", 0, 0, {}]]],
             "config": {"name": "attn"}, "module": "my_project.layers",
             "registered_name": "Custom>MyAttention"}])
        return _rewire(cfg, "batch_normalization_1", "attn")
    edit_config(p, edit)
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(p)
    msg = str(e.value)
    assert "3 layer(s)" in msg
    assert "'my_lambda' (Lambda)" in msg and "never executes code" in msg
    assert "'conv_lstm' (ConvLSTM1D)" in msg
    assert "'attn' (MyAttention)" in msg and "custom" in msg
    assert [n for n, _, _ in e.value.layers] == ["my_lambda", "conv_lstm", "attn"]


def test_lambda_is_refused_without_running_anything(copy_fixture, tmp_path):
    # a marshalled function that would create a file if it were ever executed
    marker = tmp_path / "executed"
    p = copy_fixture("mlp_seq_tfk2")

    def edit(cfg):
        layers = cfg["config"]["layers"]
        layers.insert(2, {"class_name": "Lambda", "config": {
            "name": "lambda", "function": f"lambda x: open({str(marker)!r}, 'w') or x",
            "function_type": "lambda", "arguments": {}}})
        return cfg
    edit_config(p, edit)
    with pytest.raises(fixnet.UnsupportedLayerError, match=r"'lambda' \(Lambda\)"):
        fixnet.load(p)
    assert not marker.exists()


def test_unsupported_configuration_names_the_layer(copy_fixture):
    p = copy_fixture("mlp_seq_k3")

    def edit(cfg):
        for l in cfg["config"]["layers"]:
            if l["config"]["name"] == "dense_1":
                l["config"]["activation"] = "my_package>funky"
        return cfg
    edit_config(p, edit)
    with pytest.raises(fixnet.UnsupportedLayerError, match=r"'dense_1' \(Dense\).*funky"):
        fixnet.load(p)


@pytest.mark.parametrize("shape", [(5, 63), (5, 8, 8, 1), (64,), (5, 64, 1)])
def test_wrong_input_shape(qm, shape):
    with pytest.raises(fixnet.InputShapeError, match=r"expected shape \(batch, 8, 8\)"):
        qm.predict(np.zeros(shape, np.float32))


def test_single_sample_without_batch_axis_gets_a_hint(qm):
    with pytest.raises(fixnet.InputShapeError, match=r"x\[None\]"):
        qm.predict(np.zeros((8, 8), np.float32))


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, object])
def test_wrong_input_dtype(qm, dtype):
    with pytest.raises(fixnet.InputDtypeError, match="dtype"):
        qm.predict(np.zeros((2, 8, 8), dtype))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16])
def test_wide_integer_inputs_are_real_values(qm, dtype):
    """Integers wider than 8 bits (token ids, counts) are the numbers they are, as float32
    would be; int8/uint8 stay codes."""
    x = np.arange(2 * 8 * 8).reshape(2, 8, 8) % 17
    np.testing.assert_array_equal(qm.predict(x.astype(dtype), output="int8"),
                                  qm.predict(x.astype(np.float32), output="int8"))


def test_wrong_number_of_inputs(qm):
    x = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(fixnet.InputShapeError, match="1 input"):
        qm.predict([x, x])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(qm, bad):
    x = np.zeros((3, 8, 8), np.float32)
    x[1, 2, 3] = bad
    with pytest.raises(fixnet.NonFiniteInputError, match="1 NaN or infinite"):
        qm.predict(x)
    # the model still works afterwards
    assert qm.predict(np.zeros((3, 8, 8), np.float32)).shape == (3, 10)


def test_float_model_input_errors():
    fm = fixnet.load(fixture_path("mlp_seq_k3"))
    with pytest.raises(fixnet.InputShapeError):
        fm.predict(np.zeros((2, 65), np.float32))
    with pytest.raises(fixnet.InputDtypeError):
        fm.predict(np.array([["a"] * 64]))


def test_bad_output_argument(qm):
    with pytest.raises(fixnet.FixnetError, match="output"):
        qm.predict(np.zeros((1, 8, 8), np.float32), output="uint4")


def test_calibration_errors():
    fm = fixnet.load(fixture_path("mlp_func_tfk2"))
    with pytest.raises(fixnet.CalibrationError, match="calibration"):
        fm.quantize()
    with pytest.raises(fixnet.CalibrationError, match="empty"):
        fm.quantize(np.zeros((0, 8, 8), np.float32))
    with pytest.raises(fixnet.CalibrationError, match=r"shape \(4, 64\)"):
        fm.quantize(np.zeros((4, 64), np.float32))
    x = np.zeros((4, 8, 8), np.float32)
    x[0, 0, 0] = np.nan
    with pytest.raises(fixnet.CalibrationError, match="NaN"):
        fm.quantize(x)
    with pytest.raises(fixnet.CalibrationError, match="neither an array nor an iterable"):
        fm.quantize(42)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    from fixnet.cli import main
    p = tmp_path / "x.h5"
    p.write_bytes(b"garbage")
    assert main(["info", str(p)]) == 1
    err = capsys.readouterr().err
    assert "fixnet info: error:" in err and "x.h5" in err and "Traceback" not in err

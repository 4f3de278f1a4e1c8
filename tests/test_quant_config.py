"""QuantConfig: one object for quantize's choices; keyword shorthands; per-layer overrides by
name or pattern; the config recorded in the .fxn file and shown by inspect."""
import json

import numpy as np
import pytest

import fixnet
from fixnet.quant.config import LayerOverride, QuantConfig, parse_override

from conftest import fixture_data, fixture_path


@pytest.fixture(scope="module")
def digits():
    d = fixture_data("cnn_digits_k3")
    return fixnet.load(fixture_path("cnn_digits_k3")), d["x_calib"][:64], d["x_test"][:64]


def codes(qm, x):
    return qm.predict(x, output="int8")


@pytest.mark.parametrize("kwargs, needle", [
    ({"method": "max"}, "method"),
    ({"percentile": 40}, "percentile"),
    ({"per_channel": "yes"}, "per_channel"),
    ({"activations": "int12"}, "activations"),
    ({"weights": "int3"}, "weights"),
    ({"softmax_levels": 128}, "softmax_levels"),
    ({"target_sqnr": float("nan")}, "target_sqnr"),
    ({"target_agreement": 1.5}, "target_agreement"),
    ({"overrides": {"conv": {"bits": 16}}}, "'bits'"),
    ({"overrides": {"conv": {"activations": "int4"}}}, "'conv'"),
    ({"overrides": {"": {"method": "mse"}}}, "non-empty"),
    ({"overrides": 3}, "overrides"),
])
def test_invalid_settings_name_the_setting(kwargs, needle):
    with pytest.raises(fixnet.ConfigError, match=needle):
        QuantConfig(**kwargs)


def test_config_round_trips_through_its_record():
    c = QuantConfig(method="mse", activations="int16", target_sqnr=30,
                    overrides={"block_*": {"activations": "int8", "per_channel": False}})
    d = json.loads(json.dumps(c.to_dict()))
    assert QuantConfig.from_dict(d) == c
    assert c.target_sqnr == 30.0
    assert "override 'block_*': activations='int8', per_channel=False" in c.describe()
    assert QuantConfig().describe() == "defaults"
    with pytest.raises(fixnet.ConfigError, match="unknown key"):
        QuantConfig.from_dict({"method": "mse", "colour": "red"})


def test_later_patterns_win_key_by_key():
    c = QuantConfig(overrides=[("conv*", {"activations": "int16", "method": "mse"}),
                               ("conv_2", {"activations": "int8"})])
    assert c.for_layer("conv_2") == {"activations": "int8", "method": "mse"}
    assert c.layer_value("activations", "conv_1") == "int16"
    assert c.layer_value("activations", "dense") == "int8"
    assert c.layer_value("per_channel", "conv_1") is True
    assert c.unmatched_patterns(["conv_1", "conv_2", "dense"]) == []
    assert c.unmatched_patterns(["dense"]) == ["conv*", "conv_2"]


def test_parse_override():
    assert parse_override("conv_1:activations=int16") == ("conv_1", {"activations": "int16"})
    assert parse_override("a:b:per_channel=false,method=mse") == (
        "a:b", {"per_channel": False, "method": "mse"})
    for bad in ("conv_1", "conv_1:", ":method=mse", "conv_1:method", "conv_1:bits=16",
                "conv_1:per_channel=maybe", "conv_1:method=best"):
        with pytest.raises(fixnet.ConfigError):
            parse_override(bad)
    assert LayerOverride.of({"method": "mse"}, "x") == LayerOverride(method="mse")


def test_keywords_are_shorthands_for_the_config(digits):
    fm, calib, x = digits
    a = fm.quantize(calib, method="minmax", weight_rounding="nearest", progress=False)
    b = fm.quantize(calib, QuantConfig(method="minmax", weight_rounding="nearest"), progress=False)
    c = fm.quantize(calib, "minmax", weight_rounding="nearest", progress=False)  # method positional
    assert a.config == b.config == c.config
    np.testing.assert_array_equal(codes(a, x), codes(b, x))
    np.testing.assert_array_equal(codes(a, x), codes(c, x))
    # a keyword replaces the config's field
    d = fm.quantize(calib, QuantConfig(method="mse"), method="minmax",
                    weight_rounding="nearest", progress=False)
    assert d.config == a.config
    with pytest.raises(fixnet.ConfigError, match="colour"):
        fm.quantize(calib, colour="red", progress=False)


def test_override_changes_only_its_layer(digits):
    fm, calib, x = digits
    base = fm.quantize(calib, weight_rounding="nearest", progress=False)
    layers = [s.layer for s in base.steps if s.op == "conv2d"]
    target = layers[-1]
    qm = fm.quantize(calib, weight_rounding="nearest", progress=False,
                     overrides={target: {"method": "minmax", "per_channel": False}})
    for s_base, s in zip(base.steps, qm.steps):
        same_out = base.tensors[s_base.outputs[0]].qparams == qm.tensors[s.outputs[0]].qparams
        if s.layer == target:
            assert np.unique(s.m0).size == 1 or not np.array_equal(s.w_q, s_base.w_q)
        elif s.layer in layers[:-1]:
            assert same_out and np.array_equal(s.w_q, s_base.w_q)
    out_t = next(s.outputs[0] for s in qm.steps if s.layer == target)
    lo, hi = qm.tensors[out_t].qparams.real_range
    lo0, hi0 = base.tensors[out_t].qparams.real_range
    assert hi - lo >= hi0 - lo0      # minmax clips nothing: at least as wide as auto's range


def test_unknown_override_lists_the_layers(digits):
    fm, calib, _ = digits
    with pytest.raises(fixnet.ConfigError) as e:
        fm.quantize(calib, overrides={"no_such_layer": {"method": "mse"}}, progress=False)
    msg = str(e.value)
    assert "'no_such_layer' match no layer" in msg
    for s in fm.quantize(calib[:8], weight_rounding="nearest", progress=False).steps:
        assert s.layer in msg


def test_int16_override_refused_for_ops_without_int16_kernels(monkeypatch):
    # every op has int16 kernels now: an op without them (a new one, say) is played by rnn,
    # taken out of the quantizer's INT16_OPS for this test
    from fixnet.quant import quantizer
    monkeypatch.setattr(quantizer, "INT16_OPS", quantizer.INT16_OPS - {"rnn"})
    d = fixture_data("rnn_variants_k3")
    fm = fixnet.load(fixture_path("rnn_variants_k3"))
    layer = next(n.layer for n in fm.graph.nodes if n.op == "rnn" and n.layer)
    with pytest.raises(fixnet.ConfigError, match="no int16 kernels"):
        fm.quantize(d["x_calib"][:8], overrides={layer: {"activations": "int16"}}, progress=False)


def test_fxn_records_the_config_and_inspect_shows_it(digits, tmp_path, capsys):
    fm, calib, x = digits
    cfg = QuantConfig(weight_rounding="nearest", method="percentile", percentile=99.9)
    qm = fm.quantize(calib, cfg, progress=False)
    path = str(tmp_path / "m.fxn")
    qm.save(path)
    back = fixnet.load(path)
    assert back.config == cfg
    np.testing.assert_array_equal(codes(back, x), codes(qm, x))
    from fixnet.cli import main
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "quantization config: method = 'percentile'; percentile = 99.9" in out
    assert "| type" in out or " type " in out
    # reuse the recorded config from the command line
    out_path = str(tmp_path / "again.fxn")
    calib_path = str(tmp_path / "calib.npy")
    np.save(calib_path, calib)
    assert main(["quantize", fixture_path("cnn_digits_k3"), "--calib", calib_path,
                 "-o", out_path, "--config", path]) == 0
    assert fixnet.load(out_path).config == cfg

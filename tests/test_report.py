"""qm.report(x): per-layer error analysis as records and as a table."""
import json

import numpy as np
import pytest

import fixnet
from conftest import fixture_data, fixture_path, sqnr_db


@pytest.fixture(scope="module")
def cnn():
    d = fixture_data("cnn_digits_k3")
    fm = fixnet.load(fixture_path("cnn_digits_k3"))
    # min/max ranges: no tensor is clipped on purpose, so every layer keeps a high SQNR
    return d, fm, fm.quantize(d["x_calib"], method="minmax")


def test_report_records_every_step(cnn):
    d, _, qm = cnn
    rep = qm.report(d["x_test"][:64])
    recs = rep.to_dict()["layers"]
    assert [r["layer"] for r in recs] == [s.layer for s in qm.steps]
    json.dumps(rep.to_dict())                           # plain, serialisable values
    for r in recs:
        assert r["sqnr_db"] is not None and r["sqnr_db"] > 10
        assert 0.0 <= r["clipped"] <= 1.0
        assert r["saturated"] >= 0
    convs = [r for r in recs if r["op"] in ("conv2d", "dense")]
    assert all(0.5 < r["weight_range_use"] <= 1.0 for r in convs)
    assert all(r["headroom_bits"] > 0 for r in convs)
    text = str(rep)
    assert "SQNR dB" in text and recs[0]["layer"] in text


def test_last_layer_sqnr_is_the_output_sqnr(cnn):
    # the report's last SQNR is the model output's SQNR against the float model, measured
    # independently here from predict()
    d, fm, qm = cnn
    x = d["x_test"][:64]
    rep = qm.report(x).to_dict()["layers"]
    assert rep[-1]["sqnr_db"] == pytest.approx(sqnr_db(fm.predict(x), qm.predict(x)), abs=0.05)


def test_clipped_share_sees_a_too_narrow_range(cnn):
    d, fm, _ = cnn
    # calibrating on dim images (x / 4) leaves real test images outside the input range
    qm = fm.quantize(d["x_calib"] / 4)
    rep = qm.report(d["x_test"][:64]).to_dict()["layers"]
    first = rep[0]
    assert first["clipped"] > 0.01


def test_report_of_a_model_read_from_fxn_gives_each_layers_own_error(cnn, tmp_path):
    """A .fxn has no float network: the SQNR and clipped columns are then each layer's own
    (its output against its exact computation on its dequantized int8 inputs), which for a
    layer of the same model is at least the accumulated SQNR the float model's report gives
    (the error up to a layer includes that layer's own)."""
    d, _, qm = cnn
    p = str(tmp_path / "m.fxn")
    qm.save(p)
    x = d["x_test"][:16]
    report = fixnet.load(p).report(x)
    assert report.reference == "layer"
    rep = report.to_dict()["layers"]
    assert all(r["saturated"] >= 0 for r in rep)
    weighted = [r for r in rep if r["op"] in ("dense", "conv2d", "depthwise_conv2d")]
    assert weighted and all(r["sqnr_db"] is not None and r["clipped"] is not None
                            for r in weighted)
    accumulated = {r["tensor"]: r["sqnr_db"] for r in qm.report(x).to_dict()["layers"]}
    for r in weighted:
        assert r["sqnr_db"] >= accumulated[r["tensor"]] - 0.5, r
